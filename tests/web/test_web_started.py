"""Started reports in the job service: queued → running, states only move forward, unknown
jobs and tasks, older consumers, and a real daemon run with report_starts."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest
from sqlalchemy import select
from web_reports import HOST, done_report, error_report, job_with_tasks

from simpletasks.queues import open_queue
from simpletasks.registry import TaskRegistry
from simpletasks.reports import StartedReport, parse_report
from simpletasks.task import DaemonTask, Result
from simpletasks.web import consumer as consumer_module
from simpletasks.web.db import Report, Task


def _started(job_id: str | None, task_id: int, message_id: str, attempt: int = 1) -> str:
    return StartedReport(
        host=HOST,
        message_id=message_id,
        task_name="NO_OP",
        task_id=task_id,
        attempt=attempt,
        job_id=job_id,
        daemon="d",
    ).to_json()


def _done(job_id: str, task_id: int, message_id: str, attempt: int = 1) -> str:
    return done_report(job_id, task_id, message_id, attempt, outputs=[], seconds=0.1).to_json()


def _error(
    job_id: str, task_id: int, message_id: str, attempt: int, final: bool, phase: str = "execute"
) -> str:
    return error_report(job_id, task_id, message_id, attempt, final, phase).to_json()


def _counts(client: Any, auth: dict[str, str], job_id: str) -> dict[str, int]:
    return dict(client.get(f"/jobs/{job_id}/status/", headers=auth).json["counts"])


def _attempts(app: Any, job_id: str) -> dict[int, int]:
    with app.extensions["simpletasks"].sessions() as session:
        rows = session.scalars(select(Task).where(Task.job_id == job_id))
        return {t.task_id: t.attempts for t in rows}


def test_started_makes_a_queued_task_running_then_done_succeeds(
    app: Any, client: Any, auth: dict[str, str], env: Any, consume: Any
):
    job_id = job_with_tasks(client, auth, 2)
    done = open_queue(env.done_url)
    done.send(_started(job_id, 1, "m1"))
    done.send(_started(job_id, 1, "m1"))  # delivered twice: applied once
    assert consume(app) == 1
    consumer = app.extensions["simpletasks"].consumer
    assert consumer.duplicates == 1 and consumer.unreadable == 0
    status = client.get(f"/jobs/{job_id}/status/", headers=auth).json
    assert status["counts"] == {
        "queued": 1,
        "running": 1,
        "cancelled": 0,
        "failed": 0,
        "succeeded": 0,
    }
    assert status["state"] == "running" and status["finished"] == 0
    assert _attempts(app, job_id) == {1: 1, 2: 0}
    done.send(_done(job_id, 1, "m1"))
    consume(app)
    assert _counts(client, auth, job_id) | {} == {
        "queued": 1,
        "running": 0,
        "cancelled": 0,
        "failed": 0,
        "succeeded": 1,
    }
    # a late started report (another delivery of the same message) changes nothing
    done.send(_started(job_id, 1, "m1", attempt=2))
    consume(app)
    assert _counts(client, auth, job_id)["succeeded"] == 1
    assert _counts(client, auth, job_id)["running"] == 0
    # the started reports are not results, and not failures of their worker
    results = client.get(f"/jobs/{job_id}/results/", headers=auth).json
    assert results["total"] == 1 and results["results"][0]["state"] == "succeeded"
    worker = client.get("/workers/", headers=auth).json["workers"][0]
    assert (worker["tasks_done"], worker["tasks_failed"]) == (1, 0)


def test_started_and_done_in_one_batch_in_either_order(
    app: Any, client: Any, auth: dict[str, str], env: Any, consume: Any
):
    job_id = job_with_tasks(client, auth, 2)
    done = open_queue(env.done_url)
    done.send(_started(job_id, 1, "a"))
    done.send(_done(job_id, 1, "a"))
    done.send(_done(job_id, 2, "b"))  # the done report overtook its started report
    done.send(_started(job_id, 2, "b"))
    consume(app)
    assert _counts(client, auth, job_id)["succeeded"] == 2


def test_a_late_started_never_moves_a_final_task_back(
    app: Any, client: Any, auth: dict[str, str], env: Any, consume: Any
):
    job_id = job_with_tasks(client, auth, 3)
    done, errors = open_queue(env.done_url), open_queue(env.error_url)
    done.send(_done(job_id, 1, "a"))
    errors.send(_error(job_id, 2, "b", 3, final=True))
    errors.send(_error(job_id, 3, "c", 1, final=True, phase="skipped"))
    consume(app)
    for task_id, message_id in ((1, "a"), (2, "b"), (3, "c")):
        done.send(_started(job_id, task_id, message_id, attempt=1))
    consume(app)
    assert _counts(client, auth, job_id) == {
        "queued": 0,
        "running": 0,
        "cancelled": 1,
        "failed": 1,
        "succeeded": 1,
    }


def test_started_of_a_retry_keeps_the_task_running(
    app: Any, client: Any, auth: dict[str, str], env: Any, consume: Any
):
    job_id = job_with_tasks(client, auth, 1)
    done, errors = open_queue(env.done_url), open_queue(env.error_url)
    done.send(_started(job_id, 1, "m", attempt=1))
    errors.send(_error(job_id, 1, "m", 1, final=False))  # will be delivered again
    consume(app)
    assert _counts(client, auth, job_id)["running"] == 1
    done.send(_started(job_id, 1, "m", attempt=2))
    consume(app)
    assert _counts(client, auth, job_id)["running"] == 1
    assert _attempts(app, job_id) == {1: 2}
    errors.send(_error(job_id, 1, "m", 2, final=True))
    consume(app)
    assert _counts(client, auth, job_id)["failed"] == 1
    assert _counts(client, auth, job_id)["running"] == 0


def test_started_for_unknown_jobs_and_tasks(
    app: Any, client: Any, auth: dict[str, str], env: Any, consume: Any
):
    """As for other reports, an unknown job's report is stored and ignored. A started report
    of a task the service did not record makes no row (it has no body to make it from);
    the done report that follows does."""
    job_id = job_with_tasks(client, auth, 1)
    done = open_queue(env.done_url)
    done.send(_started("some-other-job", 1, "x"))
    done.send(_started(None, 1, "no-job"))  # a task not sent through the job API
    done.send(_started(job_id, 7, "late"))
    assert consume(app) == 3
    assert app.extensions["simpletasks"].consumer.unreadable == 0
    assert open_queue(env.done_url).counts().visible == 0  # all acked
    assert _attempts(app, job_id) == {1: 0}
    assert _counts(client, auth, job_id)["queued"] == 1
    assert sum(_counts(client, auth, job_id).values()) == 1
    done.send(_done(job_id, 7, "late"))
    consume(app)
    assert _counts(client, auth, job_id)["succeeded"] == 1
    assert _attempts(app, job_id) == {1: 0, 7: 1}


def test_garbled_started_reports_are_unreadable_and_dropped(
    app: Any, client: Any, auth: dict[str, str], env: Any, consume: Any
):
    job_id = job_with_tasks(client, auth, 1)
    done = open_queue(env.done_url)
    done.send('{"kind": "started", "version": 1, "host": {"hostname": "h", "pid": 1}}')
    done.send('{"kind": "started", "version": 99}')
    done.send('{"kind": "started"}')
    done.send(_started(job_id, 1, "ok"))
    consume(app)
    consumer = app.extensions["simpletasks"].consumer
    assert consumer.unreadable == 3 and consumer.consumed == 1
    assert _counts(client, auth, job_id)["running"] == 1
    assert open_queue(env.done_url).counts().visible == 0


def test_an_older_consumer_drops_started_reports_with_a_log_line(
    app: Any,
    client: Any,
    auth: dict[str, str],
    env: Any,
    consume: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
):
    """A consumer from before started reports called ``parse_report(body)``: to it a started
    report is an unknown kind. It logs it, counts it unreadable, acks it and goes on."""
    monkeypatch.setattr(consumer_module, "parse_report", lambda body, **kw: parse_report(body))
    job_id = job_with_tasks(client, auth, 2)
    done = open_queue(env.done_url)
    done.send(_started(job_id, 1, "a"))
    done.send(_done(job_id, 2, "b"))
    with caplog.at_level(logging.WARNING, logger="simpletasks.web.consumer"):
        consume(app)
    assert app.extensions["simpletasks"].consumer.unreadable == 1
    assert _counts(client, auth, job_id) | {} == {
        "queued": 1,
        "running": 0,
        "cancelled": 0,
        "failed": 0,
        "succeeded": 1,
    }
    assert open_queue(env.done_url).counts().visible == 0
    [line] = [r.getMessage() for r in caplog.records if "unreadable report" in r.getMessage()]
    assert "kind is 'started'" in line


GATE = threading.Event()
ENTERED = threading.Event()


class GateTask(DaemonTask):
    """Waits in execute until the test opens the gate."""

    name = "GATE"

    def execute(self, datasource: object) -> Result:
        ENTERED.set()
        if not GATE.wait(30):
            raise TimeoutError("the test never opened the gate")
        return Result(success=True, message="through")


def test_a_real_daemon_with_report_starts(
    app: Any, client: Any, auth: dict[str, str], env: Any, consume: Any
):
    """End to end: the service's consumer sees a task running while the daemon runs it."""
    GATE.clear()
    ENTERED.clear()
    registry = TaskRegistry()
    registry.register(GateTask)
    job_id = job_with_tasks(client, auth, 2, task_type="GATE")
    daemon = env.daemon(registry, report_starts=True, concurrency=1, prefetch_seconds=0.0)
    stats: list[Any] = []
    thread = threading.Thread(target=lambda: stats.append(daemon.run()))
    thread.start()
    try:
        assert ENTERED.wait(10), "the daemon did not start the task"
        deadline = time.monotonic() + 10
        while _counts(client, auth, job_id)["running"] != 1:
            assert time.monotonic() < deadline, "the started report was not consumed"
            consume(app)
            time.sleep(0.02)
        status = client.get(f"/jobs/{job_id}/status/", headers=auth).json
        assert status["counts"]["queued"] == 1 and status["state"] == "running"
        GATE.set()
        thread.join(30)
        assert not thread.is_alive()
    finally:
        GATE.set()
        daemon.stop()
    assert stats[0].succeeded == 2
    consume(app)
    status = client.get(f"/jobs/{job_id}/status/", headers=auth).json
    assert status["counts"]["succeeded"] == 2 and status["state"] == "finished"
    with app.extensions["simpletasks"].sessions() as session:
        kinds = sorted(session.scalars(select(Report.kind).where(Report.job_id == job_id)))
    assert kinds == ["done", "done", "started", "started"]


def test_without_report_starts_a_running_task_stays_queued(
    app: Any, client: Any, auth: dict[str, str], env: Any, consume: Any
):
    """The default is unchanged: no started reports, so the service cannot see it run."""
    GATE.clear()
    ENTERED.clear()
    registry = TaskRegistry()
    registry.register(GateTask)
    job_id = job_with_tasks(client, auth, 1, task_type="GATE")
    daemon = env.daemon(registry, concurrency=1)
    thread = threading.Thread(target=daemon.run)
    thread.start()
    try:
        assert ENTERED.wait(10)
        consume(app)
        assert _counts(client, auth, job_id)["queued"] == 1
        assert open_queue(env.done_url).counts().visible == 0
    finally:
        GATE.set()
        thread.join(30)
        daemon.stop()
    consume(app)
    assert _counts(client, auth, job_id)["succeeded"] == 1


@pytest.mark.parametrize(
    "change",
    [
        {"attempt": "x"},
        {"attempt": True},
        {"attempt": 2**40},
        {"task_id": "1"},
        {"job_id": ["j"]},
        {"job_id": "j" * 129},
        {"daemon": None},
        {"time": "now"},
        {"message_id": 5},
        {"host": {"hostname": "h", "pid": "x"}},
        {"host": {"hostname": "h", "pid": None}},
        {"host": {"hostname": "h" * 300, "pid": 1}},
    ],
    ids=lambda change: next(iter(change)) + "=" + repr(next(iter(change.values())))[:20],
)
@pytest.mark.parametrize("kind", ["started", "done", "error"])
def test_reports_with_fields_of_the_wrong_type_are_unreadable_not_stuck(
    app: Any,
    client: Any,
    auth: dict[str, str],
    env: Any,
    consume: Any,
    kind: str,
    change: dict[str, Any],
):
    """A report whose field the database cannot store is logged and acked like any unreadable
    one; before, it failed its whole batch on every delivery (nothing of it was acked)."""
    import json

    job_id = job_with_tasks(client, auth, 2)
    make = {"started": _started, "done": _done}
    good = make[kind](job_id, 1, "bad") if kind in make else _error(job_id, 1, "bad", 1, final=True)
    bad = json.dumps({**json.loads(good), **change})
    queue = open_queue(env.error_url if kind == "error" else env.done_url)
    queue.send(bad)
    queue.send(_started(job_id, 2, "fine") if kind != "error" else _error(job_id, 2, "f", 1, False))
    consume(app)
    consumer = app.extensions["simpletasks"].consumer
    assert (consumer.unreadable, consumer.consumed) == (1, 1)
    assert queue.counts().visible == 0 and queue.counts().in_flight == 0
    assert _counts(client, auth, job_id)["running"] == 1
