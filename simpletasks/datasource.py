"""The datasource tasks read and write through: a bucket fronted by a local file cache.

Port of SimpleTasks.jl's ``bucketcachedatasource``. :meth:`BucketCacheDatasource.get` returns
local paths of cached objects, downloading misses from the bucket in parallel straight into
the cache (temp file, then rename), so concurrent readers in threads or processes never see
a partial file and each object is downloaded once. :meth:`BucketCacheDatasource.put` writes
the cache first and then uploads.

When the cache has a size bound, a path returned by the datasource itself may be evicted
later. A task should therefore work through a :meth:`BucketCacheDatasource.session`, which
pins every key it fetched or wrote until it exits::

    with datasource.session() as ds:
        task.run(ds)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from pathlib import Path
from typing import Protocol, overload, runtime_checkable

from simpletasks.buckets import BucketService
from simpletasks.cache import FileSystemCache
from simpletasks.keys import validate_key

logger = logging.getLogger(__name__)


@runtime_checkable
class Datasource(Protocol):
    """What task code sees: keyed objects as local files. Type task code against this."""

    @overload
    def get(self, keys: str, *, override_cache: bool = False) -> Path: ...  # type: ignore[overload-overlap]
    @overload
    def get(self, keys: Sequence[str], *, override_cache: bool = False) -> list[Path]: ...
    def get(self, keys: str | Sequence[str], *, override_cache: bool = False) -> Path | list[Path]:
        """Return the local path of one key, or the paths of several keys in order."""
        ...

    def put(self, key: str, data: bytes | Path | None = None, *, only_cache: bool = False) -> Path:
        """Store ``data`` (or the cache entry already written) as ``key``; return its path."""
        ...

    def delete(self, key: str, *, only_cache: bool = False) -> None:
        """Delete ``key`` from the cache and (unless ``only_cache``) the bucket."""
        ...

    def local_path(self, key: str) -> Path:
        """Return where ``key`` lives in the local cache (no I/O)."""
        ...


#: Fill locks a ``get`` takes at once (one descriptor): the kernel keeps a file's record locks
#: in a list that every lock operation walks, so a batch of 10,000 would take ~1 s to lock
#: and slow every other locker of the cache meanwhile; 256 take ~0.3 ms.
LOCK_BATCH = 256


def _release_when_done(held: ExitStack, futures: dict[str, Future[Path]]) -> None:
    """Wait for ``futures`` (they never raise here: errors are read later), then release."""
    try:
        for future in futures.values():
            future.exception()
    finally:
        held.close()


class _DatasourceBase:
    """get/put/delete/local_path over a bucket and a cache; subclasses decide how long pins last."""

    def __init__(self, bucket: BucketService, cache: FileSystemCache, max_workers: int) -> None:
        if not isinstance(max_workers, int) or isinstance(max_workers, bool) or max_workers < 1:
            raise ValueError(f"max_workers must be an integer >= 1, got {max_workers!r}")
        self.bucket = bucket
        self.cache = cache
        self.max_workers = max_workers

    def _hold(self, key: str) -> AbstractContextManager[object]:
        """Pin ``key`` for an operation: until it ends, or until the session ends."""
        raise NotImplementedError

    def _hold_all(self, keys: list[str]) -> AbstractContextManager[object]:
        """Pin ``keys`` (validated) for a ``get``: until it ends, or until the session ends."""
        raise NotImplementedError

    def _check_open(self) -> None:
        """Raise ``RuntimeError`` if this view may no longer be used."""

    def local_path(self, key: str) -> Path:
        """Return where ``key`` lives in the local cache (no I/O; it may not exist yet).

        Raises:
            InvalidKey: If ``key`` is unsafe.
        """
        return self.cache.path(key)

    @overload
    def get(self, keys: str, *, override_cache: bool = False) -> Path: ...  # type: ignore[overload-overlap]
    @overload
    def get(self, keys: Sequence[str], *, override_cache: bool = False) -> list[Path]: ...
    def get(self, keys: str | Sequence[str], *, override_cache: bool = False) -> Path | list[Path]:
        """Return local paths of cached objects, downloading the misses from the bucket.

        Misses (all keys with ``override_cache``) are downloaded in parallel, straight into
        the cache. A key that appears twice is fetched once.

        Args:
            keys: One key, or a sequence of keys.
            override_cache: Download every key again even if it is cached.

        Returns:
            The path for one key, or a list of paths in the order of ``keys``.

        Raises:
            InvalidKey: If any key is unsafe (checked before anything is downloaded).
            KeyNotFound: If an object is missing from the bucket; with several failures, the
                error of the first failed key in ``keys`` is raised. Objects that were fetched
                stay cached whole; nothing partial is left behind.
        """
        if isinstance(keys, str):
            self.cache.path(keys)
            return self._get_many([keys], override_cache)[0]
        key_list = list(keys)
        for i, key in enumerate(key_list):
            validate_key(key, what=f"keys[{i}]")
            self.cache.path(key)
        return self._get_many(key_list, override_cache)

    def _get_many(self, keys: list[str], override: bool) -> list[Path]:
        unique = list(dict.fromkeys(keys))
        with self._hold_all(unique):
            # Hits first, in this thread: the workers then only fetch (file system calls made
            # by many threads at once cost more, each a hand-over of the interpreter lock).
            misses = unique if override else [k for k in unique if not self.cache.lookup(k)]
            if len(misses) <= 1 or self.max_workers == 1:
                fetched = {key: self._fetch(key, override) for key in misses}
            else:
                fetched = self._fetch_parallel(misses, override)
        return [fetched[key] if key in fetched else self.cache.path(key) for key in keys]

    def _fetch_parallel(self, keys: list[str], override: bool) -> dict[str, Path]:
        workers = min(self.max_workers, len(keys))
        futures: dict[str, Future[Path]] = {}
        found: dict[str, Path] = {}
        others: list[str] = []  # keys another writer holds: filled after, the usual way
        with ThreadPoolExecutor(workers, thread_name_prefix="simpletasks-get") as pool:
            # Two batches held at most: the next is queued while the last finishes, so the
            # threads never wait at a batch's end.
            previous: tuple[ExitStack, dict[str, Future[Path]]] | None = None
            try:
                for start in range(0, len(keys), LOCK_BATCH):
                    batch = keys[start : start + LOCK_BATCH]
                    older, previous = previous, self._start_batch(pool, batch, override, found)
                    started = previous[1]
                    futures.update(started)
                    others += [key for key in batch if key not in started and key not in found]
                    if older is not None:
                        _release_when_done(*older)
            finally:
                if previous is not None:
                    _release_when_done(*previous)
            for key in others:
                futures[key] = pool.submit(self._fetch, key, override)
        for key in keys:  # all have finished: raise for the first failed key
            if key in futures and (exc := futures[key].exception()) is not None:
                raise exc
        return found | {key: future.result() for key, future in futures.items()}

    def _start_batch(
        self, pool: ThreadPoolExecutor, batch: list[str], override: bool, found: dict[str, Path]
    ) -> tuple[ExitStack, dict[str, Future[Path]]]:
        """Take the fill locks of the keys of ``batch`` no one else is writing, look for their
        entries again under them (adding those found to ``found``), and start downloading the
        rest with the locks held; return the locks and the downloads started.

        Locks and looks happen here, in one thread, so that the download threads only
        download and commit (every system call in a thread is a hand-over of the interpreter
        lock).
        """
        held = ExitStack()
        try:
            locked = held.enter_context(self.cache.locks(batch))
            mine = [key for key in batch if key in locked]
            for key in mine:  # all looks first: the threads then start without competition
                if not override and self.cache.lookup(key):  # filled meanwhile
                    found[key] = self.cache.path(key)
            started = {
                key: pool.submit(self._fetch, key, override, locked=True)
                for key in mine
                if key not in found
            }
        except BaseException:
            held.close()
            raise
        return held, started

    def _fetch(self, key: str, override: bool, *, locked: bool = False) -> Path:
        """Fill the cache entry of ``key`` (pinned, and just seen missing, by the caller)."""

        def download(tmp: Path) -> None:
            logger.debug("downloading %s from %s", key, self.bucket.url)
            self.bucket.download(key, tmp)

        return self.cache.fill(key, download, force=override, seen_missing=True, locked=locked)

    def put(self, key: str, data: bytes | Path | None = None, *, only_cache: bool = False) -> Path:
        """Write ``key`` into the cache, then upload it to the bucket unless ``only_cache``.

        Args:
            key: The key to write.
            data: The bytes to store, a local file to copy, or ``None`` to upload the entry
                already in the cache (for example a file the task wrote at
                :meth:`local_path`).
            only_cache: Write only the cache; do not upload.

        Returns:
            The cache path of ``key``.

        Raises:
            InvalidKey: If ``key`` is unsafe.
            TypeError: If ``data`` is not bytes, a path or ``None``.
            FileNotFoundError: If ``data`` is ``None`` and the cache has no entry for ``key``,
                or ``data`` names a missing file.
        """
        path = self.cache.path(key)
        if isinstance(data, str):
            raise TypeError(
                f"put({key!r}): data must be bytes, a Path or None, got str; "
                "use Path(...) for a file name or .encode() for text"
            )
        if data is not None and not isinstance(data, bytes | bytearray | memoryview | os.PathLike):
            raise TypeError(
                f"put({key!r}): data must be bytes, a Path or None, got {type(data).__name__}"
            )
        with self._hold(key):
            if isinstance(data, os.PathLike) and Path(data).resolve() == path.resolve():
                data = None  # the caller passed the cache entry itself
            if data is None:
                if not self.cache.touch(key):
                    raise FileNotFoundError(
                        f"put({key!r}) without data uploads the cache entry {path}, which does "
                        "not exist; write that file first or pass the data"
                    )
            elif isinstance(data, os.PathLike):
                self.cache.put_file(key, Path(data))
            else:
                self.cache.put_bytes(key, bytes(data))
            if not only_cache:
                logger.debug("uploading %s to %s", key, self.bucket.url)
                self.bucket.upload(path, key)
        return path

    def delete(self, key: str, *, only_cache: bool = False) -> None:
        """Delete ``key`` from the cache and, unless ``only_cache``, from the bucket.

        Deleting a key that does not exist is not an error.

        Raises:
            InvalidKey: If ``key`` is unsafe.
        """
        self._check_open()
        self.cache.remove(key)
        if not only_cache:
            self.bucket.delete(key)


class BucketCacheDatasource(_DatasourceBase):
    """A bucket fronted by a local file cache.

    Paths it returns are pinned only while the call runs; use :meth:`session` to keep them
    pinned (safe from eviction) while a task uses them.

    Args:
        bucket: Where the objects live.
        cache: The local cache in front of it.
        max_workers: How many downloads :meth:`get` runs at once.

    Raises:
        ValueError: If ``max_workers`` is not a positive integer.
    """

    def __init__(
        self, bucket: BucketService, cache: FileSystemCache, *, max_workers: int = 8
    ) -> None:
        super().__init__(bucket, cache, max_workers)

    def __repr__(self) -> str:
        return f"BucketCacheDatasource({self.bucket.url!r}, {self.cache!r})"

    def _hold(self, key: str) -> AbstractContextManager[object]:
        return self.cache.pin(key)

    @contextmanager
    def _hold_all(self, keys: list[str]) -> Iterator[None]:
        if len(keys) <= 1:  # one shared lock
            with self.cache.pin(keys[0]) if keys else nullcontext():
                yield
            return
        with self.cache.pin_set() as pins:  # one record for them all
            pins.add_many(keys)
            yield

    def session(self) -> DatasourceSession:
        """Open a per-task view that pins every key it gets or puts until it is closed.

        Use it as a context manager (``with datasource.session() as view:``), which closes
        it at the block's end. The view has the same ``get``/``put``/``delete``/``local_path``
        API; using it after it was closed raises ``RuntimeError``.
        """
        return DatasourceSession(self)


class DatasourceSession(_DatasourceBase):
    """A per-task view of a :class:`BucketCacheDatasource`; see its ``session()``.

    Its pins are one :class:`~simpletasks.cache.PinSet`: one open file however many keys
    the task touches.
    """

    def __init__(self, datasource: BucketCacheDatasource) -> None:
        # One per task: the datasource's settings were checked when it was made.
        self.bucket = datasource.bucket
        self.cache = datasource.cache
        self.max_workers = datasource.max_workers
        self._pins = datasource.cache.pin_set()
        self._closed = False

    def __enter__(self) -> DatasourceSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def pinned(self) -> frozenset[str]:
        """The keys this session holds pinned."""
        return self._pins.keys

    def _hold(self, key: str) -> AbstractContextManager[object]:
        self._check_open()
        self._pins.add(key)
        return nullcontext()

    def _hold_all(self, keys: list[str]) -> AbstractContextManager[object]:
        self._check_open()
        self._pins.add_many(keys)
        return nullcontext()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this datasource session is closed; open a new one")

    def close(self) -> None:
        """Release every pin; the session cannot be used afterwards."""
        self._closed = True
        self._pins.close()


__all__ = ["BucketCacheDatasource", "Datasource", "DatasourceSession"]
