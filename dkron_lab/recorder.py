"""What every server records of the replicated log: finished executions and skipped fires
into its DuckDB history (every server keeps all of it), the metrics they move, and, on the
leader, the notifications of a run's final attempt.

Subscribes to ``ExecutionFinished``, ``ExecutionsCleared``, ``FiresSkipped``, ``JobChanged``
and ``StateRestored``. May call: the history (appends, on the Raft thread; the history's writer
thread does the I/O), ``Metrics``, the notifier and ``HistoryCopy``.
"""

from __future__ import annotations

from dkron_lab import codec
from dkron_lab.history.copy import HistoryCopy
from dkron_lab.history.duckdb import DuckDBHistory
from dkron_lab.metrics import Metrics
from dkron_lab.notify import Notifier
from dkron_lab.services import Shared
from dkron_lab.state.events import (
    ExecutionFinished,
    ExecutionsCleared,
    FiresSkipped,
    JobChanged,
    StateRestored,
)

__all__ = ["Recorder"]

_Recorded = ExecutionFinished | ExecutionsCleared | FiresSkipped | JobChanged | StateRestored


class Recorder:
    def __init__(
        self,
        shared: Shared,
        *,
        history: DuckDBHistory,
        history_copy: HistoryCopy,
        metrics: Metrics,
        notifier: Notifier,
    ) -> None:
        self._shared = shared
        self._history = history
        self._copy = history_copy
        self._metrics = metrics
        self._notifier = notifier
        kinds = (ExecutionFinished, ExecutionsCleared, FiresSkipped, JobChanged, StateRestored)
        shared.state.subscribe(self._on_event, *kinds)

    def _on_event(self, event: _Recorded) -> None:
        if isinstance(event, ExecutionFinished):
            self._history.append(event.execution)
            if self._notifier.enabled:
                self._shared.call_soon(self._finished, event)
        elif isinstance(event, ExecutionsCleared):
            self._history.delete_job(event.job_name)
        elif isinstance(event, FiresSkipped):
            self._skipped(event)
        elif isinstance(event, JobChanged):
            if event.job is None:
                self._metrics.forget_job(event.name)
        else:  # the executions of the entries the snapshot replaced never reached our history
            self._shared.call_soon(self._copy.soon)

    def _skipped(self, event: FiresSkipped) -> None:
        if self._shared.is_leader():
            self._metrics.skipped(sum(int(span["count"]) for span in event.spans))
        recorded = self._shared.clock.now()
        for span in event.spans:
            self._history.record_skipped(
                event.job_name,
                reason=span["reason"],
                first=codec.parse_time(span["first"], "first") or recorded,
                last=codec.parse_time(span["last"], "last") or recorded,
                count=int(span["count"]),
                recorded_at=recorded,
            )

    def _finished(self, event: ExecutionFinished) -> None:
        """On the leader: announce a run's final attempt (one to be retried is not)."""
        job = self._shared.state.find_job(event.execution.job_name)
        if job is None or not event.final or not self._shared.is_leader():
            return
        finished = self._notifier.finished(
            job, event.execution, previous_success=event.previous_success
        )
        self._shared.spawn(finished)
