"""The one place dkron-lab imports pysyncobj, and undoes what that import does to the process.

Owns: the names the adapter uses from pysyncobj 0.3.17, re-exported for the other modules of
``dkron_lab.state.raft`` (ruff's banned-import rule lets only this module import pysyncobj),
and the repair of its process-wide side effect:

B11: importing pysyncobj replaces ``socket.inet_ntop``, process-wide and on every OS, with a
Windows-only ctypes version that raises ``TypeError`` (``pysyncobj/win_inet_pton.py``); psutil
and anything else in the process that formats an IP address breaks. The real one is put back
here, right after the import, so no code of ours ever runs with pysyncobj's version. (Code
that imports pysyncobj itself before dkron_lab, as some tests do, sees it until then.)

pysyncobj installs no crash or exit hook (no ``sys.excepthook``, ``atexit`` or signal
handler), so nothing else needs undoing.

May call: pysyncobj, the standard library. Nothing of dkron-lab.
"""

from __future__ import annotations

import _socket
import socket

from pysyncobj import SyncObj, SyncObjConf, SyncObjException, syncobj
from pysyncobj.config import FAIL_REASON
from pysyncobj.journal import Journal
from pysyncobj.node import TCPNode
from pysyncobj.poller import POLL_EVENT_TYPE
from pysyncobj.tcp_connection import TcpConnection
from pysyncobj.transport import TCPTransport

socket.inet_ntop = _socket.inet_ntop

__all__ = [
    "FAIL_REASON",
    "POLL_EVENT_TYPE",
    "Journal",
    "SyncObj",
    "SyncObjConf",
    "SyncObjException",
    "TCPNode",
    "TCPTransport",
    "TcpConnection",
    "syncobj",
]
