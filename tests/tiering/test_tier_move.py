"""Move mode (``move: true``): the source object is deleted once its copy is verified in the
tier and its row is written; never before, never for trash, never into the source itself.

Through a real daemon (``run_workers``) on file:// and mem:// buckets, S3 on moto (server-side
copy) and GCS on fake-gcs-server (rewrite).
"""

from __future__ import annotations

import io
import logging
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from simpletasks.buckets import BucketService, open_bucket
from simpletasks.buckets.file import FileBucket
from simpletasks.errors import ConfigError
from simpletasks.queues import open_queue
from simpletasks.scheduler import schedule
from simpletasks.settings import DaemonSettings
from simpletasks.tasks.tiering.config import Tier, TierConfig, load_config
from simpletasks.tasks.tiering.db import FeaturesDB
from simpletasks.tasks.tiering.local import WorkerRun, run_workers
from simpletasks.tasks.tiering.policy import TierPolicy
from simpletasks.tasks.tiering.synthetic import cell_image, encode_image
from simpletasks.tasks.tiering.task import TierStats, make_tier_job
from simpletasks.tasks.tiering.tiers import TierTargets, overlaps

SHARP, BLURRED = 0.0, 3.0  # defocus of images that score > 0.5 and < 0.01
SPLIT = TierPolicy([[0, 0.5, "D"], [0.5, 1, "A"]])  # sharp -> A, blurred -> D
SETTINGS = DaemonSettings(
    concurrency=1,
    wait_seconds=0.2,
    poll_frequency_seconds=0.2,
    burst=True,
    retry_delay_seconds=0.05,
    max_attempts=3,
)


def _image(defocus: float, seed: int = 0) -> bytes:
    return encode_image(cell_image((256, 256), defocus=defocus, seed=seed), "png")


class Stack:
    """A source bucket, tiers, a SQLite database and file:// queues; ``run`` schedules one
    task per ``per_task`` keys and drains them with a real daemon (same cache every run)."""

    def __init__(
        self,
        root: Path,
        source: BucketService,
        tiers: dict[str, Tier],
        *,
        opener: Callable[[str], BucketService] | None = None,
        **config: Any,
    ) -> None:
        self.root, self.source, self.opener = root, source, opener
        config.setdefault("policy", SPLIT)
        self.config = TierConfig(tiers=tiers, database=f"sqlite:///{root}/f.db", **config)
        self.db = FeaturesDB(self.config.database)
        self.queue = open_queue(f"file://{root}/q", create=True)
        self.errors = open_queue(f"file://{root}/e", create=True)
        self.done = open_queue(f"file://{root}/d", create=True)
        self.steps = TierStats()

    @classmethod
    def files(cls, root: Path, **config: Any) -> Stack:
        """file:// source ``root/ingest`` and tiers ``root/tier-A``, ``root/tier-D``."""
        tiers = {n: Tier(n, f"file://{root}/tier-{n}") for n in "AD"}
        for t in tiers.values():
            open_bucket(t.url, create=True)
        return cls(root, open_bucket(f"file://{root}/ingest", create=True), tiers, **config)

    def put(self, key: str, defocus: float, seed: int = 0) -> str:
        self.source.upload_fileobj(io.BytesIO(_image(defocus, seed)), key)
        return key

    def run(self, keys: list[str], *, per_task: int = 1, first_id: int = 1) -> WorkerRun:
        schedule(self.queue, make_tier_job(keys, per_task=per_task, first_id=first_id))
        return run_workers(
            queue=self.queue,
            source=self.source,
            config=self.config,
            cache_dir=self.root / "cache",
            error_queue=self.errors,
            done_queue=self.done,
            opener=self.opener,
            steps=self.steps,
            settings=SETTINGS,
        )

    def source_keys(self) -> list[str]:
        return list(self.source.list())

    def tier_keys(self, name: str) -> list[str]:
        opener = self.opener or open_bucket
        return list(opener(self.config.tiers[name].url).list())

    def rows(self) -> dict[str, dict[str, Any]]:
        return {r["key"]: r for r in self.db.rows()}


# -- configuration -----------------------------------------------------------------------------


def _config(**extra: Any) -> dict[str, Any]:
    return {"tiers": {"A": "file:///tmp/unused-a"}, "policy": [[0, 1, "A"]], **extra}


def test_move_is_off_by_default_and_takes_booleans() -> None:
    assert TierConfig.from_dict(_config()).move is False
    assert TierConfig.from_dict(_config(move=True)).move is True
    assert TierConfig.from_dict(_config(move=False)).move is False


@pytest.mark.parametrize("value", ["yes", "true", 1, 0, 1.0, None, [True]])
def test_move_refuses_anything_but_a_boolean(value: Any) -> None:
    with pytest.raises(ConfigError, match=r"config: move must be true or false, got "):
        TierConfig.from_dict(_config(move=value))


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("t.yaml", 'tiers: {A: file:///a}\npolicy: [[0, 1, A]]\nmove: "yes"\n'),
        ("t.toml", 'move = 1\npolicy = [[0, 1, "A"]]\n[tiers]\nA = "file:///a"\n'),
    ],
)
def test_a_config_file_with_a_bad_move_names_the_file(tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError, match=rf"{name}: move must be true or false"):
        load_config(path)
    path.write_text(text.replace('"yes"', "true").replace("move = 1", "move = true"))
    assert load_config(path).move is True


@pytest.mark.parametrize(
    ("a", "b", "overlap"),
    [
        ("s3://b/in", "s3://b/in", True),
        ("s3://b/in/", "S3://b//in", True),
        ("s3://b", "s3://b/in", True),  # the source inside the tier's bucket root
        ("s3://b/in/tier", "s3://b/in", True),  # a tier inside the source
        ("s3://b/ingest", "s3://b/tier-a", False),  # sibling prefixes
        ("s3://b/in", "s3://b/inbox", False),  # a prefix of the name is not of the path
        ("s3://b/in", "s3://c/in", False),
        ("s3://b/in", "gs://b/in", False),
        ("gs://b", "gs://b", True),
        ("mem://m/x", "mem://m/y", False),
        ("file:///srv/ingest", "file:///srv/x/../ingest/", True),
        ("file:///srv/ingest", "file:///srv/ingest-tiers", False),
    ],
)
def test_overlaps(a: str, b: str, overlap: bool) -> None:
    assert overlaps(a, b) is overlap and overlaps(b, a) is overlap


def test_overlaps_resolves_file_symlinks(tmp_path: Path) -> None:
    (tmp_path / "ingest").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "ingest")
    assert overlaps(f"file://{tmp_path}/link", f"file://{tmp_path}/ingest")


# -- file:// and mem:// --------------------------------------------------------------------------


def test_move_deletes_the_source_after_placing_and_recording(tmp_path: Path) -> None:
    stack = Stack.files(tmp_path, move=True)
    keys = [stack.put("run/s.png", SHARP), stack.put("run/b.png", BLURRED)]
    run = stack.run(keys)
    assert run.errors == [] and run.stats.succeeded == 2
    assert stack.source_keys() == []
    assert stack.tier_keys("A") == ["run/s.png"] and stack.tier_keys("D") == ["run/b.png"]
    rows = stack.rows()
    assert rows["run/s.png"]["storage_url"] == f"file://{tmp_path}/tier-A/run/s.png"
    assert rows["run/s.png"]["source"] == stack.source.url
    copy = (tmp_path / "tier-A" / "run" / "s.png").read_bytes()
    assert copy == _image(SHARP) and rows["run/s.png"]["size_bytes"] == len(copy)
    assert stack.steps.counts["moved"] == 2 and stack.steps.counts["delete_failed"] == 0


def test_without_move_the_source_stays(tmp_path: Path) -> None:
    stack = Stack.files(tmp_path)
    assert stack.config.move is False
    keys = [stack.put("s.png", SHARP), stack.put("b.png", BLURRED)]
    assert stack.run(keys).errors == []
    assert stack.source_keys() == ["b.png", "s.png"]
    assert stack.tier_keys("A") == ["s.png"] and stack.tier_keys("D") == ["b.png"]
    assert stack.steps.counts["moved"] == 0


def test_trash_images_are_never_deleted(tmp_path: Path) -> None:
    stack = Stack.files(tmp_path, move=True, policy=TierPolicy([[0, 0.5, "trash"], [0.5, 1, "A"]]))
    keys = [stack.put("s.png", SHARP), stack.put("b.png", BLURRED)]
    assert stack.run(keys).errors == []
    assert stack.source_keys() == ["b.png"]  # the trash image stays where it was
    assert stack.rows()["b.png"]["tier"] == "trash"
    assert stack.tier_keys("A") == ["s.png"] and stack.tier_keys("D") == []


def test_move_between_mem_buckets_with_sibling_prefixes(tmp_path: Path) -> None:
    name = f"move-{uuid.uuid4().hex[:8]}"
    tiers = {"A": Tier("A", f"mem://{name}/tier-a"), "D": Tier("D", f"mem://{name}/tier-d")}
    stack = Stack(tmp_path, open_bucket(f"mem://{name}/ingest"), tiers, move=True)
    keys = [stack.put("s.png", SHARP), stack.put("b.png", BLURRED)]
    assert stack.run(keys).errors == []
    assert stack.source_keys() == []
    assert stack.tier_keys("A") == ["s.png"] and stack.tier_keys("D") == ["b.png"]
    assert list(open_bucket(f"mem://{name}").list()) == ["tier-a/s.png", "tier-d/b.png"]


def test_a_failed_placement_keeps_the_source_and_is_retried(tmp_path: Path) -> None:
    stack = Stack.files(tmp_path, move=True)
    (tmp_path / "tier-A" / "s.png").mkdir()  # tier A refuses the write
    keys = [stack.put("s.png", SHARP), stack.put("b.png", BLURRED)]
    run = stack.run(keys)
    assert run.stats.succeeded == 1 and run.stats.retried == 2
    assert [e["attempt"] for e in run.errors] == [1, 2, 3] and run.errors[-1]["final"]
    assert {e["phase"] for e in run.errors} == {"finalize"}
    assert stack.source_keys() == ["s.png"]  # kept: its copy never landed
    assert list(stack.rows()) == ["b.png"]


def test_a_failed_database_write_keeps_the_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy.exc import OperationalError

    def refuse(self: FeaturesDB, session: Any, record: Any) -> None:
        raise OperationalError("INSERT", {}, Exception("database is locked"))

    stack = Stack.files(tmp_path, move=True)
    keys = [stack.put("s.png", SHARP)]
    with monkeypatch.context() as mp:
        mp.setattr(FeaturesDB, "upsert", refuse)
        run = stack.run(keys)
    assert [e["attempt"] for e in run.errors] == [1, 2, 3] and run.errors[-1]["final"]
    assert stack.source_keys() == ["s.png"]  # placed, but unrecorded: the source stays
    assert stack.tier_keys("A") == ["s.png"] and stack.rows() == {}
    assert stack.run(keys, first_id=10).errors == []  # the database is back
    assert stack.source_keys() == [] and list(stack.rows()) == ["s.png"]


class _TruncatingBucket(FileBucket):
    """A file bucket whose uploads store only the first half of the file."""

    def upload(self, path: Path, key: str) -> None:
        data = Path(path).read_bytes()
        self.upload_fileobj(io.BytesIO(data[: len(data) // 2]), key)


def test_a_copy_of_the_wrong_size_keeps_the_source_and_writes_no_row(tmp_path: Path) -> None:
    bad = f"file://{tmp_path}/tier-A"

    def opener(url: str) -> BucketService:
        return _TruncatingBucket.from_url(url) if url == bad else open_bucket(url)

    stack = Stack.files(tmp_path, move=True, opener=opener)
    keys = [stack.put("s.png", SHARP), stack.put("b.png", BLURRED)]
    run = stack.run(keys)
    assert run.stats.succeeded == 1 and len(run.errors) == 3 and run.errors[-1]["final"]
    err = run.errors[-1]
    assert err["error_type"] == "IntegrityError" and "s.png" in err["error_message"]
    assert "bytes and is kept" in err["error_message"]
    assert stack.source_keys() == ["s.png"]
    assert list(stack.rows()) == ["b.png"]


class _UndeletableBucket(FileBucket):
    def delete(self, key: str) -> None:
        raise PermissionError(13, "Permission denied", key)


def test_a_source_that_cannot_be_deleted_is_a_warning_not_a_failure(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stack = Stack.files(tmp_path, move=True)
    stack.source = _UndeletableBucket.from_url(stack.source.url)
    keys = [stack.put("s.png", SHARP)]
    with caplog.at_level(logging.WARNING, logger="simpletasks.tasks.tiering"):
        run = stack.run(keys)
    assert run.errors == [] and run.stats.succeeded == 1
    assert stack.source_keys() == ["s.png"] and stack.tier_keys("A") == ["s.png"]
    assert stack.rows()["s.png"]["storage_url"] is not None
    assert stack.steps.counts["delete_failed"] == 1 and stack.steps.counts["moved"] == 0
    assert any("could not delete s.png" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    "tier_url",
    [
        "file://{root}/ingest",
        "file://{root}/x/../ingest/",
        "file://{root}/ingest/tiered",  # inside the source
        "file://{root}",  # the source inside it
    ],
)
def test_a_tier_that_overlaps_the_source_is_refused_in_move_mode(
    tmp_path: Path, tier_url: str
) -> None:
    (tmp_path / "x").mkdir()
    url = tier_url.format(root=tmp_path)
    stack = Stack.files(tmp_path, move=True)
    open_bucket(url, create=True)
    stack.config = TierConfig(
        tiers={**stack.config.tiers, "A": Tier("A", url)},
        database=stack.config.database,
        policy=SPLIT,
        move=True,
    )
    keys = [stack.put("s.png", SHARP)]
    run = stack.run(keys)
    [err] = run.errors
    assert err["final"] and err["attempt"] == 1 and err["error_type"] == "PermanentFailure"
    assert "tier A" in err["error_message"] and "overlaps the source bucket" in err["error_message"]
    assert stack.source_keys() == ["s.png"] and stack.rows() == {}
    # Copying into it is allowed (nothing is deleted).
    stack.config = TierConfig(
        tiers=stack.config.tiers, database=stack.config.database, policy=SPLIT
    )
    assert stack.run(keys, first_id=2).errors == []
    assert "s.png" in stack.source_keys()


# -- redelivery ---------------------------------------------------------------------------------


def test_redelivery_after_a_move_is_done_not_an_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stack = Stack.files(tmp_path, move=True)
    keys = [stack.put("s.png", SHARP), stack.put("b.png", BLURRED)]
    assert stack.run(keys).errors == []
    before = stack.rows()
    with caplog.at_level(logging.INFO, logger="simpletasks.tasks.tiering"):
        run = stack.run(keys, first_id=10)  # delivered again (same worker cache)
    assert run.errors == [] and run.stats.succeeded == 2
    assert {d["result_message"] for d in run.done[-2:]} == {"moved before: 1"}
    assert stack.rows() == before  # not rewritten
    assert stack.steps.counts["already_moved"] == 2
    assert any("done before" in r.getMessage() for r in caplog.records)
    # A task with a moved image and a new one: the new one is moved, the other skipped.
    new = stack.put("s2.png", SHARP, seed=2)
    run = stack.run(["s.png", new], per_task=2, first_id=20)
    assert run.errors == [] and run.done[-1]["result_message"] == "A: 1, moved before: 1"
    assert stack.source_keys() == [] and stack.tier_keys("A") == ["s.png", "s2.png"]


def test_a_missing_source_without_a_tiered_copy_still_fails_for_good(tmp_path: Path) -> None:
    stack = Stack.files(tmp_path, move=True)
    keys = [stack.put("s.png", SHARP), stack.put("b.png", BLURRED)]
    assert stack.run(keys).errors == []
    (tmp_path / "tier-D" / "b.png").unlink()  # the copy of b.png is lost too
    run = stack.run([*keys, "never.png"], first_id=10)
    assert run.stats.succeeded == 1
    reasons = {e["body"]["basic_info"]["inputs"][0]: e for e in run.errors}
    assert sorted(reasons) == ["b.png", "never.png"]
    for err in reasons.values():
        assert err["final"] and err["attempt"] == 1 and err["error_type"] == "KeyNotFound"
    assert "tier-D/b.png is missing too" in reasons["b.png"]["error_message"]
    assert "no row in the features database" in reasons["never.png"]["error_message"]


# -- S3 on moto, GCS on fake-gcs-server ---------------------------------------------------------


def test_move_on_s3_with_a_server_side_copy(tmp_path: Path, moto_server: Any) -> None:
    s3 = moto_server.client("s3")
    tag = uuid.uuid4().hex[:8]
    for name in ("ingest", "fast", "cold"):
        s3.create_bucket(Bucket=f"mv-{name}-{tag}")
    tiers = {
        "A": Tier("A", f"s3://mv-fast-{tag}/a", "STANDARD_IA"),
        "D": Tier("D", f"s3://mv-cold-{tag}", "GLACIER_IR"),
    }

    def opener(url: str) -> BucketService:
        return open_bucket(url, client=s3)

    source = open_bucket(f"s3://mv-ingest-{tag}/in", client=s3)
    stack = Stack(tmp_path, source, tiers, opener=opener, move=True)
    keys = [stack.put("s.png", SHARP), stack.put("b.png", BLURRED)]
    targets = TierTargets(stack.config, opener)
    assert targets._method(source, targets.bucket(tiers["A"])) == "s3-copy"
    run = stack.run(keys)
    assert run.errors == [], run.errors
    assert stack.source_keys() == []
    head = s3.head_object(Bucket=f"mv-fast-{tag}", Key="a/s.png")
    assert head["StorageClass"] == "STANDARD_IA" and head["ContentLength"] == len(_image(SHARP))
    assert stack.tier_keys("D") == ["b.png"]
    assert targets.stored_size(tiers["A"], "s.png") == len(_image(SHARP))
    assert targets.stored_size(tiers["A"], "nothing.png") is None
    # Delivered again: the images are in the worker's cache but gone from the bucket; a
    # server-side copy from a missing source would fail, so they must count as done.
    run = stack.run(keys, first_id=10)
    assert run.errors == [] and run.stats.succeeded == 2
    assert stack.steps.counts["already_moved"] == 2


def test_move_on_gcs_with_a_rewrite(tmp_path: Path, gcs_emulator: Any) -> None:
    client = gcs_emulator.client()
    tag = uuid.uuid4().hex[:8]

    def opener(url: str) -> BucketService:
        return open_bucket(url, client=client, create=True)

    tiers = {"A": Tier("A", f"gs://mv-fast-{tag}/a"), "D": Tier("D", f"gs://mv-cold-{tag}")}
    for t in tiers.values():
        opener(t.url)
    source = opener(f"gs://mv-ingest-{tag}/in")
    stack = Stack(tmp_path, source, tiers, opener=opener, move=True)
    keys = [stack.put("s.png", SHARP), stack.put("b.png", BLURRED)]
    targets = TierTargets(stack.config, opener)
    assert targets._method(source, targets.bucket(tiers["A"])) == "gcs-rewrite"
    run = stack.run(keys)
    assert run.errors == [], run.errors
    assert stack.source_keys() == []
    blob = client.bucket(f"mv-fast-{tag}").get_blob("a/s.png")
    assert blob.download_as_bytes() == _image(SHARP)
    assert stack.tier_keys("D") == ["b.png"]
    assert targets.stored_size(tiers["D"], "b.png") == len(_image(BLURRED))
    assert targets.stored_size(tiers["D"], "s.png") is None
    run = stack.run(keys, first_id=10)
    assert run.errors == [] and run.stats.succeeded == 2
