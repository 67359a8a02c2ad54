"""Where the UI is served: behind a proxy that mounts the server under a path prefix and
rewrites nothing (django-dkron's, Dkron #1415), and not at all with ``--no-ui``."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import tornado.httpclient
import tornado.web
from playwright.sync_api import expect

from dkron_lab.testing import free_port, one_node
from tests.ui.conftest import Api, Tab, sign_in

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

_HOP = {"content-length", "transfer-encoding", "connection", "content-encoding"}


class _Forward(tornado.web.RequestHandler):
    """``/prefix/<path>`` to ``<upstream>/<path>``: method, headers (Host too) and body as they
    came, the answer as it went, redirects not followed."""

    def initialize(self, upstream: str) -> None:
        self.upstream = upstream

    async def _forward(self, path: str) -> None:
        query = f"?{self.request.query}" if self.request.query else ""
        answer = await tornado.httpclient.AsyncHTTPClient().fetch(
            f"{self.upstream}/{path}{query}",
            method=self.request.method,
            headers=self.request.headers,
            body=self.request.body if self.request.method in ("POST", "PUT", "PATCH") else None,
            allow_nonstandard_methods=True,
            follow_redirects=False,
            raise_error=False,
        )
        self.set_status(answer.code, answer.reason)
        for name in ("Content-Type", "Server", "Date"):  # tornado's defaults, not the answer's
            self.clear_header(name)
        for name, value in answer.headers.get_all():
            if name.lower() not in _HOP:
                self.add_header(name, value)
        self.finish(answer.body or b"")

    get = post = put = delete = patch = head = _forward


@pytest.fixture(scope="module")
def prefix_proxy(api: Api) -> Iterator[str]:
    """A tornado proxy in a thread serving the module's server under ``/prefix/``."""
    port, started, stop = free_port(), threading.Event(), threading.Event()

    async def serve() -> None:
        app = tornado.web.Application([(r"/prefix/(.*)", _Forward, {"upstream": api.url})])
        server = app.listen(port, address="127.0.0.1")
        started.set()
        while not stop.is_set():
            await asyncio.sleep(0.05)
        server.stop()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    assert started.wait(10)
    yield f"http://127.0.0.1:{port}/prefix"
    stop.set()
    thread.join(10)


def test_the_ui_works_under_a_path_prefix(api: Api, prefix_proxy: str, tab: Tab) -> None:
    answer = httpx.get(f"{prefix_proxy}/", follow_redirects=True)
    assert answer.status_code == 200 and str(answer.url) == f"{prefix_proxy}/ui/"
    sign_in(tab, prefix_proxy, api.node.token)
    page = tab.page
    expect(page.locator("main .dk-jobs tbody tr")).to_have_count(3)
    page.get_by_role("link", name="bad-job").click()
    page.wait_for_url(f"{prefix_proxy}/ui/#/jobs/bad-job")
    page.locator("#executions tbody tr").first.get_by_role("link").click()
    page.wait_for_url(re.compile(r"/prefix/ui/#/jobs/bad-job/executions/"))
    page.locator(".dk-output[data-complete=yes]").filter(has_text="no space left").wait_for()
    tab.assert_quiet()


def test_no_ui_serves_no_page(tmp_path: Path) -> None:
    with one_node(tmp_path / "dkron", args=["--no-ui"]) as node:
        signed = {"Authorization": f"Bearer {node.token}"}
        for path in ("/", "/ui", "/ui/", "/ui/app.js"):
            # No route: the API's answer to any unknown path, JSON, 401 without a token.
            assert httpx.get(node.url + path).status_code == 401, path
            answer = httpx.get(node.url + path, headers=signed, follow_redirects=False)
            assert answer.status_code == 404, path
            assert answer.json()["type"] == "NotFoundError"
