"""The /ui pages against a real one-node server with tokens of every role, in Debian's
Chromium: the actions a role cannot take are not shown (GET /v1/whoami), "Run with overrides…"
on a job's page, the new-job form filled in from its address and telling the page that frames
it when it saved, the read-only fields taken from the OpenAPI document, durations under a
second in ms, and a 420 px wide page that does not overflow."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from dkron_lab.api.handlers import openapi_document
from dkron_lab.testing import auth_headers, one_node
from tests.ui.conftest import Api, Tab, open_tab, screenshot, shell_job, sign_in

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

VIEWER = "viewer-token-0123456789abcdef"
OPERATOR = "operator-token-0123456789abcdef"
NOTEBOOK = Path(__file__).parents[1] / "data" / "notebooks" / "report.ipynb"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """A one-node server with a viewer and an operator token besides its admin one, and
    ``echo-x`` (a shell job that prints $X) run once."""
    where = tmp_path_factory.mktemp("roles")
    tokens = where / "tokens.yml"
    tokens.write_text(
        "tokens:\n"
        f"  - {{name: vera, role: viewer, token: {VIEWER}}}\n"
        f"  - {{name: otto, role: operator, token: {OPERATOR}}}\n"
    )
    tokens.chmod(0o600)
    args = ["--api-tokens-file", str(tokens)]
    with (
        one_node(where / "dkron", args=args) as node,
        httpx.Client(base_url=node.url, headers=auth_headers(node.token), timeout=30) as http,
    ):
        made = Api(node=node, http=http)
        job = shell_job("echo-x", "echo x=$X")
        made.put_job({**job, "executor_config": {**job["executor_config"], "env": "X=0"}})
        made.run("echo-x")
        made.ran("echo-x")
        yield made


def shown(page: Any, role: str, name: str) -> Any:
    return page.get_by_role(role, name=name)


def test_whoami_names_the_token_and_its_role(api: Api) -> None:
    for token, expected in [
        (api.node.token, {"name": "admin", "role": "admin"}),
        (OPERATOR, {"name": "otto", "role": "operator"}),
        (VIEWER, {"name": "vera", "role": "viewer"}),
    ]:
        answer = httpx.get(f"{api.url}/v1/whoami", headers=auth_headers(token))
        assert answer.json() == expected
    assert httpx.get(f"{api.url}/v1/whoami").status_code == 401


def test_a_viewer_sees_no_action(api: Api, tab: Tab) -> None:
    sign_in(tab, api.url, VIEWER)
    page = tab.page
    page.locator("main .dk-jobs tbody tr").first.wait_for()
    page.wait_for_function("document.documentElement.dataset.role === 'viewer'")
    expect(shown(page, "link", "New job")).to_be_hidden()
    expect(shown(page, "button", "Run echo-x")).to_be_hidden()
    expect(page.get_by_label("Select echo-x")).to_be_hidden()
    headers = page.locator("main .dk-jobs thead th:visible").all_inner_texts()
    assert "Actions" not in headers

    page.goto(api.url + "/ui/#/jobs/echo-x")
    page.locator("#executions tbody tr").first.wait_for()
    for name in ["Run echo-x", "Disable echo-x", "Delete echo-x", "Run with overrides…"]:
        expect(shown(page, "button", name)).to_be_hidden()
    expect(shown(page, "link", "Edit")).to_be_hidden()
    expect(shown(page, "link", "Clone")).to_be_hidden()

    page.goto(api.url + "/ui/#/cluster")
    page.get_by_role("heading", name="Raft").wait_for()
    page.locator(".dk-raft").wait_for()
    expect(page.get_by_role("button", name=re.compile("^Remove"))).to_have_count(0, timeout=1)
    expect(page.get_by_role("button", name=re.compile("^Leave"))).to_be_hidden()
    tab.assert_quiet()


def test_an_operator_runs_and_toggles_but_does_not_delete_or_edit(api: Api, tab: Tab) -> None:
    sign_in(tab, api.url, OPERATOR)
    page = tab.page
    page.goto(api.url + "/ui/#/jobs/echo-x")
    page.locator("#executions tbody tr").first.wait_for()
    page.wait_for_function("document.documentElement.dataset.role === 'operator'")
    expect(shown(page, "button", "Run echo-x")).to_be_visible()
    expect(shown(page, "button", "Disable echo-x")).to_be_visible()
    expect(shown(page, "button", "Run with overrides…")).to_be_visible()
    expect(shown(page, "button", "Delete echo-x")).to_be_hidden()
    expect(shown(page, "link", "Edit")).to_be_hidden()

    page.goto(api.url + "/ui/#/cluster")
    page.locator(".dk-raft").wait_for()
    expect(page.get_by_role("button", name=re.compile("^Leave"))).to_be_hidden()
    tab.assert_quiet()


def test_an_admin_sees_every_action(api: Api, tab: Tab) -> None:
    sign_in(tab, api.url, api.node.token)
    page = tab.page
    page.goto(api.url + "/ui/#/cluster")
    page.locator(".dk-raft").wait_for()
    expect(page.get_by_role("button", name=re.compile("^Leave"))).to_be_visible()
    expect(page.get_by_role("button", name=re.compile("^Remove"))).to_be_visible()
    page.goto(api.url + "/ui/#/jobs/echo-x")
    expect(shown(page, "button", "Delete echo-x")).to_be_visible()
    expect(shown(page, "link", "Edit")).to_be_visible()
    tab.assert_quiet()


def test_run_with_overrides_from_the_job_page(api: Api, tab: Tab, tmp_path: Path) -> None:
    sign_in(tab, api.url, OPERATOR)
    page = tab.page
    page.goto(api.url + "/ui/#/jobs/echo-x")
    page.locator("#executions tbody tr").first.wait_for()
    before = len(api.http.get("/v1/jobs/echo-x/executions").json())

    shown(page, "button", "Run with overrides…").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Variable name").fill("1X")
    dialog.get_by_label("Variable value").fill("1")
    dialog.get_by_role("button", name="Run now").click()
    expect(dialog.get_by_role("alert")).to_contain_text("env name '1X' is not a variable name")
    assert len(api.http.get("/v1/jobs/echo-x/executions").json()) == before  # nothing ran

    dialog.get_by_label("Variable name").fill("X")
    screenshot(page, "overrides", tmp_path)
    dialog.get_by_role("button", name="Run now").click()
    expect(dialog).to_be_hidden()
    page.get_by_text("Done: run with overrides.").wait_for()
    api.ran("echo-x", before + 1)
    outputs = [e["output"] for e in api.http.get("/v1/jobs/echo-x/executions").json()]
    assert sorted(outputs) == sorted(["x=0\n"] * before + ["x=1\n"])
    assert api.job("echo-x")["executor_config"]["env"] == "X=***"  # the job is unchanged
    tab.assert_quiet("status of 400")  # the refused body


def test_the_new_job_form_is_filled_in_from_its_address(api: Api, tab: Tab) -> None:
    sign_in(tab, api.url, api.node.token)
    page = tab.page
    query = (
        f"executor=notebook&path={NOTEBOOK}&name=report&owner=alice&disabled=true&retries=2"
        "&tags=role%3Dlab&kernel=python3"
    )
    page.goto(f"{api.url}/ui/#/jobs/new?{query}")
    expect(page.get_by_label("Name", exact=True)).to_have_value("report")
    expect(page.get_by_label("Executor")).to_have_value("notebook")
    expect(page.get_by_label("Notebook path")).to_have_value(str(NOTEBOOK))
    expect(page.get_by_label("Kernel")).to_have_value("python3")
    expect(page.get_by_label("Owner", exact=True)).to_have_value("alice")
    expect(page.get_by_label("Disabled (no scheduled runs)")).to_be_checked()
    expect(page.get_by_label("Retries")).to_have_value("2")
    expect(page.get_by_label("Target tags (key=value a line)")).to_have_value("role=lab")
    tab.assert_quiet()


def test_a_framed_form_tells_its_parent_when_it_saved(api: Api, tab: Tab) -> None:
    sign_in(tab, api.url, api.node.token)  # the token is in this tab's sessionStorage
    page = tab.page
    parent = (
        "<!doctype html><title>parent</title><script>window.said = [];"
        "addEventListener('message', (e) => said.push({origin: e.origin, data: e.data}));"
        "</script><iframe style='width:1000px;height:800px' src='/ui/#/jobs/new?"
        f"executor=notebook&amp;path={NOTEBOOK}&amp;name=framed-report&amp;schedule=%40daily'>"
        "</iframe>"
    )
    page.route(
        f"{api.url}/parent.html",
        lambda route: route.fulfill(body=parent, content_type="text/html"),
    )
    page.goto(f"{api.url}/parent.html")
    frame = page.frame_locator("iframe")
    expect(frame.get_by_label("Name", exact=True)).to_have_value("framed-report")
    frame.get_by_role("button", name="Create").click()
    page.wait_for_function("window.said.length > 0")
    said = page.evaluate("window.said")
    assert said[0]["origin"] == api.url
    assert said[0]["data"]["type"] == "dkron-lab:job-saved"
    assert said[0]["data"]["job"] == "framed-report"
    assert api.job("framed-report")["executor_config"]["path"] == str(NOTEBOOK)
    tab.assert_quiet()


def test_read_only_fields_come_from_the_openapi_document(api: Api, tab: Tab) -> None:
    sign_in(tab, api.url, api.node.token)
    fields = tab.page.evaluate(
        """async () => {
            const { Client } = await import("./client.js");
            const { RestSource } = await import("./source.js");
            return new RestSource(new Client()).jobReadOnly();
        }"""
    )
    schemas = openapi_document()["components"]["schemas"]
    properties = dict(schemas["Job"]["properties"])
    for part in schemas["JobWithStats"]["allOf"]:
        properties.update(part.get("properties", {}))
    assert fields == sorted(key for key, value in properties.items() if value.get("readOnly"))
    assert {"id", "status", "next", "success_count", "last_results", "median_duration"} <= set(
        fields
    )
    assert "schedule" not in fields
    tab.assert_quiet()


def test_durations_under_a_second_are_in_ms(api: Api, tab: Tab) -> None:
    sign_in(tab, api.url, api.node.token)
    said = tab.page.evaluate(
        """async () => {
            const { duration } = await import("./views/dom.js");
            return [0, 0.0004, 0.035, 0.9994, 1.25, 42, 125].map(duration);
        }"""
    )
    assert said == ["0 ms", "0 ms", "35 ms", "999 ms", "1.3 s", "42 s", "2 min 5 s"]
    tab.assert_quiet()


def test_a_narrow_page_does_not_overflow(api: Api, browser: Any) -> None:
    for tab in open_tab(browser):
        sign_in(tab, api.url, api.node.token)
        page = tab.page
        page.set_viewport_size({"width": 420, "height": 900})
        page.locator("main .dk-jobs tbody tr").first.wait_for()
        for route in ["#/", "#/jobs/echo-x", "#/runs", "#/cluster"]:
            page.goto(f"{api.url}/ui/{route}")
            page.locator("main table").first.wait_for()
            overflow = page.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 0, f"{route} is {overflow}px wider than the window"
        nav = page.get_by_role("navigation", name="Main")
        assert nav.bounding_box()["width"] <= 420
        tab.assert_quiet()


def test_the_counters_come_from_one_request(api: Api, tab: Tab) -> None:
    asked: list[str] = []
    tab.page.on("request", lambda request: asked.append(request.url))
    sign_in(tab, api.url, api.node.token)
    page = tab.page
    page.locator("main .dk-tiles").wait_for()
    counts = api.http.get("/v1/counts").json()
    listed = api.http.get("/v1/jobs", params={"status": "success", "_end": 0})
    assert counts["statuses"]["success"] == int(listed.headers["X-Total-Count"])
    assert counts["total"] == int(api.http.get("/v1/jobs").headers["X-Total-Count"])
    tile = page.get_by_role("link", name=re.compile("Succeeded"))
    expect(tile).to_contain_text(str(counts["statuses"]["success"]))
    assert any(url.endswith("/v1/counts") for url in asked)
    assert not [url for url in asked if "_end=0" in url]  # no count query per status
    tab.assert_quiet()
