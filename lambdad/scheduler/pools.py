"""PoolManager: one EnvironmentPool per function version, replaced when the function changes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from lambdad.control.model import FunctionConfig
from lambdad.scheduler.pool import EnvironmentPool, Launch, PoolStatistics

log = logging.getLogger(__name__)


def available_memory_bytes() -> int:
    """MemAvailable from /proc/meminfo (0 if unknown)."""
    try:
        with open("/proc/meminfo", "rb") as meminfo:
            for line in meminfo:
                if line.startswith(b"MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


@dataclass(frozen=True)
class EvictionPolicy:
    """When idle environments are stopped before their keep-alive ends."""

    max_idle: int = 1000  # idle on-demand environments kept at most, across all functions
    # Under this much available memory, the least recently used idle ones are stopped.
    min_available_bytes: int = 256 * 1048576
    available: Callable[[], int] = available_memory_bytes


class PoolManager:
    def __init__(
        self,
        launch: Launch,
        keep_alive_seconds: float,
        reap_interval: float,
        eviction: EvictionPolicy | None = None,
    ) -> None:
        self._launch = launch
        self._keep_alive = keep_alive_seconds
        self._interval = reap_interval
        self._eviction = eviction or EvictionPolicy()
        self.evicted = 0
        # (account, function name, version) -> pool of the current configuration
        self._pools: dict[tuple[str, str, str], EnvironmentPool] = {}
        self._retired: list[EnvironmentPool] = []
        self._reaper: asyncio.Task[None] | None = None

    def pool_for(self, config: FunctionConfig) -> EnvironmentPool:
        key = (config.account_id, config.name, config.version)
        pool = self._pools.get(key)
        if pool is not None and pool.config.revision_id == config.revision_id:
            return pool
        if pool is not None:
            self._retire(pool)
        pool = EnvironmentPool(config, self._launch)
        self._pools[key] = pool
        return pool

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
        self._retired = [p for p in self._retired if not p.empty]
        return stopped + self.evict()

    def evict(self) -> int:
        """Stop least-recently-used idle environments beyond the cap, and some more while the
        host is short of memory (a tenth of them per pass, at least one)."""
        idle = sorted(
            ((env, pool) for pool in self._pools.values() for env in pool.idle_environments()),
            key=lambda pair: pair[0].last_used,
        )
        excess = max(0, len(idle) - self._eviction.max_idle)
        available = self._eviction.available()
        if idle and 0 < available < self._eviction.min_available_bytes:
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

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        for pool in [*self._pools.values(), *self._retired]:
            pool.close()
        self._pools.clear()
