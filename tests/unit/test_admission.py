"""Admission where invocations run: cold starts ask the pool's `admit`, throttled Event
invocations wait for capacity in the AsyncQueue instead of being dropped or holding a worker."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from lambdad.control.model import FunctionConfig
from lambdad.errors import TooManyRequestsException
from lambdad.invoke.async_queue import Admission, AsyncQueue
from lambdad.sandbox.fake import FakeBehaviour
from lambdad.scheduler.environment import Invocation, InvocationResult
from lambdad.scheduler.limiter import ConcurrencyLimiter
from lambdad.store.metadata import MemoryMetadataStore, QueuedEvent
from tests.unit.test_scheduler import config, echo, invoke, manager

ACCOUNT = "000000000000"


def event(n: int, function: str = "fn") -> QueuedEvent:
    return QueuedEvent(f"ev-{n}", ACCOUNT, function, "", b"{}", None, float(n))


async def test_admit_is_asked_for_cold_starts_only(tmp_path: Path) -> None:
    pools, backend, _ = manager(tmp_path, FakeBehaviour(echo))
    cfg = config()
    pool = pools.pool_for(cfg)
    asked: list[int] = []
    await invoke(pools, cfg)  # no admit given: starts anyway
    first = await pool.run(_invocation(cfg, 1), admit=lambda: asked.append(1))
    assert first.init_duration_ms is None and asked == []  # warm: nothing to admit

    def refuse() -> None:
        asked.append(2)
        raise TooManyRequestsException("Rate Exceeded.", "FunctionInvocationRateLimitExceeded")

    other = config(name="other")
    with pytest.raises(TooManyRequestsException):
        await pools.pool_for(other).run(_invocation(other, 2), admit=refuse)
    assert asked == [2]
    assert len(backend.processes) == 1  # the refused cold start launched nothing
    await pools.close()


async def test_throttled_event_waits_without_holding_a_worker() -> None:
    limiter = ConcurrencyLimiter(account_limit=10, min_unreserved=0)
    limiter.set_reserved(ACCOUNT, "blocked", 0)
    store = MemoryMetadataStore()
    ran: list[str] = []

    async def runner(ev: QueuedEvent, _: Admission) -> InvocationResult:
        ran.append(ev.event_id)
        return InvocationResult(b"null")

    queue = AsyncQueue(store, workers=1, retry_delays=(), limiter=limiter)
    queue.start(runner)
    await queue.put(event(1, "blocked"))
    await queue.put(event(2, "free"))
    while queue.statistics().completed < 1:
        await asyncio.sleep(0.01)
    assert ran == ["ev-2"]  # the one worker was not stuck behind the throttled event
    assert queue.statistics().waiting == 1
    assert [e.event_id for e in store.queued_events()] == ["ev-1"]  # still durable
    limiter.clear_reserved(ACCOUNT, "blocked")
    while queue.statistics().completed < 2:
        await asyncio.sleep(0.01)
    assert ran == ["ev-2", "ev-1"] and store.queued_events() == []
    assert limiter.statistics(ACCOUNT).in_use == 0
    await queue.close()


async def test_rate_throttled_event_is_tried_again_without_an_attempt() -> None:
    limiter = ConcurrencyLimiter(account_limit=10, min_unreserved=0)
    store = MemoryMetadataStore()
    attempts: list[int] = []

    async def runner(ev: QueuedEvent, _: Admission) -> InvocationResult:
        attempts.append(ev.attempts)
        if len(attempts) == 1:
            raise TooManyRequestsException(
                "Rate Exceeded.", "FunctionInvocationRateLimitExceeded", retry_after_seconds=0
            )
        return InvocationResult(b"null")

    queue = AsyncQueue(store, workers=1, retry_delays=(), limiter=limiter)
    queue.start(runner)
    await queue.put(event(1))
    while queue.statistics().completed < 1:
        await asyncio.sleep(0.01)
    assert attempts == [0, 0]
    assert limiter.statistics(ACCOUNT).in_use == 0
    await queue.close()


async def test_a_waiting_event_asks_again_at_any_release() -> None:
    """A throttled event asks the queue's `admit` again whenever a lease is released (a
    provisioned environment freed, say), and its runner gets what `admit` set aside for it."""
    limiter = ConcurrencyLimiter(account_limit=10, min_unreserved=0)
    capacity: list[str] = []
    asked: list[bool] = []

    def admit(ev: QueuedEvent, first: bool) -> Admission | None:
        asked.append(first)
        return Admission(None, capacity.pop()) if capacity else None

    got: list[object] = []

    async def runner(ev: QueuedEvent, admission: Admission) -> InvocationResult:
        got.append(admission.claimed)
        return InvocationResult(b"null")

    queue = AsyncQueue(MemoryMetadataStore(), workers=1, retry_delays=(), limiter=limiter)
    queue.start(runner, admit)
    await queue.put(event(1))
    while queue.statistics().waiting < 1:
        await asyncio.sleep(0.01)
    capacity.append("a provisioned environment")
    limiter.release(limiter.acquire_provisioned(ACCOUNT, "another"))

    async def completed() -> None:
        while queue.statistics().completed < 1:
            await asyncio.sleep(0.01)

    await asyncio.wait_for(completed(), timeout=0.5)  # woken, not the 1 s recheck
    assert got == ["a provisioned environment"]
    assert asked[0] and not any(asked[1:])  # only the first refusal counts as a throttle
    await queue.close()


async def test_close_cancels_waiting_events() -> None:
    limiter = ConcurrencyLimiter(account_limit=10, min_unreserved=0)
    limiter.set_reserved(ACCOUNT, "fn", 0)

    async def runner(ev: QueuedEvent, _: Admission) -> InvocationResult:
        raise AssertionError("must not run")

    store = MemoryMetadataStore()
    queue = AsyncQueue(store, workers=1, limiter=limiter)
    queue.start(runner)
    await queue.put(event(1))
    while queue.statistics().waiting < 1:
        await asyncio.sleep(0.01)
    await queue.close()
    assert queue.statistics().waiting == 0
    assert len(store.queued_events()) == 1  # runs after a restart


def _invocation(cfg: FunctionConfig, n: int) -> Invocation:
    return Invocation(request_id=f"r-{n}", payload=b"{}", invoked_arn=cfg.arn)
