"""``GET /metrics`` over real HTTP: the ``PrometheusMetrics`` resource mounted on the headless
handler base in a small tornado application, found through the node's ``metrics`` attribute.

The node is a real ``Node`` that is not started (``/metrics`` needs only its name, config and
metrics), so these tests need no Raft group."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest
import tornado.httpserver
import tornado.web
from prometheus_client.parser import text_string_to_metric_families

from dkron_lab._version import __version__
from dkron_lab.api.app import make_app
from dkron_lab.api.handlers import PrometheusMetrics
from dkron_lab.config import Config
from dkron_lab.metrics import Gauges, Metrics
from dkron_lab.node import Node
from dkron_lab.testing import auth_headers, free_port

TOKEN = "s3cret-token"

Served = tuple[httpx.AsyncClient, Metrics]
Serve = Callable[..., Awaitable[Served]]


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[Serve]:
    started: list[tuple[tornado.httpserver.HTTPServer, httpx.AsyncClient]] = []

    async def start(*, prometheus: bool = True, send_token: bool = True) -> Served:
        config = Config(
            node_name="m1",
            server=True,
            data_dir=tmp_path / f"node{len(started)}",
            enable_prometheus=prometheus,
            api_token=TOKEN,
        )
        node = Node(config)
        metrics = Metrics.from_config(config, lambda: Gauges(is_leader=True, raft_term=3))
        node.metrics = metrics
        app = make_app(node, public=(("/metrics", PrometheusMetrics),))
        port = free_port()
        server = tornado.httpserver.HTTPServer(app)
        server.listen(port, address="127.0.0.1")
        headers = auth_headers(TOKEN) if send_token else {}
        client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=20, headers=headers)
        started.append((server, client))
        return client, metrics

    yield start
    for server, client in reversed(started):
        await client.aclose()
        server.stop()
        await server.close_all_connections()


async def test_metrics_are_served_as_prometheus_text(serve: Serve) -> None:
    http, metrics = await serve()
    metrics.fired(2)
    metrics.notification("mail", False)

    response = await http.get("/metrics")

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }
    assert samples[("dkron_fires_total", ())] == 2
    assert samples[("dkron_notifications_total", (("kind", "mail"), ("result", "failed")))] == 1
    assert samples[("dkron_is_leader", ())] == 1
    assert samples[("dkron_raft_term", ())] == 3
    assert samples[
        ("dkron_node_info", (("node", "m1"), ("role", "server"), ("version", __version__)))
    ]


async def test_each_scrape_sees_the_latest_counts(serve: Serve) -> None:
    http, metrics = await serve()

    before = await http.get("/metrics")
    metrics.fired(5)
    after = await http.get("/metrics")

    assert "dkron_fires_total 0.0" in before.text
    assert "dkron_fires_total 5.0" in after.text


async def test_openmetrics_when_the_scraper_asks(serve: Serve) -> None:
    http, _ = await serve()

    response = await http.get(
        "/metrics", headers={"Accept": "application/openmetrics-text;version=1.0.0"}
    )

    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    assert response.text.endswith("# EOF\n")


async def test_disabled_metrics_are_a_404_that_says_how_to_enable_them(serve: Serve) -> None:
    http, _ = await serve(prometheus=False)

    response = await http.get("/metrics")

    assert response.status_code == 404
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["type"] == "NotFoundError"
    assert "--enable-prometheus" in body["error"]


async def test_the_api_token_applies_to_metrics(serve: Serve) -> None:
    http, _ = await serve(send_token=False)

    refused = await http.get("/metrics")
    allowed = await http.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})

    assert refused.status_code == 401
    assert refused.json()["type"] == "Unauthorized"
    assert allowed.status_code == 200
    assert "dkron_fires_total" in allowed.text


async def test_only_get_is_allowed(serve: Serve) -> None:
    http, _ = await serve()

    response = await http.post("/metrics")

    assert response.status_code == 405
    assert "GET /v1/openapi.json" in response.json()["error"]
