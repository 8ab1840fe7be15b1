"""Dispatch benchmark on Pub/Sub (emulator) and RabbitMQ: the daemon against raw client loops.

The companion of ``dispatch.py`` (SQS on moto) for the two other queue backends. For each
backend, everything runs against ONE server in one run: the official Pub/Sub emulator
(:class:`simpletasks.emulators.pubsub.PubSubEmulator`, started here on 127.0.0.1) and the
RabbitMQ broker on 127.0.0.1:5672 (guest/guest, not started here). Contenders, each on a
fresh subscription / queue of ``--messages`` no-op tasks per round, filled with
:func:`simpletasks.scheduler.schedule` (timed: the enqueue figures):

* Pub/Sub ``raw_pull10`` / ``raw_pull100``: ``SubscriberClient.pull(max_messages=10|100)``
  then one ``acknowledge(ack_ids)`` per pull (the emulator returns at most 100 per pull);
* RabbitMQ ``raw_get``: pika ``basic_get`` + ``basic_ack`` per message (what the backend
  does); ``raw_consume``: a pika consumer with ``basic_qos(prefetch_count=100)`` and one
  ``basic_ack(multiple=True)`` per 10 messages (the fastest raw consumer);
* ``simpletasks_cN``: :class:`simpletasks.daemon.DaemonService` on a ``PubSubQueue`` /
  ``AMQPQueue`` with a registered no-op task, ``concurrency=N``, ``burst=True``,
  ``max_tasks=messages``; ``simpletasks_c1_until_drained``: c1 without ``max_tasks``.

Rounds rotate the order; rates are medians over rounds; ratios are given as the ratio of
medians and as the median of per-round ratios. The JSON on stdout holds the machine,
versions, parameters, rates, client and server CPU per task and calls per 100 tasks. The
servers, raw loops and call counting live in ``_queue_benches.py``.

Usage::

    python benchmarks/dispatch_gcp_amqp.py                    # 9 rounds of 500, ~100 s
    python benchmarks/dispatch_gcp_amqp.py --quick            # smoke run, ~15 s
    python benchmarks/dispatch_gcp_amqp.py --backend amqp --amqp-queue-type classic
    python benchmarks/dispatch_gcp_amqp.py --only raw_get,simpletasks_c1 --rounds 15 --output r.json
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
import uuid
from collections.abc import Iterator
from functools import partial
from typing import Any

from _common import (
    Sample,
    compare,
    emit,
    machine_info,
    rotated,
    setup_logging,
    summarize,
    versions,
)
from _queue_benches import (
    CONSUME_ACK_EVERY,
    CONSUME_PREFETCH,
    LEASE_SECONDS,
    AMQPBench,
    Bench,
    MethodCounter,
    PubSubBench,
    Runner,
    fill,
    timed,
)
from dispatch import BenchNoOp, verify

from simpletasks.daemon import DaemonService
from simpletasks.registry import TaskRegistry
from simpletasks.settings import DaemonSettings

logger = logging.getLogger("benchmarks.dispatch_gcp_amqp")


def run_daemon(
    bench: Bench, registry: TaskRegistry, name: str, n: int, *, concurrency: int, drained: bool
) -> tuple[Sample, Any]:
    """The daemon on a fresh queue; it stops at ``n`` received tasks or when drained."""
    queue = fill(bench, name, n)
    settings = DaemonSettings(
        concurrency=concurrency,
        lease_seconds=LEASE_SECONDS,
        wait_seconds=bench.wait,
        poll_frequency_seconds=0.5,
        burst=True,
        max_tasks=None if drained else n,
    )
    daemon = DaemonService(queue=queue, registry=registry, settings=settings)
    with timed(bench, n) as out:
        stats = daemon.run()
    verify(stats.succeeded == n and stats.received == n, f"daemon: {stats}")
    return out[0], queue


def contenders(
    bench: Bench, registry: TaskRegistry, concurrencies: list[int], until_drained: bool
) -> dict[str, Runner]:
    """Name -> runner(queue name, n) returning the sample and the queue object (or None)."""
    found: dict[str, Runner] = dict(bench.raw)
    for c in concurrencies:
        found[f"simpletasks_c{c}"] = partial(
            run_daemon, bench, registry, concurrency=c, drained=False
        )
    if until_drained:
        found["simpletasks_c1_until_drained"] = partial(
            run_daemon, bench, registry, concurrency=1, drained=True
        )
    return found


def run_backend(bench: Bench, runners: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Warm up, run the rounds (rotated), and summarize one backend."""
    run_id = uuid.uuid4().hex[:8]
    names = list(runners)
    samples: dict[str, list[Sample]] = {name: [] for name in names}

    def run(name: str, queue_name: str, n: int) -> Sample:
        sample, queue = runners[name](queue_name, n)
        bench.finish(queue, queue_name, n)
        return sample

    if args.warmup:
        logger.info("%s warm-up: every contender on %d messages", bench.label, args.warmup)
        for name in names:
            run(name, f"warm-{run_id}-{name.replace('_', '-')}", args.warmup)
        bench.fills.clear()
    for r in range(args.rounds):
        line = []
        for name in rotated(names, r):
            sample = run(name, f"b-{run_id}-r{r}-{name.replace('_', '-')}", args.messages)
            samples[name].append(sample)
            line.append(f"{name} {sample.rate:.0f}/s")
        logger.info("%s round %d/%d: %s", bench.label, r + 1, args.rounds, ", ".join(line))
    ratios: dict[str, Any] = {}
    for name in names:
        if name.startswith("simpletasks_"):
            for base in (b for b in bench.raw if b in samples):
                ratios[f"{name}/{base}"] = compare(samples[name], samples[base])
    return {
        "server_pid_found": bench.server_pid is not None,
        "dispatch": {name: summarize(s) for name, s in samples.items()},
        "enqueue": {"simpletasks_schedule": summarize(bench.fills)},
        "ratios": ratios,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default="pubsub,amqp", help="pubsub, amqp or both")
    parser.add_argument("--rounds", type=int, default=9, help="measured rounds (9)")
    parser.add_argument("--messages", type=int, default=500, help="tasks per queue (500)")
    parser.add_argument("--concurrency", default="1,4", help="daemon concurrencies (1,4)")
    parser.add_argument("--wait-seconds", type=float, default=1.0, help="receive wait (1)")
    parser.add_argument("--warmup", type=int, default=500, help="warm-up messages (500)")
    parser.add_argument("--no-until-drained", action="store_true", help="skip that contender")
    parser.add_argument(
        "--amqp-queue-type", choices=["quorum", "classic"], default="quorum", help="(quorum)"
    )
    parser.add_argument("--only", help="run only these contenders (comma-separated)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 rounds of 100")
    parser.add_argument("--output", help="also write the JSON to this file")
    parser.add_argument("--verbose", action="store_true", help="library logs at INFO")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.messages, args.warmup = 2, 100, 50
    args.backends = [b.strip() for b in args.backend.split(",") if b.strip()]
    if not args.backends or set(args.backends) - {"pubsub", "amqp"}:
        parser.error(f"--backend: pubsub, amqp or both, not {args.backend!r}")
    if args.rounds < 1 or args.messages < 1 or args.warmup < 0 or args.wait_seconds < 0:
        parser.error("--rounds and --messages must be >= 1, --warmup and --wait-seconds >= 0")
    return args


@contextlib.contextmanager
def open_bench(backend: str, counter: MethodCounter, args: argparse.Namespace) -> Iterator[Bench]:
    """Start (Pub/Sub) or reach (RabbitMQ) the server and yield its bench."""
    from simpletasks.emulators.pubsub import PubSubEmulator

    with contextlib.ExitStack() as stack:
        bench: Bench
        if backend == "pubsub":
            emulator = stack.enter_context(PubSubEmulator())
            bench = PubSubBench(emulator, counter, args.wait_seconds)
        else:
            bench = AMQPBench(counter, args.wait_seconds, args.amqp_queue_type)
        stack.callback(bench.close)
        yield bench


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    concurrencies = [int(c) for c in args.concurrency.split(",") if c.strip()]
    registry = TaskRegistry()
    registry.register(BenchNoOp)
    started = time.perf_counter()
    results: dict[str, Any] = {}
    wanted = {n.strip() for n in args.only.split(",")} if args.only else None
    for backend in args.backends:
        counter = MethodCounter()
        with open_bench(backend, counter, args) as bench:
            runners = contenders(bench, registry, concurrencies, not args.no_until_drained)
            if wanted is not None:
                runners = {n: r for n, r in runners.items() if n in wanted}
            if not runners:
                raise SystemExit(f"--only {args.only}: no contender of {backend} selected")
            t0, load0 = time.perf_counter(), os.getloadavg()
            results[backend] = run_backend(bench, runners, args)
            results[backend]["seconds"] = round(time.perf_counter() - t0, 1)
            results[backend]["load_average_1_5_15"] = {
                "before": [round(x, 2) for x in load0],
                "after": [round(x, 2) for x in os.getloadavg()],
            }
    result: dict[str, Any] = {
        "benchmark": "dispatch_gcp_amqp",
        "machine": machine_info(),
        "versions": {
            "python": sys.version.split()[0],
            **versions("simpletasks", "google-cloud-pubsub", "grpcio", "pika"),
        },
        "parameters": {
            **{k: getattr(args, k) for k in ("rounds", "messages", "warmup", "wait_seconds")},
            **{k: getattr(args, k) for k in ("amqp_queue_type", "quick", "only")},
            "concurrency": concurrencies,
            "lease_seconds": LEASE_SECONDS,
            "consume_prefetch": CONSUME_PREFETCH,
            "consume_ack_every": CONSUME_ACK_EVERY,
        },
        **results,
        "seconds_total": round(time.perf_counter() - started, 1),
    }
    emit(result, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
