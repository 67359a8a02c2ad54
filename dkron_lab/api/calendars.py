"""Calendars (``/v1/calendars``): list, create or replace, read, delete. Our addition, not
Dkron's; a job names one in ``calendar`` (``docs/jobs.md``). Writes need the admin role, as
job writes do; a calendar a job uses is not deleted (409 naming the jobs)."""

from __future__ import annotations

from urllib.parse import quote

from dkron_lab.api.base import ApiMixin
from dkron_lab.model.calendar import Calendar, calendar_from_json, calendar_to_json

__all__ = ["CalendarResource", "Calendars"]


def calendar_location(name: str) -> str:
    return "/v1/calendars/" + quote(name, safe="")


class _CalendarWriter(ApiMixin):
    accepts_body = True

    async def _save(self, calendar: Calendar) -> None:
        created = await self.node.jobs.set_calendar(calendar)
        self.set_header("Location", calendar_location(calendar.name))
        self.write_json(calendar_to_json(calendar), status=201 if created else 200)


class Calendars(_CalendarWriter):
    def get(self) -> None:
        self.write_json([calendar_to_json(c) for c in self.node.jobs.calendars()])

    async def post(self) -> None:
        await self._save(calendar_from_json(self.json_body()))


class CalendarResource(_CalendarWriter):
    def get(self, calendar: str) -> None:
        self.write_json(calendar_to_json(self.node.jobs.get_calendar(calendar)))

    async def put(self, calendar: str) -> None:
        await self._save(calendar_from_json(self.json_body(), name=calendar))

    async def delete(self, calendar: str) -> None:
        deleted = await self.node.jobs.delete_calendar(calendar)
        self.write_json(calendar_to_json(deleted))
