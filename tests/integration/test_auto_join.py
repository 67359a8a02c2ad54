"""A server started with ``--join`` naming a running cluster's servers becomes a voter by
itself, as Dkron's servers do when they join, and can be removed (that one just removed is
not taken back: tests/unit/test_peering.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dkron_lab.testing import wait_for
from tests.harness import Cluster

pytestmark = pytest.mark.slow

KEY = "bWFkZS11cC10ZXN0LWtleQ=="  # 16 bytes


def voters(cluster: Cluster, server: str) -> set[str]:
    return {peer["name"] for peer in cluster.get(server, "/v1/raft/peers") or []}


def test_a_new_server_joins_by_itself_and_can_be_removed(tmp_path: Path) -> None:
    with Cluster(tmp_path, servers=2, encrypt=KEY) as cluster:
        job = {"name": "before", "schedule": "@manually", "executor": "shell",
               "executor_config": {"command": "true"}}  # fmt: skip
        cluster.http.post(f"{cluster.url('s1')}/v1/jobs", json=job).raise_for_status()
        cluster.add_server("s3")
        leader = cluster.leader()
        wait_for(lambda: voters(cluster, leader) == {"s1", "s2", "s3"}, 30.0, "s3 a voter")
        assert wait_for(lambda: cluster.get("s3", "/v1/jobs/before"), 15.0, "s3 has the job")

        removed = cluster.http.delete(f"{cluster.url('s1')}/v1/raft/peers/s3")
        assert removed.status_code == 200, removed.text
        # (s3 runs on with its own view of the cluster, so ask s1 and s2 only.)
        both = {"s1", "s2"}
        wait_for(lambda: voters(cluster, "s1") == voters(cluster, "s2") == both, 30.0, "s3 out")
        # s3 still runs and keeps knocking; that it is not taken back for a minute is tested in
        # fake time (tests/unit/test_peering.py), not by watching it knock here.
        cluster.kill("s3")
