"""Backfills (``dkron_lab/backfill.py``): ``POST /v1/jobs/{job}/backfill`` starts one,
``/v1/backfills`` lists them, ``/v1/backfills/{backfill}`` reads one or cancels it (``DELETE``).
Our addition, not Dkron's; starting and cancelling need the operator role, as running a job does.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import quote

from dkron_lab import codec
from dkron_lab.api.base import ApiMixin
from dkron_lab.backfill import MAX_PARALLEL
from dkron_lab.errors import BadRequest

__all__ = ["BackfillResource", "Backfills", "JobBackfill"]

_KEYS = ("from", "to", "mode", "max_parallel")
DEFAULT_PARALLEL = 4


class JobBackfill(ApiMixin):
    accepts_body = True

    async def post(self, job: str) -> None:
        body = self.json_body()
        if not isinstance(body, Mapping):
            raise BadRequest(_EXAMPLE)
        unknown = sorted(set(body) - set(_KEYS))
        if unknown:
            raise BadRequest(f"unknown key(s) {', '.join(unknown)}: {_EXAMPLE}")
        started = await self.node.jobs.backfill(
            job,
            first=_time(body, "from"),
            last=_time(body, "to"),
            mode=str(body.get("mode") or "all"),
            max_parallel=_parallel(body.get("max_parallel", DEFAULT_PARALLEL)),
        )
        self.set_header("Location", "/v1/backfills/" + quote(started["id"], safe=""))
        self.write_json(started, status=201)


class Backfills(ApiMixin):
    def get(self) -> None:
        job = self.get_query_argument("job", None)
        self.write_json(self.node.jobs.backfills(job))


class BackfillResource(ApiMixin):
    def get(self, backfill: str) -> None:
        self.write_json(self.node.jobs.get_backfill(backfill))

    async def delete(self, backfill: str) -> None:
        self.write_json(await self.node.jobs.cancel_backfill(backfill))


_EXAMPLE = (
    'send {"from": "2026-12-01T00:00:00Z", "to": "2026-12-07T00:00:00Z", "mode": "all", '
    '"max_parallel": 4} (mode and max_parallel may be left out)'
)


def _time(body: Mapping[str, Any], key: str) -> datetime:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise BadRequest(f"{key!r} is required, an RFC 3339 time with an offset: {_EXAMPLE}")
    try:
        at = codec.parse_time(value, key)
    except (BadRequest, ValueError) as exc:
        raise BadRequest(f"{key!r} is not an RFC 3339 time ({exc}): {_EXAMPLE}") from None
    if at is None:
        raise BadRequest(f"{key!r} is required: {_EXAMPLE}")
    return at


def _parallel(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"max_parallel must be a whole number from 1 to {MAX_PARALLEL}")
    return value
