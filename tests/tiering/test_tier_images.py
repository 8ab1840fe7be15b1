"""Decoding PNG/TIFF/JPEG, CellProfiler's scaling, and the files that must be rejected."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from simpletasks.errors import PermanentFailure
from simpletasks.tasks.tiering.features import DefaultFeatures, image_features
from simpletasks.tasks.tiering.images import ImageRejected, read_image, scorable, to_unit_float
from simpletasks.tasks.tiering.synthetic import cell_image, write_image


@pytest.mark.parametrize(
    ("suffix", "dtype"),
    [(".png", np.uint8), (".png", np.uint16), (".tif", np.uint8), (".tif", np.uint16)],
)
def test_lossless_formats_round_trip_with_their_dtype(
    tmp_path: Path, suffix: str, dtype: type
) -> None:
    pixels = cell_image((64, 48), seed=1, dtype=dtype)
    loaded = read_image(write_image(tmp_path / f"a{suffix}", pixels))
    assert loaded.pixels.dtype == dtype
    np.testing.assert_array_equal(loaded.pixels, pixels)
    assert loaded.format == ("png" if suffix == ".png" else "tiff")


def test_jpeg_is_read_as_8_bit(tmp_path: Path) -> None:
    pixels = cell_image((64, 64), seed=1, dtype=np.uint8)
    loaded = read_image(write_image(tmp_path / "a.jpg", pixels))
    assert loaded.format == "jpeg" and loaded.pixels.shape == (64, 64)
    assert np.abs(loaded.pixels.astype(int) - pixels).mean() < 8


def test_multipage_tiff_scores_the_first_page_and_counts_pages(tmp_path: Path) -> None:
    pages = np.stack([cell_image((40, 40), seed=s) for s in range(3)])
    path = tmp_path / "stack.tif"
    with tifffile.TiffWriter(path) as tif:
        for page in pages:
            tif.write(page, photometric="minisblack")
    loaded = read_image(path)
    assert loaded.pages == 3
    np.testing.assert_array_equal(loaded.pixels, pages[0])


def test_rgb_becomes_the_mean_of_its_channels_scaled_to_unit(tmp_path: Path) -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (32, 32, 3)).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    np.testing.assert_allclose(read_image(tmp_path / "c.png").pixels, rgb.mean(axis=-1) / 255)


@pytest.mark.parametrize(
    ("dtype", "mode", "suffix"),
    [(np.uint8, "RGB", ".png"), (np.uint8, "RGBA", ".png"), (np.uint16, "RGB", ".tif")],
)
def test_a_colour_image_scores_as_its_grey_twin(
    tmp_path: Path, dtype: type, mode: str, suffix: str
) -> None:
    """A colour image whose channels all hold the grey image's values gets the grey image's
    features, score and tier (its mean, std and saturation were in 0-255 units before)."""
    grey = cell_image((64, 64), seed=2, dtype=dtype)
    grey[:4, :4] = np.iinfo(dtype).max  # a few saturated pixels
    channels = [grey] * 3 + ([np.full_like(grey, 7)] if mode == "RGBA" else [])
    colour = np.stack(channels, axis=-1)
    if suffix == ".png":
        Image.fromarray(colour, mode).save(tmp_path / f"c{suffix}")
    else:
        tifffile.imwrite(tmp_path / f"c{suffix}", colour, photometric="rgb")
    extractor = DefaultFeatures()
    grey_path = write_image(tmp_path / "g.png", grey)
    twin = image_features(extractor, scorable(read_image(grey_path), 32))
    got = image_features(extractor, scorable(read_image(tmp_path / f"c{suffix}"), 32))
    assert got.keys() == twin.keys()
    for name in got:
        assert got[name] == pytest.approx(twin[name], rel=1e-9, abs=1e-12), name
    assert 0 < got["saturated"] < 0.01 and 0 < got["mean"] < 1


def test_scorable_rejects_small_and_constant_images() -> None:
    from simpletasks.tasks.tiering.images import LoadedImage

    with pytest.raises(ImageRejected, match="image is 40x31; PLLS needs at least 32"):
        scorable(LoadedImage(np.arange(31 * 40, dtype=np.uint16).reshape(31, 40), "png"), 32)
    with pytest.raises(ImageRejected, match="constant image"):
        scorable(LoadedImage(np.full((64, 64), 0.5), "tiff"), 32)
    unit = scorable(LoadedImage(np.array([[0, 255], [255, 0]], dtype=np.uint8), "png"), 2)
    np.testing.assert_array_equal(unit, [[0.0, 1.0], [1.0, 0.0]])


def test_wrong_extension_is_read_by_content(tmp_path: Path) -> None:
    pixels = cell_image((40, 40), seed=1)
    path = tmp_path / "really_a_png.tif"
    write_image(path, pixels, "png")
    assert read_image(path).format == "png"


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty file"),
        (b"hello, not an image\n", "not a PNG, TIFF or JPEG"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "corrupt PNG"),
        (b"II*\x00" + b"\xff" * 40, "corrupt TIFF"),
        (b"\xff\xd8\xff\xe0" + b"\x00" * 10, "corrupt JPEG"),
    ],
)
def test_bad_files_are_rejected_permanently_with_the_reason(
    tmp_path: Path, content: bytes, reason: str
) -> None:
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(ImageRejected, match=reason) as info:
        read_image(path)
    assert isinstance(info.value, PermanentFailure)


def test_truncated_png_is_rejected(tmp_path: Path) -> None:
    path = write_image(tmp_path / "t.png", cell_image((64, 64), seed=1))
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ImageRejected, match="corrupt PNG"):
        read_image(path)


def test_unit_scaling_by_dtype_as_cellprofiler() -> None:
    assert to_unit_float(np.array([[0, 255]], np.uint8)).tolist() == [[0.0, 1.0]]
    assert to_unit_float(np.array([[0, 65535]], np.uint16)).tolist() == [[0.0, 1.0]]
    assert to_unit_float(np.array([[-32768, 32767]], np.int16)).tolist() == [[0.0, 1.0]]
    f = np.array([[0.25, 2.0]])
    assert to_unit_float(f).tolist() == [[0.25, 2.0]]
