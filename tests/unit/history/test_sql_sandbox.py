"""The user-SQL sandbox of DuckDBHistory (``run_sql``) against real DuckDB files.

Each attack of ``reference/jupyter-spike.md`` section 4 is sent as user SQL; it must be refused
(``QueryRefused``) or fail (``InvalidQuery``), and afterwards nothing may have changed: the
rows, the sequence, the files on disk, the settings, the attached databases, the temporary
objects a later query sees.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from dkron_lab.errors import (
    InvalidQuery,
    QueryRefused,
    QueryTimeout,
    Unavailable,
    ValidationError,
)
from dkron_lab.history.duckdb import DuckDBHistory, SqlResult
from dkron_lab.model.execution import Execution, execution_id
from dkron_lab.testing import wait_for

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ROWS = 20
ENDLESS = "SELECT sum(a.range * b.range) FROM range(10000000) a, range(10000000) b"


def run(job: str, i: int, *, scheduled: bool = True) -> Execution:
    started = T0 + timedelta(seconds=i, milliseconds=250)
    return Execution(
        id=execution_id(int(started.timestamp()) * 10**9 + i, "node-1"),
        job_name=job,
        node_name="node-1",
        group=i,
        started_at=started,
        finished_at=started + timedelta(milliseconds=1500),
        scheduled_at=T0 + timedelta(seconds=i) if scheduled else None,
        success=i % 4 != 0,
        output=f"output {i}",
    )


@pytest.fixture
def path(tmp_path: Path) -> Path:
    """A history file that also holds a sequence, so that nextval() has something to advance."""
    file = tmp_path / "history.duckdb"
    with duckdb.connect(str(file)) as con:
        con.execute("CREATE SEQUENCE seq")
    return file


@pytest.fixture
def history(path: Path) -> Iterator[DuckDBHistory]:
    with DuckDBHistory(path) as h:
        for i in range(ROWS):
            h.append(run("backup" if i % 2 else "report", i, scheduled=i != 3))
        h.flush()
        yield h


def sql(history: DuckDBHistory, query: str, **kwargs: object) -> SqlResult:
    options: dict[str, object] = {"max_rows": 1000, "timeout": 30.0} | kwargs
    return history.run_sql(query, **options)  # type: ignore[arg-type]


def rows(result: SqlResult) -> list[tuple[object, ...]]:
    columns = [column.to_pylist() for column in result.table.columns]
    return list(zip(*columns, strict=True))


# -- the attack matrix ----------------------------------------------------------------------------

REFUSED = QueryRefused
EITHER = (QueryRefused, InvalidQuery)

ATTACKS: list[tuple[str, object]] = [
    # files
    ("COPY executions TO '{tmp}/stolen.csv'", REFUSED),
    ("COPY (SELECT * FROM executions) TO '{tmp}/stolen.parquet' (FORMAT parquet)", REFUSED),
    ("COPY executions FROM '{tmp}/rows.csv'", REFUSED),
    ("EXPORT DATABASE '{tmp}/dump'", REFUSED),
    ("SELECT * FROM read_csv('/etc/passwd')", REFUSED),
    ("SELECT * FROM read_text('/proc/self/environ')", REFUSED),
    ("SELECT * FROM read_blob('/etc/hostname')", REFUSED),
    ("SELECT * FROM glob('/etc/*')", REFUSED),
    ("SELECT * FROM read_parquet('{tmp}/x.parquet')", REFUSED),
    ("SELECT * FROM sniff_csv('/etc/passwd')", REFUSED),
    ("FROM '/etc/hostname'", EITHER),
    ("SELECT * FROM read_csv('https://example.com/x.csv')", EITHER),
    # other databases, extensions, settings
    ("ATTACH '{tmp}/other.duckdb' AS other", REFUSED),
    ("ATTACH ':memory:' AS scratch", REFUSED),
    ("DETACH history", REFUSED),
    ("INSTALL httpfs", REFUSED),
    ("LOAD httpfs", REFUSED),
    ("LOAD '{tmp}/evil.duckdb_extension'", REFUSED),
    ("SET enable_external_access = true", REFUSED),
    ("SET lock_configuration = false", REFUSED),
    ("RESET enable_external_access", REFUSED),
    ("SET memory_limit = '100GB'", REFUSED),
    ("SET profiling_output = '{tmp}/profile.json'", REFUSED),
    ("PRAGMA enable_profiling", REFUSED),
    ("SET VARIABLE x = 1", REFUSED),
    # writes, plain and hidden in a SELECT
    ("INSERT INTO executions SELECT * FROM executions", REFUSED),
    ("UPDATE executions SET success = false", REFUSED),
    ("DELETE FROM executions", REFUSED),
    ("DROP TABLE executions", REFUSED),
    ("ALTER TABLE executions ADD COLUMN x INT", REFUSED),
    ("CREATE TABLE t AS SELECT 1", REFUSED),
    ("CREATE TEMP TABLE leak AS SELECT 42 AS answer", REFUSED),
    ("CREATE MACRO evil() AS 1", REFUSED),
    ("CREATE VIEW v AS SELECT 1", REFUSED),
    ("CHECKPOINT", REFUSED),
    ("VACUUM", REFUSED),
    ("BEGIN TRANSACTION", REFUSED),
    ("SELECT 1; DELETE FROM executions", REFUSED),
    ("SELECT 1; SELECT 2", REFUSED),
    ("WITH d AS (DELETE FROM history.main.executions RETURNING *) SELECT count(*) FROM d", REFUSED),
    ("WITH u AS (UPDATE history.main.executions SET success = false RETURNING 1) FROM u", REFUSED),
    ("WITH d AS (DELETE FROM executions RETURNING *) SELECT count(*) FROM d", EITHER),
    ("WITH d AS (DELETE FROM skipped_fires RETURNING *) SELECT count(*) FROM d", REFUSED),
    ("SELECT nextval('seq')", REFUSED),
    ("SELECT * FROM query('DELETE FROM executions')", EITHER),
    ("", REFUSED),
    ("-- only a comment", REFUSED),
]


def state(history: DuckDBHistory, tmp: Path) -> dict[str, object]:
    """Everything an attack could change, read outside the sandbox."""
    return {
        "rows": history.query("SELECT count(*), count(*) FILTER (success) FROM executions"),
        "tables": history.query("SELECT table_name FROM duckdb_tables() ORDER BY 1"),
        "views": history.query("SELECT view_name FROM duckdb_views() WHERE NOT internal"),
        "macros": history.query(
            "SELECT function_name FROM duckdb_functions() WHERE NOT internal ORDER BY 1"
        ),
        "databases": history.query("SELECT database_name FROM duckdb_databases() ORDER BY 1"),
        "settings": history.query(
            "SELECT name, value FROM duckdb_settings() WHERE name IN ('enable_external_access',"
            " 'lock_configuration', 'memory_limit', 'profiling_output') ORDER BY 1"
        ),
        "files": sorted(p.name for p in tmp.iterdir()),
    }


@pytest.mark.parametrize(("attack", "expected"), ATTACKS)
def test_attack_is_refused_and_changes_nothing(
    history: DuckDBHistory, tmp_path: Path, attack: str, expected: type[Exception]
) -> None:
    before = state(history, tmp_path)
    with pytest.raises(expected) as caught:  # type: ignore[call-overload]
        sql(history, attack.format(tmp=tmp_path))
    assert isinstance(caught.value, ValidationError)  # answered as a 400, never a 500
    assert caught.value.message
    assert state(history, tmp_path) == before
    # The sequence never moved: the first nextval outside the sandbox is its start value.
    assert history.query("SELECT nextval('seq')") == [(1,)]


def test_refusals_say_what_to_do(history: DuckDBHistory) -> None:
    with pytest.raises(QueryRefused, match="DELETE statements are not allowed.*send one SELECT"):
        sql(history, "DELETE FROM executions")
    with pytest.raises(QueryRefused, match="2 statements: send exactly one SELECT"):
        sql(history, "SELECT 1; SELECT 2")
    with pytest.raises(QueryRefused, match="cannot read or write files"):
        sql(history, "SELECT * FROM read_csv('/etc/passwd')")
    with pytest.raises(QueryRefused, match="only reads.*nextval"):
        sql(history, "SELECT nextval('seq')")
    with pytest.raises(QueryRefused, match="PIVOT without an IN list.*IN \\(true, false\\)"):
        sql(history, "PIVOT executions ON success USING count(*)")
    with pytest.raises(InvalidQuery, match='column "nope" not found'):
        sql(history, "SELECT nope FROM executions")


def test_nothing_leaks_from_one_query_to_the_next(history: DuckDBHistory) -> None:
    first = sql(history, "SELECT name FROM jobs", jobs=[{"name": "secret-job"}])
    assert rows(first) == [("secret-job",)]
    assert rows(sql(history, "SELECT count(*) FROM jobs")) == [(0,)]
    with pytest.raises(QueryRefused):
        sql(history, "CREATE TEMP TABLE leak AS SELECT 42 AS answer")
    with pytest.raises(InvalidQuery, match="leak"):
        sql(history, "SELECT * FROM leak")
    temporary = sql(
        history,
        "SELECT table_name FROM duckdb_tables() WHERE temporary UNION ALL "
        "SELECT view_name FROM duckdb_views() WHERE temporary AND NOT internal ORDER BY 1",
    )
    assert rows(temporary) == [("executions",), ("jobs",), ("members",)]


# -- the views ------------------------------------------------------------------------------------


def test_executions_view_adds_duration_and_lateness(history: DuckDBHistory) -> None:
    result = sql(
        history,
        'SELECT job_name, "group", duration_s, lateness_s, success, started_at '
        'FROM executions WHERE "group" IN (2, 3) ORDER BY "group"',
    )
    assert rows(result) == [
        ("report", 2, 1.5, 0.25, True, T0 + timedelta(seconds=2, milliseconds=250)),
        ("backup", 3, 1.5, None, True, T0 + timedelta(seconds=3, milliseconds=250)),
    ]
    assert dict(result.columns)["started_at"] == "TIMESTAMP WITH TIME ZONE"
    assert dict(result.columns)["duration_s"] == "DOUBLE"
    names = [name for name, _ in sql(history, "FROM executions LIMIT 0").columns]
    assert names == [
        "id", "job_name", "node_name", "group", "attempt", "started_at", "finished_at",
        "scheduled_at", "success", "output", "cpu_user_seconds", "cpu_system_seconds",
        "max_rss_bytes", "backfill", "duration_s", "lateness_s",
    ]  # fmt: skip


def test_failure_rate_by_job(history: DuckDBHistory) -> None:
    result = sql(
        history,
        "SELECT job_name, count(*) AS runs, avg(success::int) AS success_rate "
        "FROM executions GROUP BY job_name ORDER BY job_name",
    )
    assert rows(result) == [("backup", 10, 1.0), ("report", 10, 0.5)]


def test_jobs_and_members_views(history: DuckDBHistory) -> None:
    job = {
        "name": "report",
        "schedule": "@daily",
        "tags": {"role": "web:1"},
        "dependent_jobs": ["child"],
        "success_count": 5,
        "next": T0,
        "status": "success",
    }
    member = {"name": "n1", "addr": "127.0.0.1", "port": 8946, "status": "alive",
              "server": True, "leader": True, "tags": {"dc": "dc1"}}  # fmt: skip
    result = sql(
        history,
        "SELECT j.name, j.tags['role'], j.dependent_jobs, j.next, j.disabled, m.name, m.leader, "
        "m.tags['dc'], (SELECT count(*) FROM executions e WHERE e.job_name = j.name) "
        "FROM jobs j, members m",
        jobs=[job],
        members=[member],
    )
    assert rows(result) == [("report", "web:1", ["child"], T0, None, "n1", True, "dc1", 10)]
    types = dict(sql(history, "FROM jobs", jobs=[job]).columns)
    assert types["tags"] == "MAP(VARCHAR, VARCHAR)"
    assert types["next"] == "TIMESTAMP WITH TIME ZONE"
    assert types["success_count"] == "BIGINT"


def test_other_tables_stay_readable(history: DuckDBHistory) -> None:
    assert rows(sql(history, "SELECT count(*) FROM skipped_fires")) == [(0,)]
    assert rows(sql(history, "SELECT count(*) FROM history.main.executions")) == [(ROWS,)]


# -- limits ---------------------------------------------------------------------------------------


def test_row_limit_truncates(history: DuckDBHistory) -> None:
    result = sql(history, "SELECT * FROM range(1000000)", max_rows=7)
    assert result.truncated
    assert result.table.column(0).to_pylist() == list(range(7))
    exact = sql(history, "SELECT * FROM range(7)", max_rows=7)
    assert not exact.truncated and exact.table.num_rows == 7
    empty = sql(history, "SELECT * FROM executions", max_rows=0)
    assert empty.truncated and empty.table.num_rows == 0
    assert empty.table.schema.names[-1] == "lateness_s"
    big = sql(history, "SELECT * FROM range(300000)", max_rows=250000)
    assert big.truncated and big.table.num_rows == 250000


def test_time_limit_interrupts_only_that_query(history: DuckDBHistory) -> None:
    with pytest.raises(QueryTimeout, match=r"more than 0\.3 s.*timeout"):
        sql(history, ENDLESS, timeout=0.3)
    assert rows(sql(history, "SELECT count(*) FROM executions")) == [(ROWS,)]


def test_rejects_impossible_limits(history: DuckDBHistory) -> None:
    with pytest.raises(ValueError, match="max_rows"):
        sql(history, "SELECT 1", max_rows=-1)
    with pytest.raises(ValueError, match="timeout"):
        sql(history, "SELECT 1", timeout=0)


@pytest.mark.slow
def test_writer_keeps_committing_while_a_query_runs(history: DuckDBHistory) -> None:
    outcome: list[BaseException] = []

    def query() -> None:
        try:
            sql(history, ENDLESS, timeout=8.0)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=query)
    thread.start()
    try:
        for i in range(ROWS, ROWS + 500):
            history.append(run("during", i))
        history.delete_job("backup")
        history.flush()  # would hang if the query blocked the writer
        assert thread.is_alive(), "the query should still be running for seconds"
        assert history.count("during") == 500 and history.count("backup") == 0
        assert rows(sql(history, "SELECT count(*) FROM executions WHERE job_name = 'during'")) == [
            (500,)
        ]
    finally:
        thread.join()
    assert len(outcome) == 1 and isinstance(outcome[0], QueryTimeout)


def test_close_stops_running_queries(history: DuckDBHistory) -> None:
    """DuckDB refuses to close a connection whose cursor runs a query: close() stops them."""
    outcome: list[BaseException] = []

    def query() -> None:
        try:
            sql(history, ENDLESS, timeout=100.0)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=query)
    thread.start()
    wait_for(lambda: history._queries or None, 30, "the query to start")
    history.close()
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], Unavailable), outcome
    assert "shutting down" in outcome[0].message


def test_settings_are_locked_for_every_connection(history: DuckDBHistory) -> None:
    with pytest.raises(duckdb.Error, match="locked"):
        history.query("SET enable_external_access = true")
    assert history.query("SELECT current_setting('enable_external_access')") == [(False,)]


def test_arrow_result_matches_columns(history: DuckDBHistory) -> None:
    result = sql(history, "SELECT job_name, started_at FROM executions ORDER BY started_at")
    assert isinstance(result.table, pa.Table)
    assert result.table.schema.field("started_at").type == pa.timestamp("us", tz="UTC")
    assert [name for name, _ in result.columns] == result.table.schema.names


# -- docs/sql.md ----------------------------------------------------------------------------------

DOCS = Path(__file__).parents[3] / "docs" / "sql.md"


def doc_section(heading: str) -> str:
    text = DOCS.read_text("utf-8")
    start = text.index(heading)
    end = text.find("\n## ", start + len(heading))
    return text[start : end if end != -1 else len(text)]


def test_docs_list_every_column_of_every_view(history: DuckDBHistory) -> None:
    for view in ("executions", "jobs", "members", "audit"):
        section = doc_section(f"### `{view}`")
        section = section[: section.find("\n### ", 4) if "\n### " in section[4:] else None]
        documented = re.findall(r"^\| `(\w+)` \| ([^|]+) \|", section, flags=re.MULTILINE)
        columns = sql(history, f"FROM {view} LIMIT 0").columns
        assert [(name, kind.strip()) for name, kind in documented] == list(columns), view


def test_docs_ten_queries_run(history: DuckDBHistory) -> None:
    queries = re.findall(r"```sql\n(.*?)```", doc_section("## Ten useful queries"), re.DOTALL)
    assert len(queries) == 10
    jobs = [
        {"name": "report", "schedule": "@every 1s", "status": "failed", "metadata": {"team": "a"}},
        {"name": "backup", "schedule": "@every 1s", "status": "success", "disabled": False},
        {"name": "never", "schedule": "@daily", "status": "untriggered", "disabled": False},
    ]
    members = [{"name": "node-1", "status": "alive", "server": True, "leader": True}]
    for query in queries:
        result = sql(history, query, jobs=jobs, members=members)
        assert result.columns, query
