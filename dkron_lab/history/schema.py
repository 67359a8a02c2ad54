"""The history file's tables and their versions: the migration scripts and how they are applied.

Owns the list of migration scripts (``schema.sql``, ``schema_v2.sql``, ... in this package) and
the ``schema_version`` table that records which ones a file has. Applying the n-th script brings
a file to version n; a file newer than this dkron-lab is refused rather than guessed at. May call
a DuckDB connection it is given (it opens none) and ``dkron_lab.errors``.
"""

from __future__ import annotations

from datetime import datetime
from importlib import resources

import duckdb

from dkron_lab.errors import DkronError

__all__ = ["MIGRATIONS", "migrate"]

# Migration scripts in order; applying the n-th brings a file to schema version n.
MIGRATIONS: tuple[str, ...] = (
    "schema.sql",
    "schema_v2.sql",
    "schema_v3.sql",
    "schema_v4.sql",
    "schema_v5.sql",
)
_package_files = resources.files("dkron_lab.history")


def migrate(con: duckdb.DuckDBPyConnection, now: datetime) -> None:
    """Bring the file to the newest schema version, one transaction per migration; ``now`` is
    recorded as the time each one was applied."""
    con.execute(
        "CREATE TABLE IF NOT EXISTS schema_version"
        " (version INTEGER NOT NULL, applied_at TIMESTAMPTZ NOT NULL)"
    )
    (current,) = con.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchall()[0]
    if current > len(MIGRATIONS):
        raise DkronError(
            f"history file has schema version {current} but this dkron-lab knows only up to "
            f"{len(MIGRATIONS)}: upgrade dkron-lab, or move the file away to start a new history"
        )
    for version in range(current + 1, len(MIGRATIONS) + 1):
        script = _package_files.joinpath(MIGRATIONS[version - 1]).read_text("utf-8")
        con.begin()
        try:
            con.execute(script)
            con.execute("INSERT INTO schema_version VALUES (?, ?)", [version, now])
            con.commit()
        except BaseException:
            con.rollback()
            raise
