"""The HASTE gateway over real HTTP on 127.0.0.1: storage, auth, bad requests, bandwidth."""

from __future__ import annotations

import http.client
import json
import threading
import time
from base64 import b64encode
from pathlib import Path

import pytest

from simpletasks.buckets import open_bucket
from simpletasks.message import TaskMessage
from simpletasks.queues import open_queue
from simpletasks.tasks.edge.gateway import GatewayServer, HasteGateway, TokenBucket
from simpletasks.tasks.edge.upload import (
    AuthRejected,
    GatewayUploader,
    UploadError,
    UploadRejected,
)

AUTH = "Basic " + b64encode(b"u:p").decode()


class FlakyBucket:
    """Wraps a bucket; its first ``failures`` uploads raise like an unreachable service."""

    def __init__(self, inner, failures: int) -> None:  # type: ignore[no-untyped-def]
        self.inner, self.failures, self.url = inner, failures, inner.url

    def upload(self, path: Path, key: str) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("bucket unreachable")
        self.inner.upload(path, key)


@pytest.fixture
def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    return open_bucket(f"file://{tmp_path}/bucket", create=True)


def post(server: GatewayServer, path: str, body: bytes, headers: dict[str, str]):  # type: ignore[no-untyped-def]
    conn = http.client.HTTPConnection(server.host, server.port, timeout=5)
    conn.request("POST", path, body=body, headers=headers)
    response = conn.getresponse()
    return response.status, response.read().decode()


def good_headers(**extra: str) -> dict[str, str]:
    return {
        "Authorization": AUTH,
        "X-HASTE-original_filename": "C:\\scope\\img1.png",
        "X-HASTE-tag": "bench",
        "X-HASTE-unixtime": "1700000000.5",
        **extra,
    }


def test_upload_is_stored_and_enqueued(tmp_path: Path, store) -> None:  # type: ignore[no-untyped-def]
    queue = open_queue("mem://edge-gw-test")
    queue.purge()
    gw = HasteGateway(store, username="u", password="p", queue=queue, task_name="TIER")
    with GatewayServer(gw) as server:
        src = tmp_path / "ünï cøde.png"
        src.write_bytes(b"pixels" * 1000)
        up = GatewayUploader(
            server.address, username="u", password="p", stream_id="2024_01_02__03_04_05_t", tag="t"
        )
        with up.session() as session:
            for _ in range(2):  # the kept-alive connection serves a second upload
                sent = session.send(src, name=src.name, original_filename=str(src), unixtime=1.5)
    assert sent.target == f"2024_01_02__03_04_05_t/{src.name}" and sent.bytes == 6000
    local = tmp_path / "got"
    store.download(sent.target, local)
    assert local.read_bytes() == src.read_bytes()
    (first, *_) = queue.receive(2)
    message = TaskMessage.from_json(first.body)
    assert message.basic_info.name == "TIER"
    assert message.basic_info.input_keys() == [sent.target]
    assert message.payload_info["original_filename"] == str(src)
    assert message.payload_info["unixtime"] == 1.5 and message.payload_info["bytes"] == 6000
    assert gw.stats.stored == 2


@pytest.mark.parametrize(
    ("path", "headers", "status", "text"),
    [
        ("/stream/s1", {"X-HASTE-original_filename": "a.png"}, 401, "authentication"),
        ("/stream/s1", good_headers(Authorization="Basic " + b64encode(b"u:x").decode()), 401, ""),
        ("/stream/s1", good_headers(Authorization="Bearer abc"), 401, ""),
        ("/stream/s1", good_headers(Authorization="Basic %%%"), 401, ""),
        ("/stream/s1", {"Authorization": AUTH}, 400, "X-HASTE-original_filename"),
        ("/stream/s1", good_headers(**{"X-HASTE-original_filename": "/x/.."}), 400, ""),
        ("/stream/s1", good_headers(**{"X-HASTE-unixtime": "soon"}), 400, "unixtime"),
        ("/stream/s1", good_headers(**{"X-HASTE-unixtime": "nan"}), 400, "unixtime"),
        ("/stream/../etc", good_headers(), 404, "STREAM_ID"),
        ("/upload", good_headers(), 404, ""),
        ("/stream/s1", good_headers(**{"Content-Length": "-3"}), 400, "Content-Length"),
        ("/stream/s1", good_headers(**{"Content-Length": "9999999"}), 413, "limit"),
    ],
)
def test_bad_requests_get_clear_4xx_and_the_next_upload_works(  # type: ignore[no-untyped-def]
    store, path: str, headers: dict[str, str], status: int, text: str
) -> None:
    gw = HasteGateway(store, username="u", password="p", max_bytes=100_000)
    with GatewayServer(gw) as server:
        conn = http.client.HTTPConnection(server.host, server.port, timeout=5)
        conn.putrequest("POST", path)
        headers = {"Content-Length": "3", **headers}
        for k, v in headers.items():
            conn.putheader(k, v)
        conn.endheaders()
        if int(headers["Content-Length"]) == 3:
            conn.send(b"abc")
        response = conn.getresponse()
        assert response.status == status
        assert text in response.read().decode()
        code, body = post(server, "/stream/s1", b"ok", good_headers())
        assert code == 200 and json.loads(body)["bytes"] == 2
    assert gw.stats.rejected == 1 and gw.stats.stored == 1


def test_no_content_length_and_get_are_refused(store) -> None:  # type: ignore[no-untyped-def]
    with GatewayServer(HasteGateway(store, username="u", password="p")) as server:
        conn = http.client.HTTPConnection(server.host, server.port, timeout=5)
        conn.putrequest("POST", "/stream/s1")
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        response = conn.getresponse()
        assert response.status == 411
        conn = http.client.HTTPConnection(server.host, server.port, timeout=5)
        conn.request("GET", "/stream/s1")
        assert conn.getresponse().status == 405


def test_client_reports_401_clearly_without_retrying(tmp_path: Path, store) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "a.png"
    src.write_bytes(b"x" * 300_000)  # larger than socket buffers: the body must be drained
    with GatewayServer(HasteGateway(store, username="u", password="p")) as server:
        up = GatewayUploader(server.address, username="u", password="bad", stream_id="s", tag="t")
        with up.session() as session, pytest.raises(AuthRejected, match=r"refused user 'u'.*401"):
            session.send(src, name="a.png", original_filename=str(src), unixtime=0)
    assert not AuthRejected("x").retryable and isinstance(AuthRejected("x"), UploadRejected)


def test_storage_failure_is_503_and_retryable(tmp_path: Path, store) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "a.png"
    src.write_bytes(b"x")
    gw = HasteGateway(FlakyBucket(store, 1), username="u", password="p")
    with GatewayServer(gw) as server:
        up = GatewayUploader(server.address, username="u", password="p", stream_id="s", tag="t")
        with up.session() as session:
            with pytest.raises(UploadError, match="HTTP 503") as info:
                session.send(src, name="a.png", original_filename="a.png", unixtime=0)
            assert info.value.retryable
            assert session.send(src, name="a.png", original_filename="a.png", unixtime=0).bytes == 1


def test_bandwidth_limit_is_shared_by_all_connections(tmp_path: Path, store) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "a.png"
    src.write_bytes(b"x" * 200_000)
    rate = 1_000_000.0
    gw = HasteGateway(store, username="u", password="p", bandwidth=rate)
    with GatewayServer(gw) as server:
        up = GatewayUploader(server.address, username="u", password="p", stream_id="s", tag="t")

        def one(i: int) -> None:
            with up.session() as session:
                session.send(src, name=f"{i}.png", original_filename="x", unixtime=0)

        started = time.monotonic()
        threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seconds = time.monotonic() - started
    expected = (4 * 200_000 - gw.limit.burst) / rate  # type: ignore[union-attr]
    assert expected * 0.95 < seconds < expected * 1.25 + 0.1


def test_token_bucket_rate_and_bad_rate() -> None:
    bucket = TokenBucket(500_000, burst=10_000)
    started = time.monotonic()
    for _ in range(20):
        bucket.consume(10_000)
    seconds = time.monotonic() - started
    assert 0.36 < seconds < 0.5  # (200k - 10k burst) / 500k = 0.38 s
    with pytest.raises(ValueError, match="positive"):
        TokenBucket(0)
