"""Backend faults between the daemon and its emulators: transient ones are absorbed by the
clients' retries and the daemon's at-least-once delivery, permanent ones end on the error
queue with the reason. Short runs; ``benchmarks/faults.py`` runs the long ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fault_scenario import GCSStorage, S3Storage, run_noop_with_faults, s3_client_for
from faultproxy import Fault

from simpletasks.emulators.moto import MotoServer

#: About 12% of all requests fail, in every way the proxy knows before forwarding.
TRANSIENT = [Fault("500", 0.04), Fault("503", 0.02), Fault("throttle", 0.03), Fault("reset", 0.03)]
#: And a sixth of the object downloads are cut off half-way.
S3_TRANSIENT = [Fault("truncate", 0.15, operation="GetObject"), *TRANSIENT]
GCS_TRANSIENT = [Fault("truncate", 0.15, operation="DownloadObject"), *TRANSIENT]


def check_all_completed(result: dict[str, Any], tasks: int) -> None:
    assert not result["timed_out"], result
    assert result["completed"] == tasks, result
    assert result["outputs_correct"] == result["outputs_expected"], result
    assert result["final_error_reports"] == 0, result["errors"]
    assert result["left_on_queue"] == {"visible": 0, "in_flight": 0}


def test_transient_faults_every_task_completes_with_correct_outputs(
    moto_server: MotoServer, tmp_path: Path
) -> None:
    result = run_noop_with_faults(
        moto_server, tmp_path / "cache", tasks=6, sqs_faults=TRANSIENT, bucket_faults=S3_TRANSIENT
    )
    check_all_completed(result, 6)
    injected = result["proxies"]["sqs"]["injected"] + result["proxies"]["bucket"]["injected"]
    assert injected >= 3, result["proxies"]  # the faults did happen


def test_transient_gcs_faults_every_task_completes(
    moto_server: MotoServer, gcs_emulator: Any, tmp_path: Path
) -> None:
    result = run_noop_with_faults(
        moto_server,
        tmp_path / "cache",
        tasks=4,
        bucket_faults=GCS_TRANSIENT,
        storage=GCSStorage(gcs_emulator),
    )
    check_all_completed(result, 4)
    assert result["proxies"]["bucket"]["injected"] >= 2, result["proxies"]


def test_permanent_s3_get_failure_reaches_the_error_queue_after_the_attempt_limit(
    moto_server: MotoServer, tmp_path: Path
) -> None:
    always_500 = [Fault("500", 1.0, operation="GetObject", path="/0_input/")]
    result = run_noop_with_faults(
        moto_server,
        tmp_path / "cache",
        tasks=1,
        bucket_faults=always_500,
        max_attempts=2,
        retry_delay_seconds=0.1,
        storage=S3Storage(moto_server, s3_client_for(1)),  # 1 retry per call: a short test
    )
    assert not result["timed_out"], result
    assert result["completed"] == 0
    assert result["left_on_queue"] == {"visible": 0, "in_flight": 0}
    reports = result["errors"]
    assert [(r["task_id"], r["attempt"], r["final"]) for r in reports] == [
        (1, 1, False),
        (1, 2, True),
    ]
    for r in reports:
        assert r["phase"] == "prepare"
        assert r["error_type"] == "ClientError"
        assert "InternalError" in r["error_message"] and "GetObject" in r["error_message"]
        assert "injected fault" in r["error_message"]
    attempts, inputs, tries = 2, 2, 2
    assert result["proxies"]["bucket"]["injected_by_kind"] == {"500": attempts * inputs * tries}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["reset", "drop_response"])
def test_a_lost_sqs_answer_never_loses_a_task(
    moto_server: MotoServer, tmp_path: Path, kind: str
) -> None:
    """Answers to a quarter of the SQS calls are lost (after moto acted on them, for
    ``drop_response``): receives whose messages nobody got, deletes and reports the daemon
    thinks failed. Every task still completes, possibly more than once."""
    result = run_noop_with_faults(
        moto_server, tmp_path / "cache", tasks=6, sqs_faults=[Fault(kind, 0.25)], lease_seconds=2
    )
    check_all_completed(result, 6)


def test_a_slow_delete_does_not_make_a_finished_task_run_again(
    moto_server: MotoServer, tmp_path: Path
) -> None:
    """The DeleteMessageBatch is held 2 s: longer than what is left of a 1 s lease."""
    slow_delete = [Fault("delay", 1.0, operation="DeleteMessageBatch", seconds=2.0)]
    result = run_noop_with_faults(
        moto_server, tmp_path / "cache", tasks=1, sqs_faults=slow_delete, lease_seconds=1
    )
    check_all_completed(result, 1)
    assert result["daemon"]["received"] == 1, result["duplicated_runs_attempts"]
    assert result["done_reports"] == 1
