"""cgroup v1 limits per execution environment: memory, CPU quota, process count.

Paths are found from /proc/self/mounts and /proc/self/cgroup (never hard-coded): each
controller's hierarchy is mounted somewhere, and this process sits at some path inside it;
lambdad makes `lambdad-<pid>/<environment>` below that.

Sandboxes' cgroups are made by a helper process (`make`, see sandbox/helper.py): a mkdir waits
for the kernel-wide cgroup_mutex, which every migration holds through an RCU grace period, so
on the event loop it took 0.8 ms a sandbox at the median and 13 ms at p90 during a burst.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lambdad.sandbox.helper import HelperProcess, serve

CONTROLLERS = ("memory", "cpu", "pids")
# Lambda gives one full vCPU at 1,769 MB and scales CPU linearly with memory.
MB_PER_VCPU = 1769
CFS_PERIOD_US = 10_000  # short periods: throttling delays a request by ms, not 100 ms
MAX_PIDS = 1024
MAKES_IN_FLIGHT = 16  # cgroup requests queued at the helper at once


def _controller_mounts(mounts_text: str) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for line in mounts_text.splitlines():
        fields = line.split()
        if len(fields) < 4 or fields[2] != "cgroup":
            continue
        for option in fields[3].split(","):
            if option in CONTROLLERS:
                found[option] = Path(fields[1])
    return found


def _own_paths(cgroup_text: str) -> dict[str, str]:
    paths: dict[str, str] = {}
    for line in cgroup_text.splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(","):
            if controller in CONTROLLERS:
                paths[controller] = path
    return paths


def process_cgroups(pid: int | str = "self") -> dict[str, Path]:
    """The cgroup directory of a process under each controller lambdad uses that is mounted
    (its environments' cgroups are made under these: <dir>/lambdad-<pid>/env-*). OSError when
    /proc cannot tell."""
    mounts = _controller_mounts(Path("/proc/self/mounts").read_text())
    own = _own_paths(Path(f"/proc/{pid}/cgroup").read_text())
    return {c: mounts[c] / own[c].lstrip("/") for c in CONTROLLERS if c in mounts and c in own}


UNLIMITED_BYTES = 1 << 62  # memory.limit_in_bytes at or above this: no limit


def memory_limit_bytes(pid: int | str = "self") -> int | None:
    """The tightest memory limit on a process's cgroup and its ancestors (cgroup v1's
    memory.limit_in_bytes; its environments are charged under it too), None if there is none
    or it cannot be read."""
    try:
        directory = process_cgroups(pid).get("memory")
        root = _controller_mounts(Path("/proc/self/mounts").read_text()).get("memory")
    except OSError:
        return None
    if directory is None or root is None:
        return None
    limits: list[int] = []
    while True:
        with contextlib.suppress(OSError, ValueError):
            limits.append(int((directory / "memory.limit_in_bytes").read_text()))
        if directory == root or root not in directory.parents:
            break
        directory = directory.parent
    tightest = min(limits, default=UNLIMITED_BYTES)
    return tightest if tightest < UNLIMITED_BYTES else None


@dataclass
class EnvironmentCgroup:
    """The cgroup directories of one environment, one per controller."""

    paths: tuple[Path, ...]
    memory: Path
    cpu: Path
    cpus: int
    memory_mb: int = 0  # the memory limit set so far (0: none)

    def limit(self, memory_mb: int, *, initialising: bool = False) -> None:
        """Memory = MemorySize (no swap), CPU quota proportional to it; resets the peak.

        While `initialising`, the CPU quota is every core (AWS boosts CPU during the init
        phase); `throttle_cpu` applies the proportional quota once init is done. A limit
        already in place is not written again (a prepared sandbox gets the likely one ahead).
        Also opens the files read or written once its init is done, so that costs no opens."""
        self._open_ahead()
        if not initialising:
            self.throttle_cpu(memory_mb)
        if memory_mb == self.memory_mb:
            return
        raising = 0 < self.memory_mb < memory_mb  # (0: still unlimited: this lowers it)
        self.memory_mb = memory_mb
        limit = str(memory_mb * 1048576)
        # memory.limit_in_bytes may never exceed memsw.limit_in_bytes: raise memsw first
        names = ["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"]
        for name in reversed(names) if raising else names:
            try:
                _write(self.memory / name, limit)
            except OSError:
                if name == names[0]:
                    raise
                # memsw needs swap accounting; absent on some kernels
        with contextlib.suppress(OSError):
            _write(self.memory / "memory.max_usage_in_bytes", "0")

    def throttle_cpu(self, memory_mb: int) -> None:
        """CPU quota proportional to memory: 1,769 MB = one vCPU, at most every core."""
        quota = int(CFS_PERIOD_US * min(self.cpus, memory_mb / MB_PER_VCPU))
        with contextlib.suppress(OSError):  # the environment may be gone already
            self._open_ahead()
            os.write(self._quota_fd, b"%d" % max(quota, 1000))

    def _open_ahead(self) -> None:
        if self._peak_fd < 0:
            self._peak_fd = os.open(self.memory / "memory.max_usage_in_bytes", os.O_RDONLY)
        if self._quota_fd < 0:
            self._quota_fd = os.open(self.cpu / "cpu.cfs_quota_us", os.O_WRONLY)

    def attach(self, pid: int) -> None:
        """Move a process (and the children it forks afterwards) into these cgroups."""
        procs = self.take_procs()
        try:
            for fd in procs:
                os.write(fd, b"%d" % pid)
        finally:
            for fd in procs:
                os.close(fd)

    def open_tasks(self) -> list[int]:
        """Descriptors of each controller's `tasks` file, open for writing (the caller's to
        close). A thread that writes "0" there moves itself alone: unlike cgroup.procs, no
        wait for the thread-group lock's RCU grace period."""
        fds: list[int] = []
        try:
            for path in self.paths:
                fds.append(os.open(path / "tasks", os.O_WRONLY | os.O_CLOEXEC))
        except OSError:
            for fd in fds:
                os.close(fd)
            raise
        return fds

    def take_procs(self) -> list[int]:
        """Descriptors of each controller's cgroup.procs, open for writing (the caller's to
        close): those the helper opened (CgroupManager.make), else opened now."""
        procs, self._procs_fds = self._procs_fds, []
        if not procs:
            procs = [os.open(p / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC) for p in self.paths]
        return procs

    _procs_fds: list[int] = field(default_factory=list)  # see take_procs

    _peak_fd: int = -1  # kept open: REPORT reads the peak after every invocation
    _quota_fd: int = -1  # kept open: written when init ends, on a cold start's path

    def adopt(self, fds: list[int]) -> None:
        """Take the descriptors the helper opened: peak, quota, then each cgroup.procs."""
        self._peak_fd, self._quota_fd, *self._procs_fds = fds

    def peak_memory_bytes(self) -> int:
        try:
            if self._peak_fd < 0:
                self._peak_fd = os.open(self.memory / "memory.max_usage_in_bytes", os.O_RDONLY)
            return int(os.pread(self._peak_fd, 32, 0))
        except (OSError, ValueError):
            return 0

    def oom_killed(self) -> bool:
        try:
            text = (self.memory / "memory.oom_control").read_text()
        except OSError:
            return False
        return any(
            line.startswith("oom_kill ") and line != "oom_kill 0" for line in text.splitlines()
        )

    def remove(self) -> bool:
        """Delete the directories; False while processes are still inside (try again)."""
        for fd in (self._peak_fd, self._quota_fd, *self._procs_fds):
            if fd >= 0:
                os.close(fd)
        self._peak_fd = self._quota_fd = -1
        self._procs_fds = []
        done = True
        for path in self.paths:
            try:
                path.rmdir()
            except FileNotFoundError:
                pass
            except OSError:
                done = False
        return done


class CgroupManager:
    def __init__(self, parents: dict[str, Path], cpus: int) -> None:
        self._parents = parents
        self._cpus = cpus
        self._maker = HelperProcess("lambdad.sandbox.cgroups:serve_makes")
        self._makes: asyncio.Semaphore | None = None  # MAKES_IN_FLIGHT, made on first use

    @classmethod
    def detect(cls, tag: str) -> tuple[CgroupManager | None, str]:
        """A manager rooted at this process's own cgroups, or None and the reason."""
        try:
            own = process_cgroups()
        except OSError as exc:
            return None, f"cannot read cgroup layout: {exc}"
        missing = [c for c in CONTROLLERS if c not in own]
        if missing:
            return None, f"cgroup v1 controllers missing: {', '.join(missing)}"
        parents = {c: own[c] / tag for c in CONTROLLERS}
        for parent in parents.values():
            _remove_stale_siblings(parent)
        try:
            for parent in parents.values():
                parent.mkdir(exist_ok=True)
        except OSError as exc:
            return None, f"cannot create cgroups: {exc}"
        return cls(parents, os.cpu_count() or 1), ""

    async def make(self, name: str, memory_mb: int) -> EnvironmentCgroup:
        """Cgroups with the process limit, the init phase's CPU quota and a memory limit (the
        one their function will likely have: `limit` changes it if not), made by the helper
        process, which also opens the files lambdad keeps open (in a burst, doing this on the
        event loop cost it ~7% of its time). `limit` and `throttle_cpu` set the steady CPU
        quota later."""
        if self._makes is None:
            self._makes = asyncio.Semaphore(MAKES_IN_FLIGHT)
        cgroup, request = self._new(name, memory_mb)
        async with self._makes:
            if not self._maker.alive:
                self._maker.start()
            reply = await self._maker.request(request)
        cgroup.adopt(reply["fds"])  # _make opens them all, or the request fails
        return cgroup

    def _new(self, name: str, memory_mb: int) -> tuple[EnvironmentCgroup, dict[str, Any]]:
        """The cgroups `name` and the request that makes them (see _make)."""
        paths = {c: self._parents[c] / name for c in CONTROLLERS}
        memory, cpu = paths["memory"], paths["cpu"]
        cgroup = EnvironmentCgroup(tuple(paths.values()), memory, cpu, self._cpus, memory_mb)
        limit = str(memory_mb * 1048576)
        request = {
            "paths": [str(p) for p in paths.values()],
            "settings": [
                (str(paths["pids"] / "pids.max"), str(MAX_PIDS)),
                # The init phase's CPU is every core (as AWS boosts init): a new cgroup's quota,
                # unlimited, is that already. Each write of a period or a quota walks every
                # task group on the host (tg_set_cfs_bandwidth): one write fewer per sandbox.
                (str(cpu / "cpu.cfs_period_us"), str(CFS_PERIOD_US)),
                # Memory: the limit first, then memsw (never below it; needs swap accounting).
                (str(memory / "memory.limit_in_bytes"), limit),
            ],
            "optional": [(str(memory / "memory.memsw.limit_in_bytes"), limit)],
            # kept open by lambdad: see EnvironmentCgroup.adopt
            "open": [
                (str(memory / "memory.max_usage_in_bytes"), os.O_RDONLY),
                (str(cpu / "cpu.cfs_quota_us"), os.O_WRONLY),
                *((str(p / "cgroup.procs"), os.O_WRONLY) for p in paths.values()),
            ],
        }
        return cgroup, request

    async def close(self) -> None:
        """Stop the helper, then `cleanup`."""
        await self._maker.close()
        self.cleanup()

    def cleanup(self) -> None:
        """Remove leftover environment cgroups and the parents (at shutdown)."""
        for parent in self._parents.values():
            for child in parent.iterdir() if parent.exists() else ():
                if child.is_dir():
                    with contextlib.suppress(OSError):
                        child.rmdir()
            with contextlib.suppress(OSError):
                parent.rmdir()


def _make(request: dict[str, Any]) -> list[int]:
    """Make the directories, write the settings, open the files to keep open."""
    for path in request["paths"]:
        os.mkdir(path)
    for file, value in request["settings"]:
        _write(Path(file), value)
    for file, value in request["optional"]:
        with contextlib.suppress(OSError):
            _write(Path(file), value)
    fds: list[int] = []
    try:
        for file, flags in request["open"]:
            fds.append(os.open(file, flags | os.O_CLOEXEC))
    except OSError:
        for fd in fds:
            os.close(fd)
        raise
    return fds


def serve_makes(fd: int) -> None:
    """The helper process that makes sandboxes' cgroups (see sandbox/helper.py)."""
    serve(fd, lambda request: {"fds": _make(request)})


def _write(path: Path, value: str) -> None:
    with open(path, "w") as handle:
        handle.write(value)


def _remove_stale_siblings(parent: Path) -> None:
    """Remove `lambdad-<pid>` cgroups of servers that died without cleaning up (pid gone)."""
    if not parent.parent.is_dir():
        return
    for stale in parent.parent.glob("lambdad-*"):
        pid = stale.name.removeprefix("lambdad-")
        if stale == parent or not pid.isdigit() or Path(f"/proc/{pid}").exists():
            continue
        for child in stale.iterdir():
            if child.is_dir():
                with contextlib.suppress(OSError):  # still has processes: leave it
                    child.rmdir()
        with contextlib.suppress(OSError):
            stale.rmdir()
