"""What /proc says about the processes under test: the process tree, CPU time and memory."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from lambdad.sandbox.cgroups import process_cgroups

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
FUNCTION_NAME_KEY = b"AWS_LAMBDA_FUNCTION_NAME="


def _pids() -> Iterator[int]:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            yield int(entry)


def _stat_fields(pid: int) -> list[str]:
    """Fields of /proc/PID/stat after the command name (field 3, the state, comes first)."""
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()


def parent_of(pid: int) -> int:
    return int(_stat_fields(pid)[1])


def descendants(root: int) -> list[int]:
    """Every live process below `root` in the process tree."""
    children: dict[int, list[int]] = {}
    for pid in _pids():
        try:
            children.setdefault(parent_of(pid), []).append(pid)
        except (OSError, IndexError):
            continue
    found: list[int] = []
    frontier = [root]
    while frontier:
        kids = children.get(frontier.pop(), [])
        found += kids
        frontier += kids
    return found


def command_line(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
        return cmdline.read().replace(b"\0", b" ").decode(errors="replace").strip()


def pid_namespace_peers(pid: int) -> list[int]:
    """The other children of `pid`'s parent in `pid`'s PID namespace (an environment's init,
    spawned by the zygote beside the function process)."""
    try:
        parent, namespace = parent_of(pid), os.readlink(f"/proc/{pid}/ns/pid")
        if os.readlink(f"/proc/{parent}/ns/pid") == namespace:
            return []  # not a namespace of its own: its siblings are other environments
    except OSError:
        return []
    peers: list[int] = []
    for other in _pids():
        try:
            same_parent = other != pid and parent_of(other) == parent
            if same_parent and os.readlink(f"/proc/{other}/ns/pid") == namespace:
                peers.append(other)
        except (OSError, IndexError):
            continue
    return peers


def top_below(pid: int, stops: set[int]) -> int:
    """The ancestor of `pid` (or `pid` itself) whose parent is one of `stops`."""
    while (parent := parent_of(pid)) not in stops:
        if parent <= 1:
            raise LookupError(f"process {pid} is not below any of {sorted(stops)}")
        pid = parent
    return pid


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far (0 if it is gone)."""
    try:
        fields = _stat_fields(pid)
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def kernel_thread(name: str) -> int | None:
    """The pid of the kernel thread called `name` (e.g. ksmd), if it runs."""
    for pid in _pids():
        try:
            with open(f"/proc/{pid}/comm") as comm:
                if comm.read().strip() == name and parent_of(pid) == 2:
                    return pid
        except OSError:
            continue
    return None


def tree_cpu_seconds(pids: Iterable[int]) -> dict[int, float]:
    return {pid: cpu_seconds(pid) for pid in pids}


@dataclass(frozen=True)
class TreeCpu:
    """CPU seconds a process tree spent over some interval."""

    own_s: float  # the root process itself
    descendants_s: float  # its live descendants (for lambdad: zygotes and environments)

    @property
    def total_s(self) -> float:
        return self.own_s + self.descendants_s


class CpuMeter:
    """Measures the CPU a process and its descendants (alive at the start) use from now on."""

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self._children = descendants(pid)
        self._before = tree_cpu_seconds([pid, *self._children])

    def read(self) -> TreeCpu:
        after = tree_cpu_seconds([self._pid, *self._children])
        own = after[self._pid] - self._before[self._pid]
        return TreeCpu(own, sum(after[p] - self._before[p] for p in self._children))


def run_seconds(pid: int) -> float:
    """Time the process's live threads have run (schedstat, nanoseconds: /proc/PID/stat's
    clock ticks round a few milliseconds down to nothing, which is all most environments'
    processes use), 0 if it is gone."""
    total = 0
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            path = f"/proc/{pid}/task/{task}/schedstat"
            with contextlib.suppress(OSError), open(path) as schedstat:
                total += int(schedstat.read().split()[0])
    except OSError:
        return 0.0
    return total / 1e9


def minor_faults(pid: int) -> int:
    """Page faults the process has taken without reading a disk (most of an environment's
    are copy-on-write copies of its zygote's pages); 0 if it is gone."""
    try:
        return int(_stat_fields(pid)[7])
    except (OSError, IndexError):
        return 0


def roles(server: int) -> dict[int, str]:
    """lambdad `server` and the live processes below it, each with its role: lambdad, zygotes,
    helpers (its other children), environments (the zygotes' children: function processes
    and their inits)."""
    zygotes: set[int] = set()
    below = descendants(server)
    children = {pid for pid in below if _parent_or_none(pid) == server}
    for pid in below:
        try:
            if pid in children and "lambdad_zygote" in command_line(pid):
                zygotes.add(pid)
        except OSError:
            continue
    found = {server: "lambdad"}
    for pid in below:
        found[pid] = (
            "zygotes" if pid in zygotes else "helpers" if pid in children else "environments"
        )
    return found


def cpu_by_role(server: int, before: dict[int, float]) -> dict[str, tuple[int, float]]:
    """CPU seconds lambdad `server` and the processes below it used since `before` (their
    run_seconds; processes started since count from zero), by role (see `roles`). Each role:
    (processes, seconds). Only processes still alive are counted."""
    by_role: dict[str, tuple[int, float]] = {}
    for pid, role in roles(server).items():
        count, seconds = by_role.get(role, (0, 0.0))
        by_role[role] = (count + 1, seconds + run_seconds(pid) - before.get(pid, 0.0))
    return by_role


def _parent_or_none(pid: int) -> int | None:
    try:
        return parent_of(pid)
    except (OSError, IndexError):
        return None


@dataclass(frozen=True)
class Throttling:
    """CFS bandwidth counters (cpu.stat) summed over a server's environment cgroups."""

    periods: int  # enforcement periods in which an environment ran
    throttled: int  # ... of which it ran out of quota
    throttled_s: float  # time its processes waited for the next period

    def since(self, before: Throttling) -> Throttling:
        return Throttling(
            self.periods - before.periods,
            self.throttled - before.throttled,
            self.throttled_s - before.throttled_s,
        )


def environment_throttling(server_pid: int) -> Throttling | None:
    """The counters of the environments' cgroups of lambdad `server_pid` (cgroup v1 cpu
    controller: <its cgroup>/lambdad-<pid>/env-*), or None where there are none."""
    try:
        cpu = process_cgroups(server_pid).get("cpu")
    except OSError:
        return None
    if cpu is None:
        return None
    parent = cpu / f"lambdad-{server_pid}"
    periods = throttled = 0
    waited_ns = 0
    for stat in parent.glob("env-*/cpu.stat"):
        try:
            fields = dict(line.split() for line in stat.read_text().splitlines())
        except OSError:
            continue  # an environment that just ended
        periods += int(fields.get("nr_periods", 0))
        throttled += int(fields.get("nr_throttled", 0))
        waited_ns += int(fields.get("throttled_time", 0))
    return Throttling(periods, throttled, waited_ns / 1e9) if parent.is_dir() else None


@dataclass(frozen=True)
class ProcessMemory:
    """One process's memory, bytes: unique (private) set, proportional set, resident set."""

    pid: int
    uss: int
    pss: int
    rss: int


def memory_of(pid: int) -> ProcessMemory:
    values: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        for line in rollup:
            match = re.match(r"(\w+):\s+(\d+) kB", line)
            if match:
                values[match.group(1)] = int(match.group(2)) * 1024
    uss = values.get("Private_Clean", 0) + values.get("Private_Dirty", 0)
    return ProcessMemory(pid, uss, values.get("Pss", 0), values.get("Rss", 0))


def _needle(function_name: str) -> bytes:
    return FUNCTION_NAME_KEY + function_name.encode() + b"\0"


def find_by_environ(function_name: str) -> list[int]:
    """Processes whose exec-time environment (/proc/PID/environ) names the function."""
    needle = _needle(function_name)
    found: list[int] = []
    for pid in _pids():
        try:
            with open(f"/proc/{pid}/environ", "rb") as environ:
                data = b"\0" + environ.read() + b"\0"
        except OSError:
            continue
        if b"\0" + needle in data:
            found.append(pid)
    return found


def _heap_ranges(pid: int) -> list[tuple[int, int]]:
    ranges: list[tuple[int, int]] = []
    with open(f"/proc/{pid}/maps") as maps:
        for line in maps:
            if line.rstrip().endswith("[heap]"):
                start, end = line.split()[0].split("-")
                ranges.append((int(start, 16), int(end, 16)))
    return ranges


def heap_contains(pid: int, needle: bytes) -> bool:
    """Whether the C heap of `pid` holds `needle` (read through /proc/PID/mem; needs root)."""
    try:
        fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY)
    except OSError:
        return False
    try:
        for start, end in _heap_ranges(pid):
            if needle in os.pread(fd, end - start, start):
                return True
    except OSError:
        return False
    finally:
        os.close(fd)
    return False


def find_by_heap(
    function_name: str, candidates: Iterable[int], also: bytes | None = None
) -> list[int]:
    """Candidates that set AWS_LAMBDA_FUNCTION_NAME=<name> after exec (setenv keeps the
    "KEY=VALUE" string in the C heap) - how zygote-forked environments get their variables -
    and, given `also`, hold that too."""
    needle = _needle(function_name)
    return [
        pid
        for pid in candidates
        if heap_contains(pid, needle) and (also is None or heap_contains(pid, also))
    ]


def find_environments(
    function_name: str, server_pid: int, initialised: bytes | None = None
) -> tuple[list[int], str]:
    """The environment processes of a function, and how they were found; `initialised`: a
    "KEY=VALUE\0" the function's init sets, which only environments whose init ran hold (not
    one staged for the next cold start)."""
    pids = find_by_environ(function_name)
    if pids:
        return pids, "/proc/PID/environ"
    pids = find_by_heap(function_name, descendants(server_pid), initialised)
    return pids, "C heap via /proc/PID/mem (environ shows the zygote's variables)"
