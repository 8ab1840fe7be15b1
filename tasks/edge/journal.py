"""The upload journal: which files are confirmed uploaded, so a restarted agent skips them.

An append-only JSON-lines file (``uploads.jsonl`` in the agent's state directory). One line
per confirmed upload, written and fsynced *after* the target confirmed it; a file is never
recorded before. A file counts as the same file while its name, size and modification time
are unchanged; a changed file is sent again. A torn last line (a crash mid-write) or any other
unreadable line is skipped with a warning. If a record cannot be written (a full disk), the
error is raised to the caller, which keeps going: the file was uploaded, so at worst a
restart sends it once more to the same deterministic key.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

JOURNAL_NAME = "uploads.jsonl"


@dataclass(frozen=True)
class UploadRecord:
    """One confirmed upload.

    Attributes:
        name: The file's name in the watched directory.
        size: Its size when found.
        mtime_ns: Its modification time when found.
        sent_bytes: Bytes actually sent (smaller if the processed version was sent).
        processed: Whether the pre-processed version was sent.
        target: Where it went (the object key or gateway URL).
        time: Wall-clock time of the confirmation.
    """

    name: str
    size: int
    mtime_ns: int
    sent_bytes: int
    processed: bool
    target: str
    time: float


class UploadJournal:
    """Append-only record of confirmed uploads. Thread-safe.

    Args:
        path: The journal file (created with its directory on first write).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._done: dict[tuple[str, int, int], UploadRecord] = {}
        self.bad_lines = 0
        self._torn = False  # the file does not end with a newline (a torn last line)
        self._load()

    def _load(self) -> None:
        try:
            text = self.path.read_bytes()
        except FileNotFoundError:
            return
        self._torn = not text.endswith(b"\n") and bool(text)
        for number, line in enumerate(text.split(b"\n"), 1):
            if not line.strip():
                continue
            try:
                data: Any = json.loads(line)
                record = UploadRecord(**data)
            except (ValueError, TypeError) as exc:
                self.bad_lines += 1
                logger.warning("%s line %d unreadable, skipped: %s", self.path, number, exc)
                continue
            self._done[(record.name, record.size, record.mtime_ns)] = record

    def __len__(self) -> int:
        with self._lock:
            return len(self._done)

    def is_done(self, name: str, size: int, mtime_ns: int) -> bool:
        """Return whether this version of file ``name`` was confirmed uploaded."""
        with self._lock:
            return (name, size, mtime_ns) in self._done

    def records(self) -> list[UploadRecord]:
        """Return every record, in no particular order."""
        with self._lock:
            return list(self._done.values())

    def record(
        self,
        name: str,
        *,
        size: int,
        mtime_ns: int,
        sent_bytes: int,
        processed: bool,
        target: str,
    ) -> UploadRecord:
        """Append a confirmed upload and fsync it.

        Raises:
            OSError: If the line could not be written and synced (the record is still kept
                in memory, so this run does not send the file again).
        """
        rec = UploadRecord(name, size, mtime_ns, sent_bytes, processed, target, time.time())
        line = json.dumps(asdict(rec), ensure_ascii=False) + "\n"
        with self._lock:
            self._done[(name, size, mtime_ns)] = rec
            self.path.parent.mkdir(parents=True, exist_ok=True)
            data = (b"\n" if self._torn else b"") + line.encode("utf-8")
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            start = os.fstat(fd).st_size
            try:
                if os.write(fd, data) != len(data):
                    raise OSError(f"short write to {self.path}")
                os.fsync(fd)
                self._torn = False
            except OSError:
                try:  # leave no half line behind for the next record to be glued to
                    os.ftruncate(fd, start)
                except OSError:
                    self._torn = True
                raise
            finally:
                os.close(fd)
        return rec
