"""A final failure whose message is too big for its report loses nothing: the daemon keeps
the message in its bucket and ``requeue --bucket`` sends it back, byte for byte.

Real parts: SQS and S3 on moto (an error queue with a 2 KiB size limit), the CLI in process.
"""

from __future__ import annotations

import hashlib
import io
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from tests_support import invoke

from simpletasks.buckets import open_bucket
from simpletasks.kept_bodies import PREFIX
from simpletasks.queues import open_queue
from simpletasks.queues.sqs import create_queue


@pytest.fixture
def aws(moto_server: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """A task queue (256 KiB), an error queue of 2 KiB and a bucket on moto."""
    for name, value in moto_server.env().items():
        monkeypatch.setenv(name, value)
    run = uuid.uuid4().hex[:8]
    sqs = moto_server.client("sqs")
    create_queue(f"kept-tasks-{run}", client=sqs)
    create_queue(f"kept-errors-{run}", client=sqs, attributes={"MaximumMessageSize": "2048"})
    open_bucket(f"s3://kept-{run}", create=True)
    return {
        "tasks": f"sqs://kept-tasks-{run}",
        "errors": f"sqs://kept-errors-{run}",
        "bucket": f"s3://kept-{run}",
        "log": str(tmp_path / "fail.log"),
        "cache": str(tmp_path / "cache"),
    }


def failing(task_id: int, log: str, padding: int) -> str:
    # not json.dumps' spacing: the kept copy must be the message exactly as sent
    payload = {"phase": "execute", "log": log, "padding": "é" * padding}
    return json.dumps(
        {"basic_info": {"id": task_id, "name": "FAIL"}, "payload_info": payload},
        separators=(",", ":"),
        ensure_ascii=False,
    )


def run_burst(urls: dict[str, str], *extra: str) -> Any:
    return invoke(
        "run", "--queue", urls["tasks"], "--error-queue", urls["errors"], "--bucket",
        urls["bucket"], "--cache-dir", urls["cache"], "--task", "tasktypes:FailTask",
        "--max-attempts", "1", "--burst", "--wait", "0", *extra,
    )  # fmt: skip


def reports(url: str) -> list[dict[str, Any]]:
    queue = open_queue(url)
    got = queue.receive(10, wait_seconds=1, lease_seconds=1)
    for message in got:
        queue.release(message)
    return [json.loads(m.body) for m in got]


def test_a_message_too_big_for_its_report_is_kept_and_requeued_byte_for_byte(
    aws: dict[str, str],
) -> None:
    big, small = failing(1, aws["log"], 3000), failing(2, aws["log"], 10)
    assert len(big.encode()) > 6000  # three times the error queue's limit
    open_queue(aws["tasks"]).send_batch([big, small])
    ran = run_burst(aws)
    assert ran.exit_code == 1, ran.output  # final failures

    by_id = {r["task_id"]: r for r in reports(aws["errors"])}
    assert set(by_id) == {1, 2} and all(r["final"] for r in by_id.values())
    assert by_id[2]["body"]["basic_info"]["id"] == 2 and not by_id[2]["truncated"]
    kept = by_id[1]
    assert kept["truncated"] and kept["body"] is None
    assert kept["body_key"] == f"{PREFIX}/{hashlib.sha256(big.encode()).hexdigest()}"
    stored = io.BytesIO()
    open_bucket(aws["bucket"]).download_fileobj(kept["body_key"], stored)
    assert stored.getvalue() == big.encode()

    # without the bucket, requeue sends what it can and says where the rest is
    result = invoke("requeue", "--from", aws["errors"], "--to", aws["tasks"])
    assert result.exit_code == 0, result.output
    assert "requeued 1 final failure(s)" in result.output
    assert "1 whose message is in a bucket: pass --bucket URL" in result.output
    tasks = open_queue(aws["tasks"])
    [back] = tasks.receive(10, wait_seconds=1)
    assert json.loads(back.body) == json.loads(small)  # re-encoded from the report
    tasks.ack(back)

    result = invoke(
        "requeue", "--from", aws["errors"], "--to", aws["tasks"], "--bucket", aws["bucket"]
    )
    assert result.exit_code == 0, result.output
    assert "requeued 1 final failure(s)" in result.output and "left 0 report(s)" in result.output
    [back] = tasks.receive(10, wait_seconds=1)
    assert back.body == big  # exactly the message that failed
    assert open_queue(aws["errors"]).counts().visible == 0


def test_a_kept_message_that_was_tampered_with_is_not_requeued(aws: dict[str, str]) -> None:
    big = failing(1, aws["log"], 3000)
    open_queue(aws["tasks"]).send(big)
    assert run_burst(aws).exit_code == 1
    [report] = reports(aws["errors"])
    bucket = open_bucket(aws["bucket"])
    bucket.upload_fileobj(io.BytesIO(b"something else"), report["body_key"])
    result = invoke(
        "requeue", "--from", aws["errors"], "--to", aws["tasks"], "--bucket", aws["bucket"]
    )
    assert result.exit_code == 0, result.output
    assert "requeued 0 final failure(s)" in result.output
    assert "1 without a usable body" in result.output
    assert open_queue(aws["errors"]).counts().visible == 1  # the report stays
    assert open_queue(aws["tasks"]).counts().visible == 0


def test_a_message_that_cannot_be_kept_stays_on_its_queue(
    aws: dict[str, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    big = failing(1, aws["log"], 3000)
    open_queue(aws["tasks"]).send(big)
    # a file bucket where the kept messages' folder is a file: every write there fails
    blocked = tmp_path / "bucket"
    (blocked / PREFIX).parent.mkdir(parents=True)
    (blocked / PREFIX).write_text("not a folder")
    urls = {**aws, "bucket": f"file://{blocked}"}
    ran = run_burst(urls, "--max-tasks", "2", "--retry-delay", "0")
    assert ran.exit_code == 0, ran.output  # nothing failed for good: it is retried
    assert "could not keep message" in caplog.text
    assert open_queue(aws["errors"]).counts().visible == 0  # no report without its message
    counts = open_queue(aws["tasks"]).counts()
    assert counts.visible + counts.in_flight == 1

    (blocked / PREFIX).unlink()  # the bucket works again: the next daemon keeps it
    assert run_burst(urls).exit_code == 1
    [report] = reports(aws["errors"])
    assert report["body_key"] and (blocked / report["body_key"]).read_text() == big
