"""The daemon's cache directory runs out of space, then space is freed.

The cache lives on a small tmpfs (``mount -t tmpfs -o size=...``, needs root) that a filler
file fills up, leaving ``leave_bytes``: with none left, downloads of the inputs fail in
``prepare``; with room for the inputs only, the copies of the outputs fail in ``execute``.
Where tmpfs cannot be mounted, :class:`SimulatedDisk` makes the same two writes fail with
``OSError(ENOSPC)`` after writing half their data. After ``free_after_errors`` error
reports, a hook deletes the filler; the task must then complete on a retry. The run checks
the reports, the outputs, and that every cache entry is whole and no temp file is left.

Used by ``tests/reliability/test_disk_full.py`` and ``benchmarks/disk_full.py``.
"""

from __future__ import annotations

import errno
import io
import json
import os
import random
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from simpletasks import cache as cache_module
from simpletasks.buckets import open_bucket
from simpletasks.buckets.memory import MemoryBucket
from simpletasks.cache import FileSystemCache
from simpletasks.daemon import DaemonService
from simpletasks.datasource import BucketCacheDatasource
from simpletasks.message import BasicInfo, TaskMessage
from simpletasks.middleware import Middleware
from simpletasks.queues import Message, QueueService, open_queue
from simpletasks.registry import TaskRegistry
from simpletasks.settings import DaemonSettings
from simpletasks.tasks.noop import NoOpTask

ENOSPC_TEXT = os.strerror(errno.ENOSPC)  # "No space left on device"


class MountUnavailable(RuntimeError):
    """tmpfs cannot be mounted here (not root, or no CAP_SYS_ADMIN)."""


@contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """Mount a tmpfs of ``size`` (e.g. ``"2m"``) at ``path`` for the block; unmount after."""
    path.mkdir(parents=True, exist_ok=True)
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mount.returncode != 0:
        raise MountUnavailable(f"cannot mount tmpfs at {path}: {mount.stderr.strip()}")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], check=False)


class TmpfsDisk:
    """Fills a file system with a filler file, leaving ``leave_bytes``; ``free`` deletes it."""

    def __init__(self, mount: Path, leave_bytes: int) -> None:
        self.filler = mount / "filler"
        self.leave_bytes = leave_bytes

    def fill(self) -> None:
        st = os.statvfs(self.filler.parent)
        size = st.f_bavail * st.f_frsize - self.leave_bytes
        with open(self.filler, "wb") as f, suppress(OSError):  # ENOSPC: it is full
            for _ in range(max(0, size) // 65536):
                f.write(b"\0" * 65536)
            f.write(b"\0" * (max(0, size) % 65536))

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)


class SimulatedDisk:
    """Makes the cache's two write paths fail with ENOSPC after half their data, while full.

    Patches :meth:`MemoryBucket.download` (downloads into the cache, in ``prepare``) and the
    ``shutil.copyfile`` the cache uses (copies into it, in ``execute``); ``leave_bytes`` > 0
    lets downloads through, so only the copies fail.
    """

    def __init__(self, leave_bytes: int) -> None:
        self.leave_bytes = leave_bytes
        self.full = False
        self.failed_writes = 0
        self._patches: list[tuple[Any, str, Any]] = []

    def _fail(self, path: Path, data: bytes) -> None:
        Path(path).write_bytes(data[: len(data) // 2])  # a partial write, then no space
        self.failed_writes += 1
        raise OSError(errno.ENOSPC, ENOSPC_TEXT, str(path))

    def fill(self) -> None:
        self.full = True
        download, copyfile = MemoryBucket.download, cache_module.shutil.copyfile
        disk = self

        def full_download(bucket: MemoryBucket, key: str, path: Path) -> None:
            if disk.full and not disk.leave_bytes:
                disk._fail(path, bucket._get(key))
            download(bucket, key, path)

        def full_copyfile(src: Any, dst: Any, **kwargs: Any) -> Any:
            if disk.full:
                disk._fail(Path(dst), Path(src).read_bytes())
            return copyfile(src, dst, **kwargs)

        self._patches = [(MemoryBucket, "download", download), (shutil, "copyfile", copyfile)]
        MemoryBucket.download = full_download  # type: ignore[method-assign]
        shutil.copyfile = full_copyfile  # type: ignore[assignment]

    def free(self) -> None:
        self.full = False

    def restore(self) -> None:
        """Undo the patches."""
        for owner, name, original in self._patches:
            setattr(owner, name, original)
        self._patches = []


class FreeAfter(Middleware):
    """Frees the disk once ``n`` error reports were written."""

    def __init__(self, n: int, free: Callable[[], None]) -> None:
        self.n, self.free, self.seen = n, free, 0
        self.freed_at: float | None = None

    def on_retried(self, task: object, message: Message, report: object) -> None:
        self.on_error()

    def on_dead_lettered(self, task: object, message: Message, report: object) -> None:
        self.on_error()

    def on_error(self) -> None:
        self.seen += 1
        if self.seen == self.n:
            self.free()
            self.freed_at = time.monotonic()


def _drain(queue: QueueService) -> list[dict[str, Any]]:
    out = []
    while batch := queue.receive(10):
        out += [json.loads(m.body) for m in batch]
        queue.ack_many(batch)
    return out


def run_disk_full(
    cache_root: Path,
    disk: TmpfsDisk | SimulatedDisk,
    *,
    tasks: int = 3,
    input_bytes: int = 256 * 1024,
    free_after_errors: int = 2,
    max_attempts: int = 6,
    cache_max_bytes: int | None = None,
    timeout: float = 60.0,
) -> dict[str, Any]:
    """Run NO_OP tasks from memory queues with the cache on ``disk``; return what happened.

    Task ``i`` copies inputs ``i`` and ``i+1``, so the cache ends up holding ``2 * (tasks +
    1)`` objects of ``input_bytes`` unless ``cache_max_bytes`` bounds it.
    """
    run = uuid.uuid4().hex[:8]
    rng = random.Random(0)
    bucket = open_bucket(f"mem://diskfull-{run}")
    inputs = {j: rng.randbytes(input_bytes) for j in range(1, tasks + 2)}
    for j, data in inputs.items():
        bucket.upload_fileobj(io.BytesIO(data), f"d/0_input/{j}.dat")
    # The cache's own directories exist before the disk fills.
    cache = FileSystemCache(cache_root, max_bytes=cache_max_bytes)
    queues = {k: open_queue(f"mem://diskfull-{k}-{run}") for k in ("tasks", "errors", "done")}
    queues["tasks"].send_batch(
        [
            TaskMessage(
                BasicInfo(i, "NO_OP", "d", (f"0_input/{i}.dat", f"0_input/{i + 1}.dat"))
            ).to_json()
            for i in range(1, tasks + 1)
        ]
    )
    registry = TaskRegistry()
    registry.register(NoOpTask)
    hook = FreeAfter(free_after_errors, disk.free)
    daemon = DaemonService(
        queue=queues["tasks"],
        registry=registry,
        datasource=BucketCacheDatasource(bucket, cache),
        error_queue=queues["errors"],
        done_queue=queues["done"],
        settings=DaemonSettings(
            concurrency=1,  # one task at a time: the free space is not shared
            wait_seconds=0.05,
            poll_frequency_seconds=0.05,
            retry_delay_seconds=0.1,
            max_attempts=max_attempts,
            burst=True,
        ),
        middleware=[hook],
    )
    disk.fill()
    started = time.monotonic()
    thread = threading.Thread(target=daemon.run, name="diskfull-daemon", daemon=True)
    thread.start()
    thread.join(timeout)
    timed_out = thread.is_alive()
    if timed_out:
        daemon.stop()
        daemon.stop()
        thread.join(10)
    disk.free()
    errors, done = _drain(queues["errors"]), _drain(queues["done"])
    outputs_ok = 0
    for j, data in inputs.items():
        buf = io.BytesIO()
        with suppress(KeyError):
            bucket.download_fileobj(f"d/0_output/{j}.dat", buf)
        outputs_ok += buf.getvalue() == data
    expected = {f"d/0_input/{j}.dat": d for j, d in inputs.items()}
    expected |= {f"d/0_output/{j}.dat": d for j, d in inputs.items()}
    entries = cache.keys()
    corrupt = [k for k in entries if cache.path(k).read_bytes() != expected.get(k)]
    counts = queues["tasks"].counts()
    return {
        "tasks": tasks,
        "input_bytes": input_bytes,
        "cache_max_bytes": cache_max_bytes,
        "completed": len({r["task_id"] for r in done}),
        "error_reports": [
            {k: r[k] for k in ("task_id", "attempt", "final", "phase", "error_type")}
            | {"error_message": r["error_message"][:200]}
            for r in errors
        ],
        "freed_after_seconds": None if hook.freed_at is None else round(hook.freed_at - started, 2),
        "outputs_correct": outputs_ok,
        "outputs_expected": len(inputs),
        "cache_entries": len(entries),
        "cache_entries_corrupt": corrupt,
        "temp_files_left": sum(len(f) for _, _, f in os.walk(cache_root / ".tmp")),
        "left_on_queue": {"visible": counts.visible, "in_flight": counts.in_flight},
        "daemon": {k: getattr(daemon.stats, k) for k in ("received", "succeeded", "retried")},
        "seconds": round(time.monotonic() - started, 2),
        "timed_out": timed_out,
    }
