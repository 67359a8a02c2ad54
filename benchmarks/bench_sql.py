"""Benchmark ``POST /v1/sql``: a group-by over 10 million executions, end to end.

    .venv/bin/python benchmarks/bench_sql.py                       # 10M rows (~1 min to build)
    .venv/bin/python benchmarks/bench_sql.py --rows 1000000 --repeat 20
    .venv/bin/python benchmarks/bench_sql.py --workdir /tmp/bench-sql --keep   # reuse the file

The history file is filled with SQL (1,000 jobs, three nodes, one run a second, 90% success),
then a real one-node server runs in a child process on it, with the SQL resource mounted, and
this process times, per request, from before the POST to a pandas DataFrame in hand:

    SELECT job_name, avg(success::int) AS success_rate, count(*) AS runs
    FROM executions GROUP BY job_name

as Arrow IPC (what the kernel client asks for) and as JSON. For reference it also times the
same query on DuckDB alone, in this process, once the server has stopped. Target (issue 5):
the Arrow form in at most 300 ms at 10M rows.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
import httpx
import pandas as pd
import pyarrow as pa

from dkron_lab.credentials import API_TOKEN_FILE, read_secret
from dkron_lab.history.duckdb import DuckDBHistory
from dkron_lab.testing import auth_headers, free_port, server_config, wait_for
from tests.harness import Processes

QUERY = (
    "SELECT job_name, avg(success::int) AS success_rate, count(*) AS runs "
    "FROM executions GROUP BY job_name"
)
ARROW = "application/vnd.apache.arrow.stream"
JOBS = 1000

_FILL = """
INSERT INTO executions
SELECT
    (1767225600000000000 + i * 1000000000)::VARCHAR || '-node-' || (i % 3)::VARCHAR,
    'job-' || (i % {jobs})::VARCHAR,
    'node-' || (i % 3)::VARCHAR,
    1767225600000000000 + i * 1000000000,
    1,
    TIMESTAMPTZ '2026-01-01 00:00:00+00' + to_seconds(i) + INTERVAL 20 MILLISECOND,
    TIMESTAMPTZ '2026-01-01 00:00:00+00' + to_seconds(i) + INTERVAL 770 MILLISECOND,
    TIMESTAMPTZ '2026-01-01 00:00:00+00' + to_seconds(i),
    i % 10 <> 0,
    'run ' || i::VARCHAR || ' finished'
FROM range({first}, {last}) AS t(i)
"""


def build(path: Path, rows: int) -> float:
    """A history file with ``rows`` executions (schema by DuckDBHistory, rows by SQL)."""
    began = time.perf_counter()
    with DuckDBHistory(path):
        pass  # creates and migrates the file
    with duckdb.connect(str(path)) as con:
        step = 2_000_000
        for first in range(0, rows, step):
            con.execute(_FILL.format(jobs=JOBS, first=first, last=min(first + step, rows)))
        con.execute("CHECKPOINT")
    return time.perf_counter() - began


def serve(data_dir: Path, port: int) -> None:
    """Child mode: a one-node server on ``data_dir`` with /v1/sql, until SIGTERM. It keeps its
    admin token in ``data_dir`` (generated on its first start), where the parent reads it."""
    from dkron_lab.api.app import make_app
    from dkron_lab.node import Node

    async def main() -> None:
        config = server_config(data_dir, node_name="bench", http_addr=f"127.0.0.1:{port}")
        node = Node(config)
        await node.start()
        app = make_app(node)
        server = app.listen(port, address="127.0.0.1")
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        print("ready", flush=True)
        await stop.wait()
        server.stop()
        await node.stop(graceful=False)

    asyncio.run(main())


def time_calls(call: Callable[[], object], repeat: int) -> list[float]:
    call()  # warm up: pandas, pyarrow and the server's first query
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        call()
        times.append((time.perf_counter() - began) * 1000)
    return times


def arrow_frame(http: httpx.Client) -> pd.DataFrame:
    response = http.post("/v1/sql", json={"query": QUERY}, headers={"Accept": ARROW})
    response.raise_for_status()
    return pa.ipc.open_stream(pa.py_buffer(response.content)).read_all().to_pandas()


def fixed_cost(http: httpx.Client) -> pd.DataFrame:
    response = http.post("/v1/sql", json={"query": "SELECT 1 AS one"}, headers={"Accept": ARROW})
    response.raise_for_status()
    return pa.ipc.open_stream(pa.py_buffer(response.content)).read_all().to_pandas()


def json_frame(http: httpx.Client) -> pd.DataFrame:
    response = http.post("/v1/sql", json={"query": QUERY})
    response.raise_for_status()
    body = response.json()
    return pd.DataFrame(body["rows"], columns=[c["name"] for c in body["columns"]])


def duckdb_alone(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    return con.sql(QUERY).to_arrow_table().to_pandas()


def row(name: str, times: list[float]) -> list[str]:
    times = sorted(times)
    p95 = times[max(int(len(times) * 0.95) - 1, 0)]
    return [name, f"{statistics.median(times):.1f} ms", f"{p95:.1f} ms", f"{times[0]:.1f} ms"]


def print_table(rows: list[list[str]]) -> None:
    headers = ["", "median", "p95", "min"]
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    for r in [headers, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())


def bench(workdir: Path, rows: int, repeat: int) -> None:
    data_dir = workdir / "node"
    path = data_dir / "history.duckdb"
    if not path.exists():
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # as the node wants it: no warning
        print(f"building {rows:,} executions in {path} ...", flush=True)
        print(f"built in {build(path, rows):.1f} s, {path.stat().st_size / 1e6:,.0f} MB")
    port = free_port()
    table: list[list[str]] = []
    with Processes() as processes:
        child = processes.start([sys.executable, __file__, "--serve", str(data_dir), str(port)])
        wait_for(lambda: child.readline(timeout=120) == "ready" or None, 120, "the server")
        token = read_secret(data_dir / API_TOKEN_FILE)
        url = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=url, headers=auth_headers(token), timeout=120) as http:
            frame = arrow_frame(http)
            assert len(frame) == min(JOBS, rows) and int(frame["runs"].sum()) == rows, frame
            table.append(
                row("POST /v1/sql, Arrow -> pandas", time_calls(lambda: arrow_frame(http), repeat))
            )
            table.append(
                row("POST /v1/sql, JSON -> pandas", time_calls(lambda: json_frame(http), repeat))
            )
            table.append(
                row(
                    "POST /v1/sql, Arrow, SELECT 1 (fixed cost)",
                    time_calls(lambda: fixed_cost(http), repeat),
                )
            )
        child.terminate()
    with duckdb.connect(str(path), read_only=True) as con:
        alone = time_calls(lambda: duckdb_alone(con), repeat)
    table.append(row("DuckDB alone (same file, open, no server)", alone))
    print(f"\n{QUERY}\nover {rows:,} executions of {JOBS} jobs, {repeat} runs each:\n")
    print_table(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--workdir", type=Path, help="keep the history file here (reused)")
    parser.add_argument("--keep", action="store_true", help="do not delete --workdir")
    parser.add_argument("--serve", nargs=2, metavar=("DATA_DIR", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(Path(args.serve[0]), int(args.serve[1]))
        return
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-sql-"))
    try:
        bench(workdir, args.rows, args.repeat)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
