"""The edge agent end to end on 127.0.0.1, and its task types on bad input.

Real gateway (HTTP, Basic auth) over a file bucket; real images; the agent's two daemon lanes.
Bad input: corrupt and non-image files, files removed or truncated before processing, gateway
401/5xx/time-outs, a full disk under the state directory, an unreachable S3 bucket, a stop in
the middle; each time the agent keeps going and loses nothing.
"""

from __future__ import annotations

import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from simpletasks.buckets import open_bucket
from simpletasks.context import TaskContext
from simpletasks.errors import TaskCancelled
from simpletasks.message import TaskMessage
from simpletasks.tasks.edge.agent import AgentConfig, EdgeAgent, progress_line
from simpletasks.tasks.edge.gateway import GatewayServer, HasteGateway
from simpletasks.tasks.edge.journal import UploadJournal
from simpletasks.tasks.edge.operator import get_operator
from simpletasks.tasks.edge.policy import FileState, make_policy
from simpletasks.tasks.edge.tasks import (
    PREPROCESS,
    UPLOAD,
    EdgeFile,
    EdgePreprocessTask,
    EdgeRuntime,
    EdgeUploadTask,
    task_body,
)
from simpletasks.tasks.edge.upload import BucketUploader, GatewayUploader


def make_image(path: Path, dark_rows: int, seed: int, size: int = 96) -> None:
    """A grey image whose top ``dark_rows`` rows are dark noise touching the border."""
    rng = np.random.default_rng(seed)
    a = rng.integers(40, 255, (size, size), dtype=np.uint8)
    a[:dark_rows, :] = rng.integers(0, 30, (dark_rows, size))
    Image.fromarray(a).save(path)


def make_stream(directory: Path, n: int = 8) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = directory / f"img{i:03d}.png"
        make_image(p, 10 + 8 * (i % 6), seed=i)
        paths.append(p)
    return paths


class FlakyBucket:
    """The first ``failures`` stores fail (503 at the gateway); one store stalls ``stall`` s."""

    def __init__(self, inner: Any, failures: int = 0, stall: float = 0.0) -> None:
        self.inner, self.failures, self.stall, self.url = inner, failures, stall, inner.url
        self._lock = threading.Lock()

    def upload(self, path: Path, key: str) -> None:
        with self._lock:
            fail, self.failures = self.failures > 0, self.failures - 1
            stall, self.stall = self.stall, 0.0
        if stall:
            time.sleep(stall)
        if fail:
            raise ConnectionError("bucket unreachable")
        self.inner.upload(path, key)


@pytest.fixture
def store(tmp_path: Path) -> Any:
    return open_bucket(f"file://{tmp_path}/bucket", create=True)


def run_agent(
    directory: Path,
    uploader: Any,
    timeout: float = 60,
    **options: Any,
) -> tuple[EdgeAgent, dict]:
    config = AgentConfig(directory, include=(".png",), poll_seconds=0.1, settle_seconds=0.2,
                         grace_seconds=2.0, **options)  # fmt: skip
    agent = EdgeAgent(config, uploader)
    out: dict = {}
    thread = threading.Thread(target=lambda: out.update(agent.run()))
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        agent.stop()
        thread.join(10)
        pytest.fail(f"agent did not finish in {timeout} s: {progress_line(agent)}")
    return agent, out


def gateway_uploader(server: GatewayServer, password: str = "p", **kw: Any) -> GatewayUploader:
    return GatewayUploader(server.address, username="u", password=password, stream_id="s",
                           tag="t", **kw)  # fmt: skip


def test_agent_uploads_every_file_processed_where_smaller_corrupt_ones_as_they_are(
    tmp_path: Path, store: Any
) -> None:
    watched = tmp_path / "in"
    paths = make_stream(watched, 8)
    (watched / "corrupt.png").write_bytes(paths[0].read_bytes()[:200])  # a cut PNG
    (watched / "notes.png").write_text("not an image at all")
    (watched / "skip.txt").write_text("excluded by --include")
    gw = HasteGateway(store, username="u", password="p", bandwidth=50_000)  # link-bound
    with GatewayServer(gw) as server:
        agent, out = run_agent(watched, gateway_uploader(server), policy="natural", cores=1,
                               uploads=2, max_files=10)  # fmt: skip
    names = [*(p.name for p in paths), "corrupt.png", "notes.png"]
    assert sorted(k.split("/", 1)[1] for k in store.list("s/")) == sorted(names)
    assert out["uploaded"] == 10 and out["fatal"] is None
    assert out["processed"] >= 1 and out["bytes_saved"] > 0
    for name in ("corrupt.png", "notes.png"):  # sent byte for byte
        got = tmp_path / "got"
        store.download(f"s/{name}", got)
        assert got.read_bytes() == (watched / name).read_bytes()
    for key in store.list("s/img"):
        got = tmp_path / "got.png"
        store.download(key, got)
        with Image.open(got) as im:  # processed or original, always a valid image
            assert im.size == (96, 96)
    journal = UploadJournal(agent.state_dir / "uploads.jsonl")
    assert len(journal) == 10
    assert sum(r.processed for r in journal.records()) == out["uploaded_processed"]
    assert all(p.exists() for p in paths)  # originals are never deleted
    assert not list((agent.state_dir / "work").iterdir())  # processed copies cleaned up
    assert out["makespan"] > 0
    assert "seen 10" in progress_line(agent)


def test_exit_when_idle_waits_for_files_still_settling_at_start(tmp_path: Path, store: Any) -> None:
    watched = tmp_path / "in"
    make_stream(watched, 3)  # written just now: they settle only after settle_seconds
    config = AgentConfig(watched, include=(".png",), poll_seconds=0.05, settle_seconds=1.0,
                         exit_when_idle=0.2, cores=0)  # fmt: skip
    agent = EdgeAgent(config, BucketUploader(store, stream_id="s"))
    out = agent.run()
    assert out["uploaded"] == 3  # not an idle exit before the watcher reported them
    assert len(list(store.list("s/"))) == 3


def test_restart_resends_nothing_confirmed(tmp_path: Path, store: Any) -> None:
    watched = tmp_path / "in"
    paths = make_stream(watched, 6)
    journal = UploadJournal(watched / ".simpletasks-edge" / "uploads.jsonl")
    for p in paths[:4]:  # an earlier run confirmed four of them
        st = p.stat()
        journal.record(p.name, size=st.st_size, mtime_ns=st.st_mtime_ns, sent_bytes=1,
                       processed=False, target="earlier")  # fmt: skip
    gw = HasteGateway(store, username="u", password="p")
    with GatewayServer(gw) as server:
        _, out = run_agent(watched, gateway_uploader(server), exit_when_idle=0.5)
        assert out["skipped"] == 4 and out["uploaded"] == 2 and gw.stats.stored == 2
        _, again = run_agent(watched, gateway_uploader(server), exit_when_idle=0.5)
    assert again["skipped"] == 6 and again["uploaded"] == 0 and gw.stats.stored == 2


def test_gateway_5xx_and_timeouts_are_retried_and_nothing_lost(tmp_path: Path, store: Any) -> None:
    watched = tmp_path / "in"
    make_stream(watched, 6)
    gw = HasteGateway(FlakyBucket(store, failures=4, stall=2.0), username="u", password="p")
    with GatewayServer(gw) as server:
        _, out = run_agent(watched, gateway_uploader(server, timeout=0.7), uploads=3,
                           max_files=6)  # fmt: skip
    # 4 failures + 1 time-out, but the stalled store may take one of the failures itself
    assert out["uploaded"] == 6 and out["retries"] >= 4
    assert len(list(store.list("s/"))) == 6


def test_wrong_password_stops_the_agent_with_the_reason_and_journals_nothing(
    tmp_path: Path, store: Any
) -> None:
    watched = tmp_path / "in"
    paths = make_stream(watched, 3)
    with GatewayServer(HasteGateway(store, username="u", password="p")) as server:
        agent, out = run_agent(watched, gateway_uploader(server, password="wrong"), timeout=20)
    assert out["fatal"] is not None and "401" in out["fatal"] and "'u'" in out["fatal"]
    assert out["uploaded"] == 0 and len(UploadJournal(agent.state_dir / "uploads.jsonl")) == 0
    assert all(p.exists() for p in paths)


def test_full_disk_under_state_dir_uploads_originals_and_keeps_going(
    tmp_path: Path, store: Any
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(state)],
                       check=True, capture_output=True)  # fmt: skip
    except (subprocess.CalledProcessError, FileNotFoundError):
        pytest.skip("cannot mount a tmpfs here (not root)")
    try:
        watched = tmp_path / "in"
        paths = make_stream(watched, 5)
        (state / "work").mkdir()
        with open(state / "filler", "wb", buffering=0) as f:  # fill the disk to the last block
            try:
                while True:
                    f.write(b"\0" * 4096)
            except OSError:
                pass
        # a slow link and one upload at a time: the CPU lane surely tries some files
        gw = HasteGateway(store, username="u", password="p", bandwidth=25_000)
        with GatewayServer(gw) as server:
            _, out = run_agent(watched, gateway_uploader(server), state_dir=state,
                               policy="natural", uploads=1, max_files=5)  # fmt: skip
    finally:
        subprocess.run(["umount", "-l", str(state)], check=False)
    assert out["uploaded"] == 5 and out["journal_errors"] == 5
    assert out["preprocess_failed"] >= 1 and out["processed"] == 0
    assert any("No space left" in p for p in out["problems"])
    for p in paths:  # the originals went up as they are
        got = tmp_path / "got"
        store.download(f"s/{p.name}", got)
        assert got.read_bytes() == p.read_bytes()


def test_unreachable_s3_bucket_target_keeps_going_until_it_is_back(
    tmp_path: Path, moto_server: Any
) -> None:
    import boto3
    from botocore.config import Config
    from faultproxy import Fault, FaultProxy

    name = f"edge-{uuid.uuid4().hex[:10]}"
    open_bucket(f"s3://{name}", endpoint_url=moto_server.endpoint_url, create=True)
    watched = tmp_path / "in"
    make_stream(watched, 4)
    with FaultProxy(moto_server.endpoint_url, [Fault("reset", operation="PutObject")]) as proxy:
        client = boto3.client("s3", endpoint_url=proxy.url,
                              config=Config(retries={"max_attempts": 1}))  # fmt: skip
        bucket = open_bucket(f"s3://{name}/edge", client=client)
        threading.Timer(1.5, proxy.set_faults, args=([],)).start()  # back after 1.5 s
        _, out = run_agent(watched, BucketUploader(bucket, stream_id="s"), max_files=4)
    assert out["uploaded"] == 4 and out["retries"] >= 2
    assert len(list(bucket.list("s/"))) == 4


def test_stop_midway_then_restart_sends_the_rest_once(tmp_path: Path, store: Any) -> None:
    watched = tmp_path / "in"
    paths = make_stream(watched, 10)
    gw = HasteGateway(store, username="u", password="p", bandwidth=60_000)
    with GatewayServer(gw) as server:
        config = AgentConfig(watched, include=(".png",), poll_seconds=0.1, settle_seconds=0.2,
                             uploads=2, grace_seconds=0.5)  # fmt: skip
        agent = EdgeAgent(config, gateway_uploader(server))
        out: dict = {}
        thread = threading.Thread(target=lambda: out.update(agent.run()))
        thread.start()
        while agent.stats.uploaded < 3:
            time.sleep(0.05)
        agent.stop()  # like SIGTERM
        thread.join(20)
        first = out["uploaded"]
        assert 3 <= first < 10
        journaled = {r.name for r in UploadJournal(agent.state_dir / "uploads.jsonl").records()}
        stored = {k.split("/", 1)[1] for k in store.list("s/")}
        assert journaled <= stored  # nothing journaled that is not stored
        _, rest = run_agent(watched, gateway_uploader(server), exit_when_idle=0.5)
    assert rest["skipped"] == first and rest["uploaded"] == 10 - first
    assert {k.split("/", 1)[1] for k in store.list("s/")} == {p.name for p in paths}


# -- the task types on their own -----------------------------------------------------------


def runtime_with(tmp_path: Path, store: Any, names: list[str]) -> EdgeRuntime:
    rt = EdgeRuntime(
        policy=make_policy("natural"),
        operator=get_operator("border-dark"),
        uploader=BucketUploader(store, stream_id="s"),
        journal=UploadJournal(tmp_path / "state" / "uploads.jsonl"),
        work_dir=tmp_path / "work",
    )
    (tmp_path / "work").mkdir()
    for i, name in enumerate(names):
        path = tmp_path / name
        st = path.stat()
        rt.files[i] = EdgeFile(i, name, path, st.st_size, st.st_mtime_ns, time.time())
        rt.policy.add(i, st.st_size)
    return rt


def run_task(cls: type, rt: EdgeRuntime, index: int) -> Any:
    body = task_body(cls.name, rt.files[index])
    with rt.uploader.session() as link:
        context = TaskContext(resources={"edge": rt, "link": link})
        return cls(TaskMessage.from_json(body), context=context).execute(None)


def test_file_removed_before_processing_and_upload_is_reported_and_retired(
    tmp_path: Path, store: Any
) -> None:
    make_image(tmp_path / "a.png", 20, 0)
    rt = runtime_with(tmp_path, store, ["a.png"])
    assert rt.policy.next_preprocess() == 0
    (tmp_path / "a.png").unlink()
    result = run_task(EdgePreprocessTask, rt, 0)
    assert result.success and "removed before pre-processing" in result.message
    assert rt.policy.state(0) == FileState.WAITING_UNPROCESSED
    assert rt.policy.next_preprocess() is None  # never offered again
    assert rt.policy.next_upload() == 0
    result = run_task(EdgeUploadTask, rt, 0)
    assert result.success and rt.stats.vanished == 1
    assert rt.policy.state(0) == FileState.UPLOADED and len(rt.journal) == 0
    assert [what for _, what in rt.problems] == [
        "not pre-processed, sent as it is: ValueError: removed before pre-processing",
        "removed before upload: nothing to send",
    ]


def test_truncated_file_is_reported_and_sent_as_it_is(tmp_path: Path, store: Any) -> None:
    make_image(tmp_path / "a.png", 20, 0)
    rt = runtime_with(tmp_path, store, ["a.png"])
    data = (tmp_path / "a.png").read_bytes()
    (tmp_path / "a.png").write_bytes(data[: len(data) // 2])
    assert rt.policy.next_preprocess() == 0
    assert run_task(EdgePreprocessTask, rt, 0).success
    assert rt.stats.preprocess_failed == 1
    assert any("changed since it was found" in p for _, p in rt.problems)
    assert rt.policy.next_upload() == 0
    assert run_task(EdgeUploadTask, rt, 0).outputs == ["s/a.png"]
    got = tmp_path / "got"
    store.download("s/a.png", got)
    assert got.read_bytes() == data[: len(data) // 2]


def test_processed_version_sent_when_smaller_and_stale_preprocess_is_a_no_op(
    tmp_path: Path, store: Any
) -> None:
    make_image(tmp_path / "a.png", 60, 0)
    make_image(tmp_path / "b.png", 60, 1)
    rt = runtime_with(tmp_path, store, ["a.png", "b.png"])
    assert rt.policy.next_preprocess() == 0
    assert run_task(EdgePreprocessTask, rt, 0).success
    assert rt.policy.use_processed(0) and rt.files[0].processed is not None
    assert rt.policy.next_upload() == 0
    run_task(EdgeUploadTask, rt, 0)
    assert rt.files[0].processed is None and not list((tmp_path / "work").iterdir())
    record = rt.journal.records()[0]
    assert record.processed and record.sent_bytes < rt.files[0].size
    assert rt.stats.bytes_saved == rt.files[0].size - record.sent_bytes
    assert rt.policy.next_upload() == 1  # uploaded without pre-processing
    run_task(EdgeUploadTask, rt, 1)
    result = run_task(EdgePreprocessTask, rt, 1)  # its EDGE_PREPROCESS message drains
    assert result.success and "already uploaded" in result.message
    assert PREPROCESS != UPLOAD


class BrokenSession:
    def send(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug in the target client")


def test_unexpected_upload_error_lets_the_policy_choose_the_file_again(
    tmp_path: Path, store: Any
) -> None:
    make_image(tmp_path / "a.png", 20, 0)
    rt = runtime_with(tmp_path, store, ["a.png"])
    assert rt.policy.next_upload() == 0
    body = task_body(UPLOAD, rt.files[0])
    context = TaskContext(resources={"edge": rt, "link": BrokenSession()})
    with pytest.raises(RuntimeError, match="a bug"):
        EdgeUploadTask(TaskMessage.from_json(body), context=context).execute(None)
    assert rt.policy.state(0) == FileState.WAITING_UNPROCESSED  # the daemon's retry can run
    assert rt.policy.next_upload() == 0


def test_upload_in_back_off_gives_up_when_the_daemon_stops(tmp_path: Path, store: Any) -> None:
    make_image(tmp_path / "a.png", 20, 0)
    rt = runtime_with(tmp_path, store, ["a.png"])
    rt.uploader = BucketUploader(FailingStore(), stream_id="s")
    assert rt.policy.next_upload() == 0
    stopping = threading.Event()
    body = task_body(UPLOAD, rt.files[0])
    with rt.uploader.session() as link:
        context = TaskContext(resources={"edge": rt, "link": link}, stopping=stopping)
        threading.Timer(0.3, stopping.set).start()
        started = time.monotonic()
        with pytest.raises(TaskCancelled, match="not journaled"):
            EdgeUploadTask(TaskMessage.from_json(body), context=context).execute(None)
    assert time.monotonic() - started < 2.0
    assert rt.policy.state(0) == FileState.WAITING_UNPROCESSED and len(rt.journal) == 0


class FailingStore:
    url = "mem://down"

    def upload(self, path: Path, key: str) -> None:
        raise ConnectionError("down")
