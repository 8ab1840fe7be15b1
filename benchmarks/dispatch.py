"""Dispatch benchmark: how fast do tasks flow from an SQS queue through a worker?

Everything runs against ONE moto server (``simpletasks.emulators.moto.MotoServer``, a child
process on 127.0.0.1) in one run. Contenders, each on a fresh queue of ``--messages``
no-op tasks per round:

* ``raw_boto3``: a bare boto3 loop, ``receive_message(MaxNumberOfMessages=10)`` then
  ``delete_message_batch`` (the baseline: the least work a consumer can do);
* ``simpletasks_cN``: :class:`simpletasks.daemon.DaemonService` on an SQS queue with a
  registered no-op task type, ``concurrency=N``, ``burst=True``, ``max_tasks=messages``;
* ``simpletasks_c1_until_drained``: the same at concurrency 1 without ``max_tasks``: it runs
  until it sees the queue drained, so it includes the cost of noticing that;
* ``taskqueue_poll``: python-task-queue's ``TaskQueue.poll()`` with a ``@queueable`` no-op.

Bulk enqueue is measured on the way: every simpletasks queue is filled with
:func:`simpletasks.scheduler.schedule` and the task-queue one with ``TaskQueue.insert``,
each timed.

Contenders are interleaved (rotated each round) so that drift hits them alike; rates are
medians over rounds. The JSON on stdout holds the machine, library versions, parameters,
per-contender rates, client and server CPU per task, API calls per 100 tasks, and ratios.

Usage::

    python benchmarks/dispatch.py                 # defaults: 7 rounds of 200, ~2 min on 2 cores
    python benchmarks/dispatch.py --quick         # smoke run, about 10 s
    python benchmarks/dispatch.py --rounds 9 --messages 300 --output result.json
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from _common import (
    CallCounter,
    Sample,
    add_latency,
    child_pids,
    compare,
    emit,
    machine_info,
    measure,
    rotated,
    setup_logging,
    summarize,
    versions,
)

from simpletasks.daemon import DaemonService
from simpletasks.emulators.moto import FAKE_AWS_ENV, MotoServer
from simpletasks.message import BasicInfo, TaskMessage
from simpletasks.queues.sqs import SQSQueue
from simpletasks.registry import TaskRegistry
from simpletasks.scheduler import schedule
from simpletasks.settings import DaemonSettings
from simpletasks.task import DaemonTask, Result

logger = logging.getLogger("benchmarks.dispatch")

LEASE_SECONDS = 60
TASK_NAME = "BENCH_NOOP"


class BenchNoOp(DaemonTask):
    """The simpletasks contender's task: does nothing, successfully."""

    name = TASK_NAME

    def execute(self, datasource: Any) -> Result:
        return Result(success=True)


def bench_noop(i: int) -> None:
    """The task-queue contender's task (registered with ``@queueable`` at run time)."""


@dataclass
class Env:
    """What every contender needs: the server, clients, counters and parameters."""

    moto: MotoServer
    server_pid: int | None
    sqs: Any  # boto3 SQS client made by MotoServer.client (simpletasks' client settings)
    counter: CallCounter
    tq_counter: CallCounter
    registry: TaskRegistry
    messages: int
    wait_seconds: int
    enqueue_threads: int
    run_id: str
    latency: float  # seconds added before each HTTP request (0: none)


# -- filling queues (timed: the enqueue comparison) ------------------------------------------


def fill_simpletasks(env: Env, name: str, n: int) -> tuple[SQSQueue, Sample]:
    """Create queue ``name`` and send ``n`` task messages with ``schedule()``."""
    queue = SQSQueue(name, client=env.sqs, create=True)
    tasks = [TaskMessage(BasicInfo(id=i, name=TASK_NAME, base_directory="")) for i in range(n)]
    with measure(n, server_pid=env.server_pid, counter=env.counter) as out:
        sent = schedule(queue, tasks, threads=env.enqueue_threads)
    verify(sent == n, f"schedule() sent {sent} of {n}")
    return queue, out[0]


def open_taskqueue(env: Env, name: str) -> Any:
    """A task-queue ``TaskQueue`` on moto's SQS queue ``name``.

    task-queue's SQS backend forwards extra keyword arguments to ``boto3.client``, so
    ``endpoint_url=`` points it at moto. Its credentials come from
    ``~/.cloudvolume/secrets/aws-secret.json`` if that file exists, else from the environment;
    ``main`` replaces its credential lookup with moto's fake credentials so a real secret
    file is never used here.
    """
    from taskqueue import TaskQueue

    tq = TaskQueue(
        f"sqs://{name}",
        n_threads=env.enqueue_threads,
        progress=False,
        endpoint_url=env.moto.endpoint_url,
        region_name=FAKE_AWS_ENV["AWS_DEFAULT_REGION"],
    )
    env.tq_counter.attach(tq.api.sqs)
    add_latency(tq.api.sqs, env.latency)
    return tq


def fill_taskqueue(env: Env, name: str, n: int) -> tuple[Any, Sample]:
    """Create queue ``name`` and insert ``n`` no-op tasks with ``TaskQueue.insert``."""
    env.sqs.create_queue(QueueName=name)
    tq = open_taskqueue(env, name)
    tasks = [partial(bench_noop, i) for i in range(n)]
    with measure(n, server_pid=env.server_pid, counter=env.tq_counter) as out:
        sent = tq.insert(tasks, total=n)
    verify(sent == n, f"TaskQueue.insert sent {sent} of {n}")
    return tq, out[0]


# -- the contenders ---------------------------------------------------------------------------


def run_raw(env: Env, name: str, n: int) -> tuple[Sample, Sample]:
    """Baseline: receive 10, delete the batch, until ``n`` are done."""
    queue, enq = fill_simpletasks(env, name, n)
    sqs, url = env.sqs, queue.queue_url
    with measure(n, server_pid=env.server_pid, counter=env.counter) as out:
        done = 0
        while done < n:
            got = sqs.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=env.wait_seconds,
                VisibilityTimeout=LEASE_SECONDS,
            ).get("Messages", [])
            if got:
                entries = [
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)
                ]
                response = sqs.delete_message_batch(QueueUrl=url, Entries=entries)
                verify(not response.get("Failed"), f"delete failed: {response.get('Failed')}")
                done += len(got)
    check_empty(env, url)
    return out[0], enq


def run_daemon(
    env: Env, name: str, n: int, *, concurrency: int, until_drained: bool = False
) -> tuple[Sample, Sample]:
    """The simpletasks daemon on the queue; it stops at ``n`` tasks or when drained."""
    queue, enq = fill_simpletasks(env, name, n)
    settings = DaemonSettings(
        concurrency=concurrency,
        lease_seconds=LEASE_SECONDS,
        wait_seconds=env.wait_seconds,
        poll_frequency_seconds=0.5,
        burst=True,
        max_tasks=None if until_drained else n,
    )
    daemon = DaemonService(queue=queue, registry=env.registry, settings=settings)
    with measure(n, server_pid=env.server_pid, counter=env.counter) as out:
        stats = daemon.run()
    verify(stats.succeeded == n and stats.received == n, f"daemon: {stats}")
    check_empty(env, queue.queue_url)
    return out[0], enq


def run_taskqueue(env: Env, name: str, n: int) -> tuple[Sample, Sample]:
    """python-task-queue's ``poll()``, stopped after ``n`` executed tasks."""
    tq, enq = fill_taskqueue(env, name, n)

    def stop_fn(executed: int) -> bool:  # task-queue injects arguments by parameter name
        return executed >= n

    with measure(n, server_pid=env.server_pid, counter=env.tq_counter) as out:
        executed = tq.poll(lease_seconds=LEASE_SECONDS, stop_fn=stop_fn)
    verify(executed == n, f"poll() executed {executed} of {n}")
    check_empty(env, tq.api.qurl)
    return out[0], enq


def verify(ok: bool, what: str) -> None:
    """Stop the benchmark if a contender did not do all its work."""
    if not ok:
        raise RuntimeError(f"benchmark check failed: {what}")


def check_empty(env: Env, url: str) -> None:
    """Fail unless every message of the queue was deleted."""
    attrs = env.sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    left = int(attrs["ApproximateNumberOfMessages"]) + int(
        attrs["ApproximateNumberOfMessagesNotVisible"]
    )
    verify(left == 0, f"{left} messages left on {url}")


# -- the run ----------------------------------------------------------------------------------

Runner = Callable[[Env, str, int], tuple[Sample, Sample]]


def contenders(concurrencies: list[int], until_drained: bool) -> dict[str, tuple[Runner, str]]:
    """Name -> (runner, name of the enqueue contender that fills its queue)."""
    found: dict[str, tuple[Runner, str]] = {"raw_boto3": (run_raw, "simpletasks_schedule")}
    for c in concurrencies:
        found[f"simpletasks_c{c}"] = (
            partial(run_daemon, concurrency=c),
            "simpletasks_schedule",
        )
    if until_drained:
        found["simpletasks_c1_until_drained"] = (
            partial(run_daemon, concurrency=1, until_drained=True),
            "simpletasks_schedule",
        )
    found["taskqueue_poll"] = (run_taskqueue, "taskqueue_insert")
    return found


def run_rounds(
    env: Env, runners: dict[str, tuple[Runner, str]], rounds: int, warmup_messages: int
) -> tuple[dict[str, list[Sample]], dict[str, list[Sample]]]:
    """Run every contender once per round (order rotated); return dispatch and enqueue samples."""
    names = list(runners)
    dispatch: dict[str, list[Sample]] = {name: [] for name in names}
    enqueue: dict[str, list[Sample]] = {fill: [] for _, fill in runners.values()}

    def run(name: str, queue_name: str, n: int) -> tuple[Sample, Sample]:
        result = runners[name][0](env, queue_name, n)
        env.sqs.delete_queue(QueueUrl=env.sqs.get_queue_url(QueueName=queue_name)["QueueUrl"])
        return result

    if warmup_messages:
        logger.info("warm-up: every contender on %d messages", warmup_messages)
        for name in names:
            run(name, f"warm-{env.run_id}-{name}", warmup_messages)
    for r in range(rounds):
        line = []
        for name in rotated(names, r):
            sample, enq = run(name, f"b-{env.run_id}-r{r}-{name}", env.messages)
            dispatch[name].append(sample)
            enqueue[runners[name][1]].append(enq)
            line.append(f"{name} {sample.rate:.0f}/s")
        logger.info("round %d/%d: %s", r + 1, rounds, ", ".join(line))
    return dispatch, enqueue


def ratios(
    dispatch: dict[str, list[Sample]], enqueue: dict[str, list[Sample]], target: float
) -> dict[str, Any]:
    """Ratios of medians, paired per-round medians, and the target check."""

    def med(samples: list[Sample]) -> float:
        return statistics.median(s.rate for s in samples)

    out: dict[str, Any] = {}
    bases = [b for b in ("raw_boto3", "taskqueue_poll") if b in dispatch]
    for name in dispatch:
        if not name.startswith("simpletasks_"):
            continue
        for base in bases:
            out[f"{name}/{base}"] = compare(dispatch[name], dispatch[base])
    st, tq = enqueue.get("simpletasks_schedule"), enqueue.get("taskqueue_insert")
    if st and tq:
        out["simpletasks_schedule/taskqueue_insert"] = {"of_medians": round(med(st) / med(tq), 3)}
    if "raw_boto3" in dispatch:
        out["target"] = {
            "rule": f"simpletasks_cN >= {target} x raw_boto3 (median of per-round ratios)",
            "met": {
                name: out[f"{name}/raw_boto3"]["paired_median"] >= target
                for name in dispatch
                if name.removeprefix("simpletasks_c").isdigit()
            },
        }
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="measured rounds (default 7)")
    parser.add_argument(
        "--messages", type=int, default=200, help="tasks per queue per round (default 200)"
    )
    parser.add_argument(
        "--concurrency", default="1,4", help="daemon concurrencies, comma-separated (1,4)"
    )
    parser.add_argument("--wait-seconds", type=int, default=1, help="long-poll wait (1)")
    parser.add_argument(
        "--enqueue-threads", type=int, default=4, help="threads of schedule() and insert (4)"
    )
    parser.add_argument(
        "--warmup", type=int, default=50, help="messages per contender in a warm-up pass (50)"
    )
    parser.add_argument(
        "--no-until-drained", action="store_true", help="skip the until-drained daemon run"
    )
    parser.add_argument(
        "--latency-ms",
        type=float,
        default=0.0,
        help="add this delay before every SQS request, to model a real round trip (0)",
    )
    parser.add_argument("--only", help="run only these contenders (comma-separated)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 2 rounds of 50 (checks it works; figures too noisy to compare)",
    )
    parser.add_argument("--target", type=float, default=0.9, help="target ratio to raw (0.9)")
    parser.add_argument("--output", help="also write the JSON to this file")
    parser.add_argument("--verbose", action="store_true", help="library logs at INFO")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.messages, args.warmup = 2, 50, 10
    if args.rounds < 1 or args.messages < 1 or args.warmup < 0 or args.latency_ms < 0:
        parser.error("--rounds and --messages must be >= 1, --warmup and --latency-ms >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    if args.messages > 500:
        logger.warning("--messages %d: moto's receive slows down with queue depth", args.messages)
    # task-queue reads AWS_DEFAULT_REGION at import and falls back to the AWS_* environment
    # for credentials; give it (and any default boto3 lookup) moto's fake ones only.
    os.environ.update(FAKE_AWS_ENV)
    concurrencies = [int(c) for c in args.concurrency.split(",") if c.strip()]
    runners = contenders(concurrencies, until_drained=not args.no_until_drained)
    try:
        import taskqueue
        import taskqueue.aws_queue_api as tq_aws
    except ImportError:  # python-task-queue is only a comparison: run without it
        logger.warning("python-task-queue is not installed: no taskqueue_poll contender")
        runners.pop("taskqueue_poll", None)
    else:
        fake = {k: FAKE_AWS_ENV[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
        tq_aws.aws_credentials = lambda *a, **k: dict(fake)  # never a real secret file
        taskqueue.queueable(bench_noop)
    if args.only:
        wanted = [n.strip() for n in args.only.split(",")]
        unknown = set(wanted) - set(runners)
        if unknown:
            raise SystemExit(f"unknown contenders {sorted(unknown)}; known: {list(runners)}")
        runners = {n: runners[n] for n in wanted}
    registry = TaskRegistry()
    registry.register(BenchNoOp)

    started = time.perf_counter()
    with MotoServer() as moto:
        pids = child_pids()
        counter, tq_counter = CallCounter(), CallCounter()
        env = Env(
            moto=moto,
            server_pid=pids[0] if len(pids) == 1 else None,
            sqs=counter.attach(moto.client("sqs")),
            counter=counter,
            tq_counter=tq_counter,
            registry=registry,
            messages=args.messages,
            wait_seconds=args.wait_seconds,
            enqueue_threads=args.enqueue_threads,
            run_id=uuid.uuid4().hex[:8],
            latency=args.latency_ms / 1000,
        )
        add_latency(env.sqs, env.latency)
        dispatch, enqueue = run_rounds(env, runners, args.rounds, args.warmup)
    result: dict[str, Any] = {
        "benchmark": "dispatch",
        "machine": machine_info(),
        "versions": {
            "python": sys.version.split()[0],
            **versions("simpletasks", "boto3", "botocore", "moto", "task-queue", "werkzeug"),
        },
        "parameters": {
            "rounds": args.rounds,
            "messages_per_round": args.messages,
            "warmup_messages": args.warmup,
            "concurrency": concurrencies,
            "wait_seconds": args.wait_seconds,
            "latency_ms": args.latency_ms,
            "lease_seconds": LEASE_SECONDS,
            "enqueue_threads": args.enqueue_threads,
            "quick": args.quick,
            "contenders": list(runners),
        },
        "dispatch": {name: summarize(samples) for name, samples in dispatch.items()},
        "enqueue": {name: summarize(samples) for name, samples in enqueue.items()},
        "seconds_total": round(time.perf_counter() - started, 1),
    }
    result["ratios"] = ratios(dispatch, enqueue, args.target)
    emit(result, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
