"""Crash run: daemons SIGKILLed at random while they work must lose nothing.

``tasks`` ``CHAOS`` tasks (each writes ``sha256(id)`` to ``out/<id>`` and logs every
execution) go to one queue; ``daemons`` ``python -m simpletasks run`` processes work on it
while a chaos loop SIGKILLs a random one every few seconds and starts a new one in its place.
Once the queue is drained, the remaining daemons get SIGTERM and must exit 0, and the run
checks that every output exists and is right, that nothing is left on the task queue, that
the error queue is empty, and counts repeated executions: only tasks that a killed daemon
held may run again.

Each backend also gets a run without kills, as the baseline of the wall time.

Usage::

    python benchmarks/chaos.py                      # SQS on moto, then file; 1,000 tasks
    python benchmarks/chaos.py --backend sqs --tasks 200 --kills 3 --output result.json
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from _chaos_checks import LEASE_WARNING, analyse, check_outputs, problems, summarize_warnings
from _common import emit, machine_info, setup_logging, versions
from _daemons import BACKENDS, Cluster, DaemonProcess, make_cluster, read_executions, stop_all

from simpletasks.emulators.moto import MotoServer
from simpletasks.message import BasicInfo, TaskMessage
from simpletasks.scheduler import schedule

logger = logging.getLogger("benchmarks.chaos")


@dataclass(frozen=True)
class ChaosParams:
    """One crash run.

    Attributes:
        tasks: Tasks to run.
        daemons: Daemon processes working at once.
        kills: Daemons to stop by ``signal`` (fewer if the queue drains first).
        interval: Seconds between kills, drawn uniformly from this range; the first comes
            that long after the first task started.
        signal: ``"kill"`` (SIGKILL: a crash) or ``"term"`` (SIGTERM: a graceful stop,
            with ``grace`` seconds for running tasks).
        lease: ``--lease`` of the daemons.
        grace: ``--grace`` of the daemons.
        concurrency: ``--concurrency`` of each daemon.
        task_seconds: How long each task sleeps before writing its output.
        timeout: Longest wait for the queue to drain.
        seed: Seed of the chaos loop's choices.
        log_level: The daemons' ``--log-level``.
    """

    tasks: int = 1000
    daemons: int = 4
    kills: int = 10
    interval: tuple[float, float] = (2.0, 4.0)
    signal: str = "kill"
    lease: float = 5.0
    grace: float = 5.0
    concurrency: int = 4
    task_seconds: float = 0.1
    timeout: float = 300.0
    seed: int = 1
    log_level: str = "info"


def all_ended(log_dir: Path, tasks: int) -> bool:
    """Whether each of ``tasks`` CHAOS tasks logged the end of a run in ``log_dir``."""
    for i in range(tasks):
        path = log_dir / str(i)
        if not path.exists() or "\nend " not in "\n" + path.read_text():
            return False
    return True


def run_chaos(cluster: Cluster, params: ChaosParams) -> dict[str, Any]:
    """Run the tasks on ``cluster`` under the chaos loop; return what happened.

    Each kill stops a random daemon (SIGKILL, or SIGTERM) and starts a new one in its place
    at once. The result holds ``lost`` (tasks without a correct output), ``duplicates``
    (executions beyond one per task), ``unexplained_duplicates`` (tasks run again although
    no stopped daemon had run them), ``errors`` (error reports), ``crashed`` (daemons that
    exited by themselves), ``exit_codes`` of every daemon stopped by SIGTERM (by the chaos
    loop or at the end; None = it did not exit), the final queue counts, and recovery times.
    Nothing is asserted here.
    """
    p = params
    if p.signal not in ("kill", "term"):
        raise ValueError(f"signal must be 'kill' or 'term', got {p.signal!r}")
    rng = random.Random(p.seed)
    log_dir = cluster.workdir / "runs"
    log_dir.mkdir()
    payload = {"log_dir": str(log_dir), "seconds": p.task_seconds}
    tasks = [TaskMessage(BasicInfo(i, "CHAOS", ""), payload) for i in range(p.tasks)]
    schedule(cluster.queue(), tasks, threads=4)
    everyone: list[DaemonProcess] = []

    def start() -> DaemonProcess:
        daemon = DaemonProcess(
            cluster,
            f"d{len(everyone) + 1}",
            lease=p.lease,
            concurrency=p.concurrency,
            grace=p.grace,
            log_level=p.log_level,
        )
        everyone.append(daemon)
        return daemon

    started = time.time()
    daemons = [start() for _ in range(p.daemons)]
    stopping: list[tuple[DaemonProcess, float]] = []  # SIGTERMed, with the time of it
    exit_codes: list[int | None] = []
    exit_seconds: list[float] = []  # SIGTERM to exit
    kills: list[tuple[int, float]] = []  # (pid, unix time)
    crashed: list[str] = []  # daemons that exited on their own: a bug
    next_kill: float | None = None
    drained_at: float | None = None
    while drained_at is None and time.time() - started < p.timeout:
        now = time.time()
        for i, daemon in enumerate(daemons):
            if not daemon.alive():
                crashed.append(f"{daemon.name} exit {daemon.proc.returncode}")
                daemons[i] = start()
        for daemon, at in list(stopping):
            if not daemon.alive():
                stopping.remove((daemon, at))
                exit_codes.append(daemon.proc.returncode)
                exit_seconds.append(time.time() - at)
        if next_kill is None and any(log_dir.iterdir()):  # work has begun
            next_kill = now + rng.uniform(*p.interval)
        if next_kill is not None and len(kills) < p.kills and now >= next_kill:
            i = rng.randrange(len(daemons))
            victim = daemons[i]
            if p.signal == "kill":
                kills.append((victim.pid, victim.kill()))
            else:
                kills.append((victim.pid, time.time()))
                victim.terminate()
                stopping.append((victim, kills[-1][1]))
            logger.info("%s %s (pid %d)", p.signal, victim.name, victim.pid)
            daemons[i] = start()
            next_kill = now + rng.uniform(*p.interval)
        counts = cluster.counts()
        # Queue counts alone do not say "done" on RabbitMQ: AMQP cannot count the deliveries
        # other clients hold unacked (our daemons' leases and prefetched buffers), so the
        # run also waits until every task has logged the end of a run.
        if counts.visible == 0 and counts.in_flight == 0 and all_ended(log_dir, p.tasks):
            drained_at = time.time()
        else:
            time.sleep(0.2)
    for daemon, at in stopping:
        code = daemon.wait(max(0.1, at + p.grace + 30 - time.time()))
        exit_codes.append(code)
        if code is None:
            daemon.kill()
        else:
            exit_seconds.append(time.time() - at)
    exit_codes += stop_all(daemons, timeout=p.grace + 30).values()
    stats = [d.stats() for d in daemons]
    warnings = summarize_warnings(everyone)
    return {
        "backend": cluster.backend,
        "tasks": p.tasks,
        "wall_seconds": round((drained_at or time.time()) - started, 2),
        "drained": drained_at is not None,
        "signal": "SIGKILL" if p.signal == "kill" else "SIGTERM",
        "kills": len(kills),
        "daemons_started": len(everyone),
        "crashed": crashed,
        "exit_codes": exit_codes,
        "sigterm_to_exit_seconds_max": round(max(exit_seconds), 2) if exit_seconds else None,
        "succeeded_in_surviving_daemons": sum(s["succeeded"] for s in stats if s),
        **check_outputs(cluster, p.tasks),
        **analyse(read_executions(log_dir), kills, p.tasks),
        "daemon_warnings": warnings,
        "lease_warnings": sum(n for text, n in warnings.items() if LEASE_WARNING.search(text)),
        "final_counts": asdict(cluster.counts()),
        "errors": cluster.counts(cluster.error_url).visible,
        "error_samples": [
            {k: r.get(k) for k in ("task_id", "phase", "error_message", "attempt", "final")}
            for r in cluster.drain_reports(cluster.error_url, 5)
        ],
    }


def main(argv: list[str] | None = None) -> int:
    """Run the crash scenario (and its no-kill baseline) per backend; print JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=[*BACKENDS, "both"], default="both")
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--daemons", type=int, default=4)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--interval", type=float, nargs=2, default=(2.0, 4.0))
    parser.add_argument("--signal", choices=["kill", "term"], default="kill")
    parser.add_argument("--lease", type=float, default=5.0)
    parser.add_argument("--grace", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--task-seconds", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--log-level", default="info", help="the daemons' --log-level")
    parser.add_argument("--keep", help="keep the work directories (logs) under this directory")
    parser.add_argument("--no-baseline", action="store_true", help="skip the no-kill run")
    parser.add_argument("--output", help="also write the JSON here")
    args = parser.parse_args(argv)
    setup_logging()
    params = ChaosParams(
        tasks=args.tasks,
        daemons=args.daemons,
        kills=args.kills,
        interval=tuple(args.interval),
        signal=args.signal,
        lease=args.lease,
        grace=args.grace,
        concurrency=args.concurrency,
        task_seconds=args.task_seconds,
        seed=args.seed,
        log_level=args.log_level,
    )
    backends = list(BACKENDS) if args.backend == "both" else [args.backend]
    results: dict[str, Any] = {}
    ok = True
    with MotoServer() as moto, tempfile.TemporaryDirectory() as scratch:
        tmp = Path(args.keep) / time.strftime("%Y%m%d-%H%M%S") if args.keep else Path(scratch)
        for backend in backends:
            runs: dict[str, Any] = {}
            if not args.no_baseline:
                logger.info("%s: baseline run without kills", backend)
                cluster = make_cluster(backend, tmp / f"{backend}-baseline", moto)
                try:
                    runs["baseline"] = run_chaos(cluster, replace(params, kills=0))
                finally:
                    cluster.close()
            logger.info("%s: chaos run", backend)
            cluster = make_cluster(backend, tmp / f"{backend}-chaos", moto)
            try:
                runs["chaos"] = chaos = run_chaos(cluster, params)
            finally:
                cluster.close()
            if "baseline" in runs:
                chaos["wall_vs_baseline"] = round(
                    chaos["wall_seconds"] / runs["baseline"]["wall_seconds"], 2
                )
            for run in runs.values():
                run["problems"] = problems(run)
                ok = ok and not run["problems"]
            results[backend] = runs
    emit(
        {
            "scenario": "crash",
            "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
            "machine": machine_info(),
            "versions": versions("simpletasks", "boto3", "moto"),
            "params": asdict(params),
            "results": results,
            "ok": ok,
        },
        args.output,
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
