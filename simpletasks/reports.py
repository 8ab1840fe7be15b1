"""Reports the daemon writes: one per failure on the error queue, one per success on the
optional done queue. Their JSON form is the contract with whoever reads those queues, and
:func:`parse_report` reads it back.

Every report carries ``"version": REPORT_VERSION`` and ``"kind"`` (``"error"`` or ``"done"``).
A daemon run with ``--report-starts`` also writes a :class:`StartedReport` (``"kind":
"started"``) to the done queue when a task starts; :func:`parse_report` reads those only when
asked (``with_started=True``), so a reader written before them treats one as it treats any
unknown kind: a :class:`~simpletasks.errors.MessageError`.
A report too large for its queue keeps its shape: its long texts are cut first; if that is not
enough, ``body`` becomes ``null``, ``truncated`` is ``true``, and ``body_head``/``body_bytes``
hold the head and size of the original body's JSON. A final failure's daemon then keeps the
original message in its bucket and names the key in ``body_key``.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal, overload

from simpletasks.errors import MessageError
from simpletasks.message import decode_body

#: Version of the reports' JSON form; :func:`parse_report` reads this version and older ones.
REPORT_VERSION = 1


@dataclass(frozen=True)
class HostInfo:
    """Which machine and process wrote a report."""

    hostname: str
    pid: int

    @classmethod
    def current(cls) -> HostInfo:
        """Describe this process."""
        return cls(hostname=socket.gethostname(), pid=os.getpid())


#: Characters queues refuse raw (lone surrogates, U+FFFE, U+FFFF); JSON escapes them.
_UNSENDABLE = re.compile("[\\ud800-\\udfff\\ufffe\\uffff]")
_SHRINK_MARGIN = 2048  # bytes kept for the short fields when a report must shrink


def _dumps(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return _UNSENDABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _head(text: str, max_bytes: int) -> str:
    return text.encode()[:max_bytes].decode("utf-8", "ignore")


def _report_json(
    report: Any, max_bytes: int | None, keep_body: Callable[[], str | None] | None = None
) -> str:
    """Encode a report as JSON any queue accepts, of at most ``max_bytes`` if given.

    Not ``dataclasses.asdict``, which deep-copies the body with two stack frames per level
    of nesting. A body too deeply nested to encode is replaced by a note. A report over
    ``max_bytes`` first cuts its long texts (traceback, messages) to their heads; only if
    that is not enough does it drop its body, keeping the head, and then ``keep_body()``
    may store the whole body elsewhere and return where (``body_key``).
    """
    data = {f.name: getattr(report, f.name) for f in fields(report)}
    data["host"] = asdict(report.host)
    data["version"] = REPORT_VERSION
    try:
        text = _dumps(data)
    except (RecursionError, ValueError) as exc:
        data["body"] = f"<body not encodable as JSON: {type(exc).__name__}>"
        text = _dumps(data)
    if max_bytes is None or len(text.encode()) <= max_bytes:
        return text
    budget = max(0, max_bytes - _SHRINK_MARGIN) // 8  # escaping may double each string
    for name in ("error_message", "traceback", "result_message"):
        if isinstance(data.get(name), str) and len(data[name].encode()) > budget:
            data[name] = _head(data[name], budget) + " [truncated]"
    text = _dumps(data)
    if len(text.encode()) <= max_bytes or "body" not in data:  # a started report has none
        return text
    body = _dumps(data["body"])
    data.update(body=None, truncated=True, body_bytes=len(body.encode()))
    data["body_head"] = _head(body, budget)
    if keep_body is not None:
        data["body_key"] = keep_body() or ""
    return _dumps(data)


def body_for_report(raw: str) -> Any:
    """Return the message body parsed if it is JSON, else the raw text."""
    try:
        return decode_body(raw)
    except MessageError:
        return raw


@dataclass(frozen=True)
class _Common:
    """Fields every report has after its own (keyword-only), and the JSON encoding."""

    job_id: str | None = field(default=None, kw_only=True)
    daemon: str = field(default="", kw_only=True)
    time: float = field(default_factory=time.time, kw_only=True)
    truncated: bool = field(default=False, kw_only=True)
    body_head: str = field(default="", kw_only=True)
    body_bytes: int = field(default=0, kw_only=True)
    body_key: str = field(default="", kw_only=True)

    def to_json(
        self, max_bytes: int | None = None, *, keep_body: Callable[[], str | None] | None = None
    ) -> str:
        """Return the report as a JSON queue body, shrunk to ``max_bytes`` of UTF-8 if given.

        Args:
            max_bytes: The target queue's largest body (``None``: no limit).
            keep_body: Called only if the body itself must be dropped to fit: it may store
                the original message elsewhere and return its key (``body_key``), or
                ``None``. What it raises propagates (nothing is sent).
        """
        return _report_json(self, max_bytes, keep_body)


@dataclass(frozen=True)
class ErrorReport(_Common):
    """A failure, written to the error queue.

    Attributes:
        host: Where it happened.
        message_id: The queue's id of the message.
        body: The original message, parsed if it was JSON, else the raw text.
        phase: ``parse`` (malformed message), ``receive`` (too many attempts already),
            ``prepare``, ``execute``, ``finalize``, ``followups`` (the task's follow-ups
            could not be sent), ``skipped`` (deleted unrun: its job was cancelled) or
            ``timeout`` (still running after ``task_timeout_seconds``).
        error_type: The exception's class name.
        error_message: ``str(exception)``.
        traceback: The formatted traceback ("" for malformed messages).
        attempt: Which delivery of the message failed (1 = first).
        max_attempts: The daemon's attempt limit (``None``: no limit).
        final: ``True`` when the daemon gave up and removed the message from its queue;
            ``False`` when the queue will deliver it again.
        task_name: ``basic_info.name`` if the message got that far.
        task_id: ``basic_info.id`` if the message got that far.
        job_id: The message's ``job_id``, if it had one.
        daemon: The name of the daemon that wrote the report.
        time: Unix time of the report.
        truncated: ``True`` if ``body`` was dropped to fit the queue's size limit; then
            ``body_head`` holds the head of its JSON and ``body_bytes`` its size.
        body_key: For a truncated final failure: the bucket key where the daemon kept the
            original message, exactly as received (``""`` if it had no bucket);
            ``simpletasks requeue --bucket`` sends it back from there.
    """

    host: HostInfo
    message_id: str
    body: Any
    phase: str
    error_type: str
    error_message: str
    traceback: str
    attempt: int
    max_attempts: int | None
    final: bool
    task_name: str | None = None
    task_id: int | None = None
    kind: str = field(default="error", kw_only=True)


@dataclass(frozen=True)
class DoneReport(_Common):
    """A success, written to the done queue (if there is one).

    Attributes:
        host: Where it ran.
        message_id: The queue's id of the message.
        body: The original message (parsed).
        task_name: ``basic_info.name``.
        task_id: ``basic_info.id``.
        outputs: Keys the task reported in its :class:`~simpletasks.task.Result`.
        result_message: The result's message.
        attempt: Which delivery succeeded.
        seconds: Time from the start of ``prepare`` to the end of ``finalize``.
        followups: How many follow-up tasks the task returned (sent before this report).
        job_id: The message's ``job_id``, if it had one.
        daemon: The name of the daemon that wrote the report.
        time: Unix time of the report.
        truncated: As in :class:`ErrorReport`.
    """

    host: HostInfo
    message_id: str
    body: Any
    task_name: str
    task_id: int
    outputs: list[str]
    result_message: str
    attempt: int
    seconds: float
    followups: int = 0
    kind: str = field(default="done", kw_only=True)


@dataclass(frozen=True)
class StartedReport(_Common):
    """A delivery of a task is about to run its ``prepare`` phase; written to the done queue
    by :class:`~simpletasks.started.StartedReports` (``simpletasks run --report-starts``).

    It has no ``body`` (it would double the done queue's bytes); a reader that needs the
    task's inputs waits for the done or error report of the same message.

    Attributes:
        host: Where it runs.
        message_id: The queue's id of the message.
        task_name: ``basic_info.name``.
        task_id: ``basic_info.id``.
        attempt: Which delivery of the message this is (1 = first).
        job_id: The message's ``job_id``, if it had one.
        daemon: The name of the daemon that runs it.
        time: Unix time of the report (when the task started).
    """

    host: HostInfo
    message_id: str
    task_name: str
    task_id: int
    attempt: int
    kind: str = field(default="started", kw_only=True)


Report = ErrorReport | DoneReport


@overload
def parse_report(text: str | bytes, *, with_started: Literal[False] = False) -> Report: ...


@overload
def parse_report(text: str | bytes, *, with_started: bool) -> Report | StartedReport: ...


def parse_report(text: str | bytes, *, with_started: bool = False) -> Report | StartedReport:
    """Read a report that :meth:`ErrorReport.to_json` or :meth:`DoneReport.to_json` wrote
    (and :class:`StartedReport`'s ``to_json``, if ``with_started``).

    Fields a newer writer added are ignored; fields an older writer did not have take their
    defaults (reports without ``version`` are version 0).

    Args:
        text: The queue message's body.
        with_started: Also read started reports. Off by default, so readers that know only
            done and error reports (``simpletasks status``) keep treating them as not
            reports.

    Raises:
        MessageError: If ``text`` is not a report: not JSON, an unknown ``kind`` (``started``
            too, unless ``with_started``), a version newer than this reader, or a required
            field missing (the message names it).
    """
    data = decode_body(text)
    if not isinstance(data, dict):
        raise MessageError(f"a report is a JSON object, got {type(data).__name__}")
    version = data.get("version", 0)
    if not isinstance(version, int) or version > REPORT_VERSION:
        raise MessageError(
            f"report version {version!r} is newer than this reader ({REPORT_VERSION}); "
            "upgrade simpletasks"
        )
    classes: dict[Any, type[ErrorReport] | type[DoneReport] | type[StartedReport]] = {
        "error": ErrorReport,
        "done": DoneReport,
    }
    if with_started:
        classes["started"] = StartedReport
    cls = classes.get(data.get("kind"))
    if cls is None:
        known = " or ".join(repr(k) for k in classes)
        raise MessageError(f"not a report: kind is {data.get('kind')!r}, not {known}")
    host = data.get("host")
    if not isinstance(host, dict):
        raise MessageError("report has no host object")
    values: dict[str, Any] = {}
    for f in fields(cls):
        if f.name in data:
            values[f.name] = data[f.name]
    values["host"] = HostInfo(hostname=str(host.get("hostname", "")), pid=int(host.get("pid", 0)))
    body = data.get("body")
    if "body" in values and isinstance(body, dict) and body.get("truncated") is True:
        # version 0 wrote a truncated body in place of the body
        values.update(body=None, truncated=True, body_head=body.get("head", ""))
        values["body_bytes"] = body.get("bytes", 0)
    try:
        return cls(**values)
    except TypeError as exc:
        raise MessageError(f"not a complete {cls.__name__}: {exc}") from None
