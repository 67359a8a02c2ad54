"""What user SQL may use (history/limits.py), without a database."""

from __future__ import annotations

from pathlib import Path

from dkron_lab.history import limits


def test_no_limits_set_no_settings() -> None:
    assert limits.global_settings(Path("/d/h.duckdb"), limits.SqlLimits()) == {}
    assert limits.operator_memory(limits.SqlLimits()) is None


def test_the_writer_keeps_its_reserve_beyond_the_queries_budget() -> None:
    mib = 1024**2
    sql = limits.SqlLimits(memory=512 * mib, temp=mib, max_queries=4)
    assert limits.global_settings(Path("/d/h.duckdb"), sql) == {
        "memory_limit": f"{512 * mib + limits.WRITER_RESERVE}B",
        "temp_directory": "/d/h.duckdb.tmp",
        "max_temp_directory_size": f"{mib + limits.WRITER_RESERVE}B",
    }
    assert limits.operator_memory(sql) == 128 * mib
    assert limits.operator_memory(limits.SqlLimits(memory=10, max_queries=4)) == mib  # a floor


def test_the_errors_name_the_limit_passed() -> None:
    assert limits.is_out_of_memory("Out of Memory Error: could not allocate")
    assert limits.is_out_of_memory("... failed to offload data block ...")
    assert not limits.is_out_of_memory("Binder Error: no column x")
    assert "1 MiB, --sql-memory-limit" in str(limits.out_of_memory(limits.SqlLimits(memory=2**20)))
    assert "2 GiB after 7 rows" in str(limits.result_too_large(2 * 1024**3, rows=7))
