"""FileSystemCache: atomic writes, key safety, locks and pins, LRU eviction."""

from __future__ import annotations

import errno
import itertools
import logging
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from simpletasks.cache import FileSystemCache
from simpletasks.errors import InvalidKey


@pytest.fixture
def cache(tmp_path: Path) -> FileSystemCache:
    return FileSystemCache(tmp_path / "cache")


def bounded(tmp_path: Path, max_bytes: int) -> FileSystemCache:
    return FileSystemCache(tmp_path / "bounded", max_bytes=max_bytes)


def files_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file())


def test_put_bytes_then_read(cache: FileSystemCache) -> None:
    path = cache.put_bytes("a/b/c.dat", b"hello")
    assert path == cache.root / "a" / "b" / "c.dat"
    assert path.read_bytes() == b"hello"
    assert cache.exists("a/b/c.dat")
    assert cache.keys() == ["a/b/c.dat"]
    assert cache.size_bytes() == 5


def test_path_does_no_io(cache: FileSystemCache) -> None:
    path = cache.path("x/y/z.dat")
    assert path == cache.root / "x" / "y" / "z.dat"
    assert not (cache.root / "x").exists()
    assert not cache.exists("x/y/z.dat")


def test_root_must_be_a_directory(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match=r"cache root .*/file exists and is not a dir"):
        FileSystemCache(tmp_path / "file")


def test_put_file_copies(cache: FileSystemCache, tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(b"\x00" * 1000)
    path = cache.put_file("k", src)
    assert path.read_bytes() == src.read_bytes()
    assert src.exists()


def test_put_file_missing_source(cache: FileSystemCache, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"cannot cache key 'k': source .*nope is not"):
        cache.put_file("k", tmp_path / "nope")
    assert cache.keys() == []


def test_overwrite_replaces_whole(cache: FileSystemCache) -> None:
    cache.put_bytes("k", b"old content")
    cache.put_bytes("k", b"new")
    assert cache.path("k").read_bytes() == b"new"


def test_failing_writing_block_leaves_nothing(cache: FileSystemCache) -> None:
    with pytest.raises(RuntimeError, match="boom"), cache.writing("a/k") as tmp:
        tmp.write_bytes(b"partial")
        raise RuntimeError("boom")
    assert not cache.exists("a/k")
    assert not (cache.root / "a").exists()
    assert files_under(cache.root) == []


def test_failing_writing_keeps_old_entry(cache: FileSystemCache) -> None:
    cache.put_bytes("k", b"old")
    with pytest.raises(RuntimeError), cache.writing("k") as tmp:
        tmp.write_bytes(b"new but partial")
        raise RuntimeError("boom")
    assert cache.path("k").read_bytes() == b"old"


def test_entry_invisible_until_commit(cache: FileSystemCache) -> None:
    with cache.writing("k") as tmp:
        tmp.write_bytes(b"data")
        assert not cache.exists("k")
        assert cache.keys() == []
    assert cache.exists("k")


def test_writing_without_creating_the_file(cache: FileSystemCache) -> None:
    message = r"writing\('k'\) finished without creating"
    with pytest.raises(FileNotFoundError, match=message), cache.writing("k"):
        pass
    assert not cache.exists("k")


def test_writing_must_create_a_regular_file(cache: FileSystemCache, tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("secret")
    message = r"writing\('k'\) must create a regular file"
    with pytest.raises(ValueError, match=message), cache.writing("k") as tmp:
        tmp.symlink_to(outside)
    assert not cache.exists("k")


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("", "must not be empty"),
        ("/etc/passwd", "is absolute"),
        ("a/../../x", r"'\.\.' component"),
        ("a//b", "empty"),
        ("a\\b", "backslash"),
        (".tmp/x", "reserves for its own files"),
        (".locks", "reserves for its own files"),
    ],
)
def test_invalid_keys_are_rejected(cache: FileSystemCache, key: str, message: str) -> None:
    for call in (cache.path, cache.exists, cache.remove, lambda k: cache.put_bytes(k, b"x")):
        with pytest.raises(InvalidKey, match=message):
            call(key)
    assert files_under(cache.root) == []


def test_non_string_key(cache: FileSystemCache) -> None:
    with pytest.raises(InvalidKey, match="key must be a string, got int"):
        cache.path(3)  # type: ignore[arg-type]


def test_key_clashing_with_entry_or_directory(cache: FileSystemCache) -> None:
    cache.put_bytes("a", b"x")
    with pytest.raises(InvalidKey, match=r"key 'a/b' needs .*/a to be a directory"):
        cache.put_bytes("a/b", b"y")
    cache.put_bytes("d/e", b"z")
    with pytest.raises(InvalidKey, match=r"key 'd' names a directory of other entries"):
        cache.put_bytes("d", b"w")
    assert cache.keys() == ["a", "d/e"]


def test_symlinked_directory_is_not_written_through(cache: FileSystemCache, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (cache.root / "evil").symlink_to(outside)
    with pytest.raises(InvalidKey, match=r"evil \(for key 'evil/x'\) is a symlink"):
        cache.put_bytes("evil/x", b"pwned")
    with pytest.raises(InvalidKey, match="is a symlink"):
        cache.put_bytes("evil/sub/x", b"pwned")
    with pytest.raises(InvalidKey, match="is a symlink"):
        cache.exists("evil/x")
    assert list(outside.iterdir()) == []
    assert cache.keys() == []


def test_symlinked_entry_is_rejected(cache: FileSystemCache, tmp_path: Path) -> None:
    outside = tmp_path / "secret.txt"
    outside.write_text("secret")
    (cache.root / "link").symlink_to(outside)
    for call in (cache.exists, cache.touch, lambda k: cache.put_bytes(k, b"x")):
        with pytest.raises(InvalidKey, match=r"link \(for key 'link'\) is a symlink"):
            call("link")
    assert outside.read_text() == "secret"
    assert cache.keys() == []


def test_symlinked_root_is_resolved(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "alias").symlink_to(real)
    cache = FileSystemCache(tmp_path / "alias")
    cache.put_bytes("k", b"x")
    assert cache.root == real.resolve()
    assert (real / "k").read_bytes() == b"x"


def test_internals_never_listed(cache: FileSystemCache) -> None:
    cache.put_bytes("k", b"x")
    with cache.pin("k"), cache.lock("other"), cache.writing("pending") as tmp:
        tmp.write_bytes(b"y" * 10)
        assert cache.keys() == ["k"]
        assert cache.size_bytes() == 1
    assert cache.keys() == ["k", "pending"]


def test_remove_and_clear(cache: FileSystemCache) -> None:
    cache.put_bytes("a/b/c", b"123")
    cache.put_bytes("a/d", b"45")
    cache.put_bytes("e", b"6")
    assert cache.remove("a/b/c") is True
    assert cache.remove("a/b/c") is False
    assert not (cache.root / "a" / "b").exists()  # emptied directories are pruned
    assert cache.keys() == ["a/d", "e"]
    assert cache.clear() == 2
    assert cache.keys() == []
    assert cache.size_bytes() == 0
    leftover = [p.name for p in (cache.root / ".locks").iterdir() if p.suffix in (".pin", ".fill")]
    assert leftover == []  # lock files of removed keys go too


def test_clear_removes_only_stale_temp_dirs(cache: FileSystemCache) -> None:
    stale = cache.root / ".tmp" / "w-stale"
    stale.mkdir()
    (stale / "data").write_bytes(b"left by a crash")
    os.utime(stale, (0, 0))
    fresh = cache.root / ".tmp" / "w-fresh"
    fresh.mkdir()
    cache.clear()
    assert not stale.exists()
    assert fresh.exists()


@pytest.mark.parametrize("bad", [-1, 1.5, "10", True])
def test_max_bytes_validation(tmp_path: Path, bad: object) -> None:
    with pytest.raises(ValueError, match=r"max_bytes must be None or an integer >= 0, got"):
        FileSystemCache(tmp_path, max_bytes=bad)  # type: ignore[arg-type]


def test_fill_fetches_once_across_threads(cache: FileSystemCache) -> None:
    calls = []

    def fetch(tmp: Path) -> None:
        calls.append(1)
        time.sleep(0.05)
        tmp.write_bytes(b"payload")

    barrier = threading.Barrier(8)
    results: list[Path] = []

    def worker() -> None:
        barrier.wait()
        results.append(cache.fill("k", fetch))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert results == [cache.path("k")] * 8
    assert cache.fill("k", fetch, force=True).read_bytes() == b"payload"
    assert len(calls) == 2


def test_without_ofd_locks_keys_share_flock_stripes_and_keep_every_guarantee(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from simpletasks import _flock

    monkeypatch.setattr(_flock, "_OFD", False)  # as on platforms without OFD record locks
    cache = bounded(tmp_path, 200)
    calls: list[int] = []

    def fetch(tmp: Path) -> None:
        calls.append(1)
        time.sleep(0.05)
        tmp.write_bytes(b"x" * 100)

    with ThreadPoolExecutor(4) as pool:
        paths = list(pool.map(lambda _: cache.fill("a", fetch), range(4)))
    assert calls == [1] and paths == [cache.path("a")] * 4  # one download
    cache.put_bytes("b", b"x" * 100)
    with cache.pin("a"):
        cache.put_bytes("c", b"x" * 100)
        assert cache.keys() == ["a", "c"]  # b evicted, a pinned
    with cache.locks(["d", "e"]) as held:
        assert held == set()  # no batch locks here: every key takes the per-key lock
    stripes = [p.name for p in (cache.root / ".locks").iterdir() if p.name.startswith("keys")]
    assert stripes and all(name.startswith("keys.lock.") for name in stripes)


def test_locks_takes_the_free_keys_at_once_and_leaves_out_the_busy_ones(
    cache: FileSystemCache,
) -> None:
    release_b, b_held = threading.Event(), threading.Event()

    def hold_b() -> None:
        with cache.lock("b"):
            b_held.set()
            release_b.wait(10)

    holder = threading.Thread(target=hold_b)
    holder.start()
    assert b_held.wait(5)
    fetched: list[str] = []
    waiter_done = threading.Event()

    def fill_a_the_usual_way() -> None:  # as a get that saw it missing: straight to the lock
        cache.fill("a", lambda tmp: tmp.write_bytes(b"second"), seen_missing=True)
        waiter_done.set()

    try:
        with cache.locks(["a", "b", "c", "a"]) as held:
            assert held == {"a", "c"}  # b is another writer's: left out, not waited for
            waiter = threading.Thread(target=fill_a_the_usual_way)
            waiter.start()
            # Held keys are filled without taking the lock again (no waiting on ourselves)
            # and without looking again (the caller looked under the lock).
            path = cache.fill(
                "a", lambda tmp: (fetched.append("a"), tmp.write_bytes(b"1")), locked=True
            )
            assert path.read_bytes() == b"1" and fetched == ["a"]
            assert not waiter_done.wait(0.2)  # another filler of a waits for the block
    finally:
        release_b.set()
        holder.join()
    waiter.join(5)
    assert waiter_done.is_set()
    assert cache.path("a").read_bytes() == b"1"  # it found the entry under the lock: no fetch


def test_lock_is_exclusive_between_threads(cache: FileSystemCache) -> None:
    inside = []
    overlap = []

    def worker() -> None:
        for _ in range(20):
            with cache.lock("k"):
                inside.append(1)
                if len(inside) > 1:
                    overlap.append(1)
                time.sleep(0.001)
                inside.pop()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlap == []


def test_lru_eviction_order(tmp_path: Path) -> None:
    cache = bounded(tmp_path, 300)
    for key in ("a", "b", "c"):
        cache.put_bytes(key, b"x" * 100)
    assert cache.touch("a")  # a is now more recent than b and c
    cache.put_bytes("d", b"x" * 100)
    assert cache.keys() == ["a", "c", "d"]
    cache.put_bytes("e", b"x" * 150)  # must free 150 bytes: c, then a
    assert cache.keys() == ["d", "e"]
    assert cache.size_bytes() <= 300


def test_last_use_orders_writes_and_touches_as_they_happened(cache: FileSystemCache) -> None:
    order: list[str] = []
    for i in range(40):  # faster than the file system's clock ticks
        cache.put_bytes(f"k{i}", b"x")
        order.append(f"k{i}")
        if i % 3 == 0:
            assert cache.touch("k0")
            order.remove("k0")
            order.append("k0")
    mtimes = {key: os.lstat(cache.path(key)).st_mtime_ns for key in order}
    assert all(mtimes[a] < mtimes[b] for a, b in itertools.pairwise(order))
    cache.fill("copied", lambda tmp: (tmp.write_bytes(b"y"), os.utime(tmp, ns=(0, 0))))
    assert os.lstat(cache.path("copied")).st_mtime_ns > mtimes[order[-1]]  # stamped: in use


def test_eviction_skips_pinned_entries(tmp_path: Path) -> None:
    cache = bounded(tmp_path, 200)
    cache.put_bytes("a", b"x" * 100)
    cache.put_bytes("b", b"x" * 100)
    with cache.pin("a"):
        cache.put_bytes("c", b"x" * 100)
        assert cache.keys() == ["a", "c"]  # b evicted although a is older
    cache.put_bytes("d", b"x" * 100)
    assert cache.keys() == ["c", "d"]  # a is no longer pinned


def test_pin_held_in_another_thread_blocks_eviction(tmp_path: Path) -> None:
    cache = bounded(tmp_path, 100)
    cache.put_bytes("a", b"x" * 100)
    pinned, release = threading.Event(), threading.Event()

    def holder() -> None:
        with cache.pin("a"):
            pinned.set()
            release.wait(5)

    thread = threading.Thread(target=holder)
    thread.start()
    pinned.wait(5)
    cache.put_bytes("b", b"x" * 100)
    assert cache.keys() == ["a", "b"]
    release.set()
    thread.join()
    assert cache.evict() == 1
    assert cache.keys() == ["b"]


_HOLD_IN_ANOTHER_PROCESS = """
import sys
from simpletasks.cache import FileSystemCache
cache = FileSystemCache(sys.argv[1])
with cache.pin("pinned"), cache.lock("filling"):
    print("held", flush=True)
    sys.stdin.readline()
"""


def test_pins_and_fill_locks_held_by_another_process(tmp_path: Path) -> None:
    cache = bounded(tmp_path, 100)
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_IN_ANOTHER_PROCESS, str(cache.root)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdin is not None and holder.stdout is not None
    calls: list[int] = []

    def fetch(tmp: Path) -> None:
        calls.append(1)
        tmp.write_bytes(b"y" * 100)

    refill = threading.Thread(target=lambda: cache.fill("filling", fetch, force=True))
    try:
        assert holder.stdout.readline() == "held\n"
        for key in ("pinned", "filling", "new"):
            cache.put_bytes(key, b"x" * 100)  # each over the bound: evicts what it may
        assert cache.keys() == ["filling", "new", "pinned"]  # in use elsewhere: kept
        refill.start()
        refill.join(0.5)
        assert refill.is_alive() and calls == []  # waits for the other process's fill lock
    finally:
        holder.stdin.write("\n")
        holder.stdin.close()
        holder.wait(30)
    refill.join(10)
    assert calls == [1]
    assert cache.keys() == ["filling"]  # its commit evicted the rest: no longer in use
    assert cache.path("filling").read_bytes() == b"y" * 100


def test_eviction_when_everything_is_in_use(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = bounded(tmp_path, 150)
    cache.put_bytes("a", b"x" * 100)
    with cache.pin("a"), caplog.at_level(logging.WARNING, logger="simpletasks.cache"):
        cache.put_bytes("b", b"x" * 100)
    assert cache.keys() == ["a", "b"]
    assert "over max_bytes=150: the rest is in use" in caplog.text


def test_entry_just_written_is_never_evicted(tmp_path: Path) -> None:
    cache = bounded(tmp_path, 100)
    cache.put_bytes("small", b"x" * 50)
    cache.put_bytes("big", b"x" * 500)  # alone over the bound
    assert cache.keys() == ["big"]
    assert cache.path("big").read_bytes() == b"x" * 500


def test_max_bytes_respected_after_many_puts(tmp_path: Path) -> None:
    cache = bounded(tmp_path, 1000)
    for i in range(30):
        cache.put_bytes(f"k/{i:02d}", os.urandom(97 + i))
        assert cache.size_bytes() <= 1000
    remaining = cache.keys()
    assert remaining[-1] == "k/29"
    assert remaining == sorted(remaining)  # the most recent survive
    locks = {p.name for p in (cache.root / ".locks").iterdir()}
    assert locks <= {"evict.lock", "pins.lock", "keys.lock", "sessions"}  # none per key


# pin sets: many keys, one descriptor


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_pin_set_keeps_its_keys_from_eviction_until_closed(tmp_path: Path) -> None:
    cache = bounded(tmp_path, 200)
    cache.put_bytes("a", b"x" * 100)
    cache.put_bytes("b", b"x" * 100)
    with cache.pin_set() as pins:
        pins.add("a")
        pins.add("a")  # twice is once
        pins.add("not-yet-fetched")
        assert pins.keys == {"a", "not-yet-fetched"} and len(pins) == 2
        cache.put_bytes("c", b"x" * 100)
        assert cache.keys() == ["a", "c"]  # b evicted although a is older
    cache.put_bytes("d", b"x" * 100)
    assert cache.keys() == ["c", "d"]  # a is no longer pinned
    assert os.listdir(cache.root / ".locks" / "sessions") == []


def test_a_pin_set_uses_one_descriptor_for_any_number_of_keys(tmp_path: Path) -> None:
    cache = bounded(tmp_path, 10)
    before = open_fds()
    with cache.pin_set() as pins:
        for i in range(500):
            pins.add(f"k/{i}")
        assert open_fds() == before + 1
        cache.put_bytes("k/3", b"x" * 100)
        cache.put_bytes("other", b"x" * 100)  # over the bound: only k/3 is pinned
        assert cache.keys() == ["k/3", "other"]
    assert open_fds() == before


def test_a_pin_set_makes_its_record_only_when_a_key_is_added(tmp_path: Path) -> None:
    """A task that never touches the cache costs no file per task."""
    cache = bounded(tmp_path, 10)
    sessions = cache.root / ".locks" / "sessions"
    before = open_fds()
    with cache.pin_set() as pins:
        assert list(sessions.iterdir()) == [] and open_fds() == before
        pins.add_many([])
        assert list(sessions.iterdir()) == []
        pins.add("k")
        assert len(list(sessions.iterdir())) == 1 and open_fds() == before + 1
    assert list(sessions.iterdir()) == [] and open_fds() == before
    empty = cache.pin_set()
    empty.close()
    empty.close()
    with pytest.raises(RuntimeError, match="closed"):
        empty.add("k")
    assert list(sessions.iterdir()) == []


def test_a_pin_set_refuses_bad_keys_and_use_after_close(tmp_path: Path) -> None:
    cache = bounded(tmp_path, 10)
    pins = cache.pin_set()
    with pytest.raises(InvalidKey):
        pins.add("../escape")
    with pytest.raises(InvalidKey):
        pins.add(".locks/x")
    pins.add("fine")
    pins.close()
    pins.close()  # idempotent
    with pytest.raises(RuntimeError, match="pin set is closed"):
        pins.add("fine")


def test_pins_of_a_process_that_died_are_dropped_by_the_next_eviction(tmp_path: Path) -> None:
    cache = bounded(tmp_path, 100)
    cache.put_bytes("held", b"x" * 100)
    code = (
        "import os, sys; from simpletasks.cache import FileSystemCache as C; "
        f"p = C({str(cache.root)!r}).pin_set(); p.add('held'); os._exit(0)"  # no close
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    assert len(os.listdir(cache.root / ".locks" / "sessions")) == 1  # left behind
    cache.put_bytes("new", b"x" * 100)
    assert cache.keys() == ["new"]  # the dead process's pin did not hold "held"
    assert os.listdir(cache.root / ".locks" / "sessions") == []


def test_pins_added_while_another_thread_evicts_are_never_lost(tmp_path: Path) -> None:
    cache = bounded(tmp_path, 1_000)
    stop = threading.Event()

    def churn() -> None:
        i = 0
        while not stop.is_set():
            cache.put_bytes(f"churn/{i % 50}", b"x" * 300)
            i += 1

    thread = threading.Thread(target=churn)
    thread.start()
    try:
        with cache.pin_set() as pins:
            for i in range(100):
                key = f"mine/{i}"
                pins.add(key)  # pinned before it is written, as a datasource session does
                cache.put_bytes(key, b"y" * 100)
            assert all(cache.exists(f"mine/{i}") for i in range(100))
    finally:
        stop.set()
        thread.join()


# a full disk: evict unused entries to make room, then write again


class SmallDisk:
    """A disk of ``capacity`` bytes holding only the cache's entries (and the write's temp).

    ``shutil.disk_usage`` in the cache module reports its free space, and :meth:`write`
    fails with ENOSPC after writing what fits, as a real file system does.
    """

    def __init__(self, cache: FileSystemCache, capacity: int, monkeypatch: Any) -> None:
        import shutil

        from simpletasks import cache as cache_module

        self.cache, self.capacity, self.failures = cache, capacity, 0
        real = shutil.disk_usage

        def disk_usage(path: Any) -> Any:
            used = cache.size_bytes()
            return real(path)._replace(total=capacity, used=used, free=capacity - used)

        monkeypatch.setattr(cache_module.shutil, "disk_usage", disk_usage)

    def write(self, tmp: Path, data: bytes) -> None:
        free = self.capacity - self.cache.size_bytes()
        if len(data) > free:
            tmp.write_bytes(data[:free])
            self.failures += 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp))
        tmp.write_bytes(data)


def test_a_full_disk_evicts_least_recently_used_entries_then_writes(
    cache: FileSystemCache, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    disk = SmallDisk(cache, 1_000_000, monkeypatch)
    for i in range(5):
        cache.fill(f"old/{i}", lambda tmp: disk.write(tmp, b"x" * 180_000))
        os.utime(cache.path(f"old/{i}"), ns=(i * 10**9, i * 10**9))  # old/0 least recent
    with caplog.at_level(logging.WARNING):
        path = cache.fill("new", lambda tmp: disk.write(tmp, b"n" * 300_000))
    assert path.read_bytes() == b"n" * 300_000
    assert disk.failures >= 1
    assert "no space left writing new; evicted" in caplog.text
    left = cache.keys()
    assert "new" in left and "old/4" in left and "old/0" not in left  # LRU went first
    assert cache.size_bytes() <= 1_000_000
    assert files_under(cache.root / ".tmp") == []


def test_a_full_disk_keeps_pinned_entries_and_says_so_when_nothing_is_left(
    cache: FileSystemCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = SmallDisk(cache, 1_000_000, monkeypatch)
    for i in range(4):
        cache.put_bytes(f"k{i}", b"x" * 200_000)
    with cache.pin_set() as pins, cache.pin("k3"):
        pins.add("k0")
        pins.add("k1")
        path = cache.fill("a", lambda tmp: disk.write(tmp, b"a" * 350_000))  # only k2 may go
        assert path.read_bytes() == b"a" * 350_000
        assert cache.keys() == ["a", "k0", "k1", "k3"]
        pins.add("a")
        with pytest.raises(OSError) as info:  # the rest is in use: the error comes through
            cache.fill("b", lambda tmp: disk.write(tmp, b"b" * 300_000))
        assert info.value.errno == errno.ENOSPC
    assert cache.keys() == ["a", "k0", "k1", "k3"]
    assert files_under(cache.root / ".tmp") == []
    cache.put_bytes("c", b"c" * 150)  # other work goes on


def test_put_bytes_and_put_file_make_room_too(
    cache: FileSystemCache, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    disk = SmallDisk(cache, 1_000_000, monkeypatch)
    real_write_bytes, real_copyfile = Path.write_bytes, shutil.copyfile

    def write_bytes(self: Path, data: bytes) -> int:  # the cache's temp files only
        if ".tmp" in self.parts:
            free = disk.capacity - cache.size_bytes()
            if len(data) > free:
                real_write_bytes(self, data[:free])
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
        return real_write_bytes(self, data)

    def copyfile(src: Any, dst: Any, **kwargs: Any) -> Any:
        data = Path(src).read_bytes()
        if len(data) > disk.capacity - cache.size_bytes():
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
        return real_copyfile(src, dst, **kwargs)

    monkeypatch.setattr(Path, "write_bytes", write_bytes)
    from simpletasks import cache as cache_module

    monkeypatch.setattr(cache_module.shutil, "copyfile", copyfile)
    for i in range(4):
        cache.put_bytes(f"k{i}", b"x" * 240_000)
    cache.put_bytes("big", b"b" * 400_000)
    source = tmp_path / "src"
    real_write_bytes(source, b"s" * 500_000)
    cache.put_file("file", source)
    assert cache.path("file").read_bytes() == b"s" * 500_000
    assert cache.size_bytes() <= 1_000_000 and {"big", "file"} <= set(cache.keys())


def test_other_write_errors_are_not_retried(cache: FileSystemCache) -> None:
    calls = []

    def fetch(tmp: Path) -> None:
        calls.append(tmp)
        raise OSError(errno.EIO, "I/O error")

    cache.put_bytes("k", b"x")
    with pytest.raises(OSError, match="I/O error"):
        cache.fill("other", fetch)
    assert len(calls) == 1 and cache.keys() == ["k"]


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_a_real_full_tmpfs_makes_room(tmp_path: Path) -> None:
    sys.path.insert(0, str(Path(__file__).parents[1]))
    from diskfull import MountUnavailable, tmpfs

    try:
        with tmpfs(tmp_path / "fs", "1m") as mount:
            cache = FileSystemCache(mount / "cache")
            for i in range(6):
                cache.put_bytes(f"k{i}", os.urandom(150_000))
            data = os.urandom(400_000)
            cache.fill("big", lambda tmp: tmp.write_bytes(data))
            assert cache.path("big").read_bytes() == data
            assert "k5" in cache.keys() and "k0" not in cache.keys()  # noqa: SIM118
    except MountUnavailable as exc:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(str(exc))
