"""SQL results on the kernel's side: a DuckDB relation over the Arrow table a server sent.

Owns the one thing a notebook does with DuckDB, ``%%dkron sql --out relation``: the kernel
never opens a server's history file, it queries the result it was sent in its own in-memory
DuckDB. May call only duckdb. Import it lazily (the magics do, when a relation is asked for):
importing it loads duckdb.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import duckdb

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["relation_from_arrow"]


def relation_from_arrow(table: pa.Table) -> duckdb.DuckDBPyRelation:
    """A relation over ``table`` in DuckDB's default in-memory database, to query further
    (``.filter``, ``.aggregate``, ``.df()``, ...)."""
    return duckdb.from_arrow(table)
