"""Synthetic fluorescence-like cell images with a controlled defocus.

:func:`cell_image` draws cells (a dim cytoplasm with a soft edge, a brighter nucleus and a few
small bright spots) on a dark background, blurs the scene with a Gaussian of standard
deviation ``defocus`` pixels (0 = in focus), and adds camera noise (shot noise plus a small
read noise) *after* the blur, as a real camera would. With the defaults, PLLS falls from
about -1.1 in focus (score ~0.8, tier A) through -1.2 at ``defocus=1`` and -1.8 at 2 to
about -2.8 at 3 (score ~0.002, tier D), so a series from 0 to 3 spreads over the default
policy's tiers.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Blur ``image`` with a Gaussian of std ``sigma`` pixels (periodic edges, via FFT)."""
    if sigma <= 0:
        return image.astype(np.float64, copy=True)
    h, w = image.shape
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    kernel = np.exp(-2.0 * np.pi**2 * sigma**2 * (fy**2 + fx**2))
    return np.fft.irfft2(np.fft.rfft2(image) * kernel, s=(h, w))


def _scene(
    shape: tuple[int, int], n_cells: int, rng: np.random.Generator, radius: tuple[float, float]
) -> np.ndarray:
    h, w = shape
    scene = np.zeros(shape)
    for _ in range(n_cells):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        r = rng.uniform(*radius)
        aspect, angle = rng.uniform(0.6, 1.0), rng.uniform(0, np.pi)
        r_box = int(r * 1.3) + 3
        y0, y1 = max(0, int(cy) - r_box), min(h, int(cy) + r_box)
        x0, x1 = max(0, int(cx) - r_box), min(w, int(cx) + r_box)
        if y1 <= y0 or x1 <= x0:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1]
        dy, dx = yy - cy, xx - cx
        u = dx * np.cos(angle) + dy * np.sin(angle)
        v = (-dx * np.sin(angle) + dy * np.cos(angle)) / aspect
        d = np.sqrt(u**2 + v**2) / r
        cell = 0.25 / (1 + np.exp((d - 1.0) * 12))  # cytoplasm, soft edge
        cell += 0.55 / (1 + np.exp((d - 0.45) * 20))  # nucleus
        scene[y0:y1, x0:x1] += cell * rng.uniform(0.6, 1.0)
        for _ in range(rng.integers(3, 9)):  # small bright spots
            sy = int(cy + rng.normal(0, r / 3))
            sx = int(cx + rng.normal(0, r / 3))
            if 0 <= sy < h - 1 and 0 <= sx < w - 1:
                scene[sy : sy + 2, sx : sx + 2] += rng.uniform(0.2, 0.5)
    return scene


def cell_image(
    shape: tuple[int, int] = (512, 512),
    *,
    defocus: float = 0.0,
    n_cells: int | None = None,
    seed: int = 0,
    dtype: type = np.uint16,
    photons: float = 2000.0,
    read_noise: float = 2.0,
    background: float = 0.04,
    cell_radius: tuple[float, float] = (8.0, 15.0),
) -> np.ndarray:
    """Return one synthetic fluorescence image.

    Args:
        shape: ``(height, width)``.
        defocus: Gaussian blur std in pixels (0 = in focus).
        n_cells: Cells to draw (default: about one per 5,000 pixels).
        seed: Seed of the scene and the noise (same seed, same cells at any defocus).
        dtype: ``np.uint8`` or ``np.uint16`` (full range used up to saturation).
        photons: Photons at intensity 1.0 (shot noise; lower = noisier).
        read_noise: Camera read noise in photons.
        background: Background level (fraction of full scale).
        cell_radius: Range of the cells' radii in pixels.
    """
    rng = np.random.default_rng(seed)
    h, w = shape
    n = n_cells if n_cells is not None else max(1, (h * w) // 5000)
    texture = gaussian_blur(rng.standard_normal(shape), 0.8)
    texture /= texture.std()
    scene = background + _scene(shape, n, rng, cell_radius) * np.clip(1 + texture, 0, None)
    blurred = gaussian_blur(scene, defocus)
    noise_rng = np.random.default_rng(seed + 1_000_003)
    counts = noise_rng.poisson(np.clip(blurred, 0, None) * photons).astype(np.float64)
    counts += noise_rng.normal(0, read_noise, size=shape)
    top = float(np.iinfo(dtype).max)
    return np.clip(np.round(counts / photons * top * 0.8), 0, top).astype(dtype)


def defocus_series(
    n: int,
    *,
    max_defocus: float = 3.0,
    shape: tuple[int, int] = (256, 256),
    seed: int = 0,
    dtype: type = np.uint16,
) -> list[tuple[float, np.ndarray]]:
    """Return ``n`` images ``(defocus, pixels)`` with defocus evenly from 0 to ``max_defocus``.

    Each image has its own scene (seed ``seed + i``).
    """
    sigmas: Sequence[float] = list(np.linspace(0.0, max_defocus, n)) if n > 1 else [0.0]
    return [
        (float(s), cell_image(shape, defocus=float(s), seed=seed + i, dtype=dtype))
        for i, s in enumerate(sigmas)
    ]


def encode_image(pixels: np.ndarray, fmt: str = "png") -> bytes:
    """Encode pixels as ``png`` (8/16-bit), ``tiff`` or ``jpeg`` (8-bit) bytes."""
    buf = io.BytesIO()
    if fmt == "tiff":
        import tifffile

        tifffile.imwrite(buf, pixels)
    else:
        from PIL import Image

        if fmt == "jpeg" and pixels.dtype != np.uint8:
            pixels = (pixels >> 8).astype(np.uint8) if pixels.dtype == np.uint16 else pixels
        Image.fromarray(pixels).save(buf, format={"png": "PNG", "jpeg": "JPEG"}[fmt])
    return buf.getvalue()


def write_image(path: Path, pixels: np.ndarray, fmt: str | None = None) -> Path:
    """Write ``pixels`` to ``path`` (format from ``fmt`` or the suffix); return ``path``."""
    fmt = fmt or {".tif": "tiff", ".tiff": "tiff", ".jpg": "jpeg", ".jpeg": "jpeg"}.get(
        Path(path).suffix.lower(), "png"
    )
    Path(path).write_bytes(encode_image(pixels, fmt))
    return Path(path)


__all__ = ["cell_image", "defocus_series", "encode_image", "gaussian_blur", "write_image"]
