"""Locks on files, shared by the cache and its pin sets.

Two kinds, both owned by an open file description (not by a process), so every acquisition
opens its own file descriptor and two threads of one process exclude each other exactly as
two processes do; closing the descriptor (or the process dying) releases the lock:

* :func:`locked`: ``flock`` on a whole lock file (the cache's eviction and pin-set locks);
* :class:`SlotLocks`: shared/exclusive locks on numbered *slots*, one byte each of a single
  file (Linux open-file-description record locks). The cache locks each key in a slot of
  its own, so locking a key creates no file. Where those locks are missing (not Linux),
  slots share ``flock``-ed stripe files instead: a few unrelated keys then wait for each
  other, which costs time, never safety.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: ``struct flock`` on 64-bit Linux: type, whence, start, length, pid (0 for OFD locks).
_FLOCK = struct.Struct("hhqqi4x")
_OFD = sys.platform.startswith("linux") and sys.maxsize > 2**32 and hasattr(fcntl, "F_OFD_SETLK")
#: Without OFD locks: how many stripe files the slots share.
STRIPES = 256
#: Slots are numbers in ``range(MAX_SLOT)`` (offsets in the lock file).
MAX_SLOT = 1 << 62


def acquire(path: Path, operation: int) -> int | None:
    """Open the lock file ``path`` and ``flock`` it; return the descriptor.

    Returns ``None`` if ``operation`` includes ``LOCK_NB`` and the lock is busy. A lock file
    may be unlinked by whoever holds it exclusively, so after locking we check that ``path``
    still names the file we locked, else retry.
    """
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, operation)
            locked = os.fstat(fd)
            current = os.stat(path, follow_symlinks=False)
        except BlockingIOError:
            os.close(fd)
            return None
        except FileNotFoundError:
            os.close(fd)
            continue
        except BaseException:
            os.close(fd)
            raise
        if (locked.st_dev, locked.st_ino) == (current.st_dev, current.st_ino):
            return fd
        os.close(fd)


@contextmanager
def locked(path: Path, operation: int) -> Iterator[bool]:
    """Hold ``flock`` ``operation`` on ``path``; yield False (holding nothing) if it was busy."""
    fd = acquire(path, operation)
    try:
        yield fd is not None
    finally:
        if fd is not None:
            os.close(fd)


class SlotLocks:
    """Shared or exclusive locks on numbered slots of one lock file, for threads and processes.

    The file is created by the first lock and never removed (nothing per slot is ever
    created), so a lock needs an ``open``, one ``fcntl`` and a ``close``. Locks are not
    re-entrant: a second acquisition of a held slot, even by the same thread, is another
    owner and waits.

    Args:
        path: The lock file (its parent directory must exist).
    """

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    @contextmanager
    def held(self, slot: int, *, exclusive: bool, wait: bool = True) -> Iterator[bool]:
        """Hold the lock on ``slot`` (shared or exclusive) for the block.

        Yields True, or False (holding nothing) if ``wait`` is false and the slot is busy.
        """
        fd = self._acquire(slot, exclusive, wait)
        try:
            yield fd is not None
        finally:
            if fd is not None:
                os.close(fd)

    @contextmanager
    def held_many(self, slots: list[int]) -> Iterator[list[int]]:
        """Hold exclusive locks on as many of ``slots`` as are free now, on one descriptor.

        Never waits (so it cannot deadlock against any other holder); yields the slots it
        got, in the order given. All are released together when the block ends. Without
        open-file-description locks (not Linux) it holds nothing and yields ``[]``.
        """
        if not _OFD or not slots:
            yield []
            return
        fd = self._open()
        try:
            got = []
            for slot in slots:
                try:
                    fcntl.fcntl(
                        fd, fcntl.F_OFD_SETLK, _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, slot, 1, 0)
                    )
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EACCES):
                        raise
                    continue
                got.append(slot)
            yield got
        finally:
            os.close(fd)

    def _open(self) -> int:
        """A new descriptor of the lock file (each owns the locks taken through it)."""
        return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)

    def _acquire(self, slot: int, exclusive: bool, wait: bool) -> int | None:
        if not _OFD:  # other platforms: flock a stripe file (tests patch _OFD to cover it)
            op = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | (0 if wait else fcntl.LOCK_NB)
            return acquire(Path(f"{self.path}.{slot % STRIPES:02x}"), op)
        fd = self._open()
        kind = fcntl.F_WRLCK if exclusive else fcntl.F_RDLCK
        try:
            fcntl.fcntl(
                fd,
                fcntl.F_OFD_SETLKW if wait else fcntl.F_OFD_SETLK,
                _FLOCK.pack(kind, os.SEEK_SET, slot, 1, 0),
            )
        except OSError as exc:
            os.close(fd)
            if not wait and exc.errno in (errno.EAGAIN, errno.EACCES):
                return None
            raise
        except BaseException:
            os.close(fd)
            raise
        return fd
