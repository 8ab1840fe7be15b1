"""What bounds no-op dispatch on the Pub/Sub emulator: the threads, or the Python work per task?

The daemon pulls on one thread, runs tasks on another and acks on a third; the raw baseline
of ``dispatch_gcp_amqp.py`` pulls and acks on one thread and does nothing with the messages.
This script separates the two differences. Contenders, interleaved round by round on fresh
queues of ``--messages`` no-op task messages on one emulator:

* ``raw_pull100``: the baseline of ``dispatch_gcp_amqp.py`` (pull 100, ack them, repeat);
* ``serial_work_W``: the same loop (plain protobufs) spending ``W`` µs of pure Python on each
  message between its pull and its ack;
* ``threaded_work_W``: a pull thread, a worker thread spending ``W`` µs per message and an ack
  thread batching what is done: the daemon's layout with none of its code;
* ``simpletasks_c1``: the daemon (``concurrency=1``, ``max_tasks=messages``).

Ratios are medians of per-round ratios. ``threaded_work_W / serial_work_W`` near 1 says the
layout costs nothing at that amount of work; ``serial_work_W / raw_pull100`` says what that
much work per message costs any client. ``daemon_cpu_us`` is the daemon's CPU per no-op task on
``mem://`` in the same process (``daemon_cpu.py``), the work it does per task besides Pub/Sub.

Usage::

    python benchmarks/pubsub_bound.py                     # W = 3, 6, 12; 7 rounds of 10,000
    python benchmarks/pubsub_bound.py --work-us 4,8 --rounds 5
    python benchmarks/pubsub_bound.py --quick             # smoke run
"""

from __future__ import annotations

import argparse
import queue as stdqueue
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from _common import compare, emit, machine_info, rotated, setup_logging, summarize, versions
from _queue_benches import MethodCounter, PubSubBench, fill, timed
from daemon_cpu import daemon, filled
from dispatch import BenchNoOp, verify

from simpletasks.queues._pubsub_raw import RawSubscriber
from simpletasks.registry import TaskRegistry

ACK_TIMEOUT = 4.0


def cpu_us(work: Callable[[], int], calls: int = 20000) -> float:
    """CPU per call of ``work``, in µs (reported beside the amount asked for)."""
    start = time.process_time()
    for _ in range(calls):
        work()
    return round((time.process_time() - start) / calls * 1e6, 2)


def spinner(micros: float) -> Callable[[], int]:
    """A function spending about ``micros`` µs of pure Python (calibrated here, by measuring
    it and adjusting its loop three times: the clock of a shared machine drifts)."""

    def spin(count: int) -> int:
        total = 0
        for i in range(count):
            total += i
        return total

    count = 100
    for _ in range(4):
        took = cpu_us(lambda count=count: spin(count), 5000)
        count = max(1, round(count * micros / max(took, 1e-3)))
    return lambda: spin(count)


def serial(raw: RawSubscriber, path: str, n: int, work: Callable[[], int], wait: float) -> None:
    done = 0
    while done < n:
        got = raw.pull(path, 100, wait).received_messages
        for _ in got:
            work()
        if got:
            raw.acknowledge(path, [m.ack_id for m in got], ACK_TIMEOUT)
            done += len(got)


def threaded(raw: RawSubscriber, path: str, n: int, work: Callable[[], int], wait: float) -> None:
    todo: stdqueue.SimpleQueue[str] = stdqueue.SimpleQueue()
    acks: stdqueue.SimpleQueue[str] = stdqueue.SimpleQueue()
    failed: list[BaseException] = []

    def worker() -> None:
        for _ in range(n):
            ack_id = todo.get()
            work()
            acks.put(ack_id)

    def acker() -> None:
        left = n
        try:
            while left:
                batch = [acks.get()]
                while len(batch) < 1000:
                    try:
                        batch.append(acks.get_nowait())
                    except stdqueue.Empty:
                        break
                raw.acknowledge(path, batch, ACK_TIMEOUT)
                left -= len(batch)
        except BaseException as exc:  # reported by the caller
            failed.append(exc)

    threads = [threading.Thread(target=worker), threading.Thread(target=acker)]
    for thread in threads:
        thread.start()
    done = 0
    while done < n:
        got = raw.pull(path, 100, wait).received_messages
        for message in got:
            todo.put(message.ack_id)
        done += len(got)
    for thread in threads:
        thread.join()
    verify(not failed, f"threaded acker: {failed}")


def run_custom(
    bench: PubSubBench, loop: Callable[..., None], work: Callable[[], int], name: str, n: int
) -> Any:
    queue = fill(bench, name, n)
    raw = RawSubscriber.of(bench.client)
    verify(raw is not None, "the emulator's SubscriberClient gets the raw-protobuf calls")
    assert raw is not None
    raw = bench.counter.wrap(raw, {"pull", "acknowledge"})
    with timed(bench, n) as out:
        loop(raw, queue.subscription_path, n, work, bench.wait)
    return out[0], queue


def run_daemon(bench: PubSubBench, registry: TaskRegistry, name: str, n: int) -> Any:
    from dispatch_gcp_amqp import run_daemon as run

    return run(bench, registry, name, n, concurrency=1, drained=False)


def daemon_cpu_us(registry: TaskRegistry, n: int, rounds: int) -> float:
    """Median CPU per no-op task of the daemon (c1) on ``mem://``."""
    run = daemon(1, registry)
    samples = []
    for _ in range(rounds):
        queue = filled(n)
        cpu0 = time.process_time()
        run(queue, n)
        samples.append((time.process_time() - cpu0) / n * 1e6)
        queue.close()
    return round(statistics.median(samples), 1)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="measured rounds (7)")
    parser.add_argument("--messages", type=int, default=10000, help="tasks per queue (10000)")
    parser.add_argument("--warmup", type=int, default=1000, help="warm-up messages (1000)")
    parser.add_argument("--work-us", default="3,6,12", help="µs of Python per message (3,6,12)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 rounds of 200")
    parser.add_argument("--output", help="also write the JSON to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.messages, args.warmup = 2, 200, 100
    try:
        args.works = [float(w) for w in args.work_us.split(",") if w.strip()]
    except ValueError:
        parser.error(f"--work-us: numbers separated by commas, not {args.work_us!r}")
    if not args.works or min(args.works) < 0:
        parser.error("--work-us: at least one amount, none negative")
    if args.rounds < 1 or args.messages < 1 or args.warmup < 0:
        parser.error("--rounds and --messages must be >= 1, --warmup >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    from simpletasks.emulators.pubsub import PubSubEmulator

    args = parse_args(argv)
    setup_logging()
    registry = TaskRegistry()
    registry.register(BenchNoOp)
    started = time.perf_counter()
    with PubSubEmulator() as emulator:
        bench = PubSubBench(emulator, MethodCounter(), 1.0)
        try:
            runners: dict[str, Callable[[str, int], Any]] = {
                "raw_pull100": bench.raw["raw_pull100"],
                "simpletasks_c1": lambda name, n: run_daemon(bench, registry, name, n),
            }
            measured = {}
            for w in args.works:
                work = spinner(w)
                measured[f"{w:g}"] = cpu_us(work)
                label = f"{w:g}".replace(".", "_")
                for kind, loop in (("serial", serial), ("threaded", threaded)):
                    runners[f"{kind}_work_{label}"] = lambda name, n, loop=loop, work=work: (
                        run_custom(bench, loop, work, name, n)
                    )
            run_id = uuid.uuid4().hex[:8]
            names = list(runners)

            def run(name: str, queue_name: str, n: int) -> Any:
                sample, queue = runners[name](queue_name, n)
                bench.finish(queue, queue_name, n)
                return sample

            if args.warmup:
                for name in names:
                    run(name, f"warm-{run_id}-{name.replace('_', '-')}", args.warmup)
            samples: dict[str, list[Any]] = {name: [] for name in names}
            for r in range(args.rounds):
                for name in rotated(names, r):
                    queue_name = f"bound-{run_id}-r{r}-{name.replace('_', '-')}"
                    samples[name].append(run(name, queue_name, args.messages))
                print(
                    f"round {r + 1}/{args.rounds}: "
                    + ", ".join(f"{k} {v[-1].rate:.0f}/s" for k, v in samples.items()),
                    file=sys.stderr,
                )
        finally:
            bench.close()
    ratios = {}
    for name in names:
        if name != "raw_pull100":
            ratios[f"{name}/raw_pull100"] = compare(samples[name], samples["raw_pull100"])
        if name.startswith("threaded_"):
            base = name.replace("threaded_", "serial_")
            ratios[f"{name}/{base}"] = compare(samples[name], samples[base])
    emit(
        {
            "benchmark": "pubsub_bound",
            "machine": machine_info(),
            "versions": versions("simpletasks", "google-cloud-pubsub", "grpcio"),
            "parameters": {
                "rounds": args.rounds,
                "messages": args.messages,
                "warmup": args.warmup,
                "work_us": args.works,
            },
            "work_us_measured": measured,
            "daemon_cpu_us": daemon_cpu_us(registry, max(args.messages, 2000), 3),
            "dispatch": {name: summarize(s) for name, s in samples.items()},
            "ratios": ratios,
            "seconds": round(time.perf_counter() - started, 1),
        },
        args.output,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
