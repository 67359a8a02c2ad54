"""The history's resource columns (schema version 4): an old file migrates, its rows keep NULL,
new rows hold what the run used, and every way out (list, get, export, user SQL) shows them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path

import duckdb

from dkron_lab.history.duckdb import DuckDBHistory
from dkron_lab.model.execution import Execution, ResourceUsage

T0 = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
USED = ResourceUsage(cpu_user_seconds=1.25, cpu_system_seconds=0.5, max_rss_bytes=52_428_800)


def run(i: int, usage: ResourceUsage | None = None) -> Execution:
    return Execution(
        id=f"{i}-node-1",
        job_name="backup",
        node_name="node-1",
        group=i,
        started_at=T0 + timedelta(minutes=i),
        finished_at=T0 + timedelta(minutes=i, seconds=3),
        success=True,
        output=f"run {i}",
    ).with_usage(usage)


def version_3_file(path: Path) -> None:
    """A history file as dkron-lab wrote it before version 4, with one execution in it."""
    con = duckdb.connect(str(path))
    con.execute(
        "CREATE TABLE schema_version (version INTEGER NOT NULL, applied_at TIMESTAMPTZ NOT NULL)"
    )
    for version, script in enumerate(("schema.sql", "schema_v2.sql", "schema_v3.sql"), 1):
        con.execute(resources.files("dkron_lab.history").joinpath(script).read_text("utf-8"))
        con.execute("INSERT INTO schema_version VALUES (?, ?)", [version, T0])
    con.execute(
        "INSERT INTO executions VALUES ('0-node-1', 'backup', 'node-1', 0, 1, ?, ?, NULL,"
        " true, 'run 0')",
        [T0, T0 + timedelta(seconds=3)],
    )
    con.close()


def test_a_version_3_file_gains_the_columns_and_its_rows_keep_null(tmp_path: Path) -> None:
    path = tmp_path / "history.duckdb"
    version_3_file(path)
    with DuckDBHistory(path) as h:
        assert h.query("SELECT max(version) FROM schema_version") == [(5,)]
        columns = h.query(
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_name = 'executions' AND column_name IN"
            " ('cpu_user_seconds', 'cpu_system_seconds', 'max_rss_bytes') ORDER BY column_name"
        )
        assert columns == [
            ("cpu_system_seconds", "DOUBLE"),
            ("cpu_user_seconds", "DOUBLE"),
            ("max_rss_bytes", "BIGINT"),
        ]
        h.append(run(1, USED))
        h.flush()
        old, new = h.list_executions("backup", order="ASC")[0]
    assert old == run(0)
    assert (old.cpu_user_seconds, old.cpu_system_seconds, old.max_rss_bytes) == (None,) * 3
    assert new == run(1, USED)


def test_the_values_come_back_from_get_export_and_user_sql(tmp_path: Path) -> None:
    with DuckDBHistory(tmp_path / "h.duckdb") as h:
        h.append(run(1, USED))
        h.append(run(2))
        h.flush()
        assert h.get_execution("backup", "1-node-1") == run(1, USED)
        records, _ = h.export_executions(None, 10)
        result = h.run_sql(
            "SELECT id, cpu_user_seconds + cpu_system_seconds AS cpu, max_rss_bytes"
            " FROM executions ORDER BY id",
            max_rows=10,
            timeout=30.0,
        )
    assert [(r["id"], r["cpu_user_seconds"], r["max_rss_bytes"]) for r in records] == [
        ("1-node-1", 1.25, 52_428_800),
        ("2-node-1", None, None),
    ]
    assert result.table.to_pylist() == [
        {"id": "1-node-1", "cpu": 1.75, "max_rss_bytes": 52_428_800},
        {"id": "2-node-1", "cpu": None, "max_rss_bytes": None},
    ]


def test_records_of_an_older_server_without_the_keys_import_as_null(tmp_path: Path) -> None:
    with DuckDBHistory(tmp_path / "a.duckdb") as a:
        a.append(run(1, USED))
        a.flush()
        records, _ = a.export_executions(None, 10)
    old_style = [
        {k: v for k, v in r.items() if k not in ("cpu_user_seconds", "cpu_system_seconds",
                                                 "max_rss_bytes")}
        for r in records
    ]  # fmt: skip
    with DuckDBHistory(tmp_path / "b.duckdb") as b:
        b.import_executions(old_style)
        b.flush()
        assert b.get_execution("backup", "1-node-1") == run(1)
    with DuckDBHistory(tmp_path / "c.duckdb") as c:
        c.import_executions(records)
        c.flush()
        assert c.get_execution("backup", "1-node-1") == run(1, USED)
