"""ConcurrencyLimiter: Lambda's admission control, per account.

- Account concurrency: at most `account_limit` invocations run at once per account.
- Reserved concurrency: a function with a reservation R runs at most R at once, and those R are
  carved out of the account's pool; every other function shares what is left (the
  *unreserved* pool), which never drops below `min_unreserved`.
- Provisioned concurrency: a function's provisioned environments hold capacity whether busy or
  not. With a reservation R and provisioned total P, on-demand invocations of the function get
  R - P (P == R throttles $LATEST entirely, as on AWS); without one, P is carved out of the
  unreserved pool like a reservation. Invocations that run on a provisioned environment take a
  provisioned lease: counted, never throttled (the environments themselves bound them).
- Scaling rate: each function adds at most `burst` new execution environments per
  `burst_window` seconds (a token bucket refilled continuously).

Admission is a lease: ``with limiter.lease_nowait(account, function):`` — released on exit
whatever happens (errors, timeouts, crashes). ``*_nowait`` calls raise
TooManyRequestsException with AWS's Reason instead of waiting; ``try_lease`` answers None, and
``changed`` waits for capacity to come back (async invocations are never dropped for lack of
capacity: the AsyncQueue asks again then).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, suppress
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple

from lambdad.errors import (
    InvalidParameterValueException,
    TooManyRequestsException,
    UntypedInvalidParameterValueException,
)

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
    in_use: int  # all running invocations of the account (provisioned ones included)
    unreserved_in_use: int
    throttled: int
    provisioned_total: int = 0  # provisioned concurrency of every function
    provisioned_in_use: int = 0  # invocations running on provisioned environments


@dataclass
class _Account:
    limit: int
    # function name -> reserved concurrency
    reserved: dict[str, int] = field(default_factory=dict)
    # function name -> provisioned concurrency over all its versions and aliases
    provisioned: dict[str, int] = field(default_factory=dict)
    # function name -> running on-demand invocations
    in_use: dict[str, int] = field(default_factory=dict)
    # function name -> invocations running on provisioned environments
    provisioned_in_use: dict[str, int] = field(default_factory=dict)
    unreserved_in_use: int = 0
    throttled: int = 0

    def carved_out(self, excluding: str | None = None) -> int:
        """Capacity taken from the unreserved pool: reservations, and the provisioned
        concurrency of functions without one."""
        if not self.provisioned and excluding is None:  # every on-demand admission asks this
            return sum(self.reserved.values())
        reserved = sum(v for f, v in self.reserved.items() if f != excluding)
        provisioned = sum(
            v for f, v in self.provisioned.items() if f != excluding and f not in self.reserved
        )
        return reserved + provisioned


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class Lease(NamedTuple):
    account_id: str
    function: str
    reserved: bool
    provisioned: bool = False  # runs on a provisioned environment (not throttled, not pooled)


class _Leased:
    """``with`` block of a lease: taken on entry, released on exit whatever happens (a class,
    not a generator: one is entered per invocation)."""

    __slots__ = ("_key", "_lease", "_release", "_take")

    def __init__(
        self,
        take: Callable[[str, str], Lease],
        release: Callable[[Lease], None],
        key: tuple[str, str],  # (account id, function name)
    ) -> None:
        self._take, self._release, self._key = take, release, key

    def __enter__(self) -> Lease:
        self._lease = self._take(*self._key)
        return self._lease

    def __exit__(self, *exc_info: object) -> None:
        self._release(self._lease)


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
        # futures of `changed` callers, woken when any lease is released
        self._waiters: set[asyncio.Future[None]] = set()

    def _account(self, account_id: str) -> _Account:
        account = self._accounts.get(account_id)
        if account is None:
            account = self._accounts[account_id] = _Account(self.account_limit)
        return account

    # reservations ---------------------------------------------------------------------------
    def set_reserved(self, account_id: str, function: str, value: int) -> None:
        """Reserve concurrency for a function, refusing reservations AWS refuses.

        AWS refuses a reservation below the function's provisioned concurrency, and one that
        breaks the unreserved floor (reserving more than the whole account too, recorded).
        """
        account = self._account(account_id)
        provisioned = account.provisioned.get(function, 0)
        if value < provisioned:
            raise UntypedInvalidParameterValueException(
                f" ReservedConcurrentExecutions  {value} should not be lower than function's "
                f"total provisioned concurrency [{provisioned}]."
            )
        if account.limit - account.carved_out(excluding=function) - value < self.min_unreserved:
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
        return account.limit - account.carved_out()

    # provisioned concurrency ------------------------------------------------------------------
    def set_provisioned(self, account_id: str, function: str, total: int) -> None:
        """Give a function `total` provisioned concurrency (over all its versions and aliases),
        refusing what AWS refuses: more than its reservation, or (without one) more than the
        unreserved pool can give while keeping its floor."""
        account = self._account(account_id)
        reservation = account.reserved.get(function)
        if reservation is not None:
            if total > reservation:
                raise InvalidParameterValueException(
                    "Requested Provisioned Concurrency should not be greater than the "
                    "reservedConcurrentExecution for function"
                )
        elif total > account.provisioned.get(function, 0):
            unreserved = account.limit - account.carved_out(excluding=function)
            if total > unreserved:
                raise UntypedInvalidParameterValueException(
                    "Specified ConcurrentExecutions for function is greater than account's "
                    f"unreserved concurrency [{unreserved}]."
                )
            if unreserved - total < self.min_unreserved:
                raise UntypedInvalidParameterValueException(
                    "Specified ConcurrentExecutions for function decreases account's "
                    "UnreservedConcurrentExecution below its minimum value of "
                    f"[{self.min_unreserved}]."
                )
        self.restore_provisioned(account_id, function, total)

    def restore_provisioned(self, account_id: str, function: str, total: int) -> None:
        """Reinstate provisioned concurrency accepted earlier, without checking it again."""
        account = self._account(account_id)
        if total > 0:
            account.provisioned[function] = total
        else:
            account.provisioned.pop(function, None)
        self._wake_waiters()

    def provisioned(self, account_id: str, function: str) -> int:
        return self._account(account_id).provisioned.get(function, 0)

    # admission ------------------------------------------------------------------------------
    def acquire_nowait(self, account_id: str, function: str) -> Lease:
        found = self._try_acquire(account_id, function)
        if isinstance(found, Lease):
            return found
        self._account(account_id).throttled += 1
        raise _throttled(found)

    def try_lease(self, account_id: str, function: str, *, count_throttle: bool) -> Lease | None:
        """An on-demand lease, or None where acquire_nowait would throttle (counted as a
        throttle only with `count_throttle`: a waiting event counts its first refusal)."""
        found = self._try_acquire(account_id, function)
        if isinstance(found, Lease):
            return found
        if count_throttle:
            self._account(account_id).throttled += 1
        return None

    def _try_acquire(self, account_id: str, function: str) -> Lease | ThrottleReason:
        """A lease, or why there is none (not counted as a throttle)."""
        account = self._account(account_id)
        running = account.in_use.get(function, 0)
        reservation = account.reserved.get(function)
        if reservation is not None:
            if running >= reservation - account.provisioned.get(function, 0):
                return ThrottleReason.RESERVED
        elif account.unreserved_in_use >= account.limit - account.carved_out():
            return ThrottleReason.ACCOUNT
        account.in_use[function] = running + 1
        if reservation is None:
            account.unreserved_in_use += 1
        return Lease(account_id, function, reservation is not None)

    def release(self, lease: Lease) -> None:
        account = self._account(lease.account_id)
        counts = account.provisioned_in_use if lease.provisioned else account.in_use
        remaining = counts.get(lease.function, 0) - 1
        if remaining > 0:
            counts[lease.function] = remaining
        else:
            counts.pop(lease.function, None)
        if not lease.reserved and not lease.provisioned:
            account.unreserved_in_use = max(0, account.unreserved_in_use - 1)
        self._wake_waiters()

    def _wake_waiters(self) -> None:
        """Let every `changed` caller try again (a lease was released, a reservation changed)."""
        if not self._waiters:  # every release asks
            return
        waiters, self._waiters = self._waiters, set()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def lease_nowait(self, account_id: str, function: str) -> AbstractContextManager[Lease]:
        return _Leased(self.acquire_nowait, self.release, (account_id, function))

    def provisioned_lease(self, account_id: str, function: str) -> AbstractContextManager[Lease]:
        """Count an invocation that runs on a provisioned environment (never refused: the
        capacity was set aside when the provisioned concurrency was configured)."""
        return _Leased(self.acquire_provisioned, self.release, (account_id, function))

    def acquire_provisioned(self, account_id: str, function: str) -> Lease:
        """The lease of an invocation that runs on a provisioned environment it claimed (see
        provisioned_lease); release it like any other."""
        account = self._account(account_id)
        account.provisioned_in_use[function] = account.provisioned_in_use.get(function, 0) + 1
        return Lease(account_id, function, function in account.reserved, provisioned=True)

    async def changed(self, recheck: float = 1.0) -> None:
        """Return at the next release of any lease (provisioned ones included) or change of a
        reservation, or after `recheck` seconds (what else frees capacity: a provisioned
        environment made ready, a clock-driven refill)."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.add(waiter)
        try:
            with suppress(TimeoutError):
                await asyncio.wait_for(waiter, timeout=recheck)
        finally:
            self._waiters.discard(waiter)

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
        self._account(account_id).provisioned.pop(function, None)
        self.clear_reserved(account_id, function)
        self._buckets.pop((account_id, function), None)

    def account_ids(self) -> list[str]:
        """Accounts the limiter has seen (reservations or invocations)."""
        return sorted(self._accounts)

    def statistics(self, account_id: str) -> AccountStatistics:
        account = self._account(account_id)
        provisioned_in_use = sum(account.provisioned_in_use.values())
        return AccountStatistics(
            account_limit=account.limit,
            reserved_total=sum(account.reserved.values()),
            unreserved_limit=account.limit - account.carved_out(),
            in_use=sum(account.in_use.values()) + provisioned_in_use,
            unreserved_in_use=account.unreserved_in_use,
            throttled=account.throttled,
            provisioned_total=sum(account.provisioned.values()),
            provisioned_in_use=provisioned_in_use,
        )


def _throttled(reason: ThrottleReason) -> TooManyRequestsException:
    return TooManyRequestsException("Rate Exceeded.", reason.value, retry_after_seconds=1)
