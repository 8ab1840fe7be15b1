"""Fault injection: the NO_OP job through the daemon while its backends misbehave.

The daemon's SQS queues and bucket are reached through fault-injecting proxies
(``tests/faultproxy.py``) in front of moto (SQS, S3) and fake-gcs-server (GCS). Scenarios:

* ``s3_transient_12pct`` / ``s3_transient_30pct``: about 12% / 30% of all SQS and S3
  requests answer 500, 503, throttling, or have their connection reset, and 15% / 30% of
  object downloads are cut off half-way; every task must complete with correct outputs;
* ``sqs_lost_answers``: 10% of SQS requests are reset before reaching moto and 10% after
  moto acted on them (lost receives, deletes, reports); every task must complete;
* ``s3_permanent_get_500``: every download of an input answers 500; every task must end on
  the error queue with ``final: true`` after ``max_attempts``, with the reason;
* ``gcs_transient_12pct`` (and with ``--gcs-permanent``, ``gcs_permanent_download_500``):
  the same on a GCS bucket, if google-cloud-storage and fake-gcs-server are installed.

The daemons use the framework's own clients (boto3 standard retries, google-cloud-storage's
default retry). Prints one JSON document: per scenario, completion, outputs, reports, the
daemon's counts and what each proxy saw and injected.

Usage::

    python benchmarks/faults.py                # about 3 min on 2 cores
    python benchmarks/faults.py --quick        # about 40 s
    python benchmarks/faults.py --gcs-permanent --output faults.json   # adds ~4 min
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import emit, machine_info, setup_logging, versions

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from fault_scenario import GCSStorage, S3Storage, run_noop_with_faults
from faultproxy import Fault

from simpletasks.emulators.moto import FAKE_AWS_ENV, MotoServer

logger = logging.getLogger("benchmarks.faults")


def transient(scale: float, download_op: str) -> tuple[list[Fault], list[Fault]]:
    """(SQS rules, bucket rules) failing about ``12% * scale`` of all requests."""
    rules = [
        Fault("500", 0.04 * scale),
        Fault("503", 0.02 * scale),
        Fault("throttle", 0.03 * scale),
        Fault("reset", 0.03 * scale),
    ]
    return rules, [Fault("truncate", 0.15 * scale, operation=download_op), *rules]


def trim(result: dict[str, Any]) -> dict[str, Any]:
    """Drop the long lists from a run's result (keeping the first few error reports)."""
    out = {k: v for k, v in result.items() if k not in ("completed_ids", "errors")}
    out["first_error_reports"] = result["errors"][:4]
    phases: dict[str, int] = {}
    for report in result["errors"]:
        name = f"{report['phase']}:{report['error_type']}:{'final' if report['final'] else 'retry'}"
        phases[name] = phases.get(name, 0) + 1
    out["error_reports_by_kind"] = phases
    for proxy in out["proxies"].values():
        proxy.pop("requests_by_operation", None)
    return out


def gcs_server() -> Any:
    """A started fake-gcs-server, or None if GCS cannot be emulated here."""
    try:
        import google.cloud.storage  # noqa: F401

        from simpletasks.emulators.gcs import FakeGcsServer, find_binary
    except ImportError as exc:
        logger.warning("no GCS scenarios: %s", exc)
        return None
    if find_binary() is None:
        logger.warning("no GCS scenarios: no fake-gcs-server binary")
        return None
    return FakeGcsServer().start()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=80, help="tasks per transient scenario")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="small runs (a smoke test)")
    parser.add_argument("--gcs-permanent", action="store_true", help="add the slow GCS case")
    parser.add_argument("--output", help="also write the JSON here")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    setup_logging(args.verbose)
    os.environ.update(FAKE_AWS_ENV)
    os.environ.pop("AWS_ENDPOINT_URL", None)
    n = 12 if args.quick else args.tasks
    common = {"seed": args.seed, "concurrency": args.concurrency}
    results: dict[str, Any] = {}
    started = time.monotonic()
    with MotoServer() as moto, tempfile.TemporaryDirectory() as tmp:
        scenarios: list[tuple[str, dict[str, Any]]] = []
        for name, scale, tasks in (("12pct", 1.0, n), ("30pct", 2.5, max(6, n // 2))):
            sqs, bucket = transient(scale, "GetObject")
            scenarios.append(
                (
                    f"s3_transient_{name}",
                    {"tasks": tasks, "sqs_faults": sqs, "bucket_faults": bucket},
                )
            )
        lost = [Fault("reset", 0.1), Fault("drop_response", 0.1)]
        scenarios.append(
            ("sqs_lost_answers", {"tasks": max(6, n // 2), "sqs_faults": lost, "lease_seconds": 3})
        )
        get_500 = [Fault("500", 1.0, operation="GetObject", path="/0_input/")]
        scenarios.append(
            (
                "s3_permanent_get_500",
                {"tasks": 1 if args.quick else 3, "bucket_faults": get_500, "max_attempts": 3,
                 "retry_delay_seconds": 0.5},
            )
        )  # fmt: skip
        for name, kwargs in scenarios:
            logger.info("scenario %s", name)
            result = run_noop_with_faults(
                moto, Path(tmp, name), storage=S3Storage(moto), **common, **kwargs
            )
            results[name] = trim(result)
        gcs = gcs_server()
        if gcs is not None:
            try:
                _, bucket = transient(1.0, "DownloadObject")
                gcs_runs: list[tuple[str, dict[str, Any]]] = [
                    ("gcs_transient_12pct", {"tasks": n, "bucket_faults": bucket})
                ]
                if args.gcs_permanent:
                    media_500 = [Fault("500", 1.0, operation="DownloadObject", path="/0_input/")]
                    gcs_runs.append(
                        (
                            "gcs_permanent_download_500",
                            {"tasks": 1, "bucket_faults": media_500, "max_attempts": 2,
                             "timeout": 600},
                        )
                    )  # fmt: skip
                for name, kwargs in gcs_runs:
                    logger.info("scenario %s", name)
                    result = run_noop_with_faults(
                        moto, Path(tmp, name), storage=GCSStorage(gcs), **common, **kwargs
                    )
                    results[name] = trim(result)
            finally:
                gcs.stop()
        else:
            results["gcs"] = "skipped: google-cloud-storage or fake-gcs-server missing"
    emit(
        {
            "benchmark": "faults",
            "machine": machine_info(),
            "versions": versions(
                "simpletasks", "boto3", "botocore", "moto", "google-cloud-storage"
            ),
            "parameters": {**vars(args), "tasks_transient": n},
            "seconds": round(time.monotonic() - started, 1),
            "scenarios": results,
        },
        args.output,
    )


if __name__ == "__main__":
    main()
