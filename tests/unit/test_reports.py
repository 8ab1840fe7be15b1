"""Reports: their JSON form read back by parse_report, versions, and the truncated shape."""

from __future__ import annotations

import json

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
