"""ConcurrencyLimiter: Lambda's admission control, per account.

- Account concurrency: at most `account_limit` invocations run at once per account.
- Reserved concurrency: a function with a reservation R runs at most R at once, and those R are
  carved out of the account's pool; every other function shares what is left (the
  *unreserved* pool), which never drops below `min_unreserved`.
- Scaling rate: each function adds at most `burst` new execution environments per
  `burst_window` seconds (a token bucket refilled continuously).

Admission is a lease: ``with limiter.lease_nowait(account, function):`` — released on exit
whatever happens (errors, timeouts, crashes). ``*_nowait`` calls raise
TooManyRequestsException with AWS's Reason instead of waiting; ``wait_lease`` waits (async
invocations are never dropped for lack of capacity).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from enum import StrEnum

from lambdad.errors import TooManyRequestsException, UntypedInvalidParameterValueException

DEFAULT_ACCOUNT_LIMIT = 1000
MIN_UNRESERVED = 100
BURST = 1000
BURST_WINDOW_SECONDS = 10.0


class ThrottleReason(StrEnum):
    ACCOUNT = "ConcurrentInvocationLimitExceeded"  # the account's unreserved pool is full
    RESERVED = "ReservedFunctionConcurrentInvocationLimitExceeded"  # the reservation is full
    RATE = "FunctionInvocationRateLimitExceeded"  # scaling faster than the burst rate
    RESERVED_RATE = "ReservedFunctionInvocationRateLimitExceeded"  # same, reserved function


@dataclass(frozen=True)
class AccountStatistics:
    account_limit: int
    reserved_total: int
    unreserved_limit: int
    in_use: int  # all running invocations of the account
    unreserved_in_use: int
    throttled: int


@dataclass
class _Account:
    limit: int
    # function name -> reserved concurrency
    reserved: dict[str, int] = field(default_factory=dict)
    # function name -> running invocations
    in_use: dict[str, int] = field(default_factory=dict)
    unreserved_in_use: int = 0
    throttled: int = 0


@dataclass
class _Bucket:
    tokens: float
    stamp: float


@dataclass(frozen=True)
class Lease:
    account_id: str
    function: str
    reserved: bool


class ConcurrencyLimiter:
    def __init__(
        self,
        account_limit: int = DEFAULT_ACCOUNT_LIMIT,
        min_unreserved: int = MIN_UNRESERVED,
        burst: int = BURST,
        burst_window: float = BURST_WINDOW_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.account_limit = account_limit
        self.min_unreserved = min_unreserved
        self._burst = burst
        self._rate = burst / burst_window
        self._clock = clock
        self._accounts: dict[str, _Account] = {}
        # (account, function) -> scale-out token bucket
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        # futures of wait_lease callers, woken when any lease is released
        self._waiters: set[asyncio.Future[None]] = set()

    def _account(self, account_id: str) -> _Account:
        account = self._accounts.get(account_id)
        if account is None:
            account = self._accounts[account_id] = _Account(self.account_limit)
        return account

    # reservations ---------------------------------------------------------------------------
    def set_reserved(self, account_id: str, function: str, value: int) -> None:
        """Reserve concurrency for a function, refusing reservations AWS refuses.

        AWS has one refusal for reserved concurrency: the unreserved floor's. Reserving more
        than the whole account is refused with it too (recorded).
        """
        account = self._account(account_id)
        others = sum(v for f, v in account.reserved.items() if f != function)
        if account.limit - others - value < self.min_unreserved:
            raise UntypedInvalidParameterValueException(
                "Specified ReservedConcurrentExecutions for function decreases account's "
                f"UnreservedConcurrentExecution below its minimum value of [{self.min_unreserved}]."
            )
        self.restore_reserved(account_id, function, value)

    def restore_reserved(self, account_id: str, function: str, value: int) -> None:
        """Reinstate a reservation accepted earlier (at start-up), without checking it again."""
        self._account(account_id).reserved[function] = value
        self._wake_waiters()

    def clear_reserved(self, account_id: str, function: str) -> None:
        self._account(account_id).reserved.pop(function, None)
        self._wake_waiters()

    def reserved(self, account_id: str, function: str) -> int | None:
        return self._account(account_id).reserved.get(function)

    def unreserved_limit(self, account_id: str) -> int:
        account = self._account(account_id)
        return account.limit - sum(account.reserved.values())

    # admission ------------------------------------------------------------------------------
    def acquire_nowait(self, account_id: str, function: str) -> Lease:
        found = self._try_acquire(account_id, function)
        if isinstance(found, Lease):
            return found
        self._account(account_id).throttled += 1
        raise _throttled(found)

    def _try_acquire(self, account_id: str, function: str) -> Lease | ThrottleReason:
        """A lease, or why there is none (not counted as a throttle)."""
        account = self._account(account_id)
        running = account.in_use.get(function, 0)
        reservation = account.reserved.get(function)
        if reservation is not None:
            if running >= reservation:
                return ThrottleReason.RESERVED
        elif account.unreserved_in_use >= account.limit - sum(account.reserved.values()):
            return ThrottleReason.ACCOUNT
        account.in_use[function] = running + 1
        if reservation is None:
            account.unreserved_in_use += 1
        return Lease(account_id, function, reservation is not None)

    def release(self, lease: Lease) -> None:
        account = self._account(lease.account_id)
        remaining = account.in_use.get(lease.function, 0) - 1
        if remaining > 0:
            account.in_use[lease.function] = remaining
        else:
            account.in_use.pop(lease.function, None)
        if not lease.reserved:
            account.unreserved_in_use = max(0, account.unreserved_in_use - 1)
        self._wake_waiters()

    def _wake_waiters(self) -> None:
        """Let every wait_lease caller try again (a lease was released, a reservation changed)."""
        waiters, self._waiters = self._waiters, set()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    @contextmanager
    def lease_nowait(self, account_id: str, function: str) -> Iterator[Lease]:
        lease = self.acquire_nowait(account_id, function)
        try:
            yield lease
        finally:
            self.release(lease)

    async def wait_lease(self, account_id: str, function: str, recheck: float = 1.0) -> Lease:
        """Wait until the function may run (async invocations are queued, never dropped).

        Woken by every release and reservation change; also re-checks every `recheck` seconds.
        Waiting is not counted as throttling (the caller counted its first refusal).
        """
        while True:
            found = self._try_acquire(account_id, function)
            if isinstance(found, Lease):
                return found
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.add(waiter)
            with suppress(TimeoutError):
                await asyncio.wait_for(waiter, timeout=recheck)

    def admit_scale_out_nowait(self, account_id: str, function: str) -> None:
        """Take one token for a new execution environment, or raise the rate throttle."""
        now = self._clock()
        key = (account_id, function)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(float(self._burst), now)
        bucket.tokens = min(float(self._burst), bucket.tokens + (now - bucket.stamp) * self._rate)
        bucket.stamp = now
        if bucket.tokens < 1.0:
            account = self._account(account_id)
            account.throttled += 1
            reserved = function in account.reserved
            raise _throttled(ThrottleReason.RESERVED_RATE if reserved else ThrottleReason.RATE)
        bucket.tokens -= 1.0

    def forget_function(self, account_id: str, function: str) -> None:
        self.clear_reserved(account_id, function)
        self._buckets.pop((account_id, function), None)

    def account_ids(self) -> list[str]:
        """Accounts the limiter has seen (reservations or invocations)."""
        return sorted(self._accounts)

    def statistics(self, account_id: str) -> AccountStatistics:
        account = self._account(account_id)
        reserved = sum(account.reserved.values())
        return AccountStatistics(
            account_limit=account.limit,
            reserved_total=reserved,
            unreserved_limit=account.limit - reserved,
            in_use=sum(account.in_use.values()),
            unreserved_in_use=account.unreserved_in_use,
            throttled=account.throttled,
        )


def _throttled(reason: ThrottleReason) -> TooManyRequestsException:
    return TooManyRequestsException("Rate Exceeded.", reason.value, retry_after_seconds=1)
