"""Reports the daemon writes: one per failure on the error queue, one per success on the
optional done queue. Their JSON form is the contract with whoever reads those queues.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from simpletasks.errors import MessageError
from simpletasks.message import decode_body


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


def _report_json(report: Any, max_bytes: int | None) -> str:
    """Encode a report as JSON any queue accepts, of at most ``max_bytes`` if given.

    Not ``dataclasses.asdict``, which deep-copies the body with two stack frames per level
    of nesting. A body too deeply nested to encode is replaced by a note; a report over
    ``max_bytes`` carries the head of its body (and of its long texts) instead.
    """
    data = {f.name: getattr(report, f.name) for f in fields(report)}
    data["host"] = asdict(report.host)
    try:
        text = _dumps(data)
    except (RecursionError, ValueError) as exc:
        data["body"] = f"<body not encodable as JSON: {type(exc).__name__}>"
        text = _dumps(data)
    if max_bytes is None or len(text.encode()) <= max_bytes:
        return text
    budget = max(0, max_bytes - _SHRINK_MARGIN) // 8  # escaping may double each string
    body = _dumps(data["body"])
    data["body"] = {"truncated": True, "bytes": len(body.encode()), "head": _head(body, budget)}
    for name in ("error_message", "traceback", "result_message"):
        if isinstance(data.get(name), str) and len(data[name].encode()) > budget:
            data[name] = _head(data[name], budget) + " [truncated]"
    return _dumps(data)


def body_for_report(raw: str) -> Any:
    """Return the message body parsed if it is JSON, else the raw text."""
    try:
        return decode_body(raw)
    except MessageError:
        return raw


@dataclass(frozen=True)
class ErrorReport:
    """A failure, written to the error queue.

    Attributes:
        host: Where it happened.
        message_id: The queue's id of the message.
        body: The original message, parsed if it was JSON, else the raw text.
        phase: ``parse`` (malformed message), ``receive`` (too many attempts already),
            ``prepare``, ``execute`` or ``finalize``.
        error_type: The exception's class name.
        error_message: ``str(exception)``.
        traceback: The formatted traceback ("" for malformed messages).
        attempt: Which delivery of the message failed (1 = first).
        max_attempts: The daemon's attempt limit.
        final: ``True`` when the daemon gave up and removed the message from its queue;
            ``False`` when the queue will deliver it again.
        task_name: ``basic_info.name`` if the message got that far.
        task_id: ``basic_info.id`` if the message got that far.
        time: Unix time of the report.
    """

    host: HostInfo
    message_id: str
    body: Any
    phase: str
    error_type: str
    error_message: str
    traceback: str
    attempt: int
    max_attempts: int
    final: bool
    task_name: str | None = None
    task_id: int | None = None
    time: float = field(default_factory=time.time)
    kind: str = "error"

    def to_json(self, max_bytes: int | None = None) -> str:
        """Return the report as a JSON queue body, shrunk to ``max_bytes`` of UTF-8 if given."""
        return _report_json(self, max_bytes)


@dataclass(frozen=True)
class DoneReport:
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
        time: Unix time of the report.
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
    time: float = field(default_factory=time.time)
    kind: str = "done"

    def to_json(self, max_bytes: int | None = None) -> str:
        """Return the report as a JSON queue body, shrunk to ``max_bytes`` of UTF-8 if given."""
        return _report_json(self, max_bytes)
