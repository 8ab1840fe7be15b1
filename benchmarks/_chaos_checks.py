"""Checks of a crash run's result: outputs, repeated executions, recovery, daemon warnings.

Used by :func:`chaos.run_chaos` and the tests: :func:`analyse` reads the per-task execution
logs, :func:`check_outputs` the bucket, :func:`summarize_warnings` the daemons' logs, and
:func:`problems` says what, in a whole result, breaks the delivery guarantee.
"""

from __future__ import annotations

import re
import statistics
from collections import Counter
from typing import Any

from _daemons import Cluster, DaemonProcess, Execution
from chaos_tasks import expected_output, output_key

#: Daemon log lines saying a lease could not be kept or an ack did not take.
#: ("extend of message ... ignored" is left out: the heartbeat may renew a lease while its
#: message is being deleted, and the queue then refuses the renewal of a deleted message.)
LEASE_WARNING = re.compile(r"could not extend lease|ack failed|ack of message .* ignored")
#: On SQS, repeats the queue itself may cause, tolerated up to this share of the tasks (at
#: least 2) when no daemon logged a LEASE_WARNING.
QUEUE_REPEATS = ("acked_then_redelivered", "overlapping")
QUEUE_REPEAT_SHARE = 0.01
REPEAT_KINDS = ("acked_then_redelivered", "overlapping", "cut_short_in_live_daemon")


def problems(result: dict[str, Any]) -> list[str]:
    """What went wrong in a :func:`run_chaos` result (empty if nothing).

    Every repeated execution not explained by a stopped daemon is a problem, except on SQS,
    where a few ``acked_then_redelivered`` and ``overlapping`` repeats (at most 1% of the
    tasks, or 2) are the queue's doing when no daemon logged a lease or ack warning: an SQS
    standard queue may deliver a message twice, and moto's server, which answers requests on
    concurrent threads without a lock on its queues, does (it hands one message to two
    concurrent receivers, and loses concurrent deletes: see ``benchmarks/moto_races.py``).
    """
    found = []
    if not result["drained"]:
        found.append(f"task queue not drained: {result['final_counts']}")
    if result["lost"] or result["never_ran"]:
        found.append(
            f"{result['lost']} task(s) lost (missing {result['missing']}, wrong "
            f"{result['wrong']}); {result['never_ran']} never ran"
        )
    if result["final_counts"] != {"visible": 0, "in_flight": 0}:
        found.append(f"task queue not empty at the end: {result['final_counts']}")
    if result["errors"]:
        found.append(f"{result['errors']} error report(s): {result['error_samples']}")
    if result["crashed"]:
        found.append(f"daemons exited by themselves: {result['crashed']}")
    if any(code != 0 for code in result["exit_codes"]):
        found.append(f"daemon exit codes after SIGTERM: {result['exit_codes']}")
    repeats = dict(result["unexplained_duplicates"])
    queue_side = sum(repeats[kind] for kind in QUEUE_REPEATS)
    bound = max(2, int(QUEUE_REPEAT_SHARE * result["tasks"]))
    if result["backend"] == "sqs" and not result["lease_warnings"] and queue_side <= bound:
        for kind in QUEUE_REPEATS:
            repeats.pop(kind)
    if any(repeats.values()):
        found.append(
            f"task(s) ran again though no stopped daemon had run them: {repeats}; "
            f"{result['unexplained_samples']}"
        )
    return found


def summarize_warnings(daemons: list[DaemonProcess]) -> dict[str, int]:
    """Count the daemons' WARNING/ERROR log lines by kind (ids and numbers blanked out)."""
    kinds: Counter[str] = Counter()
    for daemon in daemons:
        for line in daemon.warnings():
            text = line.split(": ", 1)[-1]
            kinds[re.sub(r"[0-9a-f]{8}-[0-9a-f-]{27}|\d+(\.\d+)?", "#", text)[:160]] += 1
    return dict(kinds.most_common())


def check_outputs(cluster: Cluster, tasks: int) -> dict[str, Any]:
    """Count tasks whose output is missing or wrong (``lost``) and list a few."""
    outputs = cluster.read_outputs([output_key(i) for i in range(tasks)])
    missing = [i for i in range(tasks) if outputs[output_key(i)] is None]
    wrong = [i for i in range(tasks) if outputs[output_key(i)] not in (None, expected_output(i))]
    return {"lost": len(missing) + len(wrong), "missing": missing[:20], "wrong": wrong[:20]}


def analyse(
    runs: dict[int, list[Execution]], kills: list[tuple[int, float]], tasks: int
) -> dict[str, Any]:
    """Count executions and duplicates, and time the recovery from each kill.

    A repeated execution is *explained* when every execution of that task but its last
    completed one ran in a process that was stopped by the chaos loop (it died mid-task, or
    before its batched ack went out). Other repeats are counted by kind (tasks per kind):
    ``acked_then_redelivered`` (it finished in a live daemon, which then deleted the message,
    and the queue delivered it again later), ``overlapping`` (another execution began while a
    live daemon ran it) and ``cut_short_in_live_daemon``. The recovery time of a kill runs
    from the kill to the completion, by another process, of the last task the killed process
    had in hand.
    """
    killed = {pid for pid, _ in kills}
    executions = sum(len(r) for r in runs.values())
    unexplained: dict[str, list[dict[str, Any]]] = {kind: [] for kind in REPEAT_KINDS}
    for task_id, execs in runs.items():
        done = [e for e in execs if e.end is not None]
        last = max(done, key=lambda e: e.end or 0.0) if done else None
        kinds = set()
        for e in execs:
            if e is last or e.pid in killed:
                continue
            others = [o for o in execs if o is not e]
            if e.end is None:
                kinds.add("cut_short_in_live_daemon")
            elif any(o.start < e.end and (o.end is None or o.end > e.start) for o in others):
                kinds.add("overlapping")
            else:
                kinds.add("acked_then_redelivered")
        for kind in kinds:
            unexplained[kind].append(
                {"task": task_id, "runs": [[e.pid, e.start, e.end] for e in execs]}
            )
    recoveries = []
    for pid, at in kills:
        finished = []
        for execs in runs.values():
            if not any(e.pid == pid and e.end is None for e in execs):
                continue
            later = [e.end for e in execs if e.pid != pid and e.end is not None and e.end > at]
            finished.append(min(later) if later else float("inf"))
        if finished:
            recoveries.append(max(finished) - at)
    return {
        "executions": executions,
        "never_ran": tasks - sum(1 for r in runs.values() if r),
        "duplicates": executions - len([r for r in runs.values() if r]),
        "tasks_run_more_than_once": sum(1 for r in runs.values() if len(r) > 1),
        "cut_short": sum(1 for r in runs.values() for e in r if e.end is None),
        "unexplained_duplicates": {kind: len(tasks) for kind, tasks in unexplained.items()},
        "unexplained_samples": {kind: tasks[:3] for kind, tasks in unexplained.items() if tasks},
        "kills_mid_task": len(recoveries),
        "recovery_seconds": [round(r, 2) for r in recoveries],
        "recovery_seconds_median": round(statistics.median(recoveries), 2) if recoveries else None,
        "recovery_seconds_max": round(max(recoveries), 2) if recoveries else None,
    }
