"""Staged environments through the real clients: a function's next cold start built ahead
(sandbox, code, variables, the handler's module read) while its init still runs for the
invocation that takes it."""

from __future__ import annotations

import base64
import json
import re
import time
from typing import Any

from tests.conftest import Server, create_function, module_server, wait_for

PROBE = """
import os, time
IMPORTED_AT = time.time()
def handler(event, context):
    return {
        "imported_at": IMPORTED_AT,
        "initialization_type": os.environ.get("AWS_LAMBDA_INITIALIZATION_TYPE"),
        "variables": sorted(k for k in os.environ if k.startswith("LAMBDAD")),
        "colour": os.environ.get("COLOUR"),
        "key": os.environ.get("AWS_ACCESS_KEY_ID"),
    }
"""


def pool_of(server: Server, name: str) -> dict[str, Any]:
    found = [p for key, p in server.status()["pools"].items() if f":{name}:" in key]
    return found[0] if found else {}


def staged(server: Server, name: str) -> bool:
    return bool(pool_of(server, name).get("staged"))


def invoke(lam: Any, name: str) -> tuple[dict[str, Any], str]:
    response = lam.invoke(FunctionName=name, LogType="Tail")
    assert "FunctionError" not in response, response["Payload"].read()
    return json.loads(response["Payload"].read()), base64.b64decode(response["LogResult"]).decode()


def check_a_deployed_function_takes_its_staged_environment(
    server: Server, lam: Any, files: dict[str, str], **create: Any
) -> dict[str, Any]:
    """Deploy `files` (a handler that returns `imported_at`: the epoch seconds its module was
    loaded at) and check its first invocation ran in the environment staged at deploy, with
    the function's init run for that invocation and counted from it; the handler's answer."""
    name = create_function(lam, files, **create)
    assert wait_for(lambda: staged(server, name), 30)
    time.sleep(0.3)
    sent = time.time()
    started = time.monotonic()
    body, log = invoke(lam, name)
    round_trip_ms = (time.monotonic() - started) * 1000
    assert body["imported_at"] >= sent  # the function's init ran for this invocation
    assert log.startswith("INIT_START Runtime Version: ")
    init = re.search(r"Init Duration: ([0-9.]+) ms", log)
    assert init is not None and float(init.group(1)) <= round_trip_ms  # from its arrival
    pool = pool_of(server, name)
    assert (pool["cold_starts"], pool["staged_starts"]) == (1, 1)
    streams = server.client("logs").describe_log_streams(logGroupName=f"/aws/lambda/{name}")
    assert len(streams["logStreams"]) == 1  # only the environment that worked has one
    return body


def test_a_deployed_functions_first_cold_start_takes_its_staged_environment(
    server: Server, lam: Any
) -> None:
    body = check_a_deployed_function_takes_its_staged_environment(server, lam, {"app.py": PROBE})
    assert body["initialization_type"] == "on-demand"
    assert body["variables"] == []  # nothing of lambdad's own reaches the function


def test_a_changed_configuration_restages_with_it(server: Server, lam: Any) -> None:
    name = create_function(lam, {"app.py": PROBE}, Environment={"Variables": {"COLOUR": "red"}})
    assert wait_for(lambda: staged(server, name), 10)
    lam.update_function_configuration(
        FunctionName=name, Environment={"Variables": {"COLOUR": "blue"}}
    )
    lam.get_waiter("function_updated_v2").wait(FunctionName=name)
    assert wait_for(lambda: staged(server, name), 10)
    body, _ = invoke(lam, name)
    assert body["colour"] == "blue"
    assert pool_of(server, name)["staged_starts"] == 1


def test_a_function_scaling_out_has_its_next_environment_staged(server: Server, lam: Any) -> None:
    sleeper = "import time\ndef handler(event, context):\n    time.sleep(event['s'])\n"
    name = create_function(lam, {"app.py": sleeper})
    assert wait_for(lambda: staged(server, name), 10)
    lam.invoke(FunctionName=name, Payload=b'{"s": 0}')  # takes the staged one: one environment
    time.sleep(0.2)
    assert not staged(server, name)
    lam.invoke(FunctionName=name, Payload=b'{"s": 1}', InvocationType="Event")
    assert wait_for(lambda: pool_of(server, name).get("busy") == 1, 10)
    lam.invoke(FunctionName=name, Payload=b'{"s": 0}')  # a second environment: scaling out
    assert wait_for(lambda: staged(server, name), 10)


def test_each_environment_has_its_own_credentials(server: Server, lam: Any) -> None:
    name = create_function(lam, {"app.py": PROBE})
    assert wait_for(lambda: staged(server, name), 10)
    summary = server.status()["staged"]
    assert summary["waiting"] >= 1 and summary["memory_bytes"] > 0
    assert (summary["max_waiting"], summary["max_memory_bytes"]) == (64, 512 << 20)
    first, _ = invoke(lam, name)
    lam.update_function_configuration(FunctionName=name, Timeout=5)
    lam.get_waiter("function_updated_v2").wait(FunctionName=name)
    assert wait_for(lambda: staged(server, name), 10)
    second, _ = invoke(lam, name)
    assert first["key"] and second["key"] and first["key"] != second["key"]


without_staging = module_server("unstaged", "--staged", "0")


def test_staging_can_be_switched_off(without_staging: Server) -> None:
    lam = without_staging.client()
    name = create_function(lam, {"app.py": PROBE})
    time.sleep(0.5)
    assert not staged(without_staging, name)
    assert without_staging.status()["staged"] == {
        "waiting": 0,
        "memory_bytes": 0,
        "max_waiting": 0,
        "max_memory_bytes": 0,
    }
    _, log = invoke(lam, name)
    assert log.startswith("INIT_START")
    pool = pool_of(without_staging, name)
    assert (pool["cold_starts"], pool["staged_starts"], pool["staged"]) == (1, 0, 0)


plain = module_server("staged-plain", "--isolation", "process")


def test_the_process_backend_stages_python_too(plain: Server) -> None:
    # No connection is made ahead there: the bootstrap waits on GET /runtime/lambdad/wait.
    lam = plain.client()
    body = check_a_deployed_function_takes_its_staged_environment(plain, lam, {"app.py": PROBE})
    assert body["variables"] == []
