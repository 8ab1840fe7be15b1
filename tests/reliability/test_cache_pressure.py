"""Eight processes share one small cache: reads always match their checksums while commits
keep evicting. ``benchmarks/cache_pressure.py`` runs it longer.
"""

from __future__ import annotations

from pathlib import Path

from cache_stress import run


def test_eight_processes_on_a_small_cache_never_read_a_bad_file(tmp_path: Path) -> None:
    result = run(tmp_path, processes=8, keys=40, max_bytes=256 * 1024, seconds=2.0)
    assert result["failures"] == [], result
    assert result["mismatches"] == 0 and result["vanished"] == 0 and result["errors"] == 0
    assert result["reads"] > 100 and result["writes"] > 10, result
    assert result["evictions"] > 10, result  # the bound did force evictions
    assert result["entries_left_corrupt"] == 0
    assert result["temp_files_left"] == 0
    assert result["bytes_left_after_evict"] <= result["max_bytes"]
