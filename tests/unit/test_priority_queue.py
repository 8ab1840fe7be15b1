"""The in-process priority queue: chooser order, shared views, leases, and daemons on it."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest

from simpletasks.daemon import DaemonService
from simpletasks.errors import ConfigError
from simpletasks.message import BasicInfo, TaskMessage
from simpletasks.queues import open_queue
from simpletasks.queues.priority import Pending, PriorityQueue
from simpletasks.registry import TaskRegistry
from simpletasks.settings import DaemonSettings
from simpletasks.supervisor import Supervisor
from simpletasks.task import DaemonTask, Result


class Newest:
    def choose(self, pending: Sequence[Pending]) -> Pending | None:
        return max(pending, key=lambda p: p.seq)


class Only:
    """Chooses only bodies starting with ``prefix``."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def choose(self, pending: Sequence[Pending]) -> Pending | None:
        return next((p for p in pending if p.body.startswith(self.prefix)), None)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_default_order_is_fifo_and_a_chooser_reorders() -> None:
    q = PriorityQueue()
    q.send_batch(["a", "b", "c"])
    assert [m.body for m in q.receive(3)] == ["a", "b", "c"]
    newest = PriorityQueue(chooser=Newest())
    newest.send_batch(["a", "b", "c"])
    assert [newest.receive()[0].body for _ in range(3)] == ["c", "b", "a"]


def test_views_share_messages_and_leases() -> None:
    q = PriorityQueue()
    cpu, net = q.view(Only("cpu")), q.view(Only("net"))
    q.send_batch(["cpu-1", "net-1", "cpu-2"])
    (m,) = cpu.receive()
    assert m.body == "cpu-1"
    assert [x.body for x in net.receive(5)] == ["net-1"]
    assert q.counts().in_flight == 2 and q.counts().visible == 1
    net.ack(m)  # an ack through any view deletes it
    assert q.counts().in_flight == 1
    assert cpu.receive(wait_seconds=0.05)[0].body == "cpu-2"


def test_a_declining_chooser_waits_for_wake() -> None:
    ready = threading.Event()

    class Gate:
        def choose(self, pending: Sequence[Pending]) -> Pending | None:
            return pending[0] if ready.is_set() else None

    q = PriorityQueue(chooser=Gate())
    q.send("x")
    assert q.receive(wait_seconds=0.05) == []
    threading.Timer(0.1, lambda: (ready.set(), q.wake())).start()
    started = time.monotonic()
    assert [m.body for m in q.receive(wait_seconds=5)] == ["x"]
    assert time.monotonic() - started < 2


def test_leases_run_out_on_the_injected_clock() -> None:
    clock = FakeClock()
    q = PriorityQueue(clock=clock)
    q.send("x")
    (first,) = q.receive(lease_seconds=10)
    assert q.receive() == []
    clock.now += 5
    assert q.extend_many([first], 10) == []
    clock.now += 9
    assert q.receive() == []
    clock.now += 2
    (second,) = q.receive(lease_seconds=10)
    assert second.attempt == 2
    assert q.extend_many([first], 10) == [first]  # the stale handle lost its lease
    q.ack(first)  # ignored: stale
    assert q.counts().in_flight == 1
    q.release(second)
    assert q.receive()[0].attempt == 3


def test_a_chooser_returning_a_stranger_is_an_error() -> None:
    class Wrong:
        def choose(self, pending: Sequence[Pending]) -> Pending | None:
            return Pending("nope", "x", 0, 0)

    q = PriorityQueue(chooser=Wrong())
    q.send("x")
    with pytest.raises(ValueError, match="not among the pending"):
        q.receive()


def test_cannot_be_opened_by_url() -> None:
    with pytest.raises(ConfigError, match="cannot be opened by URL"):
        PriorityQueue.from_url("priority://x")


class Record(DaemonTask):
    name = "RECORD"
    order: list[int] = []
    gate = threading.Event()

    def execute(self, datasource: Any) -> Result:
        Record.gate.wait(5)
        Record.order.append(self.id)
        return Result(success=True)


def _msg(i: int) -> str:
    return TaskMessage(BasicInfo(i, "RECORD", "")).to_json()


def test_a_daemon_on_an_ordered_queue_buffers_nothing() -> None:
    """An urgent message sent while a worker is busy runs next, not after stale work."""
    Record.order, Record.gate = [], threading.Event()
    registry = TaskRegistry()
    registry.register(Record)
    q = PriorityQueue(chooser=Newest())
    q.send_batch([_msg(i) for i in range(1, 4)])
    settings = DaemonSettings(wait_seconds=0.05, poll_frequency_seconds=0.05, burst=True)
    daemon = DaemonService(queue=q, registry=registry, settings=settings, name="cpu")
    thread = threading.Thread(target=daemon.run)
    thread.start()
    time.sleep(0.3)  # task 3 (newest) is running; 1 and 2 must still be in the queue
    assert q.counts().visible == 2
    q.send(_msg(99))
    Record.gate.set()
    thread.join(10)
    assert Record.order == [3, 99, 2, 1]


def test_supervisor_runs_two_named_daemons_and_stops_both() -> None:
    Record.order, Record.gate = [], threading.Event()
    Record.gate.set()
    registry = TaskRegistry()
    registry.register(Record)
    q = PriorityQueue()
    settings = DaemonSettings(wait_seconds=0.05, poll_frequency_seconds=0.05)
    lanes = [
        DaemonService(
            queue=q.view(Only('{"basic_info": {"id": 1')),
            registry=registry,
            settings=settings,
            name="a",
        ),
        DaemonService(queue=q, registry=registry, settings=settings, name="b"),
    ]
    supervisor = Supervisor(lanes)
    q.send_batch([_msg(i) for i in range(1, 6)])
    runner = threading.Thread(target=lambda: setattr(runner, "stats", supervisor.run()))
    runner.start()
    deadline = time.monotonic() + 5
    while len(Record.order) < 5 and time.monotonic() < deadline:
        time.sleep(0.02)
    supervisor.stop()
    runner.join(5)
    stats = runner.stats  # type: ignore[attr-defined]
    assert set(stats) == {"a", "b"}
    assert sum(s.succeeded for s in stats.values()) == 5
    assert sorted(Record.order) == [1, 2, 3, 4, 5]


def test_supervisor_refuses_duplicate_names() -> None:
    registry = TaskRegistry()
    d = DaemonService(queue=open_queue("mem://x"), registry=registry)
    with pytest.raises(ConfigError, match="names must differ"):
        Supervisor([d, d])


def test_discard_removes_only_waiting_messages() -> None:
    seen: list[Pending] = []

    class Spy:
        def choose(self, pending: Sequence[Pending]) -> Pending | None:
            seen[:] = pending
            return pending[0]

    q = PriorityQueue(chooser=Spy())
    q.send_batch(["a", "b", "c"])
    (leased,) = q.receive()
    waiting = [p.id for p in seen[1:]]  # b and c, as the chooser saw them
    assert q.discard([leased.id, waiting[0], "unknown"]) == 1
    assert [m.body for m in q.receive(5)] == ["c"]
    q.ack(leased)
    assert q.counts().visible == 0


def test_supervisor_calls_stop_callbacks_once_before_the_daemons() -> None:
    registry = TaskRegistry()
    registry.register(Record)
    settings = DaemonSettings(wait_seconds=0.05, poll_frequency_seconds=0.05)
    calls: list[str] = []
    d = DaemonService(queue=PriorityQueue(), registry=registry, settings=settings, name="x")
    supervisor = Supervisor([d], on_stop=[lambda: calls.append("watcher stopped"), _boom])
    runner = threading.Thread(target=supervisor.run)
    runner.start()
    time.sleep(0.2)
    supervisor.stop()
    supervisor.stop()
    runner.join(5)
    assert not runner.is_alive() and calls == ["watcher stopped"]


def _boom() -> None:
    raise RuntimeError("a broken callback does not keep the daemons running")


def test_unlimited_attempts_retry_until_success() -> None:
    class Flaky(DaemonTask):
        name = "FLAKY"
        runs = 0

        def execute(self, datasource: Any) -> Result:
            Flaky.runs += 1
            return Result(success=Flaky.runs > 7)

    registry = TaskRegistry()
    registry.register(Flaky)
    q = PriorityQueue()
    q.send(TaskMessage(BasicInfo(1, "FLAKY", "")).to_json())
    settings = DaemonSettings(
        wait_seconds=0.05,
        poll_frequency_seconds=0.05,
        burst=True,
        max_attempts=None,
        retry_delay_seconds=0,
    )
    stats = DaemonService(queue=q, registry=registry, settings=settings).run()
    assert (stats.retried, stats.succeeded, stats.dead_lettered) == (7, 1, 0)
