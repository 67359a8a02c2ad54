"""What the Raft adapter keeps on disk: the log journal, its meta file and the snapshot.

pysyncobj's own ``FileJournal`` loses acknowledged entries when a process dies at the wrong moment
(``reference/pysyncobj-spike.md`` §6, bugs B2/B2b/B7), so the adapter replaces it with
``RaftJournal``. Files and their guarantees:

``raft.journal``
    A header, then append-only records ``<len u32><crc32 u32><index u64><term u64><command>``.
    Records appended during one raft tick are written with one ``os.write`` by ``sync()``, which
    the adapter calls before pysyncobj can count or acknowledge them (start of the next tick,
    before a follower's reply), so they survive ``kill -9``. A torn or corrupt tail (crash
    mid-write) fails its CRC and is dropped at load. Compaction writes the retained tail to a
    new file and ``os.replace``-s it, so a crash leaves either the old or the new journal, never
    a prefix.
``raft.journal.meta``
    JSON ``{"v": 1, "term", "voted_for", "commit_index"}`` written to a temporary file and
    renamed. Term and vote are stored before pysyncobj acts on them; the commit index once a
    second (a lagging commit index is safe: the entries are in the journal and commit again).
``raft.snapshot``
    JSON ``{"type": "dkron-lab.raft-snapshot", "v": 1, "raft": ..., "state": ...}``: the state
    machine's own snapshot plus pysyncobj's raft data (the last two applied entries and the
    cluster members). pysyncobj writes it to a temporary name and renames it.

``fsync=False`` (the default) survives a process crash but not a power loss or kernel crash;
``fsync=True`` syncs records before they are acknowledged (group commit), meta and snapshot files
and their directory.

This module and ``raft.py`` are the only ones that import pysyncobj; the journal methods keep
pysyncobj's camelCase names because pysyncobj calls them.
"""

from __future__ import annotations

import _socket
import base64
import json
import logging
import os
import socket
import struct
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from pysyncobj.journal import Journal
from pysyncobj.node import TCPNode

from dkron_lab.errors import DkronError

# B11: importing pysyncobj replaces socket.inet_ntop, process-wide and on every OS, with a
# Windows-only ctypes version that raises TypeError (pysyncobj/win_inet_pton.py); psutil and
# anything else in the process that formats an IP address breaks. Put the real one back.
socket.inet_ntop = _socket.inet_ntop

__all__ = [
    "MAGIC",
    "RaftJournal",
    "RaftData",
    "read_snapshot",
    "set_crash_hook",
    "write_snapshot",
]

logger = logging.getLogger(__name__)

MAGIC = b"dkron-lab raft journal v1\n"
_RECORD = struct.Struct("<IIQQ")  # payload length, crc32(index+term+payload), index, term
_INDEX_TERM = struct.Struct("<QQ")
_SNAPSHOT_TYPE = "dkron-lab.raft-snapshot"

Entry = tuple[bytes, int, int]  # (command, log index, term), as pysyncobj keeps them
RaftData = tuple[Entry, Entry, set[Any]]  # (last applied entry, the one before, cluster nodes)

_crash_hook: Callable[[str], None] | None = None


def set_crash_hook(hook: Callable[[str], None] | None) -> None:
    """Test-only: call ``hook(point)`` at the named crash points of compaction and snapshots.

    Points: ``compact:tmp-written`` (new journal written, not yet renamed), ``compact:replaced``
    (renamed, in-memory state not yet updated), ``snapshot:written`` (snapshot data written to
    pysyncobj's temporary file, not yet renamed). A crash test pauses there and kills the process.
    """
    global _crash_hook
    _crash_hook = hook


def _at(point: str) -> None:
    if _crash_hook is not None:
        _crash_hook(point)


class RaftJournal(Journal):  # type: ignore[misc]
    """An append-only, CRC-checked, atomically compacted replacement for pysyncobj's journal.

    Entries are indexed by *position* (pysyncobj's convention), not by log index. Only the raft
    thread may call it, except ``__len__`` (a plain ``len`` of a list).
    """

    def __init__(self, path: Path, *, fsync: bool = False) -> None:
        self._path = Path(path)
        self._tmp_path = self._path.with_name(self._path.name + ".tmp")
        self._meta_path = self._path.with_name(self._path.name + ".meta")
        self._fsync = fsync
        self._pending: list[bytes] = []  # encoded records not yet written
        self._unsynced = False  # written but not fsynced
        self._meta: dict[str, Any] = _load_meta(self._meta_path)
        self._meta_saved = True
        self._tmp_path.unlink(missing_ok=True)  # a compaction that died before its rename
        self._entries, self._offsets, self._size, self.dropped_bytes = _load(self._path)
        self._fd: int | None = _open_append(self._path)

    # -- pysyncobj's Journal interface -----------------------------------------------------------

    def add(self, command: bytes | str, idx: int, term: int) -> None:
        payload = command if isinstance(command, bytes) else bytes(command, "utf-8")
        record = _encode_record(payload, idx, term)
        self._pending.append(record)
        self._offsets.append(self._size)
        self._size += len(record)
        self._entries.append((payload, idx, term))

    def clear(self) -> None:
        self._truncate_at(0)

    def deleteEntriesFrom(self, entryFrom: int) -> None:
        self._truncate_at(entryFrom)

    def deleteEntriesTo(self, entryTo: int) -> None:
        """Drop the first ``entryTo`` entries by writing the rest to a new file (crash-atomic)."""
        if entryTo <= 0:
            return
        self.sync()
        start = self._offsets[entryTo] if entryTo < len(self._offsets) else self._size
        tail = os.pread(self._require_fd(), self._size - start, start)
        _write_file(self._tmp_path, MAGIC + tail, fsync=self._fsync)
        _at("compact:tmp-written")
        os.replace(self._tmp_path, self._path)
        if self._fsync:
            _fsync_dir(self._path.parent)
        _at("compact:replaced")
        old_fd, self._fd = self._fd, _open_append(self._path)
        if old_fd is not None:
            os.close(old_fd)
        shift = start - len(MAGIC)
        self._entries = self._entries[entryTo:]
        self._offsets = [offset - shift for offset in self._offsets[entryTo:]]
        self._size = len(MAGIC) + len(tail)

    def __getitem__(self, item: int | slice) -> Any:
        return self._entries[item]

    def __len__(self) -> int:
        return len(self._entries)

    def _destroy(self) -> None:
        self.close()

    def flush(self) -> None:
        self.sync()

    def setRaftCommitIndex(self, raftCommitIndex: int) -> None:
        if self._meta.get("commit_index") != raftCommitIndex:
            self._meta["commit_index"] = raftCommitIndex
            self._meta_saved = False

    def getRaftCommitIndex(self) -> int:
        stored = int(self._meta.get("commit_index", 1))
        # Never claim more than the journal holds (a tail lost to a power cut).
        return min(stored, self._entries[-1][1]) if self._entries else stored

    def setCurrentTerm(self, term: int, votedForNodeId: str | None) -> None:
        self._meta["term"] = term
        self._meta["voted_for"] = votedForNodeId
        self._store_meta()  # Raft: durable before any vote or message that reflects it

    def getCurrentTerm(self) -> int:
        return int(self._meta.get("term", 0))

    def getVotedForNodeId(self) -> str | None:
        voted = self._meta.get("voted_for")
        return None if voted is None else str(voted)

    def onOneSecondTimer(self) -> None:
        if not self._meta_saved:
            self._store_meta()

    # -- ours ------------------------------------------------------------------------------------

    @property
    def path(self) -> Path:
        return self._path

    @property
    def last_index(self) -> int:
        """Log index of the last entry (0 when empty)."""
        return self._entries[-1][1] if self._entries else 0

    def entry_term(self, index: int) -> int | None:
        """Term of the entry at log ``index``, or None when it is not in the journal."""
        if not self._entries:
            return None
        position = index - self._entries[0][1]
        if 0 <= position < len(self._entries):
            return self._entries[position][2]
        return None

    def trim_to_snapshot(self, prev: Entry, last: Entry) -> bool:
        """Keep the entries from ``prev`` on if the journal holds the snapshot's last two entries.

        Fixes B2b: pysyncobj clears the whole journal when its first two entries differ from the
        snapshot's, which is the state right after a snapshot is renamed and before the journal
        is compacted; the entries after the snapshot (acknowledged writes) must survive that.
        """
        if not self._entries:
            return False
        position = prev[1] - self._entries[0][1]
        if position < 0 or position + 1 >= len(self._entries):
            return False
        if self._entries[position] != prev or self._entries[position + 1] != last:
            return False
        self.deleteEntriesTo(position)
        return True

    def sync(self) -> None:
        """Hand the appended records to the kernel (one write); fsync too with ``fsync=True``.

        Must run before an appended entry is counted for a commit or acknowledged to a leader.
        """
        if self._pending:
            records, self._pending = b"".join(self._pending), []
            _write_all(self._require_fd(), records)
            self._unsynced = True
        if self._fsync and self._unsynced and self._fd is not None:
            os.fsync(self._fd)
        self._unsynced = False

    def close(self) -> None:
        """Sync, store the meta file and close; idempotent."""
        if self._fd is None:
            return
        self.sync()
        if not self._meta_saved:
            self._store_meta()
        os.close(self._fd)
        self._fd = None

    def _truncate_at(self, position: int) -> None:
        if position >= len(self._entries):
            return
        self.sync()
        offset = self._offsets[position]
        os.ftruncate(self._require_fd(), offset)
        del self._entries[position:]
        del self._offsets[position:]
        self._size = offset

    def _store_meta(self) -> None:
        document = {"v": 1, **self._meta}
        data = json.dumps(document, separators=(",", ":")).encode()
        _replace_file(self._meta_path, data, fsync=self._fsync)
        self._meta_saved = True

    def _require_fd(self) -> int:
        if self._fd is None:
            raise DkronError(f"raft journal {self._path} is closed")
        return self._fd


# -- journal file helpers -----------------------------------------------------------------------


def _encode_record(payload: bytes, idx: int, term: int) -> bytes:
    crc = zlib.crc32(payload, zlib.crc32(_INDEX_TERM.pack(idx, term)))
    return _RECORD.pack(len(payload), crc, idx, term) + payload


def _load(path: Path) -> tuple[list[Entry], list[int], int, int]:
    """Parse the journal, drop a torn tail; (entries, offsets, size, dropped bytes)."""
    if not path.exists() or path.stat().st_size == 0:
        _write_file(path, MAGIC, fsync=False)
        return [], [], len(MAGIC), 0
    data = path.read_bytes()
    if not data.startswith(MAGIC):
        raise DkronError(
            f"{path} is not a dkron-lab raft journal (unknown header); move it away or point "
            "the node at another data directory"
        )
    entries, offsets, end = _parse_records(data)
    dropped = len(data) - end
    if dropped:
        logger.warning("raft journal %s: dropped a torn tail of %d bytes", path, dropped)
        os.truncate(path, end)
    return entries, offsets, end, dropped


def _parse_records(data: bytes) -> tuple[list[Entry], list[int], int]:
    entries: list[Entry] = []
    offsets: list[int] = []
    offset = len(MAGIC)
    while offset + _RECORD.size <= len(data):
        length, crc, idx, term = _RECORD.unpack_from(data, offset)
        end = offset + _RECORD.size + length
        payload = data[offset + _RECORD.size : end]
        index_term = data[offset + 8 : offset + _RECORD.size]
        if end > len(data) or zlib.crc32(payload, zlib.crc32(index_term)) != crc:
            break
        if entries and idx != entries[-1][1] + 1:
            break  # pysyncobj only ever appends consecutive indexes
        entries.append((payload, idx, term))
        offsets.append(offset)
        offset = end
    return entries, offsets, offset


def _open_append(path: Path) -> int:
    return os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _write_file(path: Path, data: bytes, *, fsync: bool) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        _write_all(fd, data)
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


def _replace_file(path: Path, data: bytes, *, fsync: bool) -> None:
    tmp = path.with_name(path.name + ".tmp")
    _write_file(tmp, data, fsync=fsync)
    os.replace(tmp, path)
    if fsync:
        _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _load_meta(path: Path) -> dict[str, Any]:
    path.with_name(path.name + ".tmp").unlink(missing_ok=True)
    try:
        document = json.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    except ValueError:
        # Only a power cut without fsync can do this (the file is renamed into place); the term
        # is recovered from the log, the vote is lost.
        logger.error("raft meta file %s is unreadable; starting with an empty one", path)
        return {}
    document.pop("v", None)
    return dict(document)


# -- snapshot -----------------------------------------------------------------------------------


def write_snapshot(path: str, state: dict[str, Any], raft: RaftData, *, fsync: bool) -> None:
    """Write the snapshot document to ``path`` (pysyncobj's temporary name; it renames it)."""
    last, prev, cluster = raft
    document = {
        "type": _SNAPSHOT_TYPE,
        "v": 1,
        "raft": {
            "last": _encode_entry(last),
            "prev": _encode_entry(prev),
            "cluster": sorted(_encode_nodes(cluster), key=lambda node: node or ""),
        },
        "state": state,
    }
    data = json.dumps(document, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    _write_file(Path(path), data.encode(), fsync=fsync)
    _at("snapshot:written")


def read_snapshot(path: str) -> tuple[dict[str, Any], RaftData]:
    """The state machine snapshot and pysyncobj's raft data from a snapshot file."""
    document = json.loads(Path(path).read_bytes())
    if document.get("type") != _SNAPSHOT_TYPE or document.get("v") != 1:
        raise DkronError(
            f"{path} is not a version 1 dkron-lab raft snapshot; it was written by another "
            "program or a newer dkron-lab"
        )
    raft = document["raft"]
    cluster = {None if node is None else TCPNode(node) for node in raft["cluster"]}
    return document["state"], (_decode_entry(raft["last"]), _decode_entry(raft["prev"]), cluster)


def _encode_entry(entry: Entry) -> list[Any]:
    command, idx, term = entry
    payload = command if isinstance(command, bytes) else bytes(command, "utf-8")
    return [base64.b64encode(payload).decode("ascii"), idx, term]


def _decode_entry(raw: list[Any]) -> Entry:
    return (base64.b64decode(raw[0]), int(raw[1]), int(raw[2]))


def _encode_nodes(cluster: Iterable[Any]) -> list[str | None]:
    # A read-only replica puts itself in as None.
    return [None if node is None else str(node.id) for node in cluster]
