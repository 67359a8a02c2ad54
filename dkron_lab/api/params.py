"""Query parameters, parsed once at the edge: pure functions from tornado's
``query_arguments`` to values, each ``BadRequest`` saying which parameter is wrong and how to
write it."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime

from dkron_lab.errors import BadRequest
from dkron_lab.history.queries import ExecutionFilter
from dkron_lab.views import ExecutionQuery, JobQuery

__all__ = [
    "EXECUTION_PAGE",
    "EXECUTION_STATUSES",
    "JOB_STATUSES",
    "MAX_EXECUTION_PAGE",
    "Arguments",
    "all_executions_query",
    "boolean_arg",
    "execution_query",
    "instant_arg",
    "integer_arg",
    "job_query",
    "text_arg",
]

Arguments = Mapping[str, Sequence[bytes]]

JOB_STATUSES = ("success", "failed", "partially_failed", "untriggered")
_TRUE = frozenset({"1", "t", "T", "true", "TRUE", "True"})  # Go's strconv.ParseBool
_FALSE = frozenset({"0", "f", "F", "false", "FALSE", "False"})
_METADATA = re.compile(r"^metadata\[(.+)\]$")
_INTEGER = re.compile(r"^-?[0-9]{1,18}$")

EXECUTION_STATUSES = ("success", "failed", "running")
EXECUTION_PAGE = 100
"""Rows of ``GET /v1/executions`` without ``_end``."""
MAX_EXECUTION_PAGE = 1000
"""Most rows one page of ``GET /v1/executions`` holds."""


def text_arg(arguments: Arguments, name: str) -> str | None:
    values = arguments.get(name)
    if not values:
        return None
    try:
        return values[-1].decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(f"query parameter {name} is not valid UTF-8") from None


def integer_arg(arguments: Arguments, name: str, *, maximum: int | None = None) -> int | None:
    text = text_arg(arguments, name)
    if text is None or text == "":
        return None
    if not _INTEGER.match(text):
        raise BadRequest(f"{name} must be a whole number, e.g. {name}=10, not {text[:40]!r}")
    value = int(text)
    if value < 0:
        raise BadRequest(f"{name} must be 0 or more, not {value}")
    if maximum is not None and value > maximum:
        raise BadRequest(f"{name} must be at most {maximum}, not {value}")
    return value


def boolean_arg(arguments: Arguments, name: str, *, empty: bool | None = None) -> bool | None:
    text = text_arg(arguments, name)
    if text is None:
        return None
    if text == "" and empty is not None:
        return empty
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise BadRequest(f"{name} must be true or false, not {text!r}")


def _order(arguments: Arguments, default: str) -> str:
    text = (text_arg(arguments, "_order") or default).upper()
    if text not in ("ASC", "DESC"):
        raise BadRequest(f"_order must be ASC or DESC, not {text_arg(arguments, '_order')!r}")
    return text


def _page(arguments: Arguments) -> tuple[int, int | None]:
    start = integer_arg(arguments, "_start") or 0
    end = integer_arg(arguments, "_end")
    if end is not None and end < start:
        raise BadRequest(f"_end ({end}) must not be less than _start ({start})")
    return start, end


def _metadata(arguments: Arguments) -> dict[str, str]:
    found = {}
    for key in arguments:
        match = _METADATA.match(key)
        if match:
            found[match.group(1)] = text_arg(arguments, key) or ""
    return found


def job_query(arguments: Arguments) -> JobQuery:
    """``GET /v1/jobs`` query parameters as a ``JobQuery``; ``BadRequest`` says which is wrong."""
    status = text_arg(arguments, "status") or None
    if status is not None and status not in JOB_STATUSES:
        raise BadRequest(f"status must be one of {', '.join(JOB_STATUSES)}, not {status!r}")
    start, end = _page(arguments)
    return JobQuery(
        q=text_arg(arguments, "q") or "",
        status=status,
        disabled=boolean_arg(arguments, "disabled"),
        metadata=_metadata(arguments),
        sort=text_arg(arguments, "_sort") or "name",
        order=_order(arguments, "ASC"),
        start=start,
        end=end,
    )


def execution_query(arguments: Arguments) -> ExecutionQuery:
    """``GET /v1/jobs/<job>/executions`` query parameters; ``BadRequest`` says which is wrong."""
    start, end = _page(arguments)
    return ExecutionQuery(
        sort=text_arg(arguments, "_sort") or "",
        order=_order(arguments, "DESC"),
        start=start,
        end=end,
        output_size_limit=integer_arg(arguments, "output_size_limit"),
    )


def instant_arg(arguments: Arguments, name: str) -> datetime | None:
    text = text_arg(arguments, name)
    if not text:
        return None
    # An unescaped '+' in a query string arrives as a space: '...T10:00:00 01:00'.
    text = text.replace(" ", "+")
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        value = None
    if value is None or value.tzinfo is None:
        raise BadRequest(
            f"{name} must be an RFC3339 time with an offset, e.g. 2026-01-31T09:30:00Z, "
            f"not {text!r}"
        )
    return value


def all_executions_query(
    arguments: Arguments,
) -> tuple[ExecutionFilter, ExecutionQuery, str | None]:
    """``GET /v1/executions`` parameters: the filter, the page (``end`` always set) and the
    ``status`` asked for; ``BadRequest`` says which is wrong."""
    status = text_arg(arguments, "status") or None
    if status is not None and status not in EXECUTION_STATUSES:
        raise BadRequest(f"status must be one of {', '.join(EXECUTION_STATUSES)}, not {status!r}")
    since, until = instant_arg(arguments, "since"), instant_arg(arguments, "until")
    if since is not None and until is not None and until <= since:
        raise BadRequest(f"until ({until.isoformat()}) must be after since ({since.isoformat()})")
    query = execution_query(arguments)
    end = query.start + EXECUTION_PAGE if query.end is None else query.end
    if end - query.start > MAX_EXECUTION_PAGE:
        raise BadRequest(
            f"a page holds at most {MAX_EXECUTION_PAGE} executions: ask for _start={query.start}"
            f"&_end={query.start + MAX_EXECUTION_PAGE}, then the next page"
        )
    found = ExecutionFilter(
        job=text_arg(arguments, "job") or None,
        node=text_arg(arguments, "node") or None,
        success={"success": True, "failed": False}.get(status or ""),
        since=since,
        until=until,
    )
    return found, replace(query, end=end), status
