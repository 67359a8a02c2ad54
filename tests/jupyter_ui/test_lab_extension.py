"""The JupyterLab extension (labextension/, issue 12) for real: `jupyter labextension list`
shows it installed, prebuilt and enabled; then one JupyterLab subprocess with the dkron_lab
server extension (its node inside Jupyter) is driven by Playwright in Debian's Chromium: the
web UI at {base_url}dkron/ui/ under Jupyter's auth (a run started from the page, a write with
Jupyter's cookie and _xsrf), the launcher item opening the dashboard tab with the node's
jobs, the status-bar item, Lab's dark theme reaching the page; "Schedule with dkron-lab…"
from the file browser and the notebook toolbar (the UI's job form in a dialog, prefilled for
the notebook executor, creating the job), the notebook run and its output notebook opened
from the left panel, the panel's running run, a failed run's toast, and the dialog said once
when the server extension answers 404."""

from __future__ import annotations

import functools
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import nbformat
import pytest

from dkron_lab.testing import free_port, wait_for
from tests.harness import Processes
from tests.jupyter_ui.conftest import lab_env

playwright = pytest.importorskip("playwright.sync_api")

JUPYTER = str(Path(sys.executable).with_name("jupyter"))
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
]  # fmt: skip
WAIT_MS = 60_000
NODE = "lab-node"
JOB = {
    "name": "nightly-report",
    "schedule": "@every 1h",
    "executor": "shell",
    "executor_config": {"command": "echo report done", "shell": "true"},
}
DARK_PAGE = """(() => {
    const lab = getComputedStyle(document.body).getPropertyValue("--jp-layout-color0").trim();
    const page = document.querySelector("#dkron-lab-dashboard iframe")?.contentDocument;
    if (!page?.body || document.body.dataset.jpThemeLight !== "false") return false;
    const ours = getComputedStyle(page.documentElement).getPropertyValue("--jp-layout-color0");
    const background = getComputedStyle(page.body).backgroundColor;
    return ours.trim() === lab && background !== "rgb(255, 255, 255)";
})()"""
BUILT = not os.environ.get("SKIP_JUPYTER_BUILDER") and shutil.which("node") is not None


@functools.cache
def labextensions() -> str:
    listed = subprocess.run(
        [JUPYTER, "labextension", "list"], capture_output=True, text=True, timeout=60, check=True
    )
    return listed.stdout + listed.stderr


def test_the_labextension_is_installed_prebuilt_and_enabled() -> None:
    listed = labextensions()
    if "dkron-lab" not in listed and not BUILT:
        pytest.skip("the labextension is built from labextension/ by pip install with Node")
    lines = listed.splitlines()
    at = next(i for i, line in enumerate(lines) if "dkron-lab" in line)
    assert re.search(r"dkron-lab v\S+ .*enabled.* .*OK.* \(python, dkron-lab\)", lines[at]), listed
    folder = next(line for line in reversed(lines[:at]) if not line.startswith(" "))
    assert folder.endswith("share/jupyter/labextensions"), listed  # prebuilt, from the wheel


class Lab(NamedTuple):
    url: str
    token: str
    root: Path  # the Jupyter server's root folder
    http: httpx.Client  # to the server, with the token


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """JupyterLab on a loopback port with dkron_lab's server extension (node ``lab-node``, data
    under the temp Jupyter data dir), one job created through Jupyter's API, a notebook in its
    root. Stopped by pid."""
    if "dkron-lab" not in labextensions():
        pytest.skip("the labextension is not installed (build it: pip install -e . with Node)")
    if not CHROMIUM.exists():
        pytest.skip("needs Debian's chromium at /usr/bin")
    root = tmp_path_factory.mktemp("lab")
    home = root / ".home"
    settings = home / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
    notebook = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell("print(42)")],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3"}},
    )
    nbformat.write(notebook, root / "Daily Report.ipynb")
    token = secrets.token_hex(16)
    port = free_port()
    env = lab_env(home)
    args = [
        JUPYTER, "lab", "--allow-root", "--no-browser", f"--port={port}",
        "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}", "--LabApp.expose_app_in_browser=True",
        "--ServerApp.jpserver_extensions={'dkron_lab': True}", f"--DkronLab.node_name={NODE}",
    ]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"token {token}"}
    with Processes() as procs, httpx.Client(base_url=url, headers=auth, timeout=10) as http:
        child = procs.start(args, env=env, cwd=root, stderr=root / "lab.log")
        wait_for(lambda: _answers(http, "/dkron/v1/leader") or not child.alive, 90, "the node")
        assert child.alive, (root / "lab.log").read_text()
        created = http.post("/dkron/v1/jobs", json=JOB)
        assert created.status_code == 201, created.text
        yield Lab(url, token, root, http)
        child.terminate(timeout=30)


def _answers(http: httpx.Client, path: str) -> bool:
    try:
        return http.get(path).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright.sync_playwright() as pw:
        launched = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any, lab: Lab) -> Iterator[Any]:
    """A new browser context, logged in to Jupyter (the token in the URL sets the cookie)."""
    url, token = lab.url, lab.token
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(WAIT_MS)
    tab.goto(f"{url}/api/status?token={token}")
    yield tab
    context.close()


def test_the_ui_under_jupyter_reads_and_writes_with_the_cookie(page: Any, lab: Lab) -> None:
    url = lab.url
    page.goto(f"{url}/dkron/ui/#/jobs/nightly-report")
    page.get_by_role("button", name="Run nightly-report").click()
    page.get_by_role("button", name="Yes, run").click()  # a POST: cookie + X-XSRFToken
    page.locator("#executions tbody tr").filter(has_text="Succeeded").first.wait_for()
    assert page.locator("#dk-sign-out").is_hidden()  # no token to forget under Jupyter


def test_the_lab_extension_opens_the_dashboard(page: Any, lab: Lab) -> None:
    url = lab.url
    page.goto(f"{url}/lab?reset")
    page.locator(".jp-LauncherCard", has_text="dkron-lab dashboard").click()
    tab = page.locator("#dkron-lab-dashboard")
    frame = page.frame_locator("#dkron-lab-dashboard iframe")
    frame.locator("main .dk-jobs tbody th", has_text="nightly-report").wait_for()
    assert page.locator(".lm-TabBar-tab.lm-mod-current", has_text="dkron-lab").is_visible()
    status = page.locator(".dk-lab-status")
    status.filter(has_text=f"dkron-lab: {NODE} · ").wait_for()
    assert status.inner_text().endswith(" running")

    page.evaluate("window.jupyterapp.commands.execute('apputils:change-theme', "
                  "{theme: 'JupyterLab Dark'})")  # fmt: skip
    page.wait_for_function(DARK_PAGE)  # Lab's --jp-* colours reach the page
    page.evaluate("window.jupyterapp.commands.execute('apputils:change-theme', "
                  "{theme: 'JupyterLab Light'})")  # fmt: skip
    page.wait_for_function("document.body.dataset.jpThemeLight === 'true'")  # for what follows

    assert tab.is_visible()


DOCS_IMG = Path(__file__).parents[2] / "docs" / "img"
NOTEBOOK = "Daily Report.ipynb"
RESTORED = "window.jupyterapp.restored.then(() => true)"


def _restored(page: Any) -> None:
    page.wait_for_function("window.jupyterapp !== undefined")
    page.evaluate(RESTORED)


def _open_lab(page: Any, lab: Lab) -> None:
    page.goto(f"{lab.url}/lab?reset")
    _restored(page)


def _runs(lab: Lab, job: str) -> list[dict[str, Any]]:
    listed = lab.http.get(f"/dkron/v1/jobs/{job}/executions")
    assert listed.status_code == 200, listed.text
    runs: list[dict[str, Any]] = listed.json()
    return runs


def _finished(lab: Lab, job: str) -> dict[str, Any] | None:
    done = [run for run in _runs(lab, job) if not run["finished_at"].startswith("0001-")]
    return done[0] if done else None


def _dashboard_route(page: Any) -> str:
    src: str = page.evaluate("document.querySelector('#dkron-lab-dashboard iframe')?.src ?? ''")
    return src.partition("#")[2]


def _schedule_dialog(page: Any, lab: Lab) -> Any:
    """The schedule dialog's form (a frame locator), once it is prefilled for the notebook."""
    page.locator(".jp-Dialog.dk-lab-schedule-dialog").wait_for()
    form = page.frame_locator(".dk-lab-schedule-dialog iframe")
    path = form.get_by_label("Notebook path")
    path.wait_for()
    assert path.input_value() == str(lab.root / NOTEBOOK)
    assert form.locator("#dk-f-executor").input_value() == "notebook"
    assert form.locator("#dk-f-name").input_value() == "daily-report"
    return form


def test_schedule_a_notebook_from_the_file_browser_run_it_and_open_its_output(
    page: Any, lab: Lab
) -> None:
    """The context menu's dialog holds the UI's form prefilled for the notebook executor; its
    cron helper answers; Create makes the job and closes the dialog, the dashboard shows the
    job; a run's output notebook opens from the left panel in a Lab tab."""
    _open_lab(page, lab)
    page.locator(".jp-DirListing-item[data-file-type='notebook']").click(button="right")
    page.locator(".lm-Menu-item", has_text="Schedule with dkron-lab…").click()
    form = _schedule_dialog(page, lab)
    form.locator("#dk-f-schedule").fill("0 30 6 * * *")
    form.locator("#dk-cron-words").filter(has_text="06:30").wait_for()  # the cron helper
    form.get_by_label("Parameters (JSON)").fill('{"greeting": "hello"}')
    form.locator("#dk-f-name").scroll_into_view_if_needed()
    page.locator(".jp-Dialog-content").screenshot(path=str(DOCS_IMG / "lab-schedule.png"))
    form.get_by_role("button", name="Create").click()
    page.locator(".jp-Dialog").wait_for(state="detached")
    page.wait_for_function(
        "document.querySelector('#dkron-lab-dashboard iframe')?.src"
        ".endsWith('#/jobs/daily-report/show')"
    )
    job = lab.http.get("/dkron/v1/jobs/daily-report").json()
    assert job["executor"] == "notebook"
    assert job["executor_config"]["path"] == str(lab.root / NOTEBOOK)
    assert job["schedule"] == "0 30 6 * * *"
    assert json.loads(job["executor_config"]["parameters"]) == {"greeting": "hello"}

    assert lab.http.post("/dkron/v1/jobs/daily-report/run").status_code in (200, 202)
    wait_for(lambda: _finished(lab, "daily-report") is not None, 120, "the notebook run")
    run = _finished(lab, "daily-report")
    assert run is not None and run["success"], run
    page.locator(".jp-SideBar .lm-TabBar-tab[data-id='dkron-lab-panel']").click()
    row = page.locator(".dk-lab-panel-job[data-job='daily-report'][data-status='success']")
    row.locator(".dk-lab-panel-output", has_text="Open output notebook").click()
    opened = page.locator(".jp-MainAreaWidget.jp-NotebookPanel .jp-Cell", has_text="print(42)")
    opened.first.wait_for()
    current = page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab.lm-mod-current").inner_text()
    assert re.search(r"-[\w-]+\.ipynb$", current.strip()), current  # the run's copy
    assert current.strip() != NOTEBOOK


def test_the_notebook_toolbar_button_opens_the_same_dialog(page: Any, lab: Lab) -> None:
    _open_lab(page, lab)
    page.evaluate(f"window.jupyterapp.commands.execute('docmanager:open', {{path: '{NOTEBOOK}'}})")
    page.locator(".jp-NotebookPanel-toolbar .dk-lab-schedule-button").click()
    _schedule_dialog(page, lab)
    page.locator(".jp-Dialog").get_by_role("button", name="Close").click()
    page.locator(".jp-Dialog").wait_for(state="detached")


def test_the_left_panel_lists_jobs_and_opens_a_running_run(page: Any, lab: Lab) -> None:
    slow = {
        "name": "slow-sync",
        "schedule": "@manually",
        "executor": "shell",
        "executor_config": {"command": "sleep 20", "shell": "true"},
    }
    assert lab.http.post("/dkron/v1/jobs", json=slow).status_code == 201
    assert lab.http.post("/dkron/v1/jobs/slow-sync/run").status_code in (200, 202)
    _open_lab(page, lab)
    page.locator(".jp-SideBar .lm-TabBar-tab[data-id='dkron-lab-panel']").click()
    panel = page.locator("#dkron-lab-panel")
    panel.locator(".dk-lab-panel-job[data-job='nightly-report']").wait_for()
    run = panel.locator(".dk-lab-panel-run[data-job='slow-sync']")
    run.wait_for()
    assert f"on {NODE}" in run.inner_text()
    panel.locator(".dk-lab-panel-job[data-job='slow-sync'][data-running='true']").wait_for()
    box = panel.bounding_box()
    clip = {**box, "height": min(box["height"], 300)}
    page.screenshot(path=str(DOCS_IMG / "lab-panel.png"), clip=clip)
    run.locator(".dk-lab-panel-link").click()
    running = lab.http.get("/dkron/v1/busy").json()
    ids = [r["id"] for r in running if r["job_name"] == "slow-sync"]
    page.wait_for_function(
        "document.querySelector('#dkron-lab-dashboard iframe')?.src"
        ".includes('#/jobs/slow-sync/executions/')"
    )
    assert _dashboard_route(page).rpartition("/")[2] in ids
    panel.locator(".dk-lab-panel-job[data-job='nightly-report'] .dk-lab-panel-link").click()
    page.wait_for_function(
        "document.querySelector('#dkron-lab-dashboard iframe')?.src"
        ".endsWith('#/jobs/nightly-report/show')"
    )


def test_a_failed_run_raises_a_toast_whose_action_shows_it(page: Any, lab: Lab) -> None:
    failing = {
        "name": "broken-export",
        "schedule": "@manually",
        "executor": "shell",
        "executor_config": {"command": "echo no such table; exit 3", "shell": "true"},
    }
    seen: list[str] = []  # what the page asked and logged, said if the toast does not come

    def asked(response: Any) -> None:
        if "/dkron/" in response.url:
            seen.append(f"{response.status} {response.url}")

    page.on("response", asked)
    page.on("console", lambda m: seen.append(f"console {m.type}: {m.text}"))
    _open_lab(page, lab)
    assert lab.http.post("/dkron/v1/jobs", json=failing).status_code == 201
    assert lab.http.post("/dkron/v1/jobs/broken-export/run").status_code in (200, 202)
    toast = page.get_by_text("dkron-lab: broken-export failed")
    try:
        toast.wait_for()
    except playwright.TimeoutError:
        failed = lab.http.get("/dkron/v1/executions?status=failed").text
        pytest.fail(f"no toast; failed runs: {failed}\nthe page:\n" + "\n".join(seen))
    for _ in range(2):  # two more polls find the same failure: no second toast
        with page.expect_response(lambda r: "/dkron/v1/executions?status=failed" in r.url):
            pass
    assert toast.count() == 1
    page.get_by_role("button", name="Show output").click()
    page.wait_for_function(
        "document.querySelector('#dkron-lab-dashboard iframe')?.src"
        ".includes('#/jobs/broken-export/executions/')"
    )
    frame = page.frame_locator("#dkron-lab-dashboard iframe")
    frame.get_by_text("no such table").first.wait_for()


def test_a_missing_server_extension_is_said_once(page: Any, lab: Lab) -> None:
    """GET dkron/v1/ answered 404 (as without the server extension): a dialog says how to
    enable it, once in the browser session (not again when Lab reloads)."""
    status = re.compile(r"/dkron/v1/(\?.*)?$")
    page.route(status, lambda route: route.fulfill(status=404, body="{}"))
    page.goto(f"{lab.url}/lab")
    dialog = page.locator(".jp-Dialog")
    dialog.get_by_text("jupyter server extension enable dkron_lab").wait_for()
    dialog.get_by_text("dkron-lab server extension not found").wait_for()
    assert "pip install dkron-lab" in dialog.inner_text()
    dialog.get_by_role("button", name="Ok").click()
    with page.expect_response(status):
        page.reload()
    _restored(page)
    page.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    assert page.locator(".jp-Dialog").count() == 0
