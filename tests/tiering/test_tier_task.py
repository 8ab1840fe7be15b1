"""HASTE_TIER through a real daemon: file:// queues and buckets, S3 tiers on moto, PostgreSQL.

Every bad input is sent among good ones: the bad one gets a final error report with its
reason and no row; the others are placed and recorded.
"""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from simpletasks.buckets import BucketService, open_bucket
from simpletasks.middleware import Middleware
from simpletasks.queues import open_queue
from simpletasks.scheduler import schedule
from simpletasks.settings import DaemonSettings
from simpletasks.tasks.tiering.config import Tier, TierConfig
from simpletasks.tasks.tiering.db import FeaturesDB
from simpletasks.tasks.tiering.local import WorkerRun, run_workers
from simpletasks.tasks.tiering.policy import TierPolicy
from simpletasks.tasks.tiering.synthetic import cell_image, encode_image
from simpletasks.tasks.tiering.task import HasteTierTask, make_tier_job

SHARP, BLURRED = 0.0, 3.0  # defocus of images that score > 0.5 and < 0.01
SPLIT = TierPolicy([[0, 0.5, "D"], [0.5, 1, "A"]])  # so sharp -> A, blurred -> D


class Stack:
    """file:// queues, a file:// source bucket and four file:// tiers under ``root``."""

    def __init__(self, root: Path, *, database: str | None = None, **config: Any) -> None:
        self.root = root
        self.source = open_bucket(f"file://{root}/ingest", create=True)
        tiers = config.pop("tiers", None) or {n: Tier(n, f"file://{root}/tier-{n}") for n in "ABCD"}
        for t in tiers.values():
            if t.url.startswith("file://"):
                open_bucket(t.url, create=True)
        self.config = TierConfig(
            tiers=tiers, database=database or f"sqlite:///{root}/f.db", **config
        )
        self.db = FeaturesDB(
            self.config.database, table=self.config.db_table, schema=self.config.db_schema
        )
        self.queues = {
            n: open_queue(f"file://{root}/q-{n}", create=True) for n in ("tasks", "errors", "done")
        }

    def put(self, key: str, data: bytes) -> str:
        self.source.upload_fileobj(io.BytesIO(data), key)
        return key

    def put_image(self, key: str, defocus: float, seed: int = 0, fmt: str = "png") -> str:
        return self.put(key, encode_image(cell_image((256, 256), defocus=defocus, seed=seed), fmt))

    def run(self, keys: list[str], concurrency: int = 2, **kw: Any) -> WorkerRun:
        schedule(self.queues["tasks"], make_tier_job(keys))
        return run_workers(
            queue=self.queues["tasks"],
            source=self.source,
            config=self.config,
            cache_dir=self.root / "cache",
            concurrency=concurrency,
            error_queue=self.queues["errors"],
            done_queue=self.queues["done"],
            **kw,
        )

    def stored(self) -> dict[str, list[str]]:
        out = {}
        for name, tier in self.config.tiers.items():
            if tier.url.startswith("file://"):
                out[name] = list(open_bucket(tier.url).list())
        return out


def _settings(**kw: Any) -> DaemonSettings:
    base = dict(
        concurrency=2,
        wait_seconds=0.2,
        poll_frequency_seconds=0.2,
        burst=True,
        retry_delay_seconds=0.05,
        max_attempts=3,
    )
    base.update(kw)
    return DaemonSettings(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize("workers", [1, 2])
def test_images_are_scored_placed_and_recorded(tmp_path: Path, workers: int) -> None:
    stack = Stack(tmp_path, policy=SPLIT)
    keys = [stack.put_image(f"run/s{i}.png", SHARP, seed=i) for i in range(3)]
    keys += [stack.put_image(f"run/b{i}.tif", BLURRED, seed=i, fmt="tiff") for i in range(3)]
    run = stack.run(keys, concurrency=workers)
    assert run.errors == [] and run.stats.succeeded == 6
    rows = {r["key"]: r for r in stack.db.rows()}
    assert sorted(rows) == sorted(keys)
    for key, row in rows.items():
        want = "A" if "/s" in key else "D"
        assert row["tier"] == want, (key, row["features"], row["score"])
        assert row["storage_url"] == f"file://{tmp_path}/tier-{want}/{key}"
        assert row["source"] == stack.source.url and row["size_bytes"] > 0
        assert set(row["features"]) == {"plls", "mean", "std", "saturated"}
        assert row["width"] == row["height"] == 256
        assert (row["score"] > 0.5) == ("/s" in key)
    stored = stack.stored()
    assert sorted(stored["A"]) == sorted(k for k in keys if "/s" in k)
    assert sorted(stored["D"]) == sorted(k for k in keys if "/b" in k)
    assert stored["B"] == stored["C"] == []
    assert {d["result_message"] for d in run.done} <= {"A: 1", "D: 1"}


def test_redelivery_leaves_one_row_and_one_copy_and_moves_on_a_new_policy(
    tmp_path: Path,
) -> None:
    stack = Stack(tmp_path, policy=SPLIT)
    keys = [stack.put_image("run/s.png", SHARP), stack.put_image("run/b.png", BLURRED)]
    stack.run(keys)
    stack.run(keys)  # delivered again
    assert len(stack.db.rows()) == 2
    assert sum(len(v) for v in stack.stored().values()) == 2
    # The same images under a policy that files everything in C: the copies move.
    stack.config = TierConfig(
        tiers=stack.config.tiers, database=stack.config.database, policy=TierPolicy([[0, 1, "C"]])
    )
    run = stack.run(keys)
    assert run.errors == []
    assert {r["tier"] for r in stack.db.rows()} == {"C"} and len(stack.db.rows()) == 2
    assert stack.stored() == {"A": [], "B": [], "C": sorted(keys), "D": []}


def test_trash_is_recorded_but_stored_nowhere(tmp_path: Path) -> None:
    stack = Stack(
        tmp_path,
        tiers={"A": Tier("A", f"file://{tmp_path}/tier-A")},
        policy=TierPolicy([[0, 0.5, "trash"], [0.5, 1, "A"]]),
    )
    keys = [stack.put_image("s.png", SHARP), stack.put_image("b.png", BLURRED)]
    assert stack.run(keys).errors == []
    rows = {r["key"]: r for r in stack.db.rows()}
    assert rows["b.png"]["tier"] == "trash" and rows["b.png"]["storage_url"] is None
    assert stack.stored() == {"A": ["s.png"]}


def test_bad_inputs_fail_for_good_with_their_reason_and_the_rest_goes_on(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    png = encode_image(cell_image((128, 128), seed=1), "png")
    good = [stack.put_image("ok.png", SHARP), stack.put("png_named.tif", png)]
    bad = {
        stack.put("corrupt.png", png[:300]): "corrupt PNG",
        stack.put("text.png", b"not an image at all\n"): "not a PNG, TIFF or JPEG",
        stack.put("empty.png", b""): "empty file",
        stack.put("one.png", encode_image(np.array([[7]], np.uint8), "png")): "1x1",
        stack.put("flat.png", encode_image(np.full((64, 64), 9, np.uint16), "png")): "constant",
    }
    run = stack.run(good + list(bad) + ["missing.png"])
    assert run.stats.succeeded == 2
    assert sorted(r["key"] for r in stack.db.rows()) == sorted(good)
    reasons = {e["body"]["basic_info"]["inputs"][0]: e for e in run.errors}
    assert sorted(reasons) == sorted([*bad, "missing.png"])
    for key, text in bad.items():
        err = reasons[key]
        assert err["final"] is True and err["attempt"] == 1, err  # not retried
        assert text in err["error_message"] and err["error_type"] == "ImageRejected"
    assert reasons["missing.png"]["error_type"] == "KeyNotFound"


def test_a_task_with_good_and_bad_images_files_the_good_ones_then_fails(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    keys = [stack.put_image("a.png", SHARP), stack.put("b.png", b"junk")]
    schedule(stack.queues["tasks"], make_tier_job(keys, per_task=2))
    run = run_workers(
        queue=stack.queues["tasks"],
        source=stack.source,
        config=stack.config,
        cache_dir=tmp_path / "cache",
        error_queue=stack.queues["errors"],
    )
    assert [r["key"] for r in stack.db.rows()] == ["a.png"]
    [err] = run.errors
    assert err["final"] and "1 of 2 image(s) rejected" in err["error_message"]
    assert "b.png" in err["error_message"] and err["phase"] == "finalize"


@pytest.mark.parametrize("how", ["tier path is a file", "object path is a directory"])
def test_a_tier_that_refuses_writes_is_retried_then_reported_and_others_go_on(
    tmp_path: Path, how: str
) -> None:
    stack = Stack(tmp_path, policy=SPLIT)
    if how == "tier path is a file":  # the bucket cannot be opened
        (tmp_path / "tier-A").rmdir()
        (tmp_path / "tier-A").write_text("a file where tier A's directory should be")
    else:  # the bucket opens, the write fails
        (tmp_path / "tier-A" / "s.png").mkdir()
    keys = [stack.put_image("s.png", SHARP), stack.put_image("b.png", BLURRED)]
    run = stack.run(keys, settings=_settings())
    assert run.stats.succeeded == 1 and run.stats.retried == 2
    assert [e["attempt"] for e in run.errors] == [1, 2, 3]
    final = run.errors[-1]
    assert final["final"] and final["phase"] == "finalize"
    assert final["body"]["basic_info"]["inputs"] == ["s.png"]
    assert [r["key"] for r in stack.db.rows()] == ["b.png"]  # no row for the unplaced one
    assert list(open_bucket(f"file://{tmp_path}/tier-D").list()) == ["b.png"]


def test_s3_tiers_with_storage_class_on_moto(tmp_path: Path, moto_server: Any) -> None:
    s3 = moto_server.client("s3")
    for name in ("tier-ingest", "tier-fast", "tier-cold"):
        s3.create_bucket(Bucket=name)
    source = open_bucket("s3://tier-ingest/in", client=s3)
    tiers = {
        "A": Tier("A", "s3://tier-fast/a", "STANDARD_IA"),
        "B": Tier("B", "s3://tier-fast/b"),
        "C": Tier("C", f"file://{tmp_path}/tier-C"),
        "D": Tier("D", "s3://tier-cold", "GLACIER_IR"),
    }
    open_bucket(tiers["C"].url, create=True)
    config = TierConfig(tiers=tiers, database=f"sqlite:///{tmp_path}/f.db", policy=SPLIT)

    def opener(url: str) -> BucketService:
        return open_bucket(url, client=s3) if url.startswith("s3://") else open_bucket(url)

    for i, d in enumerate((SHARP, BLURRED)):
        data = encode_image(cell_image((256, 256), defocus=d, seed=i), "png")
        source.upload_fileobj(io.BytesIO(data), f"img{i}.png")
    queue = open_queue(f"file://{tmp_path}/q", create=True)
    errors = open_queue(f"file://{tmp_path}/e", create=True)
    schedule(queue, make_tier_job(["img0.png", "img1.png"]))
    run = run_workers(
        queue=queue,
        source=source,
        config=config,
        cache_dir=tmp_path / "cache",
        error_queue=errors,
        opener=opener,
    )
    assert run.errors == []
    head_a = s3.head_object(Bucket="tier-fast", Key="a/img0.png")
    head_d = s3.head_object(Bucket="tier-cold", Key="img1.png")
    assert head_a["StorageClass"] == "STANDARD_IA" and head_d["StorageClass"] == "GLACIER_IR"
    rows = {r["key"]: r for r in FeaturesDB(config.database).rows()}
    assert rows["img0.png"]["storage_url"] == "s3://tier-fast/a/img0.png"
    # server-side copy: the method is chosen from the buckets, the copy is byte-identical
    src = s3.get_object(Bucket="tier-ingest", Key="in/img0.png")["Body"].read()
    assert s3.get_object(Bucket="tier-fast", Key="a/img0.png")["Body"].read() == src
    from simpletasks.tasks.tiering.tiers import TierTargets

    targets = TierTargets(config, opener)
    assert targets._method(source, targets.bucket(tiers["A"])) == "s3-copy"
    assert targets._method(source, targets.bucket(tiers["C"])) == "upload"
    # A file:// source into an S3 tier: an upload that keeps the storage class.
    local = tmp_path / "x.png"
    local.write_bytes(src)
    url, method = targets.place(
        tiers["D"], open_bucket(f"file://{tmp_path}/tier-C"), "x.png", local
    )
    assert method == "upload" and url == "s3://tier-cold/x.png"
    assert s3.head_object(Bucket="tier-cold", Key="x.png")["StorageClass"] == "GLACIER_IR"


class _DatabaseOutage(Middleware):
    """After the first finalize that succeeded, cut the database off for ``seconds``."""

    def __init__(self, proxy: Any, seconds: float) -> None:
        self.proxy, self.seconds, self.fired = proxy, seconds, False
        self.lock = threading.Lock()

    def after_phase(self, task: Any, message: Any, phase: str, seconds: float, error: Any) -> None:
        with self.lock:
            if phase != "finalize" or error is not None or self.fired:
                return
            self.fired = True
        self.proxy.down()
        threading.Timer(self.seconds, self.proxy.up).start()


def test_postgresql_going_away_mid_run_retries_and_leaves_no_half_row(
    tmp_path: Path, pg_schema: str, pg_proxy: Any
) -> None:
    url = f"postgresql+psycopg://postgres@127.0.0.1:{pg_proxy.port}/test"
    stack = Stack(tmp_path, database=url, db_schema=pg_schema)
    keys = [stack.put_image(f"i{i}.png", SHARP if i % 2 else BLURRED, seed=i) for i in range(8)]
    outage = _DatabaseOutage(pg_proxy, seconds=1.0)
    run = stack.run(
        keys,
        settings=_settings(
            concurrency=2, max_attempts=20, retry_delay_seconds=0.1, retry_delay_max_seconds=0.3
        ),
        middleware=[outage],
    )
    assert outage.fired
    assert run.stats.succeeded == 8 and run.stats.retried >= 1, run.stats
    assert all(not e["final"] for e in run.errors) and run.errors, "expected retried failures"
    rows = stack.db.rows()
    assert sorted(r["key"] for r in rows) == sorted(keys)
    for row in rows:  # every row whole
        assert all(row[c] is not None for c in row if c not in ("job_id",)), row
    assert sum(len(v) for v in stack.stored().values()) == 8


def test_plain_class_reads_its_config_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from simpletasks.errors import ConfigError

    monkeypatch.delenv("SIMPLETASKS_TIER_CONFIG", raising=False)
    with pytest.raises(ConfigError, match="SIMPLETASKS_TIER_CONFIG"):
        HasteTierTask.load_config()
    path = tmp_path / "t.yaml"
    path.write_text(f"tiers: {{A: file://{tmp_path}/a}}\npolicy: [[0, 1, A]]\n")
    monkeypatch.setenv("SIMPLETASKS_TIER_CONFIG", os.fspath(path))
    assert HasteTierTask.load_config().policy.tiers == ["A"]
    assert set(HasteTierTask.resources()) == {"tier_db", "tier_targets"}


def test_gcs_tier_rewrite_with_storage_class_on_fake_gcs_server(
    tmp_path: Path, gcs_emulator: Any
) -> None:
    """fake-gcs-server copies on rewrite but ignores the storage class in the request (real
    GCS applies it), so the class is checked in the request we send."""
    import json as jsonlib

    from simpletasks.tasks.tiering.tiers import TierTargets

    client = gcs_emulator.client()
    sent: list[tuple[str, Any]] = []
    real_request = client._http.request

    def recording(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        if "rewriteTo" in url:
            sent.append((url, jsonlib.loads(kwargs.get("data") or "{}")))
        return real_request(method, url, *args, **kwargs)

    client._http.request = recording
    source = open_bucket("gs://tier-src/in", client=client, create=True)
    cold = Tier("C", "gs://tier-cold/c", "NEARLINE")
    open_bucket("gs://tier-cold", client=client, create=True)
    data = encode_image(cell_image((64, 64), seed=1), "png")
    source.upload_fileobj(io.BytesIO(data), "x.png")
    config = TierConfig(tiers={"C": cold}, policy=TierPolicy([[0, 1, "C"]]))
    targets = TierTargets(config, lambda url: open_bucket(url, client=client))
    local = tmp_path / "x.png"
    local.write_bytes(data)
    for _ in range(2):  # twice: one copy
        url, method = targets.place(cold, source, "x.png", local)
    assert (url, method) == ("gs://tier-cold/c/x.png", "gcs-rewrite")
    blob = client.bucket("tier-cold").get_blob("c/x.png")
    assert blob.download_as_bytes() == data
    assert [b.name for b in client.list_blobs("tier-cold")] == ["c/x.png"]
    assert len(sent) == 2 and all(body.get("storageClass") == "NEARLINE" for _, body in sent)
    # From a file:// source: an upload that sets the storage class.
    url, method = targets.place(cold, open_bucket(f"file://{tmp_path}"), "x.png", local)
    assert method == "upload"
    assert client.bucket("tier-cold").get_blob("c/x.png").storage_class == "NEARLINE"
