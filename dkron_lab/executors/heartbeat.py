"""The ``heartbeat`` executor: a heartbeat check runs nothing (``dkron_lab/heartbeat.py``).

Its fires are not dispatched and a run-now is refused, so ``execute`` is reached only by a
node of an older version; it then fails saying what a heartbeat check is.
"""

from __future__ import annotations

from collections.abc import Mapping

from dkron_lab.plugins import Emit, ExecutionRequest, ExecutorResult

__all__ = ["HeartbeatExecutor"]


class HeartbeatExecutor:
    def validate(self, config: Mapping[str, str]) -> None:
        """A heartbeat check takes no ``executor_config``; keys there are ignored."""

    async def execute(self, request: ExecutionRequest, emit: Emit) -> ExecutorResult:
        return ExecutorResult(
            success=False,
            output=b"",
            error=(
                f"job {request.job_name!r} is a heartbeat check: it runs nothing; the process "
                "it watches pings it (POST /v1/jobs/<job>/ping, or its ping_url)"
            ),
        )
