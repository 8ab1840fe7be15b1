"""Small parts: rate limiter, pipeline configuration, page filters, URL masking."""

from __future__ import annotations

from pathlib import Path

import pytest

from simpletasks.errors import ConfigError
from simpletasks.urls import redact_url as _mask
from simpletasks.web import PipelineConfig, load_pipelines
from simpletasks.web.app import human_bytes, human_seconds
from simpletasks.web.ratelimit import RateLimiter


def test_rate_limiter_window():
    now = [0.0]
    limiter = RateLimiter(2, window=60, clock=lambda: now[0])
    assert limiter.allow("a") and limiter.allow("a") and not limiter.allow("a")
    assert limiter.allow("b")
    assert 1 <= limiter.retry_after("a") <= 61
    now[0] = 60.5
    assert limiter.allow("a")
    assert RateLimiter(0).allow("x")  # 0 disables


def test_load_pipelines(tmp_path: Path):
    path = tmp_path / "p.toml"
    path.write_text(
        "[pipelines.cells]\ntask_type = 'TIER'\nextensions = ['TIF', '.tiff']\n"
        "payload = {policy = 'default'}\nmax_files = 5\n"
    )
    [cells] = load_pipelines(path).values()
    assert cells.extensions == (".tif", ".tiff") and cells.payload == {"policy": "default"}
    for text, needle in [
        ("[pipelines.Bad]\ntask_type = 'T'\n", "lower-case"),
        ("[pipelines.x]\n", "task_type"),
        ("[pipelines.x]\ntask_type = 'T'\nmax_files = 0\n", ">= 1"),
        ("not toml [", "cannot read"),
        ("[pipelines.x]\ntask_type = 'T'\nmax_files = 'ten'\n", "pipeline 'x'"),
    ]:
        path.write_text(text)
        with pytest.raises(ConfigError, match=needle):
            load_pipelines(path)
    with pytest.raises(ConfigError, match="cannot read"):
        load_pipelines(tmp_path / "missing.toml")
    assert PipelineConfig(name="a", task_type="T").extensions == ()


def test_filters_and_masking():
    assert human_bytes(500) == "500 bytes" and human_bytes(1536) == "1.5 KB"
    assert human_seconds(86400) == "1 day" and human_seconds(5400) == "1.5 hours"
    assert human_seconds(20) == "20 seconds"
    assert _mask("amqp://user:secret@host/vhost?queue=q") == "amqp://user:***@host/vhost?queue=q"
    assert _mask("sqs://tasks") == "sqs://tasks"
