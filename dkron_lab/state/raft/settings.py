"""How one node takes part in the Raft group: ``RaftSettings`` and the checks it runs when built.

Owns: the settings dataclass, the names of the files in ``data_dir``, the validation of
addresses, timings and the cluster key (B9, B10). May call: ``journal.fsync_mode`` and
``dkron_lab.errors``; nothing that starts a thread or opens a socket.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dkron_lab.errors import ValidationError
from dkron_lab.state.raft.journal import fsync_mode

JOURNAL_FILE = "raft.journal"
SNAPSHOT_FILE = "raft.snapshot"


@dataclass(frozen=True, slots=True, kw_only=True)
class RaftSettings:
    """How one node takes part in the Raft group. Defaults: ``reference/pysyncobj-spike.md`` §9.

    ``self_address=None`` makes a read-only replica: it receives the log from the leader of
    ``partners`` but never votes or counts for a quorum. The ``password`` (the cluster key) is
    required: without one pysyncobj would unpickle whatever any local or remote process sends.
    """

    data_dir: Path
    self_address: str | None = "127.0.0.1:6868"
    partners: tuple[str, ...] = ()
    password: str | None = None
    bind_address: str | None = None  # default: self_address (never 0.0.0.0 by accident, B9)
    fsync: str = "batch"  # "batch" | "always" | "never": docs/raft.md, "Durability"
    tick_period: float = 0.05  # longest sleep of the idle raft thread
    heartbeat_period: float = 0.1
    election_timeout_min: float = 0.4
    election_timeout_max: float = 1.4
    connection_timeout: float = 3.5
    connection_retry: float = 1.0
    leader_fallback_timeout: float = 1.4  # CheckQuorum (B8): >= election_timeout_max
    compaction_min_entries: int = 50_000
    compaction_min_time: float = 3600.0
    compaction_split: bool = False
    dynamic_membership: bool = True
    batch_append_entries: bool = False  # False: one AppendEntries per command, sub-ms commits
    wait_for_leader: bool = False  # False: submit fails fast with NoQuorumError, no queueing

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_dir", Path(self.data_dir))
        object.__setattr__(self, "fsync", fsync_mode(self.fsync))
        others = dict.fromkeys(p for p in self.partners if p != self.self_address)
        object.__setattr__(self, "partners", tuple(others))
        _check_addresses(self)
        _check_timing(self)
        _check_exposure(self)

    @property
    def listen_address(self) -> str | None:
        """host:port the raft port binds to (None for a read-only replica)."""
        return self.bind_address or self.self_address


def _split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValidationError(f"raft address {address!r} is not host:port (e.g. 127.0.0.1:6868)")
    return host, int(port)


def _check_addresses(settings: RaftSettings) -> None:
    for address in (settings.self_address, settings.bind_address, *settings.partners):
        if address is not None:
            _split_address(address)
    if settings.self_address is None and not settings.partners:
        raise ValidationError("a read-only raft replica needs the voters' addresses in partners")
    if settings.self_address is None and settings.compaction_split:
        raise ValidationError("compaction_split needs self_address (pysyncobj limitation)")


def _check_timing(s: RaftSettings) -> None:
    rules = [
        (s.tick_period > 0, "tick_period must be > 0"),
        (s.heartbeat_period * 3 < s.election_timeout_min, "election_timeout_min > 3 heartbeats"),
        (s.election_timeout_min < s.election_timeout_max, "election_timeout_max > _min"),
        (s.connection_timeout >= s.election_timeout_max, "connection_timeout >= election max"),
        (
            s.leader_fallback_timeout >= s.election_timeout_max,
            "leader_fallback_timeout >= election_timeout_max",
        ),
        (s.connection_retry >= 0, "connection_retry must be >= 0"),
        (s.compaction_min_entries >= 2, "compaction_min_entries must be >= 2"),
        (s.compaction_min_time > 0, "compaction_min_time must be > 0"),
    ]
    broken = [message for ok, message in rules if not ok]
    if broken:
        raise ValidationError("raft timing settings are inconsistent: " + "; ".join(broken))


def _check_exposure(settings: RaftSettings) -> None:
    """B10: without a cluster key the raft port unpickles whatever anyone sends it, loopback
    included (any local user): a password is required."""
    if not settings.password:
        raise ValidationError(
            "the raft port needs the cluster key as its password: without one anyone who can "
            "connect to it (any local user too) could read all state and run code in this "
            "process. Create a key with `dkron-lab keygen`"
        )
