"""A bucket that is a local directory: ``file:///absolute/dir``.

Object ``a/b.dat`` is the file ``<dir>/a/b.dat``. Writes go to a temporary file next to the
target (named ``.<name>.tmp-<12 hex>``) and are moved into place with :func:`os.replace`, so a
reader never sees half an object; :meth:`FileBucket.list` skips such temporary files, and a
download to a path that has such a name (a cache's temp file) writes it in place.

This module also holds the small helpers the other bucket backends share:
:func:`atomic_path` (write a local file whole or not at all) and :func:`validate_prefix`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from simpletasks.errors import ConfigError, IntegrityError, InvalidKey, KeyNotFound
from simpletasks.keys import validate_key
from simpletasks.urls import ensure_file_directory, parse_file_url

logger = logging.getLogger(__name__)

_TEMP_RE = re.compile(r"^\..+\.tmp-[0-9a-f]{12}$")
_COPY_BUFSIZE = 1024 * 1024
_FILE_BUFFER = 64 * 1024  # downloads hand over 8 KiB pieces; 1 MiB made 200 MB reads slower
_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC


def temp_name(name: str) -> str:
    """Return a fresh temporary file name for a file that will be renamed to ``name``.

    The suffix is 48 random bits: it must be unique among the temp files that exist at
    once, not secret, so it comes from :mod:`random` (reseeded in a forked child) rather
    than a system call per name.
    """
    return f".{name[:200]}.tmp-{random.getrandbits(48):012x}"


def is_temp_name(name: str) -> bool:
    """Return whether ``name`` (a file name, not a path) is one of our temporary files."""
    return _TEMP_RE.match(name) is not None


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it onto ``path`` if the block succeeds.

    The parent directory of ``path`` is created if missing. If the block raises, the
    temporary file is removed and ``path`` is left as it was (absent, or its old content).

    A ``path`` whose name is itself a temporary name (:func:`is_temp_name`) is private to
    its writer until someone renames it (a cache entry being filled is written there), so
    it is yielded as it is: no second temporary file, no rename, no ``mkdir``; if the block
    raises, it is removed.

    Args:
        path: The file to write whole.
    """
    path = Path(path)
    if is_temp_name(path.name):
        try:
            yield path
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            raise
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / temp_name(path.name)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


class NewFile:
    """A new file (created or truncated, never through a symlink) written through its
    descriptor, in pieces of at least ``_FILE_BUFFER`` bytes: a buffered file object costs
    more system calls (``fstat``, ``lseek``) per file, which count when many threads
    download small objects. Use it as a context manager; a failed block writes no more.
    ``seek``/``tell``/``truncate`` let a download start again."""

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, _WRITE_FLAGS, 0o666)
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._written = 0

    def __enter__(self) -> NewFile:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        try:
            if exc_type is None:
                self.flush()
        finally:
            os.close(self._fd)

    def write(self, data: bytes) -> int:
        self._pending.append(bytes(data))
        self._pending_size += len(data)
        if self._pending_size >= _FILE_BUFFER:
            self.flush()
        return len(data)

    def flush(self) -> None:
        if not self._pending:
            return
        view = memoryview(b"".join(self._pending))
        self._pending.clear()
        self._pending_size = 0
        while view:
            done = os.write(self._fd, view)
            self._written += done
            view = view[done:]

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._written + self._pending_size

    def seek(self, offset: int) -> int:
        self.flush()
        self._written = os.lseek(self._fd, offset, os.SEEK_SET)
        return self._written

    def truncate(self) -> int:
        self.flush()
        os.ftruncate(self._fd, self._written)
        return self._written


def validate_prefix(prefix: str) -> str:
    """Check a ``list()`` prefix and return it.

    A prefix is the start of a key, so it may end with ``/`` or be empty; otherwise it obeys
    the rules of :func:`simpletasks.keys.validate_key`.

    Raises:
        InvalidKey: If the prefix is not a string or could not start a safe key.
    """
    if not isinstance(prefix, str):
        raise InvalidKey(f"prefix must be a string, got {type(prefix).__name__}")
    if prefix:
        trimmed = prefix[:-1] if len(prefix) > 1 and prefix.endswith("/") else prefix
        validate_key(trimmed, what="prefix")
    return prefix


def _copy_counting(src: BinaryIO, dst: BinaryIO) -> int:
    """Copy ``src`` to ``dst`` and return the number of bytes copied."""
    total = 0
    while chunk := src.read(_COPY_BUFSIZE):
        dst.write(chunk)
        total += len(chunk)
    return total


class FileBucket:
    """Objects stored as files under one local directory.

    Args:
        root: The bucket's directory (absolute).
        create: Create the directory if it does not exist (otherwise that is an error).

    Raises:
        ConfigError: If ``root`` is relative, or does not exist and ``create`` is false.
    """

    def __init__(self, root: Path, *, create: bool = False) -> None:
        root = Path(root)
        if not root.is_absolute():
            raise ConfigError(f"file bucket directory must be absolute, got {str(root)!r}")
        self.root = root
        self.url = root.as_uri()
        ensure_file_directory(root, self.url, "bucket", create=create)

    @classmethod
    def from_url(cls, url: str, *, create: bool = False, **kwargs: Any) -> FileBucket:
        """Open ``file:///absolute/dir``, percent-decoded as for a file queue.

        Raises:
            ConfigError: If ``url`` is not of the form ``file:///absolute/path``, the
                directory does not exist and ``create`` is false, or an unknown keyword
                argument is given.
        """
        if kwargs:
            raise ConfigError(f"file bucket takes no options, got {sorted(kwargs)}")
        return cls(parse_file_url(url, "bucket"), create=create)

    def __repr__(self) -> str:
        return f"FileBucket({self.url!r})"

    def _path(self, key: str) -> Path:
        """Return the file for ``key``, refusing anything that resolves outside the root."""
        validate_key(key)
        path = self.root / key
        root = self.root.resolve()
        if not path.resolve().is_relative_to(root):
            raise InvalidKey(f"key {key!r} resolves outside {self.url} (through a symlink)")
        return path

    def _missing(self, key: str) -> KeyNotFound:
        return KeyNotFound(f"no object {key!r} in {self.url}")

    def download(self, key: str, path: Path) -> None:
        """Copy object ``key`` to ``path`` whole, checking its size.

        Raises:
            KeyNotFound: If the object does not exist.
            IntegrityError: If fewer or more bytes were copied than the object holds.
        """
        src = self._path(key)
        try:
            fsrc = open(src, "rb")  # noqa: SIM115 - closed below, before the rename
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise self._missing(key) from None
        with fsrc, atomic_path(Path(path)) as tmp:
            expected = os.fstat(fsrc.fileno()).st_size
            with open(tmp, "wb") as fdst:
                got = _copy_counting(fsrc, fdst)
            if got != expected:
                raise IntegrityError(
                    f"{self.url}: object {key!r} copied {got} bytes, expected {expected}"
                )
        logger.debug("downloaded %s/%s to %s (%d bytes)", self.url, key, path, got)

    def upload(self, path: Path, key: str) -> None:
        """Store the local file ``path`` as object ``key``, replacing it whole."""
        dst = self._path(key)
        with open(path, "rb") as fsrc:
            self._write(fsrc, dst)
        logger.debug("uploaded %s to %s/%s", path, self.url, key)

    def download_fileobj(self, key: str, fileobj: BinaryIO) -> None:
        """Write object ``key`` into ``fileobj``.

        Raises:
            KeyNotFound: If the object does not exist.
        """
        src = self._path(key)
        try:
            fsrc = open(src, "rb")  # noqa: SIM115 - closed by the with below
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise self._missing(key) from None
        with fsrc:
            shutil.copyfileobj(fsrc, fileobj, _COPY_BUFSIZE)

    def upload_fileobj(self, fileobj: BinaryIO, key: str) -> None:
        """Store everything readable from ``fileobj`` as object ``key``."""
        self._write(fileobj, self._path(key))

    def _write(self, src: BinaryIO, dst: Path) -> None:
        with atomic_path(dst) as tmp, open(tmp, "wb") as fdst:
            _copy_counting(src, fdst)
            fdst.flush()
            os.fsync(fdst.fileno())

    def exists(self, key: str) -> bool:
        """Return whether object ``key`` exists."""
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        """Delete object ``key`` (a missing key is fine) and prune emptied directories."""
        path = self._path(key)
        try:
            path.unlink()
        except (FileNotFoundError, NotADirectoryError):
            return
        except IsADirectoryError:  # a "directory" is not an object
            return
        parent = path.parent
        while parent != self.root and parent.is_relative_to(self.root):
            try:
                parent.rmdir()
            except OSError:  # not empty, or gone already
                break
            parent = parent.parent

    def list(self, prefix: str = "") -> Iterator[str]:
        """Yield the keys that start with ``prefix``, sorted; temporary files are skipped."""
        validate_prefix(prefix)
        start = self.root / prefix.rpartition("/")[0] if "/" in prefix else self.root
        keys: list[str] = []
        for dirpath, _dirnames, filenames in os.walk(start):
            rel_dir = Path(dirpath).relative_to(self.root).as_posix()
            for name in filenames:
                if is_temp_name(name):
                    continue
                key = name if rel_dir == "." else f"{rel_dir}/{name}"
                if key.startswith(prefix):
                    keys.append(key)
        return iter(sorted(keys))


__all__ = ["FileBucket", "NewFile", "atomic_path", "is_temp_name", "temp_name", "validate_prefix"]
