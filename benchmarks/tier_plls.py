"""PLLS: our power_log_log_slope against CellProfiler's own function, same images, same run.

The reference is ``get_power_spectrum_measurement_values`` (module
``cellprofiler_library.functions.measurement``) from the PyPI package
``cellprofiler-library-nightly``. It pins numpy < 2, so it runs in a separate virtual
environment (created on first use under ``~/.cache/simpletasks-bench/cpvenv``, reused
afterwards) in a subprocess, which reads the images from ``.npy`` files written from the
arrays our side uses. Both sides get them scaled to [0, 1] by dtype, as CellProfiler loads
them. Each image is timed ``--repeat`` times on each side (median kept);
our side's first call on a new shape (which builds and caches the label plan) is reported
separately as ``ours_cold_s``. The two sides alternate call by call (the reference stays
running in its subprocess), so both see the same load on a shared machine.

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
import json, sys, time
import numpy as np
from cellprofiler_library.functions.measurement import get_power_spectrum_measurement_values
print(json.dumps({"numpy": np.__version__}), flush=True)
for line in sys.stdin:  # one .npy path per line; answers value and seconds of one call
    raw = np.load(line.strip())
    img = raw.astype(np.float64) / np.iinfo(raw.dtype).max if raw.dtype.kind == "u" else raw
    t = time.perf_counter()
    value = float(np.ravel(get_power_spectrum_measurement_values(img))[0])
    seconds = time.perf_counter() - t
    print(json.dumps({"value": value, "seconds": seconds}), flush=True)
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


def time_ours_cold(img: np.ndarray) -> tuple[float, float]:
    """Return (value, seconds) of a first call on this shape (label plan built and cached)."""
    from simpletasks.tasks.tiering import plls

    plls._plan.cache_clear()
    t = time.perf_counter()
    value = power_log_log_slope(img)
    return value, time.perf_counter() - t


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
        logger.info("CellProfiler and ours, alternating, %d repeats", args.repeat)
        ref_proc = subprocess.Popen(
            [str(python), "-c", REFERENCE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert ref_proc.stdin is not None and ref_proc.stdout is not None
        ref_numpy = json.loads(ref_proc.stdout.readline())["numpy"]

        def reference(path: str) -> dict[str, float]:
            ref_proc.stdin.write(path + "\n")  # type: ignore[union-attr]
            ref_proc.stdin.flush()  # type: ignore[union-attr]
            return json.loads(ref_proc.stdout.readline())  # type: ignore[union-attr]

        per_image = {}
        try:
            for name, img in imgs.items():
                unit = to_unit_float(img)
                value, cold = time_ours_cold(unit)
                ref_times, our_times, ref_value = [], [], None
                for _ in range(args.repeat):  # alternate, so both see the same machine load
                    r = reference(paths[name])
                    ref_value = r["value"]
                    ref_times.append(r["seconds"])
                    t = time.perf_counter()
                    power_log_log_slope(unit)
                    our_times.append(time.perf_counter() - t)
                ref_s, our_s = statistics.median(ref_times), statistics.median(our_times)
                per_image[name] = {
                    "shape": list(img.shape),
                    "dtype": str(img.dtype),
                    "reference": ref_value,
                    "ours": value,
                    "abs_diff": abs(value - ref_value),
                    "reference_s": round(ref_s, 4),
                    "ours_s": round(our_s, 4),
                    "ours_cold_s": round(cold, 4),
                    "speedup": round(ref_s / our_s, 2),
                }
        finally:
            ref_proc.stdin.close()
            ref_proc.wait(timeout=60)
    big = [v for k, v in per_image.items() if k.startswith(("cells_2160", "noise_2160"))]
    result = {
        "benchmark": "tier_plls",
        "machine": machine_info(),
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "versions": {
            **versions("numpy", "simpletasks"),
            "reference_numpy": ref_numpy,
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
