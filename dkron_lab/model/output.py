"""An execution's output read by byte offset: what ``GET .../output?offset=N`` answers.

Offsets count bytes of the output's UTF-8 text from its first byte. While a run goes on, its
node keeps only the tail of the output (``--output-limit``), so the bytes before some position
may be gone: a read from before it starts where the kept bytes start, and says so in
``offset``. A read never splits a character: it stops before a sequence whose bytes have not
all arrived (or that would pass ``limit``), and skips the continuation bytes it would start in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["OUTPUT_READ_LIMIT", "OutputChunk", "read_chunk"]

OUTPUT_READ_LIMIT = 64 * 1024
"""Most bytes one read returns: a reader far behind catches up in several reads."""


@dataclass(frozen=True, slots=True, kw_only=True)
class OutputChunk:
    """Bytes ``[offset, next)`` of an output, as text.

    ``offset`` may be past the offset asked for, when the bytes before it are no longer kept;
    ``next`` is the offset to ask for next; ``done`` is true once the run has ended and
    ``next`` is the end of its output (nothing more will come)."""

    offset: int
    next: int
    done: bool
    data: str

    def to_json(self) -> dict[str, Any]:
        return {"offset": self.offset, "next": self.next, "done": self.done, "data": self.data}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> OutputChunk:
        return cls(
            offset=int(data["offset"]),
            next=int(data["next"]),
            done=bool(data["done"]),
            data=str(data["data"]),
        )


def read_chunk(
    kept: bytes | bytearray, *, base: int, offset: int, limit: int, ended: bool
) -> OutputChunk:
    """The chunk from ``offset`` (at most ``limit`` bytes) of an output whose bytes from
    position ``base`` on are ``kept``; ``ended``: no byte will be added to it."""
    end = base + len(kept)
    start = min(max(offset, base), end)
    while start < end and _continuation(kept[start - base]):
        start += 1
    stop = min(start + max(limit, 4), end)
    if not (ended and stop == end):
        stop = _whole(kept, base, start, stop)
    data = bytes(kept[start - base : stop - base]).decode("utf-8", errors="replace")
    return OutputChunk(offset=start, next=stop, done=ended and stop == end, data=data)


def _continuation(byte: int) -> bool:
    return byte & 0xC0 == 0x80


def _whole(kept: bytes | bytearray, base: int, start: int, stop: int) -> int:
    """``stop``, or the start of the character that ``stop`` would split."""
    for lead in range(stop - 1, max(start, stop - 4) - 1, -1):
        byte = kept[lead - base]
        if not _continuation(byte):
            width = 1 if byte < 0x80 else 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return lead if lead + width > stop else stop
    return stop
