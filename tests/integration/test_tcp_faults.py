"""Faults below HTTP: RabbitMQ and the Pub/Sub emulator behind a TCP fault proxy.

A daemon whose broker stops answering (black hole, half-open connection) still stops within
its grace period + 5 s, and nothing it held is lost; a chaos run (resets, stalls, half-open
connections) loses no task and runs a task twice only where a fault hit it in flight
(:mod:`tcpchaos`). The long mixes are ``slow``; ``benchmarks/chaos_tcp.py`` runs them all.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from tcpchaos import NapTask, run_tcp_chaos
from tcpfaultproxy import TCPFaultProxy

from simpletasks.daemon import DaemonService
from simpletasks.message import BasicInfo, TaskMessage
from simpletasks.queues import open_queue
from simpletasks.registry import TaskRegistry
from simpletasks.settings import DaemonSettings

GRACE = 1.0


@pytest.mark.parametrize(
    "fault", ["reset", "blackhole", pytest.param("half_open", marks=pytest.mark.slow)]
)
def test_stop_with_a_dead_broker_takes_grace_plus_5s_at_most_and_loses_nothing(
    rabbitmq_url: str, tmp_path: Path, fault: str
) -> None:
    name = f"tcpdead-{uuid.uuid4().hex[:10]}"
    log = tmp_path / "log"
    direct = open_queue(f"{rabbitmq_url}?queue={name}", create=True)
    bodies = [TaskMessage(BasicInfo(i, NapTask.name, ""), {"seconds": 0.3, "log": str(log)})
              for i in range(30)]  # fmt: skip
    direct.send_batch([b.to_json() for b in bodies])
    with TCPFaultProxy(("127.0.0.1", 5672)) as proxy:
        queue = open_queue(f"amqp://127.0.0.1:{proxy.port}/%2F?queue={name}")
        registry = TaskRegistry()
        registry.register(NapTask)
        settings = DaemonSettings(concurrency=2, grace_seconds=GRACE, wait_seconds=1)
        daemon = DaemonService(queue=queue, registry=registry, settings=settings)
        thread = threading.Thread(target=daemon.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while (not log.exists() or len(log.read_text().splitlines()) < 4) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.05)
        getattr(proxy, fault)()
        stopped = time.monotonic()
        daemon.stop()  # what SIGTERM does
        thread.join(GRACE + 10)
        took = time.monotonic() - stopped
        assert not thread.is_alive()
        assert took <= GRACE + 5, f"stop took {took:.1f} s"
        closing = time.monotonic()
        queue.close()
        assert time.monotonic() - closing < 5
    # the proxy is gone: the broker has requeued whatever the daemon held
    ended = Counter(int(line.split()[1]) for line in log.read_text().splitlines())
    left: list[int] = []
    end = time.monotonic() + 10
    while time.monotonic() < end and len(set(ended) | set(left)) < 30:
        for message in direct.receive(100, wait_seconds=0.5):
            left.append(TaskMessage.from_json(message.body).basic_info.id)
            direct.ack(message)
    assert set(ended) | set(left) == set(range(30))  # nothing lost
    direct.delete()  # type: ignore[attr-defined]
    direct.close()


def test_chaos_resets_and_stalls_on_rabbitmq_lose_nothing(
    rabbitmq_url: str, tmp_path: Path
) -> None:
    outcome = run_tcp_chaos(
        "amqp", tmp_path, tasks=120, every=(0.15, 0.3), faults=True, seed=1, timeout=60,
        weights={"reset": 2.0, "stall": 1.0},
    )  # fmt: skip
    assert outcome.problems == [], outcome.summary()
    assert outcome.injected, "no fault was injected: the run was too short"


@pytest.mark.slow
def test_without_faults_through_the_proxy_nothing_runs_twice(
    rabbitmq_url: str, tmp_path: Path
) -> None:
    outcome = run_tcp_chaos("amqp", tmp_path, tasks=100, faults=False)
    assert outcome.problems == [] and outcome.duplicates == 0, outcome.summary()


@pytest.mark.slow
@pytest.mark.parametrize("seed", [2, 3])
def test_chaos_with_half_open_connections_on_rabbitmq_loses_nothing(
    rabbitmq_url: str, tmp_path: Path, seed: int
) -> None:
    outcome = run_tcp_chaos("amqp", tmp_path, tasks=300, seed=seed, timeout=120)
    assert outcome.problems == [], outcome.summary()


@pytest.mark.parametrize("fault", ["blackhole", "half_open"])
def test_stop_with_a_dead_pubsub_endpoint_takes_grace_plus_5s_at_most(
    pubsub_emulator: Any, tmp_path: Path, fault: str
) -> None:
    name = f"tcpdead-{uuid.uuid4().hex[:10]}"
    url = f"pubsub://{pubsub_emulator.project}/{name}"
    log = tmp_path / "log"
    direct = open_queue(url, create=True, emulator_host=pubsub_emulator.host_port)
    bodies = [TaskMessage(BasicInfo(i, NapTask.name, ""), {"seconds": 0.3, "log": str(log)})
              for i in range(60)]  # fmt: skip
    direct.send_batch([b.to_json() for b in bodies])
    with TCPFaultProxy((pubsub_emulator.host, pubsub_emulator.port)) as proxy:
        queue = open_queue(url, emulator_host=proxy.address)
        registry = TaskRegistry()
        registry.register(NapTask)
        settings = DaemonSettings(concurrency=2, grace_seconds=GRACE, wait_seconds=1)
        daemon = DaemonService(queue=queue, registry=registry, settings=settings)
        thread = threading.Thread(target=daemon.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while (not log.exists() or len(log.read_text().splitlines()) < 4) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.05)
        getattr(proxy, fault)()
        stopped = time.monotonic()
        daemon.stop()  # what SIGTERM does
        thread.join(GRACE + 30)
        took = time.monotonic() - stopped
        assert not thread.is_alive()
        assert took <= GRACE + 5, f"stop took {took:.1f} s"
        queue.close()
    direct.delete(topic=True)  # type: ignore[attr-defined]
    direct.close()


@pytest.mark.slow
def test_chaos_on_the_pubsub_emulator_loses_nothing(pubsub_emulator: Any, tmp_path: Path) -> None:
    outcome = run_tcp_chaos(
        "pubsub", tmp_path, tasks=200, emulator=pubsub_emulator, seed=4, timeout=120
    )
    assert outcome.problems == [], outcome.summary()


def test_pubsub_settle_timeout_reconnects_so_pulls_work_again(
    pubsub_emulator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A half-open connection: gRPC sends keepalive pings only during calls, so without a new
    # connection every pull on it times out, as an empty subscription's would, for a minute.
    from simpletasks.queues import pubsub as pubsub_module

    monkeypatch.setattr(pubsub_module, "SETTLE_TIMEOUT_SECONDS", 2.0)
    name = f"tcpreconnect-{uuid.uuid4().hex[:10]}"
    url = f"pubsub://{pubsub_emulator.project}/{name}"
    direct = open_queue(url, create=True, emulator_host=pubsub_emulator.host_port)
    direct.send_batch([f"m{i}" for i in range(3)])
    with TCPFaultProxy((pubsub_emulator.host, pubsub_emulator.port)) as proxy:
        queue = open_queue(url, emulator_host=proxy.address)
        first = queue.receive(1, wait_seconds=5, lease_seconds=60)
        assert [m.body for m in first] in (["m0"], ["m1"], ["m2"])
        old_raw = queue._raw  # type: ignore[attr-defined]
        assert proxy.half_open() >= 1
        with pytest.raises(Exception, match="Deadline Exceeded"):
            queue.ack(first[0])  # unanswered: the lease stays lost, the message comes back
        assert queue._raw is not old_raw  # type: ignore[attr-defined]
        started = time.monotonic()
        got: list[Any] = []
        while len(got) < 2 and time.monotonic() - started < 5:
            got += queue.receive(2, wait_seconds=1, lease_seconds=60)
        assert len(got) == 2, "pulls did not come back on a new connection"
        queue.ack_many(got)  # at once: the answered pulls ended the fail-fast window
        queue.close()
    direct.delete(topic=True)  # type: ignore[attr-defined]
    direct.close()


def test_pubsub_does_not_replace_a_client_it_was_given(pubsub_emulator: Any) -> None:
    from google.api_core import exceptions as gexc

    from simpletasks.queues._pubsub_admin import make_client
    from simpletasks.queues.pubsub import PubSubQueue

    name = f"tcpgiven-{uuid.uuid4().hex[:10]}"
    subscriber = make_client("subscriber", pubsub_emulator.host_port)
    queue = PubSubQueue(
        pubsub_emulator.project,
        name,
        subscriber=subscriber,
        emulator_host=pubsub_emulator.host_port,
        create=True,
    )
    raw = queue._raw

    def timed_out(*args: Any) -> None:
        raise gexc.DeadlineExceeded("simulated")

    real_acknowledge = raw.acknowledge  # type: ignore[union-attr]
    raw.acknowledge = timed_out  # type: ignore[method-assign,union-attr]
    queue.send_batch(["x"])
    (message,) = queue.receive(1, wait_seconds=5)
    with pytest.raises(gexc.DeadlineExceeded):
        queue.ack(message)
    assert queue._subscriber is subscriber and queue._raw is raw  # the caller's, kept
    raw.acknowledge = real_acknowledge  # type: ignore[method-assign,union-attr]
    with pytest.raises(gexc.ServiceUnavailable, match=r"did not answer .* just before; not tried"):
        queue.ack(message)  # fails fast: a dead endpoint must not cost a timeout per request
    assert queue.receive(1, wait_seconds=0) == []  # answered: Pub/Sub is there again
    queue.ack(message)
    queue.delete(topic=True)
    queue.close()
    subscriber.close()


def test_pubsub_pulls_timing_out_on_an_emulator_reconnect(pubsub_emulator: Any) -> None:
    # Nothing in flight to settle: an emulator answers an empty pull early, so two pulls
    # that time out mean a dead connection.
    name = f"tcppull-{uuid.uuid4().hex[:10]}"
    url = f"pubsub://{pubsub_emulator.project}/{name}"
    direct = open_queue(url, create=True, emulator_host=pubsub_emulator.host_port)
    with TCPFaultProxy((pubsub_emulator.host, pubsub_emulator.port)) as proxy:
        queue = open_queue(url, emulator_host=proxy.address)
        assert queue.receive(1, wait_seconds=0.5, lease_seconds=60) == []  # connected, empty
        assert proxy.half_open() >= 1
        direct.send_batch(["after"])
        started = time.monotonic()
        got: list[Any] = []
        while not got and time.monotonic() - started < 8:
            got = queue.receive(1, wait_seconds=1, lease_seconds=60)
        assert [m.body for m in got] == ["after"], "pulls did not come back on a new connection"
        queue.ack_many(got)
        queue.close()
    direct.delete(topic=True)  # type: ignore[attr-defined]
    direct.close()
