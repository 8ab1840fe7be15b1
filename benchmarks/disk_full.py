"""Disk full: the daemon's cache directory runs out of space, then space is freed.

Runs NO_OP tasks (memory queues and bucket) with the cache on a 2 MiB tmpfs that a filler
file fills up (see ``tests/diskfull.py``); after a few error reports the filler is deleted.
Cases:

* ``prepare_no_space``: no space at all: downloading the inputs into the cache fails;
* ``execute_no_space``: room for one task's inputs only: copying the outputs fails;
* ``unbounded_cache_outgrows_disk``: the filler is freed, but 12 tasks need 3.2 MiB of cache
  on a 2 MiB disk and the cache has no ``max_bytes``;
* ``bounded_cache_on_small_disk``: the same with ``max_bytes`` = 1 MiB: eviction keeps it
  under the disk's size;

each also with ENOSPC simulated in-process (``simulated_*``), which needs no root. Prints
one JSON document: per case, the error reports (phase, type, message), completion, output
checks, whether any cache entry is corrupt and whether temp files were left behind.

Usage::

    python benchmarks/disk_full.py              # about 20 s; tmpfs cases need root
    python benchmarks/disk_full.py --output disk_full.json
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import emit, machine_info, setup_logging, versions

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from diskfull import MountUnavailable, SimulatedDisk, TmpfsDisk, run_disk_full, tmpfs

logger = logging.getLogger("benchmarks.disk_full")

KiB = 1024
CASES: dict[str, dict[str, Any]] = {
    "prepare_no_space": {"leave": 0, "tasks": 3, "input_bytes": 128 * KiB},
    "execute_no_space": {"leave": 640 * KiB, "tasks": 1, "input_bytes": 256 * KiB},
    "unbounded_cache_outgrows_disk": {
        "leave": 0, "tasks": 12, "input_bytes": 128 * KiB, "max_attempts": 3
    },
    "bounded_cache_on_small_disk": {
        "leave": 0, "tasks": 12, "input_bytes": 128 * KiB, "max_attempts": 3,
        "cache_max_bytes": 1024 * KiB,
    },
}  # fmt: skip


def run_case(kind: str, case: dict[str, Any]) -> dict[str, Any]:
    kwargs = {k: v for k, v in case.items() if k != "leave"}
    with tempfile.TemporaryDirectory() as tmp:
        if kind == "simulated":
            disk = SimulatedDisk(case["leave"])
            try:
                return run_disk_full(Path(tmp, "cache"), disk, **kwargs)
            finally:
                disk.restore()
        with tmpfs(Path(tmp, "fs"), "2m") as mount:
            return run_disk_full(mount / "cache", TmpfsDisk(mount, case["leave"]), **kwargs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", help="also write the JSON here")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    setup_logging(args.verbose)
    started = time.monotonic()
    results: dict[str, Any] = {}
    for kind in ("tmpfs", "simulated"):
        for name, case in CASES.items():
            if kind == "simulated" and name.endswith(("outgrows_disk", "small_disk")):
                continue  # needs a real file system size
            logger.info("%s %s", kind, name)
            try:
                results[f"{kind}_{name}"] = run_case(kind, case)
            except MountUnavailable as exc:
                results[f"{kind}_{name}"] = f"skipped: {exc}"
    emit(
        {
            "benchmark": "disk_full",
            "machine": machine_info(),
            "versions": versions("simpletasks"),
            "seconds": round(time.monotonic() - started, 1),
            "cases": results,
        },
        args.output,
    )


if __name__ == "__main__":
    main()
