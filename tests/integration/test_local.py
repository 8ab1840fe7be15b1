"""`simpletasks local`: the whole example on a moto server it starts itself."""

from __future__ import annotations

import os
import subprocess
import sys

from simpletasks.emulators.moto import FAKE_AWS_ENV


def test_local_runs_the_example_end_to_end_without_credentials() -> None:
    env = {k: v for k, v in os.environ.items() if k not in FAKE_AWS_ENV and k != "AWS_ENDPOINT_URL"}
    proc = subprocess.run(
        [sys.executable, "-m", "simpletasks", "local"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "daemon ran 9 task(s)" in proc.stdout
    assert "outputs in s3://simpletasks-local: 10" in proc.stdout
    assert "done queue: 9 report(s); error queue: 0 report(s)" in proc.stdout
    assert "OK: every task ran and every output matches its input" in proc.stdout
