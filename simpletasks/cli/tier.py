"""`simpletasks tier report | demo | score | schedule`: the HASTE tiering worker's commands.

The worker itself runs under `simpletasks run` (task type HASTE_TIER, configuration file named
by SIMPLETASKS_TIER_CONFIG). These commands look at its results (report), try it on local
files (score), fill a queue from a bucket listing (schedule) and run it all on one machine
(demo). numpy, matplotlib and SQLAlchemy are imported only when a command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from simpletasks.cli._common import (
    BUCKET_SCHEMES,
    QUEUE_SCHEMES,
    Group,
    echo,
    env_name,
    log_level_option,
    refuse_mem,
    require,
)


@click.group(cls=Group)
def tier() -> None:
    """HASTE tiering: score images' focus (PLLS) and file them into storage tiers."""


@tier.command()
@log_level_option(None)
@click.option(
    "--db",
    "db_url",
    envvar=env_name("TIER_DB"),
    show_envvar=True,
    help="Features database (SQLAlchemy URL); default: the config's.",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    envvar=env_name("TIER_CONFIG"),
    show_envvar=True,
    help="Tiering config (YAML/TOML): database, policy, score.",
)
@click.option("--table", default=None, help="Table name [default: the config's, or haste_images].")
@click.option("--schema", default=None, help="PostgreSQL schema of the table.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), help="Write the table as CSV.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write it as JSON.")
@click.option(
    "--figure",
    type=click.Path(dir_okay=False),
    help="Write a PNG: histograms of the feature and the score, tier boundaries.",
)
@click.option("--feature", default=None, help="Feature to histogram [default: the score's].")
def report(
    db_url: str | None,
    config_path: str | None,
    table: str | None,
    schema: str | None,
    csv_path: str | None,
    json_path: str | None,
    figure: str | None,
    feature: str | None,
) -> None:
    """Print images and MB per tier (the paper's Table 2); export it; draw Figure 3."""
    from simpletasks.tasks.tiering.config import load_config
    from simpletasks.tasks.tiering.db import FeaturesDB
    from simpletasks.tasks.tiering.policy import DEFAULT_POLICY, TierPolicy
    from simpletasks.tasks.tiering.report import (
        format_table,
        plot_histograms,
        tier_table,
        write_csv,
        write_json,
    )

    config = load_config(config_path) if config_path else None
    url = db_url or (config.database if config else None)
    if not url:
        raise click.UsageError("give --db URL or --config FILE")
    policy = config.policy if config else TierPolicy(DEFAULT_POLICY)
    db = FeaturesDB(
        url,
        table=table or (config.db_table if config else "haste_images"),
        schema=schema or (config.db_schema if config else None),
    )
    rows = db.rows()
    result = tier_table(rows, policy)
    echo(format_table(result))
    if csv_path:
        write_csv(result, Path(csv_path))
        echo(f"wrote {csv_path}")
    if json_path:
        write_json(result, Path(json_path))
        echo(f"wrote {json_path}")
    if figure:
        logistic = config is None or config.score_function is None
        plot_histograms(
            rows,
            Path(figure),
            policy=policy,
            feature=feature or (config.score_feature if config else "plls"),
            k=(config.k if config else 4.5) if logistic else None,
            x0=(config.x0 if config else -1.4) if logistic else None,
        )
        echo(f"wrote {figure}")


@tier.command()
@log_level_option(None)
@click.option(
    "--out",
    "out_dir",
    default="tier-demo",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where tiers, database and figure go.",
)
@click.option("--images", default=40, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--size",
    default=256,
    show_default=True,
    type=click.IntRange(min=32),
    help="Image side in pixels.",
)
@click.option(
    "--max-defocus",
    default=2.6,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Gaussian blur (std, pixels) of the last image of the series.",
)
@click.option("--concurrency", default=2, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--cloud",
    type=click.Choice(["file", "aws"]),
    default="file",
    show_default=True,
    help="file:// queues and source bucket, or SQS + S3 on a moto server.",
)
def demo(
    out_dir: str, images: int, size: int, max_defocus: float, concurrency: int, cloud: str
) -> None:
    """Generate a defocus series, tier it with real workers, print the table, draw the figure."""
    from simpletasks.tasks.tiering.local import run_demo

    ok = run_demo(
        Path(out_dir),
        n_images=images,
        size=size,
        max_defocus=max_defocus,
        concurrency=concurrency,
        cloud=cloud,
        echo=echo,
    )
    if not ok:
        raise click.ClickException("the demo did not complete cleanly (see above)")


@tier.command()
@log_level_option(None)
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help="Tiering config for the score and policy [default: PLLS, k 4.5, x0 -1.4].",
)
def score(files: tuple[str, ...], config_path: str | None) -> None:
    """Print the features, score and tier of local image files (nothing is stored)."""
    from simpletasks.tasks.tiering.config import MIN_SIDE, load_config
    from simpletasks.tasks.tiering.features import image_features, load_extractor
    from simpletasks.tasks.tiering.images import ImageRejected, read_image, scorable
    from simpletasks.tasks.tiering.policy import DEFAULT_POLICY, TierPolicy
    from simpletasks.tasks.tiering.score import checked_score, load_score

    config = load_config(config_path) if config_path else None
    policy = config.policy if config else TierPolicy(DEFAULT_POLICY)
    extractor = load_extractor(config.features if config else None)
    kwargs: dict[str, Any] = (
        {"feature": config.score_feature, "k": config.k, "x0": config.x0} if config else {}
    )
    fn = load_score(config.score_function if config else None, **kwargs)
    min_side = config.min_side if config else MIN_SIDE
    failed = 0
    for name in files:
        try:  # the worker's own checks: what it would reject is rejected here too
            loaded = read_image(name)
            features = image_features(extractor, scorable(loaded, min_side), loaded.pages)
        except ImageRejected as exc:
            echo(f"{name}: rejected: {exc}")
            failed += 1
            continue
        s = checked_score(fn, features)
        shown = " ".join(f"{k}={v:.4g}" for k, v in features.items())
        echo(f"{name}: {shown} score={s:.4f} tier={policy.tier_for(s)}")
    if failed:
        raise click.ClickException(f"{failed} of {len(files)} file(s) rejected")


@tier.command(name="schedule")
@log_level_option(None)
@click.option(
    "--queue",
    "queue_url",
    envvar=env_name("QUEUE"),
    show_envvar=True,
    help=f"Task queue: {QUEUE_SCHEMES}. Required.",
)
@click.option(
    "--bucket",
    "bucket_url",
    envvar=env_name("BUCKET"),
    show_envvar=True,
    help=f"Source bucket the workers read: {BUCKET_SCHEMES}. Required.",
)
@click.option("--prefix", default="", help="Schedule the objects under this key prefix.")
@click.option("--per-task", default=1, show_default=True, type=click.IntRange(min=1))
def schedule_cmd(queue_url: str | None, bucket_url: str | None, prefix: str, per_task: int) -> None:
    """Send one HASTE_TIER task per object under --prefix in --bucket (or --per-task)."""
    from simpletasks.buckets import open_bucket
    from simpletasks.queues import open_queue
    from simpletasks.scheduler import schedule as send
    from simpletasks.tasks.tiering.task import make_tier_job

    require(queue=queue_url, bucket=bucket_url)
    refuse_mem(queue_url, "--queue")
    refuse_mem(bucket_url, "--bucket")
    assert queue_url and bucket_url
    keys = list(open_bucket(bucket_url).list(prefix))
    n = send(open_queue(queue_url), make_tier_job(keys, per_task=per_task))
    echo(f"scheduled {n} HASTE_TIER task(s) for {len(keys)} object(s) under {prefix or '/'}")


__all__ = ["tier"]
