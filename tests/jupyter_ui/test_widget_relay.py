"""The dashboard widget's request relay against a real headless dkron-lab server, without a
browser or kernel.

The test plays the front end (``static/widget.js``): it feeds the widget's comm the custom
messages its transport sends, ``{"kind": "request", ...}``, and reads the answers the worker
thread sends back, which ``conftest.RecordingComm`` keeps."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dkron_lab.client import Client
from dkron_lab.errors import ValidationError
from dkron_lab.jupyter.widget import Dashboard, api_path, scoped_css, ui_modules
from dkron_lab.testing import free_port, wait_for

WAIT = 60.0  # generous: two cores shared with other test runs; waits end as soon as they hold
UI = Path(__file__).parents[2] / "dkron_lab" / "ui" / "static"


def shell_job(name: str, command: str = "echo hello") -> dict[str, Any]:
    return {
        "name": name,
        "schedule": "@every 1h",
        "executor": "shell",
        "executor_config": {"command": command, "shell": "true"},
    }


def ask(widget: Dashboard, id: str, method: str, path: str, **more: Any) -> None:
    """What widget.js's ``model.send({kind: "request", ...})`` delivers to the kernel."""
    content = {"kind": "request", "id": id, "method": method, "path": path, **more}
    widget.comm.handle_msg(
        {"content": {"data": {"method": "custom", "content": content}}, "buffers": []}
    )


def answer(widget: Dashboard, id: str) -> dict[str, Any]:
    """The response to request ``id``, once the worker has sent it."""
    messages: list[tuple[str, dict[str, Any]]] = widget.comm.messages  # a RecordingComm's

    def sent() -> dict[str, Any] | None:
        for _, data in messages:
            content = data.get("content", {})
            if data.get("method") == "custom" and content.get("id") == id:
                return dict(content)
        return None

    found: dict[str, Any] = wait_for(sent, WAIT, f"the answer to {id}")
    assert found["kind"] == "response"
    return found


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


def test_api_requests_are_answered_with_the_servers_status_and_body(
    client: Client, dashboard: Any
) -> None:
    client.put_job(shell_job("alpha"))
    client.put_job(shell_job("beta"))
    widget = dashboard()

    ask(widget, "list", "GET", "/v1/jobs", query={"_start": "0", "_end": "1", "_sort": "name"})
    listed = answer(widget, "list")
    assert listed["status"] == 200
    assert [job["name"] for job in listed["body"]] == ["alpha"]
    assert listed["total"] == 2  # X-Total-Count, which the jobs list pages by

    ask(widget, "status", "GET", "/v1/")
    assert answer(widget, "status")["body"]["agent"]["name"] == "t"

    client.put_job(shell_job("café"))  # the browser sends names percent-encoded
    ask(widget, "encoded", "GET", "/v1/jobs/caf%C3%A9")
    assert answer(widget, "encoded")["body"]["name"] == "café"

    ask(widget, "missing", "GET", "/v1/jobs/nope")
    missing = answer(widget, "missing")
    assert missing["status"] == 404
    assert missing["body"]["type"] == "JobNotFound" and "nope" in missing["body"]["error"]


def test_a_run_and_its_output_through_the_relay(client: Client, dashboard: Any) -> None:
    client.put_job(shell_job("hello", "echo relayed output"))
    widget = dashboard()

    ask(widget, "run", "POST", "/v1/jobs/hello/run")
    assert answer(widget, "run")["status"] in (200, 202)

    def finished() -> dict[str, Any] | None:
        done = [e for e in client.executions("hello") if e.get("finished_at", "").startswith("2")]
        return done[0] if done else None

    execution = wait_for(finished, WAIT, "the run finished")
    path = f"/v1/jobs/hello/executions/{execution['id']}/output"
    ask(widget, "output", "GET", path, query={"offset": 0})
    output = answer(widget, "output")
    assert output["status"] == 200
    assert "relayed output" in output["body"]["data"] and output["body"]["done"] is True


def test_a_save_with_a_body_and_the_servers_400(client: Client, dashboard: Any) -> None:
    widget = dashboard()
    bad = shell_job("bad") | {"schedule": "every day at nine"}
    ask(widget, "bad", "POST", "/v1/jobs", body=bad)
    refused = answer(widget, "bad")
    assert refused["status"] == 400 and refused["body"]["type"] == "InvalidSchedule"
    assert "every day at nine" in refused["body"]["error"]

    ask(widget, "good", "POST", "/v1/jobs", body=shell_job("good"))
    assert answer(widget, "good")["status"] in (200, 201)
    assert client.job("good")["executor_config"]["command"] == "echo hello"


@pytest.mark.parametrize(
    "path",
    [
        "/ui/index.html",
        "/health",
        "http://example.com/v1/jobs",
        "//example.com/v1/jobs",
        "/v1/../health",
        "/v1/jobs/%2e%2e/%2e%2e/health",
        "/v1//jobs",
        "/v1/jobs?token=x",
        "/v10/jobs",
        "v1/jobs",
    ],
)
def test_paths_outside_the_api_are_refused(client: Client, dashboard: Any, path: str) -> None:
    widget = dashboard()
    ask(widget, "other", "GET", path)
    refused = answer(widget, "other")
    assert refused["status"] == 400
    assert refused["body"]["type"] == "ValidationError"
    assert "relays only the /v1 API" in refused["body"]["error"]


def test_a_method_it_does_not_relay_is_refused(dashboard: Any) -> None:
    widget = dashboard()
    ask(widget, "trace", "TRACE", "/v1/jobs")
    refused = answer(widget, "trace")
    assert refused["status"] == 400 and "TRACE" in refused["body"]["error"]


def test_api_path_accepts_the_apis_own_paths() -> None:
    for path in ("/v1", "/v1/", "/v1/jobs", "/v1/jobs/a%20b/executions/1/output"):
        assert api_path(path) == path
    with pytest.raises(ValidationError, match="relays only the /v1 API"):
        api_path("/v1/jobs/..")


def test_an_unreachable_server_is_an_answer_not_an_exception(dashboard: Any) -> None:
    with Client(f"http://127.0.0.1:{free_port()}", "t", timeout=2) as dead:
        widget = dashboard(client=dead)
        ask(widget, "dead", "GET", "/v1/jobs")
        unavailable = answer(widget, "dead")
    assert unavailable["status"] == 503 and unavailable["body"]["type"] == "Unavailable"
    assert "cannot reach dkron-lab" in unavailable["body"]["error"]
    assert widget.running  # the worker lives on


def test_close_stops_the_worker(client: Client) -> None:
    widget = Dashboard(client)
    assert widget.running
    widget.close()
    assert not widget.running
    client.jobs()  # a client handed in is the caller's: still open


def test_bad_arguments(client: Client) -> None:
    with pytest.raises(ValidationError, match="refresh must be a positive number"):
        Dashboard(client, refresh=0)


def test_the_front_end_is_the_web_uis_own_code(client: Client, dashboard: Any) -> None:
    widget = dashboard()
    assert widget.modules == ui_modules()
    assert widget.modules["app.js"] == (UI / "app.js").read_text()
    assert "views/execution.js" in widget.modules
    assert widget.page == (UI / "index.html").read_text()
    assert widget.url == client.url


def test_ui_css_is_scoped_to_the_widget() -> None:
    css = scoped_css((UI / "ui.css").read_text())
    selectors = re.findall(r"(?m)^\s*([^{}@/*][^{}]*)\{", css)
    page_wide = [s for s in selectors if re.search(r"(^|[\s,]):root\b|(^|[\s,])(html|body)\b", s)]
    assert page_wide == []
    assert ":host {" in css and ".dk-app {" in css
