"""What the Raft adapter keeps on disk: the log journal, its meta file and the snapshot.

pysyncobj's own ``FileJournal`` loses acknowledged entries when a process dies at the wrong moment
(``reference/pysyncobj-spike.md`` §6, bugs B2/B2b/B7), so the adapter replaces it with
``RaftJournal``. Files and their guarantees:

``raft.journal``
    A header, then append-only records ``<len u32><crc32 u32><index u64><term u64><command>``.
    Records appended during one raft tick are written by ``sync()``, which the adapter calls
    before pysyncobj can count or acknowledge them (start of the next tick, before a follower's
    reply), so they survive ``kill -9``. A torn or corrupt tail (crash mid-write) fails its CRC
    and is dropped at load. Compaction writes the retained tail to a new file and
    ``os.replace``-s it, so a crash leaves either the old or the new journal, never a prefix.
``raft.journal.meta``
    JSON ``{"v": 1, "term", "voted_for", "commit_index"}`` written to a temporary file and
    renamed. Term and vote are stored before pysyncobj acts on them; the commit index once a
    second (a lagging commit index is safe: the entries are in the journal and commit again).
``raft.snapshot``
    JSON ``{"type": "dkron-lab.raft-snapshot", "v": 1, "raft": ..., "state": ...}``: the state
    machine's own snapshot plus pysyncobj's raft data (the last two applied entries and the
    cluster members). pysyncobj writes it to a temporary name and renames it.

``fsync`` modes (``--fsync``): ``batch`` (the default) writes a tick's records with one
``write()`` and one ``fsync`` before any of them can be counted or acknowledged (group commit);
``always`` writes and fsyncs each record on its own; ``never`` only hands them to the kernel,
which survives a process crash but not a power loss or kernel crash. Meta and snapshot files
(and the directory after a rename) are fsynced in ``batch`` and ``always``.

A write that fails (``ENOSPC``, ``EIO``) loses nothing: the file is cut back to its last good
record, the records stay pending, ``sync()`` raises ``InsufficientStorage`` (naming the file and
the error) and ``fault`` says why until a later ``sync()`` writes them. The adapter stops
ticking (so nothing unwritten is counted, applied or acknowledged) and retries.

Owns: the three files above, their formats and the fsync modes. May call: pysyncobj's
``Journal`` and ``TCPNode`` (through ``_pysyncobj``, the package's one import point),
``dkron_lab.config`` and ``dkron_lab.errors``. The journal methods keep pysyncobj's camelCase
names because pysyncobj calls them.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import struct
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from dkron_lab.config import FSYNC_MODES
from dkron_lab.errors import DkronError, InsufficientStorage, ValidationError
from dkron_lab.state.raft._pysyncobj import Journal, TCPNode

__all__ = [
    "FSYNC_MODES",
    "MAGIC",
    "RaftJournal",
    "RaftData",
    "fsync_mode",
    "read_snapshot",
    "write_snapshot",
]

logger = logging.getLogger(__name__)

MAGIC = b"dkron-lab raft journal v1\n"
_RECORD = struct.Struct("<IIQQ")  # payload length, crc32(index+term+payload), index, term
_INDEX_TERM = struct.Struct("<QQ")
_SNAPSHOT_TYPE = "dkron-lab.raft-snapshot"

Entry = tuple[bytes, int, int]  # (command, log index, term), as pysyncobj keeps them
RaftData = tuple[Entry, Entry, set[Any]]  # (last applied entry, the one before, cluster nodes)


def _crash_point(point: str) -> None:
    """A named instant inside compaction or a snapshot write; does nothing.

    Crash tests replace this function (``monkeypatch.setattr(journal, "_crash_point", ...)``,
    or ``setattr`` in a child process) to pause there and kill the process. Points:
    ``compact:tmp-written`` (new journal written, not yet renamed), ``compact:replaced``
    (renamed, in-memory state not yet updated), ``snapshot:written`` (snapshot data written
    to pysyncobj's temporary file, not yet renamed).
    """


class RaftJournal(Journal):  # type: ignore[misc]
    """An append-only, CRC-checked, atomically compacted replacement for pysyncobj's journal.

    Entries are indexed by *position* (pysyncobj's convention), not by log index. Only the raft
    thread may call it, except ``__len__`` (a plain ``len`` of a list) and ``fault``.

    ``fsync``: ``"batch"``, ``"always"`` or ``"never"`` (see the module docstring); ``True`` and
    ``False`` are read as ``"batch"`` and ``"never"``.
    """

    def __init__(self, path: Path, *, fsync: str | bool = "batch") -> None:
        self._path = Path(path)
        self._tmp_path = self._path.with_name(self._path.name + ".tmp")
        self._meta_path = self._path.with_name(self._path.name + ".meta")
        self._mode = fsync_mode(fsync)
        self._pending: list[bytes] = []  # encoded records of the last entries, not yet written
        self._cut_to: int | None = None  # a failed write may have left bytes past this offset
        self._meta: dict[str, Any] = _load_meta(self._meta_path)
        self._meta_saved = True
        self._meta_failed = False
        self.fault: str | None = None  # why the journal holds something it could not write
        self.compactions = 0  # ``deleteEntriesTo`` calls that succeeded
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
        """Drop the first ``entryTo`` entries by writing the rest to a new file (crash-atomic).

        Raises ``InsufficientStorage`` if the new file cannot be written; the journal is then
        unchanged (the snapshot was already written, and a restart trims to it, B2b)."""
        if entryTo <= 0:
            self.compactions += 1
            return
        self.sync()
        start = self._offsets[entryTo] if entryTo < len(self._offsets) else self._size
        try:
            tail = os.pread(self._require_fd(), self._size - start, start)
            _write_file(self._tmp_path, MAGIC + tail, fsync=self._syncs_files)
        except OSError as exc:
            self._tmp_path.unlink(missing_ok=True)
            raise InsufficientStorage(
                _failure("compact the raft journal", self._tmp_path, exc)
            ) from None
        _crash_point("compact:tmp-written")
        os.replace(self._tmp_path, self._path)
        if self._syncs_files:
            _fsync_dir(self._path.parent)
        _crash_point("compact:replaced")
        old_fd, self._fd = self._fd, _open_append(self._path)
        if old_fd is not None:
            os.close(old_fd)
        shift = start - len(MAGIC)
        self._entries = self._entries[entryTo:]
        self._offsets = [offset - shift for offset in self._offsets[entryTo:]]
        self._size = len(MAGIC) + len(tail)
        self.compactions += 1

    def __getitem__(self, item: int | slice) -> Any:
        return self._entries[item]

    def __len__(self) -> int:
        return len(self._entries)

    def _destroy(self) -> None:
        try:
            self.close()
        except InsufficientStorage as exc:  # never acknowledged: nothing that counts is lost
            logger.error("closing the raft journal with unwritten entries: %s", exc)

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
        """Raises ``InsufficientStorage`` when it cannot be stored: pysyncobj must not send a
        vote or a message in a term that a restart would forget."""
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
            # A lagging commit index is safe: the failure is kept in ``fault`` and the next
            # ``sync()`` retries it, instead of failing the tick here.
            with contextlib.suppress(InsufficientStorage):
                self._store_meta()

    # -- ours ------------------------------------------------------------------------------------

    @property
    def path(self) -> Path:
        return self._path

    @property
    def fsync(self) -> str:
        """The fsync mode: ``"batch"``, ``"always"`` or ``"never"``."""
        return self._mode

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
        """Write the appended records (and fsync them, per the mode); store a meta file that
        failed before. Must run before an appended entry is counted for a commit or
        acknowledged to a leader.

        Raises ``InsufficientStorage`` when it cannot: the records stay pending (the file is cut
        back to its last whole record) and ``fault`` says why until a later call succeeds.
        """
        try:
            if self._cut_to is not None:
                os.ftruncate(self._require_fd(), self._cut_to)  # a failed write's torn bytes
                self._cut_to = None
            if self._mode == "always":
                self._write_each()
            else:
                self._write_pending()
        except OSError as exc:
            self._cut_to = self._durable_size()
            self.fault = _failure("write the raft journal", self._path, exc)
            raise InsufficientStorage(self.fault) from None
        if self._meta_failed:
            self._store_meta()
        self.fault = None

    def close(self) -> None:
        """Sync, store the meta file and close; idempotent. Raises ``InsufficientStorage`` (and
        closes anyway) when what it holds cannot be written."""
        if self._fd is None:
            return
        try:
            self.sync()
            if not self._meta_saved:
                self._store_meta()
        finally:
            os.close(self._fd)
            self._fd = None

    def _write_pending(self) -> None:
        """``batch`` and ``never``: one write for everything pending, then one fsync. The
        records stay pending until both succeeded (after a failed fsync the kernel may have
        dropped the pages: they are cut off and written again)."""
        if self._pending:
            fd = self._require_fd()
            _write_all(fd, b"".join(self._pending))
            if self._mode == "batch":
                os.fsync(fd)
            self._pending = []

    def _write_each(self) -> None:
        """``always``: each record written and fsynced before the next one."""
        fd = self._require_fd()
        while self._pending:
            _write_all(fd, self._pending[0])
            os.fsync(fd)
            del self._pending[0]

    def _durable_size(self) -> int:
        """Where the file's last whole record ends (what follows is pending or torn)."""
        if not self._pending:
            return self._size
        return self._offsets[len(self._offsets) - len(self._pending)]

    def _truncate_at(self, position: int) -> None:
        if position >= len(self._entries):
            return
        written = len(self._entries) - len(self._pending)
        offset = self._offsets[position]
        if position >= written:  # only pending records go: nothing to do on disk
            del self._pending[position - written :]
        else:
            self._pending = []
            self._cut_to = offset
        del self._entries[position:]
        del self._offsets[position:]
        self._size = offset
        if self._cut_to is not None:
            self.sync()

    def _store_meta(self) -> None:
        document = {"v": 1, **self._meta}
        data = json.dumps(document, separators=(",", ":")).encode()
        try:
            _replace_file(self._meta_path, data, fsync=self._syncs_files)
        except OSError as exc:
            self._meta_failed = True
            self.fault = _failure("write the raft meta file", self._meta_path, exc)
            raise InsufficientStorage(self.fault) from None
        self._meta_saved = True
        self._meta_failed = False

    @property
    def _syncs_files(self) -> bool:
        return self._mode != "never"

    def _require_fd(self) -> int:
        if self._fd is None:
            raise DkronError(f"raft journal {self._path} is closed")
        return self._fd


def fsync_mode(value: str | bool) -> str:
    """The fsync mode named by ``value`` (``True``/``False``: ``"batch"``/``"never"``)."""
    if isinstance(value, bool):
        return "batch" if value else "never"
    if value not in FSYNC_MODES:
        raise ValidationError(f"fsync must be one of {', '.join(FSYNC_MODES)}, not {value!r}")
    return value


def _failure(what: str, path: Path, exc: OSError) -> str:
    reason = exc.strerror or str(exc)
    return (
        f"cannot {what} {path} ({reason}): free space in {path.parent} or fix the disk; "
        "writes are refused until it can be written, then resume by themselves"
    )


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
    return os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _write_file(path: Path, data: bytes, *, fsync: bool) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
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
    """Write the snapshot document to ``path`` (pysyncobj's temporary name; it renames it).

    Raises ``InsufficientStorage`` when the file cannot be written."""
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
    try:
        _write_file(Path(path), data.encode(), fsync=fsync)
    except OSError as exc:
        raise InsufficientStorage(_failure("write the raft snapshot", Path(path), exc)) from None
    _crash_point("snapshot:written")


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
