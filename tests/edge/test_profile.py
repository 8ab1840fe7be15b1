"""Image directory -> profile CSV by running the operator."""

from __future__ import annotations

import pytest

from simpletasks.tasks.edge.profile import list_images, main, profile_directory
from simpletasks.tasks.edge.simulate import load_profile, run_simulation
from simpletasks.tasks.edge.synthetic import write_tem_stream


@pytest.fixture
def images(tmp_path):
    d = tmp_path / "imgs"
    write_tem_stream(d, 5, kind="iid", size=96, seed=4)
    (d / "notes.txt").write_text("not an image")
    return d


def test_profile_directory_writes_a_loadable_csv(images, tmp_path):
    out = tmp_path / "p.csv"
    rows = profile_directory(images, out, include=".png")
    assert len(rows) == 5
    back = load_profile(out)
    assert [r.size_bytes for r in back] == [
        (images / f"{i:05d}.png").stat().st_size for i in range(5)
    ]
    assert all(r.cpu_seconds > 0 for r in back)
    assert all(r.hint is not None for r in back)
    assert max(r.saved_bytes for r in back) > 0
    res = run_simulation(back, bandwidth_mbps=0.1, cores=1, policy="content")
    assert res["makespan"] > 0


def test_unreadable_file_stays_in_the_profile_with_no_saving(images, tmp_path, caplog):
    out = tmp_path / "all.csv"
    rows = profile_directory(images, out)  # no --include: the .txt is profiled too
    assert len(rows) == 6
    txt = rows[-1]
    assert txt.saved_bytes == 0 and txt.hint is None
    assert "operator failed" in caplog.text
    assert sum(r.saved_bytes > 0 for r in rows) >= 1  # the others went on


def test_bad_directories(tmp_path):
    with pytest.raises(FileNotFoundError):
        profile_directory(tmp_path / "missing", tmp_path / "x.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no files"):
        profile_directory(tmp_path / "empty", tmp_path / "x.csv")


def test_order_and_cli(images, tmp_path):
    assert list_images(images, ".png")[0].name == "00000.png"
    assert len(list_images(images, ".png", order="mtime")) == 5
    out = tmp_path / "cli.csv"
    assert main([str(images), str(out), "--include", ".png"]) == 0
    assert len(load_profile(out)) == 5
