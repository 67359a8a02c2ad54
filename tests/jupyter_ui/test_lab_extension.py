"""The JupyterLab extension (labextension/, issue 12) for real: `jupyter labextension list`
shows it installed, prebuilt and enabled; then one JupyterLab subprocess with the dkron_lab
server extension (its node inside Jupyter) is driven by Playwright in Debian's Chromium: the
web UI at {base_url}dkron/ui/ under Jupyter's auth (a run started from the page, a write with
Jupyter's cookie and _xsrf), the launcher item opening the dashboard tab with the node's
jobs, the status-bar item, Lab's dark theme reaching the page, and the file browser's
"Schedule with dkron-lab…" on a notebook."""

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
from typing import Any

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


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """JupyterLab on a loopback port with dkron_lab's server extension (node ``lab-node``, data
    under the temp Jupyter data dir), one job created through Jupyter's API, a notebook in its
    root; yields (base URL, token). Stopped by pid."""
    if "dkron-lab" not in labextensions():
        pytest.skip("the labextension is not installed (build it: pip install -e . with Node)")
    if not CHROMIUM.exists():
        pytest.skip("needs Debian's chromium at /usr/bin")
    root = tmp_path_factory.mktemp("lab")
    home = root / ".home"
    settings = home / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print(42)")])
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
        yield url, token
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
def page(browser: Any, lab: tuple[str, str]) -> Iterator[Any]:
    """A new browser context, logged in to Jupyter (the token in the URL sets the cookie)."""
    url, token = lab
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(WAIT_MS)
    tab.goto(f"{url}/api/status?token={token}")
    yield tab
    context.close()


def test_the_ui_under_jupyter_reads_and_writes_with_the_cookie(
    page: Any, lab: tuple[str, str]
) -> None:
    url, _ = lab
    page.goto(f"{url}/dkron/ui/#/jobs/nightly-report")
    page.get_by_role("button", name="Run nightly-report").click()
    page.get_by_role("button", name="Yes, run").click()  # a POST: cookie + X-XSRFToken
    page.locator("#executions tbody tr").filter(has_text="Succeeded").first.wait_for()
    assert page.locator("#dk-sign-out").is_hidden()  # no token to forget under Jupyter


def test_the_lab_extension_opens_the_dashboard(page: Any, lab: tuple[str, str]) -> None:
    url, _ = lab
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

    page.locator(".jp-DirListing-item[data-file-type='notebook']").click(button="right")
    page.locator(".lm-Menu-item", has_text="Schedule with dkron-lab…").click()
    dialog = page.locator(".jp-Dialog .dk-lab-schedule")
    dialog.filter(has_text="%dkron job daily-report --schedule @daily").wait_for()
    assert "Daily Report.ipynb" in dialog.inner_text()
    assert tab.is_visible()


def test_a_missing_server_extension_is_said(page: Any, lab: tuple[str, str]) -> None:
    """GET dkron/v1/ answered 404 (as without the server extension): a notification whose
    action opens the dialog that says how to enable it."""
    url, _ = lab
    status = re.compile(r"/dkron/v1/(\?.*)?$")
    page.route(status, lambda route: route.fulfill(status=404, body="{}"))
    page.goto(f"{url}/lab")
    page.get_by_text("dkron-lab: the server extension is not enabled").wait_for()
    page.get_by_role("button", name="How to enable it").click()
    dialog = page.locator(".jp-Dialog")
    dialog.get_by_text("jupyter server extension enable dkron_lab").wait_for()
    assert "server extension not found" in dialog.inner_text()
