"""The ``syslog`` processor: sends the output to the local syslog (Dkron's syslog processor).

Config: ``forward`` (default false). Each line of the output is one message, facility CRON,
tag ``dkron``, prefixed with ``job=<job> execution=<id>:``; INFO for a success, ERR for a
failure. Unless ``forward`` is true, the stored output becomes ``Output in syslog``. When the
syslog socket (``/dev/log``) does not exist, a warning is logged and the output is kept.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import threading
from collections.abc import Mapping

from dkron_lab.model.execution import Execution
from dkron_lab.plugins import apply_forward, config_bool

__all__ = ["DEFAULT_ADDRESS", "PLACEHOLDER", "SyslogProcessor"]

logger = logging.getLogger(__name__)

DEFAULT_ADDRESS = "/dev/log"
PLACEHOLDER = "Output in syslog"


class _StrictSysLogHandler(logging.handlers.SysLogHandler):
    def handleError(self, record: logging.LogRecord) -> None:
        # Called inside emit's except block: re-raise so the output is not replaced by a
        # placeholder for a message that never left.
        raise


class SyslogProcessor:
    """Sends each execution's output to syslog at ``address`` (a Unix datagram socket)."""

    def __init__(self, *, address: str = DEFAULT_ADDRESS) -> None:
        self._address = address
        self._handler: logging.handlers.SysLogHandler | None = None
        self._lock = threading.Lock()

    def validate(self, config: Mapping[str, str]) -> None:
        config_bool(config, "forward")

    def process(self, execution: Execution, config: Mapping[str, str]) -> Execution:
        handler = self._connect()
        if handler is None:
            logger.warning(
                "syslog processor: %s does not exist; job %r execution %s keeps its output",
                self._address,
                execution.job_name,
                execution.id,
            )
            return execution
        level = logging.INFO if execution.success else logging.ERROR
        prefix = f"job={execution.job_name} execution={execution.id}: "
        for line in execution.output.splitlines() or [""]:
            handler.handle(
                logging.makeLogRecord(
                    {
                        "msg": prefix + line,
                        "levelno": level,
                        "levelname": logging.getLevelName(level),
                    }
                )
            )
        return apply_forward(execution, config, PLACEHOLDER)

    async def aclose(self) -> None:
        with self._lock:
            if self._handler is not None:
                self._handler.close()
                self._handler = None

    def _connect(self) -> logging.handlers.SysLogHandler | None:
        with self._lock:
            if self._handler is None and os.path.exists(self._address):
                handler = _StrictSysLogHandler(
                    address=self._address,
                    facility=logging.handlers.SysLogHandler.LOG_CRON,
                )
                handler.ident = "dkron: "
                self._handler = handler
            return self._handler
