"""Cancelling a job while a real daemon runs its tasks: the rest are skipped, other jobs run."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from tasktypes import SleepTask

from simpletasks.buckets import open_bucket
from simpletasks.jobs import JobCancellations, mark_cancelled
from simpletasks.message import BasicInfo, TaskMessage
from simpletasks.registry import TaskRegistry


def _wait_for(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_cancel_while_tasks_run(
    app: Any, client: Any, auth: dict[str, str], env: Any, tmp_path: Path, consume: Any
):
    registry = TaskRegistry()
    registry.register(SleepTask)
    log = tmp_path / "log"
    log.touch()
    payload = {"seconds": 0.3, "log": str(log)}
    doomed = client.post(
        "/jobs/", json={"name": "doomed", "task_type": "SLEEP", "payload": payload}, headers=auth
    ).json
    kept = client.post(
        "/jobs/", json={"name": "kept", "task_type": "SLEEP", "payload": payload}, headers=auth
    ).json
    client.post(f"/jobs/{doomed['id']}/tasks/", json={"tasks": [{}] * 6}, headers=auth)
    client.post(f"/jobs/{kept['id']}/tasks/", json={"tasks": [{}] * 2}, headers=auth)
    daemon = env.daemon(registry, concurrency=1, prefetch_seconds=0.0)
    stats: list[Any] = []
    thread = threading.Thread(target=lambda: stats.append(daemon.run()))
    thread.start()
    try:
        _wait_for(lambda: "start 1" in log.read_text())  # the first task of `doomed` runs
        response = client.delete(f"/jobs/{doomed['id']}/", headers=auth)
        assert response.status_code == 200 and response.json["cancelled"]
        thread.join(30)
        assert not thread.is_alive()
    finally:
        daemon.stop()
    consume(app)
    counts = client.get(f"/jobs/{doomed['id']}/status/", headers=auth).json["counts"]
    assert counts["queued"] == 0 and counts["running"] == 0
    assert counts["succeeded"] >= 1 and counts["cancelled"] >= 4
    assert counts["succeeded"] + counts["cancelled"] == 6
    assert stats[0].skipped == counts["cancelled"]
    other = client.get(f"/jobs/{kept['id']}/status/", headers=auth).json
    assert other["counts"]["succeeded"] == 2 and other["state"] == "finished"
    results = client.get(f"/jobs/{doomed['id']}/results/", headers=auth).json["results"]
    skipped = [r for r in results if r["state"] == "cancelled"]
    assert skipped and all("cancelled" in r["error"]["message"] for r in skipped)
    assert skipped[0]["error"]["phase"] == "skipped"


def _message(job_id: str | None) -> TaskMessage:
    return TaskMessage(BasicInfo(id=1, name="NO_OP", base_directory=""), None, job_id=job_id)


def test_job_cancellations_cache(env: Any):
    bucket = open_bucket(env.bucket_url)
    now = [0.0]
    check = JobCancellations(bucket, ttl_seconds=5.0, clock=lambda: now[0])
    assert check(_message("j1")) is None
    assert check(_message(None)) is None
    assert check(_message("../x")) is None  # not a job id the API makes
    mark_cancelled(bucket, "j1")
    assert check(_message("j1")) is None  # cached "not cancelled" for 5 s
    now[0] = 6.0
    assert check(_message("j1")) == "job j1 was cancelled"
    bucket.delete("_simpletasks/cancelled/j1")
    assert check.cancelled("j1")  # a cancellation is final


def test_job_cancellations_fail_open_on_bucket_errors(env: Any):
    class Down:
        def exists(self, key: str) -> bool:
            raise ConnectionError("bucket down")

    check = JobCancellations(Down(), ttl_seconds=0)  # type: ignore[arg-type]
    try:
        check(_message("j"))
    except ConnectionError:
        pass  # the daemon logs it and runs the task (its skip check fails open)
    else:
        raise AssertionError("bucket error swallowed")
