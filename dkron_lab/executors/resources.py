"""What the process tree of one run uses: CPU seconds and peak resident memory, for the shell
executor (and the notebook executor, which runs its runner under it).

Owns the accounting of one command's tree: ``TreeMeter`` samples the command and every process
under it from ``/proc`` and, once the command has been reaped with ``os.wait4``, combines the
samples with the kernel's own figures into a ``ResourceUsage``. May call the model only.

**Which processes.** The command runs in a session of its own (the shell executor starts it
with ``start_new_session``), so the tree is every process of that session, plus every process
whose parent was seen in the tree (a kernel, a daemon that started a session of its own while
its parent was watched). Processes that left the session before they were ever seen are not.

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
  command's ``/proc/<pid>/status`` at each look. A sample reads ``/proc/<pid>/stat`` of every
  process on the machine; runs sampled at the same time share one reading (``SCAN_REUSE``).
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
    """Samples the tree under the process ``pid`` (a child of this process, not yet reaped)."""

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self._seen: dict[_Key, _Stat] = {}  # the last sample of every process seen
        self._root: _Key | None = None
        self._live: set[_Key] = set()
        self._last = Sample(0.0, 0.0, 0)
        self._peak_rss: int | None = None

    def look(self) -> None:
        """Read only the command's own peak memory (cheap: one small file)."""
        self._peak(_own_peak(self._pid))

    def sample(self, *, root_alive: bool = True, fresh: bool = False) -> Sample:
        """Read the tree now. ``root_alive`` false once the command has been reaped: the rest
        of its session, and the processes already seen, are still read. ``fresh``: read
        ``/proc`` again even if another run just did."""
        if root_alive:
            self.look()
        processes = _scan(fresh=fresh)
        live = self._live = self._members(processes, root_alive)
        for key in live:
            self._seen[key] = processes[key[0]]
        user, system = self._unwaited(live)
        rss = sum(self._seen[key].rss for key in live)
        if live:
            self._peak(rss)
        # Never less than before: a process reaped by init takes its time out of the tree.
        last = self._last
        self._last = Sample(
            max(user, last.cpu_user_seconds), max(system, last.cpu_system_seconds), rss
        )
        return self._last

    def _members(self, processes: dict[int, _Stat], root_alive: bool) -> set[_Key]:
        root = processes.get(self._pid) if root_alive else None
        if root is not None and self._root is None:
            self._root = (self._pid, root.start)
        known = {pid for pid, start in self._seen if _same(processes, pid, start)}
        found = {pid for pid, stat in processes.items() if stat.session == self._pid}
        found |= known
        if root is not None:
            found.add(self._pid)
        else:
            found.discard(self._pid)
        children: dict[int, list[int]] = {}
        for pid, stat in processes.items():
            children.setdefault(stat.ppid, []).append(pid)
        frontier = list(found)
        while frontier:
            for child in children.get(frontier.pop(), ()):
                if child not in found:
                    found.add(child)
                    frontier.append(child)
        return {(pid, processes[pid].start) for pid in found}

    def _unwaited(self, live: set[_Key]) -> tuple[float, float]:
        """CPU of the live processes, and of the dead ones nobody in the tree waited for: those
        whose parent (at their last sample) was outside the tree."""
        tree = {pid for pid, _ in self._seen}
        user = system = 0.0
        for key, stat in self._seen.items():
            if key in live or (key != self._root and stat.ppid not in tree):
                user += stat.user
                system += stat.system
        return user, system

    def _peak(self, rss: int | None) -> None:
        if rss is not None:
            self._peak_rss = max(self._peak_rss or 0, rss)

    def finish(self, rusage: resource.struct_rusage | None) -> ResourceUsage:
        """The run's usage, once the command has been reaped; ``rusage`` is what ``wait4`` said
        of it (``None``: it was reaped elsewhere, the samples alone count)."""
        user = system = 0.0
        if self._seen:
            # Fresh: a process an older reading shows alive may since have been waited for,
            # and then be in ``rusage`` too.
            self.sample(root_alive=False, fresh=True)
            user, system = self._unwaited(self._live)
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


def _same(processes: dict[int, _Stat], pid: int, start: int) -> bool:
    stat = processes.get(pid)
    return stat is not None and stat.start == start


@dataclass(slots=True)
class _Reading:
    taken: float
    processes: dict[int, _Stat]


_last_reading = _Reading(-SCAN_REUSE, {})  # shared by the runs sampled within SCAN_REUSE


def _scan(*, fresh: bool = False) -> dict[int, _Stat]:
    now = time.monotonic()
    if fresh or now - _last_reading.taken >= SCAN_REUSE:
        _last_reading.processes, _last_reading.taken = _read_proc(), now
    return _last_reading.processes


def _read_proc() -> dict[int, _Stat]:
    processes = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            stat = _read_stat(name)
            if stat is not None:
                processes[int(name)] = stat
    return processes


def _read_stat(pid: str) -> _Stat | None:
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY)
        try:
            data = os.read(fd, 4096)
        finally:
            os.close(fd)
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
    except (OSError, ValueError, IndexError):
        return None


def _own_peak(pid: int) -> int | None:
    """The peak resident memory of ``pid``'s own image since its exec (``VmHWM``), in bytes."""
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024  # "VmHWM:  1234 kB"
    except (OSError, ValueError, IndexError):
        return None
    return None
