"""Membership changes and leadership transfer as steps the raft thread runs.

Owns: the checks that decide whether a change may be made (on the leader, not already a voter,
not the leader itself), the steps that hand an accepted change or a transfer to pysyncobj, the
rows of ``RaftNode.peers()`` and the reachability probe of a server about to be added. A step
is ``step(core, settle)``: it settles with ``None``, ``_DENIED`` (try again) or an error. May
call: the core (``_applyCommand``, ``transferLeadership``, its voter lists), ``failures``,
``settings`` (address parsing) and ``dkron_lab.errors``; the steps never block.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable
from typing import Any

from dkron_lab.errors import ClusterError, ConflictError, DkronError, NotFoundError, NotLeaderError
from dkron_lab.state.raft._core import _ENCODER, _MEMBERSHIP, _Core
from dkron_lab.state.raft._pysyncobj import FAIL_REASON, SyncObj
from dkron_lab.state.raft.failures import _failure, _leader_of
from dkron_lab.state.raft.settings import _split_address

_DENIED = object()  # a step's outcome: pysyncobj refused it for now, try again
_Step = Callable[[_Core, Callable[[Any], None]], None]
_Call = tuple[_Step, asyncio.AbstractEventLoop, "asyncio.Future[Any]"]


def _voters(core: SyncObj) -> list[str]:
    others = [str(node.id) for node in core.otherNodes]
    return sorted(others + ([] if core.selfNode is None else [str(core.selfNode.id)]))


def _change_step(kind: str, address: str) -> _Step:
    """The raft-thread half of a membership change: check it on the leader, then append it."""

    def step(core: _Core, settle: Callable[[Any], None]) -> None:
        problem = _membership_problem(core, kind, address)
        if problem is not None:
            settle(problem)
            return
        payload = _MEMBERSHIP + _ENCODER.encode([kind, address]).encode()
        core._applyCommand(payload, functools.partial(_settle_step, core, settle))

    return step


def _settle_step(core: SyncObj, settle: Callable[[Any], None], _result: Any, error: int) -> None:
    """pysyncobj's callback for a step: None on success, ``_DENIED`` to retry, or the error."""
    if error == FAIL_REASON.SUCCESS:
        settle(None)
    else:
        settle(_DENIED if error == FAIL_REASON.REQUEST_DENIED else _failure(core, error))


def _membership_problem(core: SyncObj, kind: str, address: str) -> DkronError | None:
    if not core._isLeader():
        return NotLeaderError(
            "membership changes are made on the leader; send the request there",
            leader=_leader_of(core),
        )
    voters = _voters(core)
    if kind == "add" and address in voters:
        return ConflictError(f"{address} is already a voter (voters: {', '.join(voters)})")
    if kind == "rem" and address not in voters:
        return NotFoundError(f"{address} is not a voter; the voters are {', '.join(voters)}")
    if kind == "rem" and core.selfNode is not None and address == str(core.selfNode.id):
        return ConflictError("the leader cannot remove itself; call remove_peer again")
    return None


def _transfer_step(to: str | None) -> _Step:
    """The raft-thread half of a leadership transfer: ask pysyncobj to send TimeoutNow."""

    def step(core: _Core, settle: Callable[[Any], None]) -> None:
        if not core._isLeader():
            settle(
                NotLeaderError("only the leader can transfer leadership", leader=_leader_of(core))
            )
            return
        if to is not None and to not in {str(node.id) for node in core.otherNodes}:
            voters = ", ".join(_voters(core))
            settle(NotFoundError(f"{to} is not another voter; the voters are {voters}"))
            return
        core.transferLeadership(to, callback=functools.partial(_settle_step, core, settle))

    return step


def _peer(
    address: str, role: str, leader: str | None, *, reachable: bool, index: int | None
) -> dict[str, Any]:
    return {
        "address": address,
        "role": role,
        "leader": address == leader,
        "reachable": reachable,
        "match_index": index,
    }


async def _probe_reachable(address: str, timeout: float) -> None:
    host, port = _split_address(address)
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host.strip("[]"), port), timeout)
    except (OSError, TimeoutError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else "no answer"
        raise ClusterError(
            f"cannot reach the raft port {address} ({why}): start the new server first, with "
            "the current voters as partners, then add it"
        ) from None
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
