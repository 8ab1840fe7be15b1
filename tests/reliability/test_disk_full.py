"""The cache's disk fills up: the task fails with a clear report, is retried, nothing partial
is left in the cache, and it completes once space is freed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from diskfull import ENOSPC_TEXT, MountUnavailable, SimulatedDisk, TmpfsDisk, run_disk_full, tmpfs

from simpletasks.buckets.memory import MemoryBucket
from simpletasks.queues.memory import MemoryQueue

KiB = 1024
#: (phase that fails, bytes left free, tasks, input size): no room at all, or room for one
#: task's inputs only. Once the filler is gone, all inputs and outputs fit (1 MiB of 2).
CASES = [("prepare", 0, 3, 128 * KiB), ("execute", 640 * KiB, 1, 256 * KiB)]


@pytest.fixture(autouse=True)
def _fresh_memory() -> Iterator[None]:
    yield
    MemoryQueue.reset_all()
    MemoryBucket.reset_all()


def check(result: dict[str, Any], phase: str, tasks: int) -> None:
    assert not result["timed_out"], result
    reports = result["error_reports"]
    assert len(reports) >= 2, result  # the disk was freed after the second report
    for report in reports:
        assert report["phase"] == phase, report
        assert report["error_type"] == "OSError", report
        assert ENOSPC_TEXT in report["error_message"], report
        assert not report["final"], report  # retried, not dropped
    assert result["completed"] == tasks, result
    assert result["outputs_correct"] == tasks + 1, result
    assert result["cache_entries"] >= 2 and result["cache_entries_corrupt"] == [], result
    assert result["temp_files_left"] == 0, result
    assert result["left_on_queue"] == {"visible": 0, "in_flight": 0}


@pytest.mark.parametrize(("phase", "leave", "tasks", "size"), CASES)
def test_full_tmpfs_cache(tmp_path: Path, phase: str, leave: int, tasks: int, size: int) -> None:
    try:
        with tmpfs(tmp_path / "fs", "2m") as mount:
            result = run_disk_full(
                mount / "cache", TmpfsDisk(mount, leave), tasks=tasks, input_bytes=size
            )
    except MountUnavailable as exc:
        pytest.skip(str(exc))
    check(result, phase, tasks)


@pytest.mark.parametrize(("phase", "leave", "tasks", "size"), CASES)
def test_simulated_enospc(tmp_path: Path, phase: str, leave: int, tasks: int, size: int) -> None:
    disk = SimulatedDisk(leave)
    try:
        result = run_disk_full(tmp_path / "cache", disk, tasks=tasks, input_bytes=size)
    finally:
        disk.restore()
    assert disk.failed_writes >= 2
    check(result, phase, tasks)
