"""`simpletasks status | peek | requeue`: look at queues without consuming them, replay failures.

They receive (lease) messages, look at them and release them, so the messages are invisible to
other receivers for that moment only. ``status`` tells final failures on a report queue from
retried attempts; ``requeue`` sends final failures' original messages back to the task queue.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click

from simpletasks.cli._common import (
    echo,
    env_name,
    log_level_option,
    refuse_mem,
    require,
)
from simpletasks.errors import MessageError

logger = logging.getLogger(__name__)

HOLD_SECONDS = 300.0  # lease on messages held while peeking (released at the end)


@contextmanager
def held(
    queue: Any,
    limit: int,
    wait_seconds: float = 1.0,
    more: Callable[[list[Any]], bool] | None = None,
    use_counts: bool = True,
) -> Iterator[list[Any]]:
    """Receive up to ``limit`` visible messages and release them all on exit (peek).

    Args:
        queue: The queue.
        limit: Most messages to receive.
        wait_seconds: Long-poll wait of each receive.
        more: Called with each batch; receiving stops when it returns false.
        use_counts: Stop at the queue's visible count, when it has one, instead of waiting
            for an empty receive (counts are approximate on SQS: not for ``requeue``).
    """
    messages: list[Any] = []
    if (
        use_counts and queue.capabilities.counts
    ):  # no waiting for an empty receive past the last message
        visible = queue.counts().visible
        limit = min(limit, visible) if visible is not None else limit
    try:
        while len(messages) < limit:
            want = min(queue.capabilities.max_batch, limit - len(messages))
            # Wait on every receive: SQS without a wait samples only some of its servers.
            batch = queue.receive(want, wait_seconds=wait_seconds, lease_seconds=HOLD_SECONDS)
            if not batch:
                break
            messages += batch
            if more is not None and not more(batch):
                break
        yield messages
    finally:
        for message in messages:
            queue.release(message)


def read_report(body: str) -> dict[str, Any] | None:
    """Return a report's fields (``kind`` ``error``, ``done`` or ``started``), or ``None``
    for a task."""
    from dataclasses import asdict

    from simpletasks.reports import parse_report

    if '"kind"' not in body:  # cheap: task messages have no "kind"
        return None
    try:
        return asdict(parse_report(body, with_started=True))
    except MessageError:
        return None


@click.command()
@log_level_option(None)
@click.argument("queue_urls", nargs=-1, required=True, metavar="QUEUE_URL...")
@click.option(
    "--scan",
    default=1000,
    show_default=True,
    type=click.IntRange(min=0),
    help="Read (and release) up to this many messages of each queue to summarise its "
    "reports; 0: counts only.",
)
@click.option(
    "--watch",
    is_flag=True,
    help="Keep showing the counts and rates (messages/s) of each queue until Ctrl-C.",
)
@click.option(
    "--interval",
    default=5.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="Seconds between two refreshes with --watch.",
)
@click.option(
    "--refreshes",
    type=click.IntRange(min=1),
    help="With --watch: stop after this many refreshes (default: until Ctrl-C).",
)
def status(
    queue_urls: tuple[str, ...],
    scan: int,
    watch: bool,
    interval: float,
    refreshes: int | None,
) -> None:
    """Print visible and in-flight counts of each queue, and what its reports say.

    For an error queue, final failures (the daemon gave up) are told apart from retried
    attempts (the task is still on its queue). With --watch, print one line per queue
    every --interval seconds: counts, how fast the queue drains (or fills) and, while it
    drains, when it will be empty. QUEUE_URL: sqs://, pubsub://, amqp://, file:///.
    """
    from simpletasks.queues import open_queue

    for url in queue_urls:
        refuse_mem(url, "QUEUE_URL")
    if watch:
        watch_counts([open_queue(url) for url in queue_urls], interval, refreshes)
        return
    for url in queue_urls:
        queue = open_queue(url)
        counts = queue.counts()
        echo(f"{queue.url}\tvisible={_n(counts.visible)}\tin_flight={_n(counts.in_flight)}")
        if scan and counts.visible != 0:
            summary = summarise(queue, scan)
            if summary:
                echo(f"  {summary}")
        queue.close()


def watch_counts(queues: list[Any], interval: float, refreshes: int | None = None) -> None:
    """Print each queue's counts and rates every ``interval`` s, ``refreshes`` times or until
    Ctrl-C (which ends it quietly)."""
    import time

    previous: dict[str, tuple[float, int | None, int | None]] = {}
    done = 0
    try:
        while refreshes is None or done < refreshes:
            if done:
                time.sleep(interval)
            for queue in queues:
                try:
                    counts = queue.counts()
                except Exception as exc:  # a service blip: say it and go on watching
                    echo(f"{time.strftime('%H:%M:%S')}\t{queue.url}\terror: {exc}")
                    continue
                now = time.monotonic()
                line = f"visible={_n(counts.visible)}\tin_flight={_n(counts.in_flight)}"
                before = previous.get(queue.url)
                if before is not None:
                    line += "\t" + _rates(before, (now, counts.visible, counts.in_flight))
                previous[queue.url] = (now, counts.visible, counts.in_flight)
                echo(f"{time.strftime('%H:%M:%S')}\t{queue.url}\t{line}")
            done += 1
    except KeyboardInterrupt:
        echo("")
    finally:
        for queue in queues:
            queue.close()


def _rates(
    before: tuple[float, int | None, int | None], now: tuple[float, int | None, int | None]
) -> str:
    """``visible/s=... total/s=...`` between two samples, and the time left while draining."""
    seconds = max(now[0] - before[0], 1e-9)
    if before[1] is None or now[1] is None:
        return "rate=?"
    visible_rate = (now[1] - before[1]) / seconds
    parts = [f"visible/s={visible_rate:+.2f}"]
    if before[2] is not None and now[2] is not None:
        total_rate = (now[1] + now[2] - before[1] - before[2]) / seconds
        parts.append(f"total/s={total_rate:+.2f}")
        remaining = now[1] + now[2]
        if total_rate < 0 and remaining:
            parts.append(f"empty in ~{remaining / -total_rate:.0f} s")
    return "\t".join(parts)


def summarise(queue: Any, limit: int) -> str:
    """Describe the reports among the first ``limit`` visible messages ("" if none)."""
    final: Counter[str] = Counter()
    retried = done = started = tasks = 0

    def has_reports(batch: list[Any]) -> bool:  # a task queue: stop after one batch
        return any(read_report(m.body) is not None for m in batch)

    with held(queue, limit, more=has_reports) as messages:
        for message in messages:
            report = read_report(message.body)
            if report is None:
                tasks += 1
            elif report["kind"] == "done":
                done += 1
            elif report["kind"] == "started":
                started += 1
            elif report.get("final"):
                final[str(report.get("task_name") or "?")] += 1
            else:
                retried += 1
        seen = len(messages)
    if not final and not retried and not done and not started:
        return ""
    parts = []
    if final or retried:
        names = ", ".join(f"{name}: {n}" for name, n in sorted(final.items()))
        parts.append(
            f"{sum(final.values())} final failure(s)"
            + (f" ({names})" if names else "")
            + f", {retried} retried attempt(s) (still on their task queue)"
        )
    if done:
        parts.append(f"{done} done report(s)")
    if started:
        parts.append(f"{started} started report(s)")
    if tasks:
        parts.append(f"{tasks} other message(s)")
    more = f" (first {seen} read)" if seen >= limit else ""
    return "; ".join(parts) + more


@click.command()
@log_level_option(None)
@click.argument("queue_url")
@click.option(
    "-n",
    "--limit",
    default=10,
    show_default=True,
    type=click.IntRange(min=1),
    help="Most messages to show.",
)
def peek(queue_url: str, limit: int) -> None:
    """Print the bodies of the first visible messages, one per line, without consuming them.

    The messages are received, printed and released: they stay on the queue. Works on task
    queues and on error and done queues (reports are JSON). QUEUE_URL: sqs://, pubsub://,
    amqp://, file:///.
    """
    from simpletasks.queues import open_queue

    refuse_mem(queue_url, "QUEUE_URL")
    queue = open_queue(queue_url)
    with held(queue, limit) as messages:
        for message in messages:
            echo(message.body)
    click.echo(f"{len(messages)} message(s) shown, left on {queue.url}", err=True)
    queue.close()


@click.command()
@log_level_option(None)
@click.option(
    "--from",
    "error_url",
    show_envvar=True,
    envvar=env_name("ERROR_QUEUE"),
    help="The error queue to read reports from. Required.",
)
@click.option(
    "--to",
    "queue_url",
    show_envvar=True,
    envvar=env_name("QUEUE"),
    help="The task queue to send the original messages to. Required.",
)
@click.option(
    "--task-name",
    "task_names",
    multiple=True,
    help="Only failures of this task type (repeatable; default: all).",
)
@click.option(
    "--bucket",
    "bucket_url",
    show_envvar=True,
    envvar=env_name("BUCKET"),
    help="The daemons' bucket: messages too big for their report were kept there "
    "(the report's body_key); without it such reports are left.",
)
@click.option(
    "--drop-retried",
    is_flag=True,
    help="Also delete reports of retried attempts (not final; their task is still queued). "
    "By default they are left on the error queue.",
)
@click.option(
    "--limit",
    default=10000,
    show_default=True,
    type=click.IntRange(min=1),
    help="Most reports to read.",
)
def requeue(
    error_url: str | None,
    queue_url: str | None,
    task_names: tuple[str, ...],
    bucket_url: str | None,
    drop_retried: bool,
    limit: int,
) -> None:
    """Send final failures from the error queue back to the task queue, as they were sent.

    Each final error report that matches --task-name is replaced by its original message on
    the task queue (sent first, then the report is deleted). Other reports stay where they
    are, except retried attempts with --drop-retried. A message too big for its report was
    kept in the daemons' bucket: it is read from --bucket (and checked against its hash). A
    report without a usable body (truncated with nothing kept, or no --bucket) is left and
    counted.
    """
    from simpletasks.buckets import open_bucket
    from simpletasks.queues import open_queue

    require(from_=error_url, to=queue_url)
    assert error_url is not None and queue_url is not None
    refuse_mem(error_url, "--from")
    refuse_mem(queue_url, "--to")
    errors, tasks = open_queue(error_url), open_queue(queue_url)
    bucket = open_bucket(bucket_url) if bucket_url else None
    counts: Counter[str] = Counter()
    with held(errors, limit, use_counts=False) as messages:
        keep = []
        for message in messages:
            report = read_report(message.body)
            action = _requeue_action(report, task_names, drop_retried, bucket is not None)
            if action == "requeued":
                assert report is not None
                body = _original_body(report, bucket, message.id)
                if body is None:
                    action = "unusable"
                else:
                    tasks.send(body)
            counts[action] += 1
            if action in ("requeued", "dropped"):
                errors.ack(message)
            else:
                keep.append(message)
        messages[:] = keep  # released on exit
    left = counts["left"] + counts["unusable"] + counts["kept"]
    unusable = f" ({counts['unusable']} without a usable body)" if counts["unusable"] else ""
    if counts["kept"]:
        unusable += f" ({counts['kept']} whose message is in a bucket: pass --bucket URL)"
    echo(
        f"requeued {counts['requeued']} final failure(s) onto {tasks.url}; "
        f"dropped {counts['dropped']} retried-attempt report(s); "
        f"left {left} report(s) on {errors.url}{unusable}"
    )
    errors.close()
    tasks.close()


def _requeue_action(
    report: dict[str, Any] | None,
    task_names: tuple[str, ...],
    drop_retried: bool,
    have_bucket: bool,
) -> str:
    if report is None or report.get("kind") != "error":
        return "left"
    if task_names and report.get("task_name") not in task_names:
        return "left"
    if not report.get("final"):
        return "dropped" if drop_retried else "left"
    if report.get("truncated"):
        if not report.get("body_key"):
            return "unusable"
        return "requeued" if have_bucket else "kept"
    if report.get("body") in (None, ""):
        return "unusable"
    return "requeued"


def _original_body(report: dict[str, Any], bucket: Any, report_id: str) -> str | None:
    """The message a final failure's report stands for: its body, or the copy kept in the
    bucket (``None``, logged, if that copy cannot be read)."""
    from simpletasks import kept_bodies

    if not report.get("truncated"):
        body = report["body"]
        return body if isinstance(body, str) else json.dumps(body)
    try:
        return kept_bodies.load(bucket, report["body_key"])
    except Exception as exc:
        logger.warning(
            "report %s: its message %s cannot be read from %s: %s; report left",
            report_id,
            report.get("body_key"),
            bucket.url,
            exc,
        )
        return None


def _n(value: int | None) -> str:
    return "?" if value is None else str(value)
