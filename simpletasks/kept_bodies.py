"""Messages of final failures kept in the bucket when their report cannot carry them.

A final failure is reported on the error queue and then deleted from its queue, so the
report's ``body`` is the only copy left of the message (``simpletasks requeue`` sends it
back from there). A message close to the error queue's size limit does not fit in its own
report: the report keeps only the head of the body. Before that report is sent, the daemon
writes the message, exactly as received, to its bucket under
``_simpletasks/bodies/<sha256 of the message>`` and names the key in the report's
``body_key``; ``simpletasks requeue --bucket URL`` reads it back. If the write fails the
message is not deleted (it is retried later, as when the report cannot be sent).

Objects stay after a requeue (the same message may be named by several reports); a lifecycle
rule on the prefix may expire them.
"""

from __future__ import annotations

import hashlib
import io
from typing import Any

from simpletasks.errors import IntegrityError

PREFIX = "_simpletasks/bodies"


def body_key(body: str) -> str:
    """Return the bucket key a message ``body`` is kept under."""
    return f"{PREFIX}/{hashlib.sha256(body.encode()).hexdigest()}"


def keep(bucket: Any, body: str) -> str:
    """Write ``body`` (UTF-8) to ``bucket``; return its key. Errors propagate."""
    key = body_key(body)
    bucket.upload_fileobj(io.BytesIO(body.encode()), key)
    return key


def load(bucket: Any, key: str) -> str:
    """Read a kept message back.

    Raises:
        ValueError: If ``key`` is not a key :func:`keep` writes (a report is outside data).
        KeyNotFound: If the object is gone.
        IntegrityError: If its bytes do not hash to its key, or are not UTF-8.
    """
    digest = key.removeprefix(f"{PREFIX}/")
    if digest == key or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ValueError(f"not a kept-message key: {key!r} (expected {PREFIX}/<sha256>)")
    out = io.BytesIO()
    bucket.download_fileobj(key, out)
    data = out.getvalue()
    if hashlib.sha256(data).hexdigest() != digest:
        raise IntegrityError(f"kept message {key} does not match its hash")
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise IntegrityError(f"kept message {key} is not UTF-8") from None
