"""FileQueue specifics: several processes on one directory, URL forms, on-disk layout.

The behaviour every queue shares is in tests/contract/test_queues.py.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

import pytest

from simpletasks.errors import ConfigError
from simpletasks.queues import Message, QueueCounts, open_queue
from simpletasks.queues.file import FileQueue

SPAWN = multiprocessing.get_context("spawn")


def _receive_all(url: str, barrier: Barrier, results: Any, lease: float) -> None:
    """Child process: receive (without acking) until nothing is left; report what it got."""
    queue = open_queue(url)
    barrier.wait(timeout=60)
    got: list[tuple[str, str, int]] = []
    while batch := queue.receive(3, lease_seconds=lease):
        got.extend((m.id, m.body, m.attempt) for m in batch)
    results.put(got)


def _run_receivers(url: str, processes: int, lease: float = 60.0) -> list[list[tuple]]:
    barrier = SPAWN.Barrier(processes)
    results = SPAWN.Queue()
    procs = [
        SPAWN.Process(target=_receive_all, args=(url, barrier, results, lease))
        for _ in range(processes)
    ]
    for proc in procs:
        proc.start()
    try:
        got = [results.get(timeout=60) for _ in procs]
    finally:
        for proc in procs:
            proc.join(timeout=30)
    assert all(proc.exitcode == 0 for proc in procs)
    return got


def _check_disjoint_and_complete(got: list[list[tuple]], n: int) -> list[tuple]:
    flat = [item for items in got for item in items]
    ids = [item[0] for item in flat]
    assert len(ids) == len(set(ids)), "a message was delivered twice while leased"
    assert len(flat) == n
    return flat


def test_processes_receive_disjoint_sets_covering_every_message(tmp_path: Path) -> None:
    queue = FileQueue(tmp_path)
    bodies = [f"task-{i}" for i in range(200)]
    queue.send_batch(bodies)
    got = _run_receivers(queue.url, processes=4)
    flat = _check_disjoint_and_complete(got, 200)
    assert sorted(body for _, body, _ in flat) == sorted(bodies)
    assert queue.counts() == QueueCounts(visible=0, in_flight=200)


def test_processes_reclaiming_expired_leases_do_not_duplicate(tmp_path: Path) -> None:
    queue = FileQueue(tmp_path)
    queue.send_batch([f"task-{i}" for i in range(60)])
    assert len(queue.receive(60, lease_seconds=0.3)) == 60
    time.sleep(0.4)  # every lease has expired: the receivers race to reclaim them
    got = _run_receivers(queue.url, processes=3)
    flat = _check_disjoint_and_complete(got, 60)
    assert {attempt for _, _, attempt in flat} == {2}


def test_messages_come_out_oldest_first(tmp_path: Path) -> None:
    queue = FileQueue(tmp_path)
    for i in range(5):
        queue.send(str(i))
    queue.send_batch([str(i) for i in range(5, 10)])
    assert [m.body for m in queue.receive(10)] == [str(i) for i in range(10)]


def test_a_redelivered_message_keeps_its_place(tmp_path: Path) -> None:
    queue = FileQueue(tmp_path)
    queue.send_batch(["first", "second"])
    [first] = queue.receive()
    queue.release(first)
    assert [m.body for m in queue.receive(2)] == ["first", "second"]


def test_another_object_on_the_same_directory_can_settle_a_message(tmp_path: Path) -> None:
    sender, worker = FileQueue(tmp_path), FileQueue(tmp_path)
    sender.send("x")
    [message] = worker.receive()
    sender.ack(message)
    assert worker.counts() == QueueCounts(visible=0, in_flight=0)


def test_a_message_from_another_directory_is_rejected(tmp_path: Path) -> None:
    one, two = (
        FileQueue(create=True, directory=tmp_path / "one"),
        FileQueue(create=True, directory=tmp_path / "two"),
    )
    one.send("x")
    [message] = one.receive()
    with pytest.raises(ValueError, match=r"was received from /.*/one, not from /.*/two"):
        two.ack(message)


def test_layout_on_disk(tmp_path: Path) -> None:
    queue = FileQueue(create=True, directory=tmp_path / "a" / "b")
    assert sorted(os.listdir(tmp_path / "a" / "b")) == ["leased", "queue", "tmp"]
    queue.send("x")
    [name] = os.listdir(tmp_path / "a" / "b" / "queue")
    assert name.endswith("__0.json")
    [message] = queue.receive(lease_seconds=100)
    [leased] = (tmp_path / "a" / "b" / "leased").iterdir()
    assert leased.name.startswith(f"{message.id}__1__")
    assert leased.stat().st_mtime == pytest.approx(time.time() + 100, abs=5)


def test_an_expired_lease_counts_as_visible(tmp_path: Path) -> None:
    now = [time.time()]
    queue = FileQueue(tmp_path, clock=lambda: now[0])
    queue.send_batch(["a", "b"])
    queue.receive(lease_seconds=10)
    queue.receive(lease_seconds=60)
    now[0] += 10
    assert queue.counts() == QueueCounts(visible=1, in_flight=1)


def test_foreign_and_corrupt_files_are_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    queue = FileQueue(tmp_path)
    (tmp_path / "queue" / "README.txt").write_text("not a message")
    (tmp_path / "queue" / "00000000000000000001-aaaa__0.json").write_text("{broken")
    (tmp_path / "leased" / ".nfs0001").write_text("")
    queue.send("good")
    assert [m.body for m in queue.receive(5)] == ["good"]
    assert "is unreadable" in caplog.text
    assert (tmp_path / "queue" / "README.txt").exists()
    assert queue.counts() == QueueCounts(visible=0, in_flight=1)
    queue.purge()
    assert (tmp_path / "queue" / "README.txt").exists()


def test_a_url_with_escapes_names_the_directory(tmp_path: Path) -> None:
    directory = tmp_path / "my queue é"
    queue = open_queue(directory.as_uri(), create=True)
    queue.send("x")
    assert queue.url == directory.as_uri()
    assert len(os.listdir(directory / "queue")) == 1


def test_opening_a_missing_directory_says_how_to_create_it(tmp_path: Path) -> None:
    url = (tmp_path / "later").as_uri()
    with pytest.raises(ConfigError, match=r"file queue directory '.*later' does not exist") as info:
        open_queue(url)
    assert f"create it with `simpletasks create {url}` or pass create=True" in str(info.value)
    assert not (tmp_path / "later").exists()  # nothing was created by the failed open
    open_queue(url, create=True).send("x")
    assert (tmp_path / "later" / "queue").is_dir()
    assert open_queue(url).counts() == QueueCounts(visible=1, in_flight=0)


def test_an_existing_empty_directory_is_a_queue(tmp_path: Path) -> None:
    (tmp_path / "made").mkdir()
    open_queue((tmp_path / "made").as_uri()).send("x")
    assert sorted(os.listdir(tmp_path / "made")) == ["leased", "queue", "tmp"]


@pytest.mark.parametrize(
    ("url", "match"),
    [
        (
            "file://relative/dir",
            r"is not absolute: 'relative' would be a host name. Use file:///absolute/path",
        ),
        ("file://fq/tasks", r"three slashes, e.g. file:///srv/fq/tasks \(relative paths are"),
        ("file://localhost/srv/q", "'localhost' would be a host name"),
        ("file:///srv/q?lease=3", "must not have a query or fragment"),
        ("file:///srv/q#x", "must not have a query or fragment"),
        ("file://", "has no absolute path"),
        ("mem://x", "not a file queue URL"),
    ],
)
def test_bad_urls_are_rejected_with_the_right_form(url: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        FileQueue.from_url(url)


def test_a_relative_directory_is_rejected() -> None:
    with pytest.raises(ConfigError, match="must be absolute, got 'queue/dir'"):
        FileQueue("queue/dir")


def test_a_file_in_the_way_is_reported(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("")
    with pytest.raises(ConfigError, match=r"cannot use '.*taken' as a file queue: it is not a dir"):
        FileQueue(create=True, directory=tmp_path / "taken")


def test_a_bad_poll_interval_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="poll_interval must be a finite number >= 0"):
        FileQueue(tmp_path, poll_interval=-1)


def test_settling_after_purge_is_ignored(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    queue = FileQueue(tmp_path)
    queue.send("x")
    [message] = queue.receive()
    queue.purge()
    queue.ack(message)
    queue.release(message)
    queue.extend(message, 10)
    assert caplog.text.count("ignored: its lease ended") == 3
    assert queue.counts() == QueueCounts(visible=0, in_flight=0)


def test_message_type_is_the_shared_one(tmp_path: Path) -> None:
    queue = FileQueue(tmp_path)
    queue.send("x")
    [message] = queue.receive()
    assert isinstance(message, Message)
    assert repr(queue) == f"FileQueue({queue.url!r})"


@pytest.mark.parametrize("batch", [False, True])
def test_a_sent_message_is_on_disk_before_it_is_visible(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batch: bool
) -> None:
    """Each message file is fsynced before its rename into queue/, and queue/ after the
    renames: a renamed file that was never flushed can come back empty after a power cut."""
    queue = open_queue(f"file://{tmp_path}/q", create=True)
    events: list[tuple[str, str]] = []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def rename(src: Any, dst: Any) -> None:
        events.append(("rename", str(src)))
        real_rename(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    if batch:
        queue.send_batch(["a", "b"])
    else:
        queue.send("a")
    monkeypatch.undo()
    renames = [i for i, (kind, _) in enumerate(events) if kind == "rename"]
    assert len(renames) == (2 if batch else 1)
    for i in renames:
        assert events[i - 1] == ("fsync", events[i][1]), events  # that very file, just before
    assert events[-1] == ("fsync", str(tmp_path / "q" / "queue"))
    assert sorted(m.body for m in queue.receive(10)) == (["a", "b"] if batch else ["a"])
