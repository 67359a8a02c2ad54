"""A change of the cluster-wide concurrency limits (``PUT /v1/concurrency``), checked once,
before anything is written."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dkron_lab.errors import BadRequest
from dkron_lab.model.job import GROUP_NAME

__all__ = ["LimitChange"]


@dataclass(frozen=True, slots=True, kw_only=True)
class LimitChange:
    """``overall`` replaces the overall limit (``None``: unchanged); ``groups`` are merged into
    the group limits. 0 means no limit."""

    overall: int | None = None
    groups: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def from_json(cls, body: Any) -> LimitChange:
        """``{"limit": N}`` and/or ``{"groups": {"etl": N}}``; ``BadRequest`` says what is
        wrong and what to send instead."""
        if not isinstance(body, dict) or not body or not set(body) <= {"limit", "groups"}:
            raise BadRequest(
                'send {"limit": N} and/or {"groups": {"etl": N}}: N a whole number, 0 = no limit'
            )
        overall = body.get("limit")
        if overall is not None and not _count(overall):
            raise BadRequest(f"limit must be a whole number >= 0 (0: no limit), not {overall!r}")
        groups = body.get("groups", {})
        if not isinstance(groups, dict) or not all(
            isinstance(k, str) and GROUP_NAME.match(k) and _count(v) for k, v in groups.items()
        ):
            raise BadRequest(
                'groups must map group names (letters, digits, "_", "-", ".") to whole numbers '
                '>= 0, e.g. {"etl": 2}'
            )
        return cls(overall=overall, groups=dict(groups))


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
