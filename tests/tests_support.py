"""Helpers shared by the test fixtures."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest


def require_service(reason: str) -> None:
    """Skip the current test because a service is missing, or fail under ``CI=true``."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"required service unavailable under CI=true: {reason}")
    pytest.skip(reason)


def invoke(*args: str, env: dict[str, str | None] | None = None, **kwargs: Any) -> Any:
    """Run the command line in-process (click's runner); exceptions are raised, not caught."""
    from click.testing import CliRunner

    from simpletasks.cli import main

    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False, **kwargs)


def file_setup(tmp_path: Path) -> dict[str, str]:
    """file:// task, error and done queues and bucket made with ``create``, and a cache dir."""
    made = {
        "queue": f"file://{tmp_path}/tasks",
        "errors": f"file://{tmp_path}/errors",
        "done": f"file://{tmp_path}/done",
        "bucket": f"file://{tmp_path}/bucket",
        "cache": str(tmp_path / "cache"),
    }
    result = invoke(
        "create", made["queue"], made["errors"], made["done"], "--bucket", made["bucket"]
    )
    assert result.exit_code == 0, result.output
    return made
