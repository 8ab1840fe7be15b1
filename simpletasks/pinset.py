"""Pin sets: many cache keys kept from eviction with one open file descriptor.

A pin set is a record file in the cache's ``.locks/sessions`` directory listing its keys,
one JSON string a line, and ``flock``-ed by its owner while the set is open. An eviction
pass takes ``.locks/pins.lock`` exclusively, reads every live record (:func:`live_keys`) and
skips those keys; adding a key takes the same lock shared, so a key is either in a record the
pass reads, or added after the pass (and fetched again if it was evicted). A record whose
lock nobody holds was left by a process that died: the next pass removes it.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import secrets
import threading
from collections.abc import Callable, Iterable
from contextlib import suppress
from pathlib import Path

from simpletasks._flock import locked

logger = logging.getLogger(__name__)


def live_keys(sessions_dir: Path) -> set[str]:
    """Return the keys every live pin set in ``sessions_dir`` holds; delete dead records.

    Call with the pins lock held exclusively (no record changes meanwhile).
    """
    keys: set[str] = set()
    for name in os.listdir(sessions_dir):
        path = sessions_dir / name
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:  # gone meanwhile, or not a record of ours
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:  # its owner holds it: a live pin set
                keys.update(_read_record(fd))
            else:  # nobody holds it: left by a process that died
                with suppress(FileNotFoundError):
                    os.unlink(path)
                logger.debug("removed the pin record %s of a process that ended", name)
        finally:
            os.close(fd)
    return keys


def _read_record(fd: int) -> set[str]:
    """Read the keys of a pin record (one JSON string a line; a torn line is skipped)."""
    with open(fd, encoding="utf-8", closefd=False) as record:
        record.seek(0)
        keys = set()
        for line in record:
            with suppress(ValueError):
                key = json.loads(line)
                if isinstance(key, str):
                    keys.add(key)
        return keys


class PinSet:
    """Keys pinned (kept from eviction) until :meth:`close`, with one file descriptor in all.

    The set is a record file under ``root/.locks/sessions`` listing its keys, locked by this
    object while it is open; the file is made by the first key added (a task that never
    touches the cache costs no file). Adding a key and an eviction pass exclude each other
    through a lock on ``root/.locks/pins.lock``, so a key is either seen pinned by the pass
    or added after it (then the caller fetches it again if it was evicted). A record left by
    a process that died is unlocked and removed by the next eviction. Thread-safe.

    Args:
        sessions_dir: Where the records of the cache's pin sets live.
        pins_lock: The lock file that eviction holds exclusively while it reads the records.
        validate: Raises :class:`~simpletasks.errors.InvalidKey` for a key the cache refuses.
    """

    def __init__(
        self, sessions_dir: Path, pins_lock: Path, *, validate: Callable[[str], object]
    ) -> None:
        self._sessions_dir = sessions_dir
        self._pins_lock = pins_lock
        self._validate = validate
        self._keys: set[str] = set()
        self._lock = threading.Lock()
        self._closed = False
        self._path: Path | None = None
        self._fd: int | None = None  # the record, from the first add on

    def _open_record(self) -> int:
        """Create and lock this set's record (lock held, and the pins lock held shared, so
        that an evictor never sees it unlocked)."""
        self._path = self._sessions_dir / f"{os.getpid()}-{secrets.token_hex(8)}.keys"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(self._path, flags, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            with suppress(FileNotFoundError):
                os.unlink(self._path)
            raise
        self._fd = fd
        return fd

    def __enter__(self) -> PinSet:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __len__(self) -> int:
        with self._lock:
            return len(self._keys)

    @property
    def keys(self) -> frozenset[str]:
        """The keys this set pins."""
        with self._lock:
            return frozenset(self._keys)

    def add(self, key: str) -> None:
        """Pin ``key`` until the set is closed (a no-op if it is pinned here already).

        Raises:
            InvalidKey: If ``key`` is unsafe.
            RuntimeError: If the set is closed.
        """
        self.add_many((key,))

    def add_many(self, keys: Iterable[str]) -> None:
        """Pin every key of ``keys`` until the set is closed: one record write for them all.

        Raises:
            InvalidKey: If any key is unsafe (then none is added).
            RuntimeError: If the set is closed.
        """
        keys = list(keys)
        for key in keys:
            self._validate(key)
        with self._lock:
            if self._closed:
                raise RuntimeError("this pin set is closed")
            new = [key for key in dict.fromkeys(keys) if key not in self._keys]
            if not new:
                return
            record = "".join(json.dumps(key) + "\n" for key in new).encode("utf-8")
            with locked(self._pins_lock, fcntl.LOCK_SH):
                fd = self._fd if self._fd is not None else self._open_record()
                written = 0
                while written < len(record):  # O_APPEND: one write, unless interrupted
                    written += os.write(fd, record[written:])
            self._keys.update(new)

    def close(self) -> None:
        """Release every pin (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._keys.clear()
            if self._fd is None:
                return  # no key was ever added: no record
            assert self._path is not None
            with suppress(FileNotFoundError):
                os.unlink(self._path)
            os.close(self._fd)
            self._fd = None
