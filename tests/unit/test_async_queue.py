"""AsyncQueue: durable Event invocations with retries."""

from __future__ import annotations

import asyncio
from pathlib import Path

from lambdad.invoke.async_queue import Admission, AsyncQueue
from lambdad.scheduler.environment import InvocationResult
from lambdad.store.metadata import MemoryMetadataStore, QueuedEvent, SqliteMetadataStore


def event(n: int) -> QueuedEvent:
    return QueuedEvent(f"ev-{n}", "000000000000", "fn", "$LATEST", b"{}", None, float(n))


async def test_events_run_and_are_forgotten() -> None:
    store = MemoryMetadataStore()
    ran: list[str] = []

    async def runner(ev: QueuedEvent, _: Admission) -> InvocationResult:
        ran.append(ev.event_id)
        return InvocationResult(b"null")

    queue = AsyncQueue(store, workers=2, retry_delays=())
    queue.start(runner)
    await queue.put(event(1))
    await queue.put(event(2))
    while queue.statistics().completed < 2:
        await asyncio.sleep(0.01)
    assert sorted(ran) == ["ev-1", "ev-2"]
    assert store.queued_events() == []
    await queue.close()


async def test_failures_are_retried_then_dropped() -> None:
    store = MemoryMetadataStore()
    attempts: list[int] = []

    async def runner(ev: QueuedEvent, _: Admission) -> InvocationResult:
        attempts.append(ev.attempts)
        return InvocationResult(b"{}", function_error="Unhandled")

    queue = AsyncQueue(store, workers=1, retry_delays=(0.01, 0.01))
    queue.start(runner)
    await queue.put(event(1))
    while queue.statistics().failed < 1:
        await asyncio.sleep(0.01)
    assert attempts == [0, 1, 2]
    assert store.queued_events() == []
    await queue.close()


async def test_unfinished_events_survive_a_restart(tmp_path: Path) -> None:
    store = SqliteMetadataStore(tmp_path / "db.sqlite3")
    store.enqueue_event(event(7))
    store.close()
    reopened = SqliteMetadataStore(tmp_path / "db.sqlite3")
    ran: list[str] = []

    async def runner(ev: QueuedEvent, _: Admission) -> InvocationResult | None:
        ran.append(ev.event_id)
        return None  # the function is gone: dropped, not retried

    queue = AsyncQueue(reopened, workers=1)
    queue.start(runner)
    while not ran or reopened.queued_events():
        await asyncio.sleep(0.01)
    assert ran == ["ev-7"]
    await queue.close()
    reopened.close()
