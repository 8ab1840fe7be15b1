"""``simpletasks schedule`` onto a file queue whose disk fills up part-way: the messages that
went out are enqueued once, the others are written to a file the error names, and sending
that file once the disk has room completes the set with no message twice. ``simpletasks
upload`` to a file bucket on a full disk says how many files went and which did not.

A real full file system: a 1 MiB tmpfs (needs root; skips elsewhere, like the other tmpfs
tests in test_disk_full.py).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from diskfull import MountUnavailable, TmpfsDisk, tmpfs
from tests_support import invoke

from simpletasks.message import TaskMessage
from simpletasks.queues import open_queue


def test_a_disk_that_fills_up_mid_schedule_loses_and_repeats_nothing(tmp_path: Path) -> None:
    messages = tmp_path / "tasks.jsonl"
    lines = [
        json.dumps({"basic_info": {"id": i, "name": "NO_OP"}, "payload_info": "p" * 1500})
        for i in range(200)
    ]
    messages.write_text("\n".join(lines) + "\n")
    try:
        with tmpfs(tmp_path / "fs", "1m") as mount:
            url = f"file://{mount}/tasks"
            assert invoke("create", url).exit_code == 0
            disk = TmpfsDisk(mount, 120 * 1024)  # room for some of the messages only
            disk.fill()
            result = invoke("schedule", "--queue", url, "--threads", "2", str(messages))
            assert result.exit_code == 1, result.output
            pattern = r"sent (\d+) of 200 message\(s\) to .*; (\d+) not sent"
            found = re.search(pattern, result.output)
            assert found, result.output
            sent, unsent = int(found[1]), int(found[2])
            assert 0 < sent < 200 and sent + unsent == 200
            assert "No space left on device" in result.output
            saved = Path(f"{messages}.unsent")
            assert f"are in {saved}" in result.output and "sending the whole file again" in (
                result.output
            )
            assert len(saved.read_text().splitlines()) == unsent
            queue = open_queue(url)
            assert queue.counts().visible == sent
            assert list((mount / "tasks" / "tmp").iterdir()) == []  # no half-written file

            disk.free()
            again = invoke("schedule", "--queue", url, str(saved))
            assert again.exit_code == 0, again.output
            ids = []
            while batch := queue.receive(100):
                ids += [TaskMessage.from_json(m.body).basic_info.id for m in batch]
                queue.ack_many(batch)
            assert sorted(ids) == list(range(200))  # every message, once
    except MountUnavailable as exc:
        pytest.skip(str(exc))


def test_a_full_disk_before_the_first_message_sends_nothing_and_says_so(tmp_path: Path) -> None:
    messages = tmp_path / "tasks.jsonl"
    messages.write_text(json.dumps({"basic_info": {"id": 1, "name": "NO_OP"}}) + "\n")
    try:
        with tmpfs(tmp_path / "fs", "1m") as mount:
            url = f"file://{mount}/tasks"
            assert invoke("create", url).exit_code == 0
            TmpfsDisk(mount, 0).fill()
            result = invoke("schedule", "--queue", url, str(messages))
            assert result.exit_code == 1, result.output
            assert f"nothing was sent to {url}" in result.output
            assert "No space left on device" in result.output
            assert not Path(f"{messages}.unsent").exists()  # the input itself is what to resend
            assert open_queue(url).counts().visible == 0
    except MountUnavailable as exc:
        pytest.skip(str(exc))


def test_upload_to_a_disk_that_fills_up_names_what_failed_and_a_rerun_completes(
    tmp_path: Path,
) -> None:
    source = tmp_path / "raw"
    source.mkdir()
    for i in range(40):
        (source / f"{i:02d}.dat").write_bytes(bytes([i]) * 20_000)
    try:
        with tmpfs(tmp_path / "fs", "1m") as mount:
            url = f"file://{mount}/bucket"
            assert invoke("create", "--bucket", url).exit_code == 0
            disk = TmpfsDisk(mount, 300 * 1024)  # room for about 15 of the 40 files
            disk.fill()
            result = invoke("upload", str(source), "--bucket", url)
            assert result.exit_code == 1, result.output
            found = re.search(
                r"uploaded (\d+) of 40 file\(s\) to .*; (\d+) failed: ", result.output
            )
            assert found, result.output
            assert 0 < int(found[1]) < 40 and int(found[1]) + int(found[2]) == 40
            assert "No space left on device" in result.output and "run the same command" in (
                result.output
            )
            disk.free()
            again = invoke("upload", str(source), "--bucket", url)
            assert again.exit_code == 0, again.output
            stored = sorted((mount / "bucket" / "raw").iterdir())
            assert [p.name for p in stored] == [f"{i:02d}.dat" for i in range(40)]
            assert all(p.read_bytes() == bytes([i]) * 20_000 for i, p in enumerate(stored))
    except MountUnavailable as exc:
        pytest.skip(str(exc))


def test_an_operating_system_error_is_one_line_with_what_to_do(tmp_path: Path) -> None:
    try:
        with tmpfs(tmp_path / "fs", "1m") as mount:
            bucket = f"file://{mount}/bucket"
            queue = f"file://{tmp_path}/tasks"
            assert invoke("create", queue, "--bucket", bucket).exit_code == 0
            TmpfsDisk(mount, 0).fill()
            result = invoke("schedule", "--queue", queue, "--example", "noop", "--bucket", bucket)
            assert result.exit_code == 1, result.output
            [line] = [x for x in result.output.splitlines() if x.startswith("Error:")]
            assert "No space left on device" in line and "the disk is full" in line
            assert "Traceback" not in result.output
    except MountUnavailable as exc:
        pytest.skip(str(exc))
