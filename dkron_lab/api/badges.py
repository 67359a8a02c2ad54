"""Status badges for READMEs and wikis: ``/v1/jobs/<job>/badge.svg|json`` and, over every job
with a tag, ``/v1/badges/tag/<key>/<value>.svg|json``.

The JSON is shields.io's endpoint format (``{"schemaVersion": 1, "label", "message",
"color"}``); the SVG is a small two-part "label | message" badge drawn here. Names are
XML-escaped and the SVG is served with a Content-Security-Policy that forbids scripts, so a
job called ``<script>`` draws as text. Badges need a viewer token like every read, unless the
server runs with ``--public-badges`` (then these routes, and only these, answer without one:
``docs/security.md``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape

from dkron_lab.api.base import ApiMixin
from dkron_lab.errors import NotFoundError
from dkron_lab.views import JobQuery, JobView

__all__ = ["Badge", "JobBadge", "TagBadge", "job_badge", "render_svg", "tag_badge"]

GREEN, ORANGE, RED, GREY = "#4c1", "#fe7d37", "#e05d44", "#9f9f9f"
FORMATS = ("svg", "json")
_SEVERITY = {GREEN: 0, GREY: 1, ORANGE: 2, RED: 3}


@dataclass(frozen=True, slots=True, kw_only=True)
class Badge:
    label: str
    message: str
    color: str

    def to_json(self) -> dict[str, Any]:
        return {
            "schemaVersion": 1,
            "label": self.label,
            "message": self.message,
            "color": self.color,
        }


def _state(view: JobView) -> tuple[str, str]:
    """A job's badge message and colour: its health when that is late, overdue or missed
    (when the API shows a health), else its last status."""
    health = view.to_json().get("health")
    if health == "late":
        return "late", ORANGE
    if health in ("overdue", "missed"):
        return str(health), RED
    status = view.stats.status
    if status == "success":
        return "success", GREEN
    if status == "failed":
        return "failed", RED
    if status == "partially_failed":
        return "partially failed", ORANGE
    return "never run", GREY


def job_badge(view: JobView) -> Badge:
    message, color = _state(view)
    return Badge(label=view.job.displayname or view.job.name, message=message, color=color)


def tag_badge(key: str, value: str, views: list[JobView]) -> Badge:
    """The worst state of ``views``: "3 ok", "1 failing of 3", "1 late of 3", ..."""
    label = f"{key}={value}"
    if not views:
        return Badge(label=label, message="no jobs", color=GREY)
    states = [_state(view) for view in views]
    worst = max((color for _, color in states), key=_SEVERITY.__getitem__)
    total = len(states)
    failing = sum(1 for msg, _ in states if msg in ("failed", "partially failed"))
    late = sum(1 for msg, _ in states if msg in ("late", "overdue", "missed"))
    ok = sum(1 for msg, _ in states if msg == "success")
    if failing:
        message = f"{failing} failing of {total}"
    elif late:
        message = f"{late} late of {total}"
    elif ok == total:
        message = f"{total} ok"
    else:
        message = f"{ok} ok, {total - ok} never run"
    return Badge(label=label, message=message, color=worst)


def _tagged(view: JobView, key: str, value: str) -> bool:
    """The job has ``key: value`` in its metadata, or in its tags (a ``:count`` ignored)."""
    job = view.job
    tag = job.tags.get(key)
    return job.metadata.get(key) == value or (tag is not None and tag.split(":")[0] == value)


def _width(text: str) -> int:
    return 10 + 7 * len(text)


def render_svg(badge: Badge) -> str:
    """A flat two-part badge; every text is XML-escaped."""
    label, message = escape(badge.label), escape(badge.message)
    color = escape(badge.color, {'"': "&quot;"})
    left, right = _width(badge.label), _width(badge.message)
    total = left + right
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{total}" height="20" role="img" '
        f'aria-label="{escape(badge.label, {chr(34): "&quot;"})}: '
        f'{escape(badge.message, {chr(34): "&quot;"})}">'
        f"<title>{label}: {message}</title>"
        f'<rect width="{left}" height="20" fill="#555"/>'
        f'<rect x="{left}" width="{right}" height="20" fill="{color}"/>'
        '<g fill="#fff" text-anchor="middle" font-family="Verdana,DejaVu Sans,sans-serif" '
        'font-size="11">'
        f'<text x="{left / 2}" y="14">{label}</text>'
        f'<text x="{left + right / 2}" y="14">{message}</text>'
        "</g></svg>"
    )


class _BadgeResource(ApiMixin):
    @property
    def public(self) -> bool:  # type: ignore[override]
        """Answer without a token only when the server runs with --public-badges."""
        return bool(self.node.config.public_badges)

    def _answer(self, badge: Badge, format: str) -> None:
        if format not in FORMATS:
            raise NotFoundError(f"badge format {format!r} is not svg or json: use .svg or .json")
        self.set_header("Cache-Control", "no-cache")
        if format == "json":
            self.write_json(badge.to_json())
            return
        self.set_header("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
        self.finish_as(render_svg(badge).encode(), "image/svg+xml; charset=utf-8")


class JobBadge(_BadgeResource):
    def get(self, job: str, format: str) -> None:
        self._answer(job_badge(self.node.jobs.get_job(job)), format)


class TagBadge(_BadgeResource):
    def get(self, key: str, value: str, format: str) -> None:
        views, _ = self.node.jobs.list_jobs(JobQuery())
        tagged = [view for view in views if _tagged(view, key, value)]
        self._answer(tag_badge(key, value, tagged), format)
