"""Every common mistake on the command line ends in one line, ``Error: ...``, and an exit
status (2 for wrong usage, 1 otherwise), never a traceback. Each test makes the mistake."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest
from tests_support import invoke

from simpletasks.cli import main
from simpletasks.queues import open_queue


@pytest.fixture
def urls(tmp_path: Path) -> dict[str, str]:
    made = {
        "queue": f"file://{tmp_path}/tasks",
        "errors": f"file://{tmp_path}/errors",
        "bucket": f"file://{tmp_path}/bucket",
    }
    result = invoke("create", made["queue"], made["errors"], "--bucket", made["bucket"])
    assert result.exit_code == 0, result.output
    return made


def one_line_error(result: Any, code: int, *expected: str) -> str:
    """Check the result is exactly one ``Error:`` line with ``expected`` in it."""
    assert result.exit_code == code, result.output
    out = result.output
    assert out.startswith("Error: ") and out.count("\n") == 1, out
    assert "Traceback" not in out
    for text in expected:
        assert text in out, out
    return out


def run_args(urls: dict[str, str], *extra: str) -> list[str]:
    return [
        "run",
        "--queue",
        urls["queue"],
        "--error-queue",
        urls["errors"],
        "--bucket",
        urls["bucket"],
        "--burst",
        "--wait",
        "0",
        *extra,
    ]


# ---- the tutorial's --task: the current directory, and modules that fail on import


def test_task_module_in_the_current_directory_is_found(
    urls: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "cwdtasks_ok.py").write_text(
        "from simpletasks.task import DaemonTask, Result\n"
        "class Ok(DaemonTask):\n"
        "    name = 'CWD_OK'\n"
        "    def execute(self, datasource):\n"
        "        return Result(success=True)\n"
    )
    monkeypatch.chdir(work)
    monkeypatch.setattr("sys.path", [p for p in __import__("sys").path if p not in ("", str(work))])
    open_queue(urls["queue"]).send('{"basic_info": {"id": 1, "name": "CWD_OK"}}')
    result = invoke(*run_args(urls, "--task", "cwdtasks_ok:Ok"))
    assert result.exit_code == 0, result.output
    assert '"succeeded": 1' in result.output


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("x = (\n", ["SyntaxError in", "line 1", "'(' was never closed"]),
        ("raise RuntimeError('boom at import')\n", ["raised RuntimeError: boom at import"]),
        ("import no_such_dependency_xyz\n", ["no_such_dependency_xyz", "a package it imports"]),
        ("X = 1\n", ["has no 'Task'"]),
    ],
)
def test_a_task_module_that_fails_on_import_is_named(
    urls: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    source: str,
    expected: list[str],
) -> None:
    name = f"broken_{abs(hash(source)) % 10**8}"
    (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.chdir(tmp_path)
    result = invoke(*run_args(urls, "--task", f"{name}:Task"))
    one_line_error(result, 2, f"cannot import '{name}:Task'", *expected)


def test_a_missing_task_module_says_where_it_was_looked_for(
    urls: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = invoke(*run_args(urls, "--task", "mytasks_nowhere:ThresholdTask"))
    one_line_error(result, 2, "no module named 'mytasks_nowhere'", str(tmp_path))


# ---- queues and buckets


def test_the_task_queue_as_error_queue_is_refused(urls: dict[str, str]) -> None:
    args = run_args(urls)
    args[args.index("--error-queue") + 1] = urls["queue"] + "/"
    result = invoke(*args)
    one_line_error(result, 2, "is also the task queue")
    args[args.index("--error-queue") + 1] = urls["errors"]
    result = invoke(*args, "--done-queue", urls["queue"])
    one_line_error(result, 2, "--done-queue", "is also the task queue")


@pytest.mark.parametrize(
    "args",
    [
        ["run", "--queue", "mem://q", "--error-queue", "{errors}", "--bucket", "{bucket}"],
        ["run", "--queue", "{queue}", "--error-queue", "{errors}", "--bucket", "mem://b"],
        ["schedule", "--queue", "mem://q", "--example", "noop", "--bucket", "{bucket}"],
        ["status", "mem://q"],
        ["peek", "mem://q"],
        ["purge", "mem://q", "--yes"],
        ["requeue", "--from", "mem://e", "--to", "{queue}"],
        ["create", "mem://q"],
        ["upload", "{readme}", "--bucket", "mem://b"],
    ],
)
def test_mem_urls_are_refused_with_the_reason(urls: dict[str, str], args: list[str]) -> None:
    readme = str(Path(__file__))
    result = invoke(*(a.format(readme=readme, **urls) for a in args))
    one_line_error(result, 2, "mem:// lives inside one process", "file:///")


def test_status_and_purge_of_a_missing_file_queue_create_nothing(tmp_path: Path) -> None:
    for args in (["status"], ["purge", "--yes"], ["peek"]):
        result = invoke(*args, f"file://{tmp_path}/typo")
        one_line_error(result, 1, "does not exist", "simpletasks create")
        assert not (tmp_path / "typo").exists()


def test_a_relative_file_url_is_refused(urls: dict[str, str]) -> None:
    result = invoke("status", "file://fq/tasks")
    one_line_error(result, 1, "file://fq/tasks", "not absolute")


def test_a_missing_file_bucket_is_refused_at_start(urls: dict[str, str], tmp_path: Path) -> None:
    args = run_args(urls)
    args[args.index("--bucket") + 1] = f"file://{tmp_path}/no-bucket"
    one_line_error(invoke(*args), 1, "does not exist")


def test_amqp_passwords_are_masked(urls: dict[str, str]) -> None:
    url = "amqp://user:s3cret-pw@127.0.0.1:1/%2F?queue=x"
    for args in (["status", url], ["peek", url], ["create", url]):
        result = invoke(*args)
        out = one_line_error(result, 1)
        assert "s3cret-pw" not in out and "user:***@" in out, out
    bad = invoke("run", "--queue", url, "--error-queue", url + "&y", "--bucket", "ftp://x")
    assert "s3cret-pw" not in bad.output


# ---- cloud SDK errors (in-process: boto3 and google-auth read the environment)

NO_AWS: dict[str, str | None] = {
    "AWS_ACCESS_KEY_ID": None,
    "AWS_SECRET_ACCESS_KEY": None,
    "AWS_SESSION_TOKEN": None,
    "AWS_PROFILE": None,
    "AWS_ENDPOINT_URL": None,
    "AWS_CONFIG_FILE": "/nonexistent/aws-config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def test_no_aws_credentials(urls: dict[str, str], moto_server: Any) -> None:
    env = {**NO_AWS, "AWS_ENDPOINT_URL": moto_server.endpoint_url}  # it answers; no keys
    result = invoke("status", "sqs://my-tasks", env=env)
    one_line_error(result, 1, "credentials")


def test_aws_endpoint_down(urls: dict[str, str]) -> None:
    pytest.importorskip("boto3")
    env = {
        **NO_AWS,
        "AWS_ACCESS_KEY_ID": "a",
        "AWS_SECRET_ACCESS_KEY": "b",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:1",
        "AWS_MAX_ATTEMPTS": "1",
    }
    result = invoke("status", "sqs://my-tasks", env=env)
    one_line_error(result, 1, "127.0.0.1:1")


def test_gs_without_credentials(urls: dict[str, str]) -> None:
    pytest.importorskip("google.cloud.storage")
    env: dict[str, str | None] = {
        "GOOGLE_APPLICATION_CREDENTIALS": None,
        "STORAGE_EMULATOR_HOST": None,
        "CLOUDSDK_CONFIG": "/nonexistent/gcloud",
        "NO_GCE_CHECK": "True",
    }
    args = run_args(urls)
    args[args.index("--bucket") + 1] = "gs://some-bucket"
    one_line_error(invoke(*args, env=env), 1, "credentials")


def test_pubsub_emulator_down() -> None:
    pytest.importorskip("google.cloud.pubsub_v1")
    result = invoke(
        "status", "pubsub://my-project/subs", env={"PUBSUB_EMULATOR_HOST": "127.0.0.1:1"}
    )
    one_line_error(result, 1, "127.0.0.1:1")


def test_local_gcp_without_its_dependencies_names_what_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from simpletasks import local

    monkeypatch.setattr(local, "missing_gcp_emulators", lambda: ["the Pub/Sub emulator (...)"])
    result = invoke("local", "--cloud", "gcp")
    one_line_error(result, 1, "--cloud gcp needs the Pub/Sub emulator")


# ---- schedule


def test_schedule_names_the_bad_line_and_sends_nothing(
    urls: dict[str, str], tmp_path: Path
) -> None:
    good = '{"basic_info": {"id": 1, "name": "NO_OP"}}'
    path = tmp_path / "tasks.jsonl"
    path.write_text(f"{good}\n\n{good}\n{{oops\n")
    one_line_error(invoke("schedule", "--queue", urls["queue"], str(path)), 1, "line 4", "JSON")
    assert open_queue(urls["queue"]).counts().visible == 0


def test_schedule_of_pretty_printed_json_gets_the_one_per_line_hint(
    urls: dict[str, str], tmp_path: Path
) -> None:
    path = tmp_path / "tasks.json"
    path.write_text('{\n  "basic_info": {"id": 1, "name": "NO_OP"}\n}\n')
    out = one_line_error(invoke("schedule", "--queue", urls["queue"], str(path)), 1, "line 1")
    assert "one message per line" in out
    path.write_text('[{"basic_info": {"id": 1, "name": "NO_OP"}}]\n')
    out = one_line_error(invoke("schedule", "--queue", urls["queue"], str(path)), 1, "line 1")
    assert "one JSON list" in out and "one message per line" in out
    assert open_queue(urls["queue"]).counts().visible == 0


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('{"basic_info": {"id": 1, "name": "NO_SUCH"}}', "NO_SUCH"),
        ('{"basic_info": {"id": 2, "name": "TYPED"}, "payload_info": {"level": "high"}}', "level"),
    ],
)
def test_schedule_with_task_checks_names_and_payloads_first(
    urls: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, line: str, expected: str
) -> None:
    (tmp_path / "typedtasks_cli.py").write_text(
        "from dataclasses import dataclass\n"
        "from simpletasks.task import DaemonTask, Result\n"
        "@dataclass\n"
        "class P:\n"
        "    level: int\n"
        "class Typed(DaemonTask):\n"
        "    name = 'TYPED'\n"
        "    payload_type = P\n"
        "    def execute(self, datasource):\n"
        "        return Result(success=True)\n"
    )
    monkeypatch.chdir(tmp_path)
    good = '{"basic_info": {"id": 3, "name": "TYPED"}, "payload_info": {"level": 3}}'
    path = tmp_path / "tasks.jsonl"
    path.write_text(f"{good}\n{line}\n")
    args = ["schedule", "--queue", urls["queue"], "--task", "typedtasks_cli:Typed", str(path)]
    one_line_error(invoke(*args), 1, "line 2", expected)
    assert open_queue(urls["queue"]).counts().visible == 0
    path.write_text(f"{good}\n")
    assert invoke(*args).exit_code == 0
    assert open_queue(urls["queue"]).counts().visible == 1


# ---- options and help


def test_all_missing_options_are_reported_at_once() -> None:
    one_line_error(invoke("run"), 2, "--queue, --error-queue, --bucket")
    one_line_error(invoke("requeue"), 2, "--from, --to")
    one_line_error(invoke("upload"), 2, "PATH, --bucket")


def test_dash_h_and_log_level_after_the_command() -> None:
    for args in (["-h"], ["run", "-h"], ["status", "-h"], ["run", "--log-level", "debug", "-h"]):
        result = invoke(*args)
        assert result.exit_code == 0 and "Usage:" in result.output, args
    result = invoke("status", "--log-level", "warning", "bogus")
    one_line_error(result, 1, "is not a URL")


OURS = ("run", "create", "upload", "schedule", "status", "peek", "requeue", "purge", "local")


def _commands() -> list[tuple[str, click.Command]]:
    assert isinstance(main, click.Group)
    return [(name, main.commands[name]) for name in OURS]


def test_every_option_has_help_text() -> None:
    for name, command in _commands():
        assert command.help, name
        for param in command.params:
            if isinstance(param, click.Option):
                assert param.help, f"{name} {param.opts}"


def test_help_names_every_scheme() -> None:
    top = invoke("-h").output
    for scheme in ("sqs://", "pubsub://", "amqp://", "file://", "mem://", "s3://", "gs://"):
        assert scheme in top, scheme
    run_help = invoke("run", "-h").output
    for scheme in ("sqs://", "pubsub://", "amqp://", "file://", "mem://", "s3://", "gs://"):
        assert scheme in run_help, scheme


def test_amqp_password_masked_in_logs_too() -> None:
    import subprocess
    import sys

    url = "amqp://user:s3cret-pw@127.0.0.1:1/%2F?queue=x"
    proc = subprocess.run(
        [sys.executable, "-m", "simpletasks", "--log-level", "debug", "status", url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "s3cret-pw" not in proc.stdout + proc.stderr
    assert proc.stderr.count("Error: ") == 1 and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("argv", "module", "extra"),
    [
        (["tier", "demo"], "numpy", "tiering"),
        (["serve"], "sqlalchemy", "web"),
        (["local", "--tiering", "x"], "numpy", "tiering"),
    ],
)
def test_a_missing_optional_package_names_its_extra(
    argv: list[str], module: str, extra: str, tmp_path: Path
) -> None:
    """On an install without the extra, one line says what to pip install (no traceback)."""
    code = (
        "import sys\n"
        f"sys.modules[{module!r}] = None  # as if it were not installed\n"
        "from simpletasks.cli import main\n"
        f"main({argv!r})\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"Error: this command needs the Python package {module!r}, which is not installed: "
        f"pip install 'simpletasks[{extra}]'"
    ]


def test_a_database_that_cannot_be_reached_or_opened_is_one_line(
    tmp_path: Path, closed_port: int
) -> None:
    hint = "cannot use the database: check its URL"
    pg = f"postgresql://postgres@127.0.0.1:{closed_port}/test"
    one_line_error(invoke("tier", "report", "--db", pg), 1, hint, "Connection refused")
    missing = f"sqlite:///{tmp_path}/no/such/folder/jobs.db"
    (tmp_path / "q").mkdir()
    (tmp_path / "b").mkdir()
    served = invoke(
        "serve", "--database", missing, "--queue", f"file://{tmp_path}/q", "--bucket",
        f"file://{tmp_path}/b", "--secret-key", "k" * 32,
    )  # fmt: skip
    one_line_error(served, 1, hint, "unable to open database file")
