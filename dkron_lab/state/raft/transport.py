"""pysyncobj's TCP transport with authentication logged, untrusted reads bounded, and knocking.

The raft port authenticates before it unpickles. pysyncobj frames each message as a 4-byte
length and a Fernet token (AES-CBC with an HMAC-SHA256 over the whole token, keyed from the
password); ``TcpConnection`` checks the HMAC (``extract_timestamp``, then ``decrypt``) before
``pickle.loads``, from the very first frame of a connection, and drops the connection on any
failure. A frame that fails is logged here (rate-limited, naming the remote address; see
``_Authenticating``), as is a peer that closes our connection during the key exchange (what a
node with the wrong key sees). A connection that has not authenticated a frame may not make
the node buffer more than ``MAX_UNTRUSTED_BYTES``. ``tests/security/test_cluster_trust.py``
sends pickles, framed and encrypted with another key or not at all, and checks that
``pickle.loads`` never runs.

Owns: ``_Transport`` (the ``TCPTransport`` subclass), the per-connection wrappers and the knock
of a server that wants to join. May call: pysyncobj's transport and connection classes
(through ``_pysyncobj``), its ``SyncObj`` back through ``self._syncObj`` (``_dk_knocking``,
``_dk_knocked``), ``cryptography``'s ``InvalidToken``; it never touches the log.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from typing import Any

from cryptography.fernet import InvalidToken

from dkron_lab.state.raft._pysyncobj import TcpConnection, TCPTransport

logger = logging.getLogger(__name__)

KNOCK_AFTER = 4.0  # seconds; a cluster being bootstrapped elects its leader well before


_AUTH_WARN_PERIOD = 10.0  # seconds between two warnings about the same remote host
_auth_warned: dict[str, float] = {}


def _warn_unauthenticated(remote: str, message: str) -> None:
    """Log ``message`` about ``remote`` (host:port) at most once per ``_AUTH_WARN_PERIOD`` for
    its host: a peer with the wrong key retries every second."""
    host = remote.rpartition(":")[0] or remote
    now = time.monotonic()
    if now - _auth_warned.get(host, -math.inf) < _AUTH_WARN_PERIOD:
        return
    if len(_auth_warned) > 1000:
        _auth_warned.clear()
    _auth_warned[host] = now
    logger.warning(message, remote)


class _Authenticating:
    """pysyncobj's Fernet for one connection: a frame that does not authenticate is logged
    (naming the remote address) and refused as before; pysyncobj then drops the connection
    without having unpickled it."""

    def __init__(self, fernet: Any, remote: str, *, incoming: bool) -> None:
        self._fernet = fernet
        self._remote = remote
        self._incoming = incoming
        self.trusted = False  # a frame from the other side has authenticated

    def encrypt_at_time(self, data: bytes, current_time: int) -> bytes:
        return bytes(self._fernet.encrypt_at_time(data, current_time))

    def extract_timestamp(self, token: bytes) -> int:
        return int(self._authenticated(self._fernet.extract_timestamp, token))

    def decrypt(self, token: bytes) -> bytes:
        data = bytes(self._authenticated(self._fernet.decrypt, token))
        self.trusted = True
        return data

    def _authenticated(self, step: Callable[[bytes], Any], token: bytes) -> Any:
        try:
            return step(token)
        except InvalidToken:
            if self._incoming:
                message = (
                    "raft: dropped a connection from %s: its data does not authenticate with "
                    "this cluster's key (wrong or missing cluster key?)"
                )
            else:
                message = (
                    "raft: cannot authenticate with the peer %s: its data does not decrypt "
                    "with this node's key (wrong or missing cluster key? --encrypt must be "
                    "the cluster's)"
                )
            _warn_unauthenticated(self._remote, message)
            raise


def _authenticating(conn: TcpConnection, remote: str, *, incoming: bool) -> None:
    if conn.encryptor is not None and not isinstance(conn.encryptor, _Authenticating):
        conn.encryptor = _Authenticating(conn.encryptor, remote, incoming=incoming)
        _bound_untrusted(conn, remote)


MAX_UNTRUSTED_BYTES = 64 * 1024
"""What a connection may make this node buffer before a frame of it has authenticated: the
first frames of pysyncobj's key exchange are a few hundred bytes."""


def _bound_untrusted(conn: TcpConnection, remote: str) -> None:
    """pysyncobj reads a frame whose header announces up to 2 GiB into memory before it checks
    it: a connection that has not authenticated a frame yet is dropped past
    ``MAX_UNTRUSTED_BYTES`` instead (anyone who can reach the port could otherwise make the
    node hold gigabytes)."""
    read = conn._TcpConnection__processRead
    encryptor = conn.encryptor

    def bounded_read() -> bool:
        more = bool(read())
        buffered = len(conn._TcpConnection__readBuffer)
        if not encryptor.trusted and buffered > MAX_UNTRUSTED_BYTES:
            _warn_unauthenticated(
                remote,
                "raft: dropped a connection from %s: it sent more than 64 KiB without "
                "authenticating (wrong or missing cluster key?)",
            )
            conn.disconnect()
            return False
        return more

    conn._TcpConnection__processRead = bounded_read


def _remote_of(conn: TcpConnection) -> str:
    sock = getattr(conn, "_TcpConnection__socket", None)
    try:
        host, port = sock.getpeername()[:2] if sock is not None else ("?", 0)
    except OSError:
        return "?"
    return f"{host}:{port}"


def _handshake_closed(conn: TcpConnection, remote: str) -> None:
    """Our connection to ``remote`` closed during the key exchange: the peer could not
    authenticate what this node sent (what a node with the wrong key sees)."""
    if getattr(conn, "_dk_handshaking", False):
        conn._dk_handshaking = False
        _warn_unauthenticated(
            remote,
            "raft: the peer %s closed the connection during the key exchange: it could not "
            "authenticate this node (wrong or missing cluster key? --encrypt must be the "
            "cluster's)",
        )


class _Transport(TCPTransport):  # type: ignore[misc]
    """pysyncobj's transport, with the knock of a server that wants to join, and a warning
    for connections that fail authentication (``_Authenticating``, ``_handshake_closed``).

    pysyncobj connects a pair of voters from the side whose address sorts higher, and a member
    drops a connection that names a voter it does not know. So a server new to a running
    cluster may never be connected to at all. Once it has waited ``KNOCK_AFTER`` with an empty
    log and no leader, it knocks every second: a short connection to each partner it does not
    connect to itself, naming its own address (past the key exchange when there is a cluster
    key), which the partner then drops as usual. A member receiving a connection that names an
    unknown voter address (an agent names itself ``readonly``) tells its core; the leader then
    adds the knocking server.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._dk_knocks: set[TcpConnection] = set()
        self._dk_last_knock = 0.0

    def _onTick(self) -> None:
        super()._onTick()
        now = time.monotonic()
        if now - self._dk_last_knock < 1.0 or not self._syncObj._dk_knocking():
            return
        self._dk_last_knock = now
        for node in self._nodes:
            if node not in self._connections and len(self._dk_knocks) < 16:
                self._knock(node)

    def _knock(self, node: Any) -> None:
        conf = self._syncObj.conf
        conn = TcpConnection(
            poller=self._syncObj._poller,
            timeout=conf.connectionTimeout,
            sendBufferSize=conf.sendBufferSize,
            recvBufferSize=conf.recvBufferSize,
        )
        conn.encryptor = self._syncObj.encryptor
        _authenticating(conn, node.address, incoming=False)
        address = self._selfNode.address

        def connected() -> None:
            if conn.encryptor:
                conn._dk_handshaking = True
                conn.recvRandKey = os.urandom(32)
                conn.send(conn.recvRandKey)
            else:
                conn.send(address)

        def received(message: Any) -> None:
            if conn.encryptor and not conn.sendRandKey:
                conn._dk_handshaking = False
                conn.sendRandKey = message
                conn.send(address)

        def disconnected() -> None:
            _handshake_closed(conn, node.address)
            self._dk_knocks.discard(conn)

        conn.setOnConnectedCallback(connected)
        conn.setOnMessageReceivedCallback(received)
        conn.setOnDisconnectedCallback(disconnected)
        self._dk_knocks.add(conn)
        conn.connect(node.ip, node.port)

    def _onNewIncomingConnection(self, conn: Any) -> None:
        super()._onNewIncomingConnection(conn)
        _authenticating(conn, _remote_of(conn), incoming=True)

    def addNode(self, node: Any) -> None:
        super().addNode(node)
        conn = self._connections.get(node)
        if conn is not None:
            _authenticating(conn, node.address, incoming=False)

    def _onOutgoingConnected(self, conn: Any) -> None:
        conn._dk_handshaking = bool(self._syncObj.encryptor)
        if isinstance(conn.encryptor, _Authenticating):
            conn.encryptor.trusted = False  # a new peer process may listen there now
        super()._onOutgoingConnected(conn)

    def _onOutgoingMessageReceived(self, conn: Any, message: Any) -> None:
        conn._dk_handshaking = False
        super()._onOutgoingMessageReceived(conn, message)

    def _onDisconnected(self, conn: Any) -> None:
        node = self._connToNode(conn)
        if node is not None and node in self._nodes:
            _handshake_closed(conn, node.address)
        super()._onDisconnected(conn)

    def _onIncomingMessageReceived(self, conn: Any, message: Any) -> None:
        keyed = not self._syncObj.encryptor or conn.sendRandKey
        if (
            keyed
            and isinstance(message, str)
            and message != "readonly"
            and message not in self._nodeAddrToNode
        ):
            self._syncObj._dk_knocked(message)
        super()._onIncomingMessageReceived(conn, message)
