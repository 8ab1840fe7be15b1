"""BorderDarkOperator on tiny hand-made arrays: 4-connectivity, threshold, PNG output."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, UnidentifiedImageError

from simpletasks.tasks.edge.operator import (
    BorderDarkOperator,
    CopyOperator,
    border_dark_mask,
    clear_border_dark,
    get_operator,
)

B = 200  # bright


def test_only_border_connected_dark_pixels_are_cleared():
    grey = np.full((6, 6), B, dtype=np.uint8)
    grey[0, 2] = 10  # on the border
    grey[1, 2] = 12  # 4-connected to it
    grey[3, 3] = 5  # dark but enclosed
    out = clear_border_dark(grey)
    assert out[0, 2] == 0 and out[1, 2] == 0
    assert out[3, 3] == 5
    assert (out[grey == B] == B).all()


def test_diagonal_contact_does_not_connect():
    grey = np.full((5, 5), B, dtype=np.uint8)
    grey[0, 1] = 10  # border
    grey[1, 2] = 10  # only diagonal to (0, 1): 8-connected, not 4-connected
    grey[2, 2] = 10  # 4-connected to (1, 2) but not to the border
    mask = border_dark_mask(grey)
    assert mask[0, 1]
    assert not mask[1, 2] and not mask[2, 2]


def test_long_path_through_dark_pixels():
    grey = np.full((7, 7), B, dtype=np.uint8)
    path = [(0, 3), (1, 3), (2, 3), (3, 3), (3, 4), (3, 5), (4, 5)]
    for y, x in path:
        grey[y, x] = 1
    mask = border_dark_mask(grey)
    assert all(mask[p] for p in path)
    assert mask.sum() == len(path)


def test_threshold_is_strict():
    grey = np.full((3, 3), B, dtype=np.uint8)
    grey[0, 0] = 29
    grey[0, 2] = 30
    mask = border_dark_mask(grey, threshold=30)
    assert mask[0, 0] and not mask[0, 2]


def test_all_dark_and_no_dark():
    assert border_dark_mask(np.zeros((4, 4), np.uint8)).all()
    assert not border_dark_mask(np.full((4, 4), B, np.uint8)).any()


def test_rejects_non_2d():
    with pytest.raises(ValueError):
        border_dark_mask(np.zeros((2, 2, 3), np.uint8))


def test_apply_writes_greyscale_png(tmp_path):
    rgb = np.full((8, 8, 3), B, dtype=np.uint8)
    rgb[0, :] = 5  # dark top row
    rgb[4, 4] = 5  # enclosed dark pixel
    src, dst = tmp_path / "in.png", tmp_path / "out.png"
    Image.fromarray(rgb, mode="RGB").save(src)
    BorderDarkOperator().apply(src, dst)
    with Image.open(dst) as im:
        assert im.format == "PNG" and im.mode == "L"
        out = np.asarray(im)
    assert (out[0] == 0).all()
    assert out[4, 4] == 5
    assert out[2, 2] == B


def test_apply_on_a_corrupt_file_raises_and_the_next_one_works(tmp_path):
    bad, good = tmp_path / "bad.png", tmp_path / "good.png"
    bad.write_bytes(b"not an image")
    Image.fromarray(np.full((4, 4), B, np.uint8)).save(good)
    op = BorderDarkOperator()
    with pytest.raises(UnidentifiedImageError):
        op.apply(bad, tmp_path / "x.png")
    op.apply(good, tmp_path / "y.png")
    assert (tmp_path / "y.png").exists()


def test_get_operator_by_name_and_path(tmp_path):
    assert isinstance(get_operator(), BorderDarkOperator)
    assert get_operator("border-dark", threshold=10).threshold == 10
    assert isinstance(get_operator("copy"), CopyOperator)
    op = get_operator("simpletasks.tasks.edge.operator:CopyOperator")
    src = tmp_path / "a"
    src.write_bytes(b"abc")
    op.apply(src, tmp_path / "b")
    assert (tmp_path / "b").read_bytes() == b"abc"
    with pytest.raises(ValueError, match="unknown operator"):
        get_operator("nope")
    with pytest.raises(ValueError):
        BorderDarkOperator(compress_level=10)
