"""SandboxPool: warm takes, on-demand builds, and refills built side by side."""

from __future__ import annotations

import asyncio
import socket
import subprocess
from pathlib import Path

from lambdad.sandbox.base import ExitStatus
from lambdad.sandbox.cgroups import EnvironmentCgroup
from lambdad.sandbox.prepared import PoolKey, PoolStatistics, PreparedSandbox, SandboxPool

KEY: PoolKey = ("/usr/bin/python3", None)


class FakeBuilds:
    """Builds that take `delay` seconds; counts how many ran at once; None when failing."""

    def __init__(self, delay: float = 0.01, failing: bool = False) -> None:
        self.delay = delay
        self.failing = failing
        self.running = 0
        self.most_at_once = 0
        self.calls = 0
        self.waited_for: list[bool] = []  # each build's flag, in call order
        self.processes: list[subprocess.Popen[bytes]] = []

    def reap(self) -> None:
        for process in self.processes:
            process.kill()
            process.wait()

    async def __call__(self, key: PoolKey, waited_for: bool) -> PreparedSandbox | None:
        self.calls += 1
        self.waited_for.append(waited_for)
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.running -= 1
        if self.failing:
            return None
        process = subprocess.Popen(["sleep", "30"])
        self.processes.append(process)
        exited: asyncio.Future[ExitStatus] = asyncio.get_running_loop().create_future()
        cgroup = EnvironmentCgroup((), Path("/nonexistent"), Path("/nonexistent"), 1)
        sockets = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(3)]
        return PreparedSandbox(process.pid, exited, cgroup, *sockets)


async def test_a_refill_builds_the_missing_sandboxes_side_by_side() -> None:
    builds = FakeBuilds()
    pool = SandboxPool(builds, target=4)
    try:
        pool.fill(KEY)
        await asyncio.sleep(0.1)
        assert pool.statistics() == PoolStatistics(idle=4, built=4, taken_warm=0, built_on_demand=0)
        assert builds.most_at_once == 4
    finally:
        await pool.close()
        builds.reap()


async def test_takes_are_warm_while_the_pool_has_some_and_built_on_demand_after() -> None:
    builds = FakeBuilds(delay=0.05)
    pool = SandboxPool(builds, target=2)
    try:
        pool.fill(KEY)
        await asyncio.sleep(0.2)
        taken = await asyncio.gather(*(pool.take(KEY) for _ in range(5)))
        assert all(isinstance(prepared, PreparedSandbox) for prepared in taken)
        assert len({id(prepared) for prepared in taken}) == 5
        statistics = pool.statistics()
        assert (statistics.taken_warm, statistics.built_on_demand) == (2, 3)
        await asyncio.sleep(0.2)
        assert pool.statistics().idle == 2  # refilled
        # only the builds a take waited for skip what pays off in the pool (warm-up)
        assert builds.waited_for.count(True) == 3
        assert builds.waited_for.count(False) == builds.calls - 3
        for prepared in taken:
            assert prepared is not None
            prepared.discard()
    finally:
        await pool.close()
        builds.reap()


async def test_a_refill_gives_up_after_three_failed_builds() -> None:
    builds = FakeBuilds(failing=True)
    pool = SandboxPool(builds, target=2)
    try:
        pool.fill(KEY)
        await asyncio.sleep(1.0)
        assert pool.statistics().idle == 0
        assert builds.calls == 4  # two rounds of two
    finally:
        await pool.close()
        builds.reap()
