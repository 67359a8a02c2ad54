"""The Raft adapter: replicates commands to a deterministic state machine through pysyncobj.

Contract (the rest of dkron-lab sees only this package's ``__all__``):

* ``StateMachine`` is what gets replicated: ``apply(command) -> result`` is called on the raft
  thread in log order on every node, holding ``machine.lock``; ``snapshot()`` / ``restore()``
  move the whole state in and out of a snapshot (plain JSON data).
* ``RaftNode(settings, machine).start()`` loads the snapshot and the journal from
  ``settings.data_dir``, replays them and starts the raft thread. ``await submit(command)`` returns
  what ``apply`` returned for that command once it has committed, or raises ``NotLeaderError``,
  ``NoQuorumError``, ``ReplicationTimeout`` (outcome unknown) or another ``ClusterError``.
  Commands submitted in sequence (from one loop) are appended, hence applied, in that order.
* Membership (on the leader): ``add_peer``, ``remove_peer``, ``transfer_leadership``, one change
  at a time; ``peers()`` lists the voters. A follower raises ``NotLeaderError`` with the leader.
* ``fenced=True`` succeeds only if, when the command committed, this node was still leader in the
  term it was submitted in (``reference/pysyncobj-spike.md`` §3). Any failure of a fenced submit
  means "unknown": the entry may have been applied; the state machine's first-claim-wins rule
  decides and the caller re-reads the state.

The modules, each owning one part (their docstrings say what they may call):

``node``         ``RaftNode``, the asyncio-facing API
``thread``       the raft thread: tick loop, wake pipe, settling results, storage faults
``_core``        the ``SyncObj`` subclass: every change made to pysyncobj, in one place
``elections``    PreVote and leader stickiness as pure functions
``membership``   membership changes and leadership transfer as raft-thread steps
``transport``    the TCP transport: authentication, bounded untrusted reads, knocking
``failures``     pysyncobj's failure codes as ``dkron_lab.errors``
``settings``     ``RaftSettings`` and its checks
``protocol``     the ``StateMachine`` interface
``journal``      the journal, meta and snapshot files (replaces pysyncobj's ``FileJournal``)
``_pysyncobj``   the only module that imports pysyncobj; undoes its process-wide side effect

pysyncobj is imported by ``_pysyncobj`` alone (ruff's banned-import rule holds the rest of the
package to that), and importing this package applies the patches of ``_core`` (pysyncobj's
``createJournal`` hook and a log filter), as importing the single module ``state/raft.py`` did.
"""

from dkron_lab.state.raft.node import RaftNode
from dkron_lab.state.raft.protocol import StateMachine
from dkron_lab.state.raft.settings import JOURNAL_FILE, SNAPSHOT_FILE, RaftSettings

__all__ = ["JOURNAL_FILE", "SNAPSHOT_FILE", "RaftNode", "RaftSettings", "StateMachine"]
