"""`simpletasks serve` (imported directly; the lead wires it into the main CLI) and the
Python client against the service under waitress in a subprocess."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from simpletasks.cli.serve import serve
from simpletasks.client import ApiError, JobClient

SECRET = "serve-test-secret-0123456789"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_create_api_key_prints_a_key_that_is_stored_hashed(tmp_path: Path):
    db = f"sqlite:///{tmp_path / 'w.db'}"
    result = CliRunner().invoke(serve, ["--database", db, "--create-api-key", "me"])
    assert result.exit_code == 0, result.output
    key = result.output.strip()
    assert key.startswith("st_") and len(key) > 40
    assert key.encode() not in (tmp_path / "w.db").read_bytes()


def test_missing_options_are_named_at_once(tmp_path: Path):
    result = CliRunner().invoke(serve, ["--database", f"sqlite:///{tmp_path / 'w.db'}"], env={})
    assert result.exit_code == 2
    assert "--queue" in result.output and "--bucket" in result.output
    assert "--secret-key" in result.output


def test_short_secret_and_bad_pipelines_file_are_errors(tmp_path: Path):
    from simpletasks.errors import ConfigError

    base = ["--database", f"sqlite:///{tmp_path / 'w.db'}", "--queue", f"file://{tmp_path}/q"]
    base += ["--bucket", f"file://{tmp_path}/b"]
    short = CliRunner().invoke(serve, [*base, "--secret-key", "short"])
    assert isinstance(short.exception, ConfigError) and "16 characters" in str(short.exception)
    bad = tmp_path / "p.toml"
    bad.write_text("[pipelines.demo]\ntask_type = 'NO_OP'\ncolour = 'red'\n")
    result = CliRunner().invoke(serve, [*base, "--secret-key", SECRET, "--pipelines", str(bad)])
    assert isinstance(result.exception, ConfigError) and "colour" in str(result.exception)


@pytest.fixture
def service(tmp_path: Path) -> Any:
    """`simpletasks serve` in a subprocess on file:// queues and bucket."""
    for sub in ("tasks", "done", "errors", "bucket"):
        (tmp_path / sub).mkdir()
    db = f"sqlite:///{tmp_path / 'w.db'}"
    key = CliRunner().invoke(serve, ["--database", db, "--create-api-key", "k"]).output.strip()
    pipelines = tmp_path / "pipelines.toml"
    pipelines.write_text(
        "[pipelines.demo]\ntask_type = 'NO_OP'\nextensions = ['.txt']\nmax_files = 2\n"
    )
    port = _free_port()
    env = {
        **os.environ,
        "SIMPLETASKS_DATABASE": db,
        "SIMPLETASKS_QUEUE": f"file://{tmp_path}/tasks",
        "SIMPLETASKS_DONE_QUEUE": f"file://{tmp_path}/done",
        "SIMPLETASKS_ERROR_QUEUE": f"file://{tmp_path}/errors",
        "SIMPLETASKS_BUCKET": f"file://{tmp_path}/bucket",
        "SIMPLETASKS_SECRET_KEY": SECRET,
        "SIMPLETASKS_PIPELINES": str(pipelines),
    }
    code = "from simpletasks.cli.serve import serve; serve()"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "--port", str(port), "--log-level", "info"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise AssertionError(f"serve did not start: {proc.stderr.read()}") from None
            time.sleep(0.1)
    yield url, key, tmp_path
    proc.terminate()
    try:
        assert proc.wait(10) == 0
    finally:
        proc.kill()
        proc.stderr.close()


def test_client_against_the_served_api(service: Any):
    from simpletasks.buckets import open_bucket
    from simpletasks.cache import FileSystemCache
    from simpletasks.daemon import DaemonService
    from simpletasks.datasource import BucketCacheDatasource
    from simpletasks.jobs import JobCancellations
    from simpletasks.queues import open_queue
    from simpletasks.registry import TaskRegistry
    from simpletasks.settings import DaemonSettings
    from simpletasks.tasks.noop.task import NoOpTask

    url, key, tmp = service
    api = JobClient(url, key)
    assert api.server()["name"] == "simpletasks"
    with pytest.raises(ApiError) as wrong:
        JobClient(url, "st_wrong").server()
    assert wrong.value.status == 403 and wrong.value.code == "forbidden"
    with pytest.raises(ApiError) as missing:
        api.job("nope")
    assert missing.value.status == 404
    job = api.create_job("served", "NO_OP", payload="hi")
    bucket = open_bucket(f"file://{tmp}/bucket")
    bucket.upload_fileobj(io.BytesIO(b"data"), f"{job['base_directory']}/in.dat")
    ids = api.submit(job["id"], [{"inputs": ["in.dat"]}] * 5, chunk=2)
    assert ids == [1, 2, 3, 4, 5]
    registry = TaskRegistry()
    registry.register(NoOpTask)
    DaemonService(
        queue=open_queue(f"file://{tmp}/tasks"),
        registry=registry,
        datasource=BucketCacheDatasource(bucket, FileSystemCache(tmp / "cache")),
        error_queue=open_queue(f"file://{tmp}/errors"),
        done_queue=open_queue(f"file://{tmp}/done"),
        settings=DaemonSettings(burst=True, wait_seconds=0, poll_frequency_seconds=0.05),
        skip=JobCancellations(bucket),
    ).run()
    status = api.wait(job["id"], timeout=30, poll=0.2)  # the served consumer applies reports
    assert status["counts"]["succeeded"] == 5
    results = list(api.results(job["id"], per_page=2))
    assert len(results) == 5 and all(r["state"] == "succeeded" for r in results)
    api.delete_result(job["id"], results[0]["id"])
    assert len(list(api.results(job["id"]))) == 4
    assert api.workers()[0]["tasks_done"] == 5
    cancelled = api.cancel(job["id"])
    assert cancelled["cancelled"] is True
    with pytest.raises(ApiError) as conflict:
        api.submit(job["id"], [{}])
    assert conflict.value.status == 409
    page = __import__("urllib.request").request.urlopen(f"{url}/pipelines/demo", timeout=5)
    assert b"demo" in page.read()
