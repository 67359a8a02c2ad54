"""dkron-lab: a distributed, fault-tolerant cron, wire-compatible with Dkron's v1 REST API.

Importing the package is cheap: it loads no server code (no pysyncobj, DuckDB or tornado).
"""

from dkron_lab._version import __version__
from dkron_lab.errors import (
    DkronError,
    ExecutionNotFound,
    JobNotFound,
    NotFoundError,
    ValidationError,
)

__all__ = [
    "DkronError",
    "ExecutionNotFound",
    "JobNotFound",
    "NotFoundError",
    "ValidationError",
    "__version__",
]
