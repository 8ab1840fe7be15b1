"""Transfers through the datasource vs the raw SDK, on moto S3 and fake-gcs-server.

One run per backend (servers started here on 127.0.0.1), contenders rotated round by round,
each into a fresh directory (the datasource: a fresh cache):

* ``big``: one object of ``--big-mb`` MB (random bytes). Datasource: ``ds.get(key)``
  (S3: boto3's managed transfer with our ``TransferConfig``, then the size and MD5 check;
  GCS: a verified download, size and CRC32C). Raw: S3 ``client.download_file`` with boto3's
  default managed transfer (multipart, 10 threads); GCS ``blob.download_to_filename``.
* ``small``: ``--small-count`` objects of ``--small-kb`` KB fetched in one
  ``ds.get([...])`` (``max_workers=8``). Raw: a thread pool of 8 doing one GET each
  (S3 ``get_object``, GCS ``blob.download_as_bytes``) and writing the file.

Every downloaded file's SHA-256 is checked against the uploaded bytes (outside the timing).
Figures: MB/s or objects/s (median) and the median of per-round ratios datasource / raw;
target >= 0.8.

Usage::

    python benchmarks/transfers.py                       # both backends, 3 rounds
    python benchmarks/transfers.py --backend s3 --big-mb 50 --rounds 5
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from _common import emit, machine_info, rotated, setup_logging, versions

from simpletasks.cache import FileSystemCache
from simpletasks.datasource import BucketCacheDatasource

WORKERS = 8


@contextlib.contextmanager
def s3_side(bucket_name: str) -> Iterator[tuple[Any, Callable, Callable]]:
    """(bucket, raw big download(key, path), raw small download(key, path))."""
    from boto3.s3.transfer import TransferConfig

    from simpletasks.buckets.s3 import S3Bucket
    from simpletasks.emulators.moto import MotoServer

    with MotoServer() as moto:
        client = moto.client("s3")
        client.create_bucket(Bucket=bucket_name)
        bucket = S3Bucket(bucket_name, client=client)

        def raw_big(key: str, path: Path) -> None:
            client.download_file(bucket_name, key, str(path), Config=TransferConfig())

        def raw_small(key: str, path: Path) -> None:
            path.write_bytes(client.get_object(Bucket=bucket_name, Key=key)["Body"].read())

        yield bucket, raw_big, raw_small


@contextlib.contextmanager
def gcs_side(bucket_name: str) -> Iterator[tuple[Any, Callable, Callable]]:
    from simpletasks.buckets.gcs import GCSBucket
    from simpletasks.emulators.gcs import FakeGcsServer

    with FakeGcsServer() as server:
        client = server.client()
        client.create_bucket(bucket_name)
        bucket = GCSBucket(bucket_name, client=client)
        raw_bucket = client.bucket(bucket_name)

        def raw_big(key: str, path: Path) -> None:
            raw_bucket.blob(key).download_to_filename(str(path))

        def raw_small(key: str, path: Path) -> None:
            path.write_bytes(raw_bucket.blob(key).download_as_bytes())

        yield bucket, raw_big, raw_small


SIDES = {"s3": s3_side, "gcs": gcs_side}


def sha(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def run_backend(backend: str, args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    name = f"xfer-{uuid.uuid4().hex[:8]}"
    big = os.urandom(args.big_mb * 1_000_000)
    big_sha = hashlib.sha256(big).hexdigest()
    smalls = {f"small/{i:05d}": os.urandom(args.small_kb * 1000) for i in range(args.small_count)}
    small_sha = {k: hashlib.sha256(v).hexdigest() for k, v in smalls.items()}
    with SIDES[backend](name) as (bucket, raw_big, raw_small):
        source = scratch / "big.bin"
        source.write_bytes(big)
        bucket.upload(source, "big.bin")
        source.unlink()
        with ThreadPoolExecutor(WORKERS) as pool:
            items = list(smalls.items())
            list(pool.map(lambda kv: bucket.upload_fileobj(io.BytesIO(kv[1]), kv[0]), items))

        made: list[Path] = []

        def fresh_dir() -> Path:
            path = scratch / uuid.uuid4().hex[:8]
            path.mkdir()
            made.append(path)
            return path

        def ds_big() -> list[tuple[Path, str]]:
            ds = BucketCacheDatasource(bucket, FileSystemCache(fresh_dir()), max_workers=WORKERS)
            return [(ds.get("big.bin"), big_sha)]

        def rawc_big() -> list[tuple[Path, str]]:
            path = fresh_dir() / "big.bin"
            raw_big("big.bin", path)
            return [(path, big_sha)]

        def ds_small() -> list[tuple[Path, str]]:
            ds = BucketCacheDatasource(bucket, FileSystemCache(fresh_dir()), max_workers=WORKERS)
            keys = list(smalls)
            return list(zip(ds.get(keys), (small_sha[k] for k in keys), strict=True))

        def rawc_small() -> list[tuple[Path, str]]:
            out = fresh_dir()
            paths = [(out / k.replace("/", "_"), k) for k in smalls]
            with ThreadPoolExecutor(WORKERS) as pool:
                list(pool.map(lambda pk: raw_small(pk[1], pk[0]), paths))
            return [(p, small_sha[k]) for p, k in paths]

        contenders = {
            "big": {"datasource": ds_big, "raw": rawc_big},
            "small": {"datasource": ds_small, "raw": rawc_small},
        }
        result: dict[str, Any] = {}
        for what, runners in contenders.items():
            times: dict[str, list[float]] = {n: [] for n in runners}
            for r in range(args.rounds):
                for cname in rotated(list(runners), r):
                    start = time.perf_counter()
                    files = runners[cname]()
                    times[cname].append(time.perf_counter() - start)
                    bad = [str(p) for p, digest in files if sha(p) != digest]
                    if bad:
                        raise SystemExit(f"{backend} {what} {cname}: checksum mismatch {bad[:3]}")
                    for path in made:
                        shutil.rmtree(path, ignore_errors=True)
                    made.clear()
            unit, amount = (
                ("MB/s", args.big_mb) if what == "big" else ("objects/s", args.small_count)
            )
            entry: dict[str, Any] = {"unit": unit, "checksums_verified": True}
            for cname, values in times.items():
                entry[cname] = {
                    "rate_median": round(statistics.median(amount / t for t in values), 1),
                    "seconds": [round(t, 2) for t in values],
                }
            ratios = [b / a for a, b in zip(times["datasource"], times["raw"], strict=True)]
            entry["datasource/raw"] = {
                "paired_median": round(statistics.median(ratios), 3),
                "paired": [round(x, 3) for x in ratios],
            }
            result[what] = entry
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default="s3,gcs")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--big-mb", type=int, default=200)
    parser.add_argument("--small-count", type=int, default=1000)
    parser.add_argument("--small-kb", type=int, default=10)
    parser.add_argument("--output")
    args = parser.parse_args(argv)
    setup_logging()
    result: dict[str, Any] = {
        "benchmark": "transfers",
        "machine": machine_info(),
        "versions": {
            "python": sys.version.split()[0],
            **versions("simpletasks", "boto3", "moto", "google-cloud-storage"),
        },
        "parameters": {
            k: getattr(args, k) for k in ("rounds", "big_mb", "small_count", "small_kb")
        },
    }
    with tempfile.TemporaryDirectory(prefix="transfers-") as tmp:
        for backend in args.backend.split(","):
            result[backend] = run_backend(backend, args, Path(tmp))
    emit(result, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
