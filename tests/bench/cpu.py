"""CPU time per process group over a measured window, read from /proc (Linux only).

A group's time is the utime + stime of its processes, plus cutime + cstime (what their exited and
reaped children used) where the group owns its children. Each process is sampled at the start and
at the end of the window and only the difference counts; a process that appeared during the window
(a new database connection) counts from zero. Processes are keyed by pid *and* start time, so a
reused pid is not mistaken for the old process.

Groups the bench measures:
- a service (gateway, router, notifier, with their replicas): its process and every descendant;
- RabbitMQ: the beam.smp listening on the broker's port, and its children (erl_child_setup, …);
- PostgreSQL: the postmaster's own time (not its cutime: it reaps every other test run's
  short-lived backends too), its auxiliary processes (checkpointer, WAL writer, …, the rows of
  pg_stat_activity without a database) and the backends connected to the bench's database.

The broker and the database's auxiliary processes are shared with anything else using the
machine's servers at the time; the bench says so next to the figures.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")

Key = tuple[int, int]  # (pid, start time in ticks since boot)


@dataclass(frozen=True)
class ProcTimes:
    ppid: int
    own: int  # utime + stime, ticks
    children: int  # cutime + cstime, ticks


def read_stat(pid: int) -> tuple[Key, ProcTimes] | None:
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may itself hold spaces or parentheses.
    rest = data[data.rindex(")") + 2:].split()
    # rest[0] is field 3 (state): field n is rest[n - 3].
    ppid, utime, stime, cutime, cstime, start = (int(rest[i]) for i in (1, 11, 12, 13, 14, 19))
    return (pid, start), ProcTimes(ppid, utime + stime, cutime + cstime)


def all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def descendants(roots: Iterable[int]) -> set[int]:
    """The roots and every process below them (one /proc scan)."""
    children: dict[int, list[int]] = {}
    for pid in all_pids():
        got = read_stat(pid)
        if got is not None:
            children.setdefault(got[1].ppid, []).append(pid)
    out: set[int] = set()
    todo = [p for p in roots if p]
    while todo:
        pid = todo.pop()
        if pid in out:
            continue
        out.add(pid)
        todo.extend(children.get(pid, ()))
    return out


def listening_pid(port: int) -> int | None:
    """The process holding the TCP socket that listens on `port` (any address), if we can see it."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(cols[9])
    if not inodes:
        return None
    wanted = {f"socket:[{i}]" for i in inodes}
    for pid in all_pids():
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") in wanted:
                    return pid
            except OSError:
                continue
    return None


@dataclass
class Group:
    """`pids()` is asked at the start and at the end; `with_children` adds cutime + cstime."""

    name: str
    pids: Callable[[], Iterable[int]]
    with_children: bool = True
    #: pids whose own time counts but not their reaped children's (the postmaster).
    own_only: Callable[[], Iterable[int]] = field(default=lambda: ())


Sample = dict[str, dict[Key, int]]


def sample(groups: list[Group]) -> Sample:
    out: Sample = {}
    for g in groups:
        ticks: dict[Key, int] = {}
        for pid, children in [(p, g.with_children) for p in g.pids()] + [(p, False) for p in g.own_only()]:
            got = read_stat(pid)
            if got is not None:
                key, t = got
                ticks[key] = t.own + (t.children if children else 0)
        out[g.name] = ticks
    return out


def cpu_seconds(start: Sample, end: Sample) -> dict[str, float]:
    """CPU seconds per group between two samples; processes gone by the end are not counted."""
    out = {}
    for name, ticks in end.items():
        before = start.get(name, {})
        out[name] = sum(max(0, t - before.get(key, 0)) for key, t in ticks.items()) / CLK_TCK
    return out
