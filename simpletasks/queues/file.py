"""``file:///abs/dir``: a lease-based queue in a directory, safe for several processes.

Layout (the subdirectories are made when the queue is opened; the directory itself must
exist, or be created with ``create=True``)::

    dir/queue/<id>__<deliveries>.json          visible messages
    dir/leased/<id>__<attempt>__<token>.json   leased messages; file mtime = lease expiry
    dir/tmp/                                   half-written messages

Every state change is one ``os.rename``/``os.unlink``/``os.utime`` of a path, which the
filesystem does atomically, so no locks are needed:

* **send** writes ``tmp/<id>.json``, flushes it to disk (``fsync``) and renames it into
  ``queue/``; the directory is flushed once per call, so a message that ``send`` or
  ``send_batch`` returned for survives a power cut whole (without the flush, a renamed file
  can come back empty after one). ~0.3 ms per message on a VM's disk, against ~0.07 ms.
* **receive** claims a visible message by renaming it into ``leased/`` under a fresh token;
  of two receivers racing for one file, the loser gets ``FileNotFoundError`` and moves on.
  Leases whose expiry has passed are renamed back into ``queue/`` first.
* **ack** deletes, **release** renames back, **extend** sets the expiry, each on the path
  that holds this delivery's token: if the lease was lost and the message redelivered, that
  path no longer exists and the call is logged and ignored.

Ids start with the send time in nanoseconds, so receivers take the oldest message first.
Lease expiry uses the wall clock (the processes must share it; they share a machine; tests
inject a ``clock``).
All processes must see the directory on one local filesystem (renames must be atomic).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simpletasks.errors import BatchError, ConfigError
from simpletasks.queues import Message, QueueCapabilities, QueueCounts, _common
from simpletasks.queues._checks import (
    check_bodies,
    check_body,
    check_handle,
    check_receive_args,
    check_seconds,
)
from simpletasks.urls import ensure_file_directory, parse_file_url

logger = logging.getLogger(__name__)

_SEP = "__"
_SUFFIX = ".json"
MAX_BATCH = 100  # messages per receive

_stamp_lock = threading.Lock()
_last_stamp = 0


def _new_id() -> str:
    """Return a new id that sorts by send time (strictly increasing within a process)."""
    global _last_stamp
    with _stamp_lock:
        _last_stamp = max(_last_stamp + 1, time.time_ns())
        stamp = _last_stamp
    return f"{stamp:020d}-{secrets.token_hex(4)}"


def _split(name: str, parts: int) -> list[str] | None:
    """Split ``<a>__<b>[__<c>].json`` into its parts, or ``None`` for foreign files."""
    if not name.endswith(_SUFFIX):
        return None
    fields = name[: -len(_SUFFIX)].split(_SEP)
    if len(fields) != parts or not fields[1].isdigit():
        return None
    return fields


@dataclass(frozen=True)
class _Lease:
    directory: Path
    message_id: str
    attempt: int
    token: str

    @property
    def name(self) -> str:
        return f"{self.message_id}{_SEP}{self.attempt}{_SEP}{self.token}{_SUFFIX}"


class FileQueue:
    """A queue stored as files in ``directory``; see the module docstring for the design.

    Args:
        directory: Absolute path of the queue directory.
        create: Create the directory if it does not exist (otherwise that is an error).
        poll_interval: Seconds between directory scans while ``receive`` waits.
        clock: Wall-clock seconds (``time.time``) for lease expiry; tests inject a fake one.

    Raises:
        ConfigError: If ``directory`` is relative, does not exist (and ``create`` is false)
            or cannot be used as a directory.
    """

    #: Batches of 100; no lease or body limit; exact counts.
    capabilities = QueueCapabilities(max_batch=MAX_BATCH, max_lease_seconds=None, counts=True)

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        create: bool = False,
        poll_interval: float = 0.05,
        clock: Callable[[], float] = time.time,
    ) -> None:
        path = Path(directory)
        if not path.is_absolute():
            raise ConfigError(f"file queue directory must be absolute, got {str(path)!r}")
        self.poll_interval = check_seconds("poll_interval", poll_interval)
        self.directory = path
        self.url = path.as_uri()
        self._clock = clock
        self._queue = path / "queue"
        self._leased = path / "leased"
        self._tmp = path / "tmp"
        ensure_file_directory(path, self.url, "queue", create=create)
        for sub in (self._queue, self._leased, self._tmp):
            try:
                sub.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(f"cannot use {str(path)!r} as a file queue: {exc}") from exc

    @classmethod
    def from_url(cls, url: str, *, create: bool = False, **kwargs: Any) -> FileQueue:
        """Open ``file:///absolute/dir`` (percent-decoded); ``kwargs`` go to the constructor.

        Raises:
            ConfigError: If the URL is not of the form ``file:///absolute/path``, or the
                directory does not exist and ``create`` is false.
        """
        return cls(parse_file_url(url, "queue"), create=create, **kwargs)

    def _now_ns(self) -> int:
        return int(self._clock() * 1e9)

    # receiving

    def receive(
        self, max_messages: int = 1, *, wait_seconds: float = 0.0, lease_seconds: float = 30.0
    ) -> list[Message]:
        """Lease up to ``max_messages`` messages, polling up to ``wait_seconds`` for the first."""
        check_receive_args(max_messages, wait_seconds, lease_seconds)
        count = min(max_messages, MAX_BATCH)
        claim = lambda: self._claim(count, lease_seconds)  # noqa: E731
        return _common.poll(claim, wait_seconds, pause=self.poll_interval)

    def _claim(self, max_messages: int, lease_seconds: float) -> list[Message]:
        self._reclaim_expired()
        messages: list[Message] = []
        for name in sorted(self._list(self._queue)):
            fields = _split(name, 2)
            if fields is None:
                continue
            message = self._claim_one(name, fields[0], int(fields[1]) + 1, lease_seconds)
            if message is not None:
                messages.append(message)
                if len(messages) >= max_messages:
                    break
        return messages

    def _claim_one(
        self, name: str, message_id: str, attempt: int, lease_seconds: float
    ) -> Message | None:
        lease = _Lease(self.directory, message_id, attempt, secrets.token_hex(8))
        src, dst = self._queue / name, self._leased / lease.name
        expiry = self._now_ns() + int(lease_seconds * 1e9)
        try:
            # Set the expiry before the rename too, so the leased file never shows an old
            # mtime that another receiver would take for an expired lease.
            os.utime(src, ns=(expiry, expiry))
            os.rename(src, dst)
            os.utime(dst, ns=(expiry, expiry))
            with open(dst, encoding="utf-8") as fh:
                stored = json.load(fh)
            body = stored["body"]
            sent_at = stored.get("sent_at")
        except FileNotFoundError:
            return None  # another receiver won this one
        except (ValueError, KeyError, TypeError) as exc:
            logger.error("%s: message file %s is unreadable (%s); set aside", self.url, name, exc)
            with contextlib.suppress(FileNotFoundError):
                os.rename(dst, dst.with_name(dst.name + ".corrupt"))
            return None
        return Message(message_id, body, attempt, lease, sent_at)

    def _reclaim_expired(self) -> None:
        now = self._now_ns()
        for name in self._list(self._leased):
            fields = _split(name, 3)
            if fields is None:
                continue
            path = self._leased / name
            try:
                if path.stat().st_mtime_ns > now:
                    continue
                os.rename(path, self._queue / f"{fields[0]}{_SEP}{fields[1]}{_SUFFIX}")
            except FileNotFoundError:
                continue  # acked, released or reclaimed meanwhile
            logger.debug("%s: lease of message %s expired", self.url, fields[0])

    @staticmethod
    def _list(directory: Path) -> list[str]:
        try:
            return os.listdir(directory)
        except FileNotFoundError:
            return []

    # settling

    def _lease_path(self, message: Message) -> Path:
        lease: _Lease = check_handle(
            message, _Lease, "file queue", origin="directory", here=self.directory
        )
        return self._leased / lease.name

    def _lost(self, message: Message, action: str) -> None:
        _common.log_lost(logger, self.url, action, message.id, _common.LEASE_LOST)

    def ack(self, message: Message) -> None:
        """Delete a received message; ignored (with a warning) if its lease was lost."""
        self.ack_many([message])

    def ack_many(self, messages: Sequence[Message]) -> None:
        """Delete several received messages (each as :meth:`ack`)."""
        paths = [self._lease_path(message) for message in messages]
        for message, path in zip(messages, paths, strict=True):
            try:
                os.unlink(path)
            except FileNotFoundError:
                self._lost(message, "ack")

    def release(self, message: Message) -> None:
        """Make a received message visible again at once."""
        path = self._lease_path(message)
        lease: _Lease = message.handle
        target = self._queue / f"{lease.message_id}{_SEP}{lease.attempt}{_SUFFIX}"
        try:
            os.rename(path, target)
        except FileNotFoundError:
            self._lost(message, "release")

    def extend(self, message: Message, lease_seconds: float) -> None:
        """Set the message's lease to end ``lease_seconds`` from now."""
        self.extend_many([message], lease_seconds)

    def extend_many(self, messages: Sequence[Message], lease_seconds: float) -> list[Message]:
        """Set several leases to end ``lease_seconds`` from now; return those already lost."""
        check_seconds("lease_seconds", lease_seconds)
        paths = [self._lease_path(message) for message in messages]
        expiry = self._now_ns() + int(lease_seconds * 1e9)
        lost: list[Message] = []
        for message, path in zip(messages, paths, strict=True):
            try:
                os.utime(path, ns=(expiry, expiry))
            except FileNotFoundError:
                self._lost(message, "extend")
                lost.append(message)
        return lost

    # sending

    def send(self, body: str) -> None:
        """Enqueue one message (on disk when this returns)."""
        self._write(check_body(body))
        self._sync_queue_dir()

    def send_batch(self, bodies: Sequence[str]) -> None:
        """Enqueue many messages; all bodies are checked before any is written.

        Raises:
            BatchError: If writing stopped part-way (a full disk): the messages before the
                failing one are enqueued, it and the rest are listed as failed.
        """
        checked = check_bodies(bodies)
        try:
            for i, body in enumerate(checked):
                try:
                    self._write(body)
                except OSError as exc:
                    if i == 0:
                        raise
                    failures = [(j, type(exc).__name__, str(exc)) for j in range(i, len(checked))]
                    raise BatchError(
                        f"{self.url}: {i} of {len(checked)} message(s) enqueued, then: {exc}",
                        failures,
                    ) from exc
        finally:
            self._sync_queue_dir()

    def _write(self, body: str) -> None:
        message_id = _new_id()
        tmp = self._tmp / f"{message_id}{_SUFFIX}"
        try:
            with open(tmp, "x", encoding="utf-8") as fh:
                json.dump({"body": body, "sent_at": time.time()}, fh, ensure_ascii=False)
                fh.flush()
                os.fsync(fh.fileno())  # whole on disk before it can be seen
        except BaseException:
            with contextlib.suppress(OSError):  # no half-written file left behind
                tmp.unlink()
            raise
        os.rename(tmp, self._queue / f"{message_id}{_SEP}0{_SUFFIX}")

    def _sync_queue_dir(self) -> None:
        """Flush ``queue/`` (the renames into it) to disk; a failure is logged, not raised:
        the messages are enqueued either way, only their survival of a power cut is in
        doubt."""
        try:
            fd = os.open(self._queue, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            logger.warning("%s: could not flush the queue directory to disk: %s", self.url, exc)

    # inspecting

    def counts(self) -> QueueCounts:
        """Return visible (expired leases included) and in-flight counts."""
        visible = sum(1 for name in self._list(self._queue) if _split(name, 2))
        in_flight = 0
        now = self._now_ns()
        for name in self._list(self._leased):
            if _split(name, 3) is None:
                continue
            try:
                expired = (self._leased / name).stat().st_mtime_ns <= now
            except FileNotFoundError:
                continue
            if expired:
                visible += 1
            else:
                in_flight += 1
        return QueueCounts(visible=visible, in_flight=in_flight)

    def purge(self) -> None:
        """Delete every message, leased ones included."""
        for directory, parts in ((self._queue, 2), (self._leased, 3)):
            for name in self._list(directory):
                if _split(name, parts) is not None:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(directory / name)

    def close(self) -> None:
        """Nothing to release."""

    def __repr__(self) -> str:
        return f"FileQueue({self.url!r})"
