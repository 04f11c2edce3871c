"""Function logs through boto3's CloudWatch Logs client against the same `lambdad serve`."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest

from tests.conftest import Server, create_function, wait_for

REQUEST_ID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
STREAM = r"\d{4}/\d{2}/\d{2}/\[\$LATEST\][0-9a-f]{32}"

CODE = """
import os, sys
def handler(event, context):
    print(f"hello logs {event.get('n')}")
    print("needle on stderr", file=sys.stderr)
    if event.get("exit"):
        os._exit(1)
    return {"request_id": context.aws_request_id, "stream": context.log_stream_name}
"""


@pytest.fixture(scope="module")
def logs(server: Server) -> Any:
    return server.client("logs")


def invoke(lam: Any, name: str, event: dict[str, Any]) -> dict[str, Any]:
    response = lam.invoke(FunctionName=name, Payload=json.dumps(event))
    body: dict[str, Any] = json.loads(response["Payload"].read())
    return body


def messages(logs: Any, group: str, stream: str) -> list[str]:
    events = logs.get_log_events(logGroupName=group, logStreamName=stream, startFromHead=True)
    return [e["message"].rstrip("\n") for e in events["events"]]


def test_stream_holds_start_output_end_report_in_order(lam: Any, logs: Any) -> None:
    name = create_function(lam, {"app.py": CODE})
    group = f"/aws/lambda/{name}"
    first, second = invoke(lam, name, {"n": 1}), invoke(lam, name, {"n": 2})
    assert first["stream"] == second["stream"]

    streams = logs.describe_log_streams(logGroupName=group)["logStreams"]
    assert [s["logStreamName"] for s in streams] == [first["stream"]]
    assert re.fullmatch(STREAM, streams[0]["logStreamName"])
    assert streams[0]["firstEventTimestamp"] <= streams[0]["lastEventTimestamp"]

    lines = messages(logs, group, first["stream"])
    # AWS's first line of an environment's stream names its runtime version (tab-separated)
    arn = lam.get_function_configuration(FunctionName=name)["RuntimeVersionConfig"][
        "RuntimeVersionArn"
    ]
    assert re.fullmatch(
        rf"INIT_START Runtime Version: python:3\.\d+\.v\d+\t"
        rf"Runtime Version ARN: {re.escape(arn)}",
        lines[0],
    ), lines[0]
    expected_heads = ["INIT_START Runtime Version: "]
    for n, body in ((1, first), (2, second)):
        rid = body["request_id"]
        expected_heads += [
            f"START RequestId: {rid} Version: $LATEST",
            f"hello logs {n}",
            "needle on stderr",
            f"END RequestId: {rid}",
            f"REPORT RequestId: {rid}\t",
        ]
    assert len(lines) == len(expected_heads), lines
    for line, head in zip(lines, expected_heads, strict=True):
        assert line.startswith(head), (line, head)
    assert "Init Duration" in lines[5] and "Init Duration" not in lines[10]


def test_events_carry_timestamps_in_order(lam: Any, logs: Any) -> None:
    name = create_function(lam, {"app.py": CODE})
    before = int(time.time() * 1000) - 1000
    stream = invoke(lam, name, {"n": 1})["stream"]
    after = int(time.time() * 1000) + 1000
    events = logs.get_log_events(
        logGroupName=f"/aws/lambda/{name}", logStreamName=stream, startFromHead=True
    )["events"]
    stamps = [e["timestamp"] for e in events]
    assert stamps == sorted(stamps)
    assert all(before <= t <= after for t in stamps)
    assert all(e["ingestionTime"] >= e["timestamp"] for e in events)


def test_new_environment_writes_a_new_stream(lam: Any, logs: Any) -> None:
    name = create_function(lam, {"app.py": CODE})
    group = f"/aws/lambda/{name}"
    first = invoke(lam, name, {"n": 1})["stream"]
    invoke(lam, name, {"exit": True})  # the environment crashes; the next one is new
    second = invoke(lam, name, {"n": 3})["stream"]
    assert first != second
    names = {
        s["logStreamName"] for s in logs.describe_log_streams(logGroupName=group)["logStreams"]
    }
    assert names == {first, second}
    crashed = messages(logs, group, first)
    crash_line = rf"^RequestId: {REQUEST_ID} Error: Runtime exited with error: exit status 1$"
    assert any(re.search(crash_line, line, re.M) for line in crashed), crashed
    assert crashed[-1].startswith("REPORT RequestId:")
    assert messages(logs, group, second)[0].startswith("INIT_START Runtime Version: ")
    assert messages(logs, group, second)[2] == "hello logs 3"


def test_filter_log_events_with_a_pattern(lam: Any, logs: Any) -> None:
    name = create_function(lam, {"app.py": CODE})
    group = f"/aws/lambda/{name}"
    ids = [invoke(lam, name, {"n": n})["request_id"] for n in range(3)]
    found = logs.filter_log_events(logGroupName=group, filterPattern="hello")["events"]
    assert [e["message"].rstrip("\n") for e in found] == [f"hello logs {n}" for n in range(3)]
    assert all(re.fullmatch(STREAM, e["logStreamName"]) for e in found)
    quoted = logs.filter_log_events(logGroupName=group, filterPattern='"END RequestId"')["events"]
    assert [e["message"].rstrip("\n") for e in quoted] == [f"END RequestId: {i}" for i in ids]
    everything = logs.filter_log_events(logGroupName=group)["events"]
    assert len(everything) == 1 + 3 * 5  # INIT_START, then 5 lines an invocation


def test_event_invocations_are_logged(lam: Any, logs: Any) -> None:
    name = create_function(lam, {"app.py": CODE})
    group = f"/aws/lambda/{name}"
    lam.invoke(FunctionName=name, InvocationType="Event", Payload=json.dumps({"n": 42}))

    def logged() -> bool:
        try:
            found = logs.filter_log_events(logGroupName=group, filterPattern="REPORT")["events"]
        except logs.exceptions.ResourceNotFoundException:
            return False
        return len(found) == 1

    assert wait_for(logged), "the Event invocation left no REPORT line"
    hello = logs.filter_log_events(logGroupName=group, filterPattern="hello logs")["events"]
    assert [e["message"].rstrip("\n") for e in hello] == ["hello logs 42"]


def test_describe_log_groups_by_prefix(lam: Any, logs: Any) -> None:
    name = create_function(lam, {"app.py": CODE})
    invoke(lam, name, {})
    groups = logs.describe_log_groups(logGroupNamePrefix=f"/aws/lambda/{name}")["logGroups"]
    assert [g["logGroupName"] for g in groups] == [f"/aws/lambda/{name}"]


def test_unknown_log_group_is_not_found(logs: Any) -> None:
    with pytest.raises(logs.exceptions.ResourceNotFoundException):
        logs.describe_log_streams(logGroupName="/aws/lambda/never-invoked-function")
    with pytest.raises(logs.exceptions.ResourceNotFoundException):
        logs.get_log_events(logGroupName="/aws/lambda/never-invoked-function", logStreamName="x")
