"""The upload client: stream ids, hosts, retry with back-off on 5xx/time-outs/refused
connections, 401 reported at once, and bucket targets (file://, S3 on moto behind faults)."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from faultproxy import Fault, FaultProxy

from simpletasks.buckets import open_bucket
from simpletasks.errors import ConfigError
from simpletasks.tasks.edge.gateway import GatewayServer, HasteGateway
from simpletasks.tasks.edge.upload import (
    AuthRejected,
    Backoff,
    BucketUploader,
    GatewayUploader,
    UploadError,
    make_stream_id,
    parse_host,
    send_with_retry,
)

FAST = Backoff(first=0.05, cap=0.2)


class SlowOnceBucket:
    """Stores normally, but the first store takes ``seconds`` (a gateway that stalls)."""

    def __init__(self, inner: Any, seconds: float) -> None:
        self.inner, self.seconds, self.url, self.calls = inner, seconds, inner.url, 0

    def upload(self, path: Path, key: str) -> None:
        self.calls += 1
        if self.calls == 1:
            time.sleep(self.seconds)
        self.inner.upload(path, key)


class FailingBucket:
    def __init__(self, inner: Any, failures: int) -> None:
        self.inner, self.failures, self.url = inner, failures, inner.url

    def upload(self, path: Path, key: str) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("unreachable")
        self.inner.upload(path, key)


@pytest.fixture
def src(tmp_path: Path) -> Path:
    path = tmp_path / "img.png"
    path.write_bytes(b"data" * 100)
    return path


@pytest.fixture
def store(tmp_path: Path) -> Any:
    return open_bucket(f"file://{tmp_path}/bucket", create=True)


def no_wait(seconds: float) -> bool:
    time.sleep(min(seconds, 0.05))
    return False


def test_stream_id_and_tag_checks() -> None:
    when = datetime(2020, 3, 4, 5, 6, 7)
    assert make_stream_id("scope-1", when) == "2020_03_04__05_06_07_scope-1"
    for bad in ("has space", "x/y", "ü"):
        with pytest.raises(ConfigError, match="tag"):
            make_stream_id(bad)


def test_parse_host() -> None:
    assert parse_host("foo.haste.com:80") == ("http", "foo.haste.com", 80)
    assert parse_host("https://gw") == ("https", "gw", 443)
    assert parse_host("127.0.0.1") == ("http", "127.0.0.1", 80)
    for bad in ("ftp://x", "x:notaport", "http://x/path"):
        with pytest.raises(ConfigError, match="--host"):
            parse_host(bad)


def test_5xx_is_retried_until_stored(src: Path, store: Any) -> None:
    gw = HasteGateway(FailingBucket(store, 3), username="u", password="p")
    retries: list[int] = []
    with GatewayServer(gw) as server:
        up = GatewayUploader(server.address, username="u", password="p", stream_id="s", tag="t")
        with up.session() as session:
            sent = send_with_retry(
                session, src, name="img.png", original_filename=str(src), unixtime=0,
                sleep=no_wait, backoff=FAST, on_retry=lambda n, e: retries.append(n),
            )  # fmt: skip
    assert sent is not None and sent.bytes == 400
    assert retries == [1, 2, 3]
    assert store.exists("s/img.png")


def test_timeout_is_retried(src: Path, store: Any) -> None:
    gw = HasteGateway(SlowOnceBucket(store, 1.5), username="u", password="p")
    with GatewayServer(gw) as server:
        up = GatewayUploader(
            server.address, username="u", password="p", stream_id="s", tag="t", timeout=0.5
        )
        errors: list[str] = []
        with up.session() as session:
            sent = send_with_retry(
                session, src, name="img.png", original_filename="img.png", unixtime=0,
                sleep=no_wait, backoff=FAST, on_retry=lambda n, e: errors.append(str(e)),
            )  # fmt: skip
    assert sent is not None
    assert len(errors) == 1 and "timed out" in errors[0]


def test_refused_connection_retries_until_cancelled(src: Path) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    up = GatewayUploader(f"127.0.0.1:{port}", username="u", password="p", stream_id="s", tag="t")
    calls = []

    def sleep(seconds: float) -> bool:
        calls.append(seconds)
        return len(calls) >= 3  # the caller gives up (a stop request)

    with up.session() as session:
        result = send_with_retry(
            session, src, name="img.png", original_filename="img.png", unixtime=0,
            sleep=sleep, backoff=Backoff(first=1.0, cap=3.0),
        )  # fmt: skip
    assert result is None
    assert 0.8 <= calls[0] <= 1.0 and 1.6 <= calls[1] <= 2.0 and 2.4 <= calls[2] <= 3.0


def test_401_is_raised_at_once(src: Path, store: Any) -> None:
    with GatewayServer(HasteGateway(store, username="u", password="p")) as server:
        up = GatewayUploader(server.address, username="u", password="x", stream_id="s", tag="t")
        with up.session() as session, pytest.raises(AuthRejected, match="HTTP 401"):
            send_with_retry(
                session, src, name="img.png", original_filename="img.png", unixtime=0,
                sleep=lambda s: pytest.fail("must not retry"),  # type: ignore[arg-type,return-value]
            )  # fmt: skip


def test_vanished_file_raises_file_not_found(tmp_path: Path, store: Any) -> None:
    with GatewayServer(HasteGateway(store, username=None)) as server:
        up = GatewayUploader(server.address, username="u", password="p", stream_id="s", tag="t")
        with up.session() as session, pytest.raises(FileNotFoundError):
            session.send(tmp_path / "gone.png", name="gone.png", original_filename="x", unixtime=0)
    with pytest.raises(FileNotFoundError):
        BucketUploader(store, stream_id="s").send(
            tmp_path / "gone.png", name="gone.png", original_filename="x", unixtime=0
        )


def test_bucket_target_file(src: Path, store: Any) -> None:
    up = BucketUploader(store, stream_id="2020_01_01__00_00_00_t")
    with up.session() as session:
        sent = session.send(src, name="img.png", original_filename=str(src), unixtime=0)
    assert sent.target == "2020_01_01__00_00_00_t/img.png"
    assert store.exists(sent.target)


def test_unreachable_s3_bucket_is_retried_until_it_comes_back(src: Path, moto_server: Any) -> None:
    name = f"edge-{uuid.uuid4().hex[:10]}"
    open_bucket(f"s3://{name}", endpoint_url=moto_server.endpoint_url, create=True)
    with FaultProxy(moto_server.endpoint_url) as proxy:
        import boto3
        from botocore.config import Config

        # One try per call inside boto3, so each of our retries is one request.
        client = boto3.client(
            "s3", endpoint_url=proxy.url, config=Config(retries={"max_attempts": 1})
        )
        bucket = open_bucket(f"s3://{name}/in", client=client)
        proxy.set_faults([Fault("reset", operation="PutObject")])
        up = BucketUploader(bucket, stream_id="s")
        failures: list[int] = []

        def on_retry(n: int, exc: UploadError) -> None:
            failures.append(n)
            if n == 2:
                proxy.set_faults([])  # the bucket is reachable again

        with up.session() as session:
            sent = send_with_retry(
                session, src, name="img.png", original_filename="img.png", unixtime=0,
                sleep=no_wait, backoff=FAST, on_retry=on_retry,
            )  # fmt: skip
    assert sent is not None and failures == [1, 2]
    assert bucket.exists("s/img.png")


def test_concurrent_sessions_share_the_link(tmp_path: Path, store: Any) -> None:
    files = []
    for i in range(6):
        p = tmp_path / f"{i}.png"
        p.write_bytes(bytes([i]) * 50_000)
        files.append(p)
    gw = HasteGateway(store, username="u", password="p", bandwidth=600_000)
    with GatewayServer(gw) as server:
        up = GatewayUploader(server.address, username="u", password="p", stream_id="s", tag="t")

        def worker(mine: list[Path]) -> None:
            with up.session() as session:
                for p in mine:
                    session.send(p, name=p.name, original_filename=str(p), unixtime=0)

        threads = [threading.Thread(target=worker, args=(files[k::3],)) for k in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sorted(store.list("s/")) == sorted(f"s/{p.name}" for p in files)
