"""Reserved concurrency, account concurrency and the scaling rate, through boto3.

Throttles are AWS's: 429 TooManyRequestsException with a `Reason`, "Rate Exceeded." and a
Retry-After header. The account-wide limits are tested on dedicated servers with small limits
(`--account-concurrency`, `--min-unreserved`, `--burst`).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.conftest import (
    Server,
    create_function,
    logged,
    module_server,
    start_server,
    unique_name,
    wait_for,
)

ACCOUNT = "000000000000"
RESERVED = "ReservedFunctionConcurrentInvocationLimitExceeded"
ACCOUNT_LIMIT = "ConcurrentInvocationLimitExceeded"
RATE = "FunctionInvocationRateLimitExceeded"
UNQUALIFIED_ONLY = (
    "This operation is permitted on Lambda functions only. Aliases and versions do not support "
    "this operation. Please specify either a function name or an unqualified function ARN."
)
SLEEPER = {
    "app.py": (
        "import time\n\n"
        "def handler(event, context):\n"
        "    time.sleep(event.get('sleep', 0))\n"
        "    print(f\"ran {event.get('token')}\")\n"
        "    return 'ok'\n"
    )
}


def arn(name: str, qualifier: str | None = None) -> str:
    base = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:{name}"
    return f"{base}:{qualifier}" if qualifier else base


def floor_message(minimum: int) -> str:
    return (
        "Specified ReservedConcurrentExecutions for function decreases account's "
        f"UnreservedConcurrentExecution below its minimum value of [{minimum}]."
    )


def failure(call: Callable[..., Any], **kwargs: Any) -> dict[str, Any]:
    """The error response of a call that must fail."""
    with pytest.raises(ClientError) as info:
        call(**kwargs)
    response: dict[str, Any] = info.value.response
    return response


def outcome(lam: Any, name: str, **kwargs: Any) -> str:
    """'ok' for a successful invocation, else the throttle's Reason (checking its shape)."""
    try:
        response = lam.invoke(FunctionName=name, **kwargs)
    except ClientError as error:
        response = error.response
        assert response["Error"]["Code"] == "TooManyRequestsException", response
        assert response["ResponseMetadata"]["HTTPStatusCode"] == 429
        assert response["Error"]["Message"] == response["message"] == "Rate Exceeded."
        assert response["Type"] == "User"
        assert response["ResponseMetadata"]["HTTPHeaders"]["retry-after"] == "1"
        reason: str = response["Reason"]
        return reason
    assert response["StatusCode"] == 200
    assert response["Payload"].read() == b'"ok"'
    return "ok"


def together(lam: Any, calls: list[dict[str, Any]]) -> list[str]:
    """Start the invocations at the same moment; their outcomes, in order."""
    barrier = threading.Barrier(len(calls))

    def run(kwargs: dict[str, Any]) -> str:
        barrier.wait()
        return outcome(lam, **kwargs)

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def sleeping(name: str, seconds: float, **kwargs: Any) -> dict[str, Any]:
    return {"name": name, "Payload": json.dumps({"sleep": seconds}), **kwargs}


@pytest.fixture
def sleeper(lam: Any) -> Iterator[str]:
    name = create_function(lam, SLEEPER, Timeout=30)
    yield name
    lam.delete_function(FunctionName=name)


class TestReservedConcurrencyApi:
    def test_put_get_delete(self, lam: Any, sleeper: str) -> None:
        assert lam.get_function_concurrency(FunctionName=sleeper).keys() == {"ResponseMetadata"}
        assert "Concurrency" not in lam.get_function(FunctionName=sleeper)
        put = lam.put_function_concurrency(FunctionName=sleeper, ReservedConcurrentExecutions=0)
        assert put["ReservedConcurrentExecutions"] == 0
        put = lam.put_function_concurrency(FunctionName=sleeper, ReservedConcurrentExecutions=3)
        assert (put["ResponseMetadata"]["HTTPStatusCode"], put["ReservedConcurrentExecutions"]) == (
            200,
            3,
        )
        got = lam.get_function_concurrency(FunctionName=arn(sleeper))
        assert got["ReservedConcurrentExecutions"] == 3
        function = lam.get_function(FunctionName=sleeper)
        assert function["Concurrency"] == {"ReservedConcurrentExecutions": 3}
        # The reservation is the function's: its versions show it too.
        lam.publish_version(FunctionName=sleeper)
        versioned = lam.get_function(FunctionName=sleeper, Qualifier="1")
        assert versioned["Concurrency"] == {"ReservedConcurrentExecutions": 3}
        deleted = lam.delete_function_concurrency(FunctionName=sleeper)
        assert deleted["ResponseMetadata"]["HTTPStatusCode"] == 204
        assert lam.get_function_concurrency(FunctionName=sleeper).keys() == {"ResponseMetadata"}
        assert "Concurrency" not in lam.get_function(FunctionName=sleeper)

    def test_refusals(self, server: Server, lam: Any, sleeper: str) -> None:
        missing = unique_name("missing")
        response = failure(
            lam.put_function_concurrency, FunctionName=missing, ReservedConcurrentExecutions=1
        )
        # Put names $LATEST, Get names the bare function (recorded).
        assert response["Message"] == f"Function not found: {arn(missing, '$LATEST')}"
        response = failure(lam.get_function_concurrency, FunctionName=missing)
        assert response["Message"] == f"Function not found: {arn(missing)}"
        assert response["ResponseMetadata"]["HTTPStatusCode"] == 404
        response = failure(
            lam.put_function_concurrency,
            FunctionName=arn(sleeper, "$LATEST"),
            ReservedConcurrentExecutions=0,
        )
        assert (response["Error"]["Code"], response["message"], response["Type"]) == (
            "InvalidParameterValueException",
            UNQUALIFIED_ONLY,
            "User",
        )
        loose = server.client(parameter_validation=False)
        response = failure(
            loose.put_function_concurrency, FunctionName=sleeper, ReservedConcurrentExecutions=-1
        )
        assert response["Error"] == {
            "Code": "ValidationException",
            "Message": "1 validation error detected: Value '-1' at 'reservedConcurrentExecutions' "
            "failed to satisfy constraint: Member must have value greater than or equal to 0",
        }
        unreserved = lam.get_account_settings()["AccountLimit"]["UnreservedConcurrentExecutions"]
        response = failure(
            lam.put_function_concurrency,
            FunctionName=sleeper,
            ReservedConcurrentExecutions=unreserved - 99,
        )
        assert (response["Error"]["Message"], response["message"]) == (floor_message(100),) * 2
        assert "Type" not in response  # as AWS sends it (recorded)
        assert lam.get_function_concurrency(FunctionName=sleeper).keys() == {"ResponseMetadata"}

    def test_account_settings_follow_reservations(self, lam: Any, sleeper: str) -> None:
        limits = lam.get_account_settings()["AccountLimit"]
        assert limits["ConcurrentExecutions"] == 1000
        before = limits["UnreservedConcurrentExecutions"]
        lam.put_function_concurrency(FunctionName=sleeper, ReservedConcurrentExecutions=7)
        after = lam.get_account_settings()["AccountLimit"]["UnreservedConcurrentExecutions"]
        assert after == before - 7
        lam.put_function_concurrency(FunctionName=sleeper, ReservedConcurrentExecutions=2)
        after = lam.get_account_settings()["AccountLimit"]["UnreservedConcurrentExecutions"]
        assert after == before - 2
        lam.delete_function_concurrency(FunctionName=sleeper)
        after = lam.get_account_settings()["AccountLimit"]["UnreservedConcurrentExecutions"]
        assert after == before


class TestThrottling:
    def test_reservation_bounds_parallel_invocations(self, lam: Any, sleeper: str) -> None:
        lam.put_function_concurrency(FunctionName=sleeper, ReservedConcurrentExecutions=2)
        # 3 s: on a loaded machine one of the four calls reached lambdad after a 1 s sleep ended
        outcomes = together(lam, [sleeping(sleeper, 3.0) for _ in range(4)])
        assert Counter(outcomes) == {"ok": 2, RESERVED: 2}
        # Leases are released when invocations end: the capacity is back.
        assert together(lam, [sleeping(sleeper, 0.2) for _ in range(2)]) == ["ok", "ok"]

    def test_reservation_counts_every_version(self, lam: Any, sleeper: str) -> None:
        lam.publish_version(FunctionName=sleeper)
        lam.create_alias(FunctionName=sleeper, Name="live", FunctionVersion="1")
        lam.put_function_concurrency(FunctionName=sleeper, ReservedConcurrentExecutions=2)
        busy = together(
            lam,
            [sleeping(sleeper, 1.5, Qualifier="1"), sleeping(sleeper, 1.5, Qualifier="$LATEST")],
        )
        assert busy == ["ok", "ok"]
        calls = [
            sleeping(sleeper, 1.5, Qualifier="1"),
            sleeping(sleeper, 1.5),
            sleeping(sleeper, 1.5, Qualifier="live"),
        ]
        assert Counter(together(lam, calls)) == {"ok": 2, RESERVED: 1}

    def test_zero_reservation_throttles_everything(self, lam: Any, sleeper: str) -> None:
        lam.put_function_concurrency(FunctionName=sleeper, ReservedConcurrentExecutions=0)
        for _ in range(3):
            assert outcome(lam, sleeper) == RESERVED
        dry = lam.invoke(FunctionName=sleeper, InvocationType="DryRun")
        assert dry["StatusCode"] == 204
        lam.delete_function_concurrency(FunctionName=sleeper)
        assert outcome(lam, sleeper) == "ok"

    def test_throttled_event_runs_once_capacity_returns(
        self, server: Server, lam: Any, sleeper: str
    ) -> None:
        logs = server.client("logs")
        lam.put_function_concurrency(FunctionName=sleeper, ReservedConcurrentExecutions=0)
        token = uuid.uuid4().hex
        payload = json.dumps({"token": token})
        response = lam.invoke(FunctionName=sleeper, InvocationType="Event", Payload=payload)
        assert response["StatusCode"] == 202
        time.sleep(1.5)
        assert logged(logs, sleeper, token) == [], "ran despite a reservation of 0"
        lam.delete_function_concurrency(FunctionName=sleeper)
        assert wait_for(lambda: logged(logs, sleeper, token) == [f"ran {token}"])


# A server whose account runs 20 at once, 5 of them never reservable.
small = module_server("small", "--account-concurrency", "20", "--min-unreserved", "5")


class TestAccountLimits:
    def test_reservations_keep_the_unreserved_floor(self, small: Server) -> None:
        lam = small.client()
        names = [create_function(lam, SLEEPER) for _ in range(2)]
        limits = lam.get_account_settings()["AccountLimit"]
        assert (limits["ConcurrentExecutions"], limits["UnreservedConcurrentExecutions"]) == (
            20,
            20,
        )
        for too_many in (16, 21):
            response = failure(
                lam.put_function_concurrency,
                FunctionName=names[0],
                ReservedConcurrentExecutions=too_many,
            )
            assert response["message"] == floor_message(5)
        lam.put_function_concurrency(FunctionName=names[0], ReservedConcurrentExecutions=10)
        response = failure(
            lam.put_function_concurrency, FunctionName=names[1], ReservedConcurrentExecutions=6
        )
        assert response["message"] == floor_message(5)
        lam.put_function_concurrency(FunctionName=names[1], ReservedConcurrentExecutions=5)
        limits = lam.get_account_settings()["AccountLimit"]
        assert (limits["ConcurrentExecutions"], limits["UnreservedConcurrentExecutions"]) == (20, 5)
        lam.put_function_concurrency(FunctionName=names[0], ReservedConcurrentExecutions=1)
        limits = lam.get_account_settings()["AccountLimit"]
        assert limits["UnreservedConcurrentExecutions"] == 14
        lam.delete_function(FunctionName=names[1])  # its reservation goes with it
        limits = lam.get_account_settings()["AccountLimit"]
        assert limits["UnreservedConcurrentExecutions"] == 19
        lam.delete_function(FunctionName=names[0])

    def test_unreserved_functions_share_what_is_left(self, small: Server) -> None:
        lam = small.client()
        reserved, shared = (create_function(lam, SLEEPER, Timeout=30) for _ in range(2))
        lam.put_function_concurrency(FunctionName=reserved, ReservedConcurrentExecutions=15)
        outcomes = together(lam, [sleeping(shared, 1.5) for _ in range(6)])
        assert Counter(outcomes) == {"ok": 5, ACCOUNT_LIMIT: 1}
        # The reserved function keeps its own capacity while the others are busy.
        calls = [sleeping(shared, 1.5) for _ in range(5)] + [sleeping(reserved, 0.5)]
        outcomes = together(lam, calls)
        assert outcomes == ["ok"] * 6
        stats = small.status()["concurrency"][ACCOUNT]
        assert (stats["account_limit"], stats["reserved_total"]) == (20, 15)
        assert stats["throttled"] >= 1 and stats["in_use"] == 0
        for name in (reserved, shared):
            lam.delete_function(FunctionName=name)


def test_scaling_rate_throttles_new_environments(tmp_path: Path) -> None:
    server = start_server(tmp_path / "data", "--burst", "2", "--burst-window", "600")
    try:
        lam = server.client()
        name = create_function(lam, SLEEPER, Timeout=30)
        outcomes = together(lam, [sleeping(name, 1.5) for _ in range(3)])
        assert Counter(outcomes) == {"ok": 2, RATE: 1}
        # Warm environments need no new token.
        assert together(lam, [sleeping(name, 0.1) for _ in range(2)]) == ["ok", "ok"]
        lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=5)
        outcomes = together(lam, [sleeping(name, 1.0) for _ in range(3)])
        assert Counter(outcomes) == {"ok": 2, "ReservedFunctionInvocationRateLimitExceeded": 1}
    finally:
        server.stop()
