"""A local file-system cache of bucket objects, keyed like the bucket.

Port of SimpleTasks.jl's ``filesystemcache``, made safe for several threads and processes
sharing one cache directory:

* the entry for key ``k`` is the regular file ``root/k``; keys are validated and no path
  component under ``root`` may be a symlink, so the cache never reads or writes outside it;
* writes go to a private temp directory under ``root/.tmp`` and are ``os.replace``-d into
  place, so a reader sees the old file, the new file or none, never a partial one;
* per-key locks are two slots of the one lock file ``root/.locks/keys.lock`` (see
  :class:`~simpletasks._flock.SlotLocks`; no file is created per key): an exclusive *fill*
  lock so that concurrent fetchers of one key download it once, and a shared *pin* that
  marks an entry in use; eviction takes the pin exclusively without waiting and skips busy
  entries;
* a :class:`PinSet` pins any number of keys with one open file: it lists its keys in a
  record file under ``root/.locks/sessions`` that it holds locked while it lives; eviction
  reads the live records (and deletes those of crashed processes) and skips their keys;
* with ``max_bytes``, least recently used entries (last use is the file's mtime, set on every
  access) are evicted after each commit until the cache fits again, if it can;
* on a full disk (a write fails with ``ENOSPC`` or ``EDQUOT``), with or without
  ``max_bytes``, least recently used entries that are not in use are evicted to make room and
  the write is tried again (:meth:`FileSystemCache.make_room`); only when nothing more can be
  evicted does the error reach the caller.

These locks belong to an open file description, so every acquisition opens its own file
descriptor: two threads of one process exclude each other exactly as two processes do. A
per-key pin therefore costs a descriptor while held; a task that touches thousands of keys
pins them with a :class:`PinSet` instead (one descriptor), as datasource sessions do.

A miss costs few system calls: the entry's path is validated once per call and handled as a
string, the fetcher writes the temp file that is renamed into place (a bucket writes it in
place, no temp of its own: see :func:`~simpletasks.buckets.file.atomic_path`), and only the
parent directories are checked for symlinks at commit (the entry itself was just seen
missing under the fill lock).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import logging
import os
import shutil
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext, suppress
from pathlib import Path

from simpletasks._flock import SlotLocks
from simpletasks._flock import locked as _locked
from simpletasks.buckets.file import temp_name
from simpletasks.errors import InvalidKey
from simpletasks.keys import validate_key
from simpletasks.pinset import PinSet, live_keys

logger = logging.getLogger(__name__)

#: Top-level names the cache keeps for itself; keys may not start with them.
RESERVED_NAMES = frozenset({".tmp", ".locks"})
#: Temp directories older than this (seconds) are left over by a crashed writer.
STALE_TMP_SECONDS = 3600.0
_COMMIT_ATTEMPTS = 5
#: Write errors that mean "no space": evicting entries may help.
NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
#: Writes tried after a full disk, each after making (twice as much) room.
ROOM_ATTEMPTS = 5
_SLACK_BYTES = 65536  # room asked for beyond the data (file system metadata, blocks)


class FileSystemCache:
    """A directory of cached objects, safe for concurrent threads and processes.

    Args:
        root: The cache directory; created (with parents) if missing.
        max_bytes: Bound on the total size of the entries, or ``None`` for no bound. After
            each commit, least recently used entries that are not in use are evicted until
            the total fits; the entry just written is never evicted.

    Raises:
        ValueError: If ``max_bytes`` is not ``None`` or a non-negative integer.
        NotADirectoryError: If ``root`` exists and is not a directory.
        InvalidKey: If ``root/.tmp`` or ``root/.locks`` is a symlink.
    """

    def __init__(self, root: Path | str, *, max_bytes: int | None = None) -> None:
        if max_bytes is not None and (type(max_bytes) is not int or max_bytes < 0):
            raise ValueError(f"max_bytes must be None or an integer >= 0, got {max_bytes!r}")
        self.max_bytes = max_bytes
        if Path(root).exists() and not Path(root).is_dir():
            raise NotADirectoryError(f"cache root {root} exists and is not a directory")
        Path(root).mkdir(parents=True, exist_ok=True)
        self.root = Path(root).resolve(strict=True)
        self._root_s = str(self.root)
        self._tmp_dir = self.root / ".tmp"
        self._tmp_s = str(self._tmp_dir)
        self._locks_dir = self.root / ".locks"
        self._sessions_dir = self._locks_dir / "sessions"
        self._pins_lock = self._locks_dir / "pins.lock"
        for internal in (self._tmp_dir, self._locks_dir, self._sessions_dir):
            internal.mkdir(exist_ok=True)
            if not stat.S_ISDIR(os.lstat(internal).st_mode):
                raise InvalidKey(f"cache directory {internal} must be a real directory")
        self._key_locks = SlotLocks(self._locks_dir / "keys.lock")

    def __repr__(self) -> str:
        return f"FileSystemCache({str(self.root)!r}, max_bytes={self.max_bytes!r})"

    def path(self, key: str) -> Path:
        """Return where the entry for ``key`` lives (no I/O; it may not exist).

        Raises:
            InvalidKey: If ``key`` is unsafe or starts with a name the cache reserves.
        """
        return Path(self._entry(key))

    def _entry(self, key: str) -> str:
        """Validate ``key`` and return its entry's path as a string (no I/O)."""
        validate_key(key)
        first = key.split("/", 1)[0]
        if first in RESERVED_NAMES:
            raise InvalidKey(
                f"key {key!r} starts with {first!r}, a name the cache reserves for its own files"
            )
        return f"{self._root_s}/{key}"  # a valid key has no empty, "." or ".." component

    def _check_under_root(
        self, key: str, *, create_parents: bool = False, final: bool = True
    ) -> int | None:
        """Check that no component of ``key``'s path under root is a symlink (``lstat`` each).

        Args:
            key: A validated key.
            create_parents: Make missing parent directories.
            final: Check the entry itself too (else only its parents).

        Returns:
            The entry's ``st_mode``, or ``None`` if it is missing (or ``final`` is false).

        Raises:
            InvalidKey: If a component is a symlink, a parent is not a directory, or the
                entry is a directory.
        """
        parts = key.split("/")
        current = self._root_s
        last_index = len(parts) - 1
        for index, part in enumerate(parts):
            current = f"{current}/{part}"
            last = index == last_index
            if last and not final:
                return None
            try:
                mode = os.lstat(current).st_mode
            except FileNotFoundError:
                if last or not create_parents:
                    return None
                with suppress(FileExistsError):  # a concurrent writer made it; checked below
                    os.mkdir(current, 0o755)
                mode = os.lstat(current).st_mode
            if stat.S_ISLNK(mode):
                raise self._symlink_error(current, key)
            if not last and not stat.S_ISDIR(mode):
                raise InvalidKey(f"key {key!r} needs {current} to be a directory, not an entry")
            if last and stat.S_ISDIR(mode):
                raise InvalidKey(f"key {key!r} names a directory of other entries in the cache")
        return mode

    def _symlink_error(self, path: str, key: str) -> InvalidKey:
        return InvalidKey(
            f"cache path {path} (for key {key!r}) is a symlink; the cache never "
            f"follows symlinks out of {self.root}"
        )

    def _checked_path(self, key: str, *, create_parents: bool = False) -> Path:
        """Return :meth:`path` after checking that no component under root is a symlink."""
        path = self.path(key)
        self._check_under_root(key, create_parents=create_parents)
        return path

    def _slots(self, key: str) -> tuple[int, int]:
        """The (pin, fill) lock slots of ``key`` (a 61-bit hash: collisions never happen)."""
        digest = hashlib.sha1(key.encode(), usedforsecurity=False).digest()
        slot = int.from_bytes(digest[:8], "big") >> 3
        return 2 * slot, 2 * slot + 1

    def exists(self, key: str) -> bool:
        """Return whether the cache holds an entry for ``key``."""
        self._entry(key)
        mode = self._check_under_root(key)
        return mode is not None and stat.S_ISREG(mode)

    def touch(self, key: str) -> bool:
        """Mark the entry for ``key`` as used now (for eviction); return whether it exists."""
        entry = self._entry(key)
        if self._check_under_root(key) is None:
            return False
        return self._stamp(entry)

    def lookup(self, key: str) -> bool:
        """Whether the entry for ``key`` is here, marking it used if so: the hit check of a
        read before it fetches a miss with ``fill(..., seen_missing=True)`` (a subclass that
        counts hits, such as :class:`~simpletasks.metrics.MeteredCache`, counts them here
        and in :meth:`fill`)."""
        return self.touch(key)

    @staticmethod
    def _stamp(entry: str) -> bool:
        now = time.time_ns()
        try:
            os.utime(entry, ns=(now, now), follow_symlinks=False)
        except FileNotFoundError:
            return False
        return True

    def _touch_if_present(self, key: str, entry: str) -> bool:
        """:meth:`touch` for ``fill``: a missing entry costs one ``lstat``."""
        try:
            mode = os.lstat(entry).st_mode
        except FileNotFoundError:  # (a symlinked parent is refused when the entry is committed)
            return False
        self._check_under_root(key, final=False)  # its parents; the entry itself is here:
        if stat.S_ISLNK(mode):
            raise self._symlink_error(entry, key)
        if stat.S_ISDIR(mode):
            raise InvalidKey(f"key {key!r} names a directory of other entries in the cache")
        return self._stamp(entry)

    def keys(self) -> list[str]:
        """Return the keys of all entries, sorted; the cache's own files are never listed."""
        return sorted(key for _, _, key in self._entries())

    def size_bytes(self) -> int:
        """Return the total size in bytes of all entries."""
        return sum(size for _, size, _ in self._entries())

    def _entries(self) -> list[tuple[int, int, str]]:
        """Return ``(last use ns, size, key)`` for every entry."""
        found = []
        for dirpath, dirnames, filenames in os.walk(self.root):  # does not follow symlinks
            rel = os.path.relpath(dirpath, self.root)
            if rel == ".":
                dirnames[:] = [d for d in dirnames if d not in RESERVED_NAMES]
                prefix = ""
            else:
                prefix = rel.replace(os.sep, "/") + "/"
            for name in filenames:
                try:
                    st = os.lstat(os.path.join(dirpath, name))
                    self.path(prefix + name)
                except (FileNotFoundError, InvalidKey):  # gone, or not a file we could write
                    continue
                if stat.S_ISREG(st.st_mode):
                    found.append((st.st_mtime_ns, st.st_size, prefix + name))
        return found

    @contextmanager
    def writing(self, key: str) -> Iterator[Path]:
        """Yield a temp path to write the entry for ``key`` into; commit it if the block succeeds.

        The path does not exist yet; the block must create it as a regular file. It is a
        unique temp name (:func:`~simpletasks.buckets.file.temp_name`) in the cache's temp
        directory, private to this writer until the commit renames it, so a bucket's
        download writes it in place (see :func:`~simpletasks.buckets.file.atomic_path`). A
        writer may put its own temp files next to it under names that start with the
        path's name and must remove them. If the block raises, nothing is committed and the
        temp file is removed.

        Raises:
            InvalidKey: If ``key`` is unsafe or clashes with the cache's layout.
            FileNotFoundError: If the block did not create the file.
        """
        with self._writing(key, self._entry(key)) as tmp:
            yield Path(tmp)

    @contextmanager
    def _writing(self, key: str, entry: str, *, check_entry: bool = True) -> Iterator[str]:
        """:meth:`writing` with a validated entry path; ``check_entry=False`` when the entry
        was just seen missing under the fill lock (only its parents are checked then)."""
        tmp = f"{self._tmp_s}/{temp_name('w')}"
        committed = False
        started = time.time_ns()
        try:
            yield tmp
            committed = self._commit(key, entry, tmp, check_entry, started)
        finally:
            if not committed:
                try:
                    os.unlink(tmp)
                except FileNotFoundError:
                    pass
                except IsADirectoryError:  # a writer made a directory: refused by the commit
                    shutil.rmtree(tmp, ignore_errors=True)

    def put_bytes(self, key: str, data: bytes) -> Path:
        """Store ``data`` as the entry for ``key`` (atomically) and return its path.

        On a full disk, unused entries are evicted to make room (see :meth:`make_room`).
        """
        entry = self._entry(key)

        def write() -> None:
            with self._writing(key, entry) as tmp:
                Path(tmp).write_bytes(data)

        self._with_room(key, write, len(data))
        return Path(entry)

    def put_file(self, key: str, src: Path | str) -> Path:
        """Copy the file ``src`` into the cache as the entry for ``key`` and return its path.

        Raises:
            FileNotFoundError: If ``src`` is not an existing file.
        """
        entry = self._entry(key)
        src = Path(src)
        if not src.is_file():
            raise FileNotFoundError(f"cannot cache key {key!r}: source {src} is not a file")

        def write() -> None:
            with self._writing(key, entry) as tmp:
                shutil.copyfile(src, tmp)

        self._with_room(key, write, src.stat().st_size)
        return Path(entry)

    def fill(
        self,
        key: str,
        fetch: Callable[[Path], None],
        *,
        force: bool = False,
        seen_missing: bool = False,
        locked: bool = False,
    ) -> Path:
        """Return the path of the entry for ``key``, calling ``fetch(tmp)`` if it is missing.

        ``fetch`` writes the object to the temp path it gets, then it is committed. Concurrent
        calls for one key (threads or processes) call ``fetch`` once: the first holds
        :meth:`lock`, the others wait and find the entry. ``force`` fetches even if present.
        ``seen_missing`` says the caller just saw the entry missing (:meth:`lookup` returned
        False): the lock is taken without looking again first (it is looked for under the
        lock all the same). ``locked`` says the caller holds the key's lock (from
        :meth:`locks`) and saw the entry missing while holding it: the lock is not taken and
        the entry not looked for again. Hold :meth:`pin` around this call and the file's use
        to keep it from eviction.
        """
        entry = self._entry(key)
        if not (force or seen_missing or locked) and self._touch_if_present(key, entry):
            return Path(entry)
        slot = self._slots(key)[1]
        with nullcontext() if locked else self._key_locks.held(slot, exclusive=True):
            if not (force or locked) and self._touch_if_present(key, entry):
                return Path(entry)

            written = [0]  # bytes the last failed fetch got to write

            def write() -> None:
                with self._writing(key, entry, check_entry=force) as tmp:
                    try:
                        fetch(Path(tmp))
                    except OSError:
                        with suppress(OSError):
                            written[0] = os.lstat(tmp).st_size
                        raise

            self._with_room(key, write, None, written)
        return Path(entry)

    def _with_room(
        self,
        key: str,
        write: Callable[[], None],
        size: int | None,
        written: list[int] | None = None,
    ) -> None:
        """Call ``write``; while it fails for lack of space, make room and call it again.

        Args:
            key: The entry being written (never evicted for its own room).
            write: Writes and commits the entry; a failed attempt leaves no temp file.
            size: Bytes the entry needs, if known. Unknown (a download), the room asked for
                starts at twice what the failed write got to write (``written[0]``) and
                doubles per attempt.
            written: Set by ``write`` when it fails: the bytes it had written.

        Raises:
            OSError: The last ``ENOSPC``/``EDQUOT`` if nothing more could be evicted, or
                after :data:`ROOM_ATTEMPTS` tries; any other error at once.
        """
        room = 0
        for attempt in range(1, ROOM_ATTEMPTS + 1):
            try:
                write()
                return
            except OSError as exc:
                if exc.errno not in NO_SPACE_ERRNOS or attempt == ROOM_ATTEMPTS:
                    raise
                need = size if size is not None else 2 * (written[0] if written else 0)
                room = max(room * 2, need + (need >> 4) + _SLACK_BYTES)  # slack: metadata
                evicted = self.make_room(room, keep=key)
                if not evicted and shutil.disk_usage(self._tmp_dir).free < room:
                    raise  # nothing left to evict (the rest is in use)
                logger.warning(
                    "cache %s: no space left writing %s; evicted %d unused entries to make "
                    "room (%d bytes free now), trying again",
                    *(self.root, key, evicted, shutil.disk_usage(self._tmp_dir).free),
                )

    def _commit(self, key: str, entry: str, tmp: str, check_entry: bool, started: int) -> bool:
        """Move the temp file ``tmp`` (begun at ``started``, in ns) into place as ``key``'s
        entry; return True.

        The entry's last use (its mtime) must fall between ``started`` and now, so that it
        orders right against every use before or after this write: the mtime the writes
        left does, unless it is older (the clock of file times is coarse, or the writer set
        it), then the file is stamped now.
        """
        try:
            st = os.lstat(tmp)
        except FileNotFoundError:
            raise FileNotFoundError(
                f"writing({key!r}) finished without creating the file {tmp}"
            ) from None
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"writing({key!r}) must create a regular file at {tmp}")
        if st.st_mtime_ns < started:  # stamp the last use before the entry becomes visible
            now = time.time_ns()
            os.utime(tmp, ns=(now, now), follow_symlinks=False)
        for attempt in range(_COMMIT_ATTEMPTS):
            self._check_under_root(key, create_parents=True, final=check_entry)
            try:
                os.replace(tmp, entry)  # replaces a symlink itself, never its target
                break
            except FileNotFoundError:  # a concurrent remove pruned a parent directory
                if attempt == _COMMIT_ATTEMPTS - 1:
                    raise
            except IsADirectoryError:  # made meanwhile by a writer of keys under it
                raise InvalidKey(
                    f"key {key!r} names a directory of other entries in the cache"
                ) from None
        logger.debug("cached %s", key)
        if self.max_bytes is not None:
            self.evict(keep=key)
        return True

    @contextmanager
    def lock(self, key: str) -> Iterator[None]:
        """Hold the exclusive fill lock of ``key`` (across threads and processes)."""
        self._entry(key)
        with self._key_locks.held(self._slots(key)[1], exclusive=True):
            yield

    @contextmanager
    def locks(self, keys: list[str]) -> Iterator[set[str]]:
        """Hold the fill locks of those of ``keys`` that are free now, all at once.

        The batch form of :meth:`lock` for a read of many keys: one file descriptor and one
        ``fcntl`` per key, taken in this thread, instead of an ``open``, ``fcntl`` and
        ``close`` per key in each download thread. It never waits: the keys another writer
        holds are left out, for the caller to :meth:`fill` after this block (the usual way,
        which waits), never inside it (it could wait on a writer that waits on these).
        Yields the set of keys held; fill them with ``fill(key, ..., locked=True)``.
        """
        slots = {self._slots(key)[1]: key for key in keys}
        with self._key_locks.held_many(list(slots)) as got:
            yield {slots[slot] for slot in got}

    @contextmanager
    def pin(self, key: str) -> Iterator[None]:
        """Mark ``key`` in use (a shared lock): eviction skips it while any pin is held.

        Pinning does not create the entry; a key may be pinned before it is fetched.
        """
        self._entry(key)
        with self._key_locks.held(self._slots(key)[0], exclusive=False):
            yield

    def pin_set(self) -> PinSet:
        """Return a new, empty :class:`PinSet` on this cache (close it when done)."""
        return PinSet(self._sessions_dir, self._pins_lock, validate=self._entry)

    def remove(self, key: str) -> bool:
        """Remove the entry for ``key`` even if pinned; return whether it existed."""
        self._entry(key)
        with self._key_locks.held(self._slots(key)[1], exclusive=True):
            return self._unlink_entry(key)

    def clear(self) -> int:
        """Remove every entry and stale temp files; return how many entries were removed."""
        removed = sum(self.remove(key) for key in self.keys())
        cutoff = time.time() - STALE_TMP_SECONDS
        for tmp in self._tmp_dir.iterdir():
            with suppress(FileNotFoundError):
                if os.lstat(tmp).st_mtime < cutoff:
                    if tmp.is_dir() and not tmp.is_symlink():  # from an older version
                        shutil.rmtree(tmp, ignore_errors=True)
                    else:
                        tmp.unlink()
        return removed

    def _unlink_entry(self, key: str) -> bool:
        entry = self._entry(key)
        self._check_under_root(key)
        try:
            os.unlink(entry)
        except FileNotFoundError:
            return False
        parent = os.path.dirname(entry)
        while parent != self._root_s:  # prune directories left empty
            try:
                os.rmdir(parent)
            except OSError:
                break
            parent = os.path.dirname(parent)
        return True

    def evict(self, *, keep: str | None = None) -> int:
        """Evict least recently used entries until the total fits ``max_bytes``.

        Entries in use (pinned, or being filled) and ``keep`` are skipped. Several processes
        may evict at once: scans are serialised by a lock, and each entry is removed only
        under both of its locks. Returns the number of entries evicted.
        """
        if self.max_bytes is None:
            return 0
        evicted = 0
        with _locked(self._locks_dir / "evict.lock", fcntl.LOCK_EX):
            entries = self._entries()
            total = sum(size for _, size, _ in entries)
            with _locked(self._pins_lock, fcntl.LOCK_EX):  # no pin set changes meanwhile
                pinned = live_keys(self._sessions_dir) if total > self.max_bytes else set()
                for _, size, key in sorted(entries):
                    if total <= self.max_bytes:
                        break
                    if key != keep and key not in pinned and self._try_evict(key):
                        total -= size
                        evicted += 1
        if total > self.max_bytes:
            logger.warning(
                "cache %s holds %d bytes, over max_bytes=%d: the rest is in use",
                self.root,
                total,
                self.max_bytes,
            )
        return evicted

    def make_room(self, free_bytes: int, *, keep: str | None = None) -> int:
        """Evict least recently used entries until the disk has ``free_bytes`` free.

        Used when a write failed for lack of space; ``max_bytes`` plays no part. Entries in
        use (pinned, or being filled) and ``keep`` are skipped, as in :meth:`evict`.

        Returns:
            How many entries were evicted (0: nothing could be, or there is room already).
        """
        evicted = 0
        with _locked(self._locks_dir / "evict.lock", fcntl.LOCK_EX):
            if shutil.disk_usage(self._tmp_dir).free >= free_bytes:
                return 0
            entries = sorted(self._entries())
            with _locked(self._pins_lock, fcntl.LOCK_EX):  # no pin set changes meanwhile
                pinned = live_keys(self._sessions_dir)
                for _, _, key in entries:
                    if key != keep and key not in pinned and self._try_evict(key):
                        evicted += 1
                        if shutil.disk_usage(self._tmp_dir).free >= free_bytes:
                            break
        return evicted

    def _try_evict(self, key: str) -> bool:
        pin_slot, fill_slot = self._slots(key)
        with (
            self._key_locks.held(pin_slot, exclusive=True, wait=False) as idle,
            self._key_locks.held(fill_slot, exclusive=True, wait=False) as not_filling,
        ):
            if not (idle and not_filling):
                return False
            try:
                removed = self._unlink_entry(key)
            except InvalidKey:  # a parent became a symlink meanwhile: not ours to touch
                return False
        if removed:
            logger.debug("evicted %s from %s", key, self.root)
        return removed
