"""pysyncobj's failure codes as dkron-lab errors.

Owns: the table from ``FAIL_REASON`` to ``dkron_lab.errors`` and the wording that tells the
caller whether a command may still be applied (only ``NoQuorumError`` means "not written").
May call: ``_pysyncobj`` (the codes, a core to name its leader) and ``dkron_lab.errors``.
"""

from __future__ import annotations

from dkron_lab.errors import ClusterError, NoQuorumError, NotLeaderError, ReplicationTimeout
from dkron_lab.state.raft._pysyncobj import FAIL_REASON, SyncObj

_UNKNOWN = "it may or may not be applied - re-read the state before retrying"
_FENCE_LOST = f"leadership changed while the fenced command committed; {_UNKNOWN}"
_STOPPED = "the raft node stopped before the command committed; it may still commit after a restart"
_FAILURES: dict[int, tuple[type[ClusterError], str]] = {
    FAIL_REASON.QUEUE_FULL: (ClusterError, "the raft command queue is full; retry later"),
    FAIL_REASON.MISSING_LEADER: (
        NoQuorumError,
        "no raft leader is known (election running or too few servers reachable); nothing "
        "was written - retry once a leader is elected",
    ),
    FAIL_REASON.DISCARDED: (NotLeaderError, f"a new leader replaced the command; {_UNKNOWN}"),
    FAIL_REASON.NOT_LEADER: (NotLeaderError, "the node this was forwarded to is not the leader"),
    FAIL_REASON.LEADER_CHANGED: (NotLeaderError, f"the leader changed; {_UNKNOWN}"),
    FAIL_REASON.REQUEST_DENIED: (ClusterError, "the raft leader denied the request"),
    FAIL_REASON.UNKNOWN_OUTCOME: (ReplicationTimeout, f"the outcome is unknown; {_UNKNOWN}"),
}


def _failure(core: SyncObj, error: int) -> ClusterError:
    kind, message = _FAILURES.get(error, (ClusterError, f"raft failure code {error}"))
    if kind is NotLeaderError:
        return NotLeaderError(message, leader=_leader_of(core))
    return kind(message)


def _leader_of(core: SyncObj) -> str | None:
    leader = core._getLeader()
    return None if leader is None else str(leader.id)
