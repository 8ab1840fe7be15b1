"""PLLS: our power_log_log_slope against CellProfiler's own function, same images, same run.

The reference is ``get_power_spectrum_measurement_values`` (``cellprofiler_library.functions.
measurement``)
from the PyPI package ``cellprofiler-library-nightly``. It pins numpy < 2, so it runs in a
separate virtual environment (created on first use under
``~/.cache/simpletasks-bench/cpvenv``, reused afterwards) through a subprocess. Both sides
read the same images from ``.npy`` files and get them scaled to [0, 1] by dtype, as
CellProfiler loads them. Each image is timed ``--repeat`` times on each side (median kept);
our side's first call on a new shape (which builds and caches the label plan) is reported
separately as ``ours_cold_s``.

    python benchmarks/tier_plls.py [--repeat 3] [--venv DIR] [--output FILE]

Prints JSON: per image the two values, their difference and both times; overall the max
absolute difference and the speed ratio (reference time / ours) on the 2160x2160 16-bit
images and over all images.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import emit, machine_info, setup_logging, versions

from simpletasks.tasks.tiering.images import to_unit_float
from simpletasks.tasks.tiering.plls import power_log_log_slope
from simpletasks.tasks.tiering.synthetic import cell_image

logger = logging.getLogger("benchmarks.tier_plls")

DEFAULT_VENV = Path("~/.cache/simpletasks-bench/cpvenv").expanduser()
PACKAGE = "cellprofiler-library-nightly"

REFERENCE = r"""
import json, sys, time, statistics
import numpy as np
from cellprofiler_library.functions.measurement import get_power_spectrum_measurement_values
repeat = int(sys.argv[1]); out = {}
for path in sys.argv[2:]:
    raw = np.load(path)
    img = raw.astype(np.float64) / np.iinfo(raw.dtype).max if raw.dtype.kind == "u" else raw
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        value = float(np.ravel(get_power_spectrum_measurement_values(img))[0])
        times.append(time.perf_counter() - t)
    out[path] = {"value": value, "seconds": statistics.median(times)}
print(json.dumps({"numpy": np.__version__, "results": out}))
"""


def ensure_venv(venv: Path) -> Path:
    """Return the venv's python, creating the venv with CellProfiler's library if missing."""
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import cellprofiler_library.functions.measurement"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    logger.info("creating %s with %s (once; a few minutes)", venv, PACKAGE)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", PACKAGE], check=True)
    return python


def images() -> dict[str, np.ndarray]:
    """The benchmark images: several sizes and dtypes, sharp and defocused."""
    logger.info("generating images")
    return {
        "cells_512_u8_sharp": cell_image((512, 512), defocus=0, seed=1, dtype=np.uint8),
        "cells_1024_u16_blur2": cell_image((1024, 1024), defocus=2, seed=2),
        "cells_1080x1920_u16_blur1": cell_image((1080, 1920), defocus=1, seed=3),
        "cells_2160_u16_sharp": cell_image((2160, 2160), defocus=0, seed=4),
        "cells_2160_u16_blur3": cell_image((2160, 2160), defocus=3, seed=5),
        "noise_2160_u16": np.random.default_rng(6).integers(0, 65536, (2160, 2160), np.uint16),
    }


def time_ours(img: np.ndarray, repeat: int) -> tuple[float, float, float]:
    """Return (value, cold seconds, median warm seconds)."""
    from simpletasks.tasks.tiering import plls

    plls._plan.cache_clear()
    t = time.perf_counter()
    value = power_log_log_slope(img)
    cold = time.perf_counter() - t
    warm = []
    for _ in range(repeat):
        t = time.perf_counter()
        power_log_log_slope(img)
        warm.append(time.perf_counter() - t)
    return value, cold, statistics.median(warm)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV)
    parser.add_argument("--output")
    args = parser.parse_args()
    setup_logging()
    python = ensure_venv(args.venv)
    imgs = images()
    with tempfile.TemporaryDirectory(prefix="tier-plls-") as tmp:
        paths = {}
        for name, img in imgs.items():
            paths[name] = os.path.join(tmp, f"{name}.npy")
            np.save(paths[name], img)
        logger.info("reference (CellProfiler) on %d images, %d repeats", len(imgs), args.repeat)
        ref_run = subprocess.run(
            [str(python), "-c", REFERENCE, str(args.repeat), *paths.values()],
            check=True,
            capture_output=True,
            text=True,
        )
        ref = json.loads(ref_run.stdout)
    logger.info("ours on the same images")
    per_image = {}
    for name, img in imgs.items():
        unit = to_unit_float(img)
        value, cold, warm = time_ours(unit, args.repeat)
        r = ref["results"][paths[name]]
        per_image[name] = {
            "shape": list(img.shape),
            "dtype": str(img.dtype),
            "reference": r["value"],
            "ours": value,
            "abs_diff": abs(value - r["value"]),
            "reference_s": round(r["seconds"], 4),
            "ours_s": round(warm, 4),
            "ours_cold_s": round(cold, 4),
            "speedup": round(r["seconds"] / warm, 2),
        }
    big = [v for k, v in per_image.items() if k.startswith(("cells_2160", "noise_2160"))]
    result = {
        "benchmark": "tier_plls",
        "machine": machine_info(),
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "versions": {
            **versions("numpy", "simpletasks"),
            "reference_numpy": ref["numpy"],
            "reference": PACKAGE,
        },
        "repeat": args.repeat,
        "max_abs_diff": max(v["abs_diff"] for v in per_image.values()),
        "agree_1e-9": all(v["abs_diff"] <= 1e-9 for v in per_image.values()),
        "speedup_2160_u16": round(
            statistics.mean(v["reference_s"] for v in big)
            / statistics.mean(v["ours_s"] for v in big),
            2,
        ),
        "reference_2160_s": round(statistics.mean(v["reference_s"] for v in big), 4),
        "ours_2160_s": round(statistics.mean(v["ours_s"] for v in big), 4),
        "min_speedup": min(v["speedup"] for v in per_image.values()),
        "images": per_image,
    }
    emit(result, args.output)


if __name__ == "__main__":
    main()
