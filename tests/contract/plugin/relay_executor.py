"""A third-party executor, as a plugin author outside dkron-lab would write one.

The contract suite installs this module the way pip would (beside a ``.dist-info`` whose
``entry_points.txt`` names ``relay = relay_executor:RelayExecutor``), so it reaches the node
through the same entry point machinery as any published plugin. It only imports what a plugin
may import: ``dkron_lab.plugins`` and ``dkron_lab.errors``.

Keys of ``executor_config``:

``text``     what to print (required).
``repeat``   how many times to print it, a positive whole number (default 1).
``fail``     when given, the run fails with this reason after printing.
``hold``     ``"true"``: after printing, keep running until the run is cancelled.

``RUNS`` and ``CANCELLED`` record execution ids, so a test can see what ran and what was
stopped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from dkron_lab.plugins import Emit, ExecutionRequest, ExecutorResult, OutputTail, config_bool

RUNS: list[str] = []
CANCELLED: list[str] = []

# Output leaves in small pieces, as it would from a stream: a secret may span two of them.
_PIECE = 5


def _settings(config: Mapping[str, str]) -> tuple[str, int, str, bool]:
    text = config.get("text", "")
    if not text:
        raise ValueError('"text" is required, e.g. {"text": "hello"}')
    repeat_text = config.get("repeat", "1").strip()
    if not repeat_text.isdigit() or int(repeat_text) < 1:
        raise ValueError(f'"repeat" must be a positive whole number, not {repeat_text!r}')
    return text, int(repeat_text), config.get("fail", ""), config_bool(config, "hold")


class RelayExecutor:
    """Prints ``text`` ``repeat`` times, then succeeds, fails or waits to be cancelled."""

    def validate(self, config: Mapping[str, str]) -> None:
        _settings(config)

    async def execute(self, request: ExecutionRequest, emit: Emit) -> ExecutorResult:
        RUNS.append(request.execution_id)
        try:
            text, repeat, reason, hold = _settings(request.config)
        except ValueError as exc:
            return ExecutorResult(success=False, output=b"", error=f"relay: {exc}")
        tail = OutputTail(request.output_limit)
        data = (text * repeat).encode()
        for start in range(0, len(data), _PIECE):
            piece = data[start : start + _PIECE]
            tail.write(piece)
            emit(piece)
        if hold:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                CANCELLED.append(request.execution_id)
                raise
        if reason:
            return ExecutorResult(success=False, output=tail.getvalue(), error=f"relay: {reason}")
        return ExecutorResult(success=True, output=tail.getvalue())
