"""Benchmark the DuckDB execution history: append throughput and read latencies at 1M rows.

    .venv/bin/python benchmarks/bench_history.py                  # 1M rows, ~1 minute
    .venv/bin/python benchmarks/bench_history.py --rows 200000 --compare-insert-methods

Appends go through ``DuckDBHistory.append`` from one producer thread (building each Execution
is included), and the clock stops when ``flush()`` returns, i.e. when every row is committed.
``--compare-insert-methods`` also times the insert statements the writer could have used, on
raw duckdb, to show why it uses ``unnest`` of typed lists.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import psutil

from dkron_lab.history import rows as history_rows
from dkron_lab.history import writer
from dkron_lab.history.duckdb import DuckDBHistory
from dkron_lab.model.execution import Execution, execution_id

T0 = datetime(2025, 1, 1, tzinfo=UTC)
NODES = ("node-1", "node-2", "node-3")


def executions(first: int, count: int, jobs: int, output_chars: int) -> Iterator[Execution]:
    """Execution i: job i % jobs, started i seconds after T0, in start order (as in life)."""
    output = "x" * output_chars
    for i in range(first, first + count):
        started = T0 + timedelta(seconds=i)
        node = NODES[i % len(NODES)]
        yield Execution(
            id=execution_id(1_735_689_600_000_000_000 + i * 1_000_000_000, node),
            job_name=f"job-{i % jobs}",
            node_name=node,
            group=1_735_689_600_000_000_000 + i * 1_000_000_000,
            started_at=started,
            finished_at=started + timedelta(milliseconds=750),
            scheduled_at=started,
            success=i % 10 != 0,
            output=output,
        )


def fill(history: DuckDBHistory, rows: int, jobs: int, output_chars: int) -> list[list[str]]:
    """Append ``rows`` executions in steps, flushing after each; one table row per step."""
    step = max(rows // 5, 1)
    table, done, began = [], 0, time.perf_counter()
    while done < rows:
        n = min(step, rows - done)
        t = time.perf_counter()
        for execution in executions(done, n, jobs, output_chars):
            history.append(execution)
        history.flush()
        elapsed = time.perf_counter() - t
        done += n
        table.append([f"append rows {done - n:,}..{done:,}", f"{n / elapsed:,.0f} rows/s", "", ""])
    total = time.perf_counter() - began
    table.append([f"append {rows:,} rows, sustained", f"{rows / total:,.0f} rows/s", "", ""])
    return table


def latency(name: str, call: Callable[[], object], repeat: int = 200) -> list[str]:
    call()  # warm up
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        call()
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    p95 = times[int(len(times) * 0.95) - 1]
    return [name, f"{statistics.median(times):.2f} ms", f"{p95:.2f} ms", f"{times[-1]:.2f} ms"]


def reads(history: DuckDBHistory, rows: int, jobs: int) -> list[list[str]]:
    job = f"job-{jobs // 2}"
    some_id = next(executions(jobs // 2, 1, jobs, 0)).id
    fresh = itertools.count(rows)

    def append_one() -> None:
        history.append(next(executions(next(fresh), 1, jobs, 200)))
        history.flush()

    return [
        latency("list last 20 of a job", lambda: history.list_executions(job, end=20)),
        latency(
            "list page 50 at offset 500, output_size_limit=100",
            lambda: history.list_executions(job, start=500, end=550, output_size_limit=100),
        ),
        latency(
            "list first 20 by attempt ASC",
            lambda: history.list_executions(job, sort="attempt", order="ASC", end=20),
        ),
        latency("count(job)", lambda: history.count(job)),
        latency("count() all jobs", history.count),
        latency("get_execution(job, id)", lambda: history.get_execution(job, some_id)),
        latency("flush() with nothing queued", history.flush, repeat=10_000),
        latency("append 1 + flush (commit latency)", append_one),
    ]


def compare_insert_methods(
    directory: Path, rows: int = 20_000, batch: int = 2000
) -> list[list[str]]:
    """Rows/s of the ways a batch can be inserted with plain duckdb (no pyarrow/pandas)."""
    data = list(executions(0, rows, 1000, 200))
    ph = "(" + ", ".join("?" * 10) + ")"

    def values(b: list[Execution]) -> list[tuple[object, ...]]:
        return [history_rows.execution_row(e) for e in b]

    methods: dict[str, Callable[[duckdb.DuckDBPyConnection, list[Execution]], object]] = {
        "executemany (one row per statement)": lambda con, b: con.executemany(
            f"INSERT INTO executions VALUES {ph}", values(b)
        ),
        f"multi-row VALUES, {batch} rows per statement": lambda con, b: con.execute(
            f"INSERT INTO executions VALUES {', '.join([ph] * len(b))}",
            [v for r in values(b) for v in r],
        ),
        "unnest(?::T[]) per column + anti-join (chosen)": writer.insert_executions,
    }
    table = []
    for name, insert in methods.items():
        path = directory / f"compare-{len(table)}.duckdb"
        with DuckDBHistory(path):
            pass  # just the schema
        con = duckdb.connect(str(path))
        n = rows // 4 if name.startswith("executemany") else rows
        t = time.perf_counter()
        for i in range(0, n, batch):
            con.begin()
            insert(con, data[i : i + batch])
            con.commit()
        rate = n / (time.perf_counter() - t)
        table.append([f"insert method: {name}", f"{rate:,.0f} rows/s", "", ""])
        con.close()
    return table


def print_table(table: list[list[str]]) -> None:
    header = ["measurement", "median / rate", "p95", "max"]
    widths = [max(len(r[i]) for r in [header, *table]) for i in range(4)]
    for row in [header, ["-" * w for w in widths], *table]:
        cells = zip(row, widths, strict=True)
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(cells)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--output-chars", type=int, default=200)
    parser.add_argument("--compare-insert-methods", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-history-") as tmp:
        directory = Path(tmp)
        table = compare_insert_methods(directory) if args.compare_insert_methods else []
        path = directory / "history.duckdb"
        with DuckDBHistory(path) as history:
            table += fill(history, args.rows, args.jobs, args.output_chars)
        with DuckDBHistory(path) as history:  # reads from a reopened file, as after a restart
            table += reads(history, args.rows, args.jobs)
            size = sum(p.stat().st_size for p in directory.glob("history.duckdb*")) / 1e6
            rss = psutil.Process().memory_info().rss / 1e6
        label = f"file MB / process RSS MB at {args.rows:,} rows"
        table.append([label, f"{size:,.0f}", f"{rss:,.0f}", ""])
    print(
        f"duckdb {duckdb.__version__}, {args.rows:,} rows, {args.jobs:,} jobs, "
        f"{args.output_chars} output chars per row\n"
    )
    print_table(table)


if __name__ == "__main__":
    main()
