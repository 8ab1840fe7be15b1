"""The directory watcher: complete files once, in order, with the include filter."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from simpletasks.tasks.edge.watcher import DirectoryWatcher, WatcherThread


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def write(path: Path, data: bytes, mtime: float | None = None) -> None:
    path.write_bytes(data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))


def test_existing_files_included_in_mtime_order_and_reported_once(tmp_path: Path) -> None:
    now = time.time()
    write(tmp_path / "b.png", b"bb", now - 10)
    write(tmp_path / "a.png", b"a", now - 5)
    watcher = DirectoryWatcher(tmp_path, settle_seconds=0.5)
    assert [f.name for f in watcher.poll()] == ["b.png", "a.png"]
    assert watcher.poll() == []
    write(tmp_path / "a.png", b"changed")  # each name once, even if rewritten
    assert watcher.poll() == []


def test_include_filter_hidden_temp_and_directories_ignored(tmp_path: Path) -> None:
    old = time.time() - 10
    for name in ("x.png", "Y.PNG", "z.tif", ".hidden.png", "w.png.tmp", "v.png~"):
        write(tmp_path / name, b"1", old)
    (tmp_path / "sub.png").mkdir()
    watcher = DirectoryWatcher(tmp_path, include=[".png"])
    assert sorted(f.name for f in watcher.poll()) == ["Y.PNG", "x.png"]
    assert sorted(f.name for f in DirectoryWatcher(tmp_path).poll()) == ["Y.PNG", "x.png", "z.tif"]


def test_growing_file_counts_only_once_it_stops_changing(tmp_path: Path) -> None:
    clock = Clock(time.time())
    watcher = DirectoryWatcher(tmp_path, settle_seconds=0.5, clock=clock)
    path = tmp_path / "img.png"
    write(path, b"x" * 10, clock.now)
    assert watcher.poll() == []  # just written
    clock.now += 0.3
    write(path, b"x" * 20, clock.now)  # still growing
    assert watcher.poll() == []
    clock.now += 0.3
    assert watcher.poll() == []  # unchanged for 0.3 s only
    clock.now += 0.3
    (found,) = watcher.poll()
    assert (found.name, found.size) == ("img.png", 20)


def test_renamed_into_place_counts_at_first_settled_poll(tmp_path: Path) -> None:
    clock = Clock(time.time())
    watcher = DirectoryWatcher(tmp_path, settle_seconds=0.5, clock=clock)
    tmp = tmp_path / ".img.png.part"
    write(tmp, b"data", clock.now - 2)  # written a while ago, renamed now
    assert watcher.poll() == []
    tmp.rename(tmp_path / "img.png")
    assert [f.name for f in watcher.poll()] == ["img.png"]


def test_vanished_and_unreadable_directory_do_not_break_polling(tmp_path: Path) -> None:
    clock = Clock(time.time())
    watcher = DirectoryWatcher(tmp_path / "missing", clock=clock)
    assert watcher.poll() == []
    (tmp_path / "missing").mkdir()
    path = tmp_path / "missing" / "f.png"
    write(path, b"1", clock.now)
    assert watcher.poll() == []
    path.unlink()  # removed before it settled
    clock.now += 1
    assert watcher.poll() == []
    write(path, b"2", clock.now - 5)
    assert [f.size for f in watcher.poll()] == [1]


def test_forget_skips_known_names(tmp_path: Path) -> None:
    write(tmp_path / "a.png", b"1", time.time() - 5)
    write(tmp_path / "b.png", b"1", time.time() - 5)
    watcher = DirectoryWatcher(tmp_path)
    watcher.forget(["a.png"])
    assert [f.name for f in watcher.poll()] == ["b.png"]


def test_thread_sees_new_file_within_a_second_and_survives_callback_errors(
    tmp_path: Path,
) -> None:
    seen: list[tuple[str, float]] = []
    got = threading.Event()

    def on_file(f):  # type: ignore[no-untyped-def]
        if f.name == "bad.png":
            raise RuntimeError("boom")
        seen.append((f.name, time.monotonic()))
        got.set()

    thread = WatcherThread(DirectoryWatcher(tmp_path, settle_seconds=0.3), on_file, interval=0.2)
    thread.start()
    try:
        write(tmp_path / "bad.png", b"0")
        time.sleep(0.3)
        tmp = tmp_path / "new.png.tmp"
        write(tmp, b"1")
        start = time.monotonic()
        tmp.rename(tmp_path / "new.png")
        assert got.wait(3)
        assert seen[0][0] == "new.png"
        assert seen[0][1] - start < 1.0
    finally:
        thread.stop()
        thread.join(2)
