"""Helpers shared by the test fixtures."""

from __future__ import annotations

import os

import pytest


def require_service(reason: str) -> None:
    """Skip the current test because a service is missing, or fail under ``CI=true``."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"required service unavailable under CI=true: {reason}")
    pytest.skip(reason)
