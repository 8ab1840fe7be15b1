"""Scale run: task throughput of 1, 2, 4 and 8 daemon processes on one queue.

``--backend sqs`` (default) uses one SQS queue on a moto server; ``--backend amqp`` the
machine's RabbitMQ (127.0.0.1:5672, guest/guest, a durable quorum queue per run) with tasks
that wait 50 ms (I/O-like, ``time.sleep``) at 1, 2, 4 and 8 processes and CPU-bound tasks
(20 ms of CPU each) at 1 and 2 processes.

For each number of processes and each kind of task (a no-op, and 10 ms of simulated work,
``time.sleep(0.01)``), the daemons (``python -m simpletasks run --concurrency 1``) are started
on an empty queue and left to become idle; then ``--messages`` tasks are sent at once and
the run ends when every task has logged its execution. Throughput is tasks divided by the
time from the first task's start to the last task's end. Points are interleaved over
``--rounds`` rounds and reported as medians, with the speedup relative to one process, and
with the CPU the moto server and the daemons used meanwhile.

moto is ONE Python process serving every request: on a small machine it saturates (its CPU
share approaches one core) and caps the no-op throughput; the ratios show where. Its SQS
model also scans the whole queue on every receive and delete, so its cost per task grows with
the queue's depth: compare runs only at the same ``--messages``.

Usage::

    python benchmarks/scale.py --plot docs/reliability-scale.png   # about 6 min on 2 cores
    python benchmarks/scale.py --quick                             # smoke run
    python benchmarks/scale.py --backend amqp --rounds 3 --plot docs/performance-scale-amqp.png
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import child_pids, emit, machine_info, process_cpu_seconds, setup_logging, versions
from _daemons import DaemonProcess, make_cluster, stop_all, wait_until

from simpletasks.emulators.moto import MotoServer
from simpletasks.message import BasicInfo, TaskMessage
from simpletasks.scheduler import schedule

logger = logging.getLogger("benchmarks.scale")

KINDS = {"noop": 0.0, "work_10ms": 0.01}
#: RabbitMQ: kind -> (WorkTask seconds (negative: CPU seconds), tasks per run, processes)
AMQP_KINDS = {"wait_50ms": (0.05, 200, [1, 2, 4, 8]), "cpu_20ms": (-0.02, 120, [1, 2])}


def run_point(
    moto: MotoServer | None,
    moto_pid: int | None,
    workdir: Path,
    processes: int,
    seconds: float,
    n: int,
) -> dict[str, Any]:
    """Run ``n`` tasks of ``seconds`` on ``processes`` fresh daemons; return the figures.

    Without ``moto`` the queue is on the machine's RabbitMQ (``moto_pid``: the broker's).
    """
    cluster = make_cluster("sqs" if moto is not None else "amqp", workdir, moto)
    log = workdir / "work.log"
    daemons = [
        DaemonProcess(cluster, f"d{i}", task="chaos_tasks:WorkTask", lease=30, concurrency=1)
        for i in range(processes)
    ]
    try:
        wait_until(lambda: all(d.ready() for d in daemons), 120, "daemons started")
        time.sleep(0.5)  # let each reach its first receive
        payload = {"seconds": seconds, "log": str(log)}
        tasks = [TaskMessage(BasicInfo(i, "WORK", ""), payload) for i in range(n)]
        moto0 = process_cpu_seconds(moto_pid) if moto_pid else None
        daemons0 = sum(process_cpu_seconds(d.pid) or 0.0 for d in daemons)
        t0 = time.time()
        schedule(cluster.queue(), tasks, threads=4)
        wait_until(lambda: log.exists() and _lines(log) >= n, 600, "tasks done")
        t1 = time.time()
        moto1 = process_cpu_seconds(moto_pid) if moto_pid else None
        daemons1 = sum(process_cpu_seconds(d.pid) or 0.0 for d in daemons)
    finally:
        codes = stop_all(daemons)
        cluster.close()
    rows = [line.split() for line in log.read_text().splitlines()]
    first = min(float(r[1]) for r in rows)
    last = max(float(r[2]) for r in rows)
    window = t1 - t0
    return {
        "processes": processes,
        "tasks": n,
        "executions": len(rows),
        "seconds": round(last - first, 3),
        "rate": round(n / (last - first), 1),
        "moto_cpu_share": (
            round((moto1 - moto0) / window, 2) if moto0 is not None and moto1 is not None else None
        ),
        "daemons_cpu_share": round((daemons1 - daemons0) / window, 2),
        "exit_codes": sorted(set(codes.values()), key=str),
    }


def _lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def summarize_points(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Median rate and CPU shares of one point's samples."""
    return {
        "rate_median": round(statistics.median(s["rate"] for s in samples), 1),
        "rates": [s["rate"] for s in samples],
        "moto_cpu_share_median": round(
            statistics.median(s["moto_cpu_share"] or 0 for s in samples), 2
        ),
        "daemons_cpu_share_median": round(
            statistics.median(s["daemons_cpu_share"] for s in samples), 2
        ),
        "duplicates": sum(s["executions"] - s["tasks"] for s in samples),
        "exit_codes": sorted({c for s in samples for c in s["exit_codes"]}, key=str),
    }


def plot(result: dict[str, Any], path: str) -> None:
    """Throughput and speedup against processes, one line per kind of task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for kind, points in result["results"].items():
        procs = [int(p) for p in points]
        rates = [points[str(p)]["rate_median"] for p in procs]
        left.plot(procs, rates, marker="o", label=kind)
        right.plot(procs, [r / rates[0] for r in rates], marker="o", label=kind)
    procs = result["params"]["processes"]
    right.plot(procs, procs, linestyle="--", color="grey", label="linear")
    machine = result["machine"]
    for ax, ylabel in ((left, "tasks / s (median)"), (right, "speedup vs 1 process")):
        ax.set_xlabel("daemon processes (concurrency 1 each)")
        ax.set_ylabel(ylabel)
        ax.set_xticks(procs)
        ax.grid(alpha=0.3)
        ax.legend()
    where = result["params"].get("where", "one SQS queue (moto server)")
    fig.suptitle(
        f"simpletasks on {where}, {machine['nproc']} cores "
        f"({machine['cpu_model']}), {result['date'][:10]}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    logger.info("plot written to %s", path)


def main(argv: list[str] | None = None) -> int:
    """Run every point over several rounds; print JSON (and plot it if asked)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--messages", type=int, default=200, help="tasks per run")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="1 round of 150 tasks")
    parser.add_argument("--output", help="also write the JSON here")
    parser.add_argument("--plot", help="write a PNG plot here (needs matplotlib)")
    parser.add_argument("--backend", choices=["sqs", "amqp"], default="sqs")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.messages = 1, 150
    setup_logging()
    if args.backend == "amqp":
        return main_amqp(args)
    points = [(kind, p) for kind in KINDS for p in args.processes]
    samples: dict[tuple[str, int], list[dict[str, Any]]] = {point: [] for point in points}
    with MotoServer() as moto, tempfile.TemporaryDirectory() as tmp:
        children = child_pids()
        moto_pid = children[0] if len(children) == 1 else None
        for r in range(args.rounds):
            shift = r * 3 % len(points)
            for kind, p in points[shift:] + points[:shift]:
                workdir = Path(tmp) / f"{kind}-{p}-{r}"
                sample = run_point(moto, moto_pid, workdir, p, KINDS[kind], args.messages)
                logger.info("round %d %s x%d: %.1f tasks/s", r, kind, p, sample["rate"])
                samples[(kind, p)].append(sample)
    results: dict[str, dict[str, Any]] = {}
    for kind in KINDS:
        base = statistics.median(s["rate"] for s in samples[(kind, args.processes[0])])
        results[kind] = {}
        for p in args.processes:
            summary = summarize_points(samples[(kind, p)])
            summary["speedup"] = round(summary["rate_median"] / base, 2)
            results[kind][str(p)] = summary
    result = {
        "scenario": "scale",
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "machine": machine_info(),
        "versions": versions("simpletasks", "boto3", "moto"),
        "params": {
            "processes": args.processes,
            "concurrency": 1,
            "tasks_per_run": args.messages,
            "rounds": args.rounds,
        },
        "results": results,
    }
    emit(result, args.output)
    if args.plot:
        plot(result, args.plot)
    return 0


def main_amqp(args: Any) -> int:
    """The RabbitMQ variant: :data:`AMQP_KINDS`, points interleaved over rounds."""
    from _queue_benches import find_pid

    points = [(kind, p) for kind, (_, _, procs) in AMQP_KINDS.items() for p in procs]
    samples: dict[tuple[str, int], list[dict[str, Any]]] = {point: [] for point in points}
    broker_pid = find_pid("beam.smp")
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            shift = r * 3 % len(points)
            for kind, p in points[shift:] + points[:shift]:
                seconds, n, _ = AMQP_KINDS[kind]
                workdir = Path(tmp) / f"{kind}-{p}-{r}"
                sample = run_point(None, broker_pid, workdir, p, seconds, n)
                logger.info("round %d %s x%d: %.1f tasks/s", r, kind, p, sample["rate"])
                samples[(kind, p)].append(sample)
    results: dict[str, dict[str, Any]] = {}
    for kind, (_, _, procs) in AMQP_KINDS.items():
        results[kind] = {}
        for p in procs:
            summary = summarize_points(samples[(kind, p)])
            summary["broker_cpu_share_median"] = summary.pop("moto_cpu_share_median")
            # speedup as the median of per-round ratios to that round's 1-process run
            ratios = [
                s["rate"] / base["rate"]
                for s, base in zip(samples[(kind, p)], samples[(kind, 1)], strict=True)
            ]
            summary["speedup"] = round(statistics.median(ratios), 2)
            summary["speedups"] = [round(x, 2) for x in ratios]
            results[kind][str(p)] = summary
    result = {
        "scenario": "scale_amqp",
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "machine": machine_info(),
        "versions": versions("simpletasks", "pika"),
        "params": {
            "processes": [1, 2, 4, 8],
            "where": "one RabbitMQ quorum queue (127.0.0.1)",
            "concurrency": 1,
            "kinds": {k: {"task_seconds": v[0], "tasks": v[1]} for k, v in AMQP_KINDS.items()},
            "rounds": args.rounds,
        },
        "results": results,
    }
    emit(result, args.output)
    if args.plot:
        plot(result, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
