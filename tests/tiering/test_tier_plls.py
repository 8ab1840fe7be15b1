"""PLLS: agreement with CellProfiler's computation, its quirks and edge cases."""

from __future__ import annotations

import numpy as np
import pytest

from simpletasks.tasks.tiering.images import to_unit_float
from simpletasks.tasks.tiering.plls import power_log_log_slope, radial_power_sums, reference_plls


def _fixed_images() -> dict[str, np.ndarray]:
    """Images made by integer arithmetic and exp only: the same on every numpy version."""
    i, j = np.mgrid[0:96, 0:128]
    hashed = ((i * 7919 + j * 104729 + i * j * 31) % 251).astype(np.uint8)
    y, x = np.mgrid[0:77, 0:53]
    spots = [(20, 15, 3), (50, 30, 6), (60, 10, 2), (10, 45, 8)]
    blobs = sum(np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * s**2)) for cy, cx, s in spots)
    smooth = np.round(blobs / blobs.max() * 60000 + (y * 3 + x * 5) % 7).astype(np.uint16)
    return {"hashed_u8": hashed, "blobs_u16": smooth}


# Computed by cellprofiler_library 5.0.0.dev784's get_power_spectrum_measurement_values on
# to_unit_float(image) (numpy 1.26, scipy 1.10), see benchmarks/tier_plls.py.
CELLPROFILER = {"hashed_u8": 0.786334160578605, "blobs_u16": -3.1964168153067405}


@pytest.mark.parametrize("name", sorted(CELLPROFILER))
def test_matches_values_computed_by_cellprofiler(name: str) -> None:
    image = _fixed_images()[name]
    assert power_log_log_slope(to_unit_float(image)) == pytest.approx(CELLPROFILER[name], abs=1e-9)
    assert power_log_log_slope(image) == pytest.approx(CELLPROFILER[name], abs=1e-9)


@pytest.mark.parametrize(
    "shape",
    [
        (32, 32),
        (33, 47),
        (47, 33),
        (64, 64),
        (100, 75),
        (75, 100),
        (256, 255),
        (129, 64),
        (40, 300),
    ],
)
def test_matches_the_step_by_step_transcription_on_odd_and_even_shapes(shape: tuple) -> None:
    rng = np.random.default_rng(sum(shape))
    for image in (rng.random(shape), rng.integers(0, 4096, shape).astype(np.uint16)):
        smooth = np.cumsum(np.cumsum(rng.standard_normal(shape), 0), 1)  # 1/f^2-like
        for img in (image, smooth):
            assert power_log_log_slope(img) == pytest.approx(reference_plls(img), abs=1e-9)


def test_white_noise_is_about_plus_one_and_blur_lowers_it() -> None:
    from simpletasks.tasks.tiering.synthetic import cell_image

    noise = np.random.default_rng(0).random((256, 256))
    assert 0.8 < power_log_log_slope(noise) < 1.2
    sharp = power_log_log_slope(cell_image((256, 256), defocus=0, seed=2))
    blurred = power_log_log_slope(cell_image((256, 256), defocus=3, seed=2))
    assert sharp > -1.6 and blurred < -2.2


def test_invariant_to_scale_and_offset() -> None:
    img = np.random.default_rng(1).random((64, 96))
    assert power_log_log_slope(img * 1000 + 7) == pytest.approx(power_log_log_slope(img), abs=1e-9)


def test_uses_the_folded_index_with_minus_one_not_the_true_frequency() -> None:
    # The labels come from min(i, H-1-i); a version using min(i, H-i) differs noticeably.
    img = np.cumsum(np.random.default_rng(3).standard_normal((64, 64)), 0)
    labels, _, power = radial_power_sums(img)
    assert labels[0] == 2 and labels[-1] == 64 // 8 - 1
    h = w = 64
    fy = np.minimum(np.arange(h), h - np.arange(h))[:, None]
    fx = np.minimum(np.arange(w), w - np.arange(w))[None, :]
    true_labels = np.floor(np.sqrt(fy**2 + fx**2)).astype(int) + 1
    p = np.abs(np.fft.fft2(img - img.mean())) ** 2
    true_power = np.bincount(true_labels.ravel(), p.ravel())[2:8]
    assert not np.allclose(true_power, power)


@pytest.mark.parametrize("shape", [(1, 1), (31, 500), (500, 31), (16, 16)])
def test_small_images_give_zero(shape: tuple) -> None:
    assert power_log_log_slope(np.random.default_rng(0).random(shape)) == 0.0


def test_constant_and_empty_and_majority_at_mean_give_zero() -> None:
    assert power_log_log_slope(np.full((64, 64), 0.3)) == 0.0
    assert power_log_log_slope(np.zeros((0, 64))) == 0.0
    # More than half the pixels equal the mean: CellProfiler divides by a zero median.
    img = np.full((64, 64), 5.0)
    img[:10, :10] = 6.0
    img[-10:, -10:] = 4.0
    assert reference_plls(img) == 0.0
    assert power_log_log_slope(img) == 0.0


def test_bool_and_signed_images_work_and_bad_input_is_refused() -> None:
    rng = np.random.default_rng(5)
    b = rng.random((64, 64)) > 0.5
    assert power_log_log_slope(b) == pytest.approx(reference_plls(b.astype(float)), abs=1e-9)
    s = rng.integers(-1000, 1000, (64, 64)).astype(np.int16)
    assert power_log_log_slope(s) == pytest.approx(reference_plls(s), abs=1e-9)
    with pytest.raises(ValueError, match="2-D"):
        power_log_log_slope(np.zeros((4, 4, 3)))
    with pytest.raises(ValueError, match="real-valued"):
        power_log_log_slope(np.zeros((64, 64), dtype=complex))
