"""Issue 13's data in a real browser against a real one-node server: each job's health pill
(with its reason) on the jobs list and the job's page, a heartbeat check's page (its ping URL
to copy, no Run button, a ping appearing as a run), the badge and its markdown, a run's CPU
time and peak memory, the form's Monitoring group and heartbeat executor, the skip reasons'
labels, and the views keeping focus inside a shadow root (the notebook widget)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from dkron_lab.testing import wait_for
from tests.ui.conftest import Api, Tab, open_tab, screenshot, shell_job, sign_in

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

HEARTBEAT = {"name": "hb-check", "schedule": "0 30 2 * * *", "executor": "heartbeat"}


def job_health(api: Api, name: str, health: str) -> dict[str, Any]:
    """Wait until ``name``'s health is ``health``; its JSON then."""
    seen: dict[str, Any] = {}

    def reached() -> bool:
        seen.update(api.job(name))
        return seen["health"] == health

    wait_for(reached, 30, f"{name} is {health}")
    return seen


def test_unhealthy_jobs_show_their_health_and_reason(api: Api, tab: Tab, tmp_path: Path) -> None:
    api.put_job(shell_job("slow-job", "sleep 30", max_duration="1s"))
    api.put_job(shell_job("bad-job", "echo disk full >&2; exit 1"))
    api.put_job(shell_job("fine-job", "true"))
    api.run("bad-job")
    api.ran("bad-job")
    api.run("slow-job")
    overdue = job_health(api, "slow-job", "overdue")
    failing = job_health(api, "bad-job", "failing")
    assert overdue["health_reason"] and failing["health_reason"]
    sign_in(tab, api.url, api.node.token)
    page = tab.page
    rows = page.locator("main .dk-jobs tbody tr")
    for name, health in (("slow-job", "overdue"), ("bad-job", "failing"), ("fine-job", "ok")):
        pill = rows.filter(has_text=name).locator(".dk-health")
        expect(pill).to_have_class(re.compile(f"dk-health-{health}"))
        assert pill.inner_text().startswith(health)
        assert pill.get_attribute("title") == api.job(name)["health_reason"] or health == "ok"
    slow = rows.filter(has_text="slow-job").locator(".dk-health")
    assert slow.get_attribute("title") == overdue["health_reason"]
    screenshot(page, "health", tmp_path)
    page.get_by_role("link", name="bad-job").click()
    summary = page.get_by_role("region", name="Summary")
    health = summary.locator("dd").filter(has=page.locator(".dk-health"))
    expect(health).to_have_text(f"failing {failing['health_reason']}")
    tab.assert_quiet()


def test_a_heartbeat_check_shows_its_ping_url_and_no_run_button(
    api: Api, browser: Any, tmp_path: Path
) -> None:
    api.put_job(HEARTBEAT)
    ping_url = api.job("hb-check")["ping_url"]
    assert ping_url.startswith("/v1/jobs/hb-check/ping?key=")
    for tab in open_tab(browser, permissions=["clipboard-read", "clipboard-write"]):
        heartbeat_page(api, tab, ping_url, tmp_path)


def heartbeat_page(api: Api, tab: Tab, ping_url: str, tmp_path: Path) -> None:
    sign_in(tab, api.url, api.node.token)
    page = tab.page
    page.goto(api.url + "/ui/#/jobs/hb-check")
    check = page.get_by_role("region", name="Heartbeat check")
    expect(check.get_by_label("Ping URL", exact=True)).to_have_value(api.url + ping_url)
    expect(check.get_by_label("Ping command", exact=True)).to_have_value(
        f'curl -fsS -X POST -d "done" "{api.url}{ping_url}"'
    )
    check.get_by_role("button", name="Copy Ping URL").click()
    expect(check.get_by_role("status").first).to_have_text("Copied.")
    assert page.evaluate("navigator.clipboard.readText()") == api.url + ping_url
    page.get_by_role("button", name="Disable hb-check").wait_for()
    assert page.get_by_role("button", name=re.compile("^Run")).count() == 0
    badge = page.get_by_role("region", name="Badge")
    expect(badge.get_by_role("img", name="status badge of hb-check")).to_be_visible()
    expect(badge.get_by_label("Badge markdown", exact=True)).to_have_value(
        f"![status]({api.url}/v1/jobs/hb-check/badge.svg)"
    )
    expect(page.locator("#executions")).to_contain_text("No execution yet.")
    check.scroll_into_view_if_needed()
    screenshot(page, "heartbeat", tmp_path)
    api.http.post("/v1/jobs/hb-check/ping", content="backup done").raise_for_status()
    runs = page.locator("#executions tbody tr")
    expect(runs).to_have_count(1)
    expect(runs.first).to_contain_text("Succeeded")
    expect(runs.first).to_contain_text("backup done")
    page.goto(api.url + "/ui/#/jobs?q=hb-check")
    row = page.locator("main .dk-jobs tbody tr").filter(has_text="hb-check")
    row.get_by_role("button", name="Disable hb-check").wait_for()
    assert row.get_by_role("button", name="Run hb-check").count() == 0
    tab.assert_quiet()


def test_a_shell_run_shows_its_cpu_time_and_peak_memory(api: Api, tab: Tab) -> None:
    api.put_job(shell_job("busy-job", "python3 -c 'sum(range(3_000_000))'"))
    api.run("busy-job")
    api.ran("busy-job")
    sign_in(tab, api.url, api.node.token)
    page = tab.page
    page.goto(api.url + "/ui/#/jobs/busy-job")
    used = re.compile(r"\d+\.\d\d s CPU · \d+\.\d MiB peak")
    row = page.locator("#executions tbody tr").first
    expect(row).to_contain_text(used)
    row.get_by_role("link").click()
    result = page.get_by_role("region", name="Result")
    expect(result).to_contain_text(re.compile("Resources" + used.pattern))
    page.goto(api.url + "/ui/#/runs")
    expect(page.locator("main .dk-runs tbody tr").filter(has_text="busy-job")).to_contain_text(used)
    tab.assert_quiet()


def test_the_form_saves_the_monitoring_fields_and_a_calendar(api: Api, tab: Tab) -> None:
    api.http.post(
        "/v1/calendars", json={"name": "holidays", "dates": ["2026-12-25"]}
    ).raise_for_status()
    api.put_job(shell_job("monitored", "true"))
    sign_in(tab, api.url, api.node.token)
    page = tab.page
    page.goto(api.url + "/ui/#/jobs/monitored/edit")
    group = page.get_by_role("group", name="Monitoring")
    group.get_by_label("Max duration").fill("soon")
    page.get_by_role("button", name="Save").click()
    error = page.locator('[data-field="max_duration"] .dk-field-error')
    expect(error).to_be_visible()
    expect(error).to_contain_text("max_duration")
    group.get_by_label("Max duration").fill("5m")
    group.get_by_label("Max lateness").fill("30s")
    group.get_by_label("When overdue").select_option("kill")
    calendar = group.get_by_label("Calendar", exact=True)
    assert calendar.locator("option").all_inner_texts() == ["none", "holidays"]
    calendar.select_option("holidays")
    group.get_by_label("Calendar days").select_option("only")
    page.get_by_role("button", name="Save").click()
    page.wait_for_url(re.compile(r"#/jobs/monitored$"))
    saved = api.job("monitored")
    assert {key: saved[key] for key in ("max_duration", "max_lateness", "on_overdue")} == {
        "max_duration": "5m",
        "max_lateness": "30s",
        "on_overdue": "kill",
    }
    assert (saved["calendar"], saved["calendar_mode"]) == ("holidays", "only")
    summary = page.get_by_role("region", name="Summary")
    expect(summary).to_contain_text("late after 30s; overdue after 5m, then killed")
    expect(summary).to_contain_text("holidays (only its days)")
    tab.assert_quiet("400")  # the refused max_duration


def test_the_form_makes_a_heartbeat_check(api: Api, tab: Tab) -> None:
    sign_in(tab, api.url, api.node.token)
    page = tab.page
    page.goto(api.url + "/ui/#/jobs/new")
    page.get_by_label("Name", exact=True).fill("made-check")
    page.get_by_label("Schedule", exact=True).fill("0 0 4 * * *")
    page.get_by_label("Executor", exact=True).select_option("heartbeat")
    expect(page.locator("#dk-executor-help")).to_contain_text("runs nothing")
    page.get_by_role("button", name="Create").click()
    page.wait_for_url(re.compile(r"#/jobs/made-check$"))
    made = api.job("made-check")
    assert made["executor"] == "heartbeat" and not made.get("executor_config")
    page.get_by_role("region", name="Heartbeat check").get_by_label(
        "Ping URL", exact=True
    ).wait_for()
    tab.assert_quiet()


def test_skip_reasons_have_labels(api: Api, tab: Tab) -> None:
    sign_in(tab, api.url, api.node.token)
    reasons = tab.page.evaluate("""async () => (await import("./views/charts.js")).SKIP_REASONS""")
    for reason in ("calendar", "running", "disabled", "policy", "expired"):
        assert reasons[reason] and reasons[reason] != reason


def test_views_keep_focus_inside_a_shadow_root(api: Api, tab: Tab) -> None:
    """The notebook widget hosts the views in a shadow root, where document.activeElement is
    the host: a re-render and the arrow keys must ask the root node instead."""
    sign_in(tab, api.url, api.node.token)
    focused = tab.page.evaluate(
        """async () => {
            const { h, rerender } = await import("./views/dom.js");
            const { roving } = await import("./views/charts.js");
            const host = document.createElement("div");
            document.body.append(host);
            const root = host.attachShadow({ mode: "open" });
            const box = h("div");
            root.append(box);
            const build = () => [h("button", { "data-key": "a" }, "a"),
                                 h("button", { "data-key": "b" }, "b")];
            rerender(box, build);
            box.querySelector('[data-key="b"]').focus();
            rerender(box, build);
            const afterRerender = root.activeElement?.dataset.key;
            const cells = [...box.querySelectorAll("button")];
            roving(box, cells, () => {});
            cells[1].focus();
            cells[1].dispatchEvent(new KeyboardEvent("keydown", { key: "Home", bubbles: true }));
            return [afterRerender, root.activeElement?.dataset.key];
        }"""
    )
    assert focused == ["b", "a"]
