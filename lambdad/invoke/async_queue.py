"""AsyncQueue: Event invocations, durable in the MetadataStore, run by a fixed set of workers.

An accepted event is written to the store before the caller gets its 202, and removed only after
it ran (or exhausted its retries), so events queued when the server stops run after a restart.
A function error is retried like AWS does (two more attempts, with delays).

Admission: an event runs under a lease of the ConcurrencyLimiter, like a synchronous invocation:
the runner's `admit` (the Invoker's) gives it a provisioned environment of its version with a
provisioned lease when one is free, else an on-demand lease, as AWS runs queued events on an
alias's provisioned concurrency. A throttled event is not lost and does not hold a worker: it
waits in a task of its own, asking again at every lease released (``ConcurrencyLimiter.changed``),
then runs. An event refused by the scaling rate goes back to the queue after the throttle's
Retry-After, without counting as an attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from lambdad.errors import TooManyRequestsException
from lambdad.scheduler.environment import InvocationResult
from lambdad.scheduler.limiter import ConcurrencyLimiter, Lease
from lambdad.store.metadata import MetadataStore, QueuedEvent

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Admission:
    """What an admitted event runs under: its lease (None: nothing to count, e.g. its function
    is gone) and what the admitter set aside for the run (a provisioned environment), handed
    to the runner as it is."""

    lease: Lease | None
    claimed: object = None


# Capacity for an event now, or None (throttled); the flag: count a refusal as a throttle (an
# event's first try) or not (a waiting event trying again).
Admit = Callable[[QueuedEvent, bool], "Admission | None"]
Runner = Callable[[QueuedEvent, Admission], Awaitable[InvocationResult | None]]


@dataclass(frozen=True)
class QueueStatistics:
    queued: int
    running: int
    completed: int
    failed: int
    waiting: int = 0  # throttled events waiting for concurrency


class AsyncQueue:
    def __init__(
        self,
        store: MetadataStore,
        workers: int,
        retry_delays: tuple[float, ...] = (60.0, 120.0),
        limiter: ConcurrencyLimiter | None = None,
    ) -> None:
        self._store = store
        self._workers = workers
        self._retry_delays = retry_delays
        self._limiter = limiter or ConcurrencyLimiter()
        self._queue: asyncio.Queue[QueuedEvent] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        # throttled events, each waiting for a lease in its own task
        self._waiting: set[asyncio.Task[None]] = set()
        self._runner: Runner | None = None
        self._admit: Admit = self._lease_only
        self._running = 0
        self._completed = 0
        self._failed = 0

    def start(self, runner: Runner, admit: Admit | None = None) -> None:
        """Start the workers, first re-queueing what a previous run left unfinished. Without
        `admit`, an event runs under an on-demand lease of its function."""
        self._runner = runner
        self._admit = admit or self._lease_only
        for event in self._store.queued_events():
            self._queue.put_nowait(event)
        self._tasks = [asyncio.ensure_future(self._work()) for _ in range(self._workers)]

    async def put(self, event: QueuedEvent) -> None:
        self._store.enqueue_event(event)
        self._queue.put_nowait(event)

    def _lease_only(self, event: QueuedEvent, first: bool) -> Admission | None:
        limiter = self._limiter
        lease = limiter.try_lease(event.account_id, event.function_name, count_throttle=first)
        return None if lease is None else Admission(lease)

    async def _work(self) -> None:
        while True:
            event = await self._queue.get()
            admission = self._admit(event, True)
            if admission is None:
                self._wait_for_capacity(event)
                continue
            await self._run_admitted(event, admission)

    def _wait_for_capacity(self, event: QueuedEvent) -> None:
        task = asyncio.ensure_future(self._run_when_admitted(event))
        self._waiting.add(task)
        task.add_done_callback(self._waiting.discard)

    async def _run_when_admitted(self, event: QueuedEvent) -> None:
        while (admission := self._admit(event, False)) is None:
            await self._limiter.changed()
        await self._run_admitted(event, admission)

    async def _run_admitted(self, event: QueuedEvent, admission: Admission) -> None:
        self._running += 1
        try:
            await self._run(event, admission)
        except TooManyRequestsException as throttled:  # scaling too fast: later, same attempt
            loop = asyncio.get_running_loop()
            loop.call_later(throttled.retry_after_seconds, self._queue.put_nowait, event)
        except Exception:  # a task boundary: log it, keep the worker alive
            log.exception("async invocation %s failed", event.event_id)
        finally:
            self._running -= 1
            if admission.lease is not None:
                self._limiter.release(admission.lease)

    async def _run(self, event: QueuedEvent, admission: Admission) -> None:
        assert self._runner is not None
        result = await self._runner(event, admission)
        attempts = event.attempts + 1
        if result is None or result.function_error is None:
            self._completed += 1
            self._store.finish_event(event.event_id)
            return
        if attempts > len(self._retry_delays):
            self._failed += 1
            log.info("async invocation %s failed after %d attempts", event.event_id, attempts)
            self._store.finish_event(event.event_id)
            return
        self._store.record_attempt(event.event_id, attempts)
        delay = self._retry_delays[attempts - 1]
        asyncio.get_running_loop().call_later(
            delay, self._queue.put_nowait, replace(event, attempts=attempts)
        )

    def statistics(self) -> QueueStatistics:
        return QueueStatistics(
            self._queue.qsize(), self._running, self._completed, self._failed, len(self._waiting)
        )

    async def close(self) -> None:
        tasks = [*self._tasks, *self._waiting]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
