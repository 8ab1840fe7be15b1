"""The command line, driven through click's runner on file:// backends."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from tests_support import file_setup, invoke

from simpletasks.cli import main
from simpletasks.queues import open_queue


@pytest.fixture
def urls(tmp_path: Path) -> dict[str, str]:
    return file_setup(tmp_path)


def test_schedule_run_status_purge_through_env_vars(urls: dict[str, str], tmp_path: Path) -> None:
    result = invoke(
        "schedule", "--queue", urls["queue"], "--bucket", urls["bucket"], "--example", "noop"
    )
    assert result.exit_code == 0, result.output
    assert "sent 9 task(s)" in result.output

    result = invoke("status", urls["queue"], urls["errors"])
    assert f"{urls['queue']}\tvisible=9\tin_flight=0" in result.output

    env = {
        "SIMPLETASKS_QUEUE": urls["queue"],
        "SIMPLETASKS_ERROR_QUEUE": urls["errors"],
        "SIMPLETASKS_DONE_QUEUE": urls["done"],
        "SIMPLETASKS_BUCKET": urls["bucket"],
        "SIMPLETASKS_CACHE_DIR": urls["cache"],
        "SIMPLETASKS_CONCURRENCY": "3",
        "SIMPLETASKS_WAIT_SECONDS": "0.1",
        "SIMPLETASKS_BURST": "1",
    }
    result = invoke("run", env=env)
    assert result.exit_code == 0, result.output
    stats = json.loads(result.output.strip().splitlines()[-1])
    assert stats["succeeded"] == 9 and stats["dead_lettered"] == 0
    outputs = sorted(p.name for p in (tmp_path / "bucket/datasets/noop_dataset/0_output").iterdir())
    assert outputs == sorted(f"{i}.dat" for i in range(1, 11))
    assert open_queue(urls["done"]).counts().visible == 9

    result = invoke("purge", urls["done"], "--yes")
    assert result.exit_code == 0 and open_queue(urls["done"]).counts().visible == 0


def test_schedule_from_a_file_validates_every_line_first(
    urls: dict[str, str], tmp_path: Path
) -> None:
    good = '{"basic_info": {"id": 1, "name": "NO_OP"}}'
    messages = tmp_path / "tasks.jsonl"
    messages.write_text(f"{good}\n\n{good}\n")
    result = invoke("schedule", "--queue", urls["queue"], str(messages))
    assert result.exit_code == 0 and "sent 2 task(s)" in result.output

    messages.write_text(f"{good}\n{{not json\n")
    result = invoke("schedule", "--queue", urls["queue"], str(messages))
    assert result.exit_code == 1
    assert "not JSON" in result.output
    assert open_queue(urls["queue"]).counts().visible == 2  # nothing more was sent


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["run"], "missing option(s) --queue, --error-queue, --bucket"),
        (
            ["run", "--queue", "nope://x", "--error-queue", "{errors}", "--bucket", "{bucket}"],
            "no queue backend for nope:// in 'nope://x'; "
            "known: amqp://, file://, mem://, pubsub://, sqs://",
        ),
        (
            ["run", "--queue", "{queue}", "--error-queue", "{errors}", "--bucket", "ftp://b"],
            "no bucket backend for ftp://",
        ),
        (
            [
                "run",
                "--queue",
                "file://relative",
                "--error-queue",
                "{errors}",
                "--bucket",
                "{bucket}",
            ],
            "file://",
        ),
        (
            [
                "run",
                "--queue",
                "{queue}",
                "--error-queue",
                "{errors}",
                "--bucket",
                "{bucket}",
                "--task",
                "no_such_module:Task",
            ],
            "cannot import 'no_such_module:Task': no module named 'no_such_module'",
        ),
        (
            [
                "run",
                "--queue",
                "{queue}",
                "--error-queue",
                "{errors}",
                "--bucket",
                "{bucket}",
                "--task",
                "nocolon",
            ],
            "'nocolon' is not of the form module:Class",
        ),
        (
            [
                "run",
                "--queue",
                "{queue}",
                "--error-queue",
                "{errors}",
                "--bucket",
                "{bucket}",
                "--concurrency",
                "0",
            ],
            "0 is not in the range x>=1",
        ),
        (["schedule", "--queue", "{queue}"], "give either --example or MESSAGES_FILE"),
        (["schedule", "--queue", "{queue}", "--example", "noop"], "--example needs --bucket"),
        (["status", "bogus"], "is not a URL of the form scheme://"),
    ],
)
def test_wrong_arguments_get_clear_errors(
    args: list[str], expected: str, urls: dict[str, str]
) -> None:
    result = invoke(*(a.format(**urls) for a in args))
    assert result.exit_code in (1, 2)
    assert expected in result.output
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1, result.output


def test_purge_asks_first(urls: dict[str, str]) -> None:
    open_queue(urls["queue"]).send("x")
    result = CliRunner().invoke(main, ["purge", urls["queue"]], input="n\n")
    assert result.exit_code == 1 and "Aborted" in result.output
    assert open_queue(urls["queue"]).counts().visible == 1


def test_run_with_middleware_and_followup_queue(
    urls: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "cli_mw.py").write_text(
        "from pathlib import Path\n"
        "from simpletasks.middleware import Middleware\n"
        "class Count(Middleware):\n"
        "    def on_acked(self, task, message, result):\n"
        "        with open(Path(__file__).with_name('acked.txt'), 'a') as f:\n"
        "            f.write(message.id + '\\n')\n"
    )
    monkeypatch.chdir(tmp_path)
    followups = f"file://{tmp_path}/followups"
    assert invoke("create", followups).exit_code == 0
    open_queue(urls["queue"]).send('{"basic_info": {"id": 1, "name": "NO_OP"}}')
    result = invoke(
        "run",
        "--queue",
        urls["queue"],
        "--error-queue",
        urls["errors"],
        "--bucket",
        urls["bucket"],
        "--cache-dir",
        urls["cache"],
        "--burst",
        "--wait",
        "0",
        "--middleware",
        "cli_mw:Count",
        "--followup-queue",
        followups,
    )
    assert result.exit_code == 0, result.output
    assert len((tmp_path / "acked.txt").read_text().split()) == 1
    bad = invoke(
        "run",
        "--queue",
        urls["queue"],
        "--error-queue",
        urls["errors"],
        "--bucket",
        urls["bucket"],
        "--middleware",
        "cli_mw:Nope",
    )
    assert bad.exit_code == 2 and "--middleware" in bad.output and "has no 'Nope'" in bad.output


def test_run_skip_cancelled_deletes_the_tasks_of_cancelled_jobs(urls: dict[str, str]) -> None:
    from simpletasks.buckets import open_bucket
    from simpletasks.jobs import mark_cancelled
    from simpletasks.reports import parse_report

    mark_cancelled(open_bucket(urls["bucket"]), "job-gone")
    open_queue(urls["queue"]).send_batch(
        [
            '{"basic_info": {"id": 1, "name": "NO_OP"}, "job_id": "job-gone"}',
            '{"basic_info": {"id": 2, "name": "NO_OP"}, "job_id": "job-live"}',
        ]
    )
    common = [
        "run",
        "--queue",
        urls["queue"],
        "--error-queue",
        urls["errors"],
        "--bucket",
        urls["bucket"],
        "--cache-dir",
        urls["cache"],
        "--burst",
        "--wait",
        "0",
    ]
    result = invoke(*common, "--skip-cancelled")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert (summary["skipped"], summary["succeeded"]) == (1, 1)
    errors = open_queue(urls["errors"])
    (message,) = errors.receive(10)
    report = parse_report(message.body)
    assert (report.phase, report.job_id, report.final) == ("skipped", "job-gone", True)


def _sleep_tasks(urls: dict[str, str], log: Path, *seconds: float) -> tuple[Any, tuple[str, ...]]:
    """Queue SLEEP tasks (ids 1, 2, ...) of ``seconds``; return the queue and `run` args."""
    queue = open_queue(urls["queue"])
    queue.send_batch(
        [
            json.dumps(
                {"basic_info": {"id": i, "name": "SLEEP"},
                 "payload_info": {"seconds": s, "log": str(log)}}
            )
            for i, s in enumerate(seconds, 1)
        ]
    )  # fmt: skip
    args = (
        "run", "--queue", urls["queue"], "--error-queue", urls["errors"], "--bucket",
        urls["bucket"], "--cache-dir", urls["cache"], "--task", "tasktypes:SleepTask",
        "--wait", "0",
    )  # fmt: skip
    return queue, args


def test_run_task_timeout_gives_up_a_task_that_always_hangs(
    urls: dict[str, str], tmp_path: Path
) -> None:
    queue, args = _sleep_tasks(urls, tmp_path / "sleep.log", 4, 0)
    result = invoke(
        *args, "--task-timeout", "0.5", "--max-attempts", "2", "--retry-delay", "0", "--burst"
    )
    assert result.exit_code == 1, result.output  # one task failed for good
    stats = json.loads(next(x for x in result.output.splitlines() if x.startswith("{")))
    assert (stats["succeeded"], stats["retried"], stats["dead_lettered"]) == (1, 1, 1)
    errors = open_queue(urls["errors"])
    reports = [json.loads(m.body) for m in errors.receive(10)]
    assert [(r["phase"], r["task_id"], r["attempt"], r["final"]) for r in reports] == [
        ("timeout", 1, 1, False),
        ("timeout", 1, 2, True),
    ]
    assert "still running after 0.5 s (task_timeout_seconds)" in reports[1]["error_message"]
    assert queue.counts().visible + queue.counts().in_flight == 0


def test_run_max_stuck_tasks_stops_the_daemon_with_exit_1(
    urls: dict[str, str], tmp_path: Path
) -> None:
    queue, args = _sleep_tasks(urls, tmp_path / "sleep.log", 3)
    common = (*args, "--grace", "0")
    result = invoke(*common, "--max-stuck-tasks", "1")
    assert result.exit_code == 2
    assert "--max-stuck-tasks" in result.output and "needs --task-timeout" in result.output
    result = invoke(*common, "--task-timeout", "0.3", "--max-stuck-tasks", "1")
    assert result.exit_code == 1, result.output
    assert "1 task(s) given up after task_timeout_seconds=0.3 are still running" in result.output
    assert "restart the process" in result.output and "Traceback" not in result.output
    report = json.loads(open_queue(urls["errors"]).receive(10)[0].body)
    assert (report["phase"], report["final"]) == ("timeout", False)
    assert queue.counts().visible + queue.counts().in_flight == 1  # kept for another attempt
