"""What the Raft adapter replicates: the ``StateMachine`` interface.

Owns: the contract between ``RaftNode`` and the deterministic state it replicates
(``dkron_lab/state/machine.py`` implements it). May call: nothing; it is an interface.
"""

from __future__ import annotations

import threading
from typing import Any, Protocol


class StateMachine(Protocol):
    """The replicated state. Deterministic: the same commands in the same order give the same
    state and results on every node.

    ``lock`` is held by the adapter around ``apply``, ``snapshot`` and ``restore``; readers take
    it too. All three run on the raft thread and must not block on I/O.
    """

    lock: threading.RLock

    def apply(self, command: dict[str, Any]) -> dict[str, Any]:
        """Apply one committed command and return its result (plain JSON data).

        Never raises: a rejected command returns ``{"error": ...}``.
        """
        ...

    def snapshot(self) -> dict[str, Any]:
        """The whole state as plain JSON data."""
        ...

    def restore(self, data: dict[str, Any]) -> None:
        """Replace the whole state with a snapshot taken by ``snapshot``."""
        ...
