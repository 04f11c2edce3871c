"""PoolManager: one EnvironmentPool per function version, replaced when the function changes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from lambdad.control.model import FunctionConfig
from lambdad.sandbox.memory_reserve import available_memory_bytes
from lambdad.scheduler.pool import EnvironmentPool, Launch, PoolStatistics, Stage

log = logging.getLogger(__name__)


# How long after a cold start that scaled a function out its next environment is staged.
STAGE_DELAY_S = 0.015


@dataclass(frozen=True)
class StagedStatistics:
    waiting: int  # staged environments waiting for their function's next cold start
    memory_bytes: int  # their memory (each one's peak so far)
    max_waiting: int  # --staged (0: staging is off)
    max_memory_bytes: int  # --staged-memory


@dataclass(frozen=True)
class EvictionPolicy:
    """When idle environments are stopped before their keep-alive ends."""

    max_idle: int = 1000  # idle on-demand environments kept at most, across all functions
    # Under this much available memory, the least recently used idle ones are stopped.
    min_available_bytes: int = 256 * 1048576
    available: Callable[[], int] = available_memory_bytes
    # Gives lambdad's memory reserve back (sandbox/memory_reserve.py): the bytes it held.
    # Done first when memory is short; idle environments are evicted if it held none.
    give_up_reserve: Callable[[], int] = lambda: 0


class PoolManager:
    def __init__(
        self,
        launch: Launch,
        keep_alive_seconds: float,
        reap_interval: float,
        eviction: EvictionPolicy | None = None,
        stage: Stage | None = None,
        max_staged: int = 0,
        staged_memory_bytes: int = 512 * 1048576,
    ) -> None:
        """`stage`, `max_staged` and `staged_memory_bytes`: see ``stage``."""
        self._launch = launch
        self._stage = stage
        self._max_staged = max_staged if stage is not None else 0
        self._staged_memory = staged_memory_bytes
        # staging tasks and their pools (a task's pool counts as staging from its start)
        self._staging: dict[asyncio.Task[bool], EnvironmentPool] = {}
        self._closed = False
        self._keep_alive = keep_alive_seconds
        self._interval = reap_interval
        self._eviction = eviction or EvictionPolicy()
        self.evicted = 0
        # (account, function name, version) -> pool of the current configuration
        self._pools: dict[tuple[str, str, str], EnvironmentPool] = {}
        self._retired: list[EnvironmentPool] = []
        self._reaper: asyncio.Task[None] | None = None

    def pool_for(self, config: FunctionConfig) -> EnvironmentPool:
        key = _key(config)
        pool = self._pools.get(key)
        if pool is not None and pool.config.revision_id == config.revision_id:
            return pool
        if pool is not None:
            self._retire(pool)
        pool = EnvironmentPool(config, self._launch)
        pool.on_scaling_out = self._stage_soon
        self._pools[key] = pool
        return pool

    # staged environments ---------------------------------------------------------------------
    def stage(self, config: FunctionConfig) -> None:
        """Build an environment of `config` ahead of its next cold start, in the background
        (EnvironmentLauncher.stage): done when a function is deployed or changed, and after
        a cold start beside live environments of it (it is scaling out). At most `max_staged`
        wait at once across all functions, using `staged_memory_bytes` at most (a Python one
        ~1-2 MB, a JVM's ~100: their peak so far); the oldest make room. Each waits for a
        keep-alive."""
        self._stage_pool(self.pool_for(config))

    def _stage_soon(self, pool: EnvironmentPool) -> None:
        """After a cold start that scaled `pool` out: stage its next one a moment later, not
        beside the init that is starting now (on a small machine they would share a core)."""
        if self._stage is None or self._max_staged <= 0 or pool.has_staged or pool.staging:
            return  # (in a burst, most cold starts find the next one being staged already)
        asyncio.get_running_loop().call_later(STAGE_DELAY_S, self._stage_pool, pool)

    def _stage_pool(self, pool: EnvironmentPool) -> None:
        if self._stage is None or self._max_staged <= 0 or self._closed:
            return
        staging = self._staging.values()
        if pool.has_staged or pool in staging or self._pools.get(_key(pool.config)) is not pool:
            return
        if not self._make_room(1):
            return  # the cap is taken by ones still being built: this one is not staged
        task = asyncio.ensure_future(pool.stage(self._stage))
        self._staging[task] = pool
        task.add_done_callback(self._staged_one)

    def _make_room(self, more: int) -> bool:
        """Drop the oldest staged environments until `more` fit in the count and memory caps
        (ones still being built are counted, not dropped); whether they fit now."""
        building = set(self._staging.values())
        staged = sorted(
            (p for p in self._pools.values() if p.has_staged or p in building),
            key=lambda p: (p in building, p.staged_at),  # (being staged: the youngest)
        )
        count, used = len(staged), sum(p.staged_memory() for p in staged)

        def fits() -> bool:  # (one more fits under the memory cap while some of it is left)
            memory_fits = used < self._staged_memory if more else used <= self._staged_memory
            return count + more <= self._max_staged and memory_fits

        for oldest in staged:
            if fits() or oldest in building:
                break
            used -= oldest.staged_memory()
            oldest.drop_staged()
            count -= 1
        return fits()

    def _staged_one(self, task: asyncio.Task[bool]) -> None:
        self._staging.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            log.warning("could not stage an environment: %r", task.exception())

    def drop_function(self, account_id: str, name: str) -> None:
        for key in [k for k in self._pools if k[:2] == (account_id, name)]:
            self._retire(self._pools.pop(key))

    def _retire(self, pool: EnvironmentPool) -> None:
        pool.retire()
        if not pool.empty:
            self._retired.append(pool)

    def start(self) -> None:
        self._reaper = asyncio.ensure_future(self._reap_forever())

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                self.reap()
            except Exception:  # a task boundary: never let the reaper die
                log.exception("reaper failed")

    def reap(self) -> int:
        stopped = sum(pool.reap(self._keep_alive) for pool in self._pools.values())
        moment = time.monotonic()
        for pool in self._pools.values():  # staged ones: a keep-alive from when they were built
            if pool.has_staged and moment - pool.staged_at > self._keep_alive:
                pool.drop_staged()
                stopped += 1
        if self._max_staged > 0:
            self._make_room(0)  # (those that grew since: a runtime's start takes a moment)
        self._retired = [p for p in self._retired if not p.empty]
        return stopped + self.evict()

    def evict(self) -> int:
        """Stop least-recently-used idle environments beyond the cap, and some more while the
        host is short of memory (a tenth of them per pass, at least one) and lambdad's memory
        reserve held nothing to give back."""
        idle = sorted(
            ((env, pool) for pool in self._pools.values() for env in pool.idle_environments()),
            key=lambda pair: pair[0].last_used,
        )
        excess = max(0, len(idle) - self._eviction.max_idle)
        available = self._eviction.available()
        if 0 < available < self._eviction.min_available_bytes:
            for pool in self._pools.values():  # short of memory: no environment waits ahead
                pool.drop_staged()
            # the memory reserve goes first (busy or not); idle environments only once it
            # holds nothing
            if self._eviction.give_up_reserve() == 0 and idle:
                excess = max(excess, max(1, len(idle) // 10))
        for env, pool in idle[:excess]:
            pool.evict(env)
        self.evicted += excess
        return excess

    def working(self) -> int:
        """Environments starting or running an invocation, in every pool."""
        return sum(pool.working() for pool in self._pools.values())

    def statistics(self) -> dict[str, PoolStatistics]:
        return {f"{k[0]}:{k[1]}:{k[2]}": pool.statistics() for k, pool in self._pools.items()}

    def staged_statistics(self) -> StagedStatistics:
        """The staged environments waiting across all functions, against their caps."""
        staged = [pool for pool in self._pools.values() if pool.has_staged]
        return StagedStatistics(
            len(staged),
            sum(pool.staged_memory() for pool in staged),
            self._max_staged,
            self._staged_memory if self._max_staged > 0 else 0,
        )

    async def close(self) -> None:
        self._closed = True
        for task in list(self._staging):
            task.cancel()
        if self._staging:
            await asyncio.gather(*self._staging, return_exceptions=True)
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        for pool in [*self._pools.values(), *self._retired]:
            pool.close()
        self._pools.clear()


def _key(config: FunctionConfig) -> tuple[str, str, str]:
    return (config.account_id, config.name, config.version)
