"""Bad input: many generated bad messages through the daemon, mixed with good ones.

For each family of bad messages in ``tests/bad_messages.py`` (garbage, wrong types, path
traversal, unknown task types, rejected payloads, missing inputs), hypothesis generates
``--examples`` batches of 1-6 bad bodies; each batch runs through a burst daemon on memory
queues, interleaved with good NO_OP tasks. A batch passes if the daemon drained the queue by
itself, every bad body got exactly one final error report with a reason, and every good
task completed once with the right output. Then one large mixed batch goes through SQS on
moto, and the known-bug probes (bodies that made the daemon retry forever when this was
written) are run once each and reported as ``reported`` or ``runaway``.

Prints one JSON document.

Usage::

    python benchmarks/bad_input.py                  # 60 batches per family + SQS, ~2 min
    python benchmarks/bad_input.py --examples 10    # quicker
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import random
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from _common import emit, machine_info, setup_logging, versions

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from bad_messages import BAD_FAMILIES, Outcome, bad_bodies, run_guarded
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as seed_hypothesis
from hypothesis import strategies as st
from tasktypes import SleepTask

from simpletasks.buckets import open_bucket
from simpletasks.cache import FileSystemCache
from simpletasks.datasource import BucketCacheDatasource
from simpletasks.emulators.moto import FAKE_AWS_ENV, MotoServer
from simpletasks.errors import KeyNotFound
from simpletasks.message import BasicInfo, TaskMessage
from simpletasks.queues import QueueService, open_queue
from simpletasks.queues.sqs import SQSQueue
from simpletasks.registry import TaskRegistry
from simpletasks.settings import DaemonSettings
from simpletasks.tasks.noop import NoOpTask

logger = logging.getLogger("benchmarks.bad_input")

SETTINGS = DaemonSettings(
    concurrency=2, wait_seconds=0.02, poll_frequency_seconds=0.02, retry_delay_seconds=0,
    max_attempts=2, burst=True,
)  # fmt: skip
N_INPUTS = 4
#: Bodies that made the daemon retry forever when this benchmark was written.
KNOWN_BUG_PROBES = {
    "integer_of_5000_digits": '{"basic_info": {"id": 1' + "0" * 5000 + ', "name": "NO_OP"}}',
    "escaped_lone_surrogate": '{"basic_info": {"id": 1, "name": "\\ud800"}}',
    "escaped_U+FFFE_in_good_payload": (
        '{"basic_info": {"id": 1000, "name": "NO_OP", "base_directory": "good", '
        '"inputs": ["0_input/0.dat"]}, "payload_info": "\\ufffe"}'
    ),
    "nested_600_deep": '{"basic_info": {"id": 1, "name": "NOPE"}, "payload_info": '
    + "[" * 600
    + "]" * 600
    + "}",
}


def registry() -> TaskRegistry:
    reg = TaskRegistry()
    reg.register(NoOpTask)
    reg.register(SleepTask)
    return reg


def good_bodies(n: int) -> list[str]:
    return [
        TaskMessage(
            BasicInfo(1000 + k, "NO_OP", "good", (f"0_input/{k % N_INPUTS}.dat",)), {"k": k}
        ).to_json()
        for k in range(n)
    ]


def run_batch(
    bad: list[str], good: list[str], queues: dict[str, QueueService], tmp: Path
) -> tuple[Outcome, list[str]]:
    """Run one batch; return the outcome and the problems found (empty = passed)."""
    bucket = open_bucket(f"mem://bench-{uuid.uuid4().hex[:8]}")
    for j in range(N_INPUTS):
        bucket.upload_fileobj(io.BytesIO(f"in {j}".encode()), f"good/0_input/{j}.dat")
    bodies = bad + good
    random.Random(len(bodies)).shuffle(bodies)
    outcome = run_guarded(
        queue=queues["tasks"],
        error_queue=queues["errors"],
        done_queue=queues["done"],
        registry=registry(),
        datasource=BucketCacheDatasource(bucket, FileSystemCache(tmp)),
        bodies=bodies,
        settings=SETTINGS,
        timeout=60,
    )
    problems = []
    if outcome.runaway:
        problems.append(f"runaway: {outcome.runaway}")
    done = Counter(r["task_id"] for r in outcome.done)
    if set(done) != {1000 + k for k in range(len(good))}:
        problems.append(f"good tasks done: {sorted(done)} of {len(good)}")
    if set(outcome.final_by_body) != set(outcome.expected_final(bad)):
        problems.append("bad bodies without exactly one final report")
    if any(not r["error_message"].strip() for r in outcome.errors):
        problems.append("a report without a reason")
    for k in range(len(good)):
        buf = io.BytesIO()
        with contextlib.suppress(KeyNotFound):
            bucket.download_fileobj(f"good/0_output/{k % N_INPUTS}.dat", buf)
        if buf.getvalue() != f"in {k % N_INPUTS}".encode():
            problems.append(f"wrong output for good task {k}")
    return outcome, problems


def memory_queues() -> dict[str, QueueService]:
    run = uuid.uuid4().hex[:8]
    return {k: open_queue(f"mem://{k}-{run}") for k in ("tasks", "errors", "done")}


def run_family(name: str, examples: int, seed: int) -> dict[str, Any]:
    totals: Counter[str] = Counter()
    phases: Counter[str] = Counter()
    problems: list[str] = []

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(bad=st.lists(BAD_FAMILIES[name], min_size=1, max_size=6), n_good=st.integers(1, 3))
    def batch(bad: list[str], n_good: int) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            outcome, found = run_batch(bad, good_bodies(n_good), memory_queues(), Path(tmp))
        totals.update(batches=1, bad=len(bad), good=n_good, reports=len(outcome.errors))
        totals.update(final_reports=sum(r["final"] for r in outcome.errors))
        totals.update(failed_batches=bool(found), runaway=bool(outcome.runaway))
        phases.update(f"{r['phase']}:{r['error_type']}" for r in outcome.errors if r["final"])
        problems.extend(found[:2])

    started = time.monotonic()
    seed_hypothesis(seed)(batch)()
    return {
        **dict(totals),
        "seconds": round(time.monotonic() - started, 1),
        "final_reports_by_phase_and_type": dict(phases.most_common()),
        "problems": problems[:5],
    }


def sample_bodies(n: int, seed: int) -> list[str]:
    """``n`` bad bodies drawn from all families (one generated example, not shrunk)."""
    out: list[str] = []

    @seed_hypothesis(seed)
    @settings(
        max_examples=1,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(st.lists(bad_bodies, min_size=n, max_size=n))
    def draw(bodies: list[str]) -> None:
        out.extend(bodies)

    draw()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=60, help="batches per family")
    parser.add_argument("--sqs-bad", type=int, default=150, help="bad bodies in the SQS run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", help="also write the JSON here")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    setup_logging(args.verbose)
    logging.getLogger("simpletasks").setLevel(logging.CRITICAL)  # thousands of reports
    os.environ.update(FAKE_AWS_ENV)
    started = time.monotonic()
    families = {}
    for name in sorted(BAD_FAMILIES):
        logger.info("family %s", name)
        families[name] = run_family(name, args.examples, args.seed)
    probes = {}
    for name, body in KNOWN_BUG_PROBES.items():
        good = good_bodies(1)
        bad = [] if body.startswith('{"basic_info": {"id": 1000') else [body]
        with tempfile.TemporaryDirectory() as tmp:
            outcome, found = run_batch(bad, good if bad else [body], memory_queues(), Path(tmp))
        probes[name] = {"result": "runaway" if outcome.runaway else "reported", "problems": found}
    logger.info("SQS run with %d bad bodies", args.sqs_bad)
    bad = sample_bodies(args.sqs_bad, args.seed)
    good = good_bodies(max(3, args.sqs_bad // 5))
    with MotoServer() as moto, tempfile.TemporaryDirectory() as tmp:
        run = uuid.uuid4().hex[:8]
        queues: dict[str, QueueService] = {
            k: SQSQueue(f"bad-{k}-{run}", endpoint_url=moto.endpoint_url, create=True)
            for k in ("tasks", "errors", "done")
        }
        t0 = time.monotonic()
        outcome, found = run_batch(bad, good, queues, Path(tmp))
        sqs = {
            "bad": len(bad),
            "good": len(good),
            "final_reports": sum(r["final"] for r in outcome.errors),
            "reports": len(outcome.errors),
            "done_reports": len(outcome.done),
            "runaway": outcome.runaway,
            "left_on_queue": list(outcome.left),
            "seconds": round(time.monotonic() - t0, 1),
            "problems": found,
        }
    emit(
        {
            "benchmark": "bad_input",
            "machine": machine_info(),
            "versions": versions("simpletasks", "hypothesis", "moto"),
            "parameters": vars(args),
            "seconds": round(time.monotonic() - started, 1),
            "families": families,
            "sqs": sqs,
            "known_bug_probes": probes,
        },
        args.output,
    )


if __name__ == "__main__":
    main()
