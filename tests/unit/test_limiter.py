"""ConcurrencyLimiter: account, reserved and burst admission with AWS's reasons."""

from __future__ import annotations

import asyncio

import pytest

from lambdad.errors import InvalidParameterValueException, TooManyRequestsException
from lambdad.scheduler.limiter import ConcurrencyLimiter

ACCOUNT = "000000000000"


def reason(limiter: ConcurrencyLimiter, function: str) -> str:
    with pytest.raises(TooManyRequestsException) as caught:
        limiter.acquire_nowait(ACCOUNT, function)
    assert caught.value.status == 429 and caught.value.message == "Rate Exceeded."
    assert caught.value.headers()["Retry-After"] == "1"
    return caught.value.reason


def test_account_limit_throttles_and_leases_are_released() -> None:
    limiter = ConcurrencyLimiter(account_limit=3, min_unreserved=1)
    leases = [limiter.acquire_nowait(ACCOUNT, f"f{i}") for i in range(3)]
    assert reason(limiter, "other") == "ConcurrentInvocationLimitExceeded"
    limiter.release(leases[0])
    limiter.release(limiter.acquire_nowait(ACCOUNT, "other"))
    assert limiter.statistics(ACCOUNT).in_use == 2


def test_lease_context_releases_on_error() -> None:
    limiter = ConcurrencyLimiter(account_limit=1, min_unreserved=0)
    with pytest.raises(RuntimeError), limiter.lease_nowait(ACCOUNT, "f"):
        raise RuntimeError("crash")
    assert limiter.statistics(ACCOUNT).in_use == 0


def test_reserved_concurrency_is_carved_out_and_enforced() -> None:
    limiter = ConcurrencyLimiter(account_limit=10, min_unreserved=2)
    limiter.set_reserved(ACCOUNT, "r", 3)
    assert limiter.unreserved_limit(ACCOUNT) == 7
    held = [limiter.acquire_nowait(ACCOUNT, "r") for _ in range(3)]
    assert reason(limiter, "r") == "ReservedFunctionConcurrentInvocationLimitExceeded"
    others = [limiter.acquire_nowait(ACCOUNT, f"u{i}") for i in range(7)]
    assert reason(limiter, "u") == "ConcurrentInvocationLimitExceeded"
    for lease in held + others:
        limiter.release(lease)
    limiter.set_reserved(ACCOUNT, "zero", 0)
    assert reason(limiter, "zero") == "ReservedFunctionConcurrentInvocationLimitExceeded"


def test_reservations_keep_the_unreserved_floor() -> None:
    limiter = ConcurrencyLimiter(account_limit=1000, min_unreserved=100)
    limiter.set_reserved(ACCOUNT, "a", 900)
    with pytest.raises(InvalidParameterValueException, match=r"minimum value of \[100\]"):
        limiter.set_reserved(ACCOUNT, "b", 1)
    # AWS checks the floor first, also for more than the whole account (recorded).
    with pytest.raises(InvalidParameterValueException, match=r"minimum value of \[100\]"):
        limiter.set_reserved(ACCOUNT, "b", 1001)
    limiter.set_reserved(ACCOUNT, "a", 899)
    limiter.set_reserved(ACCOUNT, "b", 1)
    limiter.clear_reserved(ACCOUNT, "a")
    assert limiter.statistics(ACCOUNT).unreserved_limit == 999


def test_without_a_floor_the_whole_account_can_be_reserved() -> None:
    limiter = ConcurrencyLimiter(account_limit=10, min_unreserved=0)
    limiter.set_reserved(ACCOUNT, "a", 4)
    with pytest.raises(InvalidParameterValueException, match=r"minimum value of \[0\]"):
        limiter.set_reserved(ACCOUNT, "b", 7)
    limiter.set_reserved(ACCOUNT, "b", 6)
    assert limiter.unreserved_limit(ACCOUNT) == 0
    assert reason(limiter, "c") == "ConcurrentInvocationLimitExceeded"


def test_refusals_carry_no_type_as_on_aws() -> None:
    limiter = ConcurrencyLimiter(account_limit=10, min_unreserved=5)
    with pytest.raises(InvalidParameterValueException) as caught:
        limiter.set_reserved(ACCOUNT, "a", 6)
    assert caught.value.body() == {"message": caught.value.message}


def test_accounts_are_independent() -> None:
    limiter = ConcurrencyLimiter(account_limit=1, min_unreserved=0)
    limiter.acquire_nowait(ACCOUNT, "f")
    limiter.acquire_nowait("111111111111", "f")


def test_burst_rate_refills_over_time() -> None:
    now = [0.0]
    limiter = ConcurrencyLimiter(burst=10, burst_window=10.0, clock=lambda: now[0])
    for _ in range(10):
        limiter.admit_scale_out_nowait(ACCOUNT, "f")
    with pytest.raises(TooManyRequestsException) as caught:
        limiter.admit_scale_out_nowait(ACCOUNT, "f")
    assert caught.value.reason == "FunctionInvocationRateLimitExceeded"
    now[0] = 1.0  # one token back per second at 10 per 10 s
    limiter.admit_scale_out_nowait(ACCOUNT, "f")
    limiter.admit_scale_out_nowait(ACCOUNT, "g")  # per function


async def test_changed_returns_at_a_release() -> None:
    """What a throttled event waits for before it asks again (AsyncQueue)."""
    limiter = ConcurrencyLimiter(account_limit=1, min_unreserved=0)
    held = limiter.acquire_nowait(ACCOUNT, "f")
    assert limiter.try_lease(ACCOUNT, "f", count_throttle=False) is None
    assert limiter.statistics(ACCOUNT).throttled == 0  # asking again is not a throttle
    waiter = asyncio.ensure_future(limiter.changed(recheck=60))
    await asyncio.sleep(0.01)
    assert not waiter.done()
    limiter.release(held)
    await asyncio.wait_for(waiter, timeout=2)
    lease = limiter.try_lease(ACCOUNT, "f", count_throttle=True)
    assert lease is not None and lease.function == "f"


async def test_changed_returns_when_a_reservation_is_lifted() -> None:
    limiter = ConcurrencyLimiter(account_limit=10, min_unreserved=0)
    limiter.set_reserved(ACCOUNT, "f", 0)
    assert limiter.try_lease(ACCOUNT, "f", count_throttle=True) is None
    assert limiter.statistics(ACCOUNT).throttled == 1
    waiter = asyncio.ensure_future(limiter.changed(recheck=60))
    await asyncio.sleep(0.01)
    assert not waiter.done()
    limiter.clear_reserved(ACCOUNT, "f")
    await asyncio.wait_for(waiter, timeout=2)
    lease = limiter.try_lease(ACCOUNT, "f", count_throttle=True)
    assert lease is not None and not lease.reserved
    assert not limiter._waiters  # a waiter that returned leaves nothing behind
