"""Power log-log slope (PLLS): the focus measure of CellProfiler's MeasureImageQuality.

:func:`power_log_log_slope` gives the same number as CellProfiler 3.1.8's
``PowerLogLogSlope`` (and ``cellprofiler_library``'s ``get_power_spectrum_measurement_values``,
which calls ``centrosome``/``centriole``'s ``rps``), to about 1e-12, several times faster.
The definition, quirks included:

1. ``I`` as float. CellProfiler divides ``I`` by ``median(|I - mean I|)`` when ``max > min``;
   PLLS is a slope of log power, so any positive scale (and any offset) leaves it unchanged.
2. ``P = |FFT2(I - mean I)|**2``: unnormalised, no window, no padding.
3. Each pixel ``(i, j)`` of the (unshifted) spectrum gets the radial label
   ``floor(sqrt(fy**2 + fx**2)) + 1`` with the *folded* indices ``fy = min(i, H-1-i)`` and
   ``fx = min(j, W-1-j)``. The ``-1`` is CellProfiler's: it is not the true frequency
   ``min(i, H-i)``, and using the true one moves PLLS by up to ~0.085.
4. Labels ``2 .. floor(min(H, W) / 8) - 1`` are kept; ``P`` and ``|FFT|`` are *summed* (not
   averaged) per label.
5. If the magnitude sums are not all zero and the image has more than one distinct value:
   keep the labels whose magnitude sum is > 0 and whose log power sum is finite; PLLS is the
   slope of the least-squares line of ``log(power sum)`` on ``log(label)``. Otherwise (also
   with fewer than 2 labels, i.e. ``min(H, W) < 32``) PLLS is 0. CellProfiler also gives 0
   when more than half of the pixels equal the mean exactly (its median is then 0 and the
   division yields NaN); so do we.

White noise gives about +1, sharp cell images about -1, blurred ones -2 to -3.

How it is faster, with the same arithmetic: the labels depend on the shape only, so the
pixels that fall in a kept label (a disc of radius ``min(H, W)/8`` at each corner of the
spectrum) are found once per shape and cached; the spectrum of a real image is Hermitian, so
only the half from a real FFT is computed, and only its columns that hold kept pixels (the
row transforms are done in full, the column transforms only for those columns); each kept
pixel of the other half is its mirror's value with the mirror's label; the sums are two
``bincount`` calls. The median and ``unique`` of the reference are replaced by the
equivalent tests that are cheap (see step 1 and 5).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

#: Below this short side CellProfiler keeps fewer than 2 labels and PLLS is always 0.
MIN_SIDE = 32


@dataclass(frozen=True)
class _Plan:
    """Which half-spectrum pixels fall in a kept label, and their labels, for one shape."""

    n_labels: int  # labels 0 .. n_labels-1 exist in the bincount; kept ones are 2 .. n-1
    columns: int  # half-spectrum columns needed: 0 .. columns-1
    index: np.ndarray  # flat indices into the (H, columns) half spectrum (pixel, then mirror)
    labels: np.ndarray  # the label of each entry of index


def _folded(n: int) -> np.ndarray:
    i = np.arange(n)
    return np.minimum(i, n - 1 - i)


@lru_cache(maxsize=16)
def _plan(height: int, width: int) -> _Plan | None:
    n_labels = int(np.floor(min(height, width) / 8.0))  # labels 2 .. n_labels - 1 are kept
    if n_labels <= 2:
        return None
    half = width // 2 + 1
    fy, fx = _folded(height), _folded(width)
    rows = np.arange(height)
    cols = np.arange(half)

    def labels_of(r: np.ndarray, c: np.ndarray) -> np.ndarray:
        r2 = fy[r][:, None].astype(np.int64) ** 2 + fx[c][None, :].astype(np.int64) ** 2
        return (np.floor(np.sqrt(r2)).astype(np.int64) + 1).ravel()

    # The pixel (i, j) of the half spectrum, with its own label...
    own = labels_of(rows, cols)
    src = np.arange(height * half).reshape(height, half)
    # ...and, for 1 <= j <= (W-1)//2, the full-spectrum pixel (-i mod H, W-j) it mirrors.
    m = (width - 1) // 2
    mirror = labels_of((-rows) % height, width - np.arange(1, m + 1))
    mirror_src = src[:, 1 : m + 1].ravel()
    labels = np.concatenate([own, mirror])
    index = np.concatenate([src.ravel(), mirror_src])
    keep = (labels >= 2) & (labels < n_labels)
    index, labels = index[keep], labels[keep]
    columns = int((index % half).max()) + 1
    rows_of, cols_of = np.divmod(index, half)
    index = rows_of * columns + cols_of  # re-index into the (H, columns) array
    for arr in (index, labels):
        arr.setflags(write=False)
    return _Plan(n_labels=n_labels, columns=columns, index=index, labels=labels)


_plan_lock = threading.Lock()


def _get_plan(shape: tuple[int, int]) -> _Plan | None:
    with _plan_lock:  # build each shape's plan once, even with many worker threads
        return _plan(*shape)


def radial_power_sums(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(labels, magnitude sums, power sums)`` as CellProfiler's ``rps`` does.

    The sums are of the image's spectrum *without* CellProfiler's median scaling (a positive
    factor ``1/m`` scales the magnitude sums by ``1/m`` and the power sums by ``1/m**2``).

    Args:
        image: A 2-D array (any real dtype).

    Returns:
        ``labels`` 2 .. floor(min(H, W)/8) - 1 and the sums per label (empty arrays when no
        label is kept).
    """
    img = _as_float_2d(image)
    plan = _get_plan(img.shape)
    if plan is None:
        empty = np.zeros(0)
        return np.zeros(0, dtype=np.int64), empty, empty
    magsum, powersum = _sums(img, img.mean(), plan)
    return np.arange(2, plan.n_labels), magsum, powersum


def _sums(img: np.ndarray, mean: float, plan: _Plan) -> tuple[np.ndarray, np.ndarray]:
    half = np.fft.rfft(img - mean, axis=1)[:, : plan.columns]
    spectrum = np.fft.fft(half, axis=0)
    mag = np.abs(spectrum.ravel()[plan.index])
    magsum = np.bincount(plan.labels, weights=mag, minlength=plan.n_labels)[2:]
    powersum = np.bincount(plan.labels, weights=mag * mag, minlength=plan.n_labels)[2:]
    return magsum, powersum


def _as_float_2d(image: np.ndarray) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim != 2:
        raise ValueError(f"PLLS needs a 2-D image, got an array of shape {arr.shape}")
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"PLLS needs a real-valued image, got dtype {arr.dtype}")
    return arr.astype(np.float64, copy=False)


def power_log_log_slope(image: np.ndarray) -> float:
    """Return the power log-log slope (PLLS) of a 2-D image, as CellProfiler computes it.

    See the module docstring for the definition and its quirks. The result does not depend on
    the image's intensity scale or offset, so raw integer pixels and CellProfiler's [0, 1]
    scaling (:func:`simpletasks.tasks.tiering.images.to_unit_float`) give the same value.

    Args:
        image: A 2-D array of real numbers (integers, bools or floats).

    Returns:
        The slope; 0.0 for constant images, images whose short side is under 32 pixels, and
        the other cases where CellProfiler returns 0.

    Raises:
        ValueError: If ``image`` is not 2-D or not real-valued.
    """
    img = _as_float_2d(image)
    plan = _get_plan(img.shape) if img.size else None
    if plan is None:
        return 0.0
    if not img.max() > img.min():  # constant (CellProfiler: len(unique) == 1), or NaN present
        return 0.0
    mean = img.mean()
    # CellProfiler divides by median(|I - mean|): 0 when more than half the pixels equal the
    # mean exactly, and then every value is NaN and PLLS is 0.
    if 2 * np.count_nonzero(img == mean) > img.size:
        return 0.0
    magsum, powersum = _sums(img, mean, plan)
    labels = np.arange(2, plan.n_labels)
    if not magsum.sum() > 0:
        return 0.0
    valid = magsum > 0
    radii, power = labels[valid], powersum[valid]
    if radii.shape[0] <= 1:
        return 0.0
    with np.errstate(divide="ignore"):
        logp = np.log(power)
    finite = np.isfinite(logp)
    x, y = np.log(radii[finite].astype(np.float64)), logp[finite]
    if x.shape[0] < 2:
        return 0.0  # CellProfiler's lstsq would return a minimum-norm answer; unreachable
    a = np.column_stack([x, np.ones_like(x)])
    slope = np.linalg.lstsq(a, y, rcond=None)[0][0]
    return float(slope)


def reference_plls(image: np.ndarray) -> float:
    """CellProfiler's computation, step for step in numpy (slow; for tests and comparison).

    A transcription of ``centrosome.radial_power_spectrum.rps`` and MeasureImageQuality's
    slope fit, with ``numpy.fft.fft2`` for ``scipy.fftpack.fft2`` and ``numpy.bincount``
    for ``scipy.ndimage.sum`` (which is a bincount).
    """
    img = np.asarray(image, dtype=np.float64)
    radii2 = np.arange(img.shape[0]).reshape((img.shape[0], 1)) ** 2 + np.arange(img.shape[1]) ** 2
    radii2 = np.minimum(radii2, np.flipud(radii2))
    radii2 = np.minimum(radii2, np.fliplr(radii2))
    maxwidth = min(img.shape[0], img.shape[1]) / 8.0
    work = img
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if np.ptp(work) > 0:
            work = work / np.median(abs(work - work.mean()))
        mag = abs(np.fft.fft2(work - np.mean(work)))
        power = mag**2
    radii = np.floor(np.sqrt(radii2)).astype(int) + 1
    labels = np.arange(2, np.floor(maxwidth)).astype(int)
    if len(labels) == 0:
        return 0.0
    n = int(labels[-1]) + 1
    magsum = np.bincount(radii.ravel(), mag.ravel(), minlength=n)[labels]
    powersum = np.bincount(radii.ravel(), power.ravel(), minlength=n)[labels]
    if not (sum(magsum) > 0 and len(np.unique(img)) > 1):
        return 0.0
    valid = magsum > 0
    r, p = labels[valid], powersum[valid]
    if r.shape[0] <= 1:
        return 0.0
    with np.errstate(divide="ignore"):
        idx = np.isfinite(np.log(p))
    a = np.column_stack([np.log(r)[idx], np.ones(r.shape)[idx]])
    return float(np.linalg.lstsq(a, np.log(p)[idx], rcond=None)[0][0])


__all__ = ["MIN_SIDE", "power_log_log_slope", "radial_power_sums", "reference_plls"]
