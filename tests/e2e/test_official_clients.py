"""The Runtime API is the real thing: AWS's own runtime interface clients run against it.

Every function here is a `provided.al2023` function whose ZIP carries its own `bootstrap`, created
and invoked through lambdad's public (boto3) API:

* awslambdaric (PyPI) — AWS's Python runtime interface client;
* aws-lambda-ric (npm) — AWS's Node.js runtime interface client (native addon built at install);
* a tiny stdlib-Python runtime that pokes at the Runtime API's error answers directly.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import create_function, make_zip
from tests.e2e.official_clients_support import (
    MAX_ZIP_BYTES,
    client_context,
    decode_tail,
    install_awslambdaric,
    install_node_ric,
    missing_node_toolchain,
    python_interpreter,
    report_request_id,
    tree_files,
)

LOG_STREAM = re.compile(r"\d{4}/\d{2}/\d{2}/\[\$LATEST\][0-9a-f]{32}")
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def invoke(lam: Any, name: str, event: Any, **kwargs: Any) -> tuple[dict[str, Any], Any, str]:
    """Invoke with the log tail; (response metadata, decoded JSON payload, log tail)."""
    response = lam.invoke(
        FunctionName=name, Payload=json.dumps(event).encode(), LogType="Tail", **kwargs
    )
    payload = json.loads(response["Payload"].read())
    assert response["StatusCode"] == 200, response
    return response, payload, decode_tail(response["LogResult"])


def delete(lam: Any, name: str) -> None:
    lam.delete_function(FunctionName=name)


# ------------------------------------------------------------------------------------------------
# awslambdaric (Python)
# ------------------------------------------------------------------------------------------------

PY_BOOTSTRAP = """#!/bin/sh
# AWS's Python runtime interface client, from the function's own code directory.
export PYTHONPATH="$LAMBDA_TASK_ROOT${{PYTHONPATH:+:$PYTHONPATH}}"
exec {python} -m awslambdaric "$_HANDLER"
"""

PY_APP = """
import json
import os

COUNT = 0


def handler(event, context):
    global COUNT
    COUNT += 1
    print("app-log-marker " + json.dumps(event, sort_keys=True))
    if isinstance(event, dict) and "raise" in event:
        raise ValueError(event["raise"])
    cc = context.client_context
    return {
        "event": event,
        "count": COUNT,
        "pid": os.getpid(),
        "aws_request_id": context.aws_request_id,
        "function_name": context.function_name,
        "function_version": context.function_version,
        "memory_limit_in_mb": context.memory_limit_in_mb,
        "invoked_function_arn": context.invoked_function_arn,
        "remaining_ms": context.get_remaining_time_in_millis(),
        "log_group_name": context.log_group_name,
        "log_stream_name": context.log_stream_name,
        "client_context": None if cc is None else {"custom": cc.custom, "env": cc.env},
        "identity": {
            "cognito_identity_id": context.identity.cognito_identity_id,
            "cognito_identity_pool_id": context.identity.cognito_identity_pool_id,
        },
    }
"""


@pytest.fixture(scope="module")
def python_ric_code() -> tuple[dict[str, str | bytes], dict[str, int]]:
    """ZIP contents: bootstrap, app.py and the awslambdaric install (+ its dependencies)."""
    files, modes = tree_files(
        install_awslambdaric(), "", skip_dirs=("__pycache__", "bin"), skip_suffixes=(".pyc",)
    )
    code: dict[str, str | bytes] = dict(files)
    code["bootstrap"] = PY_BOOTSTRAP.format(python=python_interpreter())
    code["app.py"] = PY_APP
    modes["bootstrap"] = 0o755
    return code, modes


@pytest.fixture(scope="module")
def python_ric_function(
    lam: Any, python_ric_code: tuple[dict[str, str | bytes], dict[str, int]]
) -> Iterator[str]:
    code, modes = python_ric_code
    assert len(make_zip(code, modes)) < MAX_ZIP_BYTES
    name = create_function(
        lam,
        code,
        modes=modes,
        runtime="provided.al2023",
        handler="app.handler",
        MemorySize=256,
        Timeout=30,
    )
    yield name
    delete(lam, name)


def test_awslambdaric_event_and_context(lam: Any, python_ric_function: str) -> None:
    name = python_ric_function
    arn = lam.get_function_configuration(FunctionName=name)["FunctionArn"]
    event = {"hello": "world", "n": [1, 2, 3], "nested": {"ok": True}}
    response, body, tail = invoke(
        lam,
        name,
        event,
        ClientContext=client_context({"tenant": "acme"}, env={"locale": "en_US"}),
    )
    assert "FunctionError" not in response
    assert response["ExecutedVersion"] == "$LATEST"
    assert body["event"] == event
    assert UUID.fullmatch(body["aws_request_id"])
    assert body["aws_request_id"] == report_request_id(tail)
    assert body["function_name"] == name
    assert body["function_version"] == "$LATEST"
    assert body["memory_limit_in_mb"] == "256"  # awslambdaric passes the env var through
    assert body["invoked_function_arn"] == arn
    assert 0 < body["remaining_ms"] <= 30_000
    assert body["log_group_name"] == f"/aws/lambda/{name}"
    assert LOG_STREAM.fullmatch(body["log_stream_name"]), body["log_stream_name"]
    assert body["client_context"] == {"custom": {"tenant": "acme"}, "env": {"locale": "en_US"}}
    # The Invoke API cannot carry a Cognito identity: AWS then sends no Cognito header.
    assert body["identity"] == {"cognito_identity_id": None, "cognito_identity_pool_id": None}
    # print() output lands in the invocation's log, between START and END.
    marker = "app-log-marker " + json.dumps(event, sort_keys=True)
    assert marker in tail
    request_id = body["aws_request_id"]
    assert (
        tail.index(f"START RequestId: {request_id} Version: $LATEST")
        < tail.index(marker)
        < tail.index(f"END RequestId: {request_id}")
        < tail.index(f"REPORT RequestId: {request_id}\t")
    )

    # A qualified invoke: the client sees the qualified ARN; no client context this time.
    _, body, _ = invoke(lam, name, {"q": 1}, Qualifier="$LATEST")
    assert body["invoked_function_arn"] == f"{arn}:$LATEST"
    assert body["client_context"] is None


def test_awslambdaric_unhandled_error(lam: Any, python_ric_function: str) -> None:
    response, body, tail = invoke(lam, python_ric_function, {"raise": "kaboom"})
    assert response["FunctionError"] == "Unhandled"
    assert body["errorType"] == "ValueError"
    assert body["errorMessage"] == "kaboom"
    assert body["requestId"] == report_request_id(tail)
    assert isinstance(body["stackTrace"], list) and body["stackTrace"]
    assert any("app.py" in line and "handler" in line for line in body["stackTrace"])
    assert "ValueError: kaboom" in tail  # the RIC logs the error too
    # The environment survives a handled-by-the-RIC error and answers the next invoke.
    response, body, _ = invoke(lam, python_ric_function, {"after": "error"})
    assert "FunctionError" not in response
    assert body["event"] == {"after": "error"}


def test_awslambdaric_warm_reuse(lam: Any, python_ric_function: str) -> None:
    _, first, _ = invoke(lam, python_ric_function, {"round": 1})
    _, second, _ = invoke(lam, python_ric_function, {"round": 2})
    assert second["pid"] == first["pid"]
    assert second["count"] == first["count"] + 1
    assert second["aws_request_id"] != first["aws_request_id"]


def test_awslambdaric_import_error_is_an_init_error(
    lam: Any, python_ric_code: tuple[dict[str, str | bytes], dict[str, int]]
) -> None:
    code, modes = python_ric_code
    name = create_function(
        lam, code, modes=modes, runtime="provided.al2023", handler="no_such_module.handler"
    )
    try:
        response, body, tail = invoke(lam, name, {})
        assert response["FunctionError"] == "Unhandled"
        assert body["errorType"] == "Runtime.ImportModuleError"
        assert body["errorMessage"].startswith("Unable to import module 'no_such_module'")
        assert "REPORT RequestId:" in tail
    finally:
        delete(lam, name)


# ------------------------------------------------------------------------------------------------
# aws-lambda-ric (Node.js)
# ------------------------------------------------------------------------------------------------

NODE_BOOTSTRAP = """#!/bin/sh
# AWS's Node.js runtime interface client; it reads the handler from $_HANDLER.
cd "$LAMBDA_TASK_ROOT"
exec {node} "$LAMBDA_TASK_ROOT/node_modules/aws-lambda-ric/index.mjs" "$_HANDLER"
"""

NODE_APP = """
let count = 0;

export const handler = async (event, context) => {
  count += 1;
  console.log("node-log-marker", JSON.stringify(event));
  if (event && event.throw) {
    throw new TypeError(event.throw);
  }
  return {
    event,
    count,
    pid: process.pid,
    awsRequestId: context.awsRequestId,
    functionName: context.functionName,
    functionVersion: context.functionVersion,
    invokedFunctionArn: context.invokedFunctionArn,
    memoryLimitInMB: context.memoryLimitInMB,
    remainingMs: context.getRemainingTimeInMillis(),
    logGroupName: context.logGroupName,
    logStreamName: context.logStreamName,
    clientContext: context.clientContext ?? null,
  };
};
"""

# What aws-lambda-ric loads at run time is index.mjs (a bundle that includes its JS
# dependencies) and the native rapid-client.node; the rest is build input.
NODE_RIC_BUILD_ONLY = ("deps", "src", "scripts", "node-addon-api", "build")


@pytest.fixture(scope="module")
def node_ric_function(lam: Any) -> Iterator[str]:
    reason = missing_node_toolchain()
    if reason:
        pytest.skip(reason)
    node = shutil.which("node")
    assert node is not None
    project = install_node_ric()
    files, modes = tree_files(
        project / "node_modules" / "aws-lambda-ric",
        "node_modules/aws-lambda-ric",
        skip_dirs=NODE_RIC_BUILD_ONLY,
        skip_suffixes=(".tar.xz",),
    )
    assert "node_modules/aws-lambda-ric/rapid-client.node" in files
    code: dict[str, str | bytes] = dict(files)
    code["bootstrap"] = NODE_BOOTSTRAP.format(node=node)
    code["index.mjs"] = NODE_APP
    modes["bootstrap"] = 0o755
    assert len(make_zip(code, modes)) < MAX_ZIP_BYTES
    name = create_function(
        lam,
        code,
        modes=modes,
        runtime="provided.al2023",
        handler="index.handler",
        MemorySize=512,
        Timeout=30,
    )
    yield name
    delete(lam, name)


@pytest.mark.slow
@pytest.mark.toolchain
def test_node_ric_event_context_and_logs(lam: Any, node_ric_function: str) -> None:
    name = node_ric_function
    arn = lam.get_function_configuration(FunctionName=name)["FunctionArn"]
    event = {"from": "node", "list": [1, "two", None]}
    response, body, tail = invoke(
        lam,
        name,
        event,
        ClientContext=client_context({"k": "v"}),
    )
    assert "FunctionError" not in response, body
    assert body["event"] == event
    assert body["awsRequestId"] == report_request_id(tail)
    assert body["functionName"] == name
    assert body["functionVersion"] == "$LATEST"
    assert body["invokedFunctionArn"] == arn
    assert body["memoryLimitInMB"] == "512"
    assert 0 < body["remainingMs"] <= 30_000
    assert body["logGroupName"] == f"/aws/lambda/{name}"
    assert LOG_STREAM.fullmatch(body["logStreamName"]), body["logStreamName"]
    assert body["clientContext"]["custom"] == {"k": "v"}
    # console.log goes through the RIC's patched console: "<ts>\t<request id>\tINFO\t<message>".
    log_lines = [line for line in tail.splitlines() if "node-log-marker" in line]
    assert log_lines, tail
    compact = json.dumps(event, separators=(",", ":"))
    assert f"\t{body['awsRequestId']}\tINFO\tnode-log-marker {compact}" in log_lines[0]

    _, again, _ = invoke(lam, name, {"from": "node", "again": True})
    assert again["pid"] == body["pid"]
    assert again["count"] == body["count"] + 1


@pytest.mark.slow
@pytest.mark.toolchain
def test_node_ric_thrown_error(lam: Any, node_ric_function: str) -> None:
    response, body, tail = invoke(lam, node_ric_function, {"throw": "node kaboom"})
    assert response["FunctionError"] == "Unhandled"
    assert body["errorType"] == "TypeError"
    assert body["errorMessage"] == "node kaboom"
    assert isinstance(body["trace"], list)
    assert body["trace"][0] == "TypeError: node kaboom"
    assert any("index.mjs" in line for line in body["trace"])
    assert "node kaboom" in tail
    report_request_id(tail)


# ------------------------------------------------------------------------------------------------
# The Runtime API's answers, seen by a stdlib-only custom runtime
# ------------------------------------------------------------------------------------------------

PROBE_BOOTSTRAP = '''#!{python}
"""A tiny custom runtime: it reports what the Runtime API tells it."""
import http.client
import json
import os
import sys
import uuid

API = os.environ["AWS_LAMBDA_RUNTIME_API"]
NAMES = (
    "Lambda-Runtime-Aws-Request-Id",
    "Lambda-Runtime-Deadline-Ms",
    "Lambda-Runtime-Invoked-Function-Arn",
    "Lambda-Runtime-Trace-Id",
    "Lambda-Runtime-Client-Context",
    "Lambda-Runtime-Cognito-Identity",
)
STATE = {{}}


def call(method, path, body=None, headers=None):
    conn = http.client.HTTPConnection(API)
    conn.request(method, "/2018-06-01" + path, body=body, headers=headers or {{}})
    resp = conn.getresponse()
    data = resp.read()
    seen = {{k.lower(): v for k, v in resp.getheaders()}}
    conn.close()
    return resp.status, seen, data


def answer(status_body):
    status, _, data = status_body
    try:
        return [status, json.loads(data)]
    except ValueError:
        return [status, data.decode("utf-8", "replace")]


def respond(request_id, document):
    return call("POST", f"/runtime/invocation/{{request_id}}/response", json.dumps(document))


mode = os.environ.get("PROBE_MODE", "")
print("probe runtime starting, mode=" + mode, flush=True)
if mode == "init-error":
    status, _, data = call(
        "POST",
        "/runtime/init/error",
        json.dumps({{"errorMessage": "config is missing", "errorType": "Custom.InitFailure"}}),
        {{"Lambda-Runtime-Function-Error-Type": "Custom.InitFailure"}},
    )
    print(f"init error posted: {{status}} {{data.decode()}}", flush=True)
    sys.exit(1)
if mode == "exit-during-init":
    sys.exit(3)

while True:
    status, headers, body = call("GET", "/runtime/invocation/next")
    request_id = headers["lambda-runtime-aws-request-id"]
    event = json.loads(body)
    action = event.get("action")
    if action == "probe":
        seen = {{name: headers.get(name.lower()) for name in NAMES}}
        unknown = answer(respond(uuid.uuid4(), {{"nope": True}}))
        first = answer(respond(request_id, {{"seen": seen, "unknown": unknown,
                                              "pid": os.getpid(), "event": event}}))
        STATE["first"] = first
        STATE["second"] = answer(respond(request_id, {{"again": True}}))
        STATE["error_after_response"] = answer(call(
            "POST", f"/runtime/invocation/{{request_id}}/error", json.dumps({{"x": 1}})))
    elif action == "big":
        payload = b'"' + b"x" * (event["size"] - 2) + b'"'
        STATE["big"] = answer(call(
            "POST", f"/runtime/invocation/{{request_id}}/response", payload))
    elif action == "error":
        STATE["error"] = answer(call(
            "POST",
            f"/runtime/invocation/{{request_id}}/error",
            json.dumps({{"errorMessage": "it broke", "errorType": "Custom.Failure",
                         "stackTrace": ["frame 1"]}}),
            {{"Lambda-Runtime-Function-Error-Type": "Custom.Failure"}},
        ))
    elif action == "report":
        respond(request_id, {{"state": STATE, "pid": os.getpid()}})
    elif action == "exit":
        print("exiting with", event["code"], flush=True)
        sys.exit(event["code"])
    else:
        respond(request_id, {{"unknown action": action}})
'''


def probe_function(lam: Any, mode: str = "", **kwargs: Any) -> str:
    code = {"bootstrap": PROBE_BOOTSTRAP.format(python=python_interpreter())}
    env = {"Variables": {"PROBE_MODE": mode}} if mode else {"Variables": {}}
    return create_function(
        lam,
        code,
        modes={"bootstrap": 0o755},
        runtime="provided.al2023",
        handler="unused",
        Environment=env,
        Timeout=30,
        **kwargs,
    )


@pytest.fixture
def probe(lam: Any) -> Iterator[str]:
    name = probe_function(lam)
    yield name
    delete(lam, name)


def test_runtime_api_headers_and_request_id_checks(lam: Any, probe: str) -> None:
    arn = lam.get_function_configuration(FunctionName=probe)["FunctionArn"]
    custom = {"custom": {"who": "probe"}, "env": {"platform": "test"}}
    before_ms = int(time.time() * 1000)
    response, body, tail = invoke(
        lam,
        probe,
        {"action": "probe"},
        ClientContext=client_context(custom["custom"], env=custom["env"]),
    )
    assert "FunctionError" not in response, body
    seen = body["seen"]
    assert seen["Lambda-Runtime-Aws-Request-Id"] == report_request_id(tail)
    deadline = seen["Lambda-Runtime-Deadline-Ms"]
    assert deadline.isdigit() and int(deadline) > before_ms  # epoch milliseconds, ahead
    assert seen["Lambda-Runtime-Invoked-Function-Arn"] == arn
    assert seen["Lambda-Runtime-Trace-Id"].startswith("Root=1-")
    assert json.loads(seen["Lambda-Runtime-Client-Context"]) == custom
    # AWS sends Lambda-Runtime-Cognito-Identity only for Cognito-authenticated callers, which
    # the Invoke API with IAM credentials never is (the RIE sets it only when non-empty).
    assert seen["Lambda-Runtime-Cognito-Identity"] is None
    # A response to a request id that is not the current invocation -> 400 InvalidRequestID.
    status, document = body["unknown"]
    assert status == 400
    assert document["errorType"] == "InvalidRequestID"

    _, report, _ = invoke(lam, probe, {"action": "report"})
    assert report["pid"] == body["pid"]
    state = report["state"]
    assert state["first"] == [202, {"status": "OK"}]
    # Answering the same invocation again -> 403 InvalidStateTransition (response or error).
    assert state["second"][0] == 403
    assert state["second"][1]["errorType"] == "InvalidStateTransition"
    assert state["error_after_response"][0] == 403
    assert state["error_after_response"][1]["errorType"] == "InvalidStateTransition"


def test_runtime_api_response_size_limit(lam: Any, probe: str) -> None:
    # The Runtime API takes responses up to 6,291,556 bytes (6 MB + 100)...
    response, body, _ = invoke(lam, probe, {"action": "big", "size": 6_291_556})
    assert "FunctionError" not in response
    assert body == "x" * 6_291_554
    _, report, _ = invoke(lam, probe, {"action": "report"})
    assert report["state"]["big"] == [202, {"status": "OK"}]
    # ...and answers 413 to one byte more; the invocation fails with ResponseSizeTooLarge.
    response, body, _ = invoke(lam, probe, {"action": "big", "size": 6_291_557})
    assert response["FunctionError"] == "Unhandled"
    assert body["errorType"] == "Function.ResponseSizeTooLarge"
    assert "6291556" in body["errorMessage"]

    _, report, _ = invoke(lam, probe, {"action": "report"})
    status, document = report["state"]["big"]
    assert status == 413
    assert document["errorType"] == "RequestEntityTooLarge"


def test_runtime_api_invocation_error(lam: Any, probe: str) -> None:
    response, body, _ = invoke(lam, probe, {"action": "error"})
    assert response["FunctionError"] == "Unhandled"
    assert body == {
        "errorMessage": "it broke",
        "errorType": "Custom.Failure",
        "stackTrace": ["frame 1"],
    }
    _, report, _ = invoke(lam, probe, {"action": "report"})
    assert report["state"]["error"] == [202, {"status": "OK"}]


def test_runtime_api_exit_during_invocation(lam: Any, probe: str) -> None:
    response, body, tail = invoke(lam, probe, {"action": "exit", "code": 3})
    assert response["FunctionError"] == "Unhandled"
    assert body["errorType"] == "Runtime.ExitError"
    assert body["errorMessage"].endswith("Error: Runtime exited with error: exit status 3")
    assert "exiting with 3" in tail
    # The next invocation gets a fresh environment.
    response, body, _ = invoke(lam, probe, {"action": "report"})
    assert "FunctionError" not in response, body
    assert body["state"] == {}


def test_runtime_api_exit_during_init(lam: Any) -> None:
    name = probe_function(lam, "exit-during-init")
    try:
        response, body, _ = invoke(lam, name, {"action": "report"})
        assert response["FunctionError"] == "Unhandled"
        assert body["errorType"] == "Runtime.ExitError"
        assert body["errorMessage"].endswith("Error: Runtime exited with error: exit status 3")
    finally:
        delete(lam, name)


def test_runtime_api_init_error(lam: Any) -> None:
    name = probe_function(lam, "init-error")
    try:
        response, body, tail = invoke(lam, name, {"action": "report"})
        assert response["FunctionError"] == "Unhandled"
        assert body == {"errorMessage": "config is missing", "errorType": "Custom.InitFailure"}
        assert "REPORT RequestId:" in tail
    finally:
        delete(lam, name)


def test_missing_bootstrap_is_invalid_entrypoint(lam: Any) -> None:
    name = create_function(
        lam,
        {"app.py": "def handler(e, c):\n    return e\n"},
        runtime="provided.al2023",
        handler="app.handler",
    )
    try:
        response, body, _ = invoke(lam, name, {})
        assert response["FunctionError"] == "Unhandled"
        assert body["errorType"] == "Runtime.InvalidEntrypoint"
        assert "bootstrap" in body["errorMessage"]
    finally:
        delete(lam, name)
