"""Status badges on a real one-node server: SVG and shields.io JSON per job and per tag after
real runs, names escaped, and tokens: a badge needs one unless --public-badges, which opens
the badges and nothing else."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from dkron_lab.testing import DkronNode, auth_headers, one_node, wait_for

CSP = "default-src 'none'; style-src 'unsafe-inline'"


@pytest.fixture
def http(dkron_node: DkronNode) -> Iterator[httpx.Client]:
    headers = auth_headers(dkron_node.token)
    with httpx.Client(base_url=dkron_node.url, headers=headers, trust_env=False) as client:
        yield client


def job(name: str, command: str, **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        "schedule": "@manually",
        "executor": "shell",
        "executor_config": {"command": command},
        "metadata": {"team": "data"},
        **fields,
    }


def run(http: httpx.Client, name: str) -> None:
    http.post(f"/v1/jobs/{name}/run").raise_for_status()
    wait_for(
        lambda: http.get(f"/v1/jobs/{name}").json()["status"],
        30,
        f"job {name} did not finish",
    )


def test_job_and_tag_badges_follow_real_runs(http: httpx.Client) -> None:
    http.post("/v1/jobs", json=job("good", "true")).raise_for_status()
    http.post("/v1/jobs", json=job("bad", "false")).raise_for_status()
    http.post("/v1/jobs", json=job("idle", "true")).raise_for_status()
    never = http.get("/v1/jobs/idle/badge.json")
    assert never.json() == {
        "schemaVersion": 1,
        "label": "idle",
        "message": "never run",
        "color": "#9f9f9f",
    }
    assert never.headers["Cache-Control"] == "no-cache"
    tag = http.get("/v1/badges/tag/team/data.json").json()
    assert (tag["message"], tag["color"]) == ("0 ok, 3 never run", "#9f9f9f")
    run(http, "good")
    run(http, "bad")
    good = http.get("/v1/jobs/good/badge.json").json()
    assert (good["message"], good["color"]) == ("success", "#4c1")
    bad = http.get("/v1/jobs/bad/badge.json").json()
    assert (bad["message"], bad["color"]) == ("failed", "#e05d44")
    tag = http.get("/v1/badges/tag/team/data.json").json()
    assert tag == {
        "schemaVersion": 1,
        "label": "team=data",
        "message": "1 failing of 3",
        "color": "#e05d44",
    }
    svg = http.get("/v1/jobs/good/badge.svg")
    assert svg.status_code == 200
    assert svg.headers["Content-Type"].startswith("image/svg+xml")
    assert svg.headers["Content-Security-Policy"] == CSP
    assert svg.headers["Cache-Control"] == "no-cache"
    assert "<title>good: success</title>" in svg.text and 'fill="#4c1"' in svg.text
    http.delete("/v1/jobs/bad").raise_for_status()
    http.delete("/v1/jobs/idle").raise_for_status()
    assert http.get("/v1/badges/tag/team/data.json").json()["message"] == "1 ok"
    assert http.get("/v1/badges/tag/team/none.json").json()["message"] == "no jobs"
    assert http.get("/v1/jobs/good/badge.png").status_code == 404
    assert http.get("/v1/jobs/ghost/badge.svg").status_code == 404


def test_names_are_escaped_in_the_svg(http: httpx.Client) -> None:
    shown = job("xss", "true", displayname='<script>alert("x")</script>')
    http.post("/v1/jobs", json=shown).raise_for_status()
    svg = http.get("/v1/jobs/xss/badge.svg").text
    assert "<script>" not in svg
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in svg or (
        '&lt;script&gt;alert("x")&lt;/script&gt;' in svg
    )
    tag = http.get("/v1/badges/tag/%3Cscript%3E/v.svg").text
    assert "<script>" not in tag and "&lt;script&gt;=v" in tag


def test_a_badge_needs_a_token_unless_the_server_says_otherwise(
    dkron_node: DkronNode, tmp_path: Path
) -> None:
    closed = httpx.get(f"{dkron_node.url}/v1/badges/tag/team/data.svg", trust_env=False)
    assert closed.status_code == 401
    open_node = one_node(tmp_path / "open", args=["--public-badges"])
    with open_node as node, httpx.Client(base_url=node.url, trust_env=False) as anyone:
        admin = auth_headers(node.token)
        anyone.post("/v1/jobs", json=job("pub", "true"), headers=admin).raise_for_status()
        assert anyone.get("/v1/jobs/pub/badge.svg").status_code == 200
        assert anyone.get("/v1/jobs/pub/badge.json").json()["label"] == "pub"
        assert anyone.get("/v1/badges/tag/team/data.json").status_code == 200
        for path in ("/v1/jobs", "/v1/jobs/pub", "/v1/calendars", "/v1/jobs/pub/skipped"):
            assert anyone.get(path).status_code == 401, path
        assert anyone.post("/v1/jobs/pub/run").status_code == 401
