"""EnvironmentPool: the execution environments of one function version's configuration.

Each environment runs one invocation at a time; an invocation takes the most recently used idle
environment (warm) or starts a new one (cold) — parallel invocations never queue behind each
other. A pool whose function changed is retired: idle environments stop at once, busy ones when
their invocation ends.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from lambdad.control.model import FunctionConfig
from lambdad.scheduler.environment import (
    Environment,
    EnvironmentState,
    Invocation,
    InvocationResult,
)

Launch = Callable[[FunctionConfig, Callable[[Environment], None]], Awaitable[Environment]]


@dataclass(frozen=True)
class PoolStatistics:
    idle: int
    busy: int
    starting: int
    cold_starts: int
    warm_starts: int


class EnvironmentPool:
    def __init__(self, config: FunctionConfig, launch: Launch) -> None:
        self.config = config
        self._launch = launch
        # idle environments, most recently used last
        self._idle: list[Environment] = []
        self._all: set[Environment] = set()
        self._retired = False
        self._cold = 0
        self._warm = 0

    async def run(
        self, invocation: Invocation, admit: Callable[[], None] | None = None
    ) -> InvocationResult:
        """Run one invocation; `admit` is called before a new environment is started (a cold
        start) and may refuse it by raising (the limiter's scaling rate)."""
        env = self._take_idle()
        if env is None:
            if admit is not None:
                admit()
            self._cold += 1
            env = await self._launch(self.config, self._forget)
            self._all.add(env)
        else:
            self._warm += 1
        try:
            return await env.invoke(invocation, self.config.timeout)
        finally:
            self._give_back(env)

    def _take_idle(self) -> Environment | None:
        while self._idle:
            env = self._idle.pop()
            if env.state is EnvironmentState.IDLE:
                return env
        return None

    def _give_back(self, env: Environment) -> None:
        if env.state is not EnvironmentState.IDLE:
            return
        if self._retired:
            env.kill()
            return
        self._idle.append(env)

    def _forget(self, env: Environment) -> None:
        self._all.discard(env)
        if env in self._idle:
            self._idle.remove(env)

    def reap(self, keep_alive_seconds: float, now: float | None = None) -> int:
        """Stop idle environments unused for longer than the keep-alive; returns how many."""
        moment = time.monotonic() if now is None else now
        stale = [e for e in self._idle if moment - e.last_used > keep_alive_seconds]
        for env in stale:
            self._idle.remove(env)
            env.kill()
        return len(stale)

    def retire(self) -> None:
        """Stop taking work; idle environments stop now, busy ones after their invocation."""
        self._retired = True
        idle, self._idle = self._idle, []
        for env in idle:
            env.kill()

    def close(self) -> None:
        """Stop every environment now, busy ones included (the server is shutting down)."""
        self.retire()
        for env in list(self._all):
            env.kill()

    @property
    def empty(self) -> bool:
        return not self._all

    def statistics(self) -> PoolStatistics:
        states = [e.state for e in self._all]
        return PoolStatistics(
            idle=states.count(EnvironmentState.IDLE),
            busy=states.count(EnvironmentState.BUSY),
            starting=states.count(EnvironmentState.STARTING),
            cold_starts=self._cold,
            warm_starts=self._warm,
        )
