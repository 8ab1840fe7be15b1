"""An in-process bucket for tests and local runs: ``mem://name[/prefix]``.

Buckets are named: every ``mem://x`` opened in one process shares the same objects, like a
real bucket shared by several clients. :meth:`MemoryBucket.reset_all` forgets them all.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

from simpletasks.buckets.file import atomic_path, validate_prefix
from simpletasks.errors import ConfigError, IntegrityError, KeyNotFound
from simpletasks.keys import validate_key

logger = logging.getLogger(__name__)


class _Store:
    """The objects of one named memory bucket, guarded by a lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.objects: dict[str, bytes] = {}


class MemoryBucket:
    """Objects held as bytes in a process-wide, thread-safe dict.

    Args:
        name: The bucket's name; buckets with the same name share their objects.
        prefix: Keys are stored under ``prefix/`` (empty for none).
    """

    _stores: ClassVar[dict[str, _Store]] = {}
    _stores_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, name: str, prefix: str = "") -> None:
        if not name:
            raise ConfigError("memory bucket needs a name: mem://name[/prefix]")
        prefix = prefix.strip("/")
        if prefix:
            validate_key(prefix, what="bucket prefix")
        self.name = name
        self.prefix = prefix
        self.url = f"mem://{name}/{prefix}" if prefix else f"mem://{name}"
        with self._stores_lock:
            self._store = self._stores.setdefault(name, _Store())

    @classmethod
    def from_url(cls, url: str, *, create: bool = False, **kwargs: Any) -> MemoryBucket:
        """Open ``mem://name[/prefix]`` (``create`` is accepted and ignored).

        Raises:
            ConfigError: If ``url`` is not a ``mem://`` URL with a name, or an unknown
                keyword argument is given.
            InvalidKey: If the prefix is not a safe key.
        """
        if kwargs:
            raise ConfigError(f"memory bucket takes no options, got {sorted(kwargs)}")
        scheme, sep, rest = url.partition("://") if isinstance(url, str) else ("", "", "")
        if not sep or scheme.lower() != "mem":
            raise ConfigError(f"not a memory bucket URL: {url!r}; expected mem://name[/prefix]")
        name, _, prefix = rest.partition("/")
        if not name:
            raise ConfigError(f"memory bucket URL {url!r} has no name; expected mem://name")
        return cls(name, prefix)

    @classmethod
    def reset_all(cls) -> None:
        """Forget every memory bucket and its objects (for tests)."""
        with cls._stores_lock:
            for store in cls._stores.values():
                with store.lock:
                    store.objects.clear()
            cls._stores.clear()

    def __repr__(self) -> str:
        return f"MemoryBucket({self.url!r})"

    def _full(self, key: str) -> str:
        validate_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _get(self, key: str) -> bytes:
        full = self._full(key)
        with self._store.lock:
            data = self._store.objects.get(full)
        if data is None:
            raise KeyNotFound(f"no object {key!r} in {self.url}")
        return data

    def _put(self, key: str, data: bytes) -> None:
        full = self._full(key)
        with self._store.lock:
            self._store.objects[full] = data

    def download(self, key: str, path: Path) -> None:
        """Write object ``key`` to ``path`` whole.

        Raises:
            KeyNotFound: If the object does not exist.
            IntegrityError: If the file written does not have the object's size.
        """
        data = self._get(key)
        with atomic_path(Path(path)) as tmp:
            tmp.write_bytes(data)
            size = tmp.stat().st_size
            if size != len(data):
                raise IntegrityError(
                    f"{self.url}: object {key!r} wrote {size} bytes, expected {len(data)}"
                )

    def upload(self, path: Path, key: str) -> None:
        """Store the local file ``path`` as object ``key``."""
        self._full(key)  # validate before reading the file
        self._put(key, Path(path).read_bytes())

    def download_fileobj(self, key: str, fileobj: BinaryIO) -> None:
        """Write object ``key`` into ``fileobj``.

        Raises:
            KeyNotFound: If the object does not exist.
        """
        fileobj.write(self._get(key))

    def upload_fileobj(self, fileobj: BinaryIO, key: str) -> None:
        """Store everything readable from ``fileobj`` as object ``key``."""
        self._full(key)
        self._put(key, bytes(fileobj.read()))

    def exists(self, key: str) -> bool:
        """Return whether object ``key`` exists."""
        full = self._full(key)
        with self._store.lock:
            return full in self._store.objects

    def delete(self, key: str) -> None:
        """Delete object ``key``; a missing key is fine."""
        full = self._full(key)
        with self._store.lock:
            self._store.objects.pop(full, None)

    def list(self, prefix: str = "") -> Iterator[str]:
        """Yield the keys that start with ``prefix``, sorted (a snapshot)."""
        validate_prefix(prefix)
        base = f"{self.prefix}/" if self.prefix else ""
        want = base + prefix
        with self._store.lock:
            keys = sorted(k[len(base) :] for k in self._store.objects if k.startswith(want))
        return iter(keys)


__all__ = ["MemoryBucket"]
