"""``flock`` locks on files, shared by the cache and its pin sets.

``flock`` locks belong to an open file description, so every acquisition opens its own file
descriptor: two threads of one process exclude each other exactly as two processes do.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def acquire(path: Path, operation: int) -> int | None:
    """Open the lock file ``path`` and ``flock`` it; return the descriptor.

    Returns ``None`` if ``operation`` includes ``LOCK_NB`` and the lock is busy. Lock files are
    unlinked by holders of both exclusive locks (see :meth:`FileSystemCache._drop_lock_files`),
    so after locking we check that ``path`` still names the file we locked, else retry.
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
