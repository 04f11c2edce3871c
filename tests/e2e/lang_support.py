"""Helpers for the per-language black-box tests (test_lang_*.py, test_languages.py).

Each language's test functions return the same "echo" document, so that one set of checks
covers them all:

    {"event", "count", "pid", "awsRequestId", "functionName", "functionVersion",
     "invokedFunctionArn", "memoryLimitInMB", "remainingMs", "logGroupName", "logStreamName",
     "executionEnv"}

(``count`` is a static/module counter, ``executionEnv`` is ``AWS_EXECUTION_ENV`` or null.)
A language is skipped only when the server's status document (what `lambdad doctor` shows)
does not list its runtime.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.conftest import Server

ACCOUNT = "000000000000"
REGION = "us-east-1"
REQUEST_ID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
LOG_STREAM = r"\d{4}/\d{2}/\d{2}/\[\$LATEST\][0-9a-f]{32}"
# One event for every language: nesting, every JSON type, non-ASCII text.
EVENT: dict[str, Any] = {
    "message": "h\u00e9llo \u2603",
    "values": [1, 2.5, "x", True, None],
    "nested": {"k": "v", "empty": {}},
}

_status_cache: dict[str, dict[str, Any]] = {}


def status(server: Server) -> dict[str, Any]:
    """The server's status document, fetched once per server."""
    cached = _status_cache.get(server.endpoint)
    if cached is None:
        cached = _status_cache[server.endpoint] = server.status()
    return cached


def listed_runtimes(server: Server) -> dict[str, dict[str, Any]]:
    return {entry["runtime"]: entry for entry in status(server)["runtimes"]}


def require_runtimes(server: Server, *runtimes: str) -> None:
    """Skip unless the server lists every one of `runtimes` (with the reason why not)."""
    listed = listed_runtimes(server)
    missing = [r for r in runtimes if r not in listed]
    if missing:
        pytest.skip(
            f"GET /_lambdad/status does not list {', '.join(missing)}: its toolchain is not "
            "installed (or not built) on this host; see `lambdad doctor`"
        )


@dataclass
class Invocation:
    """One synchronous Invoke with LogType=Tail, decoded."""

    status: int
    function_error: str | None
    header_error: str | None  # the X-Amz-Function-Error header itself
    raw: bytes
    log: str
    headers: dict[str, str] = field(default_factory=dict)
    shape: Callable[[Any], Any] | None = None  # maps a successful document to the echo shape

    @property
    def document(self) -> Any:
        """The payload as JSON."""
        return json.loads(self.raw) if self.raw else None

    @property
    def body(self) -> Any:
        """The payload as JSON, in the shared echo shape when the invocation succeeded."""
        document = self.document
        if self.shape is None or self.function_error is not None:
            return document
        return self.shape(document)

    @property
    def request_id(self) -> str:
        match = re.search(rf"^START RequestId: ({REQUEST_ID}) Version: \$LATEST$", self.log, re.M)
        assert match, f"no START line in the tail:\n{self.log}"
        return match.group(1)

    @property
    def init_ms(self) -> float | None:
        match = re.search(r"^REPORT RequestId: .*\tInit Duration: (\d+\.\d\d) ms\t", self.log, re.M)
        return float(match.group(1)) if match else None

    def explain(self) -> str:
        return f"{self.function_error} {self.raw!r}\n{self.log}"


def invoke(
    lam: Any,
    name: str,
    event: Any = None,
    *,
    raw: bytes | None = None,
    shape: Callable[[Any], Any] | None = None,
) -> Invocation:
    payload = raw if raw is not None else json.dumps({} if event is None else event)
    response = lam.invoke(FunctionName=name, Payload=payload, LogType="Tail")
    headers = dict(response["ResponseMetadata"]["HTTPHeaders"])
    return Invocation(
        status=response["StatusCode"],
        function_error=response.get("FunctionError"),
        header_error=headers.get("x-amz-function-error"),
        raw=response["Payload"].read(),
        log=base64.b64decode(response["LogResult"]).decode(errors="replace"),
        headers=headers,
        shape=shape,
    )


def report_init(language: str, runtime: str, memory: int, inv: Invocation) -> float:
    """Print (and return) the Init Duration of an environment's first invocation."""
    init = inv.init_ms
    assert init is not None, f"a cold start without Init Duration:\n{inv.log}"
    print(f"\n[init] {language:<7} {runtime:<16} {memory:>5} MB  Init Duration: {init:8.2f} ms")
    return init


def check_echo(
    inv: Invocation,
    *,
    name: str,
    event: Any,
    memory: int | str,
    timeout: int,
    execution_env: str | None,
) -> dict[str, Any]:
    """The checks every language's echo shares; returns the echo document."""
    assert inv.status == 200, inv.explain()
    assert inv.function_error is None and inv.header_error is None, inv.explain()
    body = inv.body
    assert isinstance(body, dict), inv.explain()
    assert body["event"] == event
    assert re.fullmatch(REQUEST_ID, body["awsRequestId"])
    assert body["awsRequestId"] == inv.request_id  # the START line's request id
    assert f"END RequestId: {inv.request_id}" in inv.log
    assert body["functionName"] == name
    assert body["functionVersion"] == "$LATEST"
    assert body["invokedFunctionArn"] == f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"
    assert body["memoryLimitInMB"] == memory
    assert 0 < body["remainingMs"] <= timeout * 1000
    assert body["logGroupName"] == f"/aws/lambda/{name}"
    assert re.fullmatch(LOG_STREAM, body["logStreamName"])
    assert body["executionEnv"] == execution_env
    return dict(body)


def check_warm(
    lam: Any, name: str, first: dict[str, Any], shape: Callable[[Any], Any] | None = None
) -> Invocation:
    """Invoke again: the same process serves it, and its static counter went up by one."""
    inv = invoke(lam, name, {"second": True}, shape=shape)
    assert inv.function_error is None, inv.explain()
    assert inv.init_ms is None, f"the second invocation was a cold start:\n{inv.log}"
    body = inv.body
    assert body["count"] == first["count"] + 1
    assert body["pid"] == first["pid"]
    assert body["awsRequestId"] == inv.request_id != first["awsRequestId"]
    return inv


def check_unhandled(inv: Invocation) -> dict[str, Any]:
    """A function error as AWS returns it: 200 with X-Amz-Function-Error: Unhandled."""
    assert inv.status == 200, inv.explain()
    assert inv.function_error == "Unhandled", inv.explain()
    assert inv.header_error == "Unhandled"
    body = inv.body
    assert isinstance(body, dict), inv.explain()
    assert isinstance(body["errorMessage"], str)
    assert isinstance(body["errorType"], str)
    assert f"END RequestId: {inv.request_id}" in inv.log
    return dict(body)


def check_timeout(
    lam: Any, name: str, sleep_event: Any, shape: Callable[[Any], Any] | None = None
) -> None:
    """Timeout=1 and a handler that sleeps 3 s: Sandbox.Timedout, then a fresh environment."""
    warm = invoke(lam, name, {"warm": True}, shape=shape)
    assert warm.function_error is None, warm.explain()
    assert warm.body["count"] == 1
    timed_out = invoke(lam, name, sleep_event)
    request_id = timed_out.request_id
    check_unhandled(timed_out)
    assert timed_out.body == {
        "errorType": "Sandbox.Timedout",
        "errorMessage": f"RequestId: {request_id} Error: Task timed out after 1.00 seconds",
    }
    assert re.search(
        rf"^\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{{3}}Z {request_id} "
        r"Task timed out after 1\.00 seconds$",
        timed_out.log,
        re.M,
    ), timed_out.log
    assert re.search(r"^REPORT RequestId: .*\tStatus: timeout\t?$", timed_out.log, re.M)
    # the environment was killed: the next invocation gets a new one (its counter starts
    # again), and it works
    after = invoke(lam, name, {"after": True}, shape=shape)
    assert after.function_error is None, after.explain()
    assert after.init_ms is not None, after.log
    assert after.body["count"] == 1
