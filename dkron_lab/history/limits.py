"""What user SQL may use, and the errors that say a query went over it: pure, no DuckDB.

Owns :class:`SqlLimits` (from ``--sql-*``), how they become DuckDB settings, and the
``QueryTooLarge`` messages that name the limit a query passed. May call ``dkron_lab.errors``.

DuckDB's ``memory_limit`` is global and the history writer shares it, so it is set to the
queries' budget plus :data:`WRITER_RESERVE`; each query's own intermediates (hash tables,
sorts) are capped by the per-connection ``operator_memory_limit``, an equal share of that
budget. Spill files go to ``<file>.tmp``, capped by ``max_temp_directory_size`` with the same
reserve kept for the writer (a failed checkpoint would invalidate the database). Results are
capped in bytes as they are read. Over any of these is ``QueryTooLarge``, never an out-of-memory
kill of the server.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dkron_lab.errors import QueryTooLarge

__all__ = [
    "WRITER_RESERVE",
    "Settings",
    "SqlLimits",
    "global_settings",
    "is_out_of_memory",
    "operator_memory",
    "out_of_memory",
    "result_too_large",
]

WRITER_RESERVE = 256 * 1024**2
"""Bytes of DuckDB memory kept beyond ``--sql-memory-limit`` for the history writer."""

Settings = dict[str, str | bool | int | float | list[str]]
"""DuckDB settings as ``duckdb.connect(config=...)`` takes them."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SqlLimits:
    """What user SQL may use (``--sql-memory-limit`` and friends, in bytes).

    ``memory``: all queries' DuckDB memory together (``None``: DuckDB's default, 80 % of RAM);
    ``temp``: their spill files (``None``: DuckDB's default, 90 % of the free disk);
    ``max_bytes``: one result, as Arrow or JSON (``None``: no cap); ``max_queries``: queries at
    once, the rest wait their turn.
    """

    memory: int | None = None
    temp: int | None = None
    max_bytes: int | None = None
    max_queries: int = 2


def global_settings(path: Path, limits: SqlLimits) -> Settings:
    """The DuckDB settings of ``limits`` for the file at ``path``, given at connect (they are
    global to the database; the per-query one is :func:`operator_memory`)."""
    config: Settings = {}
    if limits.memory is not None:
        config["memory_limit"] = f"{limits.memory + WRITER_RESERVE}B"
    if limits.temp is not None:
        # Queries are stopped at limits.temp (the spill watch); the rest is the writer's, so that
        # a commit or checkpoint can always evict: a failed checkpoint invalidates the database.
        config["temp_directory"] = f"{path}.tmp"
        config["max_temp_directory_size"] = f"{limits.temp + WRITER_RESERVE}B"
    return config


def operator_memory(limits: SqlLimits) -> int | None:
    """Bytes of intermediates one query may hold (``None``: not limited)."""
    if limits.memory is None:
        return None
    return max(limits.memory // limits.max_queries, 1024**2)


def is_out_of_memory(message: str) -> bool:
    """Whether DuckDB's error ``message`` says it ran out of memory (or of room to spill)."""
    return "Out of Memory" in message or "failed to offload" in message


def out_of_memory(limits: SqlLimits) -> QueryTooLarge:
    """The error for a query that needed more memory or spill space than ``limits`` give."""
    memory = "DuckDB's default" if limits.memory is None else _size(limits.memory)
    temp = "the free disk" if limits.temp is None else _size(limits.temp)
    return QueryTooLarge(
        f"the query needed more memory than this server gives SQL ({memory}, --sql-memory-limit, "
        f"shared by up to {limits.max_queries} queries) and its spill files ({temp}, "
        "--sql-temp-limit): narrow it: a WHERE on started_at or finished_at, fewer or narrower "
        "columns (a big output column is the usual cause), fewer GROUP BY groups, DISTINCT "
        "values or ORDER BY rows, or a LIMIT"
    )


def result_too_large(max_bytes: int, *, rows: int) -> QueryTooLarge:
    """The error for a result over ``--sql-max-bytes`` (after ``rows`` rows)."""
    return QueryTooLarge(
        f"the result passed {_size(max_bytes)} after {rows} rows, the most this server sends "
        "(--sql-max-bytes): narrow it: select fewer or narrower columns (e.g. left(output, 200) "
        "rather than output), add a LIMIT, aggregate in SQL (count, sum, GROUP BY), or send a "
        'smaller "max_rows"'
    )


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} bytes"
