"""``@authorized`` on every route of the extension, with one Authorizer resource per route
group, against a real in-process Jupyter server whose Authorizer refuses the jobs resource."""

from __future__ import annotations

import json
from typing import Any

import pytest
from jupyter_server.auth import Authorizer

from dkron_lab.client import KERNEL_TOKEN_HEADER
from dkron_lab.jupyter.extension import (
    RESOURCE_CLUSTER,
    RESOURCE_EXECUTIONS,
    RESOURCE_JOBS,
    DkronLab,
    auth_action,
)
from tests.jupyter.test_extension import JOB, fetch


class DenyJobs(Authorizer):
    """Allows everything but the jobs resource; records what it was asked."""

    asked: list[tuple[str, str, str]] = []

    def is_authorized(self, handler: Any, user: Any, action: str, resource: str) -> bool:
        DenyJobs.asked.append((handler.request.path, action, resource))
        return resource != RESOURCE_JOBS


@pytest.fixture
def jp_server_config() -> dict[str, Any]:
    return {"ServerApp": {"jpserver_extensions": {"dkron_lab": True}, "authorizer_class": DenyJobs}}


async def test_the_authorizer_decides_per_resource(
    dkron_app: DkronLab, jp_fetch: Any, jp_base_url: str
) -> None:
    DenyJobs.asked.clear()
    denied = await fetch(jp_fetch, "v1", "jobs")
    assert denied.code == 403 and RESOURCE_JOBS in json.loads(denied.body)["error"]
    assert (await fetch(jp_fetch, "v1", "jobs", method="POST", body=json.dumps(JOB))).code == 403
    assert (await fetch(jp_fetch, "v1", "members")).code == 200
    history = await fetch(jp_fetch, "v1", "jobs", "hello", "executions")
    assert history.code == 404  # authorized (executions), then: no such job
    base = jp_base_url + "dkron"
    assert DenyJobs.asked == [
        (base + "/v1/jobs", "read", RESOURCE_JOBS),
        (base + "/v1/jobs", "write", RESOURCE_JOBS),
        (base + "/v1/members", "read", RESOURCE_CLUSTER),
        (base + "/v1/jobs/hello/executions", "read", RESOURCE_EXECUTIONS),
    ]
    # This server's kernels are its owner: the secret is not asked about.
    secret = {KERNEL_TOKEN_HEADER: dkron_app.kernel_secret}
    assert (await fetch(jp_fetch, "v1", "jobs", headers=secret)).code == 200


def test_the_action_stands_for_the_role_the_headless_server_requires() -> None:
    assert auth_action("GET", "/v1/jobs") == "read"  # viewer
    assert auth_action("POST", "/v1/sql") == "read"
    assert auth_action("POST", "/v1/jobs/{job}/run") == "execute"  # operator
    assert auth_action("POST", "/v1/jobs/{job}/toggle") == "execute"
    assert auth_action("POST", "/v1/pause") == "execute"
    assert auth_action("POST", "/v1/jobs") == "write"  # admin
    assert auth_action("DELETE", "/v1/jobs/{job}") == "write"
    assert auth_action("POST", None) == "write"  # no such route


async def test_changes_through_jupyter_are_audited_with_the_jupyter_user(
    dkron_app: DkronLab, jp_fetch: Any
) -> None:
    refused = await fetch(jp_fetch, "v1", "jobs", method="POST", body=json.dumps(JOB))
    assert refused.code == 403
    allowed = await fetch(jp_fetch, "v1", "pause", method="POST", body="")
    assert allowed.code == 200
    dkron_app.node.history.flush()
    rows = dkron_app.node.history.query(
        "SELECT actor, role, method, path, status FROM audit ORDER BY answered_at"
    )
    paths = [(method, path.rsplit("/dkron", 1)[-1], status) for _, _, method, path, status in rows]
    assert paths == [("POST", "/v1/jobs", 403), ("POST", "/v1/pause", 200)]
    # The Jupyter user who asked (a token-authenticated test client gets a generated name).
    assert all(actor and actor != "anonymous" for actor, *_ in rows)
    assert [role for _, role, *_ in rows] == ["admin", "operator"]  # the role each one needed
