"""Prometheus metrics: scraped over HTTP while daemons work, and checked against what they did."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

if os.environ.get("CI") != "true":  # CI must have it (the [metrics] extra): fail there
    pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families

from simpletasks.buckets import open_bucket
from simpletasks.daemon import DaemonService
from simpletasks.datasource import BucketCacheDatasource
from simpletasks.errors import ConfigError
from simpletasks.message import BasicInfo, TaskMessage
from simpletasks.metrics import Metrics
from simpletasks.metrics_server import MetricsServer
from simpletasks.queues import open_queue
from simpletasks.registry import TaskRegistry
from simpletasks.settings import DaemonSettings
from simpletasks.supervisor import Supervisor
from simpletasks.task import DaemonTask, Result

GATE = threading.Event()  # COPY tasks wait on it, so a scrape can see them in flight


class Copy(DaemonTask):
    """Reads its input through the datasource and writes it back under out/."""

    name = "COPY"

    def execute(self, ds: Any) -> Result:
        GATE.wait(10)
        data = ds.get(self.input_keys[0]).read_bytes()
        ds.put(f"out/{self.id}", data)
        return Result(success=True)


class Boom(DaemonTask):
    """Fails every time."""

    name = "BOOM"

    def execute(self, ds: Any) -> Result:
        raise RuntimeError("boom")


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics, keyed by (name, sorted labels)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    return sum(
        v for (n, ls), v in samples.items() if n == name and labels.items() <= dict(ls).items()
    )


def health(port: int, path: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def make_daemon(tmp_path: Path, metrics: Metrics, name: str, **settings: Any) -> DaemonService:
    registry = TaskRegistry()
    registry.register(Copy)
    registry.register(Boom)
    metered = metrics.middleware(name)
    bucket = metered.bucket(open_bucket(f"file://{tmp_path}/bucket"))
    cache = metered.cache(tmp_path / f"cache-{name}")
    return DaemonService(
        queue=metered.queue(open_queue(f"file://{tmp_path}/tasks")),
        registry=registry,
        datasource=BucketCacheDatasource(bucket, cache),
        error_queue=open_queue(f"file://{tmp_path}/errors"),
        settings=DaemonSettings(
            wait_seconds=0.1, poll_frequency_seconds=0.1, retry_delay_seconds=0, **settings
        ),
        middleware=[metered],
        name=name,
    )


@pytest.fixture
def queues(tmp_path: Path) -> Path:
    for name in ("tasks", "errors"):
        open_queue(f"file://{tmp_path}/{name}", create=True).close()
    bucket = open_bucket(f"file://{tmp_path}/bucket", create=True)
    src = tmp_path / "src"
    src.write_bytes(b"x" * 1000)
    bucket.upload(src, "in/data")
    GATE.clear()
    return tmp_path


def send(tmp_path: Path, name: str, count: int, start: int = 0) -> None:
    queue = open_queue(f"file://{tmp_path}/tasks")
    for i in range(start, start + count):
        queue.send(TaskMessage(BasicInfo(i, name, "", ["in/data"])).to_json())


def wait_for(predicate: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_counters_agree_with_what_the_daemon_did(queues: Path) -> None:
    send(queues, "COPY", 4)
    send(queues, "BOOM", 1, start=100)
    open_queue(f"file://{queues}/tasks").send("not json")
    metrics = Metrics()
    server = MetricsServer(metrics, 0, host="127.0.0.1").start()
    daemon = make_daemon(queues, metrics, "w1", concurrency=2, max_attempts=2, burst=True)
    assert health(server.port, "/healthz")[0] == 503  # not started yet
    thread = threading.Thread(target=daemon.run)
    thread.start()
    try:
        # COPY tasks block on the gate: two of them must show as in flight
        wait_for(lambda: value(scrape(server.port), "simpletasks_tasks_in_flight") == 2)
        during = scrape(server.port)
        assert value(during, "simpletasks_tasks_in_flight", daemon="w1", task="COPY") == 2
        code, body = health(server.port, "/healthz")
        assert code == 200 and body == {"ok": True, "daemons": {"w1": "ok"}}
        assert health(server.port, "/readyz")[0] == 200
        GATE.set()
        thread.join(30)
        assert not thread.is_alive()
        stats = daemon.stats
        after = scrape(server.port)
    finally:
        GATE.set()
        daemon.stop()
        thread.join(5)
        server.close()

    def total(name: str, **labels: str) -> float:
        return value(after, f"simpletasks_{name}_total", daemon="w1", **labels)

    assert stats.succeeded == 4 and stats.dead_lettered == 2 and stats.retried == 1
    assert total("tasks_received") == stats.received == 7  # 4 + BOOM twice + the bad one
    assert total("tasks_received", task="COPY") == 4
    assert total("tasks_received", task="?") == 1
    assert total("tasks_succeeded", task="COPY") == stats.succeeded
    assert total("tasks_dead_lettered", task="BOOM") == 1
    assert total("tasks_dead_lettered", task="?") == 1
    assert total("tasks_retried", task="BOOM") == stats.retried == 1
    assert total("tasks_failed") == 3
    assert value(after, "simpletasks_tasks_in_flight") == 0
    phase = "simpletasks_phase_seconds_count"
    assert value(after, phase, task="COPY", phase="execute", outcome="ok") == 4
    assert value(after, phase, task="COPY", phase="finalize", outcome="ok") == 4
    assert value(after, phase, task="BOOM", phase="execute", outcome="error") == 2
    assert total("bucket_bytes", direction="up") == 4000  # four 1000-byte outputs
    assert total("bucket_bytes", direction="down") == 1000  # the input, fetched once
    assert total("cache_misses") == 1 and total("cache_hits") == 3
    assert value(after, "simpletasks_queue_last_call_timestamp_seconds", ok="true") > 0


def test_two_daemons_in_one_process_share_a_registry_apart(queues: Path) -> None:
    GATE.set()
    send(queues, "COPY", 6)
    metrics = Metrics()
    server = MetricsServer(metrics, 0, host="127.0.0.1").start()
    a = make_daemon(queues, metrics, "a", burst=True)
    b = make_daemon(queues, metrics, "b", burst=True)
    try:
        stats = Supervisor([a, b]).run()
        samples = scrape(server.port)
    finally:
        server.close()
    for name in ("a", "b"):
        got = value(samples, "simpletasks_tasks_succeeded_total", daemon=name)
        assert got == stats[name].succeeded
    assert stats["a"].succeeded + stats["b"].succeeded == 6
    with pytest.raises(ConfigError, match="exist already"):
        metrics.middleware("a")


def test_a_port_in_use_is_a_clear_error_and_port_zero_picks_a_free_one() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"metrics port {port} .* is in use"):
            MetricsServer(Metrics(), port, host="127.0.0.1")
    servers = [MetricsServer(Metrics(), 0, host="127.0.0.1").start() for _ in range(2)]
    try:
        assert servers[0].port != servers[1].port and all(s.port for s in servers)
        with urllib.request.urlopen(f"http://127.0.0.1:{servers[0].port}/nope") as r:
            pytest.fail(f"expected 404, got {r.status}")
    except urllib.error.HTTPError as exc:
        assert exc.code == 404
    finally:
        for s in servers:
            s.close()


class BrokenQueue:
    """A queue whose receive fails (the service is down); counts still work."""

    def __init__(self, queue: Any) -> None:
        self._queue = queue

    def __getattr__(self, name: str) -> Any:
        return getattr(self._queue, name)

    def receive(self, *args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("service down")


def test_readyz_fails_while_the_queue_fails_and_healthz_after_stop(queues: Path) -> None:
    metrics = Metrics()
    server = MetricsServer(metrics, 0, host="127.0.0.1").start()
    metered = metrics.middleware("w")
    registry = TaskRegistry()
    registry.register(Copy)
    daemon = DaemonService(
        queue=metered.queue(BrokenQueue(open_queue(f"file://{queues}/tasks"))),
        registry=registry,
        error_queue=open_queue(f"file://{queues}/errors"),
        settings=DaemonSettings(wait_seconds=0.1, poll_frequency_seconds=0.1),
        middleware=[metered],
        name="w",
    )
    thread = threading.Thread(target=daemon.run)
    thread.start()
    try:
        wait_for(lambda: metered.health.last_call is not None)
        code, body = health(server.port, "/readyz")
        assert code == 503 and "not answered" in body["daemons"]["w"]
        assert health(server.port, "/healthz")[0] == 200  # the loop itself is alive
        samples = scrape(server.port)
        assert value(samples, "simpletasks_queue_last_call_timestamp_seconds", ok="false") > 0
    finally:
        daemon.stop()
        thread.join(5)
    code, body = health(server.port, "/healthz")
    server.close()
    assert code == 503 and body["daemons"] == {"w": "stopped"}


def test_a_silent_loop_is_unhealthy() -> None:
    from simpletasks.metrics import DaemonHealth

    h = DaemonHealth("x")
    h.stale_seconds = 10
    assert h.live(100.0) == (False, "not started")
    h.started = h.last_call = h.last_ok = 100.0
    assert h.live(105.0) == (True, "ok") and h.ready(105.0) == (True, "ok")
    assert h.live(111.0)[0] is False and "no queue call for 11 s" in h.live(111.0)[1]


def test_cache_evictions_are_counted(tmp_path: Path) -> None:
    metrics = Metrics()
    cache = metrics.middleware("d").cache(tmp_path / "c", max_bytes=2500)
    for i in range(5):
        cache.put_bytes(f"k{i}", b"x" * 1000)  # each commit past 2500 bytes evicts the oldest
    evicted = metrics.registry.get_sample_value(
        "simpletasks_cache_evictions_total", {"daemon": "d"}
    )
    assert evicted == 3 and len(cache.keys()) == 2
    huge = 10**18  # no disk has that much free: make_room evicts all it can
    assert cache.make_room(huge) == 2
    evicted = metrics.registry.get_sample_value(
        "simpletasks_cache_evictions_total", {"daemon": "d"}
    )
    assert evicted == 5


@pytest.mark.parametrize("kind", ["mem", "file", "priority"])
def test_local_queues_tell_when_a_message_was_sent(kind: str, tmp_path: Path) -> None:
    from simpletasks.queues.priority import PriorityQueue

    if kind == "priority":
        q: Any = PriorityQueue()
    else:
        url = "mem://sent-at" if kind == "mem" else (tmp_path / "q").as_uri()
        q = open_queue(url, create=True)
    before = time.time()
    q.send("x")
    (message,) = q.receive(wait_seconds=1)
    assert message.sent_at is not None and before - 1 <= message.sent_at <= time.time()
