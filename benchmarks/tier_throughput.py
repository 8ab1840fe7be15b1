"""End-to-end images per second of HASTE_TIER through the daemon, and where the time goes.

For each stack and worker count, a fresh source bucket gets ``--images`` synthetic 16-bit PNG
cell images (``--size`` pixels square, defocus 0-3), one task per image is scheduled and the
real :class:`~simpletasks.daemon.DaemonService` runs HASTE_TIER until the queue is drained
(SQLite features database; four tiers). Stacks:

- ``file``: file:// queue, source bucket and tiers (the copy is an upload from the cache);
- ``aws``: SQS and S3 on a moto server (127.0.0.1), S3 tiers with storage classes, so the
  copy is a server-side ``CopyObject``.

The task's own clock splits each image's time into download (into the cache), decode,
features (PLLS + statistics, score, tier), copy (placement) and database (read + upsert);
"other" is the rest of the workers' time (queue, reports, leases). The comparison in the same
run is a bare in-process loop over the same PNG bytes (decode + features + score, no queue,
no storage, no database), timed right after each daemon run so both see the same load on a
shared machine: ``vs_bare_loop`` is the daemon's rate over that loop's.

    python benchmarks/tier_throughput.py [--images 40] [--size 1024] [--stacks file aws]
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import emit, machine_info, setup_logging, versions

from simpletasks.buckets import BucketService, open_bucket
from simpletasks.queues import open_queue
from simpletasks.scheduler import schedule
from simpletasks.settings import DaemonSettings
from simpletasks.tasks.tiering.config import Tier, TierConfig
from simpletasks.tasks.tiering.features import DefaultFeatures
from simpletasks.tasks.tiering.images import read_image, to_unit_float
from simpletasks.tasks.tiering.local import run_workers
from simpletasks.tasks.tiering.score import LogisticScore
from simpletasks.tasks.tiering.synthetic import cell_image, encode_image
from simpletasks.tasks.tiering.task import TierStats, make_tier_job

logger = logging.getLogger("benchmarks.tier_throughput")
STEPS = ("download", "decode", "features", "copy", "database")


def make_images(n: int, size: int) -> list[bytes]:
    logger.info("generating %d images of %dx%d", n, size, size)
    return [
        encode_image(cell_image((size, size), defocus=3.0 * i / max(1, n - 1), seed=i), "png")
        for i in range(n)
    ]


def bare_loop(images: list[bytes], tmp: Path) -> float:
    """Images/s of decode + features + score in one thread, no daemon or storage."""
    paths = []
    for i, data in enumerate(images):
        p = tmp / f"bare{i}.png"
        if not p.exists():
            p.write_bytes(data)
        paths.append(p)
    extractor, score = DefaultFeatures(), LogisticScore()
    started = time.perf_counter()
    for p in paths:
        score(extractor.extract(to_unit_float(read_image(p).pixels)))
    return len(paths) / (time.perf_counter() - started)


def one_run(stack: str, workers: int, images: list[bytes], tmp: Path, moto: Any) -> dict:
    root = tmp / f"{stack}-{workers}"
    root.mkdir()
    tag = f"{stack}{workers}-{int(time.time() * 1000) % 100000}"
    if stack == "aws":
        s3, sqs = moto.client("s3"), moto.client("sqs")
        source: BucketService = open_bucket(f"s3://src-{tag}", client=s3, create=True)
        tiers = {
            "A": Tier("A", f"s3://tier-a-{tag}", "STANDARD"),
            "B": Tier("B", f"s3://tier-b-{tag}", "STANDARD_IA"),
            "C": Tier("C", f"s3://tier-c-{tag}", "STANDARD_IA"),
            "D": Tier("D", f"s3://tier-d-{tag}", "GLACIER_IR"),
        }
        for t in tiers.values():
            open_bucket(t.url, client=s3, create=True)
        queue = open_queue(f"sqs://q-{tag}", client=sqs, create=True)
        errors = open_queue(f"sqs://e-{tag}", client=sqs, create=True)

        def opener(url: str) -> BucketService:
            return open_bucket(url, client=s3)
    else:
        source = open_bucket(f"file://{root}/src", create=True)
        tiers = {n: Tier(n, f"file://{root}/tier-{n}") for n in "ABCD"}
        for t in tiers.values():
            open_bucket(t.url, create=True)
        queue = open_queue(f"file://{root}/q", create=True)
        errors = open_queue(f"file://{root}/e", create=True)
        opener = None  # type: ignore[assignment]
    keys = []
    for i, data in enumerate(images):
        key = f"run/img{i:04d}.png"
        source.upload_fileobj(io.BytesIO(data), key)
        keys.append(key)
    schedule(queue, make_tier_job(keys))
    config = TierConfig(tiers=tiers, database=f"sqlite:///{root}/features.db")
    steps = TierStats()
    logger.info("%s stack, %d worker(s)", stack, workers)
    run = run_workers(
        queue=queue,
        source=source,
        config=config,
        cache_dir=root / "cache",
        error_queue=errors,
        opener=opener,
        steps=steps,
        settings=DaemonSettings(
            concurrency=workers, wait_seconds=0.5, poll_frequency_seconds=0.2, burst=True
        ),
    )
    bare = bare_loop(images, tmp)  # the comparison, right after, under the same load
    n = len(images)
    per_image = {s: round(steps.seconds.get(s, 0.0) / n * 1000, 2) for s in STEPS}
    busy_ms = run.seconds * workers / n * 1000
    per_image["other"] = round(busy_ms - sum(per_image.values()), 2)
    return {
        "stack": stack,
        "workers": workers,
        "images": n,
        "succeeded": run.stats.succeeded,
        "errors": len(run.errors),
        "seconds": round(run.seconds, 3),
        "images_per_s": round(n / run.seconds, 2),
        "bare_loop_images_per_s": round(bare, 2),
        "vs_bare_loop": round(n / run.seconds / bare, 2),
        "load_average_1": round(os.getloadavg()[0], 2),
        "ms_per_image_per_worker": per_image,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--stacks", nargs="+", default=["file", "aws"], choices=["file", "aws"])
    parser.add_argument("--output")
    args = parser.parse_args()
    setup_logging()
    images = make_images(args.images, args.size)
    mb = sum(len(b) for b in images) / 1e6
    runs = []
    with tempfile.TemporaryDirectory(prefix="tier-tp-") as tmp_name:
        tmp = Path(tmp_name)
        moto = None
        if "aws" in args.stacks:
            from simpletasks.emulators.moto import MotoServer

            moto = MotoServer().start()
        try:
            for stack in args.stacks:
                for w in args.workers:
                    runs.append(one_run(stack, w, images, tmp, moto))
        finally:
            if moto is not None:
                moto.stop()
    by = {(r["stack"], r["workers"]): r["images_per_s"] for r in runs}
    result = {
        "benchmark": "tier_throughput",
        "machine": machine_info(),
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "versions": versions("numpy", "pillow", "sqlalchemy", "moto", "simpletasks"),
        "images": args.images,
        "size": args.size,
        "mb_total": round(mb, 1),
        "runs": runs,
        "daemon_vs_bare_1_worker": {
            r["stack"]: r["vs_bare_loop"] for r in runs if r["workers"] == 1
        },
        "two_vs_one_worker": {
            s: round(by[(s, 2)] / by[(s, 1)], 2)
            for s in args.stacks
            if (s, 1) in by and (s, 2) in by
        },
    }
    emit(result, args.output)


if __name__ == "__main__":
    main()
