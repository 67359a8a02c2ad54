"""The pure decisions of ``dkron_lab.api.auth``: credentials, roles, Host, Origin, media types,
the listener. The same rules over real HTTP are in ``tests/security/``."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from tornado.httputil import HTTPHeaders

from dkron_lab.api import auth
from dkron_lab.api.auth import Policy, Role
from dkron_lab.config import Config
from dkron_lab.credentials import ConfigError
from dkron_lab.errors import Forbidden, Unauthorized, UnsupportedMediaType

TOKEN = "admin-token-0123456789"


def headers(**fields: str) -> HTTPHeaders:
    return HTTPHeaders({name.replace("_", "-"): value for name, value in fields.items()})


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def policy(**options: object) -> Policy:
    config = Config(http_addr="127.0.0.1:8080", **options)  # type: ignore[arg-type]
    return Policy.from_config(config, "" if config.no_auth else TOKEN)


@pytest.mark.parametrize(
    ("fields", "found"),
    [
        ({"Authorization": f"Bearer {TOKEN}"}, TOKEN),
        ({"Authorization": f"bearer  {TOKEN} "}, TOKEN),
        ({"X_Dkron_Token": TOKEN}, TOKEN),
        ({"Authorization": basic("anyone", TOKEN)}, TOKEN),
        ({"Authorization": basic("", "with:colon")}, "with:colon"),
        ({"Authorization": "Basic !!!"}, None),
        ({"Authorization": "Digest x", "X_Dkron_Token": TOKEN}, TOKEN),
        ({}, None),
    ],
)
def test_credential(fields: dict[str, str], found: str | None) -> None:
    assert auth.credential(headers(**fields)) == found


def test_authenticate_names_the_token_and_says_nothing_of_the_node() -> None:
    assert policy().authenticate(headers(X_Dkron_Token=TOKEN)).name == auth.ADMIN_NAME
    with pytest.raises(Unauthorized) as refused:
        policy().authenticate(headers(Authorization="Bearer \u00e9t\u00e9"))
    assert "<data-dir>/api-token" in refused.value.message
    assert policy(no_auth=True).authenticate(headers()) is auth.ANONYMOUS


def test_roles_are_ordered() -> None:
    assert Role.ADMIN.allows(Role.OPERATOR) and Role.OPERATOR.allows(Role.VIEWER)
    assert not Role.VIEWER.allows(Role.OPERATOR) and not Role.OPERATOR.allows(Role.ADMIN)
    viewer = auth.Principal(name="grafana", role=Role.VIEWER)
    auth.check_role(viewer, "POST", "/v1/sql", "/v1/sql")
    with pytest.raises(Forbidden, match="needs the operator role"):
        auth.check_role(viewer, "POST", "/v1/jobs/{job}/toggle", "/v1/jobs/a/toggle")


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("127.0.0.1:8080", True),
        ("[::1]:8080", True),
        ("10.1.2.3", True),
        ("localhost:8080", True),
        ("LocalHost.", True),
        ("", True),
        ("dkron.example:8080", True),
        ("attacker.example:8080", False),
        ("127.0.0.1.attacker.example", False),
    ],
)
def test_host(host: str, allowed: bool) -> None:
    checked = policy(allowed_host=("dkron.example",))
    if allowed:
        auth.check_host(checked, headers(Host=host))
    else:
        with pytest.raises(Forbidden, match="--allowed-host"):
            auth.check_host(checked, headers(Host=host))
    auth.check_host(policy(allowed_host=("*",)), headers(Host=host))


@pytest.mark.parametrize(
    ("origin", "host", "allowed"),
    [
        ("http://127.0.0.1:8080", "127.0.0.1:8080", True),
        ("https://dash.example", "127.0.0.1:8080", True),
        ("https://DASH.example/", "127.0.0.1:8080", True),
        ("http://dash.example", "127.0.0.1:8080", False),
        ("http://127.0.0.1:9999", "127.0.0.1:8080", False),
        ("null", "127.0.0.1:8080", False),
        ("http://[bad", "127.0.0.1:8080", False),
    ],
)
def test_origin(origin: str, host: str, allowed: bool) -> None:
    checked = policy(cors_origin=("https://dash.example",))
    sent = headers(Origin=origin, Host=host)
    if allowed:
        auth.check_origin(checked, sent)
    else:
        with pytest.raises(Forbidden, match="--cors-origin"):
            auth.check_origin(checked, sent)
    listed = auth.cors_headers(checked, sent)
    assert bool(listed) is (origin.lower().rstrip("/") == "https://dash.example")


@pytest.mark.parametrize(
    ("method", "route", "fields", "allowed"),
    [
        ("POST", "/v1/jobs", {"Content_Type": "application/json", "Content_Length": "2"}, True),
        ("POST", "/v1/jobs", {"Content_Type": "text/plain", "Content_Length": "2"}, False),
        ("POST", "/v1/jobs", {"Transfer_Encoding": "chunked"}, False),
        ("POST", "/v1/jobs/{job}/run", {"Content_Length": "0"}, True),
        ("POST", "/v1/jobs/{job}/run", {}, True),
        ("GET", "/v1/jobs", {"Content_Type": "text/plain", "Content_Length": "2"}, True),
        (
            "POST",
            "/v1/restore",
            {"Content_Type": "multipart/form-data; boundary=x", "Content_Length": "9"},
            False,
        ),
        (
            "POST",
            "/v1/restore",
            {
                "Content_Type": "multipart/form-data; boundary=x",
                "Content_Length": "9",
                "X_Requested_With": "x",
            },
            True,
        ),
        (
            "POST",
            "/v1/jobs",
            {
                "Content_Type": "multipart/form-data; boundary=x",
                "Content_Length": "9",
                "X_Requested_With": "x",
            },
            False,
        ),  # fmt: skip
    ],
)
def test_media_type(method: str, route: str, fields: dict[str, str], allowed: bool) -> None:
    if allowed:
        auth.check_media_type(method, route, headers(**fields))
    else:
        expected = "X-Dkron-Token" if route == "/v1/restore" else "application/json"
        with pytest.raises(UnsupportedMediaType, match=expected):
            auth.check_media_type(method, route, headers(**fields))


@pytest.mark.parametrize(
    ("options", "refused"),
    [
        ({"http_addr": "0.0.0.0:8080", "no_auth": True}, "--allow-insecure-remote"),
        ({"http_addr": ":8080", "no_auth": True}, "--allow-insecure-remote"),
        ({"http_addr": "0.0.0.0:8080", "no_auth": True, "allow_insecure_remote": True}, None),
        ({"http_addr": "localhost:8080", "no_auth": True}, None),
        ({"http_addr": "[::1]:8080", "no_auth": True}, None),
        ({"http_addr": "0.0.0.0:8080"}, None),
        ({"tls_cert": Path("c.pem")}, "go together"),
        ({"tls_key": Path("k.pem")}, "go together"),
    ],
)
def test_check_listen(options: dict[str, object], refused: str | None) -> None:
    config = Config(**options)  # type: ignore[arg-type]
    if refused is None:
        auth.check_listen(config)
    else:
        with pytest.raises(ConfigError, match=refused):
            auth.check_listen(config)
