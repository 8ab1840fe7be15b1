"""Started reports (``simpletasks run --report-starts``): one per delivery attempt on the done
queue, before ``prepare``; a failed send never fails the task; no done queue is a ConfigError."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tasktypes import FailTask
from tests_support import file_setup, invoke

from simpletasks.buckets import open_bucket
from simpletasks.buckets.memory import MemoryBucket
from simpletasks.cache import FileSystemCache
from simpletasks.daemon import DaemonService
from simpletasks.datasource import BucketCacheDatasource
from simpletasks.errors import ConfigError, MessageError
from simpletasks.message import BasicInfo, TaskMessage
from simpletasks.queues import open_queue
from simpletasks.queues.memory import MemoryQueue
from simpletasks.registry import TaskRegistry
from simpletasks.reports import DoneReport, HostInfo, StartedReport, parse_report
from simpletasks.settings import DaemonSettings
from simpletasks.started import StartedReports
from simpletasks.task import DaemonTask, Result
from simpletasks.tasks.noop import NoOpTask

FAST = dict(wait_seconds=0.05, poll_frequency_seconds=0.05, retry_delay_seconds=0, burst=True)


class PeekTask(DaemonTask):
    """Records, in prepare, how many messages the done queue holds at that moment."""

    name = "PEEK"
    seen: list[int] = []

    def prepare(self, datasource: object) -> None:
        PeekTask.seen.append(open_queue("mem://done").counts().visible)

    def execute(self, datasource: object) -> Result:
        return Result(success=True)


@pytest.fixture(autouse=True)
def _fresh_memory() -> Iterator[None]:
    MemoryQueue.reset_all()
    MemoryBucket.reset_all()
    PeekTask.seen = []
    yield
    MemoryQueue.reset_all()
    MemoryBucket.reset_all()


def make_daemon(tmp_path: Path, done: Any, *, starts: Any = None, **settings: Any) -> DaemonService:
    registry = TaskRegistry()
    for cls in (NoOpTask, FailTask, PeekTask):
        registry.register(cls)
    datasource = BucketCacheDatasource(open_bucket("mem://data"), FileSystemCache(tmp_path / "c"))
    return DaemonService(
        queue=open_queue("mem://tasks"),
        registry=registry,
        datasource=datasource,
        error_queue=open_queue("mem://errors"),
        done_queue=done,
        settings=DaemonSettings(**{**FAST, **settings}),
        middleware=[starts if starts is not None else StartedReports(done)],
        name="w1",
    )


def drain(url: str) -> list[dict[str, Any]]:
    queue = open_queue(url)
    out = []
    while batch := queue.receive(10):
        for m in batch:
            out.append(json.loads(m.body))
            queue.ack(m)
    return out


def task(name: str, payload: object, task_id: int, job_id: str | None = None) -> str:
    return TaskMessage(BasicInfo(task_id, name, "d"), payload, job_id).to_json()


def test_one_started_report_per_delivery_attempt(tmp_path: Path) -> None:
    log = tmp_path / "log"
    open_queue("mem://tasks").send_batch(
        [
            task("FAIL", {"phase": "execute", "log": str(log), "times": 1}, 1, job_id="j1"),
            task("NO_OP", None, 2, job_id="j1"),
            "not a task",  # parsed never: no started report
        ]
    )
    done = open_queue("mem://done")
    starts = StartedReports(done)
    stats = make_daemon(tmp_path, done, starts=starts, max_attempts=3).run()
    assert (stats.succeeded, stats.retried) == (2, 1)
    reports = drain("mem://done")
    started = [r for r in reports if r["kind"] == "started"]
    finished = [r for r in reports if r["kind"] == "done"]
    assert sorted((r["task_id"], r["attempt"]) for r in started) == [(1, 1), (1, 2), (2, 1)]
    assert sorted((r["task_id"], r["attempt"]) for r in finished) == [(1, 2), (2, 1)]
    assert (starts.sent, starts.failed) == (3, 0)
    by_message = {r["message_id"]: r for r in finished}
    for r in started:
        done_report = by_message[r["message_id"]]  # the same message as its done report
        for name in ("task_name", "task_id", "job_id", "daemon", "host"):
            assert r[name] == done_report[name], name
        assert r["daemon"] == "w1" and r["job_id"] == "j1" and r["host"]["pid"] > 0
        assert r["time"] <= done_report["time"] and "body" not in r
        back = parse_report(json.dumps(r), with_started=True)
        assert isinstance(back, StartedReport) and back.attempt == r["attempt"]
    # each report precedes the done report of its attempt on the queue
    order = [(r["kind"], r["task_id"], r["attempt"]) for r in reports]
    assert order.index(("started", 1, 2)) < order.index(("done", 1, 2))


def test_started_report_is_on_the_done_queue_before_prepare(tmp_path: Path) -> None:
    open_queue("mem://tasks").send(task("PEEK", None, 1))
    done = open_queue("mem://done")
    assert make_daemon(tmp_path, done).run().succeeded == 1
    assert PeekTask.seen == [1]  # its own started report, and nothing else yet


class RefusesStarted:
    """A done queue whose sends of started reports fail (done reports go through)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.refused = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def send(self, body: str) -> Any:
        if json.loads(body).get("kind") == "started":
            self.refused += 1
            raise ConnectionError("done queue unreachable")
        return self.inner.send(body)


def test_a_failing_send_does_not_fail_the_task(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    open_queue("mem://tasks").send_batch([task("NO_OP", None, 1), task("NO_OP", None, 2)])
    done = RefusesStarted(open_queue("mem://done"))
    starts = StartedReports(done)  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="simpletasks.started"):
        stats = make_daemon(tmp_path, done, starts=starts).run()
    assert (stats.succeeded, stats.retried, stats.dead_lettered) == (2, 0, 0)
    assert (starts.sent, starts.failed, done.refused) == (0, 2, 2)
    assert sorted(r["task_id"] for r in drain("mem://done")) == [1, 2]  # done reports only
    assert drain("mem://errors") == []
    warnings = [r for r in caplog.records if r.name == "simpletasks.started"]
    assert len(warnings) == 2 and all(r.levelno == logging.WARNING for r in warnings)
    assert "runs anyway" in warnings[0].getMessage()
    assert "done queue unreachable" in warnings[0].getMessage()


def test_without_a_done_queue_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="done queue"):
        StartedReports(None)


def test_started_reports_are_read_only_when_asked() -> None:
    """Older readers (and ``simpletasks status``) call parse_report without the flag: to them
    a started report is not a report, the same MessageError as any unknown kind."""
    report = StartedReport(HostInfo("h", 1), "m", "NO_OP", 3, 2, job_id="j", daemon="d")
    text = report.to_json()
    assert json.loads(text)["kind"] == "started" and json.loads(text)["version"] == 1
    with pytest.raises(MessageError, match="kind is 'started', not 'error' or 'done'"):
        parse_report(text)
    assert parse_report(text, with_started=True) == report
    done = DoneReport(HostInfo("h", 1), "m", {}, "NO_OP", 3, [], "", 1, 0.1)
    assert parse_report(done.to_json(), with_started=True) == done
    garbled = json.dumps({"kind": "started", "version": 1, "host": {"hostname": "h", "pid": 1}})
    with pytest.raises(MessageError, match="not a complete StartedReport"):
        parse_report(garbled, with_started=True)
    # a started report has no body: shrinking it for a small queue must not fail
    long = StartedReport(HostInfo("h", 1), "m", "N" * 5000, 1, 1)
    assert parse_report(long.to_json(max_bytes=100), with_started=True) == long


# -- the command line -------------------------------------------------------------------


@pytest.fixture
def urls(tmp_path: Path) -> dict[str, str]:
    return file_setup(tmp_path)


def run_args(urls: dict[str, str]) -> list[str]:
    return [
        "run",
        "--queue",
        urls["queue"],
        "--error-queue",
        urls["errors"],
        "--bucket",
        urls["bucket"],
        "--cache-dir",
        urls["cache"],
        "--burst",
        "--wait",
        "0",
    ]


def test_run_report_starts_sends_them_to_the_done_queue(urls: dict[str, str]) -> None:
    open_queue(urls["queue"]).send(task("NO_OP", None, 5, job_id="job-5"))
    result = invoke(*run_args(urls), "--done-queue", urls["done"], "--report-starts")
    assert result.exit_code == 0, result.output
    done = open_queue(urls["done"])
    kinds = sorted(json.loads(m.body)["kind"] for m in done.receive(10))
    assert kinds == ["done", "started"]


def test_run_report_starts_from_the_environment(urls: dict[str, str]) -> None:
    open_queue(urls["queue"]).send(task("NO_OP", None, 5))
    env = {"SIMPLETASKS_REPORT_STARTS": "1", "SIMPLETASKS_DONE_QUEUE": urls["done"]}
    result = invoke(*run_args(urls), env=env)
    assert result.exit_code == 0, result.output
    kinds = sorted(json.loads(m.body)["kind"] for m in open_queue(urls["done"]).receive(10))
    assert kinds == ["done", "started"]


def test_run_report_starts_without_a_done_queue_is_refused(urls: dict[str, str]) -> None:
    open_queue(urls["queue"]).send(task("NO_OP", None, 1))
    result = invoke(*run_args(urls), "--report-starts")
    assert result.exit_code == 1
    assert "--report-starts" in result.output and "--done-queue" in result.output
    assert open_queue(urls["queue"]).counts().visible == 1  # nothing ran
