"""Reports from the features database: the paper's Table 2 and Figure 3.

:func:`tier_table` counts images and megabytes (10^6 bytes) per tier; :func:`format_table`
prints it, :func:`write_csv`/:func:`write_json` export it, and :func:`plot_histograms` draws
the histograms of the scored feature and of the score with the tier boundaries marked
(matplotlib, Agg backend; no display needed).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from simpletasks.tasks.tiering.policy import TierPolicy


@dataclass(frozen=True)
class TierRow:
    """One line of Table 2."""

    tier: str
    images: int
    megabytes: float


def tier_table(
    rows: Iterable[Mapping[str, Any]], policy: TierPolicy | None = None
) -> list[TierRow]:
    """Count images and MB per tier: the policy's tiers from the top down, then any others."""
    images: dict[str, int] = {}
    sizes: dict[str, int] = {}
    for row in rows:
        tier = str(row["tier"])
        images[tier] = images.get(tier, 0) + 1
        sizes[tier] = sizes.get(tier, 0) + int(row["size_bytes"])
    order = list(reversed(policy.tiers)) if policy else []
    order += sorted(t for t in images if t not in order)
    return [TierRow(t, images.get(t, 0), sizes.get(t, 0) / 1e6) for t in order]


def format_table(table: Sequence[TierRow]) -> str:
    """Return Table 2 as aligned text with a total line."""
    lines = [f"{'tier':<10} {'images':>8} {'MB':>12}"]
    for r in table:
        lines.append(f"{r.tier:<10} {r.images:>8} {r.megabytes:>12,.1f}")
    total_images = sum(r.images for r in table)
    total_mb = sum(r.megabytes for r in table)
    lines.append(f"{'total':<10} {total_images:>8} {total_mb:>12,.1f}")
    return "\n".join(lines)


def write_csv(table: Sequence[TierRow], path: Path) -> None:
    """Write Table 2 as CSV (``tier,images,megabytes``)."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["tier", "images", "megabytes"])
        for r in table:
            writer.writerow([r.tier, r.images, f"{r.megabytes:.6f}"])


def write_json(table: Sequence[TierRow], path: Path) -> None:
    """Write Table 2 as a JSON list of ``{tier, images, megabytes}``."""
    path.write_text(json.dumps([asdict(r) for r in table], indent=2) + "\n")


def feature_boundary(score: float, k: float, x0: float) -> float | None:
    """The feature value where the logistic score equals ``score`` (None at 0 or 1)."""
    if not 0.0 < score < 1.0:
        return None
    return x0 - math.log(1.0 / score - 1.0) / k


def plot_histograms(
    rows: Sequence[Mapping[str, Any]],
    path: Path,
    *,
    policy: TierPolicy,
    feature: str = "plls",
    k: float | None = 4.5,
    x0: float | None = -1.4,
    bins: int = 40,
) -> Path:
    """Write a PNG with histograms of ``feature`` and of the score, tier boundaries marked.

    Args:
        rows: Database rows (``features`` dict and ``score`` per row).
        path: Where the PNG goes.
        policy: Its boundaries are drawn on the score histogram.
        feature: The feature to histogram.
        k: Logistic slope, to draw the boundaries on the feature axis too (None: don't).
        x0: Logistic midpoint.
        bins: Histogram bins.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = [float(r["features"][feature]) for r in rows if feature in (r["features"] or {})]
    scores = [float(r["score"]) for r in rows]
    fig, (ax_f, ax_s) = plt.subplots(1, 2, figsize=(10, 4))
    ax_f.hist(values, bins=bins, color="#4878a8")
    ax_f.set_xlabel(feature.upper() if feature == "plls" else feature)
    ax_f.set_ylabel("images")
    ax_f.set_title(f"{ax_f.get_xlabel()} ({len(values)} images)")
    ax_s.hist(scores, bins=bins, range=(0, 1), color="#6a9f58")
    ax_s.set_xlabel("interestingness score")
    ax_s.set_title("score, with tier boundaries")
    for b in policy.boundaries:
        ax_s.axvline(b, color="#b03030", linestyle="--", linewidth=1)
        if k is not None and x0 is not None and (fb := feature_boundary(b, k, x0)) is not None:
            ax_f.axvline(fb, color="#b03030", linestyle="--", linewidth=1)
    top = ax_s.get_ylim()[1]
    for iv in policy.intervals:
        ax_s.text((iv.lo + iv.hi) / 2, top * 0.95, iv.tier, ha="center", va="top", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


__all__ = [
    "TierRow",
    "feature_boundary",
    "format_table",
    "plot_histograms",
    "tier_table",
    "write_csv",
    "write_json",
]
