"""The job form in a real browser against a real one-node server: create a shell job with the
cron helper's words and next fires following the typing (and a refused schedule's message),
the server's 400 shown next to the field it names, Escape to cancel, raw JSON mode that
round-trips with the form, clone, and bulk actions on the jobs list."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from dkron_lab.testing import wait_for
from tests.ui.conftest import Api, Tab, open_tab, screenshot, shell_job, sign_in

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

WORDS = {
    "0 30 6 * * MON-FRI": "At 06:30, on Monday through Friday",
    "*/5 * * * *": "Every 5 minutes",
    "*/10 * * * * *": "Every 10 seconds",
    "30 * * * *": "At minute 30 of every hour",
    "0 */15 9-17 * * MON-FRI": (
        "Every 15 minutes, between 09:00 and 17:59, on Monday through Friday"
    ),
    "0 0 8,20 * * *": "At 08:00 and 20:00, every day",
    "0 15 10 1,15 * *": "At 10:15, on days 1 and 15 of the month",
    "0 0 12 * JAN-MAR 0": "At 12:00, on Sunday, in January through March",
    "5 4 * * 7": "At 04:05, on Sunday",
    "TZ=Europe/Paris 0 0 6 * * *": "At 06:00, every day (Europe/Paris)",
    "@every 1h30m": "Every 1 hour 30 minutes",
    "@daily": "Every day at 00:00",
    "@hourly": "Every hour, at minute 0",
    "@at 2030-05-01T09:30:00Z": "Once, at 2030-05-01 09:30:00Z",
    "@manually": "Never on its own: only when run by hand (API, UI) or after its parent job",
    "0 61 * * *": None,
    "1 2 3": None,
    "@sometimes": None,
    "@every soon": None,
}

ERRORS = {
    'shell executor: "command" is required, e.g. {"command": "echo hello"}': (
        "executor_config.command"
    ),
    "unknown executor 'shel'; installed: http, notebook, shell": "executor",
    "can't parse job schedule '61 * * * *': minute field '61': 61 is out of range": "schedule",
    "unknown time zone 'Europe/Pariss': use an IANA name": "timezone",
    "retries must be 0 or more, not -1": "retries",
    "invalid concurrency 'sometimes': use 'allow' (the default) or 'forbid'": "concurrency",
    "invalid concurrency_group 'a b': use letters": "concurrency_group",
    "the job can not have itself as parent: clear parent_job or name another job": "parent_job",
    "name contains illegal character ' ': use letters, digits": "name",
    "tags.role must be a string, not an object": "tags",
    "something else entirely": "",
}


def test_schedule_words_and_error_fields(api: Api, tab: Tab) -> None:
    sign_in(tab, api.url, api.node.token)
    words, fields = tab.page.evaluate(
        """async ([specs, messages]) => {
            const { describeSchedule } = await import("./views/cron.js");
            const { fieldOfError } = await import("./views/form.js");
            return [specs.map(describeSchedule), messages.map(fieldOfError)];
        }""",
        [list(WORDS), list(ERRORS)],
    )
    assert dict(zip(WORDS, words, strict=True)) == WORDS
    assert dict(zip(ERRORS, fields, strict=True)) == ERRORS
    tab.assert_quiet()


def test_form_routes(api: Api, tab: Tab) -> None:
    sign_in(tab, api.url, api.node.token)
    parsed = tab.page.evaluate(
        """async () => {
            const { parseRoute } = await import("./router.js");
            return ["#/jobs/new?from=a", "#/jobs/a/edit", "#/jobs/new/show"].map((hash) => {
                const route = parseRoute(hash);
                const from = route.query.get("from");
                delete route.query;
                return { ...route, from };
            });
        }"""
    )
    assert parsed == [
        {"view": "form", "from": "a"},
        {"view": "form", "name": "a", "from": None},
        {"view": "job", "name": "new", "from": None},  # a job called "new" keeps its page
    ]
    tab.assert_quiet()


def fires(page: Any) -> Any:
    return page.get_by_role("list", name="Next fires").get_by_role("listitem")


def test_create_a_shell_job_with_the_cron_helper(api: Api, tab: Tab) -> None:
    sign_in(tab, api.url, api.node.token)
    page = tab.page
    page.get_by_role("link", name="New job").click()
    page.wait_for_url(re.compile(r"#/jobs/new$"))
    expect(page.get_by_label("Name", exact=True)).to_be_focused()
    page.get_by_label("Name", exact=True).fill("made-in-form")
    schedule = page.get_by_label("Schedule", exact=True)
    words = page.locator("#dk-cron-words")
    schedule.fill("0 30 6 * * MON-FRI")
    expect(words).to_have_text("At 06:30, on Monday through Friday")
    expect(fires(page)).to_have_count(5)
    expect(fires(page).first).to_contain_text(re.compile(r" 06:30:00 UTC$"))
    page.get_by_label("Time zone", exact=True).fill("Asia/Tokyo")
    expect(fires(page).first).to_contain_text(re.compile(r" 06:30:00 Asia/Tokyo$"))
    schedule.fill("61 * * * *")  # the server's message, inline
    helper = page.locator(".dk-cron")
    expect(helper.get_by_role("alert")).to_contain_text("out of range")
    expect(fires(page)).to_have_count(0)
    assert words.inner_text() == ""  # no words for what the describer does not know
    schedule.fill("*/5 * * * *")
    expect(words).to_have_text("Every 5 minutes")
    expect(helper.get_by_role("alert")).to_be_hidden()
    expect(fires(page)).to_have_count(5)
    first, second = (fires(page).nth(i).inner_text() for i in range(2))
    assert re.search(r":[0-5][05]:00 Asia/Tokyo$", first) and first < second
    page.get_by_label("Run through /bin/sh").check()
    page.get_by_label("Metadata").fill("team=ui\nenv=test")
    page.get_by_label("Retries").fill("2")
    page.get_by_role("button", name="Create").click()  # no command yet: the server says so
    command = page.get_by_label("Command")
    expect(command).to_have_attribute("aria-invalid", "true")
    expect(command).to_be_focused()
    expect(page.locator('[data-field="executor_config.command"] [role=alert]')).to_contain_text(
        '"command" is required'
    )
    command.fill("echo made in form | tr a-z A-Z")
    page.get_by_label("Name", exact=True).press("Enter")  # Enter saves
    page.wait_for_url(re.compile(r"#/jobs/made-in-form$"))
    page.get_by_role("heading", name="made-in-form").wait_for()
    job = api.job("made-in-form")
    assert (job["schedule"], job["timezone"], job["retries"]) == ("*/5 * * * *", "Asia/Tokyo", 2)
    assert job["executor_config"] == {"command": "echo made in form | tr a-z A-Z", "shell": "true"}
    assert job["metadata"] == {"team": "ui", "env": "test"}
    tab.assert_quiet("400")


def test_escape_cancels(api: Api, tab: Tab) -> None:
    sign_in(tab, api.url, api.node.token)
    page = tab.page
    page.goto(api.url + "/ui/#/jobs/ok-job/edit")
    name = page.get_by_label("Name", exact=True)
    expect(name).to_have_value("ok-job")
    expect(name).to_have_attribute("readonly", "")
    expect(page.get_by_label("Schedule", exact=True)).to_be_focused()
    page.keyboard.press("Escape")
    page.wait_for_url(re.compile(r"#/jobs/ok-job$"))
    page.goto(api.url + "/ui/#/jobs/new")
    page.get_by_label("Name", exact=True).press("Escape")
    page.wait_for_url(re.compile(r"#/jobs$"))
    tab.assert_quiet()


def test_edit_in_json_mode(api: Api, tab: Tab) -> None:
    api.put_job(shell_job("json-job", "echo one", metadata={"team": "a"}))
    sign_in(tab, api.url, api.node.token)
    page = tab.page
    page.goto(api.url + "/ui/#/jobs/json-job")
    page.get_by_role("link", name="Edit", exact=True).click()
    page.wait_for_url(re.compile(r"#/jobs/json-job/edit$"))
    page.get_by_label("Retries").fill("1")  # a form edit the JSON shows
    page.get_by_role("button", name="Edit as JSON").click()
    text = page.get_by_label("The job as JSON")
    shown = json.loads(text.input_value())
    assert shown["retries"] == 1 and "success_count" not in shown and "next" not in shown
    shown |= {"retries": 3, "concurrency": "sometimes"}
    shown["executor_config"]["command"] = "echo two"
    text.fill("{ not json")
    page.get_by_role("button", name="Edit as form").click()  # refused: stays in JSON
    expect(page.locator('[data-field="json"] [role=alert]')).to_contain_text("Not a job in JSON")
    text.fill(json.dumps(shown))
    page.get_by_role("button", name="Edit as form").click()  # round trip
    expect(page.get_by_label("Retries")).to_have_value("3")
    expect(page.get_by_label("Command")).to_have_value("echo two")
    expect(page.get_by_label("Metadata")).to_have_value("team=a")
    page.get_by_role("button", name="Edit as JSON").click()
    page.get_by_role("button", name="Save").click()  # the server refuses the concurrency
    error = page.locator('[data-field="json"] [role=alert]')
    expect(error).to_contain_text("invalid concurrency 'sometimes'")
    text.fill(text.input_value().replace('"sometimes"', '"forbid"'))
    text.press("Control+Enter")  # saves from the text area
    page.wait_for_url(re.compile(r"#/jobs/json-job$"))
    job = api.job("json-job")
    assert (job["retries"], job["concurrency"]) == (3, "forbid")
    assert job["executor_config"]["command"] == "echo two"
    tab.assert_quiet("400")


def test_clone_a_job(api: Api, tab: Tab) -> None:
    sign_in(tab, api.url, api.node.token)
    page = tab.page
    page.goto(api.url + "/ui/#/jobs/ok-job")
    page.get_by_role("link", name="Clone", exact=True).click()
    page.wait_for_url(re.compile(r"#/jobs/new\?from=ok-job$"))
    page.get_by_role("heading", name="Clone ok-job").wait_for()
    expect(page.get_by_label("Name", exact=True)).to_have_value("ok-job-copy")
    expect(page.get_by_label("Command")).to_have_value("echo all fine; echo second line")
    page.get_by_label("Name", exact=True).fill("ok-clone")
    page.get_by_role("button", name="Create").click()
    page.wait_for_url(re.compile(r"#/jobs/ok-clone$"))
    clone, original = api.job("ok-clone"), api.job("ok-job")
    assert clone["executor_config"] == original["executor_config"]
    assert clone["schedule"] == original["schedule"] and clone["displayname"] == "OK job"
    assert clone["success_count"] == 0 and original["success_count"] >= 3
    tab.assert_quiet()


def test_bulk_disable_two_jobs(api: Api, tab: Tab) -> None:
    for name in ("bulk-a", "bulk-b", "bulk-c"):
        api.put_job(shell_job(name, "true"))
    sign_in(tab, api.url, api.node.token)
    page = tab.page
    page.goto(api.url + "/ui/#/jobs?q=bulk-")
    expect(page.locator("main .dk-jobs tbody tr")).to_have_count(3)
    page.get_by_label("Select bulk-a").click()  # each click re-draws the list
    expect(page.get_by_label("Select bulk-a")).to_be_checked()
    page.get_by_label("Select bulk-b").click()
    bar = page.get_by_role("group", name="2 jobs selected")
    expect(bar.get_by_role("button", name="Enable selected")).to_be_disabled()  # none is off
    bar.get_by_role("button", name="Disable selected").click()
    expect(bar).to_contain_text("Disable 2 jobs?")
    expect(bar.get_by_role("button", name="Yes, disable 2 jobs")).to_be_focused()
    page.keyboard.press("Enter")
    page.get_by_text("Done: disable 2 jobs.").wait_for()
    wait_for(lambda: api.job("bulk-b")["disabled"], 10, "bulk-b disabled")
    assert [api.job(n)["disabled"] for n in ("bulk-a", "bulk-b", "bulk-c")] == [True, True, False]
    expect(bar.get_by_role("button", name="Enable selected")).to_be_enabled()
    page.get_by_label("Select every job on this page").click()
    bar = page.get_by_role("group", name="3 jobs selected")
    bar.get_by_role("button", name="Delete selected").click()
    bar.get_by_role("button", name="Cancel").click()  # nothing deleted
    assert api.http.get("/v1/jobs/bulk-c").status_code == 200
    tab.assert_quiet()


def test_form_screenshots(api: Api, browser: Any, tmp_path: Path) -> None:
    for scheme, name in (("light", "form"), ("dark", "form-dark")):
        for tab in open_tab(browser, color_scheme=scheme):
            sign_in(tab, api.url, api.node.token)
            page = tab.page
            page.goto(api.url + "/ui/#/jobs/new")
            page.get_by_label("Name", exact=True).fill("nightly-report")
            page.get_by_label("Display name").fill("Nightly report")
            page.get_by_label("Schedule", exact=True).fill("0 30 6 * * MON-FRI")
            page.get_by_label("Time zone", exact=True).fill("Europe/Berlin")
            page.get_by_label("Command").fill("python3 /srv/report.py --since yesterday")
            page.get_by_label("Timeout").fill("30m")
            expect(fires(page).first).to_contain_text("Europe/Berlin")
            page.set_viewport_size({"width": 1280, "height": 1000})
            page.evaluate("document.activeElement.blur(); window.scrollTo(0, 0)")
            screenshot(page, name, tmp_path)
            tab.assert_quiet()
