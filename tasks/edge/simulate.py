"""Discrete-event simulator: the same policy object the agent uses, on a virtual clock.

Model (docs/edge-policy.md):

- file ``i`` arrives at ``i / rate_hz`` seconds (index = arrival order), is added to the policy;
- ``cores`` CPU workers: an idle worker asks ``policy.next_preprocess()``; pre-processing file
  ``i`` takes ``cpu_seconds[i]`` and shrinks it by ``saved_bytes[i]`` (if that is <= 0 the
  original is sent);
- one uplink of ``bandwidth_mbps`` x 10^6 bytes/s. With ``uploads`` K > 1 the K transfers in
  flight share it equally (processor sharing): the link still serves bytes at the bandwidth,
  so K changes only the order and the commitment (K files are taken from the pool at once);
- at every event the idle lanes ask the policy again (CPU lane first), so a policy that says
  "not now" (None) is asked again at the next arrival, completion or upload;
- makespan = last upload done - first arrival.
"""

from __future__ import annotations

import csv
import heapq
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .policy import Policy, make_policy, policy_names

_EPS_BYTES = 1e-3


@dataclass(frozen=True)
class ProfileRow:
    """One image of a profile: what pre-processing it would save and cost."""

    index: int
    size_bytes: int
    saved_bytes: int
    cpu_seconds: float
    hint: float | None = None

    @property
    def score(self) -> float:
        """True score: bytes saved per CPU-second."""
        return self.saved_bytes / max(self.cpu_seconds, 1e-9)


def load_profile(csv_path: str | Path) -> list[ProfileRow]:
    """Read ``index,size_bytes,saved_bytes,cpu_seconds[,hint]`` (sorted by index).

    Raises:
        ValueError: a missing column, a bad number, a negative size or CPU time, or
            indices that are not exactly 0..n-1.
    """
    rows: list[ProfileRow] = []
    with open(csv_path, newline="") as fh:
        reader = csv.DictReader(fh)
        need = {"index", "size_bytes", "saved_bytes", "cpu_seconds"}
        missing = need - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{csv_path}: missing column(s) {sorted(missing)}")
        for line, rec in enumerate(reader, start=2):
            try:
                hint = rec.get("hint")
                row = ProfileRow(
                    index=int(rec["index"]),
                    size_bytes=int(float(rec["size_bytes"])),
                    saved_bytes=int(float(rec["saved_bytes"])),
                    cpu_seconds=float(rec["cpu_seconds"]),
                    hint=float(hint) if hint not in (None, "") else None,
                )
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{csv_path}:{line}: {exc}") from None
            if row.size_bytes < 0 or row.cpu_seconds < 0 or not math.isfinite(row.cpu_seconds):
                raise ValueError(f"{csv_path}:{line}: negative size or bad cpu_seconds")
            rows.append(row)
    rows.sort(key=lambda r: r.index)
    if [r.index for r in rows] != list(range(len(rows))):
        raise ValueError(f"{csv_path}: indices must be 0..n-1, each once")
    return rows


def write_profile(rows: Iterable[ProfileRow], csv_path: str | Path) -> None:
    """Write a profile CSV (with a ``hint`` column if any row has one)."""
    rows = list(rows)
    with_hint = any(r.hint is not None for r in rows)
    with open(csv_path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["index", "size_bytes", "saved_bytes", "cpu_seconds"] + ["hint"] * with_hint)
        for r in rows:
            rec = [r.index, r.size_bytes, r.saved_bytes, f"{r.cpu_seconds:.6f}"]
            if with_hint:
                rec.append("" if r.hint is None else f"{r.hint:.6f}")
            w.writerow(rec)


def simulate_once(
    rows: Sequence[ProfileRow],
    policy: Policy,
    *,
    bandwidth_mbps: float,
    cores: int,
    rate_hz: float = 20.0,
    uploads: int = 1,
) -> dict:
    """Run one simulation with ``policy`` (a fresh object; it holds the final state after).

    Returns:
        ``makespan``, ``bytes_sent``, ``bytes_saved``, ``images_processed``,
        ``latency_p50``/``latency_p95`` (arrival to upload done), ``cpu_busy_seconds``.
    """
    if bandwidth_mbps <= 0 or rate_hz <= 0 or cores < 0 or uploads < 1:
        raise ValueError("bandwidth and rate must be > 0, cores >= 0, uploads >= 1")
    n = len(rows)
    if n == 0:
        return _summary(0.0, 0, 0, 0, [], 0.0)
    bw = bandwidth_mbps * 1e6
    arrival = [i / rate_hz for i in range(n)]
    t, next_arrival = 0.0, 0
    busy: list[tuple[float, int]] = []  # heap of (finish time, index)
    active: dict[int, float] = {}  # index -> bytes still to send
    done_at = [math.nan] * n
    done = sent = saved = processed = 0
    cpu_busy = 0.0
    while done < n:
        _dispatch(policy, rows, busy, active, t, cores, uploads)
        t_next = arrival[next_arrival] if next_arrival < n else math.inf
        if busy:
            t_next = min(t_next, busy[0][0])
        if active:
            t_next = min(t_next, t + min(active.values()) * len(active) / bw)
        if t_next == math.inf:
            raise RuntimeError(f"simulation stalled at t={t:.3f}: {policy.counts()}")
        if active:
            served = (t_next - t) * bw / len(active)
            for i in active:
                active[i] -= served
        t = t_next
        while next_arrival < n and arrival[next_arrival] <= t:
            r = rows[next_arrival]
            policy.add(r.index, r.size_bytes, r.hint)
            next_arrival += 1
        while busy and busy[0][0] <= t:
            _, i = heapq.heappop(busy)
            r = rows[i]
            policy.preprocessed(i, r.size_bytes - r.saved_bytes, r.cpu_seconds)
            processed += 1
            cpu_busy += r.cpu_seconds
        for i in [i for i, left in active.items() if left <= _EPS_BYTES * len(active)]:
            del active[i]
            policy.uploaded(i)
            done_at[i] = t
            done += 1
    for r in rows:
        if policy.use_processed(r.index):
            saved += r.saved_bytes
        sent += policy.upload_size(r.index)
    latencies = [d - a for d, a in zip(done_at, arrival, strict=True)]
    return _summary(max(done_at), sent, saved, processed, latencies, cpu_busy)


def _dispatch(policy, rows, busy, active, t, cores, uploads) -> None:
    while len(busy) < cores:
        i = policy.next_preprocess()
        if i is None:
            break
        heapq.heappush(busy, (t + rows[i].cpu_seconds, i))
    while len(active) < uploads:
        i = policy.next_upload()
        if i is None:
            break
        active[i] = float(policy.upload_size(i))


def _summary(makespan, sent, saved, processed, latencies, cpu_busy) -> dict:
    lat = np.asarray(latencies) if latencies else np.zeros(1)
    return {
        "makespan": float(makespan),
        "bytes_sent": int(sent),
        "bytes_saved": int(saved),
        "images_processed": int(processed),
        "latency_p50": float(np.percentile(lat, 50)),
        "latency_p95": float(np.percentile(lat, 95)),
        "cpu_busy_seconds": float(cpu_busy),
    }


def offline_rows(rows: Sequence[ProfileRow]) -> list[ProfileRow]:
    """The profile with every file already pre-processed (where that shrinks it)."""
    return [
        ProfileRow(r.index, r.size_bytes - max(r.saved_bytes, 0), 0, r.cpu_seconds, r.hint)
        for r in rows
    ]


def run_simulation(
    profile_rows: Sequence[ProfileRow],
    *,
    bandwidth_mbps: float,
    cores: int,
    policy: str = "splines",
    rate_hz: float = 20.0,
    seeds: int = 1,
    uploads: int = 1,
    **policy_options: object,
) -> dict:
    """Simulate one policy over ``seeds`` seeds (0..seeds-1): the mean of each figure.

    Returns:
        The mean of every :func:`simulate_once` figure, plus ``makespan_std``,
        ``makespan_min``, ``makespan_max`` and ``seeds``.
    """
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    scores = [r.score for r in profile_rows]
    runs = [
        simulate_once(
            profile_rows,
            make_policy(policy, seed=s, oracle_scores=scores, **policy_options),
            bandwidth_mbps=bandwidth_mbps,
            cores=cores,
            rate_hz=rate_hz,
            uploads=uploads,
        )
        for s in range(seeds)
    ]
    out = {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}
    for k in ("bytes_sent", "bytes_saved"):
        out[k] = round(out[k])
    spans = [r["makespan"] for r in runs]
    out.update(
        makespan_std=float(np.std(spans)),
        makespan_min=min(spans),
        makespan_max=max(spans),
        seeds=seeds,
    )
    return out


def run_offline(
    profile_rows: Sequence[ProfileRow],
    *,
    bandwidth_mbps: float,
    rate_hz: float = 20.0,
    uploads: int = 1,
) -> dict:
    """The lower bound: every file pre-processed before it arrives, nothing left to do."""
    return simulate_once(
        offline_rows(profile_rows),
        make_policy("upload-only"),
        bandwidth_mbps=bandwidth_mbps,
        cores=0,
        rate_hz=rate_hz,
        uploads=uploads,
    )


def run_all(
    profile_rows: Sequence[ProfileRow],
    *,
    bandwidth_mbps: float,
    cores: int,
    rate_hz: float = 20.0,
    seeds: int = 1,
    uploads: int = 1,
    policies: Sequence[str] | None = None,
) -> dict:
    """Every policy (default: all of them), the offline bound, and each one's oracle-gain fraction.

    ``oracle_gain_fraction`` = (upload-only makespan - policy's) / (upload-only - oracle's):
    1.0 = as good as the oracle, 0 = no better than never pre-processing.
    """
    names = list(policies or policy_names())
    for base in ("upload-only", "oracle"):
        if base not in names:
            names.append(base)
    common: dict[str, Any] = dict(
        bandwidth_mbps=bandwidth_mbps, cores=cores, rate_hz=rate_hz, uploads=uploads
    )
    results = {
        name: run_simulation(profile_rows, policy=name, seeds=seeds, **common) for name in names
    }
    base = results["upload-only"]["makespan"]
    gain = base - results["oracle"]["makespan"]
    for res in results.values():
        res["oracle_gain_fraction"] = (base - res["makespan"]) / gain if gain > 0 else None
    offline = run_offline(
        profile_rows, bandwidth_mbps=bandwidth_mbps, rate_hz=rate_hz, uploads=uploads
    )
    return {
        "setup": dict(common, images=len(profile_rows), seeds=seeds),
        "policies": results,
        "offline": offline,
    }


def simulate_command(
    profile: str | Path,
    *,
    bandwidth: float,
    cores: int,
    policy: str = "splines",
    rate: float = 20.0,
    seeds: int = 1,
    uploads: int = 1,
) -> dict:
    """What ``simpletasks edge simulate`` prints: one policy's figures, or ``all`` of them.

    Args:
        profile: path of the profile CSV.
        bandwidth: uplink in MB/s (10^6 bytes/s).
        cores: pre-processing workers.
        policy: a policy name, or ``"all"`` for :func:`run_all`.
        rate: arrivals per second.
        seeds: seeds to average.
        uploads: parallel uploads sharing the link.
    """
    rows = load_profile(profile)
    common: dict[str, Any] = dict(
        bandwidth_mbps=bandwidth, cores=cores, rate_hz=rate, seeds=seeds, uploads=uploads
    )
    if policy == "all":
        return run_all(rows, **common)
    if policy not in policy_names():
        raise ValueError(f"unknown policy {policy!r}; known: all, {', '.join(policy_names())}")
    result = run_simulation(rows, policy=policy, **common)
    result["policy"] = policy
    return result
