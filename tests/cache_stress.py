"""Several processes share one size-bounded cache: read, write and evict overlapping keys.

Each process opens its own :class:`~simpletasks.cache.FileSystemCache` on the same root
(with a ``max_bytes`` far below the data, so commits keep evicting) and a
:class:`~simpletasks.datasource.BucketCacheDatasource` over one file bucket, and loops: in a
datasource session it gets a few random keys (sometimes forcing a download over a cached
entry) and checks each file, or it writes a new version of a key. Every object is
self-checking (its key, version and SHA-256 are in its first line), so any version a
reader may legitimately see verifies, and a torn, mixed-up or half-written file does not.
While a session holds a key, its file must not vanish (pins keep it from eviction).

Used by ``tests/reliability/test_cache_pressure.py`` and ``benchmarks/cache_pressure.py``.
"""

from __future__ import annotations

import hashlib
import io
import logging
import multiprocessing
import os
import random
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from simpletasks.buckets.file import FileBucket
from simpletasks.cache import FileSystemCache
from simpletasks.datasource import BucketCacheDatasource


def make_object(key: str, version: str, size: int, rng: random.Random) -> bytes:
    """A self-checking object: ``key version sha256\\n`` then ``size`` random bytes."""
    payload = rng.randbytes(size)
    digest = hashlib.sha256(f"{key} {version}".encode() + payload).hexdigest()
    return f"{key} {version} {digest}\n".encode() + payload


def check_object(data: bytes, key: str) -> str:
    """Return "" if ``data`` is a whole object of ``key``, else what is wrong with it."""
    head, sep, payload = data.partition(b"\n")
    parts = head.decode("utf-8", "replace").split(" ")
    if not sep or len(parts) != 3:
        return f"{key}: no header ({len(data)} bytes)"
    got_key, version, digest = parts
    if got_key != key:
        return f"{key}: holds the object of {got_key}"
    if hashlib.sha256(f"{key} {version}".encode() + payload).hexdigest() != digest:
        return f"{key}: version {version} fails its checksum ({len(data)} bytes)"
    return ""


class _Counter(logging.Handler):
    """Counts the cache's "over max_bytes: the rest is in use" warnings."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


class CountingCache(FileSystemCache):
    """A cache that counts the entries it evicted."""

    evicted = 0

    def evict(self, *, keep: str | None = None) -> int:
        n = super().evict(keep=keep)
        self.evicted += n
        return n


def worker(
    root: str, bucket_dir: str, keys: list[str], max_bytes: int, seconds: float, seed: int
) -> dict[str, Any]:
    """One process's loop; returns its counts and the first few failures it saw."""
    rng = random.Random(seed)
    over_bound = _Counter()
    cache_logger = logging.getLogger("simpletasks.cache")
    cache_logger.addHandler(over_bound)
    cache_logger.propagate = False  # counted, not printed
    cache = CountingCache(root, max_bytes=max_bytes)
    datasource = BucketCacheDatasource(FileBucket(bucket_dir), cache, max_workers=4)
    counts = dict.fromkeys(
        ("sessions", "reads", "forced_downloads", "writes", "mismatches", "vanished", "errors"),
        0,
    )
    failures: list[str] = []
    deadline = time.monotonic() + seconds
    version = 0
    while time.monotonic() < deadline:
        counts["sessions"] += 1
        try:
            with datasource.session() as ds:
                if rng.random() < 0.25:
                    key = rng.choice(keys)
                    version += 1
                    data = make_object(key, f"p{seed}v{version}", rng.randint(1, 48_000), rng)
                    ds.put(key, data, only_cache=rng.random() < 0.3)
                    counts["writes"] += 1
                    continue
                chosen = rng.sample(keys, rng.randint(1, 4))
                force = rng.random() < 0.1
                paths = ds.get(chosen, override_cache=force)
                counts["forced_downloads"] += len(chosen) if force else 0
                for _ in range(2):  # read, let others evict, read again: still pinned
                    for key, path in zip(chosen, paths, strict=True):
                        try:
                            problem = check_object(path.read_bytes(), key)
                        except FileNotFoundError:
                            counts["vanished"] += 1
                            failures.append(f"{key}: pinned file {path} vanished")
                            continue
                        counts["reads"] += 1
                        if problem:
                            counts["mismatches"] += 1
                            failures.append(problem)
                    time.sleep(rng.random() * 0.002)
        except Exception as exc:
            counts["errors"] += 1
            failures.append(f"{type(exc).__name__}: {exc}")
    return {
        **counts,
        "evictions": cache.evicted,
        "over_bound_warnings": over_bound.count,
        "failures": failures[:5],
    }


def run(
    workdir: Path,
    *,
    processes: int = 8,
    keys: int = 40,
    max_bytes: int = 256 * 1024,
    seconds: float = 2.0,
    seed: int = 0,
) -> dict[str, Any]:
    """Run ``processes`` workers on one cache for ``seconds``; return the summed counts.

    Afterwards every entry left in the cache is checked too, the cache is evicted down to
    its bound, and no temp files may be left behind.
    """
    rng = random.Random(seed)
    (workdir / "bucket").mkdir(parents=True)
    bucket = FileBucket(workdir / "bucket")
    names = [f"shared/{i % 7}/obj-{i}.dat" for i in range(keys)]
    total = 0
    for key in names:
        data = make_object(key, "initial", rng.randint(1, 48_000), rng)
        total += len(data)
        bucket.upload_fileobj(io.BytesIO(data), key)
    root = workdir / "cache"
    FileSystemCache(root)
    started = time.monotonic()
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(processes, mp_context=context) as pool:
        futures = [
            pool.submit(worker, str(root), str(workdir / "bucket"), names, max_bytes, seconds, i)
            for i in range(processes)
        ]
        results = [f.result() for f in futures]
    elapsed = time.monotonic() - started
    summary: dict[str, Any] = {k: sum(r[k] for r in results) for k in results[0] if k != "failures"}
    cache = FileSystemCache(root, max_bytes=max_bytes)
    entries = cache.keys()
    leftover_bad = [p for k in entries if (p := check_object(cache.path(k).read_bytes(), k))]
    cache.evict()
    summary.update(
        processes=processes,
        keys=keys,
        data_bytes=total,
        max_bytes=max_bytes,
        seconds=round(elapsed, 2),
        reads_per_second=round(summary["reads"] / elapsed, 1),
        entries_left=len(cache.keys()),
        entries_left_corrupt=len(leftover_bad),
        bytes_left_after_evict=cache.size_bytes(),
        temp_files_left=sum(len(files) for _, _, files in os.walk(root / ".tmp")),
        failures=[f for r in results for f in r["failures"]][:10] + leftover_bad[:5],
    )
    return summary
