"""Dkron's notification templates: the subset of Go's ``text/template`` Dkron's users write
(``{{.Field}}`` with ``{{-``/``-}}`` trimming), the fields a run fills in, and Go's spellings of
times and booleans."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from dkron_lab.errors import ValidationError
from dkron_lab.model.execution import Execution

__all__ = [
    "DKRON_FIELDS",
    "EXTRA_FIELDS",
    "KNOWN_FIELDS",
    "Template",
    "go_time",
    "health_fields",
    "health_subject",
    "mail_subject",
    "parse_template",
    "report",
    "template_fields",
]

DKRON_FIELDS = (
    "Report",
    "JobName",
    "ReportingNode",
    "StartTime",
    "FinishedAt",
    "Success",
    "NodeName",
    "Output",
)
"""The fields of Dkron's template data (``dkron/notifier.go``), in its order."""
EXTRA_FIELDS = ("ExecutionGroup", "Attempt", "Health")
"""Fields dkron-lab adds; a Dkron template never names them, so it renders the same."""
KNOWN_FIELDS = DKRON_FIELDS + EXTRA_FIELDS


# -- templates -----------------------------------------------------------------------------------

# An action is ``{{ ... }}``; ``{{- `` and `` -}}`` trim the white space beside it, as in Go.
_ACTION = re.compile(r"\{\{(-\s)?\s*(.*?)\s*(\s-)?\}\}", re.DOTALL)
_FIELD = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)")


@dataclass(frozen=True, slots=True)
class _Field:
    name: str


@dataclass(frozen=True, slots=True)
class Template:
    """A parsed payload: literal text and ``{{.Field}}`` references, checked once at startup."""

    source: str
    parts: tuple[str | _Field, ...]

    def render(self, fields: Mapping[str, str]) -> str:
        return "".join(part if isinstance(part, str) else fields[part.name] for part in self.parts)


def parse_template(text: str, *, key: str = "template") -> Template:
    """The template in ``text``, a Go ``text/template`` that uses only ``{{.Field}}`` actions.

    ``key`` names the setting in errors. Raises ``ValidationError`` for an unknown field, any
    other action (``{{if ...}}``, pipelines, ...) or an unclosed ``{{``.
    """
    parts: list[str | _Field] = []
    position = 0
    for action in _ACTION.finditer(text):
        literal = text[position : action.start()]
        parts.append(literal.rstrip() if action.group(1) else literal)
        parts.append(_field(action.group(0), action.group(2), key))
        position = action.end()
        if action.group(3):
            position = len(text) - len(text[position:].lstrip())
    tail = text[position:]
    if "{{" in tail:
        raise ValidationError(
            f"{key}: unclosed action at {tail[tail.index('{{') :][:30]!r}: "
            "close it with '}}', e.g. {{.JobName}}"
        )
    parts.append(tail)
    return Template(source=text, parts=tuple(part for part in parts if part != ""))


def _field(action: str, inner: str, key: str) -> _Field:
    known = ", ".join("." + name for name in KNOWN_FIELDS)
    match = _FIELD.fullmatch(inner)
    if match is None:
        raise ValidationError(
            f"{key}: unsupported template action {action!r}: dkron-lab renders only "
            f"{{{{.Field}}}} references; fields: {known}"
        )
    if match.group(1) not in KNOWN_FIELDS:
        raise ValidationError(
            f"{key}: unknown field {action!r}: the known fields are {known} (names are "
            "case-sensitive)"
        )
    return _Field(match.group(1))


_GO_ZERO_TIME = "0001-01-01 00:00:00 +0000 UTC"


def go_time(moment: datetime | None) -> str:
    """``moment`` as Go prints a ``time.Time`` (``2006-01-02 15:04:05.999999999 -0700 MST``),
    so that templates written for Dkron render the same; ``None`` is Go's zero time."""
    if moment is None:
        return _GO_ZERO_TIME
    text = moment.strftime("%Y-%m-%d %H:%M:%S")
    if moment.microsecond:
        text += f".{moment.microsecond:06d}".rstrip("0")
    return f"{text} {moment.strftime('%z') or '+0000'} {moment.tzname() or 'UTC'}"


def report(execution: Execution, *, reporting_node: str, group: Sequence[Execution] = ()) -> str:
    """Dkron's ``{{.Report}}``: the run, then one line per execution of its group."""
    lines = "".join(
        f"\t[Node]: {member.node_name} [Start]: {go_time(member.started_at)} "
        f"[End]: {go_time(member.finished_at)} [Success]: {_go_bool(member.success)}\n"
        for member in group or (execution,)
    )
    return (
        f"Executed: {execution.job_name}\nReporting node: {reporting_node}\n"
        f"Start time: {go_time(execution.started_at)}\nEnd time: {go_time(execution.finished_at)}\n"
        f"Success: {_go_bool(execution.success)}\nNode: {execution.node_name}\n"
        f"Output: {execution.output}\nExecution group: {execution.group}\n{lines}"
    )


def template_fields(
    execution: Execution,
    *,
    reporting_node: str,
    group: Sequence[Execution] = (),
    health: str = "",
) -> dict[str, str]:
    """The value of every field in ``KNOWN_FIELDS`` for one run (``health``: the job's, as the
    reporting node knows it)."""
    return {
        "Report": report(execution, reporting_node=reporting_node, group=group),
        "JobName": execution.job_name,
        "ReportingNode": reporting_node,
        "StartTime": go_time(execution.started_at),
        "FinishedAt": go_time(execution.finished_at),
        "Success": _go_bool(execution.success),
        "NodeName": execution.node_name,
        "Output": execution.output,
        "ExecutionGroup": str(execution.group),
        "Attempt": str(execution.attempt),
        "Health": health,
    }


def health_fields(
    job_name: str, health: str, previous: str, since: datetime, reason: str, *, reporting_node: str
) -> dict[str, str]:
    """The fields for a change of a job's health (docs/monitoring.md): ``Health`` is the new
    one, ``Output`` says why, ``Success`` is ``true`` on a return to ``ok``; the run fields a
    change has none of are empty (times: Go's zero time)."""
    text = f"{job_name}: health {previous} -> {health}" + (f": {reason}" if reason else "")
    return {
        "Report": f"{text}\nReporting node: {reporting_node}\nSince: {go_time(since)}\n",
        "JobName": job_name,
        "ReportingNode": reporting_node,
        "StartTime": go_time(since),
        "FinishedAt": go_time(None),
        "Success": _go_bool(health == "ok"),
        "NodeName": reporting_node,
        "Output": text,
        "ExecutionGroup": "",
        "Attempt": "",
        "Health": health,
    }


def _go_bool(value: bool) -> str:
    return "true" if value else "false"


def health_subject(prefix: str, job_name: str, health: str) -> str:
    """``[Dkron]Health missed backup``: the subject of a change of health."""
    return f"{prefix}Health {health} {job_name}"


def mail_subject(prefix: str, execution: Execution) -> str:
    """Dkron's subject, prefix glued on: ``[Dkron]Failed backup execution report``."""
    status = "Success" if execution.success else "Failed"
    return f"{prefix}{status} {execution.job_name} execution report"
