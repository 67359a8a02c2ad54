"""Fixtures for the /ui pages: one real one-node server per module with a few jobs, and
Debian's Chromium driven by Playwright (no browser download)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from dkron_lab.testing import DkronNode, auth_headers, one_node, wait_for

playwright = pytest.importorskip("playwright.sync_api")

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
]  # fmt: skip
SCREENSHOTS = Path(__file__).parents[2] / "docs" / "img"
"""Where screenshots go with DKRON_LAB_SCREENSHOTS=1 (to refresh the docs' figures)."""


@dataclass
class Api:
    """The module's server, called over plain HTTP with its token."""

    node: DkronNode
    http: httpx.Client

    @property
    def url(self) -> str:
        return self.node.url

    def put_job(self, job: dict[str, Any]) -> None:
        self.http.post("/v1/jobs", json=job).raise_for_status()

    def job(self, name: str) -> dict[str, Any]:
        answer = self.http.get(f"/v1/jobs/{name}")
        answer.raise_for_status()
        found: dict[str, Any] = answer.json()
        return found

    def run(self, name: str) -> None:
        self.http.post(f"/v1/jobs/{name}/run").raise_for_status()

    def ran(self, name: str, count: int = 1) -> None:
        """Wait until ``name`` has finished ``count`` runs."""

        def finished() -> bool:
            job = self.job(name)
            return job["success_count"] + job["error_count"] >= count

        wait_for(finished, 30, f"{name} finished {count} run(s)")


def shell_job(name: str, command: str, **more: Any) -> dict[str, Any]:
    return {
        "name": name,
        "schedule": "0 0 3 * * *",
        "executor": "shell",
        "executor_config": {"command": command, "shell": "true"},
        **more,
    }


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """A one-node server with ``ok-job`` (succeeded), ``bad-job`` (failed) and ``never-job``
    (never run, in Europe/Paris)."""
    with (
        one_node(tmp_path_factory.mktemp("ui") / "dkron") as node,
        httpx.Client(base_url=node.url, headers=auth_headers(node.token), timeout=30) as http,
    ):
        made = Api(node=node, http=http)
        made.put_job(shell_job("ok-job", "echo all fine; echo second line", displayname="OK job"))
        made.put_job(shell_job("bad-job", "echo no space left >&2; exit 1"))
        made.put_job(shell_job("never-job", "true", timezone="Europe/Paris"))
        for count in range(1, 4):  # a few runs, for the "last runs" squares
            made.run("ok-job")
            made.ran("ok-job", count)
        made.run("bad-job")
        made.ran("bad-job")
        yield made


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip("needs Debian's chromium at /usr/bin/chromium")
    with playwright.sync_playwright() as pw:
        launched = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield launched
        launched.close()


@dataclass
class Tab:
    """A page in a fresh browser context (its own sessionStorage), and what its console said."""

    page: Any
    errors: list[str]

    def assert_quiet(self, *allowed: str) -> None:
        """No console error nor uncaught exception, but those containing one of ``allowed``."""
        left = [error for error in self.errors if not any(a in error for a in allowed)]
        assert not left, left


@pytest.fixture
def tab(browser: Any) -> Iterator[Tab]:
    yield from open_tab(browser)


def open_tab(browser: Any, **options: Any) -> Iterator[Tab]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, **options)
    page = context.new_page()
    page.set_default_timeout(20_000)
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"uncaught: {e}"))
    try:
        yield Tab(page=page, errors=errors)
    finally:
        context.close()


def sign_in(tab: Tab, url: str, token: str) -> None:
    """Open the UI with the start-up link's ``#token=`` (the token then lives in the tab)."""
    tab.page.goto(f"{url}/ui/#token={token}")
    tab.page.get_by_role("link", name="Jobs").first.wait_for()


def screenshot(page: Any, name: str, tmp: Path) -> Path:
    """Save ``ui-<name>.png``: into docs/img with DKRON_LAB_SCREENSHOTS=1, else into ``tmp``."""
    where = SCREENSHOTS if os.environ.get("DKRON_LAB_SCREENSHOTS") == "1" else tmp
    path = where / f"ui-{name}.png"
    page.screenshot(path=str(path), full_page=False)
    return path
