"""Plots (PNG, matplotlib's Agg backend): the paper's Figure 7 and makespan per policy."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .policy import Policy
from .simulate import ProfileRow


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_estimate(
    rows: Sequence[ProfileRow], policy: Policy, path: str | Path, title: str = ""
) -> Path:
    """Figure 7: true score and the final estimate over the index, processed vs not.

    Args:
        rows: the profile (true scores).
        policy: the policy object after a run (its final estimate and states).
        path: PNG to write.
        title: figure title.
    """
    plt = _pyplot()
    n = len(rows)
    true = [r.score / 1e3 for r in rows]
    est = [e / 1e3 for e in policy.estimates()[:n]]
    done = [policy.use_processed(i) for i in range(n)]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    xs_p = [i for i in range(n) if done[i]]
    xs_u = [i for i in range(n) if not done[i]]
    ax.scatter(xs_u, [true[i] for i in xs_u], s=9, marker="x", color="tab:orange",
               label="uploaded unprocessed")  # fmt: skip
    ax.scatter(xs_p, [true[i] for i in xs_p], s=9, color="tab:blue", label="pre-processed")
    ax.plot(range(len(est)), est, color="tab:green", lw=1.2, label="final estimate")
    ax.set_xlabel("arrival index")
    ax.set_ylabel("score (KB saved per CPU-second)")
    ax.set_title(title or f"policy {policy.name}")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_makespans(result: dict, path: str | Path, title: str = "") -> Path:
    """Bar chart of makespan per policy from :func:`.simulate.run_all`, offline as a line.

    Args:
        result: the dict :func:`.simulate.run_all` returns.
        path: PNG to write.
        title: figure title.
    """
    plt = _pyplot()
    names = list(result["policies"])
    spans = [result["policies"][k]["makespan"] for k in names]
    errs = [result["policies"][k].get("makespan_std", 0.0) for k in names]
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.bar(names, spans, yerr=errs, color="tab:blue", capsize=3)
    ax.axhline(result["offline"]["makespan"], color="tab:red", ls="--", label="offline bound")
    low = min([*spans, result["offline"]["makespan"]])
    ax.set_ylim(low * 0.95, max(spans) * 1.01)
    ax.set_ylabel("makespan (s)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
