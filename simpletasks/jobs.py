"""Job cancellation as workers see it: a marker object in the bucket per cancelled job.

The job API (:mod:`simpletasks.web`) cancels a job by writing the object
``_simpletasks/cancelled/<job_id>`` to the bucket the workers read. A daemon given a
:class:`JobCancellations` as its ``skip`` check then deletes that job's pending messages unrun,
each with a final error report of phase ``skipped``, which the API counts as *cancelled*::

    skip = JobCancellations(open_bucket("s3://data"))
    DaemonService(queue=..., registry=..., skip=skip)

Workers need no database and no Flask: only the bucket they already use. The answer is cached
per job for ``ttl_seconds`` (a "not cancelled" answer; a "cancelled" one is final), so a busy
daemon asks the bucket at most once per job per ``ttl_seconds``.
"""

from __future__ import annotations

import io
import logging
import re
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from simpletasks.message import TaskMessage

if TYPE_CHECKING:
    from simpletasks.buckets import BucketService

logger = logging.getLogger(__name__)

#: Key prefix of the cancellation markers.
CANCEL_PREFIX = "_simpletasks/cancelled"
_JOB_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


def cancel_key(job_id: str) -> str:
    """Return the bucket key of ``job_id``'s cancellation marker.

    Raises:
        ValueError: If ``job_id`` is not 1-128 characters of letters, digits, ``._-``.
    """
    if not isinstance(job_id, str) or not _JOB_ID.match(job_id) or job_id in (".", ".."):
        raise ValueError(f"job id must be 1-128 characters of A-Z a-z 0-9 . _ -, got {job_id!r}")
    return f"{CANCEL_PREFIX}/{job_id}"


def mark_cancelled(bucket: BucketService, job_id: str, reason: str = "cancelled") -> None:
    """Write ``job_id``'s cancellation marker (idempotent)."""
    bucket.upload_fileobj(io.BytesIO(reason.encode()), cancel_key(job_id))


def is_cancelled(bucket: BucketService, job_id: str) -> bool:
    """Return whether ``job_id`` has a cancellation marker (one bucket request)."""
    return bucket.exists(cancel_key(job_id))


class JobCancellations:
    """A daemon ``skip`` check: the reason to skip a message whose job was cancelled.

    Args:
        bucket: Where the markers are (the workers' bucket).
        ttl_seconds: How long a "not cancelled" answer is reused for a job.
        clock: Monotonic clock (for tests).

    Calling it with a :class:`~simpletasks.message.TaskMessage` returns ``None`` (run it) or
    ``"job <id> was cancelled"``. A bucket error propagates; the daemon then runs the task
    (the skip check fails open), and the next message asks again.
    """

    def __init__(
        self,
        bucket: BucketService,
        *,
        ttl_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl_seconds < 0:
            raise ValueError(f"ttl_seconds must be >= 0, got {ttl_seconds!r}")
        self.bucket = bucket
        self.ttl_seconds = ttl_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._cancelled: set[str] = set()
        self._checked: dict[str, float] = {}  # job id -> when it was last seen not cancelled

    @classmethod
    def from_url(cls, bucket_url: str, *, ttl_seconds: float = 5.0) -> JobCancellations:
        """Open the bucket ``bucket_url`` names and check markers there."""
        from simpletasks.buckets import open_bucket

        return cls(open_bucket(bucket_url), ttl_seconds=ttl_seconds)

    def cancelled(self, job_id: str) -> bool:
        """Return whether ``job_id`` was cancelled (cached as described above)."""
        now = self._clock()
        with self._lock:
            if job_id in self._cancelled:
                return True
            seen = self._checked.get(job_id)
            if seen is not None and now - seen < self.ttl_seconds:
                return False
        found = is_cancelled(self.bucket, job_id)
        with self._lock:
            if found:
                self._cancelled.add(job_id)
                self._checked.pop(job_id, None)
            else:
                if len(self._checked) > 10_000:  # forget old jobs; a long-lived daemon
                    self._checked.clear()
                self._checked[job_id] = now
        return found

    def __call__(self, message: TaskMessage) -> str | None:
        """Return why ``message`` must be skipped, or ``None`` to run it."""
        job_id = message.job_id
        if job_id is None:
            return None
        if not _JOB_ID.match(job_id) or job_id in (".", ".."):
            return None  # a job id the API never makes cannot have a marker
        if self.cancelled(job_id):
            return f"job {job_id} was cancelled"
        return None


__all__ = ["CANCEL_PREFIX", "JobCancellations", "cancel_key", "is_cancelled", "mark_cancelled"]
