"""`simpletasks tier ...` through click's CliRunner (the group is imported directly)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from simpletasks.buckets import open_bucket
from simpletasks.cli.tier import tier
from simpletasks.queues import open_queue
from simpletasks.tasks.tiering.db import FeaturesDB, ImageRecord
from simpletasks.tasks.tiering.synthetic import cell_image, write_image


def _db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path}/f.db"
    db = FeaturesDB(url)
    with db.session() as s:
        for i, (tier_name, score, plls) in enumerate(
            [("A", 0.9, -1.0), ("A", 0.8, -1.1), ("B", 0.6, -1.3), ("D", 0.01, -2.5)]
        ):
            db.upsert(
                s,
                ImageRecord(
                    source="file:///x",
                    key=f"k{i}.png",
                    size_bytes=2_500_000,
                    width=10,
                    height=10,
                    format="png",
                    features={"plls": plls},
                    score=score,
                    tier=tier_name,
                    storage_url=None,
                ),
            )
    return url


def test_report_prints_table_2_and_exports_csv_json_and_the_figure(tmp_path: Path) -> None:
    url = _db(tmp_path)
    out = CliRunner().invoke(
        tier,
        ["report", "--db", url, "--csv", f"{tmp_path}/t.csv", "--json", f"{tmp_path}/t.json",
         "--figure", f"{tmp_path}/f.png"],
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert lines[0].split() == ["tier", "images", "MB"]
    assert lines[1].split() == ["A", "2", "5.0"] and lines[2].split() == ["B", "1", "2.5"]
    assert lines[3].split() == ["C", "0", "0.0"] and lines[4].split() == ["D", "1", "2.5"]
    assert lines[5].split() == ["total", "4", "10.0"]
    with open(tmp_path / "t.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["tier"], r["images"]) for r in rows] == [
        ("A", "2"),
        ("B", "1"),
        ("C", "0"),
        ("D", "1"),
    ]
    assert json.loads((tmp_path / "t.json").read_text())[0] == {
        "tier": "A", "images": 2, "megabytes": 5.0
    }  # fmt: skip
    with Image.open(tmp_path / "f.png") as im:
        assert im.format == "PNG" and im.size[0] > 500


def test_report_needs_a_database_and_reports_config_errors_in_one_line(tmp_path: Path) -> None:
    out = CliRunner().invoke(tier, ["report"])
    assert out.exit_code == 2 and "--db URL or --config FILE" in out.output
    (tmp_path / "c.yaml").write_text("tiers: {A: s3://a}\npolicy: [[0, 0.5, A]]\n")
    out = CliRunner().invoke(tier, ["report", "--config", str(tmp_path / "c.yaml")])
    assert out.exit_code == 1 and "gap to 1" in out.output and "Traceback" not in out.output


def test_score_local_files(tmp_path: Path) -> None:
    good = write_image(tmp_path / "a.png", cell_image((256, 256), seed=1))
    bad = tmp_path / "b.png"
    bad.write_bytes(b"nope")
    out = CliRunner().invoke(tier, ["score", str(good), str(bad)])
    assert out.exit_code == 1
    assert "a.png: plls=" in out.output and "tier=A" in out.output
    assert "b.png: rejected: not a PNG" in out.output


def test_score_rejects_what_the_worker_rejects_and_reads_colour_like_grey(tmp_path: Path) -> None:
    """`tier score` used to print tier A for a constant or tiny image (the worker rejects
    them) and 0-255 means for a colour one."""
    grey = cell_image((128, 128), seed=3, dtype=np.uint8)
    good = write_image(tmp_path / "grey.png", grey)
    Image.fromarray(np.stack([grey] * 3, axis=-1), "RGB").save(tmp_path / "colour.png")
    write_image(tmp_path / "flat.png", np.full((64, 64), 9, dtype=np.uint8))
    write_image(tmp_path / "tiny.png", cell_image((16, 64), seed=1))
    names = [good, tmp_path / "colour.png", tmp_path / "flat.png", tmp_path / "tiny.png"]
    out = CliRunner().invoke(tier, ["score", *map(str, names)])
    assert out.exit_code == 1 and "2 of 4 file(s) rejected" in out.output
    lines = dict(line.split(": ", 1) for line in out.output.splitlines() if ": " in line)
    assert lines[str(tmp_path / "colour.png")] == lines[str(good)]
    assert "mean=0." in lines[str(good)]
    assert lines[str(tmp_path / "flat.png")].startswith("rejected: constant image")
    assert lines[str(tmp_path / "tiny.png")].startswith("rejected: image is 64x16")


def test_schedule_from_a_bucket_listing(tmp_path: Path) -> None:
    bucket = open_bucket(f"file://{tmp_path}/b", create=True)
    for i in range(3):
        bucket.upload_fileobj(io.BytesIO(b"x"), f"run/{i}.png")
    bucket.upload_fileobj(io.BytesIO(b"x"), "other/z.png")
    open_queue(f"file://{tmp_path}/q", create=True)
    out = CliRunner().invoke(
        tier, ["schedule", "--queue", f"file://{tmp_path}/q", "--bucket", f"file://{tmp_path}/b",
               "--prefix", "run/", "--per-task", "2"],
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    assert "scheduled 2 HASTE_TIER task(s) for 3 object(s)" in out.output
    q = open_queue(f"file://{tmp_path}/q")
    bodies = [json.loads(m.body) for m in q.receive(10, wait_seconds=0, lease_seconds=30)]
    assert sorted(len(b["basic_info"]["inputs"]) for b in bodies) == [1, 2]


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    out = CliRunner().invoke(
        tier, ["demo", "--out", str(tmp_path / "d"), "--images", "8", "--size", "96"]
    )
    assert out.exit_code == 0, out.output
    assert "8 tasks done" in out.output, out.output
    assert any(line.split()[:2] == ["total", "8"] for line in out.output.splitlines())
    assert (tmp_path / "d" / "tiers.png").stat().st_size > 1000
    stored = sum(1 for p in (tmp_path / "d").glob("tier-*/series/*.png"))
    assert stored == 8


@pytest.mark.slow
def test_demo_on_moto_copies_server_side_into_s3_tiers(tmp_path: Path) -> None:
    args = ["demo", "--out", str(tmp_path), "--cloud", "aws", "--images", "8"]
    out = CliRunner().invoke(tier, args)
    assert out.exit_code == 0, out.output
    assert "8 tasks done" in out.output and "B s3://tier-demo-b (STANDARD_IA)" in out.output
    rows = FeaturesDB(f"sqlite:///{tmp_path}/features.db").rows()
    assert len(rows) == 8 and all(r["storage_url"].startswith("s3://tier-demo-") for r in rows)
