"""Running the tiering worker on one machine: the demo, and a helper tests and benchmarks share.

:func:`run_workers` runs a real :class:`~simpletasks.daemon.DaemonService` with HASTE_TIER
over any queue and source bucket until the queue is drained. :func:`run_demo` generates a
defocus series of synthetic cell images, uploads it to a source bucket (``file://`` in a
folder, or S3 on a moto server it starts), schedules one task per image, runs the workers,
prints the tier table and writes the histogram figure.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simpletasks.buckets import BucketService, open_bucket
from simpletasks.cache import FileSystemCache
from simpletasks.daemon import DaemonService
from simpletasks.datasource import BucketCacheDatasource
from simpletasks.local import drain
from simpletasks.queues import QueueService, open_queue
from simpletasks.registry import TaskRegistry
from simpletasks.scheduler import schedule
from simpletasks.settings import DaemonSettings
from simpletasks.tasks.tiering.config import Tier, TierConfig
from simpletasks.tasks.tiering.db import FeaturesDB
from simpletasks.tasks.tiering.policy import DEFAULT_POLICY, TierPolicy
from simpletasks.tasks.tiering.report import format_table, plot_histograms, tier_table
from simpletasks.tasks.tiering.task import HasteTierTask, TierStats, make_tier_job
from simpletasks.tasks.tiering.tiers import BucketOpener

logger = logging.getLogger(__name__)


@dataclass
class WorkerRun:
    """What :func:`run_workers` did."""

    stats: Any  # the daemon's RunStats
    seconds: float
    done: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    steps: TierStats | None = None


def run_workers(
    *,
    queue: QueueService,
    source: BucketService,
    config: TierConfig,
    cache_dir: Path,
    concurrency: int = 1,
    error_queue: QueueService | None = None,
    done_queue: QueueService | None = None,
    opener: BucketOpener | None = None,
    steps: TierStats | None = None,
    settings: DaemonSettings | None = None,
    middleware: Sequence[Any] = (),
) -> WorkerRun:
    """Run HASTE_TIER workers over ``queue`` until it is drained; return what happened.

    Error and done reports are drained from their queues into the result.
    """
    registry = TaskRegistry()
    registry.register(HasteTierTask.configured(config, opener=opener, stats=steps))
    daemon = DaemonService(
        queue=queue,
        registry=registry,
        datasource=BucketCacheDatasource(source, FileSystemCache(cache_dir)),
        error_queue=error_queue,
        done_queue=done_queue,
        middleware=middleware,
        settings=settings
        or DaemonSettings(
            concurrency=concurrency,
            wait_seconds=0.2,
            poll_frequency_seconds=0.2,
            burst=True,
            retry_delay_seconds=0.1,
            max_attempts=3,
        ),
    )
    started = time.monotonic()
    stats = daemon.run()
    run = WorkerRun(stats=stats, seconds=time.monotonic() - started, steps=steps)
    if done_queue is not None:
        run.done = [json.loads(b) for b in drain(done_queue)]
    if error_queue is not None:
        run.errors = [json.loads(b) for b in drain(error_queue)]
    return run


def _create(url: str) -> BucketService:
    return open_bucket(url, create=True)


def demo_config(root: Path, *, database: str | None = None) -> TierConfig:
    """Four ``file://`` tiers A-D under ``root`` and a SQLite database there."""
    tiers = {name: Tier(name, f"file://{root}/tier-{name}") for name in "ABCD"}
    return TierConfig(
        tiers=tiers,
        policy=TierPolicy(DEFAULT_POLICY),
        database=database or f"sqlite:///{root}/features.db",
    )


def upload_series(
    bucket: BucketService, n: int, *, size: int, max_defocus: float, prefix: str = "series"
) -> list[str]:
    """Write ``n`` synthetic 16-bit PNGs, defocus 0 to ``max_defocus``; return their keys."""
    import io

    from simpletasks.tasks.tiering.synthetic import defocus_series, encode_image

    keys = []
    for i, (sigma, pixels) in enumerate(
        defocus_series(n, max_defocus=max_defocus, shape=(size, size))
    ):
        key = f"{prefix}/img_{i:04d}_defocus_{sigma:.2f}.png"
        bucket.upload_fileobj(io.BytesIO(encode_image(pixels, "png")), key)
        keys.append(key)
    return keys


def run_demo(
    out_dir: Path,
    *,
    n_images: int = 40,
    size: int = 256,
    max_defocus: float = 2.6,
    concurrency: int = 2,
    cloud: str = "file",
    echo: Callable[[str], object] = print,
) -> bool:
    """Generate, schedule, tier and report a defocus series; return whether all went well.

    Args:
        out_dir: Where the tiers, the database, the table and the figure go.
        n_images: Images in the series.
        size: Their side in pixels.
        max_defocus: Blur of the last image (Gaussian std, pixels).
        concurrency: Worker threads.
        cloud: ``"file"`` (file:// queue and buckets) or ``"aws"`` (SQS, the source bucket
            and four tier buckets with storage classes on a moto server started for the run;
            placement is a server-side copy).
        echo: Where progress lines go.
    """
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    config = demo_config(out_dir)
    opener: BucketOpener | None = None
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tier-demo-")))
        if cloud == "aws":
            from simpletasks.emulators.moto import MotoServer

            moto = stack.enter_context(MotoServer())
            echo(f"moto server (SQS + S3) on {moto.endpoint_url}")
            sqs, s3 = moto.client("sqs"), moto.client("s3")
            queue, errors, done = (
                open_queue(f"sqs://tier-demo-{n}", client=sqs, create=True)
                for n in ("tasks", "errors", "done")
            )
            source = open_bucket("s3://tier-demo-ingest", client=s3, create=True)
            # S3 tiers with storage classes: placement is a server-side copy.
            classes = {"A": "STANDARD", "B": "STANDARD_IA", "C": "GLACIER_IR", "D": "GLACIER_IR"}
            tiers = {n: Tier(n, f"s3://tier-demo-{n.lower()}", c) for n, c in classes.items()}
            config = TierConfig(tiers=tiers, policy=config.policy, database=config.database)

            def opener(url: str) -> BucketService:
                return open_bucket(url, client=s3, create=True)

        else:
            queue, errors, done = (
                open_queue(f"file://{tmp}/{n}", create=True) for n in ("tasks", "errors", "done")
            )
            source = open_bucket(f"file://{out_dir}/ingest", create=True)
        for tier in config.tiers.values():
            (opener or _create)(tier.url)
        keys = upload_series(source, n_images, size=size, max_defocus=max_defocus)
        schedule(queue, make_tier_job(keys))
        echo(
            f"uploaded {len(keys)} images ({size}x{size}, defocus 0-{max_defocus}) to {source.url}"
        )
        echo(f"scheduled {len(keys)} HASTE_TIER tasks on {queue.url}")
        steps = TierStats()
        run = run_workers(
            queue=queue,
            source=source,
            config=config,
            cache_dir=tmp / "cache",
            concurrency=concurrency,
            error_queue=errors,
            done_queue=done,
            steps=steps,
            opener=opener,
        )
        echo(
            f"{run.stats.succeeded} tasks done in {run.seconds:.2f} s with {concurrency} "
            f"worker(s) ({len(keys) / run.seconds:.1f} images/s); {len(run.errors)} error(s)"
        )
        for err in run.errors:
            echo(f"  error: {err.get('error_message')}")
    rows = FeaturesDB(config.database, table=config.db_table).rows()
    table = tier_table(rows, config.policy)
    echo("")
    echo(format_table(table))
    figure = plot_histograms(rows, out_dir / "tiers.png", policy=config.policy)
    echo("")
    echo(f"features database: {config.database}")
    echo(f"figure: {figure}")
    tier_list = ", ".join(
        f"{t.name} {t.url}" + (f" ({t.storage_class})" if t.storage_class else "")
        for t in config.tiers.values()
    )
    echo(f"tiers: {tier_list}")
    return not run.errors and len(rows) == n_images


__all__ = ["WorkerRun", "demo_config", "run_demo", "run_workers", "upload_series"]
