"""Cache under pressure: processes share one size-bounded cache directory.

Each of ``--processes`` processes opens its own ``FileSystemCache(max_bytes=...)`` on the
same root and a ``BucketCacheDatasource`` over one file bucket, and for ``--seconds`` reads
random keys in datasource sessions (checking every file against the SHA-256 in its first
line, twice, with a pause between while others evict), forces downloads over cached
entries, and writes new versions of keys (see ``tests/cache_stress.py``). The bound is a
fraction of the data, so commits keep evicting. Runs are made for several bounds.

Prints one JSON document: per bound, reads, writes, evictions, checksum mismatches, pinned
files that vanished, errors, and what was left in the cache.

Usage::

    python benchmarks/cache_pressure.py                 # 3 bounds x 20 s, 8 processes
    python benchmarks/cache_pressure.py --quick         # 3 bounds x 3 s
    python benchmarks/cache_pressure.py --processes 16 --seconds 60 --output cache.json
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

from _common import emit, machine_info, setup_logging, versions

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from cache_stress import run

logger = logging.getLogger("benchmarks.cache_pressure")

KiB = 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--keys", type=int, default=120, help="distinct keys (~24 KiB each)")
    parser.add_argument("--seconds", type=float, default=20.0, help="per bound")
    parser.add_argument("--bounds", default="64,256,1024", help="max_bytes values to run, in KiB")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="3 s per bound")
    parser.add_argument("--output", help="also write the JSON here")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    setup_logging(args.verbose)
    seconds = 3.0 if args.quick else args.seconds
    runs = []
    started = time.monotonic()
    for bound in (int(b) * KiB for b in args.bounds.split(",")):
        logger.info("max_bytes=%d: %d processes for %.0f s", bound, args.processes, seconds)
        with tempfile.TemporaryDirectory() as tmp:
            runs.append(
                run(
                    Path(tmp),
                    processes=args.processes,
                    keys=args.keys,
                    max_bytes=bound,
                    seconds=seconds,
                    seed=args.seed,
                )
            )
    emit(
        {
            "benchmark": "cache_pressure",
            "machine": machine_info(),
            "versions": versions("simpletasks"),
            "parameters": {**vars(args), "seconds_per_bound": seconds},
            "seconds": round(time.monotonic() - started, 1),
            "mismatches_total": sum(r["mismatches"] for r in runs),
            "vanished_total": sum(r["vanished"] for r in runs),
            "errors_total": sum(r["errors"] for r in runs),
            "runs": runs,
        },
        args.output,
    )


if __name__ == "__main__":
    main()
