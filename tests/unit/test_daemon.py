"""The daemon's logic on in-process memory backends (the contract suites test the backends)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tasktypes import FailTask, SleepTask

from simpletasks.buckets import open_bucket
from simpletasks.buckets.memory import MemoryBucket
from simpletasks.cache import FileSystemCache
from simpletasks.daemon import DaemonService
from simpletasks.datasource import BucketCacheDatasource
from simpletasks.errors import ConfigError
from simpletasks.message import BasicInfo, TaskMessage
from simpletasks.middleware import Middleware
from simpletasks.queues import Message, QueueCapabilities, QueueCounts, open_queue
from simpletasks.queues.memory import MemoryQueue
from simpletasks.registry import TaskRegistry
from simpletasks.settings import DaemonSettings
from simpletasks.tasks.noop import NoOpTask, make_example_job

FAST = dict(wait_seconds=0.05, poll_frequency_seconds=0.05, retry_delay_seconds=0, burst=True)


@pytest.fixture(autouse=True)
def _fresh_memory() -> Iterator[None]:
    MemoryQueue.reset_all()
    MemoryBucket.reset_all()
    yield
    MemoryQueue.reset_all()
    MemoryBucket.reset_all()


@pytest.fixture
def registry() -> TaskRegistry:
    reg = TaskRegistry()
    for cls in (NoOpTask, SleepTask, FailTask):
        reg.register(cls)
    return reg


def make_daemon(
    tmp_path: Path,
    registry: TaskRegistry,
    *,
    error_queue: object = None,
    middleware: tuple[Middleware, ...] = (),
    **settings: object,
) -> DaemonService:
    datasource = BucketCacheDatasource(open_bucket("mem://data"), FileSystemCache(tmp_path / "c"))
    return DaemonService(
        queue=open_queue("mem://tasks"),
        registry=registry,
        datasource=datasource,
        error_queue=error_queue or open_queue("mem://errors"),  # type: ignore[arg-type]
        done_queue=open_queue("mem://done"),
        settings=DaemonSettings(**{**FAST, **settings}),  # type: ignore[arg-type]
        middleware=middleware,
    )


def drain(url: str) -> list[dict]:
    queue = open_queue(url)
    out = []
    while batch := queue.receive(10):
        for m in batch:
            out.append(json.loads(m.body))
            queue.ack(m)
    return out


def send(*bodies: str) -> None:
    open_queue("mem://tasks").send_batch(list(bodies))


def task(name: str, payload: object, task_id: int = 1) -> str:
    return TaskMessage(BasicInfo(task_id, name, "d"), payload).to_json()


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_noop_example_end_to_end(tmp_path: Path, registry: TaskRegistry) -> None:
    bucket = open_bucket("mem://data")
    job = make_example_job(bucket)
    send(*(t.to_json() for t in job))
    stats = make_daemon(tmp_path, registry, concurrency=3).run()
    assert (stats.received, stats.succeeded, stats.dead_lettered) == (9, 9, 0)
    outputs = list(bucket.list("datasets/noop_dataset/0_output/"))
    assert len(outputs) == 10
    for key in outputs:
        in_key = key.replace("0_output", "0_input")
        assert _read(bucket, key) == _read(bucket, in_key)
    done = drain("mem://done")
    assert sorted(r["task_id"] for r in done) == list(range(1, 10))
    assert done[0]["kind"] == "done" and done[0]["host"]["pid"] > 0
    assert drain("mem://errors") == []
    assert open_queue("mem://tasks").counts().visible == 0


@pytest.mark.parametrize("phase", ["prepare", "execute", "finalize", "result"])
def test_failure_in_each_phase_retries_then_reports_final(
    tmp_path: Path, registry: TaskRegistry, phase: str
) -> None:
    log = tmp_path / "log"
    send(task("FAIL", {"phase": phase, "log": str(log)}))
    stats = make_daemon(tmp_path, registry, max_attempts=3).run()
    assert len(lines(log)) == 3
    reports = drain("mem://errors")
    assert [r["attempt"] for r in reports] == [1, 2, 3]
    assert [r["final"] for r in reports] == [False, False, True]
    expected_phase = "execute" if phase == "result" else phase
    for r in reports:
        assert r["phase"] == expected_phase
        assert r["task_name"] == "FAIL" and r["task_id"] == 1
        assert r["body"]["payload_info"]["phase"] == phase  # the original message, parsed
        assert r["host"]["hostname"]
        assert r["traceback"].startswith("Traceback")
    if phase == "result":
        assert reports[0]["error_type"] == "TaskFailed"
        assert "planned unsuccessful result" in reports[0]["error_message"]
    else:
        assert reports[0]["error_type"] == "RuntimeError"
        assert f"planned failure in {phase}" in reports[0]["error_message"]
    assert (stats.retried, stats.dead_lettered, stats.succeeded) == (2, 1, 0)
    assert drain("mem://done") == []
    counts = open_queue("mem://tasks").counts()
    assert (counts.visible, counts.in_flight) == (0, 0)


def test_transient_failure_succeeds_on_retry(tmp_path: Path, registry: TaskRegistry) -> None:
    log = tmp_path / "log"
    send(task("FAIL", {"phase": "execute", "log": str(log), "times": 1}))
    stats = make_daemon(tmp_path, registry, max_attempts=3).run()
    assert (stats.succeeded, stats.retried) == (1, 1)
    assert [r["final"] for r in drain("mem://errors")] == [False]
    assert [r["attempt"] for r in drain("mem://done")] == [2]


MALFORMED = [
    ("not json at all", "not JSON"),
    ('{"basic_info": {"id": "x", "name": "NO_OP"}}', "basic_info.id must be an integer"),
    ('{"basic_info": {"id": 1, "name": "NOPE"}}', "no task type named 'NOPE'"),
    (
        '{"basic_info": {"id": 1, "name": "SLEEP"}, "payload_info": {"seconds": "x", "log": "l"}}',
        "payload_info.seconds must be a number",
    ),
    (
        '{"basic_info": {"id": 1, "name": "NO_OP", "inputs": ["../../etc/passwd"]}}',
        "'..' component",
    ),
    ("[]", "must be a JSON object"),
    ("\u2603" * 1000, "not JSON"),
]


def test_malformed_messages_go_to_the_error_queue_at_once(
    tmp_path: Path, registry: TaskRegistry
) -> None:
    log = tmp_path / "log"
    good = [task("SLEEP", {"seconds": 0, "log": str(log)}, i) for i in range(5)]
    send(
        *[b for pair in zip(good, [m for m, _ in MALFORMED], strict=False) for b in pair],
        *[m for m, _ in MALFORMED[len(good) :]],
    )
    stats = make_daemon(tmp_path, registry, concurrency=2).run()
    assert stats.succeeded == 5
    assert len([x for x in lines(log) if x.startswith("end")]) == 5
    reports = drain("mem://errors")
    assert len(reports) == len(MALFORMED)
    by_body = {
        json.dumps(r["body"]) if not isinstance(r["body"], str) else r["body"]: r for r in reports
    }
    for body, reason in MALFORMED:
        key = body if body in by_body else json.dumps(json.loads(body))
        report = by_body[key]
        assert reason in report["error_message"], report
        assert report["phase"] == "parse" and report["final"] and report["attempt"] == 1
    assert "not JSON" in by_body["not json at all"]["error_message"]
    assert by_body["not json at all"]["body"] == "not json at all"  # raw text kept


def test_a_task_longer_than_three_leases_runs_once(tmp_path: Path, registry: TaskRegistry) -> None:
    log = tmp_path / "log"
    send(task("SLEEP", {"seconds": 3.5, "log": str(log)}))
    daemons = [
        make_daemon(tmp_path / name, registry, lease_seconds=1, burst=False) for name in "ab"
    ]
    threads = [threading.Thread(target=d.run, daemon=True) for d in daemons]
    for thread in threads:
        thread.start()
    _wait_for(lambda: "end 1" in lines(log))
    time.sleep(1.5)  # more than a lease: a lost lease would show up as a second run
    for daemon in daemons:
        daemon.stop()
    for thread in threads:
        thread.join(10)
    assert lines(log) == ["start 1", "end 1"]
    assert sum(d.stats.received for d in daemons) == 1
    assert sum(d.stats.succeeded for d in daemons) == 1


def test_stop_releases_the_lease_of_an_unfinished_task(
    tmp_path: Path, registry: TaskRegistry
) -> None:
    log = tmp_path / "log"
    send(task("SLEEP", {"seconds": 3, "log": str(log)}))
    daemon = make_daemon(tmp_path, registry, lease_seconds=30, grace_seconds=0, burst=False)
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    _wait_for(lambda: lines(log) == ["start 1"])
    stopped = time.monotonic()
    daemon.stop()
    queue = open_queue("mem://tasks")
    _wait_for(lambda: queue.counts().visible == 1, timeout=1.0)
    assert time.monotonic() - stopped < 1.0
    thread.join(5)
    assert not thread.is_alive()
    assert daemon.stats.released == 1 and daemon.stats.succeeded == 0


def test_second_stop_skips_the_grace_period(tmp_path: Path, registry: TaskRegistry) -> None:
    log = tmp_path / "log"
    send(task("SLEEP", {"seconds": 3, "log": str(log)}))
    daemon = make_daemon(tmp_path, registry, grace_seconds=60, burst=False)
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    _wait_for(lambda: lines(log) == ["start 1"])
    daemon.stop()
    daemon.stop()
    thread.join(2)
    assert not thread.is_alive()
    assert daemon.stats.released == 1
    assert open_queue("mem://tasks").counts().visible == 1


def test_stop_waits_for_running_tasks_within_grace(tmp_path: Path, registry: TaskRegistry) -> None:
    log = tmp_path / "log"
    send(task("SLEEP", {"seconds": 0.5, "log": str(log)}))
    daemon = make_daemon(tmp_path, registry, grace_seconds=10, burst=False)
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    _wait_for(lambda: lines(log) == ["start 1"])
    daemon.stop()
    thread.join(10)
    assert daemon.stats.succeeded == 1 and daemon.stats.released == 0
    assert open_queue("mem://tasks").counts().visible == 0


def test_max_tasks_stops_after_that_many(tmp_path: Path, registry: TaskRegistry) -> None:
    log = tmp_path / "log"
    send(*[task("SLEEP", {"seconds": 0, "log": str(log)}, i) for i in range(7)])
    stats = make_daemon(tmp_path, registry, burst=False, max_tasks=3).run()
    assert stats.received == 3 and stats.succeeded == 3
    assert open_queue("mem://tasks").counts().visible == 4


def test_burst_waits_for_delayed_retries(tmp_path: Path, registry: TaskRegistry) -> None:
    log = tmp_path / "log"
    send(task("FAIL", {"phase": "execute", "log": str(log), "times": 1}))
    stats = make_daemon(tmp_path, registry, retry_delay_seconds=1).run()
    assert stats.succeeded == 1  # burst did not exit while the retry was invisible


def test_message_past_attempt_limit_is_reported_without_running(
    tmp_path: Path, registry: TaskRegistry
) -> None:
    log = tmp_path / "log"
    send(task("SLEEP", {"seconds": 0, "log": str(log)}))
    queue = open_queue("mem://tasks")
    for _ in range(2):  # two deliveries whose daemon "crashed"
        (m,) = queue.receive(1)
        queue.release(m)
    stats = make_daemon(tmp_path, registry, max_attempts=2).run()
    assert lines(log) == []
    (report,) = drain("mem://errors")
    assert report["phase"] == "receive" and report["final"] and report["attempt"] == 3
    assert "more than max_attempts=2" in report["error_message"]
    assert stats.dead_lettered == 1


class BrokenQueue:
    """An error queue that refuses every report."""

    url = "mem://broken"
    capabilities = QueueCapabilities()

    def send(self, body: str) -> None:
        raise ConnectionError("error queue down")


def test_unwritable_error_report_keeps_the_message(tmp_path: Path, registry: TaskRegistry) -> None:
    log = tmp_path / "log"
    send(task("FAIL", {"phase": "execute", "log": str(log)}))
    daemon = make_daemon(
        tmp_path,
        registry,
        error_queue=BrokenQueue(),
        max_attempts=1,
        burst=False,
        max_tasks=1,
        retry_delay_seconds=30,
    )
    stats = daemon.run()
    assert stats.dead_lettered == 0 and stats.retried == 1
    counts = open_queue("mem://tasks").counts()
    assert (counts.visible, counts.in_flight) == (0, 1)  # still there, waiting to retry


class Recorder(Middleware):
    def __init__(self, calls: list[str], name: str) -> None:
        self.calls, self.name = calls, name

    def before_phase(self, task: object, message: Message, phase: str) -> None:
        self.calls.append(f"{self.name}.before.{phase}")

    def after_phase(
        self,
        task: object,
        message: Message,
        phase: str,
        seconds: float,
        error: BaseException | None,
    ) -> None:
        self.calls.append(f"{self.name}.after.{phase}")
        raise ValueError("broken middleware")

    def on_acked(self, task: object, message: Message, result: object) -> None:
        self.calls.append(f"{self.name}.acked")

    def on_dead_lettered(self, task: object, message: Message, report: object) -> None:
        self.calls.append(f"{self.name}.dead")


def test_middleware_runs_in_order_and_its_errors_are_ignored(
    tmp_path: Path, registry: TaskRegistry
) -> None:
    log = tmp_path / "log"
    send(task("SLEEP", {"seconds": 0, "log": str(log)}), task("NOPE", None))
    calls: list[str] = []
    mw = (Recorder(calls, "a"), Recorder(calls, "b"))
    stats = make_daemon(tmp_path, registry, middleware=mw).run()
    assert stats.succeeded == 1 and stats.dead_lettered == 1
    i = calls.index("a.before.prepare")
    assert calls[i : i + 4] == [
        "a.before.prepare",
        "b.before.prepare",
        "b.after.prepare",
        "a.after.prepare",
    ]
    assert calls.count("a.before.finalize") == 1
    assert calls.index("b.acked") < calls.index("a.acked")
    assert "b.dead" in calls and "a.dead" in calls


def _wait_for(predicate: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def _read(bucket: object, key: str) -> bytes:
    import io

    buf = io.BytesIO()
    bucket.download_fileobj(key, buf)  # type: ignore[attr-defined]
    return buf.getvalue()


def test_burst_without_counts_waits_for_pending_retries(
    tmp_path: Path, registry: TaskRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backend that cannot count (Pub/Sub) must not end a burst while a retry is pending."""
    monkeypatch.setattr(MemoryQueue, "counts", lambda self: QueueCounts(None, None))
    monkeypatch.setattr(MemoryQueue, "capabilities", QueueCapabilities(counts=False))
    log = tmp_path / "log"
    send(task("FAIL", {"phase": "execute", "log": str(log), "times": 1}))
    stats = make_daemon(tmp_path, registry, retry_delay_seconds=0.5, wait_seconds=0.2).run()
    assert (stats.retried, stats.succeeded) == (1, 1)


def test_a_lease_longer_than_the_queue_allows_is_refused(
    tmp_path: Path, registry: TaskRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(MemoryQueue, "capabilities", QueueCapabilities(max_lease_seconds=600))
    with pytest.raises(ConfigError, match=r"lease_seconds=601 is more than mem://tasks allows"):
        make_daemon(tmp_path, registry, lease_seconds=601)


def test_stop_on_an_idle_daemon_returns_within_a_second(
    tmp_path: Path, registry: TaskRegistry
) -> None:
    """Ctrl-C while the loop sits in a long poll: no wait for the poll to end."""
    daemon = make_daemon(
        tmp_path, registry, burst=False, wait_seconds=10, poll_frequency_seconds=10
    )
    thread = threading.Thread(target=daemon.run)
    thread.start()
    time.sleep(0.3)  # the loop is inside a 10 s receive
    stopped = time.monotonic()
    daemon.stop()
    thread.join(5)
    assert not thread.is_alive()
    assert time.monotonic() - stopped < 1.5


def test_progress_is_logged_while_the_daemon_runs(
    tmp_path: Path, registry: TaskRegistry, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    import simpletasks.daemon as daemon_module

    monkeypatch.setattr(daemon_module, "PROGRESS_SECONDS", 0.2)
    log = tmp_path / "log"
    send(*(task("SLEEP", {"seconds": 0.1, "log": str(log)}, i) for i in range(8)))
    with caplog.at_level("INFO", logger="simpletasks.daemon"):
        make_daemon(tmp_path, registry).run()
    progress = [r.getMessage() for r in caplog.records if "progress:" in r.getMessage()]
    assert progress and "succeeded" in progress[-1] and "tasks/s" in progress[-1]


def test_stop_with_its_own_grace_and_the_stopping_events(
    tmp_path: Path, registry: TaskRegistry
) -> None:
    """A preemption notice stops with what is left of its window, not the configured grace."""
    events: list[str] = []

    class Watch(Middleware):
        def on_stopping(self, daemon: object) -> None:
            events.append("stopping")

        def after_receive(self, daemon: object, count: int, error: BaseException | None) -> None:
            if not events or events[-1] != "receive":
                events.append("receive")

    log = tmp_path / "log"
    send(task("SLEEP", {"seconds": 3, "log": str(log)}))
    daemon = make_daemon(tmp_path, registry, burst=False, grace_seconds=60, middleware=(Watch(),))
    thread = threading.Thread(target=daemon.run)
    thread.start()
    _wait_for(lambda: lines(log) == ["start 1"])
    assert not daemon.stopping
    started = time.monotonic()
    daemon.stop(grace_seconds=0.2)
    assert daemon.stopping
    thread.join(5)
    assert time.monotonic() - started < 2  # not the configured 60 s
    assert daemon.stats.released == 1
    assert events[0] == "receive" and "stopping" in events


class TrickleQueue(MemoryQueue):
    """Hands out at most 5 messages a receive of the 100 it allows (as Pub/Sub may)."""

    capabilities = QueueCapabilities(max_batch=100, max_lease_seconds=None, counts=True)

    def receive(self, max_messages: int = 1, **kwargs: Any) -> list[Message]:
        return super().receive(min(max_messages, 5), **kwargs)


def test_the_next_receive_is_in_flight_while_the_buffer_drains(
    tmp_path: Path, registry: TaskRegistry
) -> None:
    """A queue that gives fewer than asked is asked again as soon as another receive's worth
    fits, not only once the buffer is empty (the workers would wait for each receive)."""
    gate = threading.Event()
    running = threading.Event()

    class Gate(NoOpTask):
        name = "GATE"

        def execute(self, datasource: Any) -> Any:
            if self.id == 10:
                running.set()
                gate.wait(10)
            return super().execute(datasource)

    registry.register(Gate)
    queue = TrickleQueue("trickle")
    queue.send_batch([TaskMessage(BasicInfo(i, "GATE", "")).to_json() for i in range(200)])
    daemon = DaemonService(
        queue=queue,
        registry=registry,
        settings=DaemonSettings(**{**FAST, "concurrency": 1}),  # type: ignore[arg-type]
    )
    thread = threading.Thread(target=daemon.run)
    thread.start()
    try:
        assert running.wait(5)
        # one task runs and 4 of its receive are buffered: the loop keeps receiving up to
        # its prefetch limit (101 here) instead of waiting for the buffer to empty
        _wait_for(lambda: daemon.stats.received >= 90, timeout=5)
    finally:
        gate.set()
        thread.join(10)
    assert daemon.stats.succeeded == 200
    assert queue.counts() == QueueCounts(0, 0)


@pytest.mark.parametrize(
    ("mean", "receive", "concurrency", "expected"),
    [
        (None, None, 1, 0),  # nothing measured yet: no prefetch
        (2.0, 0.01, 1, 0),  # tasks longer than prefetch_seconds: never prefetched
        (0.022, None, 1, 2),  # receive latency unknown: the floor, 50 ms of work
        (0.022, 0.001, 1, 2),  # a fast queue (RabbitMQ's buffer): the floor
        (0.022, 0.1, 1, 9),  # a slow queue: twice its latency, 200 ms of work
        (0.022, 0.1, 4, 36),  # ... for all four workers
        (0.3, 0.001, 1, 1),  # at least one waits, however long the tasks (under 1 s)
        (0.022, 5.0, 1, 45),  # never more than prefetch_seconds of work
        (0.0001, 0.01, 4, 100),  # never more than a batch (mem://: 100)
    ],
)
def test_prefetch_covers_a_receive_not_a_second_of_work(
    registry: TaskRegistry,
    mean: float | None,
    receive: float | None,
    concurrency: int,
    expected: int,
) -> None:
    """A daemon holds what covers its queue's latency: at the end of a queue, 1 s of work per
    daemon held locally was work that other daemons, idle by then, could have run."""
    daemon = DaemonService(
        queue=open_queue("mem://prefetch"),
        registry=registry,
        settings=DaemonSettings(concurrency=concurrency, prefetch_seconds=1.0),
    )
    daemon.runner._mean_seconds = mean
    daemon._receive_seconds = receive
    assert daemon._prefetch() == expected


class SlowQueue(MemoryQueue):
    """Answers every receive that finds messages after ``delay`` seconds (a distant queue)."""

    delay = 0.05

    def receive(self, max_messages: int = 1, **kwargs: Any) -> list[Message]:
        messages = super().receive(max_messages, **kwargs)
        if messages:
            time.sleep(self.delay)
        return messages


def test_prefetch_learns_the_latency_of_receives_made_with_work_in_hand(
    registry: TaskRegistry, tmp_path: Path
) -> None:
    queue = SlowQueue("slow")
    payload = {"seconds": 0.01, "log": str(tmp_path / "log")}
    body = TaskMessage(BasicInfo(1, "SLEEP", ""), payload).to_json()
    queue.send_batch([body] * 40)
    daemon = DaemonService(
        queue=queue,
        registry=registry,
        settings=DaemonSettings(**{**FAST, "concurrency": 1}),  # type: ignore[arg-type]
    )
    assert daemon.run().succeeded == 40
    assert daemon._receive_seconds is not None
    assert 0.04 <= daemon._receive_seconds < 0.5  # ~the 50 ms each receive took
    # 2 x 50 ms of 10 ms tasks: ~10 held ahead (the floor alone would give 5, 1 s of work 100)
    assert 7 <= daemon._prefetch() <= 12


def test_a_receive_made_idle_is_not_taken_for_latency(registry: TaskRegistry) -> None:
    """Waiting for new work on an idle queue says nothing about the queue's latency."""
    queue = open_queue("mem://idle")
    daemon = DaemonService(
        queue=queue,
        registry=registry,
        settings=DaemonSettings(wait_seconds=0.3, poll_frequency_seconds=0.05),
    )
    thread = threading.Thread(target=daemon.run)
    thread.start()
    try:
        time.sleep(0.2)  # the loop waits in a receive on the empty queue
        queue.send(TaskMessage(BasicInfo(1, NoOpTask.name, "")).to_json())
        _wait_for(lambda: daemon.stats.succeeded == 1, timeout=5)
    finally:
        daemon.stop()
        thread.join(10)
    assert daemon._receive_seconds is None
