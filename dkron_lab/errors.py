"""The one exception hierarchy of dkron-lab.

Every error that crosses a boundary (HTTP, CLI, kernel client) is one of these; the HTTP layer
maps them to status codes in a single table (``dkron_lab.api.errors``) and the client raises the
same class back from the ``type`` field of the JSON error body.

::

    DkronError
    ├── ValidationError (ValueError)          400  bad input: fix the request and retry
    │   ├── InvalidJob                             a job definition breaks a rule
    │   ├── InvalidSchedule                        a schedule, timezone or duration does not parse
    │   ├── PluginNotFound                         an unknown executor or processor name
    │   ├── BadRequest                             malformed JSON, wrong query parameter, ...
    │   ├── InvalidQuery                           SQL that DuckDB cannot run (its message)
    │   ├── QueryRefused                           SQL that is not one read-only SELECT
    │   ├── QueryTimeout                           SQL that ran past its time limit
    │   └── QueryTooLarge                          SQL over a memory, disk or response limit
    ├── Unauthorized                          401  missing or wrong API token
    ├── Forbidden                             403  the token's role, the Origin or the Host
    ├── NotFoundError (LookupError)           404
    │   ├── JobNotFound
    │   └── ExecutionNotFound
    ├── ConflictError                         409  the request clashes with current state
    │   └── JobHasDependents
    ├── PayloadTooLarge                       413
    ├── UnsupportedMediaType                  415  a write whose body is not JSON
    ├── Unavailable                           503  try again later
    │   ├── InsufficientStorage               507  the data dir cannot be written (full disk)
    │   ├── Paused                                 new submissions are paused
    │   └── ClusterError                           consensus could not be reached
    │       ├── NotLeaderError                     this node cannot order the write
    │       ├── NoQuorumError
    │       └── ReplicationTimeout                 outcome unknown: the write may still commit
    └── ExecutionError                             an executor's infrastructure failed

A command that exits non-zero is not an exception: it is an Execution with ``success=False``.
"""

from __future__ import annotations

__all__ = [
    "BadRequest",
    "ClusterError",
    "ConflictError",
    "DkronError",
    "ExecutionError",
    "ExecutionNotFound",
    "Forbidden",
    "InsufficientStorage",
    "InvalidJob",
    "InvalidQuery",
    "InvalidSchedule",
    "JobHasDependents",
    "JobNotFound",
    "NoQuorumError",
    "NotFoundError",
    "NotLeaderError",
    "Paused",
    "PayloadTooLarge",
    "PluginNotFound",
    "QueryRefused",
    "QueryTimeout",
    "QueryTooLarge",
    "ReplicationTimeout",
    "Unauthorized",
    "Unavailable",
    "UnsupportedMediaType",
    "ValidationError",
    "HTTP_STATUS",
    "error_class",
]


class DkronError(Exception):
    """Root of every dkron-lab error."""

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else type(self).__name__


class ValidationError(DkronError, ValueError):
    """The input breaks a rule; the message says which and how to fix it."""


class InvalidJob(ValidationError):
    """A job definition is not valid."""


class InvalidSchedule(ValidationError):
    """A schedule spec, timezone or duration cannot be parsed."""


class PluginNotFound(ValidationError):
    """No executor or processor of that name is installed."""


class BadRequest(ValidationError):
    """The request itself is malformed (body, query parameters)."""


class InvalidQuery(ValidationError):
    """SQL sent to ``POST /v1/sql`` that DuckDB cannot run; the message is DuckDB's."""


class QueryRefused(ValidationError):
    """SQL that is not one read-only ``SELECT``: it would write, attach, touch files or change
    settings. The message says what is not allowed and what to send instead."""


class QueryTimeout(ValidationError):
    """SQL that ran past its time limit and was interrupted: narrow it or raise ``timeout``.

    A 400 like the others (not 408, which browsers and proxies retry on their own)."""


class QueryTooLarge(ValidationError):
    """SQL that went over ``--sql-memory-limit``, ``--sql-temp-limit`` or ``--sql-max-bytes``;
    the message names the limit and how to narrow the query."""


class Unauthorized(DkronError):
    """The API token is missing or wrong."""


class Forbidden(DkronError):
    """The caller is known but may not do this: its token's role is too low, or the request
    came from a web page of another origin, or names a Host this node does not serve."""


class NotFoundError(DkronError, LookupError):
    """Something named in the request does not exist."""


class JobNotFound(NotFoundError):
    """No job of that name."""


class ExecutionNotFound(NotFoundError):
    """No execution of that id."""


class ConflictError(DkronError):
    """The request clashes with the current state."""


class JobHasDependents(ConflictError):
    """A job with dependent jobs cannot be deleted before its children."""


class PayloadTooLarge(DkronError):
    """The request body is over the configured limit."""


class UnsupportedMediaType(DkronError):
    """A write whose body is not ``Content-Type: application/json``."""


class Unavailable(DkronError):
    """The node cannot serve this now; retrying later may work."""


class InsufficientStorage(Unavailable):
    """The data dir cannot be written (a full disk or an I/O error): nothing new is
    acknowledged until it can; the node recovers by itself when it can write again."""


class Paused(Unavailable):
    """New job submissions are paused."""


class ClusterError(Unavailable):
    """Consensus could not be reached for a write."""


class NotLeaderError(ClusterError):
    """This node is not the leader and could not forward the write."""

    def __init__(self, message: str = "this node is not the leader", leader: str | None = None):
        super().__init__(message)
        self.leader = leader


class NoQuorumError(ClusterError):
    """Too few servers are reachable to commit anything."""


class ReplicationTimeout(ClusterError):
    """The write did not commit in time; it may still commit later."""


class ExecutionError(DkronError):
    """An executor failed for a reason outside the command it ran."""


HTTP_STATUS: dict[type[DkronError], int] = {
    ValidationError: 400,
    Unauthorized: 401,
    Forbidden: 403,
    NotFoundError: 404,
    ConflictError: 409,
    PayloadTooLarge: 413,
    UnsupportedMediaType: 415,
    Unavailable: 503,
    InsufficientStorage: 507,
}
"""The one table from errors to HTTP statuses (the server answers by it, clients read it back)."""


def error_class(name: str) -> type[DkronError]:
    """The error class called ``name`` (as sent in a JSON error body), else ``DkronError``."""
    found = globals().get(name)
    if isinstance(found, type) and issubclass(found, DkronError):
        return found
    return DkronError
