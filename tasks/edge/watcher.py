"""Watch a directory by polling: report each complete file once, in arrival order.

The published agent polled every second because file-system events missed files; we poll too.
A file *counts* once it is complete: its size and modification time have not changed for
``settle_seconds`` (so a file renamed into place counts at the first poll that sees it settled,
and a file still being written in place counts once the writer stops). Files already in the
directory when the watcher starts are included. Hidden names (``.x``), common temporary
suffixes (``.tmp``, ``.part``, ``~``) and sub-directories are ignored; ``include`` keeps only
names ending in one of the given suffixes.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

TEMP_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", "~")


@dataclass(frozen=True)
class WatchedFile:
    """A complete file the watcher found.

    Attributes:
        path: Its path.
        name: Its name inside the watched directory.
        size: Size in bytes when it was found complete.
        mtime_ns: Modification time (ns since the epoch) when it was found complete.
        detected: Wall-clock time (``time.time()``) it was found complete.
    """

    path: Path
    name: str
    size: int
    mtime_ns: int
    detected: float


class DirectoryWatcher:
    """Polls one directory (not recursively) and returns each newly complete file once.

    Args:
        directory: The directory to watch. It need not exist yet.
        include: Keep only names ending with one of these suffixes (case-insensitive);
            empty keeps every name.
        settle_seconds: How long size and modification time must stay unchanged.
        clock: Wall clock (for tests).
    """

    def __init__(
        self,
        directory: Path,
        *,
        include: Iterable[str] = (),
        settle_seconds: float = 0.5,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = Path(directory)
        self.include = tuple(s.lower() for s in include if s)
        self.settle_seconds = settle_seconds
        self._clock = clock
        self._seen: set[str] = set()
        # name -> ((size, mtime_ns), wall time that stat was first observed)
        self._pending: dict[str, tuple[tuple[int, int], float]] = {}
        self._warned = False

    def wants(self, name: str) -> bool:
        """Return whether a file named ``name`` is one the watcher reports."""
        if name.startswith(".") or name.endswith(TEMP_SUFFIXES):
            return False
        return not self.include or name.lower().endswith(self.include)

    @property
    def pending(self) -> int:
        """How many files were seen but have not settled yet (not reported)."""
        return len(self._pending)

    def forget(self, names: Iterable[str]) -> None:
        """Mark ``names`` as already reported (e.g. uploaded by an earlier run)."""
        self._seen.update(names)

    def poll(self) -> list[WatchedFile]:
        """Scan once; return the files that became complete, oldest first.

        A directory that cannot be read is logged (once until it can be read again) and
        yields nothing; files that vanish between listing and stat are skipped.
        """
        now = self._clock()
        try:
            entries = list(os.scandir(self.directory))
        except OSError as exc:
            if not self._warned:
                logger.warning("cannot read %s: %s", self.directory, exc)
                self._warned = True
            return []
        self._warned = False
        found: list[WatchedFile] = []
        present: set[str] = set()
        for entry in entries:
            name = entry.name
            if name in self._seen or not self.wants(name):
                continue
            try:
                if not entry.is_file(follow_symlinks=True):
                    continue
                st = entry.stat(follow_symlinks=True)
            except OSError:
                continue  # removed between listing and stat
            present.add(name)
            stat = (st.st_size, st.st_mtime_ns)
            previous = self._pending.get(name)
            if previous is None or previous[0] != stat:
                self._pending[name] = (stat, now)
                since = now
            else:
                since = previous[1]
            # Settled: unchanged across polls for settle_seconds, or last written long ago.
            unchanged_for = now - since
            written_ago = now - st.st_mtime_ns / 1e9
            if unchanged_for >= self.settle_seconds or (
                previous is None and written_ago >= self.settle_seconds
            ):
                found.append(WatchedFile(Path(entry.path), name, stat[0], stat[1], now))
        for name in list(self._pending):
            if name not in present:
                del self._pending[name]
        for f in found:
            self._seen.add(f.name)
            del self._pending[f.name]
        found.sort(key=lambda f: (f.mtime_ns, f.name))
        return found


class WatcherThread(threading.Thread):
    """Polls a :class:`DirectoryWatcher` every ``interval`` seconds and hands files on.

    Args:
        watcher: The watcher to poll.
        on_file: Called with each complete file, in order, from this thread. An exception
            from it is logged and the watcher goes on.
        interval: Seconds between polls (at most 1 s keeps new files seen within a second).
    """

    def __init__(
        self,
        watcher: DirectoryWatcher,
        on_file: Callable[[WatchedFile], None],
        *,
        interval: float = 0.25,
    ) -> None:
        super().__init__(name="edge-watcher", daemon=True)
        self.watcher = watcher
        self.on_file = on_file
        self.interval = interval
        self._stop_event = threading.Event()
        self.polls = 0
        #: Whether the last poll is over, every file it found handed on, and no file it saw
        #: is still settling: nothing is on its way from the directory.
        self.quiet = False

    def stop(self) -> None:
        """Ask the thread to stop after its current poll."""
        self._stop_event.set()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.quiet = False
            for f in self.watcher.poll():
                try:
                    self.on_file(f)
                except Exception:
                    logger.exception("handling new file %s failed", f.path)
            self.polls += 1
            self.quiet = not self.watcher.pending
            self._stop_event.wait(self.interval)
