"""Synthetic profiles (calibration, shape) and TEM-like images (what the operator removes)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from simpletasks.tasks.edge.hint import quick_hint
from simpletasks.tasks.edge.operator import border_dark_mask
from simpletasks.tasks.edge.synthetic import (
    PAPER_IMAGES,
    heterogeneous_profile,
    iid_profile,
    make_profile,
    occlusion_series,
    paper_profile,
    sawtooth_runs,
    tem_image,
    write_tem_stream,
)


def _fracs(rows):
    return np.array([r.saved_bytes / r.size_bytes for r in rows])


def _lag1(x):
    return float(np.corrcoef(x[:-1], x[1:])[0, 1])


@pytest.mark.parametrize("seed", [0, 1])
def test_paper_profile_is_calibrated_to_the_paper(seed):
    rows = paper_profile(seed=seed)
    assert len(rows) == PAPER_IMAGES
    total = sum(r.size_bytes for r in rows)
    saved = sum(r.saved_bytes for r in rows)
    assert total / 1.90e6 == pytest.approx(189.24, rel=1e-4)  # upload-only
    assert (total - saved) / 1.90e6 == pytest.approx(166.30, rel=1e-4)  # offline
    assert total / len(rows) == pytest.approx(474e3, rel=0.01)
    assert np.mean([r.cpu_seconds for r in rows]) == pytest.approx(0.395, rel=0.02)
    f = _fracs(rows)
    assert f.min() >= 0 and f.max() <= 0.37
    assert _lag1(f) > 0.9  # smooth over the index


def test_heterogeneous_and_iid_profiles():
    het = _fracs(heterogeneous_profile())
    assert het.min() >= 0 and het.max() <= 0.60
    rows = heterogeneous_profile()
    assert sum(r.saved_bytes for r in rows) / sum(r.size_bytes for r in rows) == pytest.approx(
        0.25, abs=0.005
    )
    assert _lag1(het) > 0.8
    iid = iid_profile()
    f = _fracs(iid)
    assert abs(_lag1(f)) < 0.1  # no structure over the index
    assert all(r.hint is not None for r in iid)
    assert np.corrcoef(f, [r.hint for r in iid])[0, 1] > 0.8
    with pytest.raises(ValueError):
        make_profile("nope")


def test_sawtooth_runs_have_lengths_60_to_130():
    pos = sawtooth_runs(5000, np.random.default_rng(0))
    starts = np.flatnonzero(pos == 0)
    lengths = np.diff(starts)
    assert lengths.min() >= 60 and lengths.max() <= 130
    assert (np.diff(pos)[np.diff(pos) > 0] > 0).all()


def test_tem_image_occlusion_is_what_the_operator_removes():
    rng = np.random.default_rng(0)
    for occ in (0.0, 0.2, 0.5):
        img = tem_image(occ, rng, size=128)
        assert img.dtype == np.uint8 and img.shape == (128, 128)
        removed = border_dark_mask(img).mean()
        assert removed == pytest.approx(occ, abs=0.03)
        # dark specks inside cells exist and are kept
        assert ((img < 30) & ~border_dark_mask(img)).any()
    with pytest.raises(ValueError):
        tem_image(0.95, rng)


def test_occlusion_series_kinds():
    smooth = occlusion_series(600, "smooth", seed=1)
    iid = occlusion_series(600, "iid", seed=1)
    assert _lag1(smooth) > 0.9 and abs(_lag1(iid)) < 0.15
    assert smooth.min() >= 0 and smooth.max() <= 0.6
    with pytest.raises(ValueError):
        occlusion_series(10, "wavy")


def test_write_stream_and_hint_tracks_occlusion(tmp_path):
    paths = write_tem_stream(tmp_path, 6, kind="iid", size=96, seed=2)
    assert [p.name for p in paths] == [f"{i:05d}.png" for i in range(6)]
    occ = occlusion_series(6, "iid", seed=2)
    hints = []
    for p in paths:
        with Image.open(p) as im:
            assert im.mode == "L" and im.size == (96, 96)
        hints.append(quick_hint(p, size=48))
    assert np.corrcoef(occ, hints)[0, 1] > 0.9


def test_hint_on_a_corrupt_file_raises(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG broken")
    with pytest.raises(OSError):
        quick_hint(bad)


def test_command_line(tmp_path):
    from simpletasks.tasks.edge.simulate import load_profile
    from simpletasks.tasks.edge.synthetic import main

    assert main(["profile", "iid", str(tmp_path / "p.csv"), "-n", "30"]) == 0
    rows = load_profile(tmp_path / "p.csv")
    assert len(rows) == 30 and rows[0].hint is not None
    assert main(["images", str(tmp_path / "img"), "3", "--kind", "iid", "--size", "64"]) == 0
    assert sorted(p.name for p in (tmp_path / "img").iterdir()) == [
        "00000.png",
        "00001.png",
        "00002.png",
    ]
