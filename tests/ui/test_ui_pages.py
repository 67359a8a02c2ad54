"""The standalone UI in a real browser against a real one-node server: serving and its
security headers, the token prompt and the start-up link's ``#token=``, the counters and the
jobs list filtered through the URL, actions with confirmation, a run's live output, Dkron UI's
hash routes, the dark theme, and no console error anywhere."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from tests.ui.conftest import Api, Tab, open_tab, screenshot, shell_job, sign_in

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def test_root_redirects_to_the_ui_relatively(api: Api) -> None:
    for path in ("/", "/ui"):
        answer = httpx.get(api.url + path, follow_redirects=False)
        assert (answer.status_code, answer.headers["Location"]) == (302, "ui/")


def test_the_page_is_public_with_a_strict_policy_and_no_inline_script(api: Api) -> None:
    answer = httpx.get(api.url + "/ui/")
    assert answer.status_code == 200
    policy = answer.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "default-src 'none'" in policy
    assert "unsafe-inline" not in policy
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    scripts = re.findall(r"<script[^>]*>(.*?)</script>", answer.text, re.S)
    assert scripts == [""]  # one module, by src
    assert 'src="/' not in answer.text and 'href="/' not in answer.text  # relative URLs only
    assert httpx.get(api.url + "/v1/jobs").status_code == 401  # the data is not public


def test_inline_script_is_refused_by_the_browser(api: Api, tab: Tab) -> None:
    sign_in(tab, api.url, api.node.token)
    ran = tab.page.evaluate(
        """() => { const s = document.createElement("script");
                   s.textContent = "window.injected = true"; document.head.append(s);
                   return window.injected === true; }"""
    )
    assert ran is False
    tab.assert_quiet("Content Security Policy")


def test_token_prompt_refuses_a_wrong_token_and_takes_the_right_one(api: Api, tab: Tab) -> None:
    page = tab.page
    page.goto(api.url + "/ui/")
    token = page.get_by_label("Token", exact=True)
    token.fill("wrong")
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("alert").filter(has_text="refused").wait_for()
    page.get_by_label("Token", exact=True).fill(api.node.token)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("link", name=re.compile("^3 Jobs")).wait_for()
    page.get_by_role("button", name="Sign out").click()
    page.get_by_label("Token", exact=True).wait_for()
    assert page.evaluate("sessionStorage.getItem('dkron-lab.token')") is None
    tab.assert_quiet("401")


def test_the_start_up_link_token_is_kept_in_the_tab_not_the_url(api: Api, tab: Tab) -> None:
    sign_in(tab, api.url, api.node.token)
    page = tab.page
    page.get_by_role("link", name=re.compile("^3 Jobs")).wait_for()
    assert "token" not in page.url and page.url.endswith("/ui/#/")
    assert page.evaluate("sessionStorage.getItem('dkron-lab.token')") == api.node.token
    tab.assert_quiet()


def rows(page: Any) -> list[str]:
    return page.locator("main .dk-jobs tbody th").all_inner_texts()


def test_counters_link_to_the_jobs_they_count(api: Api, tab: Tab, tmp_path: Path) -> None:
    sign_in(tab, api.url, api.node.token)
    page = tab.page
    counters = page.get_by_role("region", name="Counters")
    counters.get_by_text("node1").wait_for()  # the leader
    for label, count in (("Succeeded", 1), ("Failing", 1), ("Never run", 1), ("Running now", 0)):
        assert counters.get_by_role("link", name=f"{count} {label}").count() == 1
    page.locator("main .dk-jobs").wait_for()
    node = page.get_by_role("region", name="Nodes").locator("tbody tr")
    expect(node).to_have_count(1)
    assert re.match(r"node1 leader\t127\.0\.0\.1:\d+\talive\t0\t", node.inner_text())
    screenshot(page, "dashboard", tmp_path)
    counters.get_by_role("link", name="1 Failing").click()
    page.wait_for_url(re.compile(r"#/jobs\?status=failed$"))
    page.get_by_role("heading", name="Jobs: Failing").wait_for()
    expect(page.locator("main .dk-jobs tbody tr")).to_have_count(1)
    assert rows(page) == ["bad-job"]
    tab.assert_quiet()


def test_the_jobs_list_is_filtered_by_the_url(api: Api, tab: Tab) -> None:
    sign_in(tab, api.url, api.node.token)
    page = tab.page
    page.goto(api.url + "/ui/#/jobs?status=untriggered")
    page.get_by_role("heading", name="Jobs: Never run").wait_for()
    expect(page.locator("main .dk-jobs tbody tr")).to_have_count(1)
    row = page.locator("main .dk-jobs tbody tr")
    assert row.locator("th").inner_text() == "never-job"
    assert "Never run" in row.inner_text() and "Europe/Paris" in row.inner_text()
    assert page.get_by_label("Status").input_value() == "untriggered"
    page.get_by_label("Status").select_option("")
    page.wait_for_url(re.compile(r"#/jobs$"))
    expect(page.locator("main .dk-jobs tbody tr")).to_have_count(3)
    page.get_by_label("Search").fill("ok")
    page.wait_for_url(re.compile(r"#/jobs\?q=ok$"))
    expect(page.locator("main .dk-jobs tbody th")).to_have_text([re.compile("^OK job")])
    assert page.get_by_label("Search").evaluate("e => e === document.activeElement")
    api.put_job(shell_job("tagged", "true", metadata={"team": "data", "env": "prod"}))
    page.goto(api.url + "/ui/#/jobs?metadata=team%3Ddata")
    expect(page.locator("main .dk-jobs tbody th")).to_have_text(["tagged"])
    page.get_by_label("Metadata").fill("team=data, env=test")
    page.get_by_label("Metadata").press("Enter")
    page.wait_for_url(re.compile(r"metadata=team%3Ddata%2C\+?env%3Dtest$"))
    page.get_by_text("No job matches.").wait_for()
    tab.assert_quiet()


def test_toggle_and_delete_ask_first(api: Api, tab: Tab) -> None:
    api.put_job(shell_job("throwaway", "true"))
    sign_in(tab, api.url, api.node.token)
    page = tab.page
    page.goto(api.url + "/ui/#/jobs?q=throwaway")
    page.get_by_role("button", name="Disable throwaway").focus()  # by keyboard
    page.keyboard.press("Enter")
    expect(page.get_by_role("button", name="Yes, disable")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.get_by_role("button", name="Enable throwaway")).to_be_focused()
    assert api.job("throwaway")["disabled"] is True
    page.get_by_role("button", name="Delete throwaway").click()
    page.get_by_role("button", name="Cancel").click()
    page.get_by_role("button", name="Delete throwaway").click()
    page.get_by_role("button", name="Yes, delete").click()
    page.get_by_text("No job matches.").wait_for()
    assert api.http.get("/v1/jobs/throwaway").status_code == 404
    tab.assert_quiet()


def test_dkron_ui_routes_open_the_job_and_its_executions(api: Api, tab: Tab) -> None:
    sign_in(tab, api.url, api.node.token)
    page = tab.page
    page.goto(api.url + "/ui/#/jobs/ok-job/show")
    page.get_by_role("heading", name="OK job").wait_for()
    page.goto(api.url + "/ui/#/jobs/bad-job/show/executions")
    page.get_by_role("heading", name="bad-job").wait_for()
    executions = page.locator("#executions tbody tr")
    executions.first.wait_for()
    assert "Failed" in executions.first.inner_text()
    assert "exit status 1" in executions.first.inner_text()  # the output's last line
    assert page.evaluate("document.activeElement.id") == "dk-executions"
    executions.first.get_by_role("link").click()
    page.wait_for_url(re.compile(r"#/jobs/bad-job/executions/\d+-node1$"))
    page.locator(".dk-output[data-complete=yes]").wait_for()
    assert "no space left" in page.locator(".dk-output").inner_text()
    tab.assert_quiet()


def test_run_from_the_ui_and_watch_its_output_live(api: Api, tab: Tab, tmp_path: Path) -> None:
    hold = tmp_path / "HOLD"
    hold.touch()
    command = f"echo first line; while [ -e {hold} ]; do sleep 0.1; done; echo last line"
    api.put_job(shell_job("slow-job", command))
    sign_in(tab, api.url, api.node.token)
    page = tab.page
    page.goto(api.url + "/ui/#/jobs/slow-job")
    page.get_by_role("button", name="Run slow-job").click()
    page.get_by_role("button", name="Yes, run").click()
    page.locator("#executions tbody tr").filter(has_text="Running").first.wait_for()
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Running").click()
    busy = page.locator("main tbody tr").filter(has_text="slow-job")
    busy.get_by_role("link").nth(1).click()  # its start time: the execution's page
    page.wait_for_url(re.compile(r"#/jobs/slow-job/executions/\d+-node1$"))
    output = page.locator(".dk-output")
    output.filter(has_text="first line").wait_for()
    assert "last line" not in output.inner_text()  # seen while it runs
    screenshot(page, "execution-running", tmp_path)
    hold.unlink()
    output.filter(has_text="last line").wait_for()
    page.locator(".dk-output[data-complete=yes]").wait_for()
    page.get_by_role("region", name="Result").get_by_text("Succeeded").wait_for()
    assert output.inner_text() == "first line\nlast line\n"
    tab.assert_quiet()


def test_dark_theme_follows_the_system(api: Api, browser: Any, tmp_path: Path) -> None:
    for tab in open_tab(browser, color_scheme="dark"):
        sign_in(tab, api.url, api.node.token)
        page = tab.page
        page.locator("main .dk-jobs tbody tr").first.wait_for()
        background = page.evaluate("getComputedStyle(document.body).backgroundColor")
        assert background == "rgb(15, 20, 25)"
        screenshot(page, "dashboard-dark", tmp_path)
        page.set_viewport_size({"width": 420, "height": 900})
        screenshot(page, "dashboard-dark-narrow", tmp_path)
        tab.assert_quiet()


def test_narrow_light_screenshots(api: Api, browser: Any, tmp_path: Path) -> None:
    for tab in open_tab(browser, color_scheme="light"):
        sign_in(tab, api.url, api.node.token)
        page = tab.page
        page.locator("main .dk-jobs tbody tr").first.wait_for()
        assert page.evaluate("getComputedStyle(document.body).backgroundColor") == (
            "rgb(255, 255, 255)"
        )
        page.set_viewport_size({"width": 420, "height": 900})
        screenshot(page, "dashboard-narrow", tmp_path)
        page.goto(api.url + "/ui/#/jobs/ok-job")
        page.locator("#executions tbody tr").first.wait_for()
        page.set_viewport_size({"width": 1280, "height": 900})
        page.locator(".dk-history .dk-charts").wait_for()  # the History, not "Loading…"
        screenshot(page, "job", tmp_path)
        tab.assert_quiet()


ROUTES = {
    "#/": {"view": "dashboard"},
    "#/jobs?status=failed": {"view": "dashboard"},
    "#/busy": {"view": "busy"},
    "#/runs?status=failed": {"view": "runs"},
    "#/jobs/db.backup-1": {"view": "job", "name": "db.backup-1"},
    "#/jobs/a%20b/show": {"view": "job", "name": "a b"},
    "#/jobs/x/show/executions": {"view": "job", "name": "x", "focus": "executions"},
    "#/jobs/x/executions/17-node1": {"view": "execution", "name": "x", "id": "17-node1"},
    "#/jobs/x/show/other": None,
    "#/jobs/x/executions": None,
    "#/nodes": None,
}


def test_routes(api: Api, tab: Tab) -> None:
    sign_in(tab, api.url, api.node.token)
    parsed = tab.page.evaluate(
        """async (hashes) => {
            const { parseRoute } = await import("./router.js");
            return hashes.map((hash) => {
                const route = parseRoute(hash);
                if (route) delete route.query;
                return route;
            });
        }""",
        list(ROUTES),
    )
    assert dict(zip(ROUTES, parsed, strict=True)) == ROUTES
    tab.page.goto(api.url + "/ui/#/nodes")
    tab.page.get_by_role("alert").filter(has_text="No page at #/nodes").wait_for()
    tab.assert_quiet()


def test_the_client_authenticates_by_token_or_by_jupyter_cookie(api: Api, tab: Tab) -> None:
    sign_in(tab, api.url, api.node.token)
    headers = tab.page.evaluate(
        """async () => {
            const { Client } = await import("./client.js");
            document.cookie = "_xsrf=xsrf-value; path=/";
            const bearer = new Client({ auth: "bearer" });
            const jupyter = new Client({ api: "../dkron/v1", auth: "jupyter" });
            return { bearer: bearer.headers("POST"), read: jupyter.headers("GET"),
                     write: jupyter.headers("DELETE"), base: jupyter.url("jobs").pathname };
        }"""
    )
    assert headers["bearer"]["Authorization"] == f"Bearer {api.node.token}"
    assert "Authorization" not in headers["read"] and "X-XSRFToken" not in headers["read"]
    assert headers["write"]["X-XSRFToken"] == "xsrf-value"
    assert "Authorization" not in headers["write"]
    assert headers["base"] == "/dkron/v1/jobs"  # relative to the page, wherever it is
    tab.assert_quiet()


def test_output_keeps_terminal_colours_as_classes(api: Api, tab: Tab) -> None:
    api.put_job(shell_job("colours", r"printf '\033[1;31mred\033[0m plain \033[32mgreen\033[Kx\n'"))
    api.run("colours")
    api.ran("colours")
    sign_in(tab, api.url, api.node.token)
    page = tab.page
    page.goto(api.url + "/ui/#/jobs/colours/show/executions")
    page.locator("#executions tbody tr").first.get_by_role("link").click()
    output = page.locator(".dk-output[data-complete=yes]")
    output.wait_for()
    assert output.inner_text() == "red plain greenx\n"  # \033[K (erase line) is dropped
    assert output.locator("span.dk-fg-1.dk-bold").inner_text() == "red"
    assert "".join(output.locator("span.dk-fg-2").all_inner_texts()).strip() == "greenx"
    page.get_by_label("Find").fill("RE")
    page.get_by_text("2 found").wait_for()  # "red", "green"
    page.get_by_label("Find").press("Enter")
    page.get_by_text("2 of 2").wait_for()
    assert page.evaluate("CSS.highlights.get('dk-found').size") == 2
    tab.assert_quiet()


def test_runs_across_jobs_filtered_by_result(api: Api, tab: Tab) -> None:
    sign_in(tab, api.url, api.node.token)
    page = tab.page
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Runs").click()
    page.get_by_label("Result").select_option("failed")
    page.wait_for_url(re.compile(r"#/runs\?status=failed$"))
    rows = page.locator("main .dk-runs tbody tr")
    expect(rows.filter(has_text="bad-job")).to_have_count(1)
    assert all("Failed" in text for text in rows.all_inner_texts())
    page.get_by_label("Job").fill("ok-job")
    page.get_by_label("Job").press("Enter")
    page.wait_for_url(re.compile(r"#/runs\?status=failed&job=ok-job$"))
    page.get_by_text("No run matches.").wait_for()
    page.get_by_label("Result").select_option("success")
    expect(rows).to_have_count(3)
    rows.first.get_by_role("link").nth(1).click()
    page.locator(".dk-output[data-complete=yes]").filter(has_text="second line").wait_for()
    tab.assert_quiet()
