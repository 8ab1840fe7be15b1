"""`simpletasks schedule | status | purge`: working with queues."""

from __future__ import annotations

from typing import Any

import click

from simpletasks.cli._common import env_name
from simpletasks.errors import SimpleTasksError


@click.command()
@click.option("--queue", "queue_url", required=True, show_envvar=True, envvar=env_name("QUEUE"))
@click.option(
    "--bucket",
    "bucket_url",
    show_envvar=True,
    envvar=env_name("BUCKET"),
    help="Bucket for the example's input files (with --example).",
)
@click.option(
    "--example",
    type=click.Choice(["noop"]),
    help="Write the NO_OP example's inputs and schedule its 9 tasks.",
)
@click.option("--threads", default=4, show_default=True, type=click.IntRange(min=1))
@click.argument("messages_file", required=False, type=click.File("r"))
def schedule(
    queue_url: str, bucket_url: str | None, example: str | None, threads: int, messages_file: Any
) -> None:
    """Send tasks: the --example job, or one JSON message per line of MESSAGES_FILE ('-' = stdin).

    Every message is validated before any is sent.
    """
    from simpletasks.queues import open_queue
    from simpletasks.scheduler import schedule as send_all

    if bool(example) == bool(messages_file):
        raise click.UsageError("give either --example or MESSAGES_FILE")
    try:
        if example:
            if not bucket_url:
                raise click.UsageError("--example needs --bucket")
            from simpletasks.buckets import open_bucket
            from simpletasks.tasks.noop import make_example_job

            tasks: list[Any] = make_example_job(open_bucket(bucket_url))
        else:
            tasks = [line for line in messages_file.read().splitlines() if line.strip()]
        sent = send_all(open_queue(queue_url), tasks, threads=threads, progress=True)
    except SimpleTasksError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"sent {sent} task(s) to {queue_url}")


@click.command()
@click.argument("queue_urls", nargs=-1, required=True)
def status(queue_urls: tuple[str, ...]) -> None:
    """Print visible and in-flight counts of each queue."""
    from simpletasks.queues import open_queue

    for url in queue_urls:
        try:
            counts = open_queue(url).counts()
        except SimpleTasksError as exc:
            raise click.ClickException(f"{url}: {exc}") from exc
        click.echo(f"{url}\tvisible={_n(counts.visible)}\tin_flight={_n(counts.in_flight)}")


@click.command()
@click.argument("queue_url")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def purge(queue_url: str, yes: bool) -> None:
    """Delete every message in a queue."""
    from simpletasks.queues import open_queue

    if not yes:
        click.confirm(f"Delete every message in {queue_url}?", abort=True)
    try:
        open_queue(queue_url).purge()
    except SimpleTasksError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"purged {queue_url}")


def _n(value: int | None) -> str:
    return "?" if value is None else str(value)
