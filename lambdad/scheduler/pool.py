"""EnvironmentPool: the execution environments of one function version's configuration.

Each environment runs one invocation at a time; an invocation takes a free provisioned
environment first (initialised ahead, see ``provision``), else the most recently used idle
on-demand environment (warm), else starts a new one (cold: in the staged environment, if one
was built ahead, see ``stage``) — parallel invocations never queue behind each other.
Provisioned environments are never reaped for idleness; they stop when released. A pool
whose function changed is retired: idle environments stop at once, busy ones when their
invocation ends.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from lambdad.control.model import FunctionConfig
from lambdad.scheduler.environment import (
    Environment,
    EnvironmentLost,
    EnvironmentState,
    InitFailure,
    InitializationType,
    Invocation,
    InvocationResult,
)

_WORKING = (EnvironmentState.STARTING, EnvironmentState.BUSY)


class Launch(Protocol):
    """Start one environment of `config` (EnvironmentLauncher.launch)."""

    def __call__(
        self,
        config: FunctionConfig,
        on_dead: Callable[[Environment], None],
        initialization_type: InitializationType = ...,
    ) -> Awaitable[Environment]: ...


class Stage(Protocol):
    """Build one staged environment of `config` (EnvironmentLauncher.stage), or None."""

    def __call__(
        self, config: FunctionConfig, on_dead: Callable[[Environment], None]
    ) -> Awaitable[Environment | None]: ...


class ProvisioningFailed(Exception):
    """A provisioned environment did not initialise."""

    def __init__(self, failure: InitFailure) -> None:
        super().__init__(failure.error_type)
        self.failure = failure


@dataclass(frozen=True)
class PoolStatistics:
    idle: int
    busy: int
    starting: int
    cold_starts: int
    warm_starts: int
    provisioned: int = 0  # live provisioned environments (initialising, free or busy)
    provisioned_starts: int = 0  # invocations served by a provisioned environment
    staged: int = 0  # a staged environment waits for this version's next cold start (0 or 1)
    staged_starts: int = 0  # cold starts that took a staged environment


class EnvironmentPool:
    def __init__(self, config: FunctionConfig, launch: Launch) -> None:
        self.config = config
        self._launch = launch
        # idle on-demand environments, most recently used last
        self._idle: list[Environment] = []
        # initialised provisioned environments without an invocation
        self._provisioned_idle: list[Environment] = []
        # every live provisioned environment; released ones stop when their invocation ends
        self._provisioned: set[Environment] = set()
        self._released: set[Environment] = set()
        self._all: set[Environment] = set()
        self._retired = False
        self._cold = 0
        self._warm = 0
        self._provisioned_runs = 0
        # an environment built ahead for the next cold start (``stage``), and since when
        self._staged: Environment | None = None
        self.staged_at = 0.0
        self._staging = False
        self._staged_runs = 0
        # told of a cold start beside live environments (PoolManager: stage the next one)
        self.on_scaling_out: Callable[[EnvironmentPool], None] | None = None

    async def run(
        self,
        invocation: Invocation,
        admit: Callable[[], None] | None = None,
        env: Environment | None = None,
    ) -> InvocationResult:
        """Run one invocation, on `env` when the caller claimed one (``claim_provisioned``);
        `admit` is called before a new environment is started (a cold start) and may refuse
        it by raising (the limiter's scaling rate)."""
        env = env or self.claim_provisioned() or self._take_idle()
        if env is None:
            if admit is not None:
                admit()
            self._cold += 1
            scaling_out = bool(self._all)  # (others of it live: a next one is likely needed)
            env = self._take_staged()
            if env is None:
                env = await self._launch(self.config, self._forget)
            self._all.add(env)
            if scaling_out and self.on_scaling_out is not None:
                self.on_scaling_out(self)
        elif env in self._provisioned:
            self._provisioned_runs += 1
        else:
            self._warm += 1
        try:
            return await env.invoke(invocation, self.config.timeout)
        except EnvironmentLost:
            pass  # it exited after its last answer, before this event reached it
        finally:
            self._give_back(env)
        # As AWS does, such an invocation runs in a new environment instead of failing.
        self._cold += 1
        fresh = await self._launch(self.config, self._forget)
        self._all.add(fresh)
        try:
            return await fresh.invoke(invocation, self.config.timeout)
        finally:
            self._give_back(fresh)

    def claim_provisioned(self) -> Environment | None:
        """Take a free, initialised provisioned environment (give it to ``run``), or None."""
        while self._provisioned_idle:
            env = self._provisioned_idle.pop()
            if env.state is EnvironmentState.IDLE:
                return env
        return None

    def _take_staged(self) -> Environment | None:
        env, self._staged = self._staged, None
        if env is None or env.state is not EnvironmentState.STAGED:
            return None
        self._staged_runs += 1
        return env

    # staged environments ---------------------------------------------------------------------
    async def stage(self, stage: Stage) -> bool:
        """Build an environment for the next cold start ahead (EnvironmentLauncher.stage) unless
        one is staged or being staged; whether one now waits."""
        if self._retired or self._staging or self.has_staged:
            return self.has_staged
        self._staging = True
        try:
            env = await stage(self.config, self._forget)
        finally:
            self._staging = False
        if env is None:
            return False
        if self._retired or self._staged is not None or env.state is not EnvironmentState.STAGED:
            env.kill()
            return self.has_staged
        self._staged, self.staged_at = env, time.monotonic()
        return True

    def staged_memory(self) -> int:
        """The staged environment's memory so far (its peak), in bytes; 0 without one."""
        env = self._staged
        if env is None or env.process is None or env.state is not EnvironmentState.STAGED:
            return 0
        return env.process.peak_memory_bytes()

    @property
    def has_staged(self) -> bool:
        return self._staged is not None and self._staged.state is EnvironmentState.STAGED

    @property
    def staging(self) -> bool:
        return self._staging

    def drop_staged(self) -> None:
        """Stop the staged environment, if any (evicted, reaped or the pool retired)."""
        env, self._staged = self._staged, None
        if env is not None:
            env.kill()

    def _take_idle(self) -> Environment | None:
        while self._idle:
            env = self._idle.pop()
            if env.state is EnvironmentState.IDLE:
                return env
        return None

    def _give_back(self, env: Environment) -> None:
        if env.state is not EnvironmentState.IDLE:
            return
        if self._retired or env in self._released:
            env.kill()
        elif env in self._provisioned:
            self._provisioned_idle.append(env)
        else:
            self._idle.append(env)

    def _forget(self, env: Environment) -> None:
        if env is self._staged:
            self._staged = None
        self._all.discard(env)
        self._provisioned.discard(env)
        self._released.discard(env)
        for idle in (self._idle, self._provisioned_idle):
            if env in idle:
                idle.remove(env)

    # provisioned concurrency ---------------------------------------------------------------
    async def provision(self, on_lost: Callable[[Environment], None]) -> Environment:
        """Start one provisioned environment and wait until its runtime has initialised; it
        then serves invocations until ``release``. `on_lost` is called if it dies. Raises
        ProvisioningFailed when init fails (the environment is gone then)."""
        env = await self._launch(self.config, self._losing(on_lost), InitializationType.PROVISIONED)
        if env.state is not EnvironmentState.DEAD:
            self._all.add(env)
            self._provisioned.add(env)
        try:
            failure = await env.wait_initialised()
        except BaseException:  # cancelled: nobody will use or release it
            self.release(env)
            raise
        if failure is not None:
            self.release(env)
            raise ProvisioningFailed(failure)
        self._give_back(env)
        return env

    def release(self, env: Environment) -> None:
        """Stop a provisioned environment: now when it is free, after its invocation if busy."""
        if env.state is EnvironmentState.BUSY:
            self._released.add(env)
            return
        if env in self._provisioned_idle:  # no invocation may claim it while it stops
            self._provisioned_idle.remove(env)
        env.kill()

    def _losing(self, on_lost: Callable[[Environment], None]) -> Callable[[Environment], None]:
        def dead(env: Environment) -> None:
            self._forget(env)
            on_lost(env)

        return dead

    # lifecycle -------------------------------------------------------------------------------
    def idle_environments(self) -> list[Environment]:
        """Idle on-demand environments (evictable), least recently used first."""
        return sorted(self._idle, key=lambda env: env.last_used)

    def evict(self, env: Environment) -> None:
        """Stop one idle on-demand environment (LRU eviction)."""
        if env in self._idle:
            self._idle.remove(env)
            env.kill()

    def reap(self, keep_alive_seconds: float, now: float | None = None) -> int:
        """Stop idle on-demand environments unused for longer than the keep-alive; returns how
        many (provisioned environments are kept warm)."""
        moment = time.monotonic() if now is None else now
        stale = [e for e in self._idle if moment - e.last_used > keep_alive_seconds]
        for env in stale:
            self._idle.remove(env)
            env.kill()
        return len(stale)

    def retire(self) -> None:
        """Stop taking work; idle environments stop now, busy ones after their invocation."""
        self._retired = True
        self.drop_staged()
        idle, self._idle = [*self._idle, *self._provisioned_idle], []
        self._provisioned_idle = []
        for env in idle:
            env.kill()
        for env in list(self._provisioned):
            if env.state is EnvironmentState.STARTING:
                env.kill()

    def close(self) -> None:
        """Stop every environment now, busy ones included (the server is shutting down)."""
        self.retire()
        for env in list(self._all):
            env.kill()

    @property
    def empty(self) -> bool:
        return not self._all and self._staged is None

    def working(self) -> int:
        """Environments starting or running an invocation."""
        return sum(1 for e in self._all if e.state in _WORKING)

    def statistics(self) -> PoolStatistics:
        states = [e.state for e in self._all]
        return PoolStatistics(
            idle=states.count(EnvironmentState.IDLE),
            busy=states.count(EnvironmentState.BUSY),
            starting=states.count(EnvironmentState.STARTING),
            cold_starts=self._cold,
            warm_starts=self._warm,
            provisioned=len(self._provisioned),
            provisioned_starts=self._provisioned_runs,
            staged=int(self.has_staged),
            staged_starts=self._staged_runs,
        )
