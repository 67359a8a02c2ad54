"""What the process tree of one run uses: CPU seconds and peak resident memory, for the shell
executor (and the notebook executor, which runs its runner under it).

Owns the accounting of one command's tree: ``TreeMeter`` samples the command and every process
under it from ``/proc`` and, once the command has been reaped with ``os.wait4``, combines the
samples with the kernel's own figures into a ``ResourceUsage``. May call the model only.

**Which processes.** A sample walks down from the command, and from every process seen
before, through ``/proc/<pid>/task/<tid>/children``: the command's descendants, and those of
them that its end or their parent's left with init. Once the command has been reaped while its
output is still held open, the members of its session (the shell executor starts it with
``start_new_session``) are looked for among every process too, so a process left behind before
it was ever seen is found. One that left both the tree and the session before it was seen is
not counted.

**How the figures are made, and how precise they are** (docs/monitoring.md says the same):

- *CPU.* ``wait4`` gives the command's own CPU time plus that of every descendant that was
  waited for by its parent (a shell waiting for its pipeline, ``wait`` for a background job, a
  notebook runner shutting down its kernel): exact, however short they lived, with no
  sampling. A descendant whose parent ended first is re-parented outside the tree (to init),
  and its time never reaches the command; it is taken from the last sample that saw it, so up
  to one interval of it is lost (all of it if it lived less than one interval). The figure is
  never less than the tree's total at the last sample (which matters when the tree is killed:
  init reaps the killed processes). The kernel counts in ticks (10 ms).
- *Peak memory.* The sum of the resident set sizes (RSS) of the live processes of the tree,
  read at each sample; never less than the command's own peak (its ``VmHWM``, read at each
  look: 10, 20, 40 ... ms after the start, then with every sample); and never less than the
  largest single waited-for process's peak as the kernel recorded it (``ru_maxrss``), when
  that is credible: the kernel also counts in it the peak of the *node's* memory image the
  command was started from (fork, then exec), so it is used only when it is above the node's
  own peak. A peak between two samples of processes living side by side is missed; shared
  pages count once per process. A run that ends before the first look, and whose kernel
  figure is not credible, has no peak (``None``).
- *Cost.* A short run costs one ``wait4`` instead of one ``waitpid``, plus a read of the
  command's ``/proc/<pid>/status`` at each look. A sample reads three small files per process
  of the tree. The look for a session's members reads ``/proc/<pid>/stat`` of every process
  on the machine; runs that look within ``SCAN_REUSE`` of each other share one reading.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass

from dkron_lab.model.execution import ResourceUsage

__all__ = ["SCAN_REUSE", "Sample", "TreeMeter"]

SCAN_REUSE = 0.2
"""Seconds a reading of ``/proc`` serves every run sampled meanwhile."""

_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True, slots=True)
class Sample:
    """The tree at one instant: CPU seconds used so far and the summed RSS of its live members."""

    cpu_user_seconds: float
    cpu_system_seconds: float
    rss_bytes: int

    @property
    def cpu_seconds(self) -> float:
        return self.cpu_user_seconds + self.cpu_system_seconds


@dataclass(frozen=True, slots=True)
class _Stat:
    """One process in ``/proc/<pid>/stat``: CPU with that of the children it waited for."""

    ppid: int
    session: int
    start: int  # clock ticks after boot: with the pid, names one process
    user: float
    system: float
    rss: int


_Key = tuple[int, int]  # (pid, start)


class TreeMeter:
    """Samples the tree under the process ``pid`` (a child of this process, not yet reaped).

    What it keeps does not grow with the processes a long run starts: the last sample of the
    processes alive at the last sample, and the summed CPU of those that ended unwaited."""

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self._root: _Key | None = None
        self._live: dict[_Key, _Stat] = {}  # the processes alive at the last sample
        self._sampled = False
        self._gone = (0.0, 0.0)  # user, system CPU of ended processes nobody here waited for
        self._last = Sample(0.0, 0.0, 0)
        self._peak_rss: int | None = None

    def look(self) -> None:
        """Read only the command's own peak memory (cheap: one small file)."""
        self._peak(_own_peak(self._pid))

    def sample(self, *, root_alive: bool = True, session: bool = True) -> Sample:
        """Read the tree now. ``root_alive`` false once the command has been reaped: the rest
        of its tree is still read, found from the processes alive at the last sample and (with
        ``session``) by a look through every process for the members of its session."""
        if root_alive:
            self.look()
        live = self._members(root_alive, session=session and not root_alive)
        self._count_gone(live)
        self._live, self._sampled = live, True
        user, system = self._gone
        for stat in live.values():
            user, system = user + stat.user, system + stat.system
        rss = sum(stat.rss for stat in live.values())
        if live:
            self._peak(rss)
        # Never less than before: a process reaped by init takes its time out of the tree.
        last = self._last
        self._last = Sample(
            max(user, last.cpu_user_seconds), max(system, last.cpu_system_seconds), rss
        )
        return self._last

    def _count_gone(self, live: dict[_Key, _Stat]) -> None:
        """Add the processes that ended since the last sample and that no process of the tree
        will have waited for: their parent then was outside the tree (init had adopted them).
        The others' time is in their parent's, and so in the command's ``wait4``."""
        parents = {pid for pid, _ in self._live}
        user, system = self._gone
        for key, stat in self._live.items():
            if key not in live and key != self._root and stat.ppid not in parents:
                user, system = user + stat.user, system + stat.system
        self._gone = (user, system)

    def _members(self, root_alive: bool, *, session: bool) -> dict[_Key, _Stat]:
        """The live processes of the tree: from the command (while it is not reaped, its pid is
        its own) and those alive at the last sample, down through
        ``/proc/<pid>/task/<tid>/children``."""
        started = {pid: start for pid, start in self._live if pid != self._pid}
        frontier = list(started)
        if root_alive:
            frontier.append(self._pid)
        elif session:
            frontier += _session(self._pid)
        found: dict[int, _Stat] = {}
        while frontier:
            pid = frontier.pop()
            stat = None if pid in found else _read_stat(pid)
            if stat is None or (pid == self._pid and not root_alive):
                continue
            if pid in started and stat.start != started[pid]:
                continue  # that process ended and its pid went to another
            found[pid] = stat
            frontier += _children(pid)
        if root_alive and self._pid in found and self._root is None:
            self._root = (self._pid, found[self._pid].start)
        return {(pid, stat.start): stat for pid, stat in found.items()}

    def _peak(self, rss: int | None) -> None:
        if rss is not None:
            self._peak_rss = max(self._peak_rss or 0, rss)

    def finish(self, rusage: resource.struct_rusage | None) -> ResourceUsage:
        """The run's usage, once the command has been reaped; ``rusage`` is what ``wait4`` said
        of it (``None``: it was reaped elsewhere, the samples alone count)."""
        user = system = 0.0
        if self._sampled:
            # Read again: a process last seen alive may since have been waited for, and then
            # be in ``rusage`` too. (No look through every process: too dear for every run.)
            self.sample(root_alive=False, session=False)
            user, system = self._gone
            for stat in self._live.values():
                user, system = user + stat.user, system + stat.system
        if rusage is not None:
            user, system = user + rusage.ru_utime, system + rusage.ru_stime
            # Kilobytes on Linux. At or below the node's own peak, it may be the node's image.
            if rusage.ru_maxrss > resource.getrusage(resource.RUSAGE_SELF).ru_maxrss:
                self._peak(rusage.ru_maxrss * 1024)
        return ResourceUsage(
            cpu_user_seconds=max(user, self._last.cpu_user_seconds),
            cpu_system_seconds=max(system, self._last.cpu_system_seconds),
            max_rss_bytes=self._peak_rss,
        )


@dataclass(slots=True)
class _Reading:
    taken: float
    sessions: dict[int, list[int]]  # session id -> its processes


_last_reading = _Reading(-SCAN_REUSE, {})  # shared by the runs read within SCAN_REUSE


def _session(sid: int) -> list[int]:
    """The processes of session ``sid``, from a reading of every ``/proc/<pid>/stat``."""
    now = time.monotonic()
    if now - _last_reading.taken >= SCAN_REUSE:
        sessions: dict[int, list[int]] = {}
        for name in os.listdir("/proc"):
            stat = _read_stat(name) if name.isdigit() else None
            if stat is not None:
                sessions.setdefault(stat.session, []).append(int(name))
        _last_reading.sessions, _last_reading.taken = sessions, now
    return list(_last_reading.sessions.get(sid, ()))


def _children(pid: int) -> list[int]:
    """The children of ``pid``, of all its threads (Linux >= 3.5; ``[]`` if unreadable)."""
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    children: list[int] = []
    for tid in threads:
        data = _read(f"/proc/{pid}/task/{tid}/children")
        if data:
            children += [int(child) for child in data.split()]
    return children


def _read(path: str) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        return os.read(fd, 65536)
    except OSError:
        return None
    finally:
        os.close(fd)


def _read_stat(pid: int | str) -> _Stat | None:
    data = _read(f"/proc/{pid}/stat")
    if data is None:
        return None
    try:
        # After "pid (comm) ": field 3 (state) is [0]; see proc(5) for the numbers.
        f = data[data.rindex(b")") + 2 :].split()
        return _Stat(
            ppid=int(f[1]),
            session=int(f[3]),
            start=int(f[19]),
            user=(int(f[11]) + int(f[13])) / _TICK,
            system=(int(f[12]) + int(f[14])) / _TICK,
            rss=int(f[21]) * _PAGE,
        )
    except (ValueError, IndexError):
        return None


def _own_peak(pid: int) -> int | None:
    """The peak resident memory of ``pid``'s own image since its exec (``VmHWM``), in bytes."""
    try:
        fd = os.open(f"/proc/{pid}/status", os.O_RDONLY)
        try:
            data = os.read(fd, 8192)
        finally:
            os.close(fd)
        at = data.index(b"VmHWM:") + 6  # "VmHWM:\t    1234 kB"
        return int(data[at : data.index(b"kB", at)]) * 1024
    except (OSError, ValueError):
        return None
