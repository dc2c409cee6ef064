"""CPU time of a whole process tree from /proc, split by the part of the stack each process is.

A snapshot sums, over the root and every live descendant, utime + stime (the process's own CPU)
+ cutime + cstime (the CPU of its children that exited and that it reaped). A process that ended
between two snapshots is therefore still counted, in its parent's cutime/cstime, as long as its
parent waited for it, which every process of the stack does (the run worker's step processes,
the code server's run workers, ``dagster dev``'s webserver and daemon). The difference of two
snapshots is the CPU the tree used in between. Not counted: a process that left the tree while
still running (reparented to init), and the benchmark's own process.

No psutil in the project's environment, so /proc is read directly (Linux only).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SNAPSHOT_ATTEMPTS = 5

# The parts of the stack, in the order they are printed.
LAUNCHER = "launcher"
RUN_WORKERS = "run workers"
PARTS = ("aws", "edp", "api", "dagster dev", "webserver", "daemon", "code server", RUN_WORKERS, LAUNCHER)


@dataclass(frozen=True)
class ProcessTimes:
    pid: int
    ppid: int
    own_ticks: int
    reaped_ticks: int


@dataclass(frozen=True)
class CpuSnapshot:
    """CPU seconds per part of the tree, at ``taken_at`` (time.monotonic())."""

    taken_at: float
    seconds: Mapping[str, float]
    processes: int

    @property
    def total(self) -> float:
        return sum(self.seconds.values())


@dataclass(frozen=True)
class CpuDelta:
    """What the tree used between two snapshots."""

    wall: float
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return sum(self.seconds.values())

    def per_second(self) -> float:
        return self.total / self.wall if self.wall > 0 else 0.0


def _read_stat(pid: int) -> ProcessTimes | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name may contain spaces and parentheses; the fields after the last ")" do not.
    # fields[0] is field 3 of proc(5): ppid is 4, utime 14, stime 15, cutime 16, cstime 17.
    fields = raw[raw.rindex(")") + 2 :].split()
    return ProcessTimes(
        pid=pid,
        ppid=int(fields[1]),
        own_ticks=int(fields[11]) + int(fields[12]),
        reaped_ticks=int(fields[13]) + int(fields[14]),
    )


def _argv(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def part_of(argv: list[str]) -> str | None:
    """The part a process is by its command line; None: whatever its parent is (a subprocess)."""
    module = argv[argv.index("-m") + 1] if "-m" in argv[:-1] else ""
    rest = argv[argv.index("-m") + 2 :] if module else []
    if module == "standins.aws":
        return "aws"
    if module == "standins.edp":
        return "edp"
    if module == "api":
        return "api"
    if module == "local_stack":
        return LAUNCHER
    if module == "dagster_webserver":
        return "webserver"
    if module == "dagster._daemon":
        return "daemon"
    if module == "dagster":
        if rest[:1] == ["dev"]:
            return "dagster dev"
        if rest[:1] == ["code-server"] or rest[:2] == ["api", "grpc"]:
            return "code server"
    return None


def _reaped_part(part: str, argv: list[str]) -> str:
    # The gRPC code server's children are the run workers; what it reaped was theirs.
    if part == "code server" and "grpc" in argv:
        return RUN_WORKERS
    return part


def _child_part(parent: str, argv: list[str]) -> str:
    own = part_of(argv)
    if own is not None:
        return own
    # Subprocesses of the code server (run workers via multiprocessing) and of a run worker (its
    # step processes) are the runs' cost; any other subprocess is its parent's.
    return RUN_WORKERS if parent in ("code server", RUN_WORKERS) else parent


def _try_snapshot(root: int, *, checked: bool = True) -> CpuSnapshot | None:
    """One pass over /proc; None when ``checked`` and a process of the tree was reaped meanwhile."""
    stats: dict[int, ProcessTimes] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _read_stat(int(entry))) is not None:
            stats[stat.pid] = stat
    if root not in stats:
        raise ProcessLookupError(f"process {root} is gone")
    children: dict[int, list[int]] = {}
    for stat in stats.values():
        children.setdefault(stat.ppid, []).append(stat.pid)

    seconds = dict.fromkeys(PARTS, 0.0)
    tree: list[ProcessTimes] = []
    pending: list[tuple[int, str]] = [(root, LAUNCHER)]
    while pending:
        pid, parent_part = pending.pop()
        argv = _argv(pid)
        part = LAUNCHER if pid == root else _child_part(parent_part, argv)
        stat = stats[pid]
        seconds[part] += stat.own_ticks / CLOCK_TICKS
        seconds[_reaped_part(part, argv)] += stat.reaped_ticks / CLOCK_TICKS
        tree.append(stat)
        pending.extend((child, part) for child in children.get(pid, []))

    if checked:
        # A child reaped while the pass ran is counted twice (read live, then in its parent's
        # cutime: the child is gone now) or not at all (its parent read before the reap, the child
        # unreadable after: the parent's cutime has grown now). Either way: another pass.
        for stat in tree:
            again = _read_stat(stat.pid)
            if again is None or again.reaped_ticks != stat.reaped_ticks:
                return None
    return CpuSnapshot(taken_at=time.monotonic(), seconds=seconds, processes=len(tree))


def snapshot(root: int) -> CpuSnapshot:
    """CPU seconds of ``root`` and all its descendants, live and reaped, per part."""
    for _ in range(SNAPSHOT_ATTEMPTS):
        result = _try_snapshot(root)
        if result is not None:
            return result
        time.sleep(0.05)
    # Processes ending all the time (a burst of step processes): one pass that may be off by the
    # CPU of one short-lived process is better than none.
    unchecked = _try_snapshot(root, checked=False)
    assert unchecked is not None
    return unchecked


def delta(before: CpuSnapshot, after: CpuSnapshot) -> CpuDelta:
    return CpuDelta(
        wall=after.taken_at - before.taken_at,
        seconds={part: after.seconds.get(part, 0.0) - before.seconds.get(part, 0.0) for part in PARTS},
    )


def by_part(cpu: CpuDelta, per: float = 1.0, digits: int = 2) -> str:
    """``api 1.20, daemon 0.31, ...``: each part's CPU-s divided by ``per``, those that round to 0 left out."""
    shown = [
        f"{part} {cpu.seconds[part] / per:.{digits}f}"
        for part in PARTS
        if round(cpu.seconds.get(part, 0.0) / per, digits) > 0
    ]
    return ", ".join(shown) or "none"
