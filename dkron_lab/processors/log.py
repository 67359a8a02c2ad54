"""The ``log`` processor: writes the output to the node's log (Dkron's log processor).

Config: ``forward`` (default false). The output is logged by the ``dkron_lab.processors.log``
logger between ``----- BEGIN OUTPUT job=<job> execution=<id> -----`` and
``----- END OUTPUT -----``, at INFO for a success and ERROR for a failure. Unless ``forward``
is true, the stored output becomes ``Output in dkron log``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from dkron_lab.model.execution import Execution
from dkron_lab.plugins import apply_forward, config_bool

__all__ = ["PLACEHOLDER", "LogProcessor"]

logger = logging.getLogger(__name__)

PLACEHOLDER = "Output in dkron log"


class LogProcessor:
    """Logs the output of each execution; see the module docstring."""

    def validate(self, config: Mapping[str, str]) -> None:
        config_bool(config, "forward")

    def process(self, execution: Execution, config: Mapping[str, str]) -> Execution:
        logger.log(
            logging.INFO if execution.success else logging.ERROR,
            "----- BEGIN OUTPUT job=%s execution=%s -----\n%s\n----- END OUTPUT -----",
            execution.job_name,
            execution.id,
            execution.output,
        )
        return apply_forward(execution, config, PLACEHOLDER)
