"""The server extension in a real in-process Jupyter server: the REST API under
``{base_url}dkron/`` behind Jupyter's authentication and ``@authorized``, the kernels' secret,
the exported environment, and the node's life with the server's."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
from pathlib import Path
from typing import Any

import pytest
from jupyter_server.serverapp import ServerApp
from tornado.httpclient import HTTPClientError, HTTPResponse

from dkron_lab.api.handlers import RESOURCES
from dkron_lab.client import KERNEL_TOKEN_HEADER
from dkron_lab.config import OPTIONS
from dkron_lab.errors import ValidationError
from dkron_lab.jupyter.extension import (
    RESOURCE_CLUSTER,
    RESOURCE_EXECUTIONS,
    RESOURCE_JOBS,
    RESOURCE_SQL,
    DkronLab,
    auth_resource,
)

JOB = {
    "name": "hello",
    "schedule": "@every 1h",
    "executor": "shell",
    "executor_config": {"command": "echo hello"},
}


async def fetch(jp_fetch: Any, *parts: str, **kwargs: Any) -> HTTPResponse:
    """``jp_fetch`` that returns error responses instead of raising them."""
    try:
        response: HTTPResponse = await jp_fetch("dkron", *parts, **kwargs)
    except HTTPClientError as error:
        assert error.response is not None
        return error.response
    return response


def body(response: HTTPResponse) -> Any:
    return json.loads(response.body)


async def test_authenticated_requests_reach_the_node(dkron_app: DkronLab, jp_fetch: Any) -> None:
    assert body(await fetch(jp_fetch, "v1", "jobs")) == []
    created = await fetch(jp_fetch, "v1", "jobs", method="POST", body=json.dumps(JOB))
    assert created.code == 201, created.body
    replaced = await fetch(
        jp_fetch, "v1", "jobs", "hello", method="PUT", body=json.dumps(JOB | {"retries": 2})
    )
    assert replaced.code == 201, replaced.body
    (listed,) = body(await fetch(jp_fetch, "v1", "jobs"))
    assert (listed["name"], listed["retries"]) == ("hello", 2)
    members = await fetch(jp_fetch, "v1", "members")
    assert [m["Name"] for m in body(members)] == [dkron_app.node.name]  # type: ignore[union-attr]


async def test_errors_are_the_api_s_json(dkron_app: DkronLab, jp_fetch: Any) -> None:
    missing = await fetch(jp_fetch, "v1", "jobs", "nope")
    assert (missing.code, body(missing)["type"]) == (404, "JobNotFound")
    bad = await fetch(jp_fetch, "v1", "jobs", method="POST", body=json.dumps({"name": "x"}))
    assert bad.code == 400 and body(bad)["type"] in ("InvalidJob", "InvalidSchedule")
    nowhere = await fetch(jp_fetch, "v1", "no", "such", "thing")
    assert (nowhere.code, body(nowhere)["type"]) == (404, "NotFoundError")


@pytest.mark.parametrize("token", ["", "wrong-token"])
async def test_requests_without_jupyter_auth_are_refused(
    dkron_app: DkronLab, jp_fetch: Any, token: str
) -> None:
    headers = {"Authorization": f"token {token}" if token else ""}
    for method, payload in (("GET", None), ("POST", json.dumps(JOB))):
        refused = await fetch(
            jp_fetch, "v1", "jobs", method=method, body=payload, headers=headers,
            follow_redirects=False,
        )  # fmt: skip
        assert refused.code == 403, refused.body
        assert "Location" not in refused.headers
    assert body(await fetch(jp_fetch, "v1", "jobs")) == []  # nothing was created


async def test_the_kernel_secret_authenticates_without_xsrf(
    dkron_app: DkronLab, jp_fetch: Any
) -> None:
    secret = {"Authorization": "", KERNEL_TOKEN_HEADER: dkron_app.kernel_secret}
    created = await fetch(
        jp_fetch, "v1", "jobs", method="POST", body=json.dumps(JOB), headers=secret
    )
    assert created.code == 201, created.body
    assert [j["name"] for j in body(await fetch(jp_fetch, "v1", "jobs", headers=secret))] == [
        "hello"
    ]
    wrong = {"Authorization": "", KERNEL_TOKEN_HEADER: dkron_app.kernel_secret + "x"}
    assert (await fetch(jp_fetch, "v1", "jobs", headers=wrong)).code == 403


async def test_the_environment_tells_kernels_where_the_api_is(
    dkron_app: DkronLab, jp_serverapp: ServerApp, jp_base_url: str
) -> None:
    url = f"http://127.0.0.1:{jp_serverapp.port}{jp_base_url}dkron"
    assert os.environ["DKRON_LAB_URL"] == url
    assert os.environ["DKRON_LAB_TOKEN"] == dkron_app.kernel_secret
    await dkron_app.stop_extension()
    assert "DKRON_LAB_URL" not in os.environ and "DKRON_LAB_TOKEN" not in os.environ


def test_every_route_has_its_resource() -> None:
    expected = {
        "/v1/jobs": RESOURCE_JOBS,
        "/v1/jobs/{job}": RESOURCE_JOBS,
        "/v1/jobs/{job}/run": RESOURCE_JOBS,
        "/v1/jobs/{job}/toggle": RESOURCE_JOBS,
        "/v1/schedule": RESOURCE_JOBS,
        "/v1/restore": RESOURCE_JOBS,
        "/v1/jobs/{job}/executions": RESOURCE_EXECUTIONS,
        "/v1/jobs/{job}/executions/{execution}": RESOURCE_EXECUTIONS,
        "/v1/executions/{job}": RESOURCE_EXECUTIONS,
        "/v1/sql": RESOURCE_SQL,
        "/v1/members": RESOURCE_CLUSTER,
        "/v1/raft/peers/{peer}": RESOURCE_CLUSTER,
        "/v1/leave": RESOURCE_CLUSTER,
        "/health": RESOURCE_CLUSTER,
        "/v1": RESOURCE_CLUSTER,
        "/metrics": RESOURCE_CLUSTER,
    }
    assert {t: auth_resource(t) for t in expected} == expected
    assert {auth_resource(t) for t, _ in RESOURCES} <= set(expected.values())


async def test_requests_before_the_node_is_ready_get_503(
    dkron_unstarted: DkronLab, jp_fetch: Any
) -> None:
    starting = await fetch(jp_fetch, "v1", "jobs")  # the start hook has not run
    assert (starting.code, body(starting)["type"]) == (503, "Unavailable")
    assert "starting" in body(starting)["error"]


def _listening(address: str) -> bool:
    host, _, port = address.rpartition(":")
    with socket.socket() as sock:
        return sock.connect_ex((host, int(port))) == 0


async def test_stopping_the_server_stops_the_node(dkron_app: DkronLab, jp_fetch: Any) -> None:
    node = dkron_app.node
    assert node is not None
    assert _listening(node.config.http_addr) and _listening(node.config.bind_addr)
    await dkron_app.stop_extension()
    assert not _listening(node.config.http_addr)
    assert not _listening(node.config.bind_addr)
    stopped = await fetch(jp_fetch, "v1", "jobs")
    assert (stopped.code, body(stopped)["type"]) == (503, "Unavailable")
    await dkron_app.stop_extension()  # again, as pytest-jupyter's teardown does: no error


async def test_the_internal_api_listens_on_the_node_s_own_address(dkron_app: DkronLab) -> None:
    import httpx

    node = dkron_app.node
    assert node is not None
    async with httpx.AsyncClient(base_url=f"http://{node.config.http_addr}") as http:
        assert (await http.get("/health")).json() == {"status": "healthy"}
        public = await http.get("/v1/jobs")  # nothing opens there without the node's token
        assert public.status_code == 401
        owner = {"Authorization": f"Bearer {node.api_token}"}
        public = await http.get("/v1/jobs", headers=owner)  # only Jupyter serves the public API
        assert public.status_code == 404
        unsigned = await http.post("/internal/v1/heartbeat", json={"node": "x"})
        assert unsigned.status_code == 401  # a standalone node has a cluster key of its own


def test_every_trait_is_a_declared_option() -> None:
    """The node's traits are made from the agent options (``dkron_lab.config.OPTIONS``): each is
    named after one, says what it says, and reaches the node's flags under its key. The
    names are the ones docs/jupyter.md lists, so users' ``c.DkronLab.*`` settings keep working."""
    traits = DkronLab.class_own_traits(config=True)
    docs = (Path(__file__).parents[2] / "docs" / "jupyter.md").read_text(encoding="utf-8")
    table = docs.split("## Configuration: `c.DkronLab`")[1].split("\n## ")[0]
    assert traits.keys() == set(re.findall(r"^\| `(\w+)` \|", table, re.MULTILINE))
    samples = {"Bool": False, "Int": 3, "Unicode": "x", "List": ["a:1"], "Dict": {"k": "v"}}
    given = {name: samples[type(t).__name__] for name, t in traits.items() if name != "options"}
    flags = DkronLab(**given).node_flags()
    for name, value in given.items():
        option = OPTIONS[traits[name].metadata["option"]]
        assert option.name == name
        assert traits[name].help.startswith(option.help) or name == "http_addr", name
        assert flags[option.key] == (tuple(value) if isinstance(value, list) else value), name


def test_traits_are_checked_like_cli_flags() -> None:
    app = DkronLab(bind_addr="127.0.0.1:notaport")
    with pytest.raises(ValidationError, match="bind-addr"):
        app.node_config()
    config = DkronLab(
        data_dir="/tmp/x", tags={"role": "nb"}, options={"history_retention": "24h"}
    ).node_config()
    assert config.server and config.bootstrap_expect == 1
    assert config.tags == {"role": "nb"} and config.history_retention is not None
    assert not config.encrypt  # a standalone node keeps a key of its own in its data dir
    joining = DkronLab(server=False, join=["10.0.0.1:8946"], encrypt="").node_config()
    assert (joining.server, joining.bootstrap_expect, joining.join) == (
        False, 0, ("10.0.0.1:8946",)
    )  # fmt: skip


async def test_a_failed_start_is_reported_by_the_api(
    dkron_unstarted: DkronLab, jp_serverapp: ServerApp, jp_fetch: Any
) -> None:
    app = dkron_unstarted
    assert app.node is not None
    host, port = app.node.config.http_host_port
    with socket.socket() as squatter:  # the node's internal port is taken
        squatter.bind((host, port))
        squatter.listen()
        await jp_serverapp.extension_manager.start_all_extensions()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while app.failure is None:
            assert loop.time() < deadline
            await asyncio.sleep(0.02)
    failed = await fetch(jp_fetch, "v1", "jobs")
    assert failed.code == 503 and "did not start" in body(failed)["error"]
    assert "c.DkronLab.http_addr" in body(failed)["error"]


def test_every_resource_is_routed_under_dkron(
    dkron_unstarted: DkronLab, jp_serverapp: ServerApp
) -> None:
    """Routes come from RESOURCES when the server starts: later additions are served too."""
    rules = [
        rule
        for host in jp_serverapp.web_app.default_router.rules  # one router per host pattern
        for rule in getattr(host.target, "rules", [])
    ]
    for template, resource in RESOURCES:
        path = jp_serverapp.base_url + "dkron" + re.sub(r"\{\w+\}", "x", template)
        target = next(r.target for r in rules if r.matcher.regex.fullmatch(path))
        assert target.__name__ == resource.__name__, (template, target)
