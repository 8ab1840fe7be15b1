"""Task checkpoints: progress a long task saves in the bucket and resumes from on redelivery.

A preemptible VM may vanish mid-task; its message comes back to another daemon, which would
start from zero. A task that calls ``self.context.checkpoint(state)`` now and then stores its
progress under a key that depends only on the message (not on the delivery), so the next
delivery's ``self.context.restore()`` returns the last state saved. The daemon deletes the
checkpoint once the task succeeded.

Writes are atomic as far as the bucket's uploads are (a single PUT on S3 and GCS, temp file
and rename on ``file://``): a crash mid-write leaves the previous checkpoint. States are bytes,
or anything JSON can encode (restored as decoded JSON).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from typing import Any

from simpletasks.errors import KeyNotFound

logger = logging.getLogger(__name__)

PREFIX = "_simpletasks/checkpoints"
_JSON, _BYTES = b"J", b"B"  # first byte of a stored checkpoint: how to decode the rest


def checkpoint_key(body: str) -> str:
    """Return the bucket key of the checkpoint of the message ``body``."""
    return f"{PREFIX}/{hashlib.sha256(body.encode()).hexdigest()}"


class Checkpoints:
    """Checkpoint storage of one message in a bucket.

    Args:
        bucket: A bucket service (``simpletasks.buckets``); ``None`` makes every call an error
            that says a bucket is needed.
        body: The message body the checkpoint belongs to.
    """

    def __init__(self, bucket: Any, body: str) -> None:
        self.bucket = bucket
        self.body = body

    @property
    def key(self) -> str:
        """The bucket key (computed when first needed: most tasks never checkpoint)."""
        return checkpoint_key(self.body)

    def _need_bucket(self) -> Any:
        if self.bucket is None:
            raise RuntimeError(
                "checkpoints need a bucket: run the daemon with a datasource (--bucket)"
            )
        return self.bucket

    def save(self, state: bytes | Any) -> None:
        """Store ``state`` (bytes, or a JSON-encodable value), replacing the previous one."""
        if isinstance(state, bytes | bytearray):
            data = _BYTES + bytes(state)
        else:
            data = _JSON + json.dumps(state, allow_nan=False).encode()
        self._need_bucket().upload_fileobj(io.BytesIO(data), self.key)
        logger.debug("checkpoint saved: %s (%d bytes)", self.key, len(data))

    def load(self) -> bytes | Any | None:
        """Return the last saved state, or ``None`` if there is none."""
        buffer = io.BytesIO()
        try:
            self._need_bucket().download_fileobj(self.key, buffer)
        except KeyNotFound:
            return None
        data = buffer.getvalue()
        if data[:1] == _BYTES:
            return data[1:]
        if data[:1] == _JSON:
            return json.loads(data[1:])
        raise ValueError(f"checkpoint {self.key} is not one simpletasks wrote")

    def delete(self) -> None:
        """Remove the checkpoint if there is one (errors are logged: it is only a leftover)."""
        if self.bucket is None:
            return
        try:
            self.bucket.delete(self.key)
        except KeyNotFound:
            pass
        except Exception as exc:
            logger.warning("could not delete checkpoint %s: %s", self.key, exc)
