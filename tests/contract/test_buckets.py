"""The bucket contract: every backend (mem, file, s3 on moto, gs on fake-gcs-server) passes.

Backend-specific behaviour (S3 multipart and verification, file-bucket temp files, URL
parsing) follows the shared contract at the end of the module.
"""

from __future__ import annotations

import io
import os
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from simpletasks.buckets import BucketService, open_bucket
from simpletasks.buckets.file import FileBucket, temp_name
from simpletasks.buckets.memory import MemoryBucket
from simpletasks.emulators.moto import MotoServer
from simpletasks.errors import (
    ConfigError,
    IntegrityError,
    InvalidKey,
    KeyNotFound,
    UnsupportedScheme,
)

MiB = 1024 * 1024


@dataclass
class Target:
    """How to open one backend: its root URL (no prefix), the fixture's prefix, options."""

    root_url: str
    prefix: str = ""
    kwargs: dict[str, Any] = field(default_factory=dict)

    def open(self, prefix: str | None = None) -> BucketService:
        prefix = self.prefix if prefix is None else prefix
        url = f"{self.root_url}/{prefix}" if prefix else self.root_url
        # A file bucket's prefix is a directory of its own: it must exist like the root.
        create = bool(prefix) and url.startswith("file://")
        return open_bucket(url, create=create, **self.kwargs)


@pytest.fixture(scope="module")
def s3_client(moto_server: MotoServer) -> Any:
    """One S3 client for the module (making clients is slow), pointed at the moto server."""
    from simpletasks.buckets.s3 import make_client

    return make_client(endpoint_url=moto_server.endpoint_url)


@pytest.fixture(scope="module")
def gcs_client(gcs_emulator: Any) -> Any:
    """One GCS client for the module, pointed at the fake-gcs-server."""
    return gcs_emulator.client()


def _unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=["mem", "file", "s3", "s3-prefix", "gs", "gs-prefix"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    """Each backend, with a fresh bucket per test."""
    kind = request.param
    if kind == "mem":
        yield Target(f"mem://{_unique('test')}")
        MemoryBucket.reset_all()
    elif kind == "file":
        (tmp_path / "bucket dir").mkdir()
        yield Target((tmp_path / "bucket dir").as_uri())
    elif kind.startswith("gs"):
        gcs = request.getfixturevalue("gcs_client")
        name = _unique("test")
        gcs.create_bucket(name)
        prefix = "some/prefix" if kind == "gs-prefix" else ""
        yield Target(f"gs://{name}", prefix, {"client": gcs})
    else:
        client = request.getfixturevalue("s3_client")
        name = _unique("test")
        client.create_bucket(Bucket=name)
        prefix = "some/prefix" if kind == "s3-prefix" else ""
        yield Target(f"s3://{name}", prefix, {"client": client})


@pytest.fixture
def bucket(target: Target) -> BucketService:
    return target.open()


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """A local directory for files to upload and download (not the file bucket's root)."""
    path = tmp_path / "work"
    path.mkdir()
    return path


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# -- the contract ---------------------------------------------------------------------------


def test_is_a_bucket_service(bucket: BucketService, target: Target) -> None:
    assert isinstance(bucket, BucketService)
    assert bucket.url == (
        f"{target.root_url}/{target.prefix}" if target.prefix else target.root_url
    )


def test_file_round_trip(bucket: BucketService, work: Path) -> None:
    data = os.urandom(100_000)
    bucket.upload(_write(work / "in.bin", data), "data/in.bin")
    bucket.download("data/in.bin", work / "out.bin")
    assert (work / "out.bin").read_bytes() == data


def test_stream_round_trip(bucket: BucketService) -> None:
    data = os.urandom(50_000)
    bucket.upload_fileobj(io.BytesIO(data), "s/stream.bin")
    out = io.BytesIO()
    bucket.download_fileobj("s/stream.bin", out)
    assert out.getvalue() == data


def test_empty_object_round_trip(bucket: BucketService, work: Path) -> None:
    bucket.upload_fileobj(io.BytesIO(b""), "empty")
    bucket.download("empty", work / "empty")
    assert (work / "empty").read_bytes() == b""


def test_overwrite_replaces_whole_object(bucket: BucketService, work: Path) -> None:
    bucket.upload(_write(work / "long", b"x" * 10_000), "k")
    bucket.upload(_write(work / "short", b"short"), "k")
    bucket.download("k", work / "out")
    assert (work / "out").read_bytes() == b"short"


def test_download_overwrites_existing_local_file(bucket: BucketService, work: Path) -> None:
    bucket.upload_fileobj(io.BytesIO(b"new"), "k")
    _write(work / "out", b"old content that is longer")
    bucket.download("k", work / "out")
    assert (work / "out").read_bytes() == b"new"


def test_exists_and_delete(bucket: BucketService) -> None:
    assert not bucket.exists("a/b")
    bucket.upload_fileobj(io.BytesIO(b"1"), "a/b")
    assert bucket.exists("a/b")
    assert not bucket.exists("a")  # a "directory" is not an object
    bucket.delete("a/b")
    assert not bucket.exists("a/b")
    assert list(bucket.list()) == []


def test_delete_missing_is_not_an_error(bucket: BucketService) -> None:
    bucket.delete("never/there")
    bucket.delete("never/there")


def test_list_sorted_and_by_prefix(bucket: BucketService) -> None:
    keys = ["b/2", "a/10", "a/1", "ab", "a/2", "c", "a/sub/x"]
    for key in keys:
        bucket.upload_fileobj(io.BytesIO(key.encode()), key)
    assert list(bucket.list()) == sorted(keys)
    assert list(bucket.list("a/")) == ["a/1", "a/10", "a/2", "a/sub/x"]
    assert list(bucket.list("a")) == ["a/1", "a/10", "a/2", "a/sub/x", "ab"]
    assert list(bucket.list("a/sub/")) == ["a/sub/x"]
    assert list(bucket.list("a/1")) == ["a/1", "a/10"]
    assert list(bucket.list("zzz")) == []
    assert list(bucket.list("nothing/here/")) == []


def test_keys_are_relative_to_url_prefix(target: Target) -> None:
    root = target.open(prefix="")
    inner = target.open(prefix="run1/part")
    root.upload_fileobj(io.BytesIO(b"outside"), "run1/other")
    inner.upload_fileobj(io.BytesIO(b"inside"), "x/y")
    assert list(inner.list()) == ["x/y"]
    assert list(inner.list("x/")) == ["x/y"]
    assert list(root.list("run1/")) == ["run1/other", "run1/part/x/y"]
    assert root.exists("run1/part/x/y")
    out = io.BytesIO()
    root.download_fileobj("run1/part/x/y", out)
    assert out.getvalue() == b"inside"
    assert not inner.exists("run1/other")


def test_download_missing_raises_and_leaves_no_file(bucket: BucketService, work: Path) -> None:
    with pytest.raises(KeyNotFound) as info:
        bucket.download("no/such.key", work / "out.bin")
    message = str(info.value)
    assert "'no/such.key'" in message
    assert bucket.url in message
    assert not (work / "out.bin").exists()
    assert os.listdir(work) == []


def test_download_missing_keeps_existing_local_file(bucket: BucketService, work: Path) -> None:
    _write(work / "out", b"keep me")
    with pytest.raises(KeyNotFound):
        bucket.download("missing", work / "out")
    assert (work / "out").read_bytes() == b"keep me"
    assert os.listdir(work) == ["out"]


def test_download_fileobj_missing_raises(bucket: BucketService) -> None:
    out = io.BytesIO()
    with pytest.raises(KeyNotFound, match="'gone'"):
        bucket.download_fileobj("gone", out)
    assert out.getvalue() == b""


def test_download_creates_missing_parent_directories(bucket: BucketService, work: Path) -> None:
    bucket.upload_fileobj(io.BytesIO(b"deep"), "k")
    bucket.download("k", work / "a" / "b" / "c" / "k")
    assert (work / "a" / "b" / "c" / "k").read_bytes() == b"deep"


@pytest.mark.parametrize(
    "key",
    ["données/naïve ✓ 日本.txt", "with space/a+b%20c&d=e.txt", "emoji/🐍.bin", "a/.hidden"],
)
def test_unicode_and_odd_keys_round_trip(bucket: BucketService, work: Path, key: str) -> None:
    data = key.encode()
    bucket.upload(_write(work / "in", data), key)
    assert bucket.exists(key)
    assert list(bucket.list()) == [key]
    bucket.download(key, work / "out")
    assert (work / "out").read_bytes() == data
    bucket.delete(key)
    assert not bucket.exists(key)


def test_failed_final_rename_leaves_no_partial_file(
    bucket: BucketService, work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket.upload_fileobj(io.BytesIO(b"x" * 1000), "k")

    def refuse(src: Any, dst: Any) -> None:
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError, match="simulated"):
        bucket.download("k", work / "out")
    monkeypatch.undo()
    assert os.listdir(work) == []


def test_concurrent_uploads_from_threads(bucket: BucketService) -> None:
    errors: list[BaseException] = []

    def put(i: int) -> None:
        try:
            bucket.upload_fileobj(io.BytesIO(b"%d" % i), f"t/{i:02d}")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=put, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert list(bucket.list("t/")) == [f"t/{i:02d}" for i in range(16)]


UNSAFE_KEYS = [
    ("../x", "'..' component"),
    ("a/../../x", "'..' component"),
    ("/abs", "is absolute"),
    ("a\\b", "contains a backslash"),
    ("a\x00b", "contains a NUL"),
    ("", "must not be empty"),
    ("a//b", "empty, '.' or '..' component"),
    ("./a", "'.' or '..' component"),
]

METHODS: dict[str, Callable[[BucketService, str, Path], object]] = {
    "download": lambda b, k, w: b.download(k, w / "out"),
    "upload": lambda b, k, w: b.upload(_write(w / "in", b"data"), k),
    "download_fileobj": lambda b, k, w: b.download_fileobj(k, io.BytesIO()),
    "upload_fileobj": lambda b, k, w: b.upload_fileobj(io.BytesIO(b"data"), k),
    "exists": lambda b, k, w: b.exists(k),
    "delete": lambda b, k, w: b.delete(k),
}


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize(("key", "reason"), UNSAFE_KEYS)
def test_unsafe_keys_are_rejected_by_every_method(
    bucket: BucketService, work: Path, tmp_path: Path, method: str, key: str, reason: str
) -> None:
    before = sorted(p for p in tmp_path.rglob("*") if p.name != "in")
    with pytest.raises(InvalidKey, match=reason.replace(".", r"\.")):
        METHODS[method](bucket, key, work)
    after = sorted(p for p in tmp_path.rglob("*") if p.name != "in")
    assert after == before  # nothing was written anywhere
    assert list(bucket.list()) == []


def test_non_string_key_is_rejected(bucket: BucketService) -> None:
    with pytest.raises(InvalidKey, match="must be a string, got PosixPath"):
        bucket.exists(Path("a/b"))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("prefix", "reason"),
    [
        ("../", "'..' component"),
        ("/abs", "is absolute"),
        ("/", "is absolute"),
        ("a\\", "backslash"),
        ("a\x00", "NUL"),
        ("a//", "component"),
    ],
)
def test_unsafe_list_prefix_is_rejected_at_call(
    bucket: BucketService, prefix: str, reason: str
) -> None:
    with pytest.raises(InvalidKey, match=reason):
        bucket.list(prefix)  # raises at once, not on first iteration


# -- opening buckets ------------------------------------------------------------------------


def test_unknown_scheme_is_unsupported() -> None:
    with pytest.raises(UnsupportedScheme, match=r"no bucket backend for ftp://.*known: file://"):
        open_bucket("ftp://host/dir")


def test_memory_buckets_with_same_name_share_objects() -> None:
    a = open_bucket("mem://shared-x")
    b = open_bucket("mem://shared-x")
    a.upload_fileobj(io.BytesIO(b"1"), "k")
    assert b.exists("k")
    MemoryBucket.reset_all()
    assert not open_bucket("mem://shared-x").exists("k")


@pytest.mark.parametrize(
    ("url", "kwargs", "message"),
    [
        ("mem://", {}, "has no name"),
        ("mem://x/../y", {}, "'..' component"),
        ("mem://x", {"client": object()}, r"memory bucket takes no options, got \['client'\]"),
        ("file://relative/dir", {}, "'relative' would be a host name. Use file:///absolute/path"),
        ("file://", {}, "has no absolute path"),
        ("file:///tmp/x", {"client": 1}, r"file bucket takes no options, got \['client'\]"),
        ("file:///no/such/dir", {}, "file bucket directory '/no/such/dir' does not exist"),
        ("s3://", {}, "has no bucket name"),
        ("s3:///prefix", {}, "has no bucket name"),
        ("s3://b/../x", {}, "unsafe prefix"),
        ("s3://b/a//x", {}, "unsafe prefix"),
    ],
)
def test_malformed_urls_give_specific_errors(
    url: str, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises((ConfigError, InvalidKey), match=message):
        open_bucket(url, **kwargs)


def test_file_queue_and_file_bucket_read_a_url_the_same_way(tmp_path: Path) -> None:
    from simpletasks.queues import open_queue

    url = (tmp_path / "dir x é").as_uri()  # file:///.../dir%20x%20%C3%A9
    with pytest.raises(ConfigError, match="does not exist"):
        open_bucket(url)
    bucket = open_bucket(url, create=True)
    queue = open_queue(url, create=True)
    assert isinstance(bucket, FileBucket)
    assert bucket.root == queue.directory == tmp_path / "dir x é"  # type: ignore[attr-defined]
    assert bucket.url == queue.url == url
    assert sorted(os.listdir(tmp_path)) == ["dir x é"]


def test_file_bucket_create_makes_the_directory_and_nothing_else_does(tmp_path: Path) -> None:
    url = (tmp_path / "a" / "b").as_uri()
    with pytest.raises(ConfigError, match=r"create it with `simpletasks create --bucket file:///"):
        open_bucket(url)
    assert not (tmp_path / "a").exists()
    open_bucket(url, create=True).upload_fileobj(io.BytesIO(b"1"), "k")
    assert open_bucket(url).exists("k")
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="it is not a directory"):
        open_bucket((tmp_path / "file").as_uri(), create=True)


def test_backend_from_url_rejects_other_schemes() -> None:
    with pytest.raises(ConfigError, match="not a file bucket URL"):
        FileBucket.from_url("mem://x")
    with pytest.raises(ConfigError, match="not a memory bucket URL"):
        MemoryBucket.from_url("file:///x")


# -- file bucket ----------------------------------------------------------------------------


def test_file_bucket_ignores_temp_files_and_leaves_none(tmp_path: Path) -> None:
    bucket = open_bucket(f"file://{tmp_path.as_posix()}")
    bucket.upload_fileobj(io.BytesIO(b"1"), "d/k")
    planted = temp_name("k")
    (tmp_path / "d" / planted).write_bytes(b"half")
    assert list(bucket.list()) == ["d/k"]
    assert sorted(os.listdir(tmp_path / "d")) == sorted([planted, "k"])  # upload left no temp


def test_file_bucket_stores_keys_as_files_and_prunes_empty_dirs(tmp_path: Path) -> None:
    bucket = open_bucket(f"file://{tmp_path.as_posix()}/root", create=True)
    bucket.upload_fileobj(io.BytesIO(b"1"), "a/b/c")
    assert (tmp_path / "root" / "a" / "b" / "c").read_bytes() == b"1"
    bucket.delete("a/b/c")
    assert os.listdir(tmp_path / "root") == []


def test_file_bucket_refuses_symlinks_out_of_its_root(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret")
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "link").symlink_to(outside)
    bucket = open_bucket(f"file://{tmp_path.as_posix()}/root")
    with pytest.raises(InvalidKey, match="resolves outside"):
        bucket.download_fileobj("link/secret", io.BytesIO())
    with pytest.raises(InvalidKey, match="resolves outside"):
        bucket.upload_fileobj(io.BytesIO(b"x"), "link/new")
    assert os.listdir(outside) == ["secret"]


def test_file_bucket_failed_copy_leaves_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import simpletasks.buckets.file as file_module

    bucket = open_bucket(f"file://{tmp_path.as_posix()}/root", create=True)
    bucket.upload_fileobj(io.BytesIO(b"x" * 5000), "k")

    def half_then_fail(src: Any, dst: Any) -> int:
        dst.write(src.read(100))
        raise OSError("read error (simulated)")

    monkeypatch.setattr(file_module, "_copy_counting", half_then_fail)
    with pytest.raises(OSError, match="simulated"):
        bucket.download("k", tmp_path / "dl" / "k")
    assert os.listdir(tmp_path / "dl") == []


# -- s3 -------------------------------------------------------------------------------------


@pytest.fixture
def s3_target(s3_client: Any) -> Target:
    name = _unique("s3")
    s3_client.create_bucket(Bucket=name)
    return Target(f"s3://{name}", "p", {"client": s3_client})


def test_s3_large_object_goes_multipart_and_verifies_by_size(
    s3_target: Target, s3_client: Any, work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import simpletasks.buckets.s3 as s3_module

    bucket = s3_target.open()
    data = os.urandom(20 * MiB)
    bucket.upload(_write(work / "big", data), "big.bin")
    head = s3_client.head_object(Bucket=s3_target.root_url[5:], Key="p/big.bin")
    assert "-" in head["ETag"]  # multipart: the ETag is not an MD5

    def no_md5(path: Path) -> str:
        raise AssertionError("a multipart ETag must not be compared with an MD5")

    monkeypatch.setattr(s3_module, "file_md5", no_md5)
    bucket.download("big.bin", work / "out")
    assert (work / "out").read_bytes() == data


def _corrupt_get_object(
    client: Any, monkeypatch: pytest.MonkeyPatch, change: Callable[[dict[str, Any], bytes], bytes]
) -> None:
    """Make ``client.get_object`` answer other bytes (``change(answer, data)``), as a bad
    network or disk would, the headers (ETag, lengths) unchanged unless ``change`` edits them."""
    from botocore.response import StreamingBody

    real_get_object = client.get_object

    def get_object(**kwargs: Any) -> dict[str, Any]:
        answer: dict[str, Any] = real_get_object(**kwargs)
        data = change(answer, answer["Body"].read())
        answer["Body"] = StreamingBody(io.BytesIO(data), len(data))
        return answer

    monkeypatch.setattr(client, "get_object", get_object)


def test_s3_md5_mismatch_raises_integrity_error_and_leaves_no_file(
    s3_target: Target, work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hashlib

    bucket = s3_target.open()
    bucket.upload_fileobj(io.BytesIO(b"payload"), "k")
    _corrupt_get_object(bucket.client, monkeypatch, lambda answer, data: b"X" + data[1:])  # type: ignore[attr-defined]
    expected, got = hashlib.md5(b"payload").hexdigest(), hashlib.md5(b"Xayload").hexdigest()
    with pytest.raises(IntegrityError, match=f"'k' MD5 mismatch: expected {expected}, got {got}"):
        bucket.download("k", work / "out")
    assert os.listdir(work) == []


def test_s3_md5_of_a_large_object_is_read_back_from_the_file(
    s3_client: Any, work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from boto3.s3.transfer import TransferConfig

    import simpletasks.buckets.s3 as s3_module
    from simpletasks.buckets.s3 import S3Bucket

    config = TransferConfig(multipart_threshold=1024, multipart_chunksize=5 * MiB)
    bucket = S3Bucket(_unique("md5"), client=s3_client, transfer_config=config, create=True)
    s3_client.put_object(Bucket=bucket.bucket, Key="k", Body=b"x" * 5000)  # one part: MD5 ETag
    checked: list[Path] = []
    real_file_md5 = s3_module.file_md5

    def recorded(path: Path) -> str:
        checked.append(path)
        return real_file_md5(path)

    monkeypatch.setattr(s3_module, "file_md5", recorded)
    bucket.download("k", work / "ok")  # above the threshold: managed transfer, then read back
    assert len(checked) == 1 and (work / "ok").read_bytes() == b"x" * 5000
    monkeypatch.setattr(s3_module, "file_md5", lambda path: "0" * 32)
    with pytest.raises(IntegrityError, match=r"'k' MD5 mismatch: expected [0-9a-f]{32}, got 0{32}"):
        bucket.download("k", work / "out")
    assert os.listdir(work) == ["ok"]


def test_s3_size_mismatch_raises_integrity_error(
    s3_target: Target, work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = s3_target.open()
    bucket.upload_fileobj(io.BytesIO(b"payload"), "k")
    real_head = bucket._head  # type: ignore[attr-defined]

    def lying_head(key: str, full: str) -> dict[str, Any]:
        return {**real_head(key, full), "ContentLength": 999}

    def lying_range(answer: dict[str, Any], data: bytes) -> bytes:
        answer["ContentRange"] = f"bytes 0-{len(data) - 1}/999"
        return data

    monkeypatch.setattr(bucket, "_head", lying_head)  # objects above the multipart threshold
    _corrupt_get_object(bucket.client, monkeypatch, lying_range)  # type: ignore[attr-defined]
    with pytest.raises(IntegrityError, match="'k' size mismatch: expected 999 bytes, got 7"):
        bucket.download("k", work / "out")
    assert os.listdir(work) == []


@pytest.mark.parametrize("size", [0, 1, 1023, 1024, 1025, 5000])
def test_s3_downloads_small_and_large_objects_whole(
    moto_server: MotoServer, s3_client: Any, work: Path, size: int
) -> None:
    from boto3.s3.transfer import TransferConfig

    from simpletasks.buckets.s3 import S3Bucket

    config = TransferConfig(multipart_threshold=1024, multipart_chunksize=5 * 1024 * 1024)
    bucket = S3Bucket(_unique("sizes"), client=s3_client, transfer_config=config, create=True)
    data = os.urandom(size)
    bucket.upload_fileobj(io.BytesIO(data), "obj")
    bucket.download("obj", work / "obj")
    assert (work / "obj").read_bytes() == data
    with pytest.raises(KeyNotFound):
        bucket.download("missing", work / "missing")
    assert sorted(os.listdir(work)) == ["obj"]


def test_s3_missing_bucket_is_a_clear_error(moto_server: MotoServer, s3_client: Any) -> None:
    name = _unique("missing")
    hint = f"create it with `simpletasks create --bucket s3://{name}` or pass create=True"
    with pytest.raises(ConfigError, match=f"S3 bucket '{name}' does not exist.*{re.escape(hint)}"):
        open_bucket(f"s3://{name}", client=s3_client)
    bucket = open_bucket(f"s3://{name}/pre", client=s3_client, create=True)
    bucket.upload_fileobj(io.BytesIO(b"1"), "k")
    assert s3_client.head_object(Bucket=name, Key="pre/k")["ContentLength"] == 1
    open_bucket(f"s3://{name}", client=s3_client, create=True)  # already there: fine


def test_s3_bucket_deleted_later_gives_key_not_found(s3_target: Target, s3_client: Any) -> None:
    bucket = s3_target.open()
    s3_client.delete_bucket(Bucket=s3_target.root_url[5:])
    with pytest.raises(KeyNotFound, match="'k'"):
        bucket.download_fileobj("k", io.BytesIO())
    with pytest.raises(KeyNotFound, match=r"bucket .* does not exist"):
        list(bucket.list())
    assert not bucket.exists("k")
    bucket.delete("k")


def test_s3_list_skips_objects_that_are_not_valid_keys(s3_target: Target, s3_client: Any) -> None:
    name = s3_target.root_url[5:]
    for key in ("p/dir/", "p/a//b", "p/ok"):
        s3_client.put_object(Bucket=name, Key=key, Body=b"")
    assert list(s3_target.open().list()) == ["ok"]


def test_s3_client_and_endpoint_are_exclusive(s3_client: Any) -> None:
    with pytest.raises(ConfigError, match="either client= or endpoint_url="):
        open_bucket("s3://b", client=s3_client, endpoint_url="http://127.0.0.1:1")


def test_s3_endpoint_from_environment(
    moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.endpoint_url)
    bucket = open_bucket(f"s3://{_unique('env')}", create=True)
    bucket.upload_fileobj(io.BytesIO(b"1"), "k")
    assert bucket.exists("k")
