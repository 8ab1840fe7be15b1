"""MediaReader (GCS downloads over urllib3) against a scripted HTTP server on 127.0.0.1.

The server answers each GET with the next scripted answer, so that the cases fake-gcs-server
cannot make are covered: a read cut off midway (resumed with a ``Range``, pinned to the
generation first served), a server that ignores the ``Range``, a generation gone before the
resume, an answer without a generation, error answers. Downloads through fake-gcs-server and
a fault proxy are in tests/integration/test_gcs_emulator.py.
"""

from __future__ import annotations

import base64
import io
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

try:
    import google_crc32c
    from google.api_core import exceptions as gexc
    from google.auth.credentials import AnonymousCredentials
    from google.cloud.storage.retry import DEFAULT_RETRY

    from simpletasks.buckets._gcs_media import MediaReader, ResumeError, Served, crc32c_of
    from simpletasks.buckets.gcs import _VerifyingWriter
except ImportError as exc:  # skipped on a laptop without the gcp extra, fails under CI=true
    if os.environ.get("CI") == "true":
        raise
    pytest.skip(f"google-cloud-storage not installed ({exc.name})", allow_module_level=True)

DATA = bytes(range(256)) * 40  # 10,240 bytes


def _crc(data: bytes) -> str:
    return base64.b64encode(google_crc32c.Checksum(data).digest()).decode()


@dataclass
class Answer:
    """One scripted answer: ``cut`` sends only that many body bytes, then closes."""

    status: int = 200
    body: bytes = DATA
    generation: str | None = "7"
    hash: str | None = field(default_factory=lambda: f"crc32c={_crc(DATA)},md5=AAAA")
    cut: int | None = None
    headers: dict[str, str] = field(default_factory=dict)


class Script:
    def __init__(self) -> None:
        self.answers: list[Answer] = []
        self.requests: list[tuple[str, dict[str, str]]] = []


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        script: Script = self.server.script  # type: ignore[attr-defined]
        script.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
        answer = script.answers.pop(0) if script.answers else Answer()
        body = answer.body
        self.send_response(answer.status)
        if answer.generation is not None:
            self.send_header("X-Goog-Generation", answer.generation)
        if answer.hash is not None:
            self.send_header("X-Goog-Hash", answer.hash)
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if answer.cut is not None:
            self.wfile.write(body[: answer.cut])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)
            return
        self.wfile.write(body)


@pytest.fixture
def server() -> Iterator[tuple[str, Script]]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.script = Script()  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", httpd.script  # type: ignore[attr-defined]
    finally:
        httpd.shutdown()
        httpd.server_close()


FAST_RETRY = DEFAULT_RETRY.with_delay(initial=0.01, maximum=0.02).with_timeout(5.0)


def _reader(url: str) -> MediaReader:
    return MediaReader(url, AnonymousCredentials(), retry=FAST_RETRY)


def _read(url: str, sink: io.BytesIO | None = None) -> tuple[bytes, Served, _VerifyingWriter]:
    dest = sink if sink is not None else io.BytesIO()
    writer = _VerifyingWriter(dest)
    served = _reader(url).read("b", "dir/k y", writer)
    return dest.getvalue(), served, writer


def test_one_get_of_the_media_url(server: tuple[str, Script]) -> None:
    url, script = server
    data, served, writer = _read(url)
    assert data == DATA and writer.digest() == served.crc32c == _crc(DATA)
    assert served.generation == 7
    ((path, headers),) = script.requests
    assert path == "/download/storage/v1/b/b/o/dir%2Fk%20y?alt=media"
    assert headers["accept-encoding"] == "gzip"  # raw: stored bytes, never decompressed
    assert "range" not in headers


def test_cut_off_read_resumes_with_a_range_pinned_to_its_generation(
    server: tuple[str, Script],
) -> None:
    url, script = server
    script.answers = [Answer(cut=4000), Answer(status=206, body=DATA[4000:], hash=None)]
    data, served, writer = _read(url)
    assert data == DATA and writer.digest() == _crc(DATA)
    assert served == Served(7, _crc(DATA))  # the first answer's hash: the whole object's
    (_, first), (path, headers) = script.requests
    assert "range" not in first
    assert path.endswith("?alt=media&generation=7")
    assert headers["range"] == "bytes=4000-"


def test_resume_answered_whole_starts_over(server: tuple[str, Script]) -> None:
    url, script = server
    script.answers = [Answer(cut=4000), Answer(status=200)]  # the Range ignored
    data, _, writer = _read(url)
    assert data == DATA and writer.size == len(DATA)


def test_generation_gone_before_the_resume_reads_the_new_one_from_the_start(
    server: tuple[str, Script],
) -> None:
    url, script = server
    new = b"new generation"
    script.answers = [
        Answer(cut=4000),
        Answer(status=404, body=b'{"error": {"message": "No such object"}}'),
        Answer(body=new, generation="8", hash=f"crc32c={_crc(new)}"),
    ]
    data, served, _ = _read(url)
    assert data == new and served == Served(8, _crc(new))
    assert [p.split("?")[1] for p, _ in script.requests] == [
        "alt=media",
        "alt=media&generation=7",
        "alt=media",
    ]


def test_cut_off_before_any_byte_reports_what_the_retry_served(
    server: tuple[str, Script],
) -> None:
    url, script = server
    new = b"replaced meanwhile"
    script.answers = [Answer(cut=0), Answer(body=new, generation="8", hash=f"crc32c={_crc(new)}")]
    data, served, _ = _read(url)
    assert data == new and served == Served(8, _crc(new))  # not the first answer's headers


def test_cut_off_read_without_a_generation_starts_over(server: tuple[str, Script]) -> None:
    url, script = server
    script.answers = [Answer(cut=4000, generation=None), Answer(generation=None)]
    data, served, _ = _read(url)
    assert data == DATA and served.generation is None
    assert "range" not in script.requests[1][1]


def test_cut_off_read_into_a_stream_that_cannot_rewind(server: tuple[str, Script]) -> None:
    url, script = server
    script.answers = [Answer(cut=4000, generation=None)]

    class Pipe(io.BytesIO):
        def seekable(self) -> bool:
            return False

    with pytest.raises(ResumeError, match="was cut off and cannot start over in this stream"):
        _read(url, Pipe())


def test_transient_errors_are_retried(server: tuple[str, Script]) -> None:
    url, script = server
    script.answers = [Answer(status=429, body=b"slow down"), Answer(status=503, body=b"")]
    data, _, _ = _read(url)
    assert data == DATA and len(script.requests) == 3


@pytest.mark.parametrize(
    ("status", "body", "kind", "message"),
    [
        (404, b'{"error": {"code": 404, "message": "No such object: b/dir/k y"}}',
         gexc.NotFound, "No such object: b/dir/k y"),
        (403, b'{"error": {"message": "anonymous caller does not have access"}}',
         gexc.Forbidden, "anonymous caller does not have access"),
        (400, b"not json at all", gexc.BadRequest, "not json at all"),
        (412, b"", gexc.PreconditionFailed, "(no message)"),
    ],
)  # fmt: skip
def test_error_answers_raise_the_library_exceptions(
    server: tuple[str, Script], status: int, body: bytes, kind: type, message: str
) -> None:
    url, script = server
    script.answers = [Answer(status=status, body=body)]
    with pytest.raises(kind) as caught:
        _read(url)
    assert str(caught.value).endswith(f"GET {url}/download/storage/v1/b/b/o/dir%2Fk%20y"
                                      f"?alt=media: {message}")  # fmt: skip
    assert len(script.requests) == 1  # not retried


def test_hash_header_parsing() -> None:
    assert crc32c_of({"x-goog-hash": "crc32c=9ONpcA==,md5=abc/+=="}) == "9ONpcA=="
    assert crc32c_of({"x-goog-hash": "md5=abc==, crc32c=AAAAAA=="}) == "AAAAAA=="
    assert crc32c_of({"x-goog-hash": "md5=abc=="}) is None
    assert crc32c_of({"x-goog-hash": "crc32c=not base64!"}) is None
    assert crc32c_of({}) is None


def test_for_client_declines_proxied_endpoints_and_foreign_sessions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import requests
    from google.cloud import storage

    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)

    def client(**kwargs: Any) -> Any:
        return storage.Client(
            project="p",
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": "http://127.0.0.1:9"},
            **kwargs,
        )

    reader = MediaReader.for_client(client())
    assert isinstance(reader, MediaReader) and reader.base_url == "http://127.0.0.1:9"
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")
    assert MediaReader.for_client(client()) is None  # requests would go through the proxy
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    assert isinstance(MediaReader.for_client(client()), MediaReader)
    monkeypatch.delenv("HTTP_PROXY")
    assert MediaReader.for_client(client(_http=requests.Session())) is None


def test_https_endpoints_trust_what_requests_trusts(monkeypatch: pytest.MonkeyPatch) -> None:
    import certifi

    from simpletasks.buckets import _gcs_media

    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    assert _gcs_media._ca_bundle() == certifi.where()
    monkeypatch.setenv("CURL_CA_BUNDLE", "/etc/curl.pem")
    assert _gcs_media._ca_bundle() == "/etc/curl.pem"
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/requests.pem")
    assert _gcs_media._ca_bundle() == "/etc/requests.pem"
    reader = MediaReader("https://storage.googleapis.com", AnonymousCredentials())
    assert reader._http.http.connection_pool_kw["ca_certs"] == "/etc/requests.pem"
