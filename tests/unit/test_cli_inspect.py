"""Failures you can see, inspect and replay: ``status``, ``peek`` and ``requeue`` on the
reports a real daemon run wrote (file:// queues), and ``run --burst``'s exit status."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tests_support import file_setup, invoke

from simpletasks.queues import open_queue


@pytest.fixture
def failed_run(tmp_path: Path) -> dict[str, Any]:
    """3 FAIL tasks (3 attempts each) and 2 NO_OP tasks, run in burst mode."""
    urls = {name: f"file://{tmp_path}/{name}" for name in ("tasks", "errors", "done", "bucket")}
    made = invoke("create", urls["tasks"], urls["errors"], urls["done"], "--bucket", urls["bucket"])
    assert made.exit_code == 0, made.output
    log = str(tmp_path / "fail.log")
    failing = [
        json.dumps(
            {
                "basic_info": {"id": i, "name": "FAIL"},
                "payload_info": {"phase": "execute", "log": log},
            }
        )
        for i in range(3)
    ]
    fine = [json.dumps({"basic_info": {"id": 10 + i, "name": "NO_OP"}}) for i in range(2)]
    messages = tmp_path / "tasks.jsonl"
    messages.write_text("\n".join(failing + fine) + "\n")
    sent = invoke("schedule", "--queue", urls["tasks"], str(messages))
    assert sent.exit_code == 0, sent.output
    ran = invoke(
        "run", "--queue", urls["tasks"], "--error-queue", urls["errors"], "--done-queue",
        urls["done"], "--bucket", urls["bucket"], "--cache-dir", str(tmp_path / "cache"),
        "--task", "tasktypes:FailTask", "--task", "simpletasks.tasks.noop:NoOpTask",
        "--max-attempts", "3", "--retry-delay", "0", "--burst", "--wait", "0",
    )  # fmt: skip
    return {"urls": urls, "failing": failing, "ran": ran}


def test_burst_exits_1_when_tasks_failed_for_good(failed_run: dict[str, Any]) -> None:
    ran = failed_run["ran"]
    assert ran.exit_code == 1, ran.output
    assert "Error: 3 task(s) failed for good" in ran.output
    assert "simpletasks peek" in ran.output


def test_status_tells_final_failures_from_retried_attempts(failed_run: dict[str, Any]) -> None:
    urls = failed_run["urls"]
    result = invoke("status", urls["tasks"], urls["errors"], urls["done"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert f"{urls['errors']}\tvisible=9\tin_flight=0" in lines
    assert "  3 final failure(s) (FAIL: 3), 6 retried attempt(s) (still on their task queue)" in (
        lines
    )
    assert "  2 done report(s)" in lines
    assert open_queue(urls["errors"]).counts().visible == 9  # nothing consumed


def test_peek_prints_without_consuming(failed_run: dict[str, Any]) -> None:
    urls = failed_run["urls"]
    result = invoke("peek", urls["errors"], "-n", "4")
    assert result.exit_code == 0, result.output
    reports = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    assert len(reports) == 4 and all(r["kind"] == "error" for r in reports)
    assert "4 message(s) shown" in result.output
    assert open_queue(urls["errors"]).counts().visible == 9


def test_requeue_sends_final_failures_back_with_their_original_bodies(
    failed_run: dict[str, Any],
) -> None:
    urls = failed_run["urls"]
    result = invoke("requeue", "--from", urls["errors"], "--to", urls["tasks"], "--task-name", "X")
    assert "requeued 0 final failure(s)" in result.output and "left 9 report(s)" in result.output

    result = invoke(
        "requeue", "--from", urls["errors"], "--to", urls["tasks"], "--task-name", "FAIL"
    )
    assert result.exit_code == 0, result.output
    assert "requeued 3 final failure(s)" in result.output
    assert "left 6 report(s)" in result.output
    tasks = open_queue(urls["tasks"])
    bodies = [m.body for m in tasks.receive(10, wait_seconds=0)]
    assert sorted(json.loads(b)["basic_info"]["id"] for b in bodies) == [0, 1, 2]
    assert sorted(map(json.loads, bodies), key=str) == sorted(
        map(json.loads, failed_run["failing"]), key=str
    )
    assert open_queue(urls["errors"]).counts().visible == 6

    result = invoke("requeue", "--from", urls["errors"], "--to", urls["tasks"], "--drop-retried")
    assert "requeued 0 final failure(s)" in result.output
    assert "dropped 6 retried-attempt report(s)" in result.output
    assert open_queue(urls["errors"]).counts().visible == 0


def test_status_of_a_task_queue_reads_one_batch_and_leaves_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"file://{tmp_path}/tasks"
    assert invoke("create", url).exit_code == 0
    queue = open_queue(url)
    queue.send_batch([json.dumps({"basic_info": {"id": i, "name": "NO_OP"}}) for i in range(25)])
    received: list[int] = []
    original = type(queue).receive

    def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
        batch = original(self, *args, **kwargs)
        received.append(len(batch))
        return batch

    monkeypatch.setattr(type(queue), "receive", counting)
    result = invoke("status", url)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [f"{url}\tvisible=25\tin_flight=0"]
    assert len(received) == 1  # one batch: no reports in it, so no more
    assert open_queue(url).counts().visible == 25


def test_status_counts_started_reports_of_run_report_starts(tmp_path: Path) -> None:
    urls = file_setup(tmp_path)
    messages = tmp_path / "tasks.jsonl"
    messages.write_text(
        "\n".join(json.dumps({"basic_info": {"id": i, "name": "NO_OP"}}) for i in range(2)) + "\n"
    )
    assert invoke("schedule", "--queue", urls["queue"], str(messages)).exit_code == 0
    ran = invoke(
        "run", "--queue", urls["queue"], "--error-queue", urls["errors"], "--done-queue",
        urls["done"], "--bucket", urls["bucket"], "--cache-dir", urls["cache"],
        "--report-starts", "--burst", "--wait", "0",
    )  # fmt: skip
    assert ran.exit_code == 0, ran.output
    result = invoke("status", urls["done"])
    assert result.exit_code == 0, result.output
    assert "  2 done report(s); 2 started report(s)" in result.output.splitlines()
