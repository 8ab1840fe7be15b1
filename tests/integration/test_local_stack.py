"""`simpletasks local --stack`: the services keep running and the env file points at them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from simpletasks.emulators.moto import FAKE_AWS_ENV


def read_env(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {k: v for k, v in pairs if not k.startswith("#")}


def test_stack_serves_the_cli_through_the_env_file(tmp_path: Path) -> None:
    env_file = tmp_path / "local.env"
    base = {k: v for k, v in os.environ.items() if k not in FAKE_AWS_ENV}
    stack = subprocess.Popen(
        [sys.executable, "-m", "simpletasks", "local", "--stack", "--env-file", str(env_file)],
        env=base,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 90
        while not env_file.exists():
            assert stack.poll() is None, stack.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "the stack did not write its env file"
            time.sleep(0.2)
        env = {**base, **read_env(env_file)}
        assert env["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "simpletasks", *args],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )

        clouds = [("sqs://simpletasks-", "s3://simpletasks-local")]
        if "PUBSUB_EMULATOR_HOST" in env:  # both GCP emulators are installed here
            clouds.append(("pubsub://simpletasks-test/simpletasks-", "gs://simpletasks-local"))
        elif os.environ.get("CI") == "true":
            pytest.fail("the GCP emulators should be installed under CI=true")
        for queue, bucket in clouds:
            sent = cli(
                "schedule", "--queue", f"{queue}tasks", "--bucket", bucket, "--example", "noop"
            )
            assert sent.returncode == 0, sent.stderr[-2000:]
            ran = cli(
                "run",
                "--queue",
                f"{queue}tasks",
                "--error-queue",
                f"{queue}errors",
                "--bucket",
                bucket,
                "--cache-dir",
                str(tmp_path / "cache"),
                "--burst",
                "--wait",
                "1",
            )
            assert ran.returncode == 0, ran.stderr[-2000:]
            assert '"succeeded": 9' in ran.stdout, (queue, ran.stdout)
    finally:
        stack.send_signal(signal.SIGINT)
        out, err = stack.communicate(timeout=60)
    assert stack.returncode == 0, err[-2000:]
    assert "services stopped" in out
    assert "RabbitMQ" in out and "not started by --stack" in out  # says what it does not start
    assert not env_file.exists()
