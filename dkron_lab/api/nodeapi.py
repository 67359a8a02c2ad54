"""What the HTTP edge may use of a node: the contract ``api/*`` is typed against.

The handlers never import ``dkron_lab.node``: the composition root builds a node and hands it
to ``app.make_app``/``serve``; anything with these members serves the API (import-linter keeps
it so). Everything the API does to jobs, executions and members goes through ``jobs``, the
facade; the other members are what the edge reads of the node itself.
"""

from __future__ import annotations

from typing import Protocol

from dkron_lab.clock import Clock
from dkron_lab.config import Config
from dkron_lab.dispatch import Verifier
from dkron_lab.history.duckdb import DuckDBHistory
from dkron_lab.jobs import Jobs
from dkron_lab.metrics import Metrics

__all__ = ["NodeApi", "RaftPosition"]


class RaftPosition(Protocol):
    """Where this node's replica stands, for the internal endpoints' answers."""

    @property
    def term(self) -> int: ...

    @property
    def applied_index(self) -> int: ...


class NodeApi(Protocol):
    """A node as the REST API sees it. Members are read-only: the API changes a node only
    through ``jobs`` (replicated writes) and ``leave()``."""

    @property
    def name(self) -> str: ...

    @property
    def config(self) -> Config: ...

    @property
    def api_token(self) -> str: ...

    @property
    def clock(self) -> Clock: ...

    @property
    def jobs(self) -> Jobs:
        """Every operation on jobs, executions, members, peers and limits."""
        ...

    @property
    def history(self) -> DuckDBHistory:
        """This server's execution history: the SQL endpoint and history copies read it."""
        ...

    @property
    def metrics(self) -> Metrics: ...

    @property
    def verifier(self) -> Verifier:
        """Checks the signature of a call from another node (``/v1/internal``)."""
        ...

    @property
    def raft(self) -> RaftPosition: ...

    @property
    def is_leader(self) -> bool: ...

    @property
    def paused(self) -> bool: ...

    @property
    def storage_fault(self) -> str | None:
        """Why this node cannot write its data dir, or None (see ``Node.storage_fault``)."""
        ...

    async def leave(self) -> None:
        """Leave the cluster gracefully (``POST /v1/leave``)."""
        ...
