"""What happened over time, the cluster and SQL, in a real browser against a real one-node
server that was down for a few seconds: its every-second jobs then have skipped fires
(``catchup: skip``) and late starts (``catchup: all``). The run grid shows both, with the
reason and the lateness; the scatter has one point per run; the calendar counts today's runs;
the cluster page names the node as the leader and voter; the SQL tab shows rows, bars and the
server's message for a bad query."""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from dkron_lab.testing import auth_headers, one_node, wait_for
from tests.ui.conftest import Api, Tab, open_tab, screenshot, shell_job, sign_in

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

EVERY_SECOND = "* * * * * *"


def _executions(api: Api, job: str) -> list[dict[str, Any]]:
    answer = api.http.get("/v1/executions", params={"job": job, "_end": 1000})
    answer.raise_for_status()
    runs: list[dict[str, Any]] = answer.json()
    return runs


def _late(run: dict[str, Any]) -> bool:
    from datetime import datetime

    if not run["scheduled_at"] or run["finished_at"].startswith("0001"):
        return False
    started = datetime.fromisoformat(run["started_at"])
    return (started - datetime.fromisoformat(run["scheduled_at"])).total_seconds() > 1


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """A server with ``skipper`` (skipped fires, reason ``policy``) and ``laggard`` (fires run
    late after the restart), both disabled once that happened so their runs stay put."""
    directory = tmp_path_factory.mktemp("history") / "dkron"
    token = secrets.token_urlsafe(16)
    with (
        one_node(directory, token=token) as node,
        httpx.Client(base_url=node.url, headers=auth_headers(token), timeout=30) as http,
    ):
        first = Api(node=node, http=http)
        first.put_job(shell_job("skipper", "true", schedule=EVERY_SECOND, catchup="skip"))
        first.put_job(shell_job("laggard", "true", schedule=EVERY_SECOND, catchup="all"))
        first.ran("skipper", 2)
        first.ran("laggard", 2)
    time.sleep(3)  # the node is down: fires are missed
    with (
        one_node(directory, token=token) as node,
        httpx.Client(base_url=node.url, headers=auth_headers(token), timeout=30) as http,
    ):
        made = Api(node=node, http=http)
        wait_for(lambda: http.get("/v1/jobs/skipper/skipped").json(), 30, "skipped fires")
        wait_for(lambda: any(map(_late, _executions(made, "laggard"))), 30, "a late start")
        for name in ("skipper", "laggard"):
            made.http.post(f"/v1/jobs/{name}/toggle").raise_for_status()
        wait_for(lambda: not http.get("/v1/busy").json(), 30, "no run going on")
        time.sleep(1.5)  # a fire claimed just before the toggle has been recorded
        made.put_job(shell_job("oneshot", "echo hi"))
        made.run("oneshot")
        made.ran("oneshot")
        made.put_job(shell_job("transform", "true", schedule="", parent_job="oneshot"))
        made.put_job(shell_job("load", "true", schedule="", parent_job="transform"))
        yield made


def test_the_grid_shows_a_skipped_fire_with_its_reason(api: Api, tab: Tab, tmp_path: Path) -> None:
    sign_in(tab, api.url, api.node.token)
    page = tab.page
    page.goto(api.url + "/ui/#/jobs/skipper")
    skipped = page.locator(".dk-grid .dk-skipped").first
    skipped.wait_for()
    title = skipped.get_attribute("title") or ""
    assert title.startswith("Skipped: ") and "catch-up policy (policy)" in title
    spans = api.http.get("/v1/jobs/skipper/skipped").json()
    assert sum(
        int(c.get_attribute("data-count") or 0)
        for c in page.locator(".dk-skipped[data-reason]").all()
    ) == sum(span["count"] for span in spans)
    assert page.locator(".dk-grid .dk-success").count() >= 2
    # by keyboard: the grid is one tab stop; Home goes to the oldest entry, its words shown
    page.locator(".dk-grid [tabindex='0']").focus()
    page.keyboard.press("Home")
    first = page.locator(".dk-grid > *").first
    expect(first).to_be_focused()
    expect(page.locator(".dk-chart-detail").first).to_have_text(
        first.get_attribute("aria-label") or ""
    )
    tab.assert_quiet()


def test_the_grid_marks_a_late_start(api: Api, tab: Tab, tmp_path: Path) -> None:
    sign_in(tab, api.url, api.node.token)
    page = tab.page
    page.goto(api.url + "/ui/#/jobs/laggard")
    late = page.locator(".dk-grid [data-late=yes]").first
    late.wait_for()
    assert re.search(r"started \d+(\.\d)? s late", late.get_attribute("title") or "")
    expected = sum(map(_late, _executions(api, "laggard")))
    assert page.locator(".dk-grid [data-late=yes]").count() == expected
    late.click()  # a run's cell opens its execution
    page.wait_for_url(re.compile(r"#/jobs/laggard/executions/\d+-node1$"))
    tab.assert_quiet()


def test_the_scatter_has_one_point_per_run(api: Api, tab: Tab) -> None:
    sign_in(tab, api.url, api.node.token)
    page = tab.page
    page.goto(api.url + "/ui/#/jobs/laggard")
    scatter = page.locator("svg.dk-scatter")
    scatter.wait_for()
    finished = [
        run for run in _executions(api, "laggard") if not run["finished_at"].startswith("0001")
    ]
    assert len(finished) >= 3
    expect(scatter.locator("circle.dk-point")).to_have_count(len(finished))
    label = scatter.get_attribute("aria-label") or ""
    assert label.startswith(f"Duration of {len(finished)} runs by start time")
    assert "median" in label and "p95" in label
    tab.assert_quiet()


def test_the_calendar_counts_todays_runs(api: Api, tab: Tab) -> None:
    sign_in(tab, api.url, api.node.token)
    page = tab.page
    page.goto(api.url + "/ui/#/jobs/oneshot")
    today = page.locator(".dk-calendar .dk-day:not(.dk-blank)").last
    expect(today).to_have_attribute("aria-label", re.compile(r": 1 of 1 runs succeeded \(100%\)$"))
    expect(page.locator(".dk-calendar .dk-day:not(.dk-blank)")).to_have_count(84)
    assert "dk-share-4" in (today.get_attribute("class") or "")
    tab.assert_quiet()


def test_the_cluster_page_names_the_leader_and_its_voter(api: Api, tab: Tab) -> None:
    sign_in(tab, api.url, api.node.token)
    page = tab.page
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Cluster").click()
    page.wait_for_url(re.compile("#/cluster$"))
    member = page.locator("tr[data-node=node1]")
    expect(member).to_contain_text("leader")
    expect(member).to_contain_text("alive")
    expect(member).to_contain_text("server")
    voter = page.locator("tr[data-peer=node1]")
    expect(voter).to_contain_text("(this server)")
    expect(voter).to_contain_text("leader")
    raft = page.get_by_label("Raft on this server")
    term = api.http.get("/v1").json()["raft"]["term"]
    expect(raft).to_contain_text(f"Term{term}")
    expect(raft).to_contain_text("Leadernode1")
    # admin actions ask first, and Cancel leaves everything as it was
    page.get_by_role("button", name="Remove node1").click()
    page.get_by_role("button", name="Cancel").click()
    expect(page.get_by_role("button", name="Remove node1")).to_be_focused()
    page.get_by_role("button", name=re.compile("^Leave")).click()
    expect(page.get_by_role("button", name="Yes, leave")).to_be_focused()
    page.get_by_role("button", name="Cancel").click()
    assert len(api.http.get("/v1/raft/peers").json()) == 1
    tab.assert_quiet()


def test_the_sql_tab_runs_a_query_and_shows_the_servers_error(api: Api, tab: Tab) -> None:
    sign_in(tab, api.url, api.node.token)
    page = tab.page
    page.get_by_role("navigation", name="Main").get_by_role("link", name="SQL").click()
    query = page.get_by_label("Query", exact=True)
    query.fill(
        "SELECT job_name, count(*) AS runs FROM executions GROUP BY job_name ORDER BY job_name"
    )
    query.press("Control+Enter")
    rows = page.locator(".dk-sql-result tbody tr")
    expect(rows).to_have_count(3)
    assert rows.nth(0).locator("td").first.inner_text() == "laggard"
    expect(page.locator("svg.dk-bars rect")).to_have_count(3)
    page.get_by_role("status").filter(has_text="3 rows in").wait_for()
    query.fill("SELECT no_such_column FROM executions")
    page.get_by_role("button", name="Run").click()
    expect(page.get_by_role("alert")).to_contain_text("no_such_column")
    query.fill("DELETE FROM executions")
    query.press("Control+Enter")
    expect(page.get_by_role("alert")).to_contain_text("SELECT")
    # an example, saved under a name, is there after a reload
    page.get_by_label("Example").select_option("Failure rate by job")
    assert "failure_pct" in query.input_value()
    page.get_by_label("Save as").fill("failures")
    page.get_by_role("button", name="Save").click()
    page.reload()
    page.get_by_role("list", name="Saved queries").get_by_role(
        "button", name="failures", exact=True
    ).click()
    assert "failure_pct" in page.get_by_label("Query", exact=True).input_value()
    tab.assert_quiet("400")


def test_the_dependencies_graph_lays_parents_left_of_children(api: Api, tab: Tab) -> None:
    sign_in(tab, api.url, api.node.token)
    page = tab.page
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Dependencies").click()
    nodes = page.locator("svg.dk-graph a.dk-node")
    expect(nodes).to_have_count(3)
    assert nodes.evaluate_all("ns => ns.map(n => n.dataset.job)") == [
        "oneshot",
        "transform",
        "load",
    ]
    xs = nodes.evaluate_all("ns => ns.map(n => Number(n.querySelector('rect').getAttribute('x')))")
    assert xs[0] < xs[1] < xs[2]
    assert nodes.nth(0).get_attribute("aria-label") == "oneshot: succeeded"
    assert nodes.nth(2).get_attribute("aria-label") == "load: never run, after transform"
    expect(page.locator("svg.dk-graph path.dk-edge")).to_have_count(2)
    nodes.nth(1).click()
    page.wait_for_url(re.compile("#/jobs/transform$"))
    tab.assert_quiet()


def test_the_timeline_shows_past_runs_and_next_fires(api: Api, tab: Tab) -> None:
    sign_in(tab, api.url, api.node.token)
    page = tab.page
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Timeline").click()
    lane = page.locator("svg.dk-timeline g.dk-lane[data-job=oneshot]")
    lane.wait_for()
    label = lane.get_attribute("aria-label") or ""
    assert label.startswith("oneshot: 1 run in the last 24 h, 1 fire in the next 24 h, next at ")
    expect(lane.locator("rect.dk-run-bar.dk-success")).to_have_count(1)
    expect(lane.locator("line.dk-fire")).to_have_count(1)  # "0 0 3 * * *": once a day
    laggard = page.locator("svg.dk-timeline g.dk-lane[data-job=laggard]")
    ran = len(_executions(api, "laggard"))
    assert (laggard.get_attribute("aria-label") or "").startswith(
        f"laggard: {ran} runs in the last 24 h, 0 fires"
    )  # disabled: no fire ahead
    tab.assert_quiet()


def test_routes_of_the_new_pages(api: Api, tab: Tab) -> None:
    sign_in(tab, api.url, api.node.token)
    parsed = tab.page.evaluate(
        """async () => {
            const { parseRoute } = await import("./router.js");
            const hashes = ["#/cluster", "#/sql", "#/graph", "#/cluster/x"];
            return hashes.map((hash) => parseRoute(hash)?.view ?? null);
        }"""
    )
    assert parsed == ["cluster", "sql", "graph", None]


def test_screenshots_light_and_dark(api: Api, browser: Any, tmp_path: Path) -> None:
    for scheme in ("light", "dark"):
        suffix = "" if scheme == "light" else "-dark"
        for tab in open_tab(browser, color_scheme=scheme):
            sign_in(tab, api.url, api.node.token)
            page = tab.page
            job = "skipper" if scheme == "light" else "laggard"  # skipped fires; late starts
            page.goto(api.url + f"/ui/#/jobs/{job}")
            page.locator("svg.dk-scatter").wait_for()
            page.evaluate("document.getElementById('dk-history').scrollIntoView()")
            screenshot(page, f"history{suffix}", tmp_path)
            page.goto(api.url + "/ui/#/cluster")
            page.locator("tr[data-peer=node1]").wait_for()
            screenshot(page, f"cluster{suffix}", tmp_path)
            page.goto(api.url + "/ui/#/sql")
            page.get_by_label("Example").select_option("Failure rate by job")
            page.get_by_role("button", name="Run").click()
            page.locator("svg.dk-bars").wait_for()
            screenshot(page, f"sql{suffix}", tmp_path)
            page.goto(api.url + "/ui/#/timeline")
            page.locator("svg.dk-timeline g.dk-lane").first.wait_for()
            screenshot(page, f"timeline{suffix}", tmp_path)
            tab.assert_quiet()


def test_grid_entries_group_a_trigger_and_order_by_due_time(api: Api, tab: Tab) -> None:
    """The pure part of the grid: the executions of one trigger (two nodes, a retry) are one
    entry whose result is each node's last attempt; skipped spans sit at their first fire."""
    sign_in(tab, api.url, api.node.token)
    entries = tab.page.evaluate(
        """async () => {
            const { gridEntries, quantile } = await import("./views/charts.js");
            const run = (id, node, attempt, success, started, due) => ({
                id, group: 7, node_name: node, attempt, success, started_at: started,
                finished_at: "2026-03-01T12:00:09Z", scheduled_at: due });
            const due = "2026-03-01T12:00:00Z";
            const executions = [
                run("a", "n1", 1, false, "2026-03-01T12:00:02.500Z", due),
                run("b", "n1", 2, true, "2026-03-01T12:00:05Z", due),
                run("c", "n2", 1, true, "2026-03-01T12:00:00.200Z", due),
                { ...run("d", "n1", 1, true, "2026-03-01T11:00:00Z", null), group: 3 },
            ];
            const skipped = [{ reason: "window", first: "2026-03-01T11:30:00Z",
                               last: "2026-03-01T11:40:00Z", count: 11 }];
            const shown = gridEntries(executions, skipped).map((e) => [
                e.kind, e.status ?? e.reason, e.lateness ?? null, e.count ?? e.executions.length]);
            return { shown, q: [quantile([1, 2, 3, 4], 0.5), quantile([5], 0.95)] };
        }"""
    )
    assert entries["shown"] == [
        ["run", "success", None, 1],  # by hand: no due instant, no lateness
        ["skipped", "window", None, 11],
        ["run", "success", 0.2, 3],  # n1 failed, then its retry succeeded; lateness of the first
    ]
    assert entries["q"] == [2.5, 5]


def test_every_module_is_preloaded() -> None:
    """index.html asks for every module at once (no import waterfall): the list is whole."""
    static = Path(__file__).parents[2] / "dkron_lab" / "ui" / "static"
    listed = set(
        re.findall(r'<link rel="modulepreload" href="([^"]+)"', (static / "index.html").read_text())
    )
    modules = {str(p.relative_to(static)) for p in static.rglob("*.js")} - {"app.js"}
    assert listed == modules
