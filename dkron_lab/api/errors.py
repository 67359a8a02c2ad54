"""Errors to HTTP: the one table from ``dkron_lab.errors`` classes to status codes, and the
JSON error body ``{"error": "<message>", "type": "<ErrorClassName>"}`` every handler answers with.

The client turns ``type`` back into the same class with ``dkron_lab.errors.error_class``.
A class not in the table (or any other exception) is a 500: the server's fault, never the input's.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final

from dkron_lab.errors import HTTP_STATUS, BadRequest, DkronError

__all__ = ["STATUS_BY_ERROR", "error_body", "http_error_body", "status_for"]

STATUS_BY_ERROR: Final[Mapping[type[DkronError], int]] = MappingProxyType(HTTP_STATUS)

# Errors raised by tornado itself (405, malformed form bodies) get the nearest class name.
_TYPE_BY_STATUS: Final[Mapping[int, str]] = MappingProxyType(
    {status: cls.__name__ for cls, status in STATUS_BY_ERROR.items()} | {400: BadRequest.__name__}
)


def status_for(error: BaseException) -> int:
    """The HTTP status for ``error``: the nearest ancestor in the table, else 500."""
    for cls in type(error).__mro__:
        status = STATUS_BY_ERROR.get(cls)
        if status is not None:
            return status
    return 500


def error_body(error: BaseException) -> dict[str, Any]:
    """The JSON body for ``error``; anything unexpected says only that it is internal."""
    if isinstance(error, DkronError) and status_for(error) != 500:
        return {"error": error.message, "type": type(error).__name__}
    detail = str(error) or type(error).__name__
    return {
        "error": f"internal error: {detail} (the server log has the details)",
        "type": DkronError.__name__,
    }


def http_error_body(status: int, message: str) -> dict[str, Any]:
    """The JSON body for an error tornado raised itself (``HTTPError``) with ``status``."""
    return {"error": message, "type": _TYPE_BY_STATUS.get(status, DkronError.__name__)}
