"""Turn an image directory into a simulator profile by running the operator on every file.

Each file (sorted by name, or by modification time) becomes one row
``index,size_bytes,saved_bytes,cpu_seconds,hint``: its size, the bytes the operator saves
(negative if the output is bigger), the CPU time the operator took (``time.thread_time``,
best of ``repeat``) and :func:`~.hint.quick_hint`. A file the operator cannot read gets
``saved_bytes=0`` and is reported in the log; it stays in the profile (the agent would upload it
as it is).

Run it as ``python -m simpletasks.tasks.edge.profile DIR OUT.csv [--include .png]``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from .hint import quick_hint
from .operator import Operator, get_operator
from .simulate import ProfileRow, write_profile

logger = logging.getLogger(__name__)


def profile_files(
    paths: Sequence[Path], operator: Operator | None = None, *, repeat: int = 1, hints: bool = True
) -> list[ProfileRow]:
    """One profile row per file, in the given order (index = position).

    Args:
        paths: image files.
        operator: the pre-processing operator (default ``border-dark``).
        repeat: run the operator this many times per file and keep the least CPU time.
        hints: also compute :func:`~.hint.quick_hint` (None where it fails).
    """
    operator = operator or get_operator()
    rows = []
    with tempfile.TemporaryDirectory(prefix="edge-profile-") as tmp:
        out = Path(tmp) / "out.png"
        if paths:  # warm up (imports, caches) so the first row's CPU time is not inflated
            with contextlib.suppress(Exception):
                operator.apply(paths[0], out)
        for index, path in enumerate(paths):
            size = path.stat().st_size
            saved, cpu = 0, 0.0
            try:
                best = float("inf")
                for _ in range(max(1, repeat)):
                    start = time.thread_time()
                    operator.apply(path, out)
                    best = min(best, time.thread_time() - start)
                saved, cpu = size - out.stat().st_size, best
            except Exception as exc:  # any unreadable input: keep the row, report it
                logger.warning("operator failed on %s: %s", path, exc)
            hint = None
            if hints:
                try:
                    hint = quick_hint(path)
                except Exception as exc:
                    logger.warning("no hint for %s: %s", path, exc)
            rows.append(ProfileRow(index, size, saved, cpu, hint))
    return rows


def list_images(directory: str | Path, include: str = "", order: str = "name") -> list[Path]:
    """Files of ``directory`` ending in ``include``, by ``name`` or by ``mtime``."""
    files = [p for p in Path(directory).iterdir() if p.is_file() and p.name.endswith(include)]
    key = (lambda p: p.stat().st_mtime_ns) if order == "mtime" else (lambda p: p.name)
    return sorted(files, key=key)


def profile_directory(
    directory: str | Path,
    out_csv: str | Path,
    *,
    include: str = "",
    operator: str = "border-dark",
    repeat: int = 1,
    order: str = "name",
) -> list[ProfileRow]:
    """Profile every image of ``directory`` and write the CSV ``out_csv``.

    Raises:
        FileNotFoundError: ``directory`` does not exist.
        ValueError: it holds no matching file.
    """
    if not Path(directory).is_dir():
        raise FileNotFoundError(f"not a directory: {directory}")
    paths = list_images(directory, include, order)
    if not paths:
        raise ValueError(f"no files ending in {include!r} in {directory}")
    rows = profile_files(paths, get_operator(operator), repeat=repeat)
    write_profile(rows, out_csv)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory")
    parser.add_argument("out_csv")
    parser.add_argument("--include", default="")
    parser.add_argument("--operator", default="border-dark")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--order", choices=["name", "mtime"], default="name")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    rows = profile_directory(
        args.directory,
        args.out_csv,
        include=args.include,
        operator=args.operator,
        repeat=args.repeat,
        order=args.order,
    )
    logger.info("%d files profiled into %s", len(rows), args.out_csv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
