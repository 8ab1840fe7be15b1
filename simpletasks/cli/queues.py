"""`simpletasks schedule | purge`: put tasks on a queue, empty a queue.

Looking at queues without consuming them (`status`, `peek`, `requeue`) is in
:mod:`simpletasks.cli.inspect`.
"""

from __future__ import annotations

import json
from typing import Any

import click

from simpletasks.cli._common import (
    QUEUE_SCHEMES,
    MessageLine,
    echo,
    env_name,
    log_level_option,
    refuse_mem,
    require,
)
from simpletasks.errors import MessageError


@click.command()
@log_level_option(None)
@click.option(
    "--queue",
    "queue_url",
    show_envvar=True,
    envvar=env_name("QUEUE"),
    help=f"Task queue to send to: {QUEUE_SCHEMES}. Required.",
)
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
@click.option(
    "--task",
    "task_paths",
    multiple=True,
    metavar="MODULE:CLASS",
    help="Check every message against these task types (name and payload) before any is "
    "sent; repeatable. The current directory is on the import path.",
)
@click.option(
    "--threads", default=4, show_default=True, type=click.IntRange(min=1), help="Send threads."
)
@click.argument("messages_file", required=False, type=click.File("r"))
def schedule(
    queue_url: str | None,
    bucket_url: str | None,
    example: str | None,
    task_paths: tuple[str, ...],
    threads: int,
    messages_file: Any,
) -> None:
    """Send tasks: the --example job, or MESSAGES_FILE with one JSON message per line ('-' =
    stdin).

    Every message is checked before any is sent; an error names the line.
    """
    from simpletasks.queues import open_queue
    from simpletasks.scheduler import ScheduleError
    from simpletasks.scheduler import schedule as send_all

    require(queue=queue_url)
    assert queue_url is not None
    refuse_mem(queue_url, "--queue")
    refuse_mem(bucket_url, "--bucket")
    if bool(example) == bool(messages_file):
        raise click.UsageError("give either --example or MESSAGES_FILE")
    if example:
        if not bucket_url:
            raise click.UsageError("--example needs --bucket")
        from simpletasks.buckets import open_bucket
        from simpletasks.tasks.noop import make_example_job

        queue = open_queue(queue_url)
        tasks: list[Any] = make_example_job(open_bucket(bucket_url))
    else:
        tasks = read_messages(messages_file, task_paths)
        queue = open_queue(queue_url)
    try:
        sent = send_all(queue, tasks, threads=threads, progress=True)
    except ScheduleError as exc:
        if exc.sent == 0:  # the whole input can simply be sent again
            _, kind, text = exc.failures[0]
            raise click.ClickException(f"nothing was sent to {queue.url}: {kind}: {text}") from None
        saved = save_unsent(exc.unsent, getattr(messages_file, "name", None))
        raise click.ClickException(
            f"{exc}. The {len(exc.unsent)} message(s) not sent are in {saved}: send them "
            f"with `simpletasks schedule --queue {queue.url} {saved}` (the others went out "
            "once; sending the whole file again would send them twice)"
        ) from None
    echo(f"sent {sent} task(s) to {queue.url}")


def save_unsent(bodies: list[str], source: str | None) -> str:
    """Write ``bodies`` (one per line) next to the messages file, or in the current folder
    for stdin and --example; return the path. An existing file is never overwritten."""
    import os
    import time
    from pathlib import Path

    if source and source not in ("-", "<stdin>") and Path(source).parent.is_dir():
        base = f"{source}.unsent"
    else:
        base = f"simpletasks-unsent-{time.strftime('%Y%m%d-%H%M%S')}.jsonl"
    path, n = base, 1
    while True:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            break
        except FileExistsError:
            n += 1
            path = f"{base}.{n}"
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write("".join(f"{body}\n" for body in bodies))
    return path


def read_messages(stream: Any, task_paths: tuple[str, ...] = ()) -> list[str]:
    """Read one JSON task message per non-empty line; check each (and against task types).

    Raises:
        MessageLine: Naming the first bad line; a hint when the file is pretty-printed JSON.
    """
    from simpletasks.message import TaskMessage

    source = getattr(stream, "name", "<input>")
    source = "<stdin>" if source in ("-", "<stdin>") else source
    text = stream.read()
    registry = None
    if task_paths:
        from simpletasks.cli.run import build_registry

        registry = build_registry(task_paths)
    bodies = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            if registry is not None:
                registry.parse(line)
            else:
                TaskMessage.from_json(line)
        except MessageError as exc:
            raise MessageLine(source, number, f"{exc}{_pretty_hint(text)}") from None
        bodies.append(line)
    return bodies


def _pretty_hint(text: str) -> str:
    """A hint when ``text`` is JSON over several lines (pretty-printed, or a list)."""
    try:
        whole = json.loads(text)
    except ValueError:
        return ""
    if isinstance(whole, list):
        return (
            "; this file is one JSON list, but one message per line is expected (JSON Lines): "
            "write each message on a line of its own, without the enclosing [ ]"
        )
    if text.strip().count("\n"):
        return (
            "; this file looks like pretty-printed JSON, but one message per line is "
            "expected (JSON Lines): write each message on a single line"
        )
    return ""


@click.command()
@log_level_option(None)
@click.argument("queue_url")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def purge(queue_url: str, yes: bool) -> None:
    """Delete every message in a queue. QUEUE_URL: sqs://, pubsub://, amqp://, file:///."""
    from simpletasks.queues import open_queue

    refuse_mem(queue_url, "QUEUE_URL")
    queue = open_queue(queue_url)
    if not yes:
        click.confirm(f"Delete every message in {queue.url}?", abort=True)
    queue.purge()
    echo(f"purged {queue.url}")
