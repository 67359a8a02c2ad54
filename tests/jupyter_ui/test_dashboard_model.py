"""The dashboard's model against a real headless dkron-lab server, without a browser or kernel.

The test plays the front end: it feeds the widget's comm the messages the JS module sends
(``update`` of ``selected``, ``custom`` actions) and reads the traits the worker thread sets, as the
JS module would render them. ``conftest.RecordingComm`` keeps what the widget sent out."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest

from dkron_lab.client import Client
from dkron_lab.errors import ValidationError
from dkron_lab.jupyter.widget import Dashboard, job_from_form, job_row
from dkron_lab.testing import free_port, wait_for

WAIT = 60.0  # generous: two cores shared with other test runs; waits end as soon as they hold


def shell_job(name: str, command: str = "echo hello", **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        "schedule": "@every 1h",
        "executor": "shell",
        "executor_config": {"command": command, "shell": "true"},
        **fields,
    }


def play(widget: Dashboard, action: str, **arguments: Any) -> None:
    """What the JS module's ``model.send({action, ...})`` delivers to the kernel."""
    content = {"action": action, **arguments}
    widget.comm.handle_msg(
        {"content": {"data": {"method": "custom", "content": content}}, "buffers": []}
    )


def click_row(widget: Dashboard, name: str) -> None:
    """What ``model.set("selected", name); model.save_changes()`` delivers."""
    state = {"method": "update", "state": {"selected": name}, "buffer_paths": []}
    widget.comm.handle_msg({"content": {"data": state}, "buffers": []})


def row(widget: Dashboard, name: str) -> dict[str, Any] | None:
    return next((job for job in widget.jobs if job["name"] == name), None)


def until(probe: Callable[[], Any], what: str) -> Any:
    return wait_for(probe, WAIT, what)


@pytest.fixture
def dashboard(client: Client) -> Iterator[Callable[..., Dashboard]]:
    made: list[Dashboard] = []

    def make(**options: Any) -> Dashboard:
        widget = Dashboard(options.pop("client", client), refresh=options.pop("refresh", 0.5))
        made.append(widget)
        return widget

    yield make
    for widget in made:
        widget.close()


def test_lists_jobs_with_next_run_and_last_result(client: Client, dashboard: Any) -> None:
    client.put_job(shell_job("paris", timezone="Europe/Paris", schedule="0 0 9 * * *"))
    client.put_job(shell_job("plain"))
    widget = dashboard()

    until(lambda: row(widget, "paris") and row(widget, "plain"), "both jobs listed")
    paris = row(widget, "paris")
    assert paris is not None
    assert paris["next"].endswith(("+01:00", "+02:00")) and "T09:00:00" in paris["next"]
    assert paris["last_result"] == "" and paris["last_run"] == ""

    client.run_job("plain", wait=True)
    until(lambda: (row(widget, "plain") or {}).get("last_result") == "success", "last result")
    assert widget.members[0]["Name"] == "t" and widget.leader == "t"
    assert widget.last_refresh and "refresh" not in widget.errors

    # What reached the front end: the module as text, then updates that carry the jobs.
    opened = [data for kind, data in widget.comm.messages if kind == "comm_open"]
    assert "export default" in opened[0]["state"]["_esm"]
    assert not re.search(r"\bimport\b", opened[0]["state"]["_esm"])  # nothing from a CDN
    sent = [data["state"] for kind, data in widget.comm.messages if kind == "comm_msg"]
    assert any("paris" in str(state.get("jobs")) for state in sent)


def test_run_from_the_frontend_shows_the_execution(client: Client, dashboard: Any) -> None:
    client.put_job(shell_job("greet", "echo hello from greet"))
    widget = dashboard()
    until(lambda: row(widget, "greet"), "job listed")
    click_row(widget, "greet")
    play(widget, "run", job="greet")

    executions = until(lambda: [e for e in widget.executions if e["finished_at"]], "execution")
    assert executions[0]["success"] is True
    assert "hello from greet" in executions[0]["output"]
    assert widget.notice == "run of 'greet' started"
    assert client.executions("greet")[0]["id"] == executions[0]["id"]


def test_enable_disable_and_delete(client: Client, dashboard: Any) -> None:
    client.put_job(shell_job("switch"))
    widget = dashboard()
    until(lambda: row(widget, "switch"), "job listed")

    play(widget, "disable", job="switch")
    until(lambda: (row(widget, "switch") or {}).get("disabled") is True, "disabled in the widget")
    play(widget, "disable", job="switch")  # twice: still disabled, not toggled back
    until(lambda: widget.notice == "'switch' disabled", "second disable served")
    assert client.job("switch")["disabled"] is True

    play(widget, "enable", job="switch")
    until(lambda: (row(widget, "switch") or {}).get("disabled") is False, "enabled again")
    assert client.job("switch")["disabled"] is False

    click_row(widget, "switch")
    play(widget, "delete", job="switch")
    until(lambda: row(widget, "switch") is None and widget.jobs == [], "job gone")
    assert client.jobs() == [] and widget.selected == ""


def test_action_on_a_missing_job_is_shown_not_raised(client: Client, dashboard: Any) -> None:
    widget = dashboard()
    play(widget, "run", job="nope")
    error = until(lambda: widget.errors.get("action"), "error shown")
    assert error["type"] == "JobNotFound" and "nope" in error["error"]


def test_schedule_preview_in_the_jobs_timezone(dashboard: Any) -> None:
    widget = dashboard()
    play(widget, "preview", schedule="0 9 * * *", timezone="Asia/Tokyo")
    preview = until(lambda: widget.preview, "preview")
    assert preview["timezone"] == "Asia/Tokyo"
    assert len(preview["next"]) == 5
    assert all(t.endswith("T09:00:00+09:00") for t in preview["next"])

    play(widget, "preview", schedule="every day at nine", timezone="Asia/Tokyo")
    error = until(lambda: widget.errors.get("preview"), "preview error")
    assert error["type"] == "InvalidSchedule" and "every day at nine" in error["error"]
    assert widget.preview == {}

    play(widget, "preview", schedule="@daily", timezone="Mars/Olympus")
    error = until(lambda: "Mars" in str(widget.errors.get("preview")), "timezone error")
    assert widget.errors["preview"]["type"] == "InvalidSchedule"


def test_form_shows_the_servers_validation_error_then_saves(client: Client, dashboard: Any) -> None:
    widget = dashboard()
    form = {
        "name": "nightly",
        "schedule": "not a schedule",
        "timezone": "America/New_York",
        "executor": "shell",
        "command": "echo nightly | tr a-z A-Z",
        "tags": "role=web, dc=eu",
        "retries": "2",
        "concurrency": "forbid",
        "disabled": False,
    }
    play(widget, "save", form=form)
    error = until(lambda: widget.errors.get("form"), "form error")
    assert error["type"] == "InvalidSchedule" and "not a schedule" in error["error"]
    assert client.jobs() == []

    play(widget, "save", form=form | {"schedule": "0 30 6 * * MON-FRI"})
    until(lambda: row(widget, "nightly"), "saved job listed")
    assert "form" not in widget.errors and widget.selected == "nightly"
    saved = client.job("nightly")
    assert saved["tags"] == {"role": "web", "dc": "eu"}
    assert saved["retries"] == 2 and saved["concurrency"] == "forbid"
    assert saved["timezone"] == "America/New_York" and "T06:30:00-0" in saved["next"]
    assert saved["executor_config"] == {"command": "echo nightly | tr a-z A-Z", "shell": "true"}

    client.put_job(saved | {"metadata": {"owner": "ops"}})  # edited elsewhere meanwhile
    play(widget, "save", form=form | {"schedule": "@every 2h", "disabled": True})
    until(lambda: (row(widget, "nightly") or {}).get("schedule") == "@every 2h", "edit saved")
    edited = client.job("nightly")
    assert edited["disabled"] is True and edited["metadata"] == {"owner": "ops"}


def test_form_creates_a_notebook_job(client: Client, dashboard: Any, tmp_path: Path) -> None:
    notebook = tmp_path / "report.ipynb"
    nbformat.write(nbformat.v4.new_notebook(), notebook)
    widget = dashboard()
    form = {"name": "nb", "schedule": "@daily", "executor": "notebook", "notebook": str(notebook)}
    play(widget, "save", form=form | {"parameters": '{"day": "2026-01-31"}'})
    until(lambda: row(widget, "nb"), "notebook job listed")
    saved = client.job("nb")
    assert saved["executor"] == "notebook"
    assert saved["executor_config"]["path"] == str(notebook)
    assert saved["executor_config"]["parameters"] == '{"day": "2026-01-31"}'


def test_form_errors_the_form_itself_finds(dashboard: Any) -> None:
    widget = dashboard()
    play(widget, "save", form={"name": "x", "schedule": "@daily", "tags": "web"})
    error = until(lambda: widget.errors.get("form"), "form error")
    assert error["type"] == "ValidationError" and "key=value" in error["error"]


def test_refresh_picks_up_a_job_created_behind_its_back(client: Client, dashboard: Any) -> None:
    widget = dashboard()
    first = until(lambda: widget.last_refresh, "first refresh")
    assert widget.jobs == []
    client.put_job(shell_job("sneaky"))
    until(lambda: row(widget, "sneaky"), "job created elsewhere shown")
    assert widget.last_refresh >= first


def test_live_output_of_a_running_job(client: Client, dashboard: Any, tmp_path: Path) -> None:
    done = tmp_path / "done"
    command = f"echo started; while [ ! -e {done} ]; do sleep 0.05; done; echo finished"
    client.put_job(shell_job("slow", command))
    widget = dashboard()
    click_row(widget, "slow")
    play(widget, "run", job="slow")

    running = until(
        lambda: [e for e in widget.busy if e["job_name"] == "slow" and "started" in e["output"]],
        "live output of the running job",
    )
    assert "finished" not in running[0]["output"]
    done.touch()
    until(lambda: widget.busy == [], "the run ended")
    finished = until(lambda: [e for e in widget.executions if e["finished_at"]], "execution")
    assert "started\nfinished" in finished[0]["output"]


def test_close_stops_the_refresher(client: Client) -> None:
    widget = Dashboard(client, refresh=0.2)
    until(lambda: widget.last_refresh, "first refresh")
    recorded = widget.comm.messages
    widget.close()
    assert not widget._worker.is_alive()
    count = len(recorded)
    client.put_job(shell_job("after"))
    with pytest.raises(TimeoutError):
        wait_for(lambda: len(recorded) > count, 1.0, "a message after close")


def test_unreachable_server_is_an_error_in_place() -> None:
    client = Client(f"http://127.0.0.1:{free_port()}", timeout=5)
    widget = Dashboard(client, refresh=30)
    try:
        error = until(lambda: widget.errors.get("refresh"), "refresh error")
        assert error["type"] == "Unavailable" and "cannot reach" in error["error"]
        assert widget.jobs == []
    finally:
        widget.close()
        client.close()


def test_bad_arguments() -> None:
    with pytest.raises(ValidationError, match="refresh must be a positive"):
        Dashboard(Client("http://127.0.0.1:1"), refresh=0)


def test_job_from_form_keeps_what_the_form_does_not_show() -> None:
    existing = {
        "name": "j",
        "schedule": "@daily",
        "executor": "shell",
        "executor_config": {"command": "old", "env": "A=1"},
        "metadata": {"k": "v"},
    }
    job = job_from_form({"name": "j", "schedule": "@hourly", "command": "new"}, existing)
    assert job["executor_config"] == {"command": "new", "env": "A=1", "shell": "true"}
    assert job["metadata"] == {"k": "v"} and job["schedule"] == "@hourly"

    http = job_from_form({"name": "h", "executor": "http", "url": "http://x/", "method": "POST"})
    assert http["executor_config"] == {"method": "POST", "url": "http://x/"}
    form = {
        "name": "n",
        "executor": "notebook",
        "notebook": "/nb/a.ipynb",
        "parameters": '{"x": 1}',
    }
    notebook = job_from_form(form)
    assert notebook["executor_config"] == {"path": "/nb/a.ipynb", "parameters": '{"x": 1}'}
    with pytest.raises(ValidationError, match="retries must be a whole number"):
        job_from_form({"name": "j", "retries": "-1"})


def test_job_row_last_result() -> None:
    earlier, later = "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z"
    assert job_row({"last_success": later, "last_error": earlier})["last_result"] == "success"
    failed = job_row({"last_success": earlier, "last_error": later})
    assert failed["last_result"] == "failed" and failed["last_run"] == later
    assert job_row({"last_success": None, "last_error": None})["last_result"] == ""


def test_a_refresh_sends_only_what_changed(client: Client, dashboard: Any) -> None:
    client.put_job(shell_job("steady"))
    widget = dashboard(refresh=0.2)
    until(lambda: row(widget, "steady"), "job listed")
    sent = widget.comm.messages
    start, first = len(sent), widget.last_refresh
    until(lambda: widget.last_refresh > first, "a later refresh (one second on)")
    second = widget.last_refresh
    until(lambda: widget.last_refresh > second, "another one")
    updates = [data["state"] for kind, data in sent[start:] if kind == "comm_msg"]
    assert updates and all(set(state) == {"last_refresh"} for state in updates)
