"""Provisioner: keeps the environments of provisioned concurrency configurations initialised.

A configuration is one or two shares: N environments of one version (a version, or an alias),
or a weighted alias's environments split between its two versions. Off the request path, one
task per share starts its environments in the pool of its version (AWS_LAMBDA_INITIALIZATION_TYPE
``provisioned-concurrency``), waits for each runtime to reach ``/next`` (initialised: counted as
available), and replaces any that dies. A share's status follows::

    IN_PROGRESS ──all requested environments initialised──▶ READY
        │
        └──an environment failed to initialise (before READY)──▶ FAILED (nothing allocated)

After READY a failed replacement is retried with a back-off; the status stays READY with fewer
available. The configuration's status is its shares': FAILED if one failed, else IN_PROGRESS
if one is still initialising, else READY; its numbers are their sums. ``release`` stops the
configuration's environments (busy ones after their invocation).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from lambdad.control.model import FunctionConfig
from lambdad.scheduler.environment import Environment
from lambdad.scheduler.pool import EnvironmentPool, ProvisioningFailed
from lambdad.scheduler.pools import PoolManager

log = logging.getLogger(__name__)

# AWS's StatusReason when an environment's init failed (recorded).
INIT_FAILURE_REASON = "FUNCTION_ERROR_INIT_FAILURE"
# At most this many environments of one configuration initialise at once.
PARALLEL_STARTS = 16
RETRY_DELAYS_SECONDS = (1.0, 2.0, 5.0, 10.0, 30.0)

# (account id, function name, qualifier) of a provisioned concurrency configuration
ConfigKey = tuple[str, str, str]


class ProvisionedStatus(StrEnum):
    IN_PROGRESS = "IN_PROGRESS"  # fewer environments initialised than requested, more coming
    READY = "READY"  # every requested environment was initialised
    FAILED = "FAILED"  # an environment's init failed before READY; nothing stays allocated


@dataclass(frozen=True)
class Allocation:
    """How far a configuration's environments are: what GetProvisionedConcurrencyConfig shows."""

    allocated: int
    available: int
    status: ProvisionedStatus
    reason: str | None = None


@dataclass(frozen=True)
class Share:
    """Part of a configuration: `count` environments of one version."""

    version: FunctionConfig
    count: int


@dataclass(frozen=True)
class ProvisionerStatistics:
    configurations: int
    environments: int  # initialised provisioned environments of every configuration
    failed: int  # configurations in FAILED


class _Allocation:
    """The environments of one share of a configuration and the task that keeps them."""

    def __init__(self, pool: EnvironmentPool, count: int) -> None:
        self.pool = pool
        self.count = count
        self.status = ProvisionedStatus.IN_PROGRESS
        self.reason: str | None = None
        # initialised environments of this configuration
        self.ready: set[Environment] = set()
        self._wake = asyncio.Event()
        self._released = False
        self._task = asyncio.ensure_future(self._keep())

    @property
    def version(self) -> FunctionConfig:
        return self.pool.config

    def resize(self, count: int) -> None:
        """A new requested count; a failed configuration starts over."""
        self.count = count
        if self.status is ProvisionedStatus.FAILED:
            self.reason = None
            self._task.cancel()
            self._task = asyncio.ensure_future(self._keep())
        if len(self.ready) < count:
            self.status = ProvisionedStatus.IN_PROGRESS
        for env in list(self.ready)[count:]:
            self.ready.discard(env)
            self.pool.release(env)
        self._wake.set()

    def release(self) -> None:
        self._released = True
        self._task.cancel()
        for env in self.ready:
            self.pool.release(env)
        self.ready.clear()

    def allocation(self) -> Allocation:
        available = min(len(self.ready), self.count)
        return Allocation(available, available, self.status, self.reason)

    async def close(self) -> None:
        self.release()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _keep(self) -> None:
        try:
            await self._reconcile()
        except Exception:  # a task boundary: never die silently
            log.exception("provisioning %s stopped", self.version.qualified_arn)
            self._fail()

    async def _reconcile(self) -> None:
        failures = 0
        gate = asyncio.Semaphore(PARALLEL_STARTS)
        while not self._released:
            missing = self.count - len(self.ready)
            if missing <= 0:
                if self.status is ProvisionedStatus.IN_PROGRESS:
                    self.status = ProvisionedStatus.READY
                self._wake.clear()
                await self._wake.wait()
                continue
            outcomes = await asyncio.gather(*(self._start_one(gate) for _ in range(missing)))
            if all(outcomes):
                failures = 0
            elif self.status is not ProvisionedStatus.READY:
                self._fail()
                return
            else:
                await asyncio.sleep(RETRY_DELAYS_SECONDS[min(failures, 4)])
                failures += 1

    async def _start_one(self, gate: asyncio.Semaphore) -> bool:
        async with gate:
            try:
                env = await self.pool.provision(self._lost)
            except ProvisioningFailed as failed:
                log.info(
                    "provisioned environment of %s failed to initialise: %s",
                    self.version.qualified_arn,
                    failed.failure.error_type,
                )
                return False
            except Exception:  # a task boundary: a launch that broke is a failed start
                log.exception("provisioning %s failed", self.version.qualified_arn)
                return False
        if self._released or len(self.ready) >= self.count:
            self.pool.release(env)
        else:
            self.ready.add(env)
        return True

    def _lost(self, env: Environment) -> None:
        if env in self.ready:
            self.ready.discard(env)
            self._wake.set()

    def _fail(self) -> None:
        self.status = ProvisionedStatus.FAILED
        self.reason = INIT_FAILURE_REASON
        for env in self.ready:
            self.pool.release(env)
        self.ready.clear()


class Provisioner:
    def __init__(self, pools: PoolManager) -> None:
        self._pools = pools
        # configuration -> qualified ARN of a version -> that version's share of the environments
        self._allocations: dict[ConfigKey, dict[str, _Allocation]] = {}

    def allocate(self, key: ConfigKey, shares: Sequence[Share]) -> None:
        """Keep each share's environments initialised for a configuration (returns at once; the
        work happens in the background). A share that grows or shrinks keeps the environments
        it has; a version that no longer has a share (its alias changed) loses them."""
        current = self._allocations.setdefault(key, {})
        wanted = {s.version.qualified_arn: s for s in shares if s.count > 0}
        for arn in [arn for arn in current if arn not in wanted]:
            current.pop(arn).release()
        for arn, share in wanted.items():
            if arn in current:
                current[arn].resize(share.count)
            else:
                current[arn] = _Allocation(self._pools.pool_for(share.version), share.count)

    def release(self, key: ConfigKey) -> None:
        """Stop a configuration's environments (it was deleted)."""
        for allocation in self._allocations.pop(key, {}).values():
            allocation.release()

    def allocation(self, key: ConfigKey) -> Allocation:
        """The configuration as a whole: its shares' numbers summed, the least advanced status."""
        parts = [a.allocation() for a in self._allocations.get(key, {}).values()]
        failed = [p for p in parts if p.status is ProvisionedStatus.FAILED]
        if failed:
            status, reason = ProvisionedStatus.FAILED, failed[0].reason
        elif parts and all(p.status is ProvisionedStatus.READY for p in parts):
            status, reason = ProvisionedStatus.READY, None
        else:
            status, reason = ProvisionedStatus.IN_PROGRESS, None
        allocated = sum(p.allocated for p in parts)
        return Allocation(allocated, sum(p.available for p in parts), status, reason)

    def statistics(self) -> ProvisionerStatistics:
        configurations = self._allocations.values()
        shares = [a for found in configurations for a in found.values()]
        return ProvisionerStatistics(
            configurations=len(configurations),
            environments=sum(len(a.ready) for a in shares),
            failed=sum(
                any(a.status is ProvisionedStatus.FAILED for a in found.values())
                for found in configurations
            ),
        )

    async def close(self) -> None:
        allocations, self._allocations = list(self._allocations.values()), {}
        for found in allocations:
            for allocation in found.values():
                await allocation.close()
