"""The report consumer: idempotent on redelivery, restart-safe, tolerant of bad reports."""

from __future__ import annotations

import io
import time
from typing import Any

from sqlalchemy import func, select
from web_reports import done_report, error_report, job_with_tasks

from simpletasks.buckets import open_bucket
from simpletasks.queues import open_queue
from simpletasks.reports import DoneReport
from simpletasks.web.consumer import apply_report
from simpletasks.web.db import Report


def _status(client: Any, auth: dict[str, str], job_id: str) -> dict[str, int]:
    return dict(client.get(f"/jobs/{job_id}/status/", headers=auth).json["counts"])


def test_redelivered_reports_change_nothing(
    app: Any, client: Any, auth: dict[str, str], env: Any, consume: Any
):
    job_id = job_with_tasks(client, auth, 2)
    done, errors = open_queue(env.done_url), open_queue(env.error_url)
    report = done_report(job_id, 1, "m1").to_json()
    for _ in range(3):  # the same report delivered three times
        done.send(report)
    errors.send(error_report(job_id, 2, "m2", 1, final=False).to_json())
    errors.send(error_report(job_id, 2, "m2", 1, final=False).to_json())
    assert consume(app) == 2
    consumer = app.extensions["simpletasks"].consumer
    assert consumer.duplicates == 3
    counts = _status(client, auth, job_id)
    assert counts["succeeded"] == 1 and counts["running"] == 1 and counts["queued"] == 0
    results = client.get(f"/jobs/{job_id}/results/", headers=auth).json
    assert results["total"] == 1
    worker = client.get("/workers/", headers=auth).json["workers"][0]
    assert (worker["tasks_done"], worker["tasks_failed"]) == (1, 1)


def test_states_never_move_backwards(
    app: Any, client: Any, auth: dict[str, str], env: Any, consume: Any
):
    job_id = job_with_tasks(client, auth, 3)
    done, errors = open_queue(env.done_url), open_queue(env.error_url)
    done.send(done_report(job_id, 1, "a", attempt=2).to_json())
    errors.send(error_report(job_id, 1, "a", 1, final=False).to_json())  # older attempt, late
    errors.send(error_report(job_id, 2, "b", 3, final=True).to_json())
    errors.send(error_report(job_id, 3, "c", 1, final=True, phase="skipped").to_json())
    consume(app)
    counts = _status(client, auth, job_id)
    assert counts == {"queued": 0, "running": 0, "cancelled": 1, "failed": 1, "succeeded": 1}


def test_unreadable_and_foreign_reports_are_dropped(
    app: Any, client: Any, auth: dict[str, str], env: Any, consume: Any
):
    job_id = job_with_tasks(client, auth, 1)
    done, errors = open_queue(env.done_url), open_queue(env.error_url)
    done.send("not json")
    done.send('{"kind": "strange", "version": 1}')
    errors.send(error_report("some-other-job", 1, "x", 1, final=True).to_json())
    done.send(done_report(job_id, 1, "ok").to_json())
    consume(app)
    consumer = app.extensions["simpletasks"].consumer
    assert consumer.unreadable == 2
    assert _status(client, auth, job_id)["succeeded"] == 1
    assert open_queue(env.done_url).counts().visible == 0  # all acked
    assert client.get("/server/", headers=auth).json["consumer"]["unreadable"] == 2


def test_crash_before_ack_redelivers_and_is_applied_once(
    app: Any, client: Any, auth: dict[str, str], env: Any
):
    """A consumer that commits and dies before acking: the queue delivers again; no double count."""
    job_id = job_with_tasks(client, auth, 1)
    done = open_queue(env.done_url)
    done.send(done_report(job_id, 1, "m").to_json())
    sessions = app.extensions["simpletasks"].sessions
    from simpletasks.reports import parse_report

    [message] = done.receive(1, lease_seconds=1)
    with sessions() as session:  # applied and committed, never acked
        assert apply_report(session, parse_report(message.body))
        session.commit()
    time.sleep(1.1)  # the lease runs out
    consumer = app.extensions["simpletasks"].consumer
    consumer.drain()
    assert consumer.duplicates == 1 and consumer.consumed == 0
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Report)) == 1
    assert _status(client, auth, job_id)["succeeded"] == 1


def test_results_after_a_server_restart(env: Any, consume: Any):
    """Results survive the service: a new app over the same database serves them."""
    from simpletasks.web.auth import create_api_key

    first = env.app()
    with first.extensions["simpletasks"].sessions() as session:
        key = create_api_key(session, "k")
    auth = {"Authorization": f"Bearer {key}"}
    client = first.test_client()
    bucket = open_bucket(env.bucket_url)
    job = client.post("/jobs/", json={"name": "j", "task_type": "NO_OP"}, headers=auth).json
    bucket.upload_fileobj(io.BytesIO(b"x"), f"{job['base_directory']}/a.dat")
    client.post(
        f"/jobs/{job['id']}/tasks/", json={"tasks": [{"inputs": ["a.dat"]}] * 2}, headers=auth
    )
    first.extensions["simpletasks"].consumer.poll_once()  # nothing yet
    env.daemon().run()
    del first, client  # the service goes away before consuming

    second = env.app()  # same database file, same queues
    consume(second)
    client = second.test_client()
    status = client.get(f"/jobs/{job['id']}/status/", headers=auth).json
    assert status["counts"]["succeeded"] == 2 and status["state"] == "finished"
    third = env.app()
    results = third.test_client().get(f"/jobs/{job['id']}/results/", headers=auth).json
    assert results["total"] == 2
    assert all(r["outputs"] for r in results["results"])


def test_consumer_thread_applies_reports_while_serving(
    app: Any, client: Any, auth: dict[str, str], env: Any
):
    consumer = app.extensions["simpletasks"].consumer
    job_id = job_with_tasks(client, auth, 1)
    consumer.start(wait_seconds=0.2)
    try:
        assert client.get("/server/", headers=auth).json["consumer"]["running"] is True
        open_queue(env.done_url).send(done_report(job_id, 1, "t").to_json())
        deadline = time.monotonic() + 10
        while _status(client, auth, job_id)["succeeded"] != 1:
            assert time.monotonic() < deadline, "consumer thread did not apply the report"
            time.sleep(0.05)
    finally:
        consumer.stop()
    assert not consumer.running


def test_task_rows_missing_are_made_from_reports(
    app: Any, client: Any, auth: dict[str, str], env: Any, consume: Any
):
    """A report of a task the service did not record (sent, then the commit failed)."""
    job_id = job_with_tasks(client, auth, 1)
    report = done_report(job_id, 7, "late")
    report = DoneReport(**{**report.__dict__, "body": {"basic_info": {"inputs": ["q.dat"]}}})
    open_queue(env.done_url).send(report.to_json())
    consume(app)
    counts = _status(client, auth, job_id)
    assert counts["succeeded"] == 1 and counts["queued"] == 1
