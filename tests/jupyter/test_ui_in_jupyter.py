"""The web UI served by the extension at ``{base_url}dkron/ui/`` (issue 12): the same files as
the headless ``/ui/``, its page switched to Jupyter's auth, behind Jupyter's login, framed by
this origin only; and the way its client calls the API (login cookie, ``X-XSRFToken`` from the
``_xsrf`` cookie) accepted by the API's handlers. The page in a browser is in
tests/jupyter_ui/test_lab_extension.py."""

from __future__ import annotations

import json
from http.cookies import SimpleCookie
from typing import Any

import pytest
from tornado.httpclient import HTTPClientError, HTTPResponse

from dkron_lab import ui
from dkron_lab.jupyter.extension import DkronLab

JOB = {"name": "from-the-page", "schedule": "@every 1h", "executor": "shell",
       "executor_config": {"command": "true"}}  # fmt: skip
ANONYMOUS = {"Authorization": ""}


async def fetch(jp_fetch: Any, *parts: str, **kwargs: Any) -> HTTPResponse:
    kwargs.setdefault("follow_redirects", False)
    try:
        response: HTTPResponse = await jp_fetch(*parts, **kwargs)
    except HTTPClientError as error:
        assert error.response is not None, error
        return error.response
    return response


def cookies(response: HTTPResponse) -> dict[str, str]:
    jar: SimpleCookie = SimpleCookie()
    for header in response.headers.get_list("Set-Cookie"):
        jar.load(header)
    return {name: morsel.value for name, morsel in jar.items()}


async def test_the_page_is_served_for_jupyter(dkron_app: DkronLab, jp_fetch: Any) -> None:
    page = await fetch(jp_fetch, "dkron", "ui/")
    assert page.code == 200 and page.headers["Content-Type"].startswith("text/html")
    html = page.body.decode()
    assert '<meta name="dkron-auth" content="jupyter" />' in html
    assert '<meta name="dkron-api" content="../v1" />' in html  # {base_url}dkron/v1
    policy = page.headers["Content-Security-Policy"]
    assert policy == ui.CONTENT_SECURITY_POLICY and "frame-ancestors 'self'" in policy
    assert "_xsrf" in cookies(page)  # what the client sends back as X-XSRFToken
    for name in ("app.js", "client.js", "ui.css"):
        module = await fetch(jp_fetch, "dkron", "ui", name)
        assert module.code == 200 and module.body == (ui.STATIC / name).read_bytes()
    redirect = await fetch(jp_fetch, "dkron", "ui")
    assert (redirect.code, redirect.headers["Location"]) == (302, "ui/")
    outside = await fetch(jp_fetch, "dkron", "ui", "..", "..", "pyproject.toml")
    assert outside.code in (403, 404)


async def test_an_anonymous_browser_is_sent_to_the_login(
    dkron_app: DkronLab, jp_fetch: Any
) -> None:
    for path in ("ui/", "ui/app.js"):
        refused = await fetch(jp_fetch, "dkron", path, headers=ANONYMOUS)
        assert refused.code == 302, refused.body
        assert "/login?next=" in refused.headers["Location"]
        assert "window.location" not in refused.body.decode()


async def test_the_pages_way_of_calling_the_api_works(
    dkron_app: DkronLab, jp_fetch: Any, jp_serverapp: Any
) -> None:
    """The client in Jupyter mode: the login cookie, and on writes X-XSRFToken = _xsrf cookie."""
    token = jp_serverapp.identity_provider.token
    page = await fetch(jp_fetch, "dkron", "ui/", params={"token": token}, headers=ANONYMOUS)
    assert page.code == 200
    jar = cookies(page)
    browser = {"Authorization": "", "Cookie": "; ".join(f"{k}={v}" for k, v in jar.items())}
    assert len(jar) >= 2  # the login cookie and _xsrf

    listed = await fetch(jp_fetch, "dkron", "v1", "jobs", headers=browser)
    assert listed.code == 200 and json.loads(listed.body) == []
    body = json.dumps(JOB)
    forged = await fetch(jp_fetch, "dkron", "v1", "jobs", method="POST", body=body, headers=browser)
    assert forged.code == 403  # a write without the header another site cannot read
    xsrf = browser | {"X-XSRFToken": jar["_xsrf"]}
    created = await fetch(jp_fetch, "dkron", "v1", "jobs", method="POST", body=body, headers=xsrf)
    assert created.code == 201, created.body
    listed = await fetch(jp_fetch, "dkron", "v1", "jobs", headers=browser)
    assert [job["name"] for job in json.loads(listed.body)] == ["from-the-page"]


@pytest.mark.parametrize("jp_server_config", [{"ServerApp": {
    "jpserver_extensions": {"dkron_lab": True},
    "tornado_settings": {"headers": {"Content-Security-Policy": "frame-ancestors https://hub.example"}},
}}])  # fmt: skip
async def test_frame_ancestors_follow_the_operators_policy(
    dkron_app: DkronLab, jp_fetch: Any
) -> None:
    page = await fetch(jp_fetch, "dkron", "ui/")
    policy = page.headers["Content-Security-Policy"]
    assert "frame-ancestors https://hub.example" in policy and "script-src 'self'" in policy


@pytest.mark.parametrize("jp_server_config", [{"ServerApp": {
    "jpserver_extensions": {"dkron_lab": True}}, "DkronLab": {"options": {"ui": False}},
}])  # fmt: skip
async def test_no_ui_when_it_is_turned_off(dkron_app: DkronLab, jp_fetch: Any) -> None:
    page = await fetch(jp_fetch, "dkron", "ui/")
    assert page.code == 404 and json.loads(page.body)["type"] == "NotFoundError"
