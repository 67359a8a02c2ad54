"""Jobs: list (with ``?stats``), create, update, delete, run, toggle, restore, and the schedule
preview."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import datetime, tzinfo
from typing import Any

from tornado import httputil

from dkron_lab import codec
from dkron_lab.api.base import ApiMixin, job_location, parse_json
from dkron_lab.api.params import boolean_arg, instant_arg, integer_arg, job_query, text_arg
from dkron_lab.errors import (
    BadRequest,
    DkronError,
    ValidationError,
)
from dkron_lab.history.queries import RunStats
from dkron_lab.model import schedule
from dkron_lab.model.calendar import Calendar, calendar_fires
from dkron_lab.model.job import CALENDAR_MODES
from dkron_lab.model.overrides import RunOverrides, parse_overrides
from dkron_lab.views import JobView

__all__ = ["JobCounts", "JobResource", "Jobs", "Restore", "Run", "SchedulePreview", "Toggle"]

log = logging.getLogger(__name__)

MAX_PREVIEW = 1000


class Restore(ApiMixin):
    accepts_body = True

    async def post(self) -> None:
        data = parse_json(self._form_file("file"), what="the restore file")
        if not isinstance(data, list):
            raise BadRequest(
                "the restore file must be a JSON array of jobs, as GET /v1/jobs returns"
            )
        jobs = []
        for position, item in enumerate(data):
            try:
                jobs.append(codec.job_from_json(item))
            except ValidationError as exc:
                raise type(exc)(f"job #{position} in the restore file: {exc.message}") from None
        messages = await self.node.jobs.restore(jobs)
        # Dkron answers with a JSON string that holds the JSON array; its clients expect that.
        self.write_json(json.dumps(messages))

    def _form_file(self, field: str) -> bytes:
        content_type = self.request.headers.get("Content-Type", "")
        arguments: dict[str, list[bytes]] = {}
        files: dict[str, list[httputil.HTTPFile]] = {}
        try:
            httputil.parse_body_arguments(
                content_type, self.request_body(), arguments, files, self.request.headers
            )
        except httputil.HTTPInputError as exc:
            raise BadRequest(f"the form cannot be read: {exc}") from None
        if field in files:
            return files[field][0].body
        if field in arguments:
            return arguments[field][0]
        raise BadRequest(
            f"no {field!r} field in the form: send multipart/form-data, e.g. "
            f"curl -F {field}=@backup.json http://localhost:8080/v1/restore"
        )


class _JobWriter(ApiMixin):
    accepts_body = True

    async def _save(self, data: Any) -> None:
        job, stats = codec.job_from_json(data)
        view = await self.node.jobs.set_job(job, stats)
        if "runoncreate" in self.request.query_arguments:
            view = await self._run_saved(view)
        self.set_header("Location", job_location(job.name))
        self.write_json(view.to_json(), status=201)

    async def _run_saved(self, view: JobView) -> JobView:
        # The job is saved: a run that cannot start must not turn that into an error (Dkron
        # runs it in the background and ignores the outcome too).
        try:
            return await self.node.jobs.run_job(view.job.name)
        except DkronError as exc:
            log.warning("runoncreate: job %r saved but not run: %s", view.job.name, exc)
            return view

    async def _run(self, name: str) -> None:
        wait = boolean_arg(self.request.query_arguments, "wait", empty=True) or False
        node = text_arg(self.request.query_arguments, "node") or None
        overrides = self._overrides()
        view = await self.node.jobs.run_job(name, wait=wait, node=node, overrides=overrides)
        self.set_header("Location", job_location(name))
        self.write_json(view.to_json(), status=200 if wait else 202)

    def _overrides(self) -> RunOverrides:
        """The run's overrides from its optional body (Dkron's clients send none; an empty
        body, ``{}`` or ``null`` are none too)."""
        raw = self.request_body()
        if not raw.strip():
            return RunOverrides()
        return parse_overrides(self.json_body())


class Jobs(_JobWriter):
    async def get(self) -> None:
        arguments = self.request.query_arguments
        views, total = self.node.jobs.list_jobs(job_query(arguments))
        self.set_header("X-Total-Count", total)
        if not boolean_arg(arguments, "stats", empty=True):  # Dkron's job JSON, unchanged
            self.write_json([view.to_json() for view in views])
            return
        stats = await self.node.jobs.run_stats([view.job.name for view in views])
        self.write_json([_with_stats(v.to_json(), stats.get(v.job.name), v.zone) for v in views])

    async def post(self) -> None:
        await self._save(self.json_body())

    async def patch(self) -> None:
        await self._save(self.json_body())


class JobResource(_JobWriter):
    def get(self, job: str) -> None:
        self.write_json(self.node.jobs.get_job(job).to_json())

    async def put(self, job: str) -> None:
        await self._save(_name_from_path(self.json_body(), job))

    async def post(self, job: str) -> None:
        await self._run(job)

    async def delete(self, job: str) -> None:
        view = await self.node.jobs.delete_job(job)
        self.write_json(view.to_json())


def _name_from_path(data: Any, name: str) -> Any:
    """PUT's path names the job: an absent name is filled in, a different one is refused."""
    if not isinstance(data, dict):
        return data
    given = data.get("name")
    if given in (None, ""):
        return {**data, "name": name}
    if given != name:
        raise BadRequest(
            f"the path names job {name!r} but the body names {given!r}: PUT /v1/jobs/{given} "
            "(or POST /v1/jobs) to save that job; jobs cannot be renamed"
        )
    return data


class Run(_JobWriter):
    async def post(self, job: str) -> None:
        await self._run(job)


class JobCounts(ApiMixin):
    """Our addition: how many jobs there are and how many have each status, in one answer."""

    def get(self) -> None:
        total, statuses = self.node.jobs.job_counts()
        self.write_json({"total": total, "statuses": statuses})


class Toggle(ApiMixin):
    async def post(self, job: str) -> None:
        view = await self.node.jobs.toggle_job(job)
        self.set_header("Location", job_location(job))
        self.write_json(view.to_json())


class SchedulePreview(ApiMixin):
    """Our addition: the next fire instants of a schedule, without saving a job."""

    async def get(self) -> None:
        arguments = self.request.query_arguments
        spec = text_arg(arguments, "schedule")
        if not spec:
            raise BadRequest("the schedule parameter is required, e.g. ?schedule=@every+1h")
        count = integer_arg(arguments, "count", maximum=MAX_PREVIEW)
        if count == 0:
            raise BadRequest(f"count must be between 1 and {MAX_PREVIEW}")
        after = instant_arg(arguments, "after") or self.node.clock.now()
        timezone = text_arg(arguments, "timezone") or ""
        schedule.zone(timezone)  # its own message, not wrapped in the schedule's
        parsed = schedule.parse(spec, timezone=timezone)
        calendar, mode = self._calendar(arguments)
        if calendar is None:
            found = await _fires(parsed, after, count or 5)
        else:
            work = (parsed, after, count or 5, calendar, mode)
            found = await asyncio.to_thread(calendar_fires, *work)
        answer = {
            "schedule": spec,
            "timezone": parsed.timezone,
            "next": [codec.format_time(t, parsed.tzinfo) for t in found],
        }
        if calendar is not None:
            answer |= {"calendar": calendar.name, "calendar_mode": mode}
        self.write_json(answer)

    def _calendar(self, arguments: dict[str, list[bytes]]) -> tuple[Calendar | None, str]:
        """``?calendar=<name>`` (and ``calendar_mode=only``): the fires that calendar allows."""
        name = text_arg(arguments, "calendar") or ""
        mode = text_arg(arguments, "calendar_mode") or "exclude"
        if mode not in CALENDAR_MODES:
            raise BadRequest(f"calendar_mode must be one of {', '.join(CALENDAR_MODES)}")
        return (self.node.jobs.get_calendar(name) if name else None), mode


async def _fires(parsed: schedule.Schedule, after: datetime, count: int) -> list[datetime]:
    # A sparse cron expression can take a while to search: keep it off the event loop.
    return await asyncio.to_thread(schedule.fires, parsed, after, count)


def _with_stats(shown: dict[str, Any], stats: RunStats | None, zone: tzinfo) -> dict[str, Any]:
    """A job's JSON with ``last_results`` (newest first) and ``median_duration`` (seconds)."""
    last = stats.last if stats is not None else ()
    return shown | {
        "last_results": [
            {
                "status": "success" if run.success else "failed",
                "started_at": codec.format_time(run.started_at, zone),
                "duration": run.duration,
            }
            for run in last
        ],
        "median_duration": stats.median_duration if stats is not None else None,
    }
