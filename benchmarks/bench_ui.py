"""The web UI's figures of issue 12, measured with Playwright on Debian's Chromium; prints a table.

    python benchmarks/bench_ui.py                       # about 1 minute
    python benchmarks/bench_ui.py --rounds 3            # fewer page loads
    python benchmarks/bench_ui.py --jobs 100000 --no-live  # the 100k mode (about 5 minutes)

What it measures, against one real ``dkron-lab agent --server`` holding 10,000 jobs:

1. ``/ui`` first load to a usable jobs list: a fresh browser context (empty cache) opens the
   start-up link, and the time is the page's own clock (``performance.now()``, from the start
   of navigation) when the 25 rows of the first page are in the table;
2. the front-end JavaScript the page loads: every script response of that load, raw and gzipped
   (level 6, as a proxy or server would send it);
3. a page change and a filter on the open jobs list (the server pages and filters): the page's
   clock from setting the address (``#/jobs?page=2``, ``#/jobs?q=job-00019``) to the frame where
   the rows the server answers are drawn;
4. live output: a job prints a line with the time it printed it; the page showing its running
   execution notes the time that line appears (the same machine's clock).

It prints the load average before and after: the browser and the server share the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import secrets
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from _http import RawHTTP
from playwright.sync_api import sync_playwright

from dkron_lab.testing import auth_headers, one_node, wait_for

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
JOBS = 10_000


async def create_jobs(url: str, token: str, count: int, clients: int = 16) -> float:
    connections = [await RawHTTP.connect(url, token) for _ in range(clients)]
    queue = iter(range(count))

    async def worker(http: RawHTTP) -> None:
        for i in queue:
            body = {
                "name": f"job-{i:06d}",
                "schedule": f"0 {i % 60} 3 * * *",
                "executor": "shell",
                "executor_config": {"command": "/bin/true"},
                "metadata": {"team": f"t{i % 10}"},
            }
            status, text = await http.request("POST", "/v1/jobs", json.dumps(body).encode())
            assert status == 201, text

    start = time.perf_counter()
    await asyncio.gather(*(worker(http) for http in connections))
    for connection in connections:
        connection.close()
    return time.perf_counter() - start


def first_loads(
    browser: Any, url: str, token: str, rounds: int
) -> tuple[list[float], dict[str, bytes]]:
    """Load times (ms) of `rounds` cold loads, and the scripts the first one loaded."""
    times: list[float] = []
    scripts: dict[str, bytes] = {}
    for round_ in range(rounds):
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        loaded: list[Any] = []

        def keep(response: Any, into: list[Any] = loaded) -> None:
            into.append(response)

        page.on("response", keep)
        page.goto(f"{url}/ui/#token={token}", wait_until="commit")
        # The page's own clock at the first animation frame where the 25 rows are there.
        shown = page.wait_for_function(
            "() => document.querySelectorAll('main .dk-jobs tbody tr').length >= 25"
            " && performance.now()",
            polling="raf",
            timeout=30_000,
        )
        times.append(shown.json_value())
        # Let the page settle (its counters come once the list has) before the next load: a
        # count goes over every job, and one left running would slow the next page's answers.
        page.locator("main .dk-tiles").wait_for(timeout=120_000)
        if round_ == rounds - 1:
            calls = page.evaluate(
                """performance.getEntriesByType("resource").map((e) =>
                    [e.name.replace(/^.*?\\/(v1|ui)\\//, "$1/"), e.startTime, e.responseEnd])"""
            )
            print("what the last load fetched (start -> end, ms after navigation start):")
            for name, began, ended in calls:
                print(f"  {began:7.0f} -> {ended:7.0f} ms  {name}")
        if round_ == 0:
            scripts = {r.url: r.body() for r in loaded if r.request.resource_type == "script"}
        context.close()
    return times, scripts


ROWS = "[...document.querySelectorAll('main .dk-jobs tbody tr th a')].map((a) => a.textContent)"


def page_and_filter(browser: Any, url: str, token: str, rounds: int) -> dict[str, list[float]]:
    """Times (ms) from setting the address to the frame where the jobs list shows page 2, and
    the jobs a search matches, each from the first page of the list, `rounds` times."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto(f"{url}/ui/#token={token}")
    changes = {
        "page 2": ("#/jobs?page=2", "(rows) => rows[0] === 'job-000025'"),
        "filter q=job-00019 (10 matches)": (
            "#/jobs?q=job-00019",
            "(rows) => rows.length === 10 && rows.every((r) => r.startsWith('job-00019'))",
        ),
    }
    times: dict[str, list[float]] = {name: [] for name in changes}
    for _ in range(rounds):
        for name, (hash_, done) in changes.items():
            page.evaluate("location.hash = '#/jobs'")
            page.wait_for_function(f"() => {ROWS}[0] === 'job-000000'", timeout=60_000)
            # Settled: the counters (asked for once the list came) have come too.
            page.locator("main .dk-tiles").wait_for(timeout=60_000)
            page.evaluate(
                "(hash) => { window.benchStart = performance.now(); location.hash = hash; }",
                hash_,
            )
            took = page.wait_for_function(
                f"() => ({done})({ROWS}) && performance.now() - window.benchStart",
                polling="raf",
                timeout=60_000,
            )
            times[name].append(took.json_value())
    context.close()
    return times


def live_output(browser: Any, api: httpx.Client, url: str, token: str, rounds: int) -> list[float]:
    """How long (ms) after a job prints a line the execution's page shows it."""
    command = "sleep 2; echo MARK $(date +%s%3N); sleep 2"
    job: dict[str, Any] = {"name": "live", "schedule": "@manually", "executor": "shell"}
    job["executor_config"] = {"command": command, "shell": "true"}
    api.post("/v1/jobs", json=job).raise_for_status()
    delays = []
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{url}/ui/#token={token}")
    page.locator("main .dk-jobs").wait_for()
    for _ in range(rounds):
        api.post("/v1/jobs/live/run").raise_for_status()
        running = wait_for(
            lambda: [e for e in api.get("/v1/busy").json() if e["job_name"] == "live"], 10, "a run"
        )
        page.goto(f"{url}/ui/#/jobs/live/executions/{running[0]['id']}")
        seen = page.evaluate(
            """() => new Promise((resolve) => {
                const look = () => {
                  const text = document.querySelector(".dk-output")?.textContent || "";
                  const found = /MARK (\\d+)/.exec(text);
                  if (found) resolve([Number(found[1]), Date.now()]);
                  else setTimeout(look, 5);
                };
                look();
            })"""
        )
        delays.append(seen[1] - seen[0])
        wait_for(lambda: not api.get("/v1/busy").json(), 15, "the run ended")
    context.close()
    return delays


def quiet(threshold: float, most: float) -> float:
    """Wait until the 1-minute load average is under `threshold` (or `most` seconds)."""
    start = time.monotonic()
    while threshold and os.getloadavg()[0] >= threshold and time.monotonic() - start < most:
        time.sleep(5)
    return time.monotonic() - start


def measure(url: str, token: str, options: argparse.Namespace, results: dict[str, str]) -> None:
    with (
        httpx.Client(base_url=url, headers=auth_headers(token), timeout=30) as api,
        sync_playwright() as pw,
    ):
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        times, scripts = first_loads(browser, url, token, options.rounds)
        results[f"/ui first load to a usable jobs list ({options.jobs:,} jobs), cold cache"] = (
            f"median {statistics.median(times):.0f} ms, max {max(times):.0f} ms "
            f"({options.rounds} loads)"
        )
        raw = sum(len(body) for body in scripts.values())
        zipped = sum(len(gzip.compress(body, 6)) for body in scripts.values())
        results["front-end JavaScript the page loads"] = (
            f"{len(scripts)} files, {raw / 1024:.1f} KB raw, {zipped / 1024:.1f} KB gzipped"
        )
        for name, took in page_and_filter(browser, url, token, options.rounds).items():
            results[f"jobs list ({options.jobs:,} jobs): {name}"] = (
                f"median {statistics.median(took):.0f} ms, max {max(took):.0f} ms "
                f"({options.rounds} times)"
            )
        if not options.no_live:
            delays = live_output(browser, api, url, token, 3)
            results["live output: printed -> shown in the page"] = (
                f"median {statistics.median(delays):.0f} ms, max {max(delays):.0f} ms (3 runs)"
            )
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=JOBS)
    parser.add_argument("--no-live", action="store_true", help="skip the live output figure")
    parser.add_argument(
        "--quiet-load",
        type=float,
        default=0.0,
        help="once the jobs are made, wait (at most --quiet-wait s) for the 1-minute load "
        "average to drop under this before measuring",
    )
    parser.add_argument("--quiet-wait", type=float, default=900.0)
    parser.add_argument(
        "--url",
        help="measure this running server, which already holds --jobs jobs named as this "
        "script names them (e.g. one another run of it made), instead of starting one",
    )
    parser.add_argument("--token", default="", help="its API token (with --url)")
    options = parser.parse_args()
    results: dict[str, str] = {}
    load_before = os.getloadavg()[0]
    if options.url:
        measure(options.url, options.token, options, results)
    else:
        token = secrets.token_urlsafe(16)
        with tempfile.TemporaryDirectory() as tmp, one_node(Path(tmp), token=token) as node:
            elapsed = asyncio.run(create_jobs(node.url, token, options.jobs))
            results["jobs created through the API"] = f"{options.jobs:,} in {elapsed:.1f} s"
            waited = quiet(options.quiet_load, options.quiet_wait)
            load_before = os.getloadavg()[0]
            if options.quiet_load:
                results["waited for the load to drop"] = f"{waited:.0f} s"
            measure(node.url, token, options, results)
    results["load average (1 min) before -> after"] = (
        f"{load_before:.2f} -> {os.getloadavg()[0]:.2f}"
    )
    width = max(map(len, results))
    print(f"{'figure':<{width}}  measured")
    for name, value in results.items():
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
