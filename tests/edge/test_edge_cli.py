"""``simpletasks edge``: agent, gateway and simulate through the command line (CliRunner and
real processes on 127.0.0.1)."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from base64 import b64encode
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from simpletasks.buckets import open_bucket
from simpletasks.cli.edge import edge
from simpletasks.tasks.edge.gateway import GatewayServer, HasteGateway
from simpletasks.tasks.edge.journal import UploadJournal


@pytest.fixture(autouse=True)
def _keep_signal_handlers() -> Iterator[None]:
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def make_images(directory: Path, n: int) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        a = rng.integers(40, 255, (64, 64), dtype=np.uint8)
        a[: 10 + 4 * i, :] = rng.integers(0, 30, (10 + 4 * i, 64))
        Image.fromarray(a).save(directory / f"f{i:02d}.png")


def invoke(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(edge, list(args), catch_exceptions=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("args", "text"),
    [
        ([], "exactly one target"),
        (["--host", "h:1", "--bucket", "file:///tmp/x"], "exactly one target"),
        (["--host", "h:1", "--username", "u"], "--username and --password"),
        (["--host", "h:1", "--username", "u", "--password", "p", "--tag", "a b"], "tag"),
        (["--host", "ftp://h", "--username", "u", "--password", "p"], "--host"),
        (["--bucket", "nope://x"], "nope"),
        (["--bucket", "file:///tmp/x", "--policy", "best"], "unknown policy"),
        (["--bucket", "file:///tmp/x", "--policy", "oracle"], "true scores"),
    ],
)
def test_agent_refuses_bad_options_in_one_line(tmp_path: Path, args: list[str], text: str) -> None:
    result = invoke("agent", str(tmp_path), *args)
    assert result.exit_code in (1, 2)
    assert text in result.output and "Traceback" not in result.output


def test_agent_refuses_a_directory_that_does_not_exist_and_creates_nothing(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "instrument" / "otuput"  # a typo
    result = invoke("agent", str(missing), "--bucket", f"file://{tmp_path}")
    assert result.exit_code == 1, result.output
    assert f"the directory to watch, {missing}, does not exist" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "instrument").exists()  # not created and watched in silence


def test_agent_uploads_to_gateway_and_prints_summary(tmp_path: Path) -> None:
    watched = tmp_path / "in"
    make_images(watched, 5)
    store = open_bucket(f"file://{tmp_path}/b", create=True)
    with GatewayServer(HasteGateway(store, username="u", password="p")) as server:
        result = invoke(
            "agent", str(watched), "--include", ".png", "--tag", "scope1", "--host",
            server.address, "--username", "u", "--password", "p", "--preprocessing-cores", "1",
            "--uploads", "2", "--policy", "natural", "--exit-when-idle", "1",
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["uploaded"] == 5 and summary["fatal"] is None
    assert summary["stream_id"].endswith("_scope1")
    assert "seen 5 | processed" in result.stderr
    assert len(list(store.list(summary["stream_id"] + "/"))) == 5


def test_agent_to_bucket_url_and_wrong_password_exits_1(tmp_path: Path) -> None:
    watched = tmp_path / "in"
    make_images(watched, 3)
    result = invoke("agent", str(watched), "--bucket", f"file://{tmp_path}/out", "--stream-id",
                    "run1", "--exit-when-idle", "0.5", "--no-progress")  # fmt: skip
    assert result.exit_code == 0 and json.loads(result.stdout)["uploaded"] == 3
    assert sorted(os.listdir(tmp_path / "out" / "run1")) == ["f00.png", "f01.png", "f02.png"]
    result = invoke("agent", str(watched), "--bucket", f"file://{tmp_path}/out", "--stream-id",
                    "run2", "--exit-when-idle", "0.5", "--no-progress", "--state-dir",
                    str(tmp_path / "st2"), "--preprocessing-cores", "0")  # fmt: skip
    summary = json.loads(result.stdout)  # no CPU lane: every file sent as it is
    assert summary["uploaded"] == 3 and summary["processed"] == 0 and "cpu" not in summary["lanes"]
    store = open_bucket(f"file://{tmp_path}/b", create=True)
    (watched / "new.png").write_bytes((watched / "f00.png").read_bytes())
    with GatewayServer(HasteGateway(store, username="u", password="p")) as server:
        result = invoke("agent", str(watched), "--host", server.address, "--username", "u",
                        "--password", "bad", "--no-progress")  # fmt: skip
    assert result.exit_code == 1
    assert "Error:" in result.stderr and "HTTP 401" in result.stderr


def test_simulate_one_policy_all_and_bad_profile(tmp_path: Path) -> None:
    csv = tmp_path / "p.csv"
    rows = ["index,size_bytes,saved_bytes,cpu_seconds"]
    rows += [f"{i},400000,{40000 + 1000 * i},0.3" for i in range(40)]
    csv.write_text("\n".join(rows) + "\n")
    result = invoke("simulate", "--profile", str(csv), "--bandwidth", "1.9", "--cores", "1")
    assert result.exit_code == 0 and json.loads(result.stdout)["makespan"] > 0
    result = invoke("simulate", "--profile", str(csv), "--bandwidth", "1.9", "--policy", "all")
    assert "upload-only" in json.loads(result.stdout)["policies"]
    result = invoke("simulate", "--profile", str(csv), "--bandwidth", "1", "--policy", "nope")
    assert result.exit_code == 1 and "unknown policy" in result.output
    csv.write_text("index,size\n0,1\n")
    result = invoke("simulate", "--profile", str(csv), "--bandwidth", "1")
    assert result.exit_code == 1 and "Traceback" not in result.output


def _cli(*args: str) -> list[str]:
    code = "import sys; from simpletasks.cli.edge import edge; edge(sys.argv[1:])"
    return [sys.executable, "-c", code, *args]


def _wait_port(port: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    pytest.fail("gateway did not listen")


def test_gateway_process_stores_enqueues_and_stops_on_sigterm(tmp_path: Path) -> None:
    from simpletasks.queues import open_queue

    open_queue(f"file://{tmp_path}/q", create=True)
    port = free_port()
    env = {**os.environ, "SIMPLETASKS_EDGE_PASSWORD": "pw"}
    proc = subprocess.Popen(
        _cli("gateway", "--listen", f"127.0.0.1:{port}", "--bucket", f"file://{tmp_path}/b",
             "--username", "u", "--queue", f"file://{tmp_path}/q", "--bandwidth", "5"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
    )  # fmt: skip
    try:
        _wait_port(port, proc)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        auth = "Basic " + b64encode(b"u:pw").decode()
        headers = {"Authorization": auth, "X-HASTE-original_filename": "/d/a.png"}
        conn.request("POST", "/stream/s1", body=b"x" * 1000, headers=headers)
        response = conn.getresponse()
        assert response.status == 200 and json.loads(response.read())["key"] == "s1/a.png"
        conn.request("POST", "/stream/s1", body=b"x", headers={**headers, "Authorization": ""})
        assert conn.getresponse().status == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert json.loads(out) == {"stored": 1, "bytes": 1000, "rejected": 1, "failed": 0}
    assert (tmp_path / "b" / "s1" / "a.png").stat().st_size == 1000
    (message,) = open_queue(f"file://{tmp_path}/q").receive(5)
    assert json.loads(message.body)["basic_info"]["inputs"] == ["a.png"]


def test_agent_process_sigterm_exits_0_and_the_next_run_sends_the_rest(tmp_path: Path) -> None:
    watched = tmp_path / "in"
    make_images(watched, 12)
    store = open_bucket(f"file://{tmp_path}/b", create=True)
    gw = HasteGateway(store, username="u", password="p", bandwidth=40_000)  # ~0.15 s per file
    with GatewayServer(gw) as server:
        args = ["agent", str(watched), "--host", server.address, "--username", "u",
                "--password", "p", "--uploads", "1", "--no-progress"]  # fmt: skip
        proc = subprocess.Popen(_cli(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)  # fmt: skip
        deadline = time.monotonic() + 30
        while gw.stats.stored < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        first = json.loads(out)["uploaded"]
        assert 3 <= first < 12
        journal = UploadJournal(watched / ".simpletasks-edge" / "uploads.jsonl")
        assert len(journal) == first
        result = invoke(*args[:-1], "--exit-when-idle", "0.5", "--no-progress")
    summary = json.loads(result.stdout)
    assert summary["skipped"] == first and summary["uploaded"] == 12 - first
