"""Synthetic streams: savings profiles for the simulator and TEM-like images for real runs.

Profiles (no images, instant):

- :func:`paper_profile` (S1): 759 images of ~474 KB, ~0.395 CPU-s each; savings 0-37% per
  image, smooth over the index with sawtooth runs of 60-130 images, ~12.1% in total. Its totals
  are calibrated so that, at 1.90 MB/s, upload-only takes 189.24 s and offline 166.30 s (the
  paper's figures: both follow from the totals alone).
- :func:`heterogeneous_profile` (S2): savings 0-60% (~25% total), sizes varying too.
- :func:`iid_profile` (S3): savings independent of the index (the negative control), with a
  noisy ``hint`` column standing in for a cheap look at the image.

Images: :func:`write_tem_stream` draws a dark honeycomb grid over noisy tissue; the grid, which
touches the border, is what :class:`~.operator.BorderDarkOperator` removes, so its area (the
occluded fraction) drives the saving. ``smooth`` streams vary it smoothly with sawtooth runs;
``iid`` streams draw it independently per image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .simulate import ProfileRow

PAPER_IMAGES = 759
PAPER_TOTAL_BYTES = round(189.24 * 1.90e6)  # upload-only at 1.90 MB/s with the link always busy
PAPER_SAVED_BYTES = round((189.24 - 166.30) * 1.90e6)  # the offline bound's gain
PAPER_CPU_SECONDS = 0.395


def sawtooth_runs(n: int, rng: np.random.Generator, low: int = 60, high: int = 130) -> np.ndarray:
    """Position in [0, 1) within consecutive runs of ``low..high`` images (a ramp per run)."""
    pos = np.empty(n)
    i = 0
    while i < n:
        length = int(rng.integers(low, high + 1))
        run = min(length, n - i)
        pos[i : i + run] = np.arange(run) / length
        i += run
    return pos


def smooth_envelope(
    n: int,
    rng: np.random.Generator,
    peaks: int = 3,
    floor: float = 0.08,
    width: tuple[float, float] = (0.06, 0.14),
) -> np.ndarray:
    """A smooth positive curve over ``0..n-1``: a few Gaussian bumps over a low floor."""
    x = np.arange(n) / n
    centres = (np.arange(peaks) + 0.5 + rng.uniform(-0.25, 0.25, peaks)) / peaks
    widths = rng.uniform(*width, peaks)
    heights = rng.uniform(0.6, 1.0, peaks)
    env = floor + sum(
        h * np.exp(-0.5 * ((x - c) / w) ** 2)
        for c, w, h in zip(centres, widths, heights, strict=True)
    )
    return env / env.max()


def _scale_to_total(frac: np.ndarray, sizes: np.ndarray, total: float, cap: float) -> np.ndarray:
    """Scale saving fractions so that ``sum(frac * sizes) == total`` with ``frac <= cap``."""
    lo, hi = 0.0, 100.0
    for _ in range(100):
        mid = (lo + hi) / 2
        if (np.minimum(frac * mid, cap) * sizes).sum() < total:
            lo = mid
        else:
            hi = mid
    return np.minimum(frac * hi, cap)


def _rows(sizes, frac, cpu, hint=None) -> list[ProfileRow]:
    saved = np.round(frac * sizes).astype(int)
    return [
        ProfileRow(
            i, int(sizes[i]), int(saved[i]), float(cpu[i]), None if hint is None else float(hint[i])
        )
        for i in range(len(sizes))
    ]


def _sizes(n: int, mean: float, spread: float, total: float | None, rng) -> np.ndarray:
    sizes = mean * np.exp(rng.normal(0.0, spread, n))
    if total is not None:
        sizes *= total / sizes.sum()
    return np.round(sizes).astype(int)


def paper_profile(seed: int = 0, n: int = PAPER_IMAGES, saw_depth: float = 0.4) -> list[ProfileRow]:
    """S1: the paper's setup (totals calibrated to 189.24 s / 166.30 s at 1.90 MB/s)."""
    rng = np.random.default_rng(seed)
    total = PAPER_TOTAL_BYTES * n / PAPER_IMAGES
    sizes = _sizes(n, total / n, 0.03, total, rng)
    shape = smooth_envelope(n, rng, peaks=4, floor=0.0, width=(0.03, 0.07)) * (
        1 - saw_depth + saw_depth * sawtooth_runs(n, rng)
    )
    shape += 0.003 + rng.normal(0, 0.004, n).clip(-0.002, None)
    frac = _scale_to_total(shape, sizes, PAPER_SAVED_BYTES * n / PAPER_IMAGES, 0.37)
    cpu = PAPER_CPU_SECONDS * (sizes / sizes.mean()) * rng.normal(1, 0.02, n)
    return _rows(sizes, frac.clip(0.0, 0.37), cpu)


def heterogeneous_profile(
    seed: int = 0, n: int = PAPER_IMAGES, saw_depth: float = 0.5
) -> list[ProfileRow]:
    """S2: savings 0-60% per image (~25% total), smooth with sawtooth runs; sizes vary +-15%."""
    rng = np.random.default_rng(seed + 1000)
    sizes = _sizes(n, 474_000, 0.15, None, rng)
    shape = smooth_envelope(n, rng, peaks=4) * (1 - saw_depth + saw_depth * sawtooth_runs(n, rng))
    shape += rng.normal(0, 0.01, n)
    frac = _scale_to_total(shape.clip(0, None), sizes, 0.25 * sizes.sum(), 0.60)
    cpu = PAPER_CPU_SECONDS * (sizes / 474_000) * rng.normal(1, 0.03, n)
    return _rows(sizes, frac, cpu)


def iid_profile(seed: int = 0, n: int = PAPER_IMAGES, hint_noise: float = 0.05) -> list[ProfileRow]:
    """S3: savings drawn independently per image (0-60%, ~25% total), with a noisy hint.

    The ``hint`` is the saving fraction plus Gaussian noise of ``hint_noise``: what a cheap
    look at the image (the dark border-connected fraction of a thumbnail) might give.
    """
    rng = np.random.default_rng(seed + 2000)
    sizes = _sizes(n, 474_000, 0.05, None, rng)
    frac = rng.beta(1.2, 3.6, n) * 0.6 / 0.6  # mean 0.25
    frac = np.clip(frac, 0.0, 0.60)
    cpu = PAPER_CPU_SECONDS * (sizes / 474_000) * rng.normal(1, 0.03, n)
    hint = frac + rng.normal(0, hint_noise, n)
    return _rows(sizes, frac, cpu, hint)


PROFILES = {
    "paper": paper_profile,
    "heterogeneous": heterogeneous_profile,
    "iid": iid_profile,
}


def make_profile(name: str, seed: int = 0, n: int = PAPER_IMAGES) -> list[ProfileRow]:
    """A synthetic profile by name (``paper``, ``heterogeneous``, ``iid``)."""
    try:
        return PROFILES[name](seed=seed, n=n)
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; known: {sorted(PROFILES)}") from None


# ---------------------------------------------------------------------------- images
def tem_image(occluded: float, rng: np.random.Generator, size: int = 512) -> np.ndarray:
    """A TEM-like greyscale image: noisy tissue seen through a dark honeycomb grid.

    Args:
        occluded: fraction of the image covered by the grid (dark, border-connected), 0..0.9.
        rng: random generator (lattice offset and rotation, textures, noise).
        size: side in pixels.

    Returns:
        A ``size x size`` uint8 array. Grid pixels are noisy values below 30 (what the operator
        clears); tissue is >= 40, with a few small dark specks inside cells that the operator
        must keep (they do not touch the grid).
    """
    from scipy.spatial import cKDTree

    if not 0.0 <= occluded <= 0.9:
        raise ValueError(f"occluded must be in 0..0.9, got {occluded}")
    spacing = size / 4.5
    theta = rng.uniform(0, np.pi / 3)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    m = int(size / spacing) + 4
    ii, jj = np.meshgrid(np.arange(-m, m + 1), np.arange(-m, m + 1))
    lattice = np.stack([ii + 0.5 * jj, jj * np.sqrt(3) / 2], axis=-1).reshape(-1, 2) * spacing
    centres = lattice @ rot.T + size / 2 + rng.uniform(-spacing, spacing, 2)
    yy, xx = np.mgrid[0:size, 0:size]
    pixels = np.stack([yy.ravel(), xx.ravel()], axis=1).astype(float)
    d, _ = cKDTree(centres).query(pixels, k=2)
    edge = (d[:, 1] - d[:, 0]).reshape(size, size)  # 0 on the honeycomb's walls
    grid = edge <= np.quantile(edge, occluded) if occluded > 0 else np.zeros_like(edge, bool)
    # tissue: smooth blobs plus grain, always >= 40
    coarse = rng.normal(0, 1, (size // 32 + 2, size // 32 + 2))
    from PIL import Image

    smooth = np.asarray(
        Image.fromarray(coarse.astype(np.float32), mode="F").resize(
            (size, size), Image.Resampling.BICUBIC
        )
    )
    tissue = 140 + 35 * smooth + rng.normal(0, 18, (size, size))
    img = np.clip(tissue, 40, 255)
    # small dark specks well inside cells (not connected to the grid)
    inner = edge > np.quantile(edge, min(0.95, occluded + 0.3))
    spots = np.flatnonzero(inner.ravel())
    if len(spots):
        for p in rng.choice(spots, size=min(12, len(spots)), replace=False):
            y, x = divmod(int(p), size)
            img[max(0, y - 2) : y + 3, max(0, x - 2) : x + 3] = rng.integers(5, 25)
    img[grid] = rng.integers(0, 29, int(grid.sum()))
    return img.astype(np.uint8)


def occlusion_series(n: int, kind: str = "smooth", seed: int = 0, high: float = 0.6) -> np.ndarray:
    """Occluded fraction per index: ``smooth`` (bumps x sawtooth runs of 60-130) or ``iid``."""
    rng = np.random.default_rng(seed)
    if kind == "iid":
        return rng.uniform(0.0, high, n)
    if kind != "smooth":
        raise ValueError(f"kind must be 'smooth' or 'iid', got {kind!r}")
    shape = smooth_envelope(n, rng, peaks=max(1, n // 200), floor=0.05)
    return high * shape * (0.5 + 0.5 * sawtooth_runs(n, rng))


def write_tem_stream(
    directory: str | Path,
    n: int,
    *,
    kind: str = "smooth",
    size: int = 512,
    seed: int = 0,
    compress_level: int = 6,
) -> list[Path]:
    """Write ``n`` TEM-like PNGs named ``00000.png``... into ``directory``.

    Returns:
        The paths, in index order.
    """
    from PIL import Image

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    occ = occlusion_series(n, kind, seed)
    rng = np.random.default_rng(seed + 1)
    paths = []
    for i, frac in enumerate(occ):
        path = directory / f"{i:05d}.png"
        img = tem_image(float(frac), rng, size)
        Image.fromarray(img, mode="L").save(path, format="PNG", compress_level=compress_level)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    """``python -m simpletasks.tasks.edge.synthetic profile|images ...`` (see ``--help``)."""
    import argparse

    from .simulate import write_profile

    parser = argparse.ArgumentParser(description="Synthetic edge streams: profiles or images.")
    sub = parser.add_subparsers(dest="what", required=True)
    prof = sub.add_parser("profile", help="write a profile CSV")
    prof.add_argument("name", choices=sorted(PROFILES))
    prof.add_argument("out_csv")
    prof.add_argument("--seed", type=int, default=0)
    prof.add_argument("-n", type=int, default=PAPER_IMAGES)
    img = sub.add_parser("images", help="write TEM-like PNGs 00000.png...")
    img.add_argument("directory")
    img.add_argument("n", type=int)
    img.add_argument("--kind", choices=["smooth", "iid"], default="smooth")
    img.add_argument("--size", type=int, default=512)
    img.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.what == "profile":
        write_profile(make_profile(args.name, seed=args.seed, n=args.n), args.out_csv)
    else:
        write_tem_stream(args.directory, args.n, kind=args.kind, size=args.size, seed=args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
