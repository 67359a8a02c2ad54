"""Replay a data dir's raft snapshot + journal into a JobState; print its snapshot as JSON."""

import json
import sys
from pathlib import Path

from dkron_lab.state.machine import JobState
from dkron_lab.state.raft._core import _REGULAR
from dkron_lab.state.raft.journal import RaftJournal, read_snapshot

raft = Path(sys.argv[1]) / "raft"
state = JobState()
data, (last, _prev, _cluster) = read_snapshot(str(raft / "raft.snapshot"))
state.restore(data)
journal = RaftJournal(raft / "raft.journal")
applied = 0
for payload, index, _term in journal[:]:
    if index > last[1] and payload[:1] == _REGULAR:
        result = state.apply(json.loads(payload[1:]))
        applied += 1
journal.close()
print(json.dumps(state.snapshot(), indent=1, sort_keys=True))
print("applied", applied, "after", last[1], file=sys.stderr)
