"""Edge policy in the simulator: the paper's setup and the scenario matrix of HASTE.md.

Every figure comes from :mod:`simpletasks.tasks.edge.simulate` driving the same policy objects
the agent uses, on synthetic profiles (:mod:`simpletasks.tasks.edge.synthetic`):

- **S1 paper**: 759 images at 20 Hz, ~474 KB, ~0.395 CPU-s, 1.90 MB/s, 1 core; compared with
  the paper's upload-only 189.24 s, splines 170.48 s, random 175.09 s and offline 166.30 s
  (ratios; target: each within 2%).
- **S2 smooth matrix**: the paper-like profile and the heterogeneous one (0-60%, ~25%), each
  with ``--profile-seeds`` different random shapes, x {1, 2} cores x {1.90, 3.125} MB/s: each
  policy's fraction of the oracle's gain over upload-only (target for ``splines``: >= 0.99;
  the published rules are the comparison).
- **S3 i.i.d. control**: savings independent of the index, with a noisy hint column: every
  policy's makespan / natural's (target for ``splines``: <= 1.01) and ``content``'s fraction
  of the oracle's gain.
- **S4 CPU-rich**: the paper profile with 4 cores: every policy's makespan / offline.
- **S5 images** (``--images N``): TEM-like PNGs (smooth and i.i.d.) generated, profiled by
  running the operator and the hint on this machine, then simulated (1 core, CPU-poor links).

Usage::

    python benchmarks/edge_simulate.py                   # ~2-4 min on 2 shared vCPUs
    python benchmarks/edge_simulate.py --quick           # 1 profile seed, 2 policy seeds
    python benchmarks/edge_simulate.py --s2-only --first-profile-seed 10 --profile-seeds 5
                                                         # S2 only, on other profile shapes
    python benchmarks/edge_simulate.py --plots docs/     # also Figure 7 and makespan PNGs
    python benchmarks/edge_simulate.py --images 300      # also S5: profiles measured on PNGs
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit, machine_info, setup_logging

from simpletasks.tasks.edge.policy import make_policy
from simpletasks.tasks.edge.simulate import run_all, run_simulation, simulate_once
from simpletasks.tasks.edge.synthetic import make_profile

logger = logging.getLogger("benchmarks.edge_simulate")

PAPER = {"upload-only": 189.24, "splines": 170.48, "random": 175.09, "offline": 166.30}
PUBLISHED = ("splines-random", "splines-block")


def s1_paper(seeds: int) -> dict:
    res = run_all(make_profile("paper"), bandwidth_mbps=1.90, cores=1, seeds=seeds)
    add_variant(res, make_profile("paper"), NO_END_GAME, bandwidth_mbps=1.90, cores=1)
    pols = res["policies"]
    ours = {
        "upload-only": pols["upload-only"]["makespan"],
        "splines": pols["splines"]["makespan"],
        NO_END_GAME: pols[NO_END_GAME]["makespan"],
        "splines-random (the paper's rule)": pols["splines-random"]["makespan"],
        "random": pols["random"]["makespan"],
        "offline": res["offline"]["makespan"],
    }
    paper_of = {k: PAPER[k.split(" ")[0].replace("splines-random", "splines")] for k in ours}
    return {
        "makespan": {k: round(v, 2) for k, v in ours.items()},
        "paper": paper_of,
        "ratio_to_paper": {k: round(v / paper_of[k], 4) for k, v in ours.items()},
        "within_2pct": {k: abs(v / paper_of[k] - 1) <= 0.02 for k, v in ours.items()},
        "oracle_gain_fraction": {k: round(v["oracle_gain_fraction"], 4) for k, v in pols.items()},
        "images_processed": {k: v["images_processed"] for k, v in pols.items()},
        "full": res,
    }


NO_END_GAME = "splines (no end game: the rule before 2026-12-02)"


def add_variant(res: dict, profile, label: str, **common) -> None:
    """Add ``splines`` with ``end_game=False`` to a :func:`run_all` result, as ``label``.

    Measured in the same run, against the same upload-only and oracle makespans, so the
    change of the rule shows as a before/after pair (``splines`` is deterministic).
    """
    one = run_simulation(profile, policy="splines", end_game=False, **common)
    pols = res["policies"]
    base = pols["upload-only"]["makespan"]
    gain = base - pols["oracle"]["makespan"]
    one["oracle_gain_fraction"] = (base - one["makespan"]) / gain if gain > 0 else None
    pols[label] = one


def s2_matrix(profile_seeds: int, seeds: int, first: int = 0) -> dict:
    rows = []
    for prof in ("paper", "heterogeneous"):
        for ps in range(first, first + profile_seeds):
            profile = make_profile(prof, seed=ps)
            for cores in (1, 2):
                for bw in (1.90, 3.125):
                    res = run_all(profile, bandwidth_mbps=bw, cores=cores, seeds=seeds)
                    add_variant(res, profile, NO_END_GAME, bandwidth_mbps=bw, cores=cores)
                    fr = {k: v["oracle_gain_fraction"] for k, v in res["policies"].items()}
                    rows.append(
                        {
                            "profile": prof,
                            "profile_seed": ps,
                            "cores": cores,
                            "bandwidth_mbps": bw,
                            "oracle_gain_fraction": {k: round(v, 4) for k, v in fr.items()},
                            "makespan": {
                                k: round(v["makespan"], 2) for k, v in res["policies"].items()
                            },
                            "offline": round(res["offline"]["makespan"], 2),
                        }
                    )
                    logger.info(
                        "%s ps%d c%d %.3f MB/s: splines %.4f, published worst %.4f",
                        prof, ps, cores, bw, fr["splines"], min(fr[p] for p in PUBLISHED),
                    )  # fmt: skip
    names = list(rows[0]["oracle_gain_fraction"])
    summary = {}
    for name in names:
        vals = [r["oracle_gain_fraction"][name] for r in rows]
        summary[name] = {
            "mean": round(statistics.mean(vals), 4),
            "worst": round(min(vals), 4),
            "scenarios_at_or_above_0.99": sum(v >= 0.99 for v in vals),
        }
    ours, pub = summary["splines"], min(summary[p]["worst"] for p in PUBLISHED)
    return {
        "scenarios": len(rows),
        "summary": summary,
        "splines_worst_over_published_worst": round(ours["worst"] / pub, 4),
        "target_splines_worst_ge_0.99": ours["worst"] >= 0.99,
        "rows": rows,
    }


def s3_iid(profile_seeds: int, seeds: int) -> dict:
    rows = []
    for ps in range(profile_seeds):
        profile = make_profile("iid", seed=ps)
        for cores in (1, 2):
            for bw in (1.90, 3.125):
                res = run_all(profile, bandwidth_mbps=bw, cores=cores, seeds=seeds)
                add_variant(res, profile, NO_END_GAME, bandwidth_mbps=bw, cores=cores)
                pols = res["policies"]
                nat = pols["natural"]["makespan"]
                rows.append(
                    {
                        "profile_seed": ps,
                        "cores": cores,
                        "bandwidth_mbps": bw,
                        "makespan_over_natural": {
                            k: round(v["makespan"] / nat, 4) for k, v in pols.items()
                        },
                        "oracle_gain_fraction": {
                            k: round(v["oracle_gain_fraction"], 4) for k, v in pols.items()
                        },
                    }
                )
    worst = max(r["makespan_over_natural"]["splines"] for r in rows)
    worst_before = max(r["makespan_over_natural"][NO_END_GAME] for r in rows)
    content = [r["oracle_gain_fraction"]["content"] for r in rows]
    natural = [r["oracle_gain_fraction"]["natural"] for r in rows]
    return {
        "splines_over_natural_worst": worst,
        "target_splines_within_1pct_of_natural": worst <= 1.01,
        "splines_no_end_game_over_natural_worst": worst_before,
        "content_oracle_gain_fraction": {
            "mean": round(statistics.mean(content), 4),
            "worst": round(min(content), 4),
        },
        "natural_oracle_gain_fraction_mean": round(statistics.mean(natural), 4),
        "rows": rows,
    }


def s4_cpu_rich(seeds: int) -> dict:
    res = run_all(make_profile("paper"), bandwidth_mbps=1.90, cores=4, seeds=seeds)
    add_variant(res, make_profile("paper"), NO_END_GAME, bandwidth_mbps=1.90, cores=4)
    off = res["offline"]["makespan"]
    ratios = {k: round(v["makespan"] / off, 4) for k, v in res["policies"].items()}
    # random uploads a uniformly random waiting file, raw ones included, so it cannot reach the
    # bound while the CPU has a backlog; every prioritising policy should
    worst = max(v for k, v in ratios.items() if k not in ("upload-only", "random"))
    return {
        "offline": round(off, 2),
        "makespan_over_offline": ratios,
        "target_prioritising_within_1pct_of_offline": worst <= 1.01,
    }


def s5_images(n: int, size: int) -> dict:
    """Profiles measured from generated TEM-like PNGs (operator run and timed on this machine).

    The link is set so that one core can process ``cpu_share`` of the files (0.35 and 0.6:
    CPU-poor like S2's 1 core at 3.125 and 1.90 MB/s) and arrivals run 5x faster than the link.
    """
    import tempfile

    from simpletasks.tasks.edge.profile import profile_directory
    from simpletasks.tasks.edge.synthetic import write_tem_stream

    out = {}
    names = ["content", "splines", "splines-random", "splines-block", "natural", "random"]
    with tempfile.TemporaryDirectory(prefix="edge-bench-") as tmp:
        for kind in ("smooth", "iid"):
            folder = Path(tmp) / kind
            write_tem_stream(folder, n, kind=kind, size=size, seed=5)
            rows = profile_directory(folder, Path(tmp) / f"{kind}.csv", include=".png")
            total = sum(r.size_bytes for r in rows)
            cpu = statistics.mean(r.cpu_seconds for r in rows)
            entry = {
                "images": n,
                "mean_bytes": round(total / n),
                "saved_share": round(sum(r.saved_bytes for r in rows) / total, 4),
                "mean_cpu_seconds": round(cpu, 5),
            }
            for share in (0.35, 0.6):
                bw = total / (share * n * cpu) / 1e6
                rate = 5 * bw * 1e6 / (total / n)
                res = run_all(rows, bandwidth_mbps=bw, cores=1, rate_hz=rate, policies=names)
                entry[f"cpu_share_{share}"] = {
                    "bandwidth_mbps": round(bw, 2),
                    "rate_hz": round(rate),
                    "oracle_gain_fraction": {
                        k: round(v["oracle_gain_fraction"], 4) for k, v in res["policies"].items()
                    },
                }
            out[kind] = entry
    return out


def plots(directory: Path) -> list[str]:
    from simpletasks.tasks.edge.plots import plot_estimate, plot_makespans

    directory.mkdir(parents=True, exist_ok=True)
    profile = make_profile("paper")
    scores = [r.score for r in profile]
    out = []
    for name in ("splines", "splines-random"):
        pol = make_policy(name, seed=0, oracle_scores=scores)
        res = simulate_once(profile, pol, bandwidth_mbps=1.90, cores=1)
        path = directory / f"edge-policy-fig7-{name}.png"
        title = f"{name}: paper-like profile, 1 core, 1.90 MB/s, makespan {res['makespan']:.1f} s"
        out.append(str(plot_estimate(profile, pol, path, title)))
    res = run_all(profile, bandwidth_mbps=1.90, cores=1, seeds=3)
    out.append(
        str(
            plot_makespans(
                res,
                directory / "edge-policy-makespans.png",
                "paper-like profile, 1 core, 1.90 MB/s",
            )
        )
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile-seeds", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=3, help="policy seeds per run (mean)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--s2-only", action="store_true", help="only the S2 smooth matrix")
    parser.add_argument(
        "--first-profile-seed",
        type=int,
        default=0,
        help="S2 profile shapes first..first+profile-seeds-1 (check other shapes than 0..2)",
    )
    parser.add_argument("--plots", type=Path, default=None, help="write PNGs into this folder")
    parser.add_argument("--output", default=None)
    parser.add_argument(
        "--images",
        type=int,
        default=0,
        help="also S5: profiles from N generated PNGs (~0.15 s each)",
    )
    parser.add_argument("--image-size", type=int, default=384)
    args = parser.parse_args()
    setup_logging()
    if args.quick:
        args.profile_seeds, args.seeds = 1, 2
    start = time.perf_counter()
    if args.s2_only:
        result = {
            "benchmark": "edge_simulate",
            "command": " ".join(sys.argv),
            "machine": machine_info(),
            "S2_smooth": s2_matrix(args.profile_seeds, args.seeds, args.first_profile_seed),
            "seconds": round(time.perf_counter() - start, 1),
        }
        emit(result, args.output)
        return
    result = {
        "benchmark": "edge_simulate",
        "command": " ".join(sys.argv),
        "machine": machine_info(),
        "S1_paper": s1_paper(max(args.seeds, 5)),
        "S2_smooth": s2_matrix(args.profile_seeds, args.seeds, args.first_profile_seed),
        "S3_iid": s3_iid(args.profile_seeds, args.seeds),
        "S4_cpu_rich": s4_cpu_rich(args.seeds),
    }
    if args.images:
        result["S5_images"] = s5_images(args.images, args.image_size)
    if args.plots:
        result["plots"] = plots(args.plots)
    result["seconds"] = round(time.perf_counter() - start, 1)
    result["S1_paper"].pop("full")
    emit(result, args.output)


if __name__ == "__main__":
    main()
