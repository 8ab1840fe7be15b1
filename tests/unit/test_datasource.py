"""BucketCacheDatasource: get/put/delete through a cache, sessions, and many processes at once."""

from __future__ import annotations

import hashlib
import io
import multiprocessing
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from simpletasks import datasource as datasource_module
from simpletasks.buckets import BucketService, open_bucket
from simpletasks.buckets.memory import MemoryBucket
from simpletasks.cache import FileSystemCache
from simpletasks.datasource import BucketCacheDatasource, Datasource
from simpletasks.errors import InvalidKey, KeyNotFound


class CountingBucket:
    """Wraps a bucket, counting downloads (in memory, and in a log file across processes).

    With ``stream=True`` a download streams straight into the path it is given, in chunks,
    as a naive client would: only the cache then keeps readers from seeing partial files.
    """

    def __init__(
        self,
        inner: BucketService,
        log: Path | None = None,
        delay: float = 0.0,
        stream: bool = False,
    ) -> None:
        self.inner = inner
        self.url = inner.url
        self.log = log
        self.delay = delay
        self.stream = stream
        self.downloads: Counter[str] = Counter()
        self.active = 0
        self.max_active = 0
        self._lock = threading.Lock()

    def download(self, key: str, path: Path) -> None:
        with self._lock:
            self.downloads[key] += 1
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        if self.log is not None:
            fd = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, f"{key}\n".encode())
            finally:
                os.close(fd)
        try:
            time.sleep(self.delay)
            if self.stream:
                data = read_object(self.inner, key)
                with open(path, "wb") as out:
                    for start in range(0, len(data), 256 << 10):
                        out.write(data[start : start + (256 << 10)])
                        out.flush()
                        time.sleep(0.001)
            else:
                self.inner.download(key, path)
        finally:
            with self._lock:
                self.active -= 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def put_object(bucket: BucketService, key: str, data: bytes) -> None:
    bucket.upload_fileobj(io.BytesIO(data), key)


def read_object(bucket: BucketService, key: str) -> bytes:
    out = io.BytesIO()
    bucket.download_fileobj(key, out)
    return out.getvalue()


@pytest.fixture(params=["mem", "file"])
def mem(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BucketService]:
    """The bucket behind the datasource: a MemoryBucket or a FileBucket."""
    MemoryBucket.reset_all()
    if request.param == "mem":
        yield open_bucket("mem://datasource-test")
    else:
        yield open_bucket(f"file://{tmp_path / 'bucket'}", create=True)
    MemoryBucket.reset_all()


@pytest.fixture
def bucket(mem: BucketService) -> CountingBucket:
    for key in ("a", "b", "c", "dir/d"):
        put_object(mem, key, f"content of {key}".encode())
    return CountingBucket(mem)


@pytest.fixture
def ds(bucket: CountingBucket, tmp_path: Path) -> BucketCacheDatasource:
    return BucketCacheDatasource(bucket, FileSystemCache(tmp_path / "cache"))


def tmp_leftovers(ds: BucketCacheDatasource) -> list[Path]:
    return list((ds.cache.root / ".tmp").iterdir())


def test_get_single_key(ds: BucketCacheDatasource, bucket: CountingBucket) -> None:
    path = ds.get("dir/d")
    assert isinstance(path, Path)
    assert path == ds.local_path("dir/d") == ds.cache.root / "dir" / "d"
    assert path.read_bytes() == b"content of dir/d"
    assert ds.get("dir/d") == path
    assert bucket.downloads == {"dir/d": 1}


def test_get_many_keeps_order_and_fetches_duplicates_once(
    ds: BucketCacheDatasource, bucket: CountingBucket
) -> None:
    paths = ds.get(["c", "a", "b", "a"])
    assert [p.read_bytes() for p in paths] == [
        b"content of c",
        b"content of a",
        b"content of b",
        b"content of a",
    ]
    assert bucket.downloads == {"a": 1, "b": 1, "c": 1}
    assert ds.get(("a", "b")) == [ds.local_path("a"), ds.local_path("b")]
    assert bucket.downloads == {"a": 1, "b": 1, "c": 1}
    assert ds.get([]) == []


def test_get_downloads_in_parallel(mem: BucketService, tmp_path: Path) -> None:
    keys = [f"k{i}" for i in range(6)]
    for key in keys:
        put_object(mem, key, key.encode())
    slow = CountingBucket(mem, delay=0.1)
    ds = BucketCacheDatasource(slow, FileSystemCache(tmp_path / "c"), max_workers=3)
    ds.get(keys)
    assert 1 < slow.max_active <= 3
    serial = CountingBucket(mem)
    BucketCacheDatasource(serial, FileSystemCache(tmp_path / "s"), max_workers=1).get(keys)
    assert serial.max_active == 1


@pytest.mark.parametrize("lock_batch", [256, 1])  # all keys' locks at once, or one by one
def test_a_get_fetches_the_free_keys_while_another_writer_holds_one(
    ds: BucketCacheDatasource,
    bucket: CountingBucket,
    lock_batch: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(datasource_module, "LOCK_BATCH", lock_batch)
    release, held = threading.Event(), threading.Event()

    def writer_of_b() -> None:  # another thread (or process) filling b meanwhile
        with ds.cache.lock("b"):
            held.set()
            release.wait(10)
            ds.cache.put_bytes("b", b"written by the other writer")

    writer = threading.Thread(target=writer_of_b)
    writer.start()
    assert held.wait(5)
    with ThreadPoolExecutor(1) as pool:
        got = pool.submit(ds.get, ["a", "b", "c", "dir/d"])
        deadline = time.monotonic() + 5
        while set(bucket.downloads) != {"a", "c", "dir/d"} and time.monotonic() < deadline:
            time.sleep(0.01)
        assert set(bucket.downloads) == {"a", "c", "dir/d"}  # not held up by b
        assert not got.done()  # b: waits for its writer
        release.set()
        paths = got.result(10)
    writer.join()
    assert [p.read_bytes() for p in paths] == [
        b"content of a",
        b"written by the other writer",  # found under the lock: not fetched again
        b"content of c",
        b"content of dir/d",
    ]
    assert bucket.downloads == {"a": 1, "c": 1, "dir/d": 1}


def test_override_cache_downloads_again(
    ds: BucketCacheDatasource, bucket: CountingBucket, mem: BucketService
) -> None:
    ds.get(["a", "b"])
    put_object(mem, "a", b"changed")
    assert ds.get("a").read_bytes() == b"content of a"
    assert ds.get("a", override_cache=True).read_bytes() == b"changed"
    ds.get(["a", "b"], override_cache=True)
    assert bucket.downloads == {"a": 3, "b": 2}


def test_missing_key(ds: BucketCacheDatasource) -> None:
    with pytest.raises(KeyNotFound, match="'nope'"):
        ds.get("nope")
    assert not ds.cache.exists("nope")
    assert tmp_leftovers(ds) == []


def test_several_failures_raise_the_first_and_leave_nothing_partial(
    ds: BucketCacheDatasource,
) -> None:
    with pytest.raises(KeyNotFound, match="'missing1'"):
        ds.get(["a", "missing1", "b", "missing2"])
    assert ds.cache.keys() == ["a", "b"]  # fetched whole, and kept
    assert ds.local_path("a").read_bytes() == b"content of a"
    assert tmp_leftovers(ds) == []


def test_failing_download_leaves_no_partial_file(mem: BucketService, tmp_path: Path) -> None:
    class HalfBucket(CountingBucket):
        def download(self, key: str, path: Path) -> None:
            path.write_bytes(b"half of it")
            raise ConnectionError(f"connection reset while downloading {key}")

    ds = BucketCacheDatasource(HalfBucket(mem), FileSystemCache(tmp_path / "c"))
    with pytest.raises(ConnectionError, match="downloading a"):
        ds.get(["a", "b"])
    assert ds.cache.keys() == []
    assert tmp_leftovers(ds) == []


def test_invalid_key_is_rejected_before_any_download(
    ds: BucketCacheDatasource, bucket: CountingBucket
) -> None:
    with pytest.raises(InvalidKey, match=r"keys\[1\] '\.\./x' has an empty, '\.' or '\.\.'"):
        ds.get(["a", "../x"])
    with pytest.raises(InvalidKey, match="'/abs' is absolute"):
        ds.get("/abs")
    with pytest.raises(InvalidKey, match="reserves for its own files"):
        ds.get([".locks/x"])
    assert bucket.downloads == {}


@pytest.mark.parametrize("bad", [0, -2, 1.5, True])
def test_max_workers_validation(bucket: CountingBucket, tmp_path: Path, bad: object) -> None:
    with pytest.raises(ValueError, match="max_workers must be an integer >= 1, got"):
        BucketCacheDatasource(bucket, FileSystemCache(tmp_path), max_workers=bad)  # type: ignore[arg-type]


def test_put_bytes_uploads(ds: BucketCacheDatasource, mem: BucketService) -> None:
    path = ds.put("out/x", b"result")
    assert path == ds.local_path("out/x")
    assert path.read_bytes() == b"result"
    assert read_object(mem, "out/x") == b"result"


def test_put_only_cache_does_not_upload(ds: BucketCacheDatasource, mem: BucketService) -> None:
    ds.put("out/x", b"local only", only_cache=True)
    assert ds.local_path("out/x").read_bytes() == b"local only"
    assert not mem.exists("out/x")


def test_put_path_copies_and_uploads(
    ds: BucketCacheDatasource, mem: BucketService, tmp_path: Path
) -> None:
    src = tmp_path / "made.bin"
    src.write_bytes(b"from a file")
    ds.put("out/y", src)
    assert ds.local_path("out/y").read_bytes() == b"from a file"
    assert read_object(mem, "out/y") == b"from a file"


def test_put_missing_file(ds: BucketCacheDatasource, mem: BucketService, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"cannot cache key 'out/y': source .*/gone is"):
        ds.put("out/y", tmp_path / "gone")
    assert not mem.exists("out/y")


def test_put_without_data_uploads_the_cache_entry(
    ds: BucketCacheDatasource, mem: BucketService
) -> None:
    target = ds.local_path("out/z")
    target.parent.mkdir(parents=True)
    target.write_bytes(b"written by the task")
    ds.put("out/z")
    assert read_object(mem, "out/z") == b"written by the task"
    ds.put("out/z", target)  # the entry itself, as a path: same thing
    assert read_object(mem, "out/z") == b"written by the task"


def test_put_without_data_needs_the_entry(ds: BucketCacheDatasource, mem: BucketService) -> None:
    with pytest.raises(FileNotFoundError, match=r"put\('out/none'\) without data uploads .* not"):
        ds.put("out/none")
    assert not mem.exists("out/none")


@pytest.mark.parametrize(
    ("bad", "message"),
    [("text", r"got str; use Path\(\.\.\.\)"), (12, "got int"), (["x"], "got list")],
)
def test_put_rejects_other_data(ds: BucketCacheDatasource, bad: object, message: str) -> None:
    with pytest.raises(
        TypeError, match=r"put\('k'\): data must be bytes, a Path or None, " + message
    ):
        ds.put("k", bad)  # type: ignore[arg-type]
    assert ds.cache.keys() == []


def test_put_invalid_key(ds: BucketCacheDatasource) -> None:
    with pytest.raises(InvalidKey, match="contains a backslash"):
        ds.put("a\\b", b"x")


def test_delete(ds: BucketCacheDatasource, mem: BucketService) -> None:
    ds.get(["a", "b"])
    ds.delete("a", only_cache=True)
    assert not ds.cache.exists("a")
    assert mem.exists("a")
    ds.delete("b")
    assert not ds.cache.exists("b")
    assert not mem.exists("b")
    ds.delete("never-existed")


def test_local_path_does_no_io(ds: BucketCacheDatasource, bucket: CountingBucket) -> None:
    assert ds.local_path("x/y") == ds.cache.root / "x" / "y"
    assert not (ds.cache.root / "x").exists()
    assert bucket.downloads == {}


def test_datasource_protocol(ds: BucketCacheDatasource) -> None:
    assert isinstance(ds, Datasource)
    with ds.session() as session:
        assert isinstance(session, Datasource)


def test_session_pins_until_exit(bucket: CountingBucket, tmp_path: Path) -> None:
    for key in ("a", "b", "c"):
        put_object(bucket.inner, key, b"x" * 100)
    ds = BucketCacheDatasource(bucket, FileSystemCache(tmp_path / "c", max_bytes=250))
    with ds.session() as session:
        session.get("a")
        session.get(["b"])
        session.put("out", b"y" * 100, only_cache=True)
        assert session.pinned == {"a", "b", "out"}
        session.get("c")  # over the bound, but everything else is in use
        assert ds.cache.keys() == ["a", "b", "c", "out"]
        assert all(session.local_path(k).exists() for k in ("a", "b", "c", "out"))
    ds.cache.evict()
    assert ds.cache.size_bytes() <= 250
    assert ds.cache.keys() == ["c", "out"]


def test_without_session_paths_are_pinned_only_during_the_call(
    bucket: CountingBucket, tmp_path: Path
) -> None:
    for key in ("a", "b", "c"):
        put_object(bucket.inner, key, b"x" * 100)
    ds = BucketCacheDatasource(bucket, FileSystemCache(tmp_path / "c", max_bytes=200))
    ds.get("a")
    ds.get("b")
    ds.get("c")
    assert ds.cache.keys() == ["b", "c"]


def test_closed_session_refuses_work(ds: BucketCacheDatasource) -> None:
    with ds.session() as session:
        session.get("a")
    assert session.pinned == frozenset()
    with pytest.raises(RuntimeError, match="datasource session is closed"):
        session.get("a")
    with pytest.raises(RuntimeError, match="datasource session is closed"):
        session.get(["a", "b"])
    with pytest.raises(RuntimeError, match="datasource session is closed"):
        session.put("x", b"1")
    with pytest.raises(RuntimeError, match="datasource session is closed"):
        session.delete("a")
    assert ds.cache.keys() == ["a"]


# -- several processes at once ---------------------------------------------------------------


def _fetch_in_process(
    bucket_dir: str,
    cache_dir: str,
    log: str,
    expected: dict[str, str],
    seed: int,
    max_bytes: int | None,
    barrier: Any,
    results: Any,
) -> None:
    """Fetch every key from 4 threads, and then as lists; check each file's sha256 at once."""
    errors: list[str] = []

    def check(key: str, path: Path) -> None:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != expected[key]:
            errors.append(f"{key}: sha256 {digest} != {expected[key]}")

    def single_gets(order: list[str]) -> None:
        for key in order:
            with ds.session() as session:  # the file stays pinned while it is checked
                check(key, session.get(key))

    try:
        bucket = CountingBucket(
            open_bucket(f"file://{bucket_dir}", create=True), Path(log), stream=True
        )
        cache = FileSystemCache(cache_dir, max_bytes=max_bytes)
        ds = BucketCacheDatasource(bucket, cache, max_workers=4)
        rng = random.Random(seed)
        orders = [rng.sample(list(expected), len(expected)) for _ in range(4)]
        barrier.wait(30)
        with ThreadPoolExecutor(4) as pool:
            for future in [pool.submit(single_gets, order) for order in orders]:
                future.result()
        keys = orders[0]
        for group in [keys[i : i + 3] for i in range(0, len(keys), 3)]:
            with ds.session() as session:
                for key, path in zip(group, session.get(group), strict=True):
                    check(key, path)
    except Exception as exc:
        errors.append(f"{type(exc).__name__}: {exc}")
    results.put((seed, errors))


def _run_processes(tmp_path: Path, sizes: list[int], max_bytes: int | None) -> Counter[str]:
    bucket_dir = tmp_path / "bucket"
    rng = random.Random(1234)
    expected = {}
    for i, size in enumerate(sizes):
        data = rng.randbytes(size)
        key = f"set/{i % 4}/obj{i:02d}.bin"
        (bucket_dir / Path(key)).parent.mkdir(parents=True, exist_ok=True)
        (bucket_dir / key).write_bytes(data)
        expected[key] = hashlib.sha256(data).hexdigest()
    log = tmp_path / "downloads.log"
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(4), ctx.Queue()
    args = (str(bucket_dir), str(tmp_path / "cache"), str(log), expected)
    procs = [
        ctx.Process(target=_fetch_in_process, args=(*args, seed, max_bytes, barrier, results))
        for seed in range(4)
    ]
    for proc in procs:
        proc.start()
    reports = [results.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(30)
        assert proc.exitcode == 0
    assert [errors for _, errors in sorted(reports)] == [[], [], [], []]
    downloads = Counter(log.read_text().split())
    assert set(downloads) == set(expected)
    return downloads


def test_processes_fetching_the_same_keys_download_each_once(tmp_path: Path) -> None:
    rng = random.Random(7)
    sizes = [rng.randint(1 << 20, 4 << 20) for _ in range(20)]
    downloads = _run_processes(tmp_path, sizes, max_bytes=None)
    assert downloads == dict.fromkeys(downloads, 1)
    cache = FileSystemCache(tmp_path / "cache")
    assert len(cache.keys()) == 20
    assert cache.size_bytes() == sum(sizes)
    assert list((cache.root / ".tmp").iterdir()) == []


def test_processes_with_eviction_never_see_missing_or_wrong_files(tmp_path: Path) -> None:
    rng = random.Random(8)
    sizes = [rng.randint(64 << 10, 256 << 10) for _ in range(20)]
    max_bytes = 1 << 20
    downloads = _run_processes(tmp_path, sizes, max_bytes=max_bytes)
    assert sum(downloads.values()) >= 20  # evicted keys may be fetched again
    cache = FileSystemCache(tmp_path / "cache", max_bytes=max_bytes)
    cache.evict()  # nothing is pinned any more
    assert cache.size_bytes() <= max_bytes
    assert list((cache.root / ".tmp").iterdir()) == []


# a session touching more keys than the process may open files

_MANY_KEYS = """
import resource, sys
from pathlib import Path
from simpletasks.buckets.memory import MemoryBucket
from simpletasks.cache import FileSystemCache
from simpletasks.datasource import BucketCacheDatasource

root, limit, n = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
bucket = MemoryBucket("many")
for i in range(n):
    bucket.upload_fileobj(__import__("io").BytesIO(b"x" * 10), f"in/{i}")
ds = BucketCacheDatasource(bucket, FileSystemCache(root, max_bytes=100), max_workers=4)
_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
with ds.session() as session:
    paths = session.get([f"in/{i}" for i in range(n)])
    for i in range(n):
        session.put(f"out/{i}", b"y", only_cache=True)
    assert len(session.pinned) == 2 * n, len(session.pinned)
    assert all(p.exists() for p in paths)  # pinned: none evicted despite max_bytes=100
ds.cache.evict()
assert ds.cache.size_bytes() <= 100
print("ok")
"""


def test_a_session_pins_more_keys_than_the_descriptor_limit(tmp_path: Path) -> None:
    import subprocess
    import sys

    limit, keys = 32, 60  # 120 pins; each get/put used to hold one open descriptor until the end
    result = subprocess.run(
        [sys.executable, "-c", _MANY_KEYS, str(tmp_path / "cache"), str(limit), str(keys)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "ok"
