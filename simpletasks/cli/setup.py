"""`simpletasks create | upload`: make the queues and buckets a job needs, and upload inputs."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import click

from simpletasks.cli._common import BUCKET_SCHEMES, echo, log_level_option, refuse_mem


@click.command()
@log_level_option(None)
@click.argument("queue_urls", nargs=-1, metavar="[QUEUE_URL]...")
@click.option(
    "--bucket",
    "bucket_urls",
    multiple=True,
    metavar="URL",
    help=f"A bucket to create (repeatable): {BUCKET_SCHEMES}.",
)
def create(queue_urls: tuple[str, ...], bucket_urls: tuple[str, ...]) -> None:
    """Create queues and buckets that do not exist yet (existing ones are left as they are).

    QUEUE_URL: sqs://NAME, pubsub://PROJECT/SUBSCRIPTION (creates the topic too),
    amqp://USER:PASS@HOST/VHOST?queue=NAME or file:///ABS/DIR.

    Example: simpletasks create sqs://my-tasks sqs://my-errors --bucket s3://my-bucket
    """
    from simpletasks.buckets import open_bucket
    from simpletasks.queues import open_queue

    if not queue_urls and not bucket_urls:
        raise click.UsageError("name at least one queue URL or --bucket URL")
    for url in queue_urls:
        refuse_mem(url, "QUEUE_URL")
    for url in bucket_urls:
        refuse_mem(url, "--bucket")
    for url in queue_urls:
        queue = open_queue(url, create=True)
        echo(f"queue ready: {queue.url}")
        queue.close()
    for url in bucket_urls:
        bucket = open_bucket(url, create=True)
        echo(f"bucket ready: {bucket.url}")


@click.command()
@log_level_option(None)
@click.argument("paths", nargs=-1, metavar="PATH...", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--bucket",
    "bucket_url",
    metavar="URL",
    help=f"The bucket to upload to: {BUCKET_SCHEMES}.",
)
@click.option(
    "--prefix",
    default="",
    help="Key prefix inside the bucket, e.g. plates/p1 (default: none).",
)
def upload(paths: tuple[Path, ...], bucket_url: str | None, prefix: str) -> None:
    """Upload files, or directories with everything in them, to a bucket.

    A file lands at PREFIX/NAME, a directory's files at PREFIX/DIRNAME/RELATIVE/PATH.
    Existing objects are replaced.

    Example: simpletasks upload raw --bucket s3://my-bucket/data --prefix plates/p1
    """
    from simpletasks.buckets import open_bucket
    from simpletasks.keys import validate_key

    missing = [name for name, value in (("PATH", paths), ("--bucket", bucket_url)) if not value]
    if missing:
        raise click.UsageError(f"missing {', '.join(missing)}")
    assert bucket_url is not None
    refuse_mem(bucket_url, "--bucket")
    prefix = prefix.strip("/")
    if prefix:
        validate_key(prefix, what="--prefix")
    pairs: list[tuple[Path, str]] = []
    for path in paths:
        base = path.parent
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            relative = file.relative_to(base).as_posix() if path.is_dir() else file.name
            key = f"{prefix}/{relative}" if prefix else relative
            validate_key(key, what="key")
            pairs.append((file, key))
    bucket = open_bucket(bucket_url)

    def send(pair: tuple[Path, str]) -> str | None:
        try:
            bucket.upload(*pair)
        except Exception as exc:  # reported with the others below
            return f"{pair[0]}: {type(exc).__name__}: {exc}"
        return None

    with ThreadPoolExecutor(max_workers=8) as pool:
        failed = [error for error in pool.map(send, pairs) if error is not None]
    if failed:
        shown = "; ".join(failed[:5]) + (f"; and {len(failed) - 5} more" if len(failed) > 5 else "")
        raise click.ClickException(
            f"uploaded {len(pairs) - len(failed)} of {len(pairs)} file(s) to {bucket.url}; "
            f"{len(failed)} failed: {shown}. Each upload replaces its object whole: run the "
            "same command again to send the rest"
        )
    echo(f"uploaded {len(pairs)} file(s) to {bucket.url}")
