"""Task context, per-worker resources, follow-ups, cancellation and permanent failures."""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from simpletasks.context import TaskContext
from simpletasks.daemon import DaemonService
from simpletasks.errors import ConfigError, PermanentFailure, TaskCancelled
from simpletasks.message import BasicInfo, TaskMessage
from simpletasks.queues import open_queue
from simpletasks.queues._common import check_sizes
from simpletasks.queues.memory import MemoryQueue
from simpletasks.registry import TaskRegistry
from simpletasks.reports import parse_report
from simpletasks.settings import DaemonSettings
from simpletasks.task import DaemonTask, Result

FAST = dict(wait_seconds=0.05, poll_frequency_seconds=0.05, retry_delay_seconds=0, burst=True)
SEEN: list[dict[str, Any]] = []  # what the tasks below saw, in order


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    MemoryQueue.reset_all()
    SEEN.clear()
    yield
    MemoryQueue.reset_all()


class ContextTask(DaemonTask):
    """Records its context; fails ``payload_info["fail"]`` times first."""

    name = "CTX"

    def execute(self, datasource: object) -> Result:
        c = self.context
        SEEN.append(
            {
                "attempt": c.attempt,
                "job": c.job_id,
                "daemon": c.daemon,
                "db": c.resources.get("db"),
                "thread": threading.current_thread().name,
            }
        )
        if c.attempt <= (self.message.payload_info or {}).get("fail", 0):
            raise RuntimeError("planned")
        return Result(success=True)


class SpawnTask(DaemonTask):
    """Returns the follow-ups named in its payload."""

    name = "SPAWN"

    def execute(self, datasource: object) -> Result:
        return Result(success=True, followups=self.message.payload_info)


class PermanentTask(DaemonTask):
    name = "PERMANENT"

    def execute(self, datasource: object) -> Result:
        SEEN.append({"attempt": self.context.attempt})
        raise PermanentFailure("input is not an image")


class LongTask(DaemonTask):
    """Polls for cancellation; writes an output file in finalize."""

    name = "LONG"

    def execute(self, datasource: object) -> Result:
        SEEN.append({"started": True})
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and not self.context.sleep(0.02):
            pass
        return Result(success=True)

    def finalize(self, datasource: object, result: Result) -> None:
        Path(self.message.payload_info).write_text("published")


class ExitingTask(DaemonTask):
    """Calls ``sys.exit(3)`` or raises ``KeyboardInterrupt`` in the phase its payload names."""

    name = "EXITING"

    def _maybe(self, phase: str) -> None:
        how, where = self.message.payload_info
        if where == phase:
            if how == "exit":
                sys.exit(3)
            raise KeyboardInterrupt

    def prepare(self, datasource: object) -> None:
        self._maybe("prepare")

    def execute(self, datasource: object) -> Result:
        self._maybe("execute")
        return Result(success=True)

    def finalize(self, datasource: object, result: Result) -> None:
        self._maybe("finalize")


STUCK = threading.Event()  # set by a test to let a stuck task return


class StuckTask(DaemonTask):
    """On its first attempt, blocks (ignoring its cancel flag) until STUCK is set."""

    name = "STUCK"

    def execute(self, datasource: object) -> Result:
        SEEN.append({"stuck_attempt": self.context.attempt, "thread": threading.current_thread()})
        if self.context.attempt == 1:
            STUCK.wait(10)
        return Result(success=True)

    def finalize(self, datasource: object, result: Result) -> None:
        SEEN.append({"finalized": self.context.attempt})


class HangingTask(DaemonTask):
    """Blocks (ignoring its cancel flag) until STUCK is set, on every attempt."""

    name = "HANGING"

    def execute(self, datasource: object) -> Result:
        SEEN.append({"hanging_attempt": self.context.attempt})
        STUCK.wait(10)
        return Result(success=True)


def body(name: str, payload: Any = None, *, job: str | None = None, task_id: int = 1) -> str:
    return TaskMessage(BasicInfo(task_id, name, "d"), payload, job).to_json()


def drain(url: str) -> list[dict]:
    queue, out = open_queue(url), []
    while batch := queue.receive(10):
        for m in batch:
            out.append(json.loads(m.body))
            queue.ack(m)
    return out


def daemon(**kwargs: Any) -> DaemonService:
    registry = TaskRegistry()
    for cls in (ContextTask, SpawnTask, PermanentTask, LongTask, ExitingTask, StuckTask):
        registry.register(cls)
    registry.register(HangingTask)
    settings = DaemonSettings(**{**FAST, **kwargs.pop("settings", {})})  # type: ignore[arg-type]
    kwargs.setdefault("error_queue", open_queue("mem://errors"))
    return DaemonService(
        queue=open_queue("mem://tasks"),
        registry=registry,
        done_queue=open_queue("mem://done"),
        settings=settings,
        **kwargs,
    )


def test_context_carries_attempt_job_and_daemon_name() -> None:
    open_queue("mem://tasks").send(body("CTX", {"fail": 1}, job="job-7"))
    stats = daemon(name="lane-a").run()
    assert stats.succeeded == 1 and stats.retried == 1
    assert [(s["attempt"], s["job"], s["daemon"]) for s in SEEN] == [
        (1, "job-7", "lane-a"),
        (2, "job-7", "lane-a"),
    ]
    (done,) = drain("mem://done")
    assert done["job_id"] == "job-7" and done["daemon"] == "lane-a"
    (error,) = drain("mem://errors")
    assert error["job_id"] == "job-7" and error["final"] is False


def test_detached_context_for_tasks_built_in_tests() -> None:
    task = ContextTask(TaskMessage(BasicInfo(1, "CTX", "")), TaskContext(resources={"db": 5}))
    assert task.execute(None).success and SEEN[0]["db"] == 5 and SEEN[0]["attempt"] == 1
    plain = ContextTask(TaskMessage(BasicInfo(1, "CTX", ""), job_id="j"))
    assert plain.context.job_id == "j" and not plain.context.cancelled()


def test_resources_are_opened_once_per_worker_and_closed_at_stop() -> None:
    opened: list[str] = []
    closed: list[str] = []

    @contextlib.contextmanager
    def session() -> Iterator[str]:
        name = f"session-{len(opened)}"
        opened.append(threading.current_thread().name)
        yield name
        closed.append(name)

    open_queue("mem://tasks").send_batch([body("CTX", task_id=i) for i in range(12)])
    stats = daemon(resources={"db": session}, settings={"concurrency": 3}).run()
    assert stats.succeeded == 12
    assert len(opened) == len(set(opened)) <= 3  # at most one per worker thread
    assert sorted(closed) == sorted(f"session-{i}" for i in range(len(opened)))
    for seen in SEEN:  # each task saw the session of the worker it ran on
        assert seen["db"] == f"session-{opened.index(seen['thread'])}"


def test_a_failing_resource_factory_fails_the_task_and_is_retried() -> None:
    calls = []

    def flaky() -> contextlib.AbstractContextManager[str]:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("database down")
        return contextlib.nullcontext("db")

    open_queue("mem://tasks").send(body("CTX"))
    stats = daemon(resources={"db": flaky}).run()
    assert (stats.retried, stats.succeeded) == (1, 1)
    (error,) = drain("mem://errors")
    assert "database down" in error["error_message"]


def test_resources_must_be_factories() -> None:
    with pytest.raises(ConfigError, match="resource 'db' must be a factory"):
        daemon(resources={"db": "postgresql://"})


def test_followups_are_sent_before_the_ack_and_inherit_the_job() -> None:
    followups = [
        {"basic_info": {"id": 2, "name": "CTX", "base_directory": "d", "inputs": []}},
        TaskMessage(BasicInfo(3, "CTX", "d"), job_id="other"),
    ]
    payload = [f if isinstance(f, dict) else f.to_dict() for f in followups]
    open_queue("mem://tasks").send(body("SPAWN", payload, job="job-1"))
    stats = daemon(followup_queue=open_queue("mem://next")).run()
    assert (stats.succeeded, stats.followups) == (1, 2)
    sent = [TaskMessage.from_dict(m) for m in drain("mem://next")]
    assert [(m.basic_info.id, m.job_id) for m in sent] == [(2, "job-1"), (3, "other")]
    (done,) = drain("mem://done")
    assert done["followups"] == 2


def test_followups_that_cannot_be_sent_keep_the_message_for_a_retry() -> None:
    class Down(MemoryQueue):
        def send_batch(self, bodies: Any) -> None:
            raise ConnectionError("follow-up queue down")

    good = {"basic_info": {"id": 2, "name": "CTX"}}
    open_queue("mem://tasks").send(body("SPAWN", [good, good]))
    d = daemon(
        followup_queue=Down("next"),
        settings={"burst": False, "max_tasks": 1, "retry_delay_seconds": 30},
    )
    stats = d.run()
    assert (stats.succeeded, stats.retried) == (0, 1)
    counts = open_queue("mem://tasks").counts()
    assert (counts.visible, counts.in_flight) == (0, 1)  # not lost: waiting for its retry


@pytest.mark.parametrize(
    ("followups", "queue", "expected"),
    [
        ([{"basic_info": {"id": 2}}], "mem://next", "follow-up 0 of <SpawnTask SPAWN id=1> is not"),
        ([{"basic_info": {"id": 2, "name": "CTX"}}], None, "has no follow-up queue"),
    ],
)
def test_bad_followups_are_final_failures(followups: Any, queue: Any, expected: str) -> None:
    open_queue("mem://tasks").send(body("SPAWN", followups))
    next_queue = open_queue(queue) if queue else None
    stats = daemon(followup_queue=next_queue).run()
    assert (stats.dead_lettered, stats.succeeded) == (1, 0)
    (error,) = drain("mem://errors")
    assert error["final"] and error["phase"] == "followups" and expected in error["error_message"]
    assert drain("mem://next") == []


def test_a_followup_too_big_for_its_queue_is_a_final_failure_not_endless_retries() -> None:
    class Small(MemoryQueue):  # a queue with a size limit that refuses more, as SQS does
        capabilities = MemoryQueue.capabilities.__class__(
            max_batch=10, max_lease_seconds=None, counts=True, max_body_bytes=300
        )

        def send_batch(self, bodies: Any) -> None:
            check_sizes(bodies, 300, self.url)
            super().send_batch(bodies)

    big = {"basic_info": {"id": 2, "name": "CTX"}, "payload_info": {"x": "é" * 200}}
    small = {"basic_info": {"id": 3, "name": "CTX"}}
    open_queue("mem://tasks").send_batch([body("SPAWN", [small, big]), body("CTX", task_id=4)])
    next_queue = Small("next-small")
    stats = daemon(followup_queue=next_queue, settings={"max_attempts": 5}).run()
    assert (stats.dead_lettered, stats.succeeded, stats.retried) == (1, 1, 0)
    (error,) = drain("mem://errors")
    assert error["final"] and error["phase"] == "followups"
    assert "follow-up 1 of <SpawnTask SPAWN id=1> is 503 bytes" in error["error_message"]
    assert "accepts at most 300 bytes" in error["error_message"]
    assert next_queue.counts().visible == 0  # none of its follow-ups went out


@pytest.mark.parametrize("phase", ["prepare", "execute", "finalize"])
@pytest.mark.parametrize("how", ["exit", "interrupt"])
@pytest.mark.parametrize("middleware", [False, True])
def test_sys_exit_in_a_task_is_a_failure_not_a_lost_worker(
    how: str, phase: str, middleware: bool
) -> None:
    """sys.exit() on a worker thread used to end the thread silently: its message stayed
    leased (renewed for ever) and the daemon never finished its queue."""
    from simpletasks.middleware import Middleware

    open_queue("mem://tasks").send_batch(
        [body("EXITING", [how, phase], task_id=1), body("CTX", task_id=2), body("CTX", task_id=3)]
    )
    chain = [Middleware()] if middleware else []  # the timed phase path, and the bare one
    d = daemon(middleware=chain, settings={"max_attempts": 2})
    runner = threading.Thread(target=d.run, daemon=True)
    runner.start()
    runner.join(20)
    assert not runner.is_alive(), "the daemon did not finish its queue"
    assert (d.stats.succeeded, d.stats.retried, d.stats.dead_lettered) == (2, 1, 1)
    reports = drain("mem://errors")
    assert [(r["phase"], r["error_type"], r["final"]) for r in reports] == [
        (phase, "TaskExited", False),
        (phase, "TaskExited", True),
    ]
    raised = "SystemExit(3)" if how == "exit" else "KeyboardInterrupt"
    assert f"{phase} raised {raised}: a task cannot end the daemon" in reports[0]["error_message"]
    counts = open_queue("mem://tasks").counts()
    assert (counts.visible, counts.in_flight) == (0, 0)


def test_a_task_past_its_timeout_is_given_up_and_a_new_worker_goes_on() -> None:
    STUCK.clear()
    open_queue("mem://tasks").send_batch(
        [body("STUCK", task_id=1)] + [body("CTX", task_id=i) for i in range(2, 6)]
    )
    d = daemon(settings={"task_timeout_seconds": 0.5, "concurrency": 1, "max_attempts": 3})
    runner = threading.Thread(target=d.run, daemon=True)
    runner.start()
    runner.join(8)  # the stuck task would block the only worker for 10 s
    try:
        assert not runner.is_alive(), "the daemon waited for the stuck task"
        # the other four ran on the replacement worker, and attempt 2 of the stuck one too
        assert (d.stats.succeeded, d.stats.retried, d.stats.released) == (5, 1, 0)
        attempts = [s["stuck_attempt"] for s in SEEN if "stuck_attempt" in s]
        assert attempts == [1, 2] and {"finalized": 2} in SEEN and {"finalized": 1} not in SEEN
        counts = open_queue("mem://tasks").counts()
        assert (counts.visible, counts.in_flight) == (0, 0)
        # the timed-out attempt is reported like any failed attempt
        (report,) = drain("mem://errors")
        assert (report["phase"], report["error_type"], report["final"]) == (
            "timeout",
            "TaskTimedOut",
            False,
        )
        assert (report["task_id"], report["attempt"], report["max_attempts"]) == (1, 1, 3)
        assert "still running after 0.5 s (task_timeout_seconds)" in report["error_message"]
    finally:
        STUCK.set()  # let the stuck thread return: its result must be dropped, not published
    stuck_thread = next(s["thread"] for s in SEEN if s.get("stuck_attempt") == 1)
    stuck_thread.join(5)
    assert not stuck_thread.is_alive()  # it ended instead of taking more work
    assert {"finalized": 1} not in SEEN and len(drain("mem://done")) == 5


@pytest.mark.parametrize("error_queue", [True, False])
def test_a_task_timing_out_at_its_last_attempt_is_final(error_queue: bool) -> None:
    """The last attempt's timeout ends the message with a final report at once (it used to
    come back once more and be reported as "delivered 3 times"); without an error queue the
    message stays on its queue for the queue's own redrive policy, as other failures do."""
    STUCK.clear()
    open_queue("mem://tasks").send_batch([body("HANGING", task_id=7), body("CTX", task_id=8)])
    settings = {"task_timeout_seconds": 0.3, "concurrency": 1, "max_attempts": 2}
    if not error_queue:  # the last attempt goes back after a delay: the test stops the daemon
        settings["retry_delay_seconds"] = 0.2
    d = daemon(settings=settings, error_queue=open_queue("mem://errors") if error_queue else None)
    runner = threading.Thread(target=d.run, daemon=True)
    runner.start()
    try:
        if error_queue:
            runner.join(8)
            assert not runner.is_alive(), "the daemon waited for the hanging task"
            assert (d.stats.succeeded, d.stats.retried, d.stats.dead_lettered) == (1, 1, 1)
            reports = drain("mem://errors")
            assert [(r["phase"], r["attempt"], r["final"]) for r in reports] == [
                ("timeout", 1, False),
                ("timeout", 2, True),
            ]
            counts = open_queue("mem://tasks").counts()
            assert (counts.visible, counts.in_flight) == (0, 0)  # deleted with its report
        else:
            deadline = time.monotonic() + 8
            while d.stats.retried < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert d.stats.retried >= 2 and d.stats.dead_lettered == 0
            d.stop()
            runner.join(8)
            counts = open_queue("mem://tasks").counts()
            assert counts.visible + counts.in_flight == 1  # kept: nowhere to report it
    finally:
        STUCK.set()
    assert [s["hanging_attempt"] for s in SEEN if "hanging_attempt" in s] == [1, 2]


def test_task_timeout_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="task_timeout_seconds must be > 0"):
        DaemonSettings(task_timeout_seconds=0)
    with pytest.raises(ConfigError, match="max_stuck_tasks must be >= 1"):
        DaemonSettings(task_timeout_seconds=1, max_stuck_tasks=0)
    with pytest.raises(ConfigError, match="max_stuck_tasks needs task_timeout_seconds"):
        DaemonSettings(max_stuck_tasks=2)


def test_the_daemon_stops_when_too_many_given_up_tasks_hold_their_threads() -> None:
    """Every timed-out task leaves its thread behind until it returns; a daemon fed tasks that
    hang for good would grow threads (and what they hold) without end. At max_stuck_tasks it
    stops as on SIGTERM and says why; what it did not run stays on the queue."""
    STUCK.clear()
    open_queue("mem://tasks").send_batch(
        [body("HANGING", task_id=i) for i in range(1, 4)] + [body("CTX", task_id=9)]
    )
    d = daemon(
        settings={
            "task_timeout_seconds": 0.2,
            "max_stuck_tasks": 2,
            "concurrency": 1,
            "max_attempts": 5,
            "burst": False,
            "grace_seconds": 0.5,
        }
    )
    runner = threading.Thread(target=d.run, daemon=True)
    runner.start()
    try:
        runner.join(8)
        assert not runner.is_alive(), "the daemon did not stop itself"
        assert d.stop_reason is not None
        assert "2 task(s) given up after task_timeout_seconds=0.2 are still running" in (
            d.stop_reason
        )
        assert "restart the process" in d.stop_reason
        assert d.stats.retried == 2 and d.stats.dead_lettered == 0
        hung = [s["hanging_attempt"] for s in SEEN if "hanging_attempt" in s]
        assert len(hung) == 2  # no worker replaced the second: nothing else ran after it
        tasks = open_queue("mem://tasks")
        counts = tasks.counts()
        assert counts.visible + counts.in_flight == 4 - d.stats.succeeded  # nothing lost
    finally:
        STUCK.set()


def test_permanent_failure_is_final_at_once_and_other_work_goes_on() -> None:
    open_queue("mem://tasks").send_batch([body("PERMANENT"), body("CTX", task_id=2)])
    stats = daemon(settings={"max_attempts": 5}).run()
    assert (stats.dead_lettered, stats.succeeded, stats.retried) == (1, 1, 0)
    assert [s.get("attempt") for s in SEEN if "db" not in s] == [1]
    (error,) = drain("mem://errors")
    assert error["final"] and error["error_type"] == "PermanentFailure"


def test_a_task_given_up_after_the_grace_period_publishes_nothing(tmp_path: Path) -> None:
    output = tmp_path / "out"
    open_queue("mem://tasks").send(body("LONG", str(output)))
    d = daemon(settings={"burst": False, "grace_seconds": 0.1, "lease_seconds": 30})
    thread = threading.Thread(target=d.run)
    thread.start()
    deadline = time.monotonic() + 5
    while not SEEN and time.monotonic() < deadline:
        time.sleep(0.01)
    d.stop()
    thread.join(5)
    time.sleep(0.2)  # the task noticed its cancellation and returned
    assert not thread.is_alive()
    assert not output.exists()
    assert (d.stats.succeeded, d.stats.released) == (0, 1)
    assert drain("mem://done") == [] and drain("mem://errors") == []
    assert len(drain("mem://tasks")) == 1  # released: another daemon runs it


def test_raise_if_cancelled() -> None:
    cancel = threading.Event()
    context = TaskContext(message_id="m1", cancel=cancel)
    context.raise_if_cancelled()
    cancel.set()
    with pytest.raises(TaskCancelled, match="m1"):
        context.raise_if_cancelled()
    assert context.sleep(10) is True


def test_a_message_rejected_after_basic_info_parsed_keeps_its_name_and_id() -> None:
    open_queue("mem://tasks").send(body("NOT_REGISTERED", task_id=42, job="j"))
    daemon().run()
    report = parse_report(json.dumps(drain("mem://errors")[0]))
    assert (report.task_name, report.task_id, report.job_id, report.phase) == (
        "NOT_REGISTERED",
        42,
        "j",
        "parse",
    )


def test_the_error_queue_must_not_be_the_task_queue() -> None:
    registry = TaskRegistry()
    with pytest.raises(ConfigError, match="error queue is the task queue itself"):
        DaemonService(
            queue=open_queue("mem://tasks"),
            registry=registry,
            error_queue=open_queue("mem://tasks"),
        )


def test_skip_check_deletes_unrun_with_a_final_report_and_fails_open() -> None:
    open_queue("mem://tasks").send_batch(
        [
            body("CTX", job="gone", task_id=1),
            body("CTX", job="live", task_id=2),
            body("CTX", job="odd", task_id=3),
        ]
    )

    def skip(message: TaskMessage) -> str | None:
        if message.job_id == "odd":
            raise RuntimeError("cancellation store down")
        return "job gone was cancelled" if message.job_id == "gone" else None

    stats = daemon(skip=skip).run()
    assert (stats.skipped, stats.succeeded) == (1, 2)
    assert sorted(s["job"] for s in SEEN) == ["live", "odd"]
    (report,) = drain("mem://errors")
    assert (report["phase"], report["final"], report["job_id"]) == ("skipped", True, "gone")
    assert report["error_message"] == "job gone was cancelled"
