"""The upload journal: confirmed uploads survive a restart; torn lines and a full disk."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest

from simpletasks.tasks.edge.journal import UploadJournal


def rec(journal: UploadJournal, name: str, size: int = 10, mtime_ns: int = 1) -> None:
    journal.record(
        name, size=size, mtime_ns=mtime_ns, sent_bytes=size, processed=False, target=name
    )


def test_records_survive_restart_and_changed_file_is_not_done(tmp_path: Path) -> None:
    path = tmp_path / "state" / "uploads.jsonl"
    journal = UploadJournal(path)
    rec(journal, "a.png")
    rec(journal, "b.png", size=20)
    again = UploadJournal(path)
    assert len(again) == 2
    assert again.is_done("a.png", 10, 1)
    assert not again.is_done("b.png", 21, 1)  # the file changed since: send it again
    assert not again.is_done("c.png", 10, 1)


def test_torn_and_garbage_lines_are_skipped_and_next_record_stays_readable(
    tmp_path: Path,
) -> None:
    path = tmp_path / "uploads.jsonl"
    journal = UploadJournal(path)
    rec(journal, "a.png")
    with open(path, "ab") as f:
        f.write(b'not json\n{"name": "x", "size"')  # garbage, then a torn last line
    again = UploadJournal(path)
    assert again.bad_lines == 2 and len(again) == 1
    rec(again, "b.png")  # must not be glued onto the torn line
    third = UploadJournal(path)
    assert third.is_done("b.png", 10, 1) and third.is_done("a.png", 10, 1)


def test_full_disk_raises_keeps_memory_record_and_leaves_no_half_line(tmp_path: Path) -> None:
    mnt = tmp_path / "small"
    mnt.mkdir()
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
            check=True,
            capture_output=True,
        )
    except (subprocess.CalledProcessError, FileNotFoundError):
        pytest.skip("cannot mount a tmpfs here (not root)")
    try:
        filler = mnt / "filler"
        with open(filler, "wb") as f:
            try:
                f.write(b"\0" * 200_000)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
        journal = UploadJournal(mnt / "uploads.jsonl")
        with pytest.raises(OSError):
            rec(journal, "a.png")
        assert journal.is_done("a.png", 10, 1)  # this run will not send it again
        os.unlink(filler)
        rec(journal, "b.png")
        again = UploadJournal(mnt / "uploads.jsonl")
        assert again.bad_lines == 0
        assert again.is_done("b.png", 10, 1)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
