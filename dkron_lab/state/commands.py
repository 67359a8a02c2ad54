"""The replicated commands: one frozen dataclass per change the state machine knows.

Services build these; the edge that submits (``Node._submit``) calls ``encode()`` once, and
``JobState.apply`` calls ``decode()`` once on what the Raft log holds. The wire form is plain,
versioned JSON data, ``{"type": kind, "v": version, ...fields}``, with the keys every earlier
dkron-lab wrote, so old journals and snapshots replay unchanged. An entry without ``"v"`` is
version 1; an unknown kind or version is refused with ``BadRequest`` (it was written by a newer
dkron-lab: upgrade this node).

Instants inside claims and spans stay the RFC 3339 strings they were written as: every replica
stores the same text, whichever version applied the entry.

Commands and their versions (all version 1):

=====================  ==================  ===================================================
kind                   class               what it does
=====================  ==================  ===================================================
``set_job``            ``SetJob``          create or replace a job (and merge sent counters)
``delete_job``         ``DeleteJob``       delete a job without dependents
``toggle_job``         ``ToggleJob``       enable a disabled job, disable an enabled one
``fire``               ``Fire``            claim runs (``Claim``), under the cluster's limits
``retry``              ``Retry``           claim a due retry of one node's failed attempt
``done``               ``Done``            record finished executions
``delete_executions``  ``DeleteExecutions``  reset a job's counters and history
``skip``               ``Skip``            record missed fires deliberately not run
``batch``              ``Batch``           several commands in one log entry
``register``           ``Register``        a node joined or changed
``deregister``         ``Deregister``      a node is forgotten
``set_limits``         ``SetLimits``       concurrency limits set through the API
``pause``              ``Pause``           pause or resume new job submissions
``health``             ``SetHealth``       a job's health changed (the leader's watch)
``ping_start``         ``PingStart``       a heartbeat check's work began (``""``: forget it)
``backfill``           ``StartBackfill``   a backfill of past instants of a job begins
``cancel_backfill``    ``CancelBackfill``  claim no more instants for a backfill
``set_calendar``       ``SetCalendar``     create or replace a named calendar
``delete_calendar``    ``DeleteCalendar``  delete a calendar no job uses
=====================  ==================  ===================================================
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from dkron_lab import codec
from dkron_lab.errors import BadRequest
from dkron_lab.model.calendar import Calendar, calendar_from_json, calendar_to_json
from dkron_lab.model.job import Job, JobStats

__all__ = [
    "Batch",
    "CancelBackfill",
    "Claim",
    "Command",
    "DeleteCalendar",
    "DeleteExecutions",
    "DeleteJob",
    "Deregister",
    "Done",
    "Fire",
    "Limits",
    "Pause",
    "Register",
    "Retry",
    "SetCalendar",
    "PingStart",
    "SetHealth",
    "SetJob",
    "SetLimits",
    "Skip",
    "StartBackfill",
    "ToggleJob",
    "decode",
    "encode_batch",
]

Wire = dict[str, Any]


def _header(kind: str, version: int) -> Wire:
    return {"type": kind, "v": version}


@dataclass(frozen=True, slots=True)
class Limits:
    """Cluster-wide concurrency limits (0: none). They travel inside each ``fire`` command, so
    every replica admits and queues exactly alike whatever its own config says."""

    overall: int = 0
    groups: Mapping[str, int] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        return bool(self.overall or any(self.groups.values()))

    def room(self, busy: int, busy_by_group: Mapping[str, int], group: str, need: int) -> bool:
        if self.overall and busy + need > self.overall:
            return False
        limit = self.groups.get(group, 0) if group else 0
        return not limit or busy_by_group.get(group, 0) + need <= limit

    def to_json(self) -> dict[str, Any]:
        return {"overall": self.overall, "groups": dict(self.groups)}

    @classmethod
    def from_json(cls, data: Any) -> Limits:
        if not data:
            return cls()
        return cls(int(data.get("overall", 0)), {k: int(v) for k, v in data["groups"].items()})


@dataclass(frozen=True, slots=True, kw_only=True)
class SetJob:
    """Create or replace ``job``; ``stats`` (a restore) are merged by Dkron's rule."""

    kind: ClassVar[str] = "set_job"
    version: ClassVar[int] = 1
    job: Job
    stats: JobStats | None = None

    def encode(self) -> Wire:
        record = codec.job_to_record(self.job)
        if self.stats is not None:
            record |= codec.stats_to_json(self.stats)
        return _header(self.kind, self.version) | {"job": record}

    @classmethod
    def _decode(cls, wire: Mapping[str, Any]) -> SetJob:
        job, stats = codec.job_from_json(wire["job"])
        sent = any(key in wire["job"] for key in _STATS_KEYS)
        return cls(job=job, stats=stats if sent else None)


_STATS_KEYS = ("success_count", "error_count", "last_success", "last_error", "status")


@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteJob:
    kind: ClassVar[str] = "delete_job"
    version: ClassVar[int] = 1
    name: str

    def encode(self) -> Wire:
        return _header(self.kind, self.version) | {"name": self.name}

    @classmethod
    def _decode(cls, wire: Mapping[str, Any]) -> DeleteJob:
        return cls(name=str(wire["name"]))


@dataclass(frozen=True, slots=True, kw_only=True)
class ToggleJob:
    kind: ClassVar[str] = "toggle_job"
    version: ClassVar[int] = 1
    name: str

    def encode(self) -> Wire:
        return _header(self.kind, self.version) | {"name": self.name}

    @classmethod
    def _decode(cls, wire: Mapping[str, Any]) -> ToggleJob:
        return cls(name=str(wire["name"]))


@dataclass(frozen=True, slots=True, kw_only=True)
class Claim:
    """One run claimed in a ``Fire``: ``job`` in execution ``group`` on ``targets``.

    ``scheduled_at`` (RFC 3339) is the instant of a scheduled fire, None for a manual run;
    ``parent_group`` names the parent group that owes a dependent run, ``at`` (RFC 3339) its
    instant; ``untargeted``: no live node had the tags, the one target is the claimer;
    ``backfill``: the id of the backfill whose next instant ``scheduled_at`` is."""

    job: str
    group: int
    targets: tuple[str, ...]
    scheduled_at: str | None = None
    parent_group: int | None = None
    at: str | None = None
    untargeted: bool = False
    backfill: str | None = None

    def encode(self) -> Wire:
        wire: Wire = {
            "job": self.job,
            "scheduled_at": self.scheduled_at,
            "group": self.group,
            "targets": list(self.targets),
        }
        if self.parent_group is not None:
            wire["parent_group"] = self.parent_group
        if self.at is not None:
            wire["at"] = self.at
        if self.untargeted:
            wire["untargeted"] = True
        if self.backfill is not None:
            wire["backfill"] = self.backfill
        return wire

    @classmethod
    def decode(cls, wire: Mapping[str, Any]) -> Claim:
        parent = wire.get("parent_group")
        return cls(
            job=str(wire["job"]),
            group=int(wire["group"]),
            targets=tuple(wire["targets"]),
            scheduled_at=wire.get("scheduled_at"),
            parent_group=None if parent is None else int(parent),
            at=wire.get("at"),
            untargeted=bool(wire.get("untargeted")),
            backfill=None if wire.get("backfill") is None else str(wire["backfill"]),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Fire:
    """Claim runs; ``limits`` (None: keep the last ones) are the cluster's concurrency limits."""

    kind: ClassVar[str] = "fire"
    version: ClassVar[int] = 1
    claims: tuple[Claim, ...] = ()
    limits: Limits | None = None

    def encode(self) -> Wire:
        wire = _header(self.kind, self.version) | {"fires": [c.encode() for c in self.claims]}
        if self.limits is not None:
            wire["limits"] = self.limits.to_json()
        return wire

    @classmethod
    def _decode(cls, wire: Mapping[str, Any]) -> Fire:
        limits = Limits.from_json(wire["limits"]) if "limits" in wire else None
        return cls(claims=tuple(Claim.decode(c) for c in wire["fires"]), limits=limits)


@dataclass(frozen=True, slots=True, kw_only=True)
class Retry:
    """Claim attempt ``attempt`` of ``node``'s failed run in ``group``; ``to`` moves it to
    another node (``retry_on: any``)."""

    kind: ClassVar[str] = "retry"
    version: ClassVar[int] = 1
    group: int
    node: str
    attempt: int
    to: str | None = None

    def encode(self) -> Wire:
        wire = {"group": self.group, "node": self.node, "attempt": self.attempt, "to": self.to}
        return _header(self.kind, self.version) | wire

    @classmethod
    def _decode(cls, wire: Mapping[str, Any]) -> Retry:
        to = wire.get("to")
        return cls(
            group=int(wire["group"]),
            node=str(wire["node"]),
            attempt=int(wire["attempt"]),
            to=None if to is None else str(to),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Done:
    """Finished executions, as ``codec.execution_to_json`` records (each decoded on its own,
    so one bad record does not stop the others)."""

    kind: ClassVar[str] = "done"
    version: ClassVar[int] = 1
    executions: tuple[Mapping[str, Any], ...]

    def encode(self) -> Wire:
        records = [dict(record) for record in self.executions]
        return _header(self.kind, self.version) | {"executions": records}

    @classmethod
    def _decode(cls, wire: Mapping[str, Any]) -> Done:
        return cls(executions=tuple(wire["executions"]))


@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteExecutions:
    kind: ClassVar[str] = "delete_executions"
    version: ClassVar[int] = 1
    name: str

    def encode(self) -> Wire:
        return _header(self.kind, self.version) | {"name": self.name}

    @classmethod
    def _decode(cls, wire: Mapping[str, Any]) -> DeleteExecutions:
        return cls(name=str(wire["name"]))


@dataclass(frozen=True, slots=True, kw_only=True)
class Skip:
    """Missed fires of ``job`` not run: spans ``{"reason", "first", "last", "count"}``."""

    kind: ClassVar[str] = "skip"
    version: ClassVar[int] = 1
    job: str
    spans: tuple[Mapping[str, Any], ...]

    def encode(self) -> Wire:
        spans = [dict(span) for span in self.spans]
        return _header(self.kind, self.version) | {"job": self.job, "spans": spans}

    @classmethod
    def _decode(cls, wire: Mapping[str, Any]) -> Skip:
        return cls(job=str(wire["job"]), spans=tuple(wire["spans"]))


@dataclass(frozen=True, slots=True, kw_only=True)
class Batch:
    """Several commands in one log entry, applied in order, each with its own result."""

    kind: ClassVar[str] = "batch"
    version: ClassVar[int] = 1
    commands: tuple[Command, ...] = ()

    def encode(self) -> Wire:
        return encode_batch([command.encode() for command in self.commands])

    @classmethod
    def _decode(cls, wire: Mapping[str, Any]) -> Batch:
        return cls(commands=tuple(decode(sub) for sub in wire["commands"]))


def encode_batch(encoded: list[Wire]) -> Wire:
    """A batch of commands already encoded (the node's write batcher holds wire dicts)."""
    return _header(Batch.kind, Batch.version) | {"commands": encoded}


@dataclass(frozen=True, slots=True, kw_only=True)
class Register:
    """A node joined, came back, or changed; ``node`` is its ``NodeInfo`` as a dict."""

    kind: ClassVar[str] = "register"
    version: ClassVar[int] = 1
    node: Mapping[str, Any]

    def encode(self) -> Wire:
        return _header(self.kind, self.version) | {"node": dict(self.node)}

    @classmethod
    def _decode(cls, wire: Mapping[str, Any]) -> Register:
        return cls(node=dict(wire["node"]))


@dataclass(frozen=True, slots=True, kw_only=True)
class Deregister:
    kind: ClassVar[str] = "deregister"
    version: ClassVar[int] = 1
    name: str

    def encode(self) -> Wire:
        return _header(self.kind, self.version) | {"name": self.name}

    @classmethod
    def _decode(cls, wire: Mapping[str, Any]) -> Deregister:
        return cls(name=str(wire["name"]))


@dataclass(frozen=True, slots=True, kw_only=True)
class SetLimits:
    """``overall`` replaces (None: unchanged); ``groups`` are merged (0 removes a limit)."""

    kind: ClassVar[str] = "set_limits"
    version: ClassVar[int] = 1
    overall: int | None = None
    groups: Mapping[str, int] = field(default_factory=dict)

    def encode(self) -> Wire:
        wire = {"overall": self.overall, "groups": dict(self.groups)}
        return _header(self.kind, self.version) | wire

    @classmethod
    def _decode(cls, wire: Mapping[str, Any]) -> SetLimits:
        overall = wire.get("overall")
        groups = {str(k): int(v) for k, v in wire.get("groups", {}).items()}
        return cls(overall=None if overall is None else int(overall), groups=groups)


@dataclass(frozen=True, slots=True, kw_only=True)
class Pause:
    kind: ClassVar[str] = "pause"
    version: ClassVar[int] = 1
    paused: bool

    def encode(self) -> Wire:
        return _header(self.kind, self.version) | {"paused": self.paused}

    @classmethod
    def _decode(cls, wire: Mapping[str, Any]) -> Pause:
        return cls(paused=bool(wire["paused"]))


@dataclass(frozen=True, slots=True, kw_only=True)
class SetHealth:
    """``job``'s health is now ``health`` (``model.health.HEALTHS``) since ``since`` (RFC 3339),
    for ``reason``. Replicated so that every server answers the same health, and a new leader
    neither announces a change again nor misses one."""

    kind: ClassVar[str] = "health"
    version: ClassVar[int] = 1
    job: str
    health: str
    since: str
    reason: str = ""

    def encode(self) -> Wire:
        fields = {"job": self.job, "health": self.health, "since": self.since}
        return _header(self.kind, self.version) | fields | {"reason": self.reason}

    @classmethod
    def _decode(cls, wire: Mapping[str, Any]) -> SetHealth:
        return cls(
            job=str(wire["job"]),
            health=str(wire["health"]),
            since=str(wire["since"]),
            reason=str(wire.get("reason", "")),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class SetCalendar:
    """Create or replace ``calendar`` (the jobs on it are rescheduled)."""

    kind: ClassVar[str] = "set_calendar"
    version: ClassVar[int] = 1
    calendar: Calendar

    def encode(self) -> Wire:
        return _header(self.kind, self.version) | {"calendar": calendar_to_json(self.calendar)}

    @classmethod
    def _decode(cls, wire: Mapping[str, Any]) -> SetCalendar:
        return cls(calendar=calendar_from_json(wire["calendar"]))


@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteCalendar:
    kind: ClassVar[str] = "delete_calendar"
    version: ClassVar[int] = 1
    name: str

    def encode(self) -> Wire:
        return _header(self.kind, self.version) | {"name": self.name}

    @classmethod
    def _decode(cls, wire: Mapping[str, Any]) -> DeleteCalendar:
        return cls(name=str(wire["name"]))


@dataclass(frozen=True, slots=True, kw_only=True)
class PingStart:
    """``/ping/start`` of the heartbeat check ``job`` came at ``at`` (RFC 3339); the run its
    next ping records started then. ``at=""`` forgets it (that ping came)."""

    kind: ClassVar[str] = "ping_start"
    version: ClassVar[int] = 1
    job: str
    at: str

    def encode(self) -> Wire:
        return _header(self.kind, self.version) | {"job": self.job, "at": self.at}

    @classmethod
    def _decode(cls, wire: Mapping[str, Any]) -> PingStart:
        return cls(job=str(wire["job"]), at=str(wire["at"]))


@dataclass(frozen=True, slots=True, kw_only=True)
class StartBackfill:
    """Run the past ``instants`` (RFC 3339, in order) of ``job``, at most ``max_parallel`` at
    once; ``watermark`` is the job's last handled instant when the backfill was planned (the
    instants after it that a live fire claimed since are not run again)."""

    kind: ClassVar[str] = "backfill"
    version: ClassVar[int] = 1
    id: str
    job: str
    instants: tuple[str, ...]
    mode: str
    max_parallel: int
    first: str
    last: str
    created: str
    watermark: str = ""

    def encode(self) -> Wire:
        fields = {
            "id": self.id,
            "job": self.job,
            "instants": list(self.instants),
            "mode": self.mode,
            "max_parallel": self.max_parallel,
            "from": self.first,
            "to": self.last,
            "created": self.created,
            "watermark": self.watermark,
        }
        return _header(self.kind, self.version) | fields

    @classmethod
    def _decode(cls, wire: Mapping[str, Any]) -> StartBackfill:
        return cls(
            id=str(wire["id"]),
            job=str(wire["job"]),
            instants=tuple(str(at) for at in wire["instants"]),
            mode=str(wire["mode"]),
            max_parallel=int(wire["max_parallel"]),
            first=str(wire["from"]),
            last=str(wire["to"]),
            created=str(wire["created"]),
            watermark=str(wire.get("watermark", "")),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelBackfill:
    kind: ClassVar[str] = "cancel_backfill"
    version: ClassVar[int] = 1
    id: str

    def encode(self) -> Wire:
        return _header(self.kind, self.version) | {"id": self.id}

    @classmethod
    def _decode(cls, wire: Mapping[str, Any]) -> CancelBackfill:
        return cls(id=str(wire["id"]))


Command = (
    SetJob
    | DeleteJob
    | ToggleJob
    | Fire
    | Retry
    | Done
    | DeleteExecutions
    | Skip
    | Batch
    | Register
    | Deregister
    | SetLimits
    | Pause
    | SetHealth
    | PingStart
    | StartBackfill
    | CancelBackfill
    | SetCalendar
    | DeleteCalendar
)

_DECODERS: dict[tuple[str, int], Callable[[Mapping[str, Any]], Command]] = {
    (cls.kind, cls.version): cls._decode
    for cls in (
        SetJob,
        DeleteJob,
        ToggleJob,
        Fire,
        Retry,
        Done,
        DeleteExecutions,
        Skip,
        Batch,
        Register,
        Deregister,
        SetLimits,
        Pause,
        SetHealth,
        SetCalendar,
        DeleteCalendar,
        PingStart,
        StartBackfill,
        CancelBackfill,
    )
}


def decode(wire: Any) -> Command:
    """The command a wire dict holds (no ``"v"``: version 1). Raises ``BadRequest`` for an
    unknown kind or version, or fields that are missing or of the wrong type."""
    if not isinstance(wire, Mapping):
        raise BadRequest(f"a command must be a JSON object, not {type(wire).__name__}")
    kind, version = wire.get("type"), wire.get("v", 1)
    known_types = isinstance(kind, str) and type(version) is int
    decoder = _DECODERS.get((kind, version)) if known_types else None  # type: ignore[arg-type]
    if decoder is None:
        known = ", ".join(sorted(f"{k} v{v}" for k, v in _DECODERS))
        raise BadRequest(
            f"unknown command {kind!r} v{version}: it was written by a newer dkron-lab "
            f"(upgrade this node); this one knows {known}"
        )
    try:
        return decoder(wire)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BadRequest(f"a {kind!r} v{version} command is malformed: {exc!r}") from None
