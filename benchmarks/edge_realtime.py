"""Real-time edge agent benchmark: a writer drops images at a set rate, the agent uploads them
to a gateway on 127.0.0.1 with a bandwidth limit; every policy; compared with the simulator
on the same profile.

For each stream (``smooth``: the dark occluded fraction varies smoothly with the index;
``iid``: independent per image), the script

1. draws TEM-like images (a bright noisy field crossed by a dark noisy grid touching the
   border; the grid's area fraction is the image's "occlusion") into a source directory;
2. measures the profile offline: each image's size, bytes the operator saves, its CPU seconds
   (thread CPU time) and the content hint (``profile-<stream>.csv``, the simulator's format);
3. starts ``simpletasks edge gateway`` in its own process with ``--bandwidth`` chosen as in the
   paper's setup: the link is the bottleneck and one core can pre-process only a fraction
   (``--processable``, the paper's 0.63 = 0.25 s link time / 0.395 CPU-s per image) of the
   images before the upload-only run would end;
4. for each policy: a writer thread copies the images into the watched directory at
   ``--rate`` Hz (temp name, then rename), the agent (C CPU workers, K uploads) runs until
   every file is confirmed; makespan = last upload confirmed - first file found;
5. runs the simulator on the same profile, bandwidth, cores, uploads and rate; and once more
   on the profile as this run measured it (``sim_measured``: each processed image's wall-clock
   pre-processing time, the others' offline CPU time scaled by the run's median wall/CPU
   ratio), which separates the agent's own fidelity from other jobs slowing the CPU down.

Prints JSON: per stream and policy the real and simulated makespan and their ratio, images
processed, bytes sent; each policy's fraction of the oracle's gain over upload-only (real and
simulated); the load average of the machine (other jobs share its 2 vCPUs).

    python benchmarks/edge_realtime.py                       # 150 files at 20 Hz, both streams
    python benchmarks/edge_realtime.py --streams iid --policies content,oracle,upload-only
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from simpletasks.tasks.edge.agent import AgentConfig, EdgeAgent
from simpletasks.tasks.edge.hint import quick_hint
from simpletasks.tasks.edge.operator import get_operator
from simpletasks.tasks.edge.policy import policy_names
from simpletasks.tasks.edge.simulate import ProfileRow, run_simulation, write_profile
from simpletasks.tasks.edge.upload import GatewayUploader

MAX_FRACTION = 0.6


def occlusion(stream: str, n: int, seed: int) -> np.ndarray:
    """The dark grid's area fraction per index."""
    rng = np.random.default_rng(seed)
    if stream == "iid":
        return rng.uniform(0.0, MAX_FRACTION, n)
    x = np.arange(n) / n
    bumps = sum(
        h * np.exp(-0.5 * ((x - c) / w) ** 2)
        for c, w, h in zip((0.2, 0.55, 0.85), (0.08, 0.1, 0.06), (1.0, 0.7, 0.9), strict=True)
    )
    return np.clip(0.03 + MAX_FRACTION * bumps / bumps.max() + rng.normal(0, 0.01, n), 0, 0.65)


def grid_image(path: Path, fraction: float, seed: int, size: int, pitch: int = 128) -> None:
    """A bright noisy field crossed by a dark noisy square grid covering ``fraction``."""
    rng = np.random.default_rng(seed)
    a = rng.normal(150, 40, (size, size)).clip(31, 255).astype(np.uint8)
    width = round(pitch * (1 - float(np.sqrt(max(0.0, 1 - fraction)))))
    if width > 0:
        bars = ((np.arange(size) + rng.integers(0, pitch)) % pitch) < width
        dark = bars[:, None] | bars[None, :]
        a[dark] = rng.integers(0, 30, int(dark.sum()))
    Image.fromarray(a).save(path, compress_level=7)


def make_source(work: Path, stream: str, n: int, size: int) -> tuple[Path, list[ProfileRow]]:
    """Draw the images (cached by parameters) and measure their profile."""
    src = work / f"src-{stream}-{n}-{size}"
    profile = src / "profile.csv"
    if not profile.exists():
        shutil.rmtree(src, ignore_errors=True)
        src.mkdir(parents=True)
        fractions = occlusion(stream, n, seed=7)
        for i, frac in enumerate(fractions):
            grid_image(src / f"img{i:05d}.png", float(frac), seed=i, size=size)
        op = get_operator("border-dark")
        op.apply(src / "img00000.png", src / "warm.out")  # imports and caches off the clock
        rows = []
        for i in range(n):
            path, out = src / f"img{i:05d}.png", src / "out.png"
            started = time.thread_time()
            op.apply(path, out)
            cpu = time.thread_time() - started
            before, after = path.stat().st_size, out.stat().st_size
            rows.append(ProfileRow(i, before, before - after, cpu, quick_hint(path)))
        for p in (src / "out.png", src / "warm.out"):
            p.unlink()
        write_profile(rows, profile)
    from simpletasks.tasks.edge.simulate import load_profile

    return src, load_profile(profile)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_gateway(work: Path, bandwidth: float) -> tuple[subprocess.Popen, str]:
    port = free_port()
    code = "import sys; from simpletasks.cli.edge import edge; edge(sys.argv[1:])"
    args = ["gateway", "--listen", f"127.0.0.1:{port}", "--bucket", f"file://{work}/bucket",
            "--username", "bench", "--password", "bench", "--bandwidth", f"{bandwidth / 1e6}",
            "--log-level", "warning"]  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, f"127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("gateway did not start")


def writer(src: Path, dst: Path, n: int, rate: float, t0: float, lag: list[float]) -> None:
    """Copy the images into ``dst`` at ``rate`` Hz: temp name, then rename into place."""
    for i in range(n):
        due = t0 + i / rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        lag.append(time.monotonic() - due)
        name = f"img{i:05d}.png"
        shutil.copyfile(src / name, dst / f".{name}.part")
        os.replace(dst / f".{name}.part", dst / name)


def run_realtime(
    src: Path,
    rows: list[ProfileRow],
    work: Path,
    host: str,
    policy: str,
    args: argparse.Namespace,
) -> dict[str, Any]:
    watched = work / "watched"
    state = work / f"state-{policy}"
    for d in (watched, state):
        shutil.rmtree(d, ignore_errors=True)
    watched.mkdir(parents=True)
    stream_id = f"bench-{policy}-{time.time_ns()}"
    uploader = GatewayUploader(host, username="bench", password="bench", stream_id=stream_id,
                               tag="bench")  # fmt: skip
    config = AgentConfig(watched, include=(".png",), policy=policy, cores=args.cores,
                         uploads=args.uploads, state_dir=state, poll_seconds=0.05,
                         settle_seconds=0.1, max_files=len(rows), grace_seconds=2.0,
                         oracle_scores=[r.score for r in rows])  # fmt: skip
    agent = EdgeAgent(config, uploader)
    out: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: out.update(agent.run()), name="bench-agent")
    thread.start()
    lag: list[float] = []
    load_before = os.getloadavg()[0]
    w = threading.Thread(
        target=writer, args=(src, watched, len(rows), args.rate, time.monotonic() + 0.5, lag)
    )
    w.start()
    w.join()
    thread.join(600)
    if thread.is_alive():
        agent.stop()
        thread.join(30)
        raise RuntimeError(f"{policy}: agent did not finish")
    shutil.rmtree(work / "bucket" / stream_id, ignore_errors=True)
    shutil.rmtree(state, ignore_errors=True)
    measured = measured_rows(rows, agent)
    return measured, {
        "makespan": out["makespan"],
        "images_processed": out["processed"],
        "uploaded_processed": out["uploaded_processed"],
        "bytes_sent": out["bytes_sent"],
        "retries": out["retries"],
        "cpu_seconds": round(out["cpu_seconds"], 3),
        "writer_max_lag": round(max(lag), 4),
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }


def measured_rows(rows: list[ProfileRow], agent: EdgeAgent) -> list[ProfileRow]:
    """The profile with this run's wall-clock pre-processing times (see the module doc)."""
    by_name = {f.name: f for f in agent.runtime.files.values()}
    walls = {}
    for r in rows:
        f = by_name.get(f"img{r.index:05d}.png")
        if f is not None and f.wall_seconds is not None:
            walls[r.index] = f.wall_seconds
    ratio = float(np.median([walls[i] / rows[i].cpu_seconds for i in walls])) if walls else 1.0
    return [
        ProfileRow(
            r.index, r.size_bytes, r.saved_bytes, walls.get(r.index, r.cpu_seconds * ratio), r.hint
        )
        for r in rows
    ]


def gain_fractions(results: dict[str, dict], key: str) -> None:
    base = results.get("upload-only", {}).get(key)
    best = results.get("oracle", {}).get(key)
    for res in results.values():
        ok = base is not None and best is not None and base > best
        res[f"oracle_gain_fraction_{key}"] = (
            round((base - res[key]) / (base - best), 3) if ok else None
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=150)
    parser.add_argument("--rate", type=float, default=20.0, help="arrivals per second")
    parser.add_argument("--size", type=int, default=2000, help="image side in pixels")
    parser.add_argument("--cores", type=int, default=1)
    parser.add_argument("--uploads", type=int, default=4)
    parser.add_argument("--processable", type=float, default=0.63,
                        help="link seconds per image / CPU seconds per image")  # fmt: skip
    parser.add_argument("--streams", default="smooth,iid")
    parser.add_argument("--policies", default="all")
    parser.add_argument("--sim-seeds", type=int, default=5)
    parser.add_argument("--work", type=Path, default=Path("/tmp/edge-realtime-bench"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    policies = policy_names() if args.policies == "all" else args.policies.split(",")
    policies = [p for p in policies if p != "upload-only"] + ["upload-only"]
    if "oracle" not in policies:
        policies.append("oracle")
    args.work.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "setup": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "streams": {},
    }
    for stream in args.streams.split(","):
        started = time.monotonic()
        src, rows = make_source(args.work, stream, args.files, args.size)
        mean_size = float(np.mean([r.size_bytes for r in rows]))
        mean_cpu = float(np.mean([r.cpu_seconds for r in rows]))
        bandwidth = mean_size / (args.processable * mean_cpu)  # bytes/s
        if mean_size / bandwidth < 1.5 / args.rate:
            print("warning: the link is barely the bottleneck; use larger --size", file=sys.stderr)
        proc, host = start_gateway(args.work, bandwidth)
        results: dict[str, dict] = {}
        try:
            for policy in policies:
                measured, real = run_realtime(src, rows, args.work, host, policy, args)
                common: dict[str, Any] = dict(
                    bandwidth_mbps=bandwidth / 1e6,
                    cores=args.cores,
                    policy=policy,
                    rate_hz=args.rate,
                    seeds=args.sim_seeds,
                    uploads=args.uploads,
                )
                sim = run_simulation(rows, **common)
                sim_measured = run_simulation(measured, **common)
                real.update(
                    sim_makespan=round(sim["makespan"], 3),
                    sim_makespan_range=[round(sim[k], 3) for k in ("makespan_min", "makespan_max")],
                    sim_images_processed=sim["images_processed"],
                    sim_bytes_sent=sim["bytes_sent"],
                    makespan_ratio_real_to_sim=round(real["makespan"] / sim["makespan"], 4),
                    sim_measured_makespan=round(sim_measured["makespan"], 3),
                    sim_measured_images_processed=sim_measured["images_processed"],
                    makespan_ratio_real_to_sim_measured=round(
                        real["makespan"] / sim_measured["makespan"], 4
                    ),
                )
                real["makespan"] = round(real["makespan"], 3)
                results[policy] = real
                print(f"{stream} {policy}: {json.dumps(real)}", file=sys.stderr)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        gain_fractions(results, "makespan")
        gain_fractions(results, "sim_makespan")
        gain_fractions(results, "sim_measured_makespan")
        ratios = [r["makespan_ratio_real_to_sim"] for r in results.values()]
        measured_ratios = [r["makespan_ratio_real_to_sim_measured"] for r in results.values()]
        report["streams"][stream] = {
            "images": len(rows),
            "mean_size_bytes": round(mean_size),
            "total_saved_fraction": round(
                sum(r.saved_bytes for r in rows) / sum(r.size_bytes for r in rows), 4
            ),
            "mean_cpu_seconds": round(mean_cpu, 4),
            "bandwidth_mbps": round(bandwidth / 1e6, 3),
            "cpu_fraction_processable": round(args.cores * (mean_size / bandwidth) / mean_cpu, 3),
            "policies": results,
            "worst_real_to_sim_deviation": round(max(abs(r - 1) for r in ratios), 4),
            "worst_real_to_sim_measured_deviation": round(
                max(abs(r - 1) for r in measured_ratios), 4
            ),
            "seconds": round(time.monotonic() - started, 1),
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
