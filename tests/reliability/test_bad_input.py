"""Bad messages never stop the daemon: each reaches the error queue with a reason, and good
messages mixed with them all complete. Hypothesis drives the memory-queue runs; one run of
fixed examples goes through SQS on moto.
"""

from __future__ import annotations

import dataclasses
import io
import json
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bad_messages import BAD_FAMILIES, Outcome, dumps, run_guarded
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tasktypes import SleepTask

from simpletasks.buckets import BucketService, open_bucket
from simpletasks.buckets.memory import MemoryBucket
from simpletasks.cache import FileSystemCache
from simpletasks.datasource import BucketCacheDatasource
from simpletasks.emulators.moto import MotoServer
from simpletasks.message import BasicInfo, TaskMessage
from simpletasks.queues import QueueService, open_queue
from simpletasks.queues.memory import MemoryQueue
from simpletasks.queues.sqs import SQSQueue
from simpletasks.registry import TaskRegistry
from simpletasks.settings import DaemonSettings
from simpletasks.tasks.noop import NoOpTask

FAST = DaemonSettings(
    concurrency=2,
    wait_seconds=0.02,
    poll_frequency_seconds=0.02,
    retry_delay_seconds=0,
    max_attempts=2,
    burst=True,
)
N_INPUTS = 4
PHASES = {"parse", "receive", "prepare", "execute", "finalize"}


@pytest.fixture(autouse=True)
def _fresh_memory() -> Iterator[None]:
    yield
    MemoryQueue.reset_all()
    MemoryBucket.reset_all()


def registry() -> TaskRegistry:
    reg = TaskRegistry()
    reg.register(NoOpTask)
    reg.register(SleepTask)
    return reg


def upload_inputs(bucket: BucketService) -> None:
    for j in range(N_INPUTS):
        bucket.upload_fileobj(io.BytesIO(f"good input {j}\n".encode()), f"good/0_input/{j}.dat")


def good_bodies(n: int) -> list[str]:
    """NO_OP tasks 1000.. that read existing inputs and carry odd but legal payloads."""
    return [
        TaskMessage(
            BasicInfo(1000 + k, "NO_OP", "good", (f"0_input/{k % N_INPUTS}.dat",)),
            {"k": k, "note": "\u202eRTL \U0001f600 \x00 \u2028"},
        ).to_json()
        for k in range(n)
    ]


def interleave(bad: list[str], good: list[str]) -> list[str]:
    out: list[str] = []
    for i in range(max(len(bad), len(good))):
        out += bad[i : i + 1] + good[i : i + 1]
    return out


def check(
    outcome: Outcome,
    bad: list[str],
    good: list[str],
    bucket: BucketService,
    *,
    exactly_once: bool = True,
) -> None:
    """Every bad body has one final report with a reason; every good one is done.

    With ``exactly_once=False`` (SQS, which may deliver a message twice) a body may have
    more than one report.
    """
    assert not outcome.runaway, (outcome.runaway, outcome.stats, outcome.errors[:3])
    assert outcome.left == (0, 0)
    done_ids = sorted(r["task_id"] for r in outcome.done)
    final, expected = outcome.final_by_body, outcome.expected_final(bad)
    if exactly_once:
        assert done_ids == [1000 + k for k in range(len(good))]
        assert final == expected, outcome.errors
    else:
        assert set(done_ids) == {1000 + k for k in range(len(good))}
        assert set(final) == set(expected), outcome.errors
    for report in outcome.errors:
        assert report["phase"] in PHASES
        assert report["error_type"] and report["error_message"].strip()
        if not report["final"]:  # only a task that ran can be retried
            assert report["phase"] == "prepare", report
            assert report["error_type"] in ("KeyNotFound", "InvalidKey"), report
    for k in range(len(good)):
        buf = io.BytesIO()
        bucket.download_fileobj(f"good/0_output/{k % N_INPUTS}.dat", buf)
        assert buf.getvalue() == f"good input {k % N_INPUTS}\n".encode()


def run_on_memory(bad: list[str], good: list[str], cache_root: Path) -> None:
    run = uuid.uuid4().hex[:8]
    bucket = open_bucket(f"mem://data-{run}")
    upload_inputs(bucket)
    outcome = run_guarded(
        queue=open_queue(f"mem://tasks-{run}"),
        error_queue=open_queue(f"mem://errors-{run}"),
        done_queue=open_queue(f"mem://done-{run}"),
        registry=registry(),
        datasource=BucketCacheDatasource(bucket, FileSystemCache(cache_root)),
        bodies=interleave(bad, good),
        settings=FAST,
    )
    check(outcome, bad, good, bucket)


@pytest.mark.parametrize("family", sorted(BAD_FAMILIES))
def test_bad_messages_are_reported_and_good_ones_complete(family: str) -> None:
    @settings(
        max_examples=5,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(bad=st.lists(BAD_FAMILIES[family], min_size=1, max_size=4), n_good=st.integers(1, 3))
    def prop(bad: list[str], n_good: int) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            run_on_memory(bad, good_bodies(n_good), Path(tmp))

    prop()


def _big(size: int) -> str:
    """An invalid message (unknown field) of about ``size`` bytes of UTF-8."""
    filler = "\u00e9" * ((size - 80) // 2)  # two bytes each
    return dumps({"basic_info": {"id": 7, "name": "NO_OP", "huge": filler}})


#: Fixed bad bodies, each with the words its error report must contain.
EXAMPLES: list[tuple[str, str]] = [
    ("not json", "not JSON"),
    ('{"basic_info": {"id": 1.5, "name": "NO_OP"}}', "basic_info.id must be an integer"),
    ('{"basic_info": {"id": 1, "name": ["NO_OP"]}}', "basic_info.name must be a non-empty"),
    ('{"basic_info": {"id": 1, "name": "NO_OP", "inputs": "a.dat"}}', "must be a list"),
    ('{"basic_info": {"id": 1, "name": "NO_OP", "inputs": [7]}}', "inputs[0] must be a string"),
    ('{"basic_info": {"id": 1, "name": "NO_OP", "inputs": ["../x"]}}', "'..' component"),
    ('{"basic_info": {"id": 1, "name": "NO_OP", "inputs": ["/etc/passwd"]}}', "is absolute"),
    ('{"basic_info": {"id": 1, "name": "NO_OP", "inputs": ["a\\\\b"]}}', "backslash"),
    ('{"basic_info": {"id": 1, "name": "NO_OP", "inputs": ["a\\u0000"]}}', "NUL"),
    ('{"basic_info": {"id": 1, "name": "NO_OP", "base_directory": "a/../.."}}', "'..'"),
    ('{"basic_info": {"id": 1, "name": "\u202eNO_OP \U0001f600"}}', "no task type named"),
    ('{"basic_info": {"id": 1, "name": "SLEEP"}, "payload_info": [1]}', "payload_info"),
    (
        '{"basic_info": {"id": 1, "name": "NO_OP", "inputs": ["nowhere/\U0001f600.dat"]}}',
        "no object 'nowhere/\U0001f600.dat'",
    ),
    ('{"basic_info": {"id": 1, "name": "NO_OP", "inputs": [".tmp/x"]}}', "reserves"),
    (_big(200_000), "unknown field(s): huge"),
]


def check_examples(
    outcome: Outcome,
    bucket: BucketService,
    examples: list[tuple[str, str]],
    *,
    exactly_once: bool = True,
) -> None:
    bad = [body for body, _ in examples]
    check(outcome, bad, good_bodies(3), bucket, exactly_once=exactly_once)
    finals = {json.dumps(r["body"], sort_keys=True): r for r in outcome.errors if r["final"]}
    for body, reason in examples:
        parsed: Any = json.loads(body) if body.startswith("{") else body
        report = finals[json.dumps(parsed, sort_keys=True)]
        assert reason in report["error_message"], (reason, report["error_message"][:300])


def test_example_bad_messages_on_memory(tmp_path: Path) -> None:
    bucket = open_bucket("mem://examples")
    upload_inputs(bucket)
    examples = [*EXAMPLES, (_big(1_000_000), "unknown field(s): huge")]  # no size limit here
    outcome = run_guarded(
        queue=open_queue("mem://ex-tasks"),
        error_queue=open_queue("mem://ex-errors"),
        done_queue=open_queue("mem://ex-done"),
        registry=registry(),
        datasource=BucketCacheDatasource(bucket, FileSystemCache(tmp_path)),
        bodies=interleave([b for b, _ in examples], good_bodies(3)),
        settings=FAST,
    )
    check_examples(outcome, bucket, examples)


def sqs_queues(moto: MotoServer) -> dict[str, QueueService]:
    run = uuid.uuid4().hex[:8]
    return {
        k: SQSQueue(f"bad-{k}-{run}", endpoint_url=moto.endpoint_url, create=True)
        for k in ("tasks", "errors", "done")
    }


def test_example_bad_messages_on_sqs(moto_server: MotoServer, tmp_path: Path) -> None:
    queues = sqs_queues(moto_server)
    bucket = open_bucket("mem://sqs-examples")
    upload_inputs(bucket)
    outcome = run_guarded(
        queue=queues["tasks"],
        error_queue=queues["errors"],
        done_queue=queues["done"],
        registry=registry(),
        datasource=BucketCacheDatasource(bucket, FileSystemCache(tmp_path)),
        bodies=interleave([b for b, _ in EXAMPLES], good_bodies(3)),
        settings=dataclasses.replace(FAST, wait_seconds=0.5, lease_seconds=5),
    )
    check_examples(outcome, bucket, EXAMPLES, exactly_once=False)
    for queue in queues.values():
        queue.delete()


# Regression tests for framework bugs these scenarios found (see RELIABILITY.md, "Bad
# input"): each made the daemon retry a message forever without a report.

FORMER_BUGS = [
    pytest.param(
        '{"basic_info": {"id": 1' + "0" * 5000 + ', "name": "NO_OP"}}',
        id="integer-of-5000-digits",
    ),
    pytest.param(
        '{"basic_info": {"id": 1, "name": "\\ud800"}}',
        id="escaped-lone-surrogate",
    ),
    pytest.param(
        '{"basic_info": {"id": 1, "name": "NO_OP", "inputs": ["a\\udfff.dat"]}}',
        id="escaped-lone-surrogate-in-a-key",
    ),
    pytest.param(
        '{"basic_info": {"id": 1, "name": "NOPE"}, "payload_info": ' + "[" * 600 + "]" * 600 + "}",
        id="nested-600-deep",
    ),
]


@pytest.mark.parametrize("body", FORMER_BUGS)
def test_known_bug_bad_message_is_reported(body: str, tmp_path: Path) -> None:
    run_on_memory([body], good_bodies(1), tmp_path)


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param("\ufffe", id="U+FFFE"),
        pytest.param("\udbff", id="lone-surrogate"),
        pytest.param(
            json.loads("[" * 600 + "]" * 600),
            id="nested-600-deep",
        ),
    ],
)
def test_known_bug_good_message_completes_once(payload: Any, tmp_path: Path) -> None:
    """A legal message whose payload the report cannot carry: the task must still finish."""
    body = TaskMessage(BasicInfo(1000, "NO_OP", "good", ("0_input/0.dat",)), payload)
    text = json.dumps(body.to_dict(), ensure_ascii=True)  # escaped: a queue takes it
    run_on_memory([], [text], tmp_path)


@pytest.mark.slow
def test_known_bug_body_near_the_sqs_size_limit_is_reported(
    moto_server: MotoServer, tmp_path: Path
) -> None:
    queues = sqs_queues(moto_server)
    limit = queues["tasks"].capabilities.max_body_bytes
    bucket = open_bucket("mem://sqs-big")
    upload_inputs(bucket)
    big = _big(limit - 200)
    outcome = run_guarded(
        queue=queues["tasks"],
        error_queue=queues["errors"],
        done_queue=queues["done"],
        registry=registry(),
        datasource=BucketCacheDatasource(bucket, FileSystemCache(tmp_path)),
        bodies=[big, *good_bodies(1)],
        settings=dataclasses.replace(FAST, wait_seconds=0.5, lease_seconds=5),
    )
    for queue in queues.values():
        queue.delete()
    assert not outcome.runaway, (outcome.runaway, outcome.stats)
    assert outcome.left == (0, 0)
    assert {r["task_id"] for r in outcome.done} == {1000}
    finals = [r for r in outcome.errors if r["final"]]
    assert finals and all(r["phase"] == "parse" for r in finals)
    assert all("unknown field(s): huge" in r["error_message"] for r in finals)
    # The report cannot carry the whole body; how it is cut is the fix's choice.
