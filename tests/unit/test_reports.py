"""Reports: their JSON form read back by parse_report, versions, the truncated shape, and
the messages kept in the bucket when a report cannot carry them."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pytest

from simpletasks.errors import MessageError
from simpletasks.reports import (
    REPORT_VERSION,
    DoneReport,
    ErrorReport,
    HostInfo,
    parse_report,
)

HOST = HostInfo("h", 1)


def error(**kw: object) -> ErrorReport:
    values: dict = dict(
        host=HOST,
        message_id="m",
        body={"basic_info": {"id": 1}},
        phase="execute",
        error_type="E",
        error_message="boom",
        traceback="tb",
        attempt=1,
        max_attempts=3,
        final=False,
        task_name="T",
        task_id=1,
        job_id="j",
        daemon="d",
    )
    values.update(kw)
    return ErrorReport(**values)


def test_round_trip() -> None:
    report = error()
    text = report.to_json()
    assert json.loads(text)["version"] == REPORT_VERSION
    assert parse_report(text) == report
    done = DoneReport(HOST, "m", {"x": 1}, "T", 1, ["o"], "", 1, 0.5, followups=2, job_id="j")
    assert parse_report(done.to_json()) == done


def test_a_truncated_body_keeps_the_shape() -> None:
    big = error(body={"payload_info": "x" * 100_000})
    text = big.to_json(max_bytes=10_000)
    assert len(text.encode()) <= 10_000
    back = parse_report(text)
    assert isinstance(back, ErrorReport)
    assert back.body is None and back.truncated and back.body_bytes > 100_000
    assert back.body_head.startswith('{"payload_info": "xxx')
    assert (back.task_name, back.final, back.job_id) == ("T", False, "j")


def test_version_0_reports_are_read() -> None:
    old = json.loads(error().to_json())
    del old["version"], old["job_id"], old["daemon"], old["truncated"]
    del old["body_head"], old["body_bytes"]
    old["body"] = {"truncated": True, "bytes": 9, "head": "{"}
    back = parse_report(json.dumps(old))
    assert back.truncated and back.body is None and back.body_head == "{" and back.job_id is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("nope", "not JSON"),
        ("[1]", "a report is a JSON object"),
        ('{"kind": "task"}', "not a report: kind is 'task'"),
        ('{"kind": "error", "version": 99}', "newer than this reader"),
        ('{"kind": "error", "host": {"hostname": "h", "pid": 1}}', "not a complete ErrorReport"),
        ('{"kind": "done"}', "no host object"),
    ],
)
def test_what_is_not_a_report(text: str, expected: str) -> None:
    with pytest.raises(MessageError, match=expected):
        parse_report(text)


def test_long_texts_are_cut_before_the_body_is_dropped() -> None:
    report = error(body={"payload_info": "x" * 5_000}, traceback="t" * 50_000, final=True)
    text = report.to_json(max_bytes=12_000)
    assert len(text.encode()) <= 12_000
    back = parse_report(text)
    assert isinstance(back, ErrorReport)
    assert back.body == {"payload_info": "x" * 5_000} and not back.truncated  # kept whole
    assert back.traceback.startswith("ttt") and back.traceback.endswith(" [truncated]")


def test_keep_body_is_asked_only_when_the_body_must_go() -> None:
    calls: list[int] = []

    def keep() -> str:
        calls.append(1)
        return "_simpletasks/bodies/abc"

    assert parse_report(error().to_json(max_bytes=10_000, keep_body=keep)).body_key == ""
    cut = error(traceback="t" * 50_000).to_json(max_bytes=12_000, keep_body=keep)
    assert not parse_report(cut).truncated and calls == []  # texts cut, body stays
    big = error(body={"payload_info": "x" * 100_000}).to_json(max_bytes=10_000, keep_body=keep)
    back = parse_report(big)
    assert back.truncated and back.body_key == "_simpletasks/bodies/abc" and calls == [1]
    assert len(big.encode()) <= 10_000
    nowhere = error(body={"payload_info": "x" * 100_000})
    assert parse_report(nowhere.to_json(max_bytes=10_000, keep_body=lambda: None)).body_key == ""

    def broken() -> str:
        raise OSError("bucket down")

    with pytest.raises(OSError, match="bucket down"):  # the caller must not send the report
        nowhere.to_json(max_bytes=10_000, keep_body=broken)


def test_kept_bodies_round_trip_and_refuse_what_they_did_not_write(tmp_path: Path) -> None:
    from simpletasks.buckets import open_bucket
    from simpletasks.errors import IntegrityError
    from simpletasks.kept_bodies import PREFIX, body_key, keep, load

    bucket = open_bucket(f"file://{tmp_path}/b", create=True)
    body = '{"basic_info": {"id": 1, "name": "X"}, "é": 1}'
    key = keep(bucket, body)
    assert key == body_key(body) and key.startswith(f"{PREFIX}/") and load(bucket, key) == body
    for bad in ("jobs/x", f"{PREFIX}/abc", f"{PREFIX}/{'g' * 64}", f"{PREFIX}/../{key}"):
        with pytest.raises(ValueError, match="not a kept-message key"):
            load(bucket, bad)
    bucket.upload_fileobj(io.BytesIO(b"changed"), key)
    with pytest.raises(IntegrityError, match="does not match its hash"):
        load(bucket, key)
    raw = b"\xff\xfe"
    bad_key = f"{PREFIX}/{hashlib.sha256(raw).hexdigest()}"
    bucket.upload_fileobj(io.BytesIO(raw), bad_key)
    with pytest.raises(IntegrityError, match="not UTF-8"):
        load(bucket, bad_key)
