"""README.md runs as written: every fenced code block is extracted and run, in order.

- ``bash`` blocks run with ``bash -euo pipefail`` in one working directory, and ``python``
  blocks with ``python3`` there; a python block whose first line is ``# NAME.py`` is also
  saved as that file (the README says "save this as ..."). Both get the environment the
  README tells users to set up: the local stack's env file, loaded after ``set -a``.
  The stack here is a fresh moto server (what ``simpletasks local --stack`` starts for SQS
  and S3; that command itself is tested in test_local_stack.py). HOME is a temporary
  directory, so the default cache does not touch the real one.
- ``json`` blocks must be valid task messages; ``text`` blocks are not code.
- A block whose first line is ``# readme-test: skip (REASON)`` is not run: the marker is
  visible to readers, and the number of such blocks is pinned below so adding one is a
  deliberate change.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests_support import require_service

from simpletasks.emulators.moto import MotoServer

README = Path(__file__).resolve().parents[2] / "README.md"
FENCE = re.compile(r"^```([\w-]*)\n(.*?)^```[ \t]*$", re.M | re.S)
SKIP = re.compile(r"^# readme-test: skip \((.+)\)$")
SAVE_AS = re.compile(r"^# ([\w-]+\.py)$")
RUN = {"bash", "python"}

#: How many blocks of each kind README.md has; update when adding or removing one.
EXPECTED = {"bash": 10, "python": 4, "json": 1, "text": 1, "skipped": 4}


@dataclass(frozen=True)
class Block:
    line: int
    lang: str
    code: str

    @property
    def skip_reason(self) -> str | None:
        match = SKIP.match(self.code.splitlines()[0]) if self.code else None
        return match.group(1) if match else None

    def __str__(self) -> str:
        return f"README.md:{self.line} ({self.lang})"


def readme_blocks() -> list[Block]:
    text = README.read_text()
    return [
        Block(text.count("\n", 0, m.start()) + 1, m.group(1), m.group(2))
        for m in FENCE.finditer(text)
    ]


def test_every_block_is_accounted_for() -> None:
    text = README.read_text()
    blocks = readme_blocks()
    fences = len(re.findall(r"^```", text, re.M))
    assert fences == 2 * len(blocks), "an unbalanced or indented ``` fence in README.md"
    for block in blocks:
        assert block.lang in RUN | {"json", "text"}, f"{block}: give the block a known language"
        if block.skip_reason is not None:
            assert block.lang in RUN and block.skip_reason.strip(), block
    counts = {lang: sum(b.lang == lang for b in blocks) for lang in ("bash", "python", "json")}
    counts["text"] = sum(b.lang == "text" for b in blocks)
    counts["skipped"] = sum(b.skip_reason is not None for b in blocks)
    assert counts == EXPECTED


def test_json_blocks_are_valid_task_messages() -> None:
    from simpletasks.message import TaskMessage

    for block in readme_blocks():
        if block.lang == "json":
            TaskMessage.from_json(block.code)


def _env_file_values(path: Path) -> dict[str, str]:
    pairs = (ln.split("=", 1) for ln in path.read_text().splitlines() if "=" in ln)
    return {k: v for k, v in pairs if not k.startswith("#")}


@pytest.fixture
def fresh_moto() -> Iterator[MotoServer]:
    """A moto server of this test's own: the tutorial's queue names start empty."""
    try:
        import boto3  # noqa: F401
        import moto.server  # noqa: F401
    except ImportError as exc:
        require_service(f"moto[server]/boto3 not installed ({exc.name})")
    try:
        server = MotoServer().start()
    except (RuntimeError, TimeoutError) as exc:
        require_service(f"moto server did not start: {exc}")
    yield server
    server.stop()


@pytest.mark.timeout(300)
def test_readme_runs_as_written(fresh_moto: MotoServer, tmp_path: Path) -> None:
    from simpletasks.buckets import open_bucket
    from simpletasks.local import write_env_file

    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    home.mkdir()
    env_file = work / "simpletasks-local.env"
    write_env_file(env_file, fresh_moto.env())  # what `simpletasks local --stack` writes
    bindir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        **_env_file_values(env_file),
        "HOME": str(home),
        "PATH": bindir + os.pathsep + os.environ.get("PATH", ""),
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("SIMPLETASKS_CACHE_DIR", None)
    outputs: dict[str, str] = {}
    for block in readme_blocks():
        if block.lang not in RUN or block.skip_reason is not None:
            continue
        if block.lang == "bash":
            argv = ["bash", "-euo", "pipefail", "-c", block.code]
        else:
            first = block.code.splitlines()[0]
            save_as = SAVE_AS.match(first)
            script = work / (save_as.group(1) if save_as else f"readme_block_{block.line}.py")
            script.write_text(block.code)
            argv = ["python3", script.name]
        started = time.monotonic()
        proc = subprocess.run(
            argv, cwd=work, env=env, capture_output=True, text=True, timeout=120, check=False
        )
        print(f"{block}: {time.monotonic() - started:.1f} s")
        outputs[str(block)] = proc.stdout + proc.stderr
        assert proc.returncode == 0, f"{block} failed:\n{block.code}\n{proc.stdout}{proc.stderr}"

    everything = "\n".join(outputs.values())
    # What the tutorial says happens, happened:
    assert "sent 2 task(s) to sqs://my-tasks" in everything
    assert "some tasks failed for good" in everything  # task 11's input was missing
    assert "1 final failure(s) (THRESHOLD: 1)" in everything  # status
    assert "requeued 1 final failure(s) onto sqs://my-tasks" in everything
    assert "True THRESHOLD 11 prepare" in everything  # the Python report reader
    bucket = open_bucket("s3://my-bucket/data", client=fresh_moto.client("s3"))
    masks = sorted(bucket.list("plates/p1/mask/"))
    assert masks == sorted(f"plates/p1/mask/{i}.dat" for i in range(11))  # 10 was requeued
    assert list(bucket.list("plates/p1/mask64/")) == ["plates/p1/mask64/0.dat"]
