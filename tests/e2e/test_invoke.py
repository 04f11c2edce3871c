"""Invoke through boto3 against a real `lambdad serve`: invocation types, context, environment
variables, function and init errors, payload limits, log tails and Event durability."""

from __future__ import annotations

import base64
import json
import re
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from tests.conftest import Server, create_function, logged, start_server, wait_for

PYTHON_RUNTIMES = ("python3.10", "python3.11", "python3.12", "python3.13")
REQUEST_ID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"

ECHO = """
def handler(event, context):
    return {"event": event, "request_id": context.aws_request_id}
"""

# Prints a token once it has run, so the test can see it in the function's logs (the handler
# cannot write anywhere the test could read under a sandboxing backend).
TOKEN = """
import time
def handler(event, context):
    time.sleep(event.get("sleep", 0))
    print(f"ran {event['token']} as {context.aws_request_id}")
    return "ran"
"""

INTROSPECT = """
import os
def handler(event, context):
    cc = context.client_context
    client = None
    if cc is not None and cc.client is not None:
        client = {"installation_id": cc.client.installation_id,
                  "app_title": cc.client.app_title,
                  "app_package_name": cc.client.app_package_name}
    return {
        "aws_request_id": context.aws_request_id,
        "function_name": context.function_name,
        "function_version": context.function_version,
        "invoked_function_arn": context.invoked_function_arn,
        "memory_limit_in_mb": context.memory_limit_in_mb,
        "remaining": context.get_remaining_time_in_millis(),
        "log_group_name": context.log_group_name,
        "log_stream_name": context.log_stream_name,
        "client_context": None if cc is None else {"custom": cc.custom, "env": cc.env,
                                                   "client": client},
        "identity": [context.identity.cognito_identity_id,
                     context.identity.cognito_identity_pool_id],
        "env": dict(os.environ),
    }
"""


def invoke(lam: Any, name: str, payload: bytes | None = None, **kwargs: Any) -> dict[str, Any]:
    """Invoke and return the response with its Payload read and decoded from JSON."""
    params: dict[str, Any] = {"FunctionName": name, **kwargs}
    if payload is not None:
        params["Payload"] = payload
    response = lam.invoke(**params)
    raw = response["Payload"].read()
    response["Body"] = json.loads(raw) if raw else None
    response["Log"] = (
        base64.b64decode(response["LogResult"]).decode() if "LogResult" in response else ""
    )
    return response


def available_runtimes(server: Server) -> set[str]:
    request = AWSRequest("GET", f"{server.endpoint}/_lambdad/status")
    credentials = Credentials(
        server.env["LAMBDAD_ROOT_ACCESS_KEY_ID"], server.env["LAMBDAD_ROOT_SECRET_ACCESS_KEY"]
    )
    SigV4Auth(credentials, "lambda", "us-east-1").add_auth(request)
    prepared = urllib.request.Request(request.url, headers=dict(request.headers.items()))
    with urllib.request.urlopen(prepared, timeout=10) as response:
        status = json.loads(response.read())
    return {entry["runtime"] for entry in status["runtimes"]}


@pytest.fixture(scope="module")
def logs(server: Server) -> Any:
    return server.client("logs")


# -- invocation types ---------------------------------------------------------------------------


def test_request_response_returns_the_handlers_json(lam: Any) -> None:
    name = create_function(lam, {"app.py": ECHO})
    response = invoke(lam, name, b'{"hello": "world", "n": [1, 2]}')
    assert response["StatusCode"] == 200
    assert response["ExecutedVersion"] == "$LATEST"
    assert "FunctionError" not in response
    assert response["Body"]["event"] == {"hello": "world", "n": [1, 2]}
    assert re.fullmatch(REQUEST_ID, response["Body"]["request_id"])


def test_empty_payload_reaches_the_handler_as_an_empty_object(lam: Any) -> None:
    name = create_function(lam, {"app.py": ECHO})
    assert invoke(lam, name)["Body"]["event"] == {}
    assert invoke(lam, name, b"")["Body"]["event"] == {}


def test_event_invocation_is_accepted_and_runs(lam: Any, logs: Any) -> None:
    name = create_function(lam, {"app.py": TOKEN})
    token = uuid.uuid4().hex
    response = lam.invoke(
        FunctionName=name, InvocationType="Event", Payload=json.dumps({"token": token})
    )
    assert response["StatusCode"] == 202
    assert response["Payload"].read() == b""
    assert wait_for(lambda: bool(logged(logs, name, token))), "the Event invocation never ran"
    [line] = logged(logs, name, token)
    assert re.fullmatch(rf"ran {token} as {REQUEST_ID}", line)


def test_dry_run_checks_without_running(lam: Any, logs: Any) -> None:
    name = create_function(lam, {"app.py": TOKEN})
    response = lam.invoke(
        FunctionName=name, InvocationType="DryRun", Payload=json.dumps({"token": "dry"})
    )
    assert response["StatusCode"] == 204
    assert response["Payload"].read() == b""
    time.sleep(0.5)
    assert logged(logs, name, "RequestId") == []
    with pytest.raises(lam.exceptions.InvalidRequestContentException):
        lam.invoke(FunctionName=name, InvocationType="DryRun", Payload=b"{not json")


def test_none_result_is_json_null(lam: Any) -> None:
    name = create_function(lam, {"app.py": "def handler(event, context):\n    return None\n"})
    response = lam.invoke(FunctionName=name)
    assert response["Payload"].read() == b"null"


@pytest.mark.parametrize("runtime", PYTHON_RUNTIMES)
def test_non_ascii_result_and_output(server: Server, lam: Any, runtime: str) -> None:
    if runtime not in available_runtimes(server):
        pytest.skip(f"{runtime} is not installed on this machine")
    code = (
        "def handler(event, context):\n"
        "    print('h\u00e9llo \u2713')\n"
        "    return {'s': 'h\u00e9llo \u2713'}\n"
    )
    name = create_function(lam, {"app.py": code}, runtime=runtime)
    response = lam.invoke(FunctionName=name, LogType="Tail")
    raw = response["Payload"].read()
    assert json.loads(raw) == {"s": "h\u00e9llo \u2713"}
    # AWS's python3.12+ runtimes answer in UTF-8; older ones escape non-ASCII characters
    escaped = runtime in ("python3.10", "python3.11")
    assert (b"\\u00e9" in raw) is escaped
    assert "h\u00e9llo \u2713\n" in base64.b64decode(response["LogResult"]).decode()


def test_invoking_a_missing_function_is_not_found(lam: Any) -> None:
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as info:
        lam.invoke(FunctionName="no-such-function-anywhere")
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert info.value.response["Error"]["Message"] == (
        "Function not found: arn:aws:lambda:us-east-1:000000000000:function:"
        "no-such-function-anywhere:$LATEST"
    )


# -- context and environment --------------------------------------------------------------------


@pytest.mark.parametrize("runtime", PYTHON_RUNTIMES)
def test_context_object(server: Server, lam: Any, runtime: str) -> None:
    if runtime not in available_runtimes(server):
        pytest.skip(f"{runtime} is not installed on this machine")
    name = create_function(lam, {"app.py": INTROSPECT}, runtime=runtime, MemorySize=256, Timeout=7)
    arn = f"arn:aws:lambda:us-east-1:000000000000:function:{name}"
    body = invoke(lam, name)["Body"]
    assert re.fullmatch(REQUEST_ID, body["aws_request_id"])
    assert body["function_name"] == name
    assert body["function_version"] == "$LATEST"
    assert body["invoked_function_arn"] == arn
    assert body["memory_limit_in_mb"] == 256
    assert 0 < body["remaining"] <= 7000
    assert body["log_group_name"] == f"/aws/lambda/{name}"
    assert re.fullmatch(r"\d{4}/\d{2}/\d{2}/\[\$LATEST\][0-9a-f]{32}", body["log_stream_name"])
    assert body["client_context"] is None
    assert body["identity"] == [None, None]

    qualified = invoke(lam, name, Qualifier="$LATEST")
    assert qualified["Body"]["invoked_function_arn"] == f"{arn}:$LATEST"
    assert qualified["ExecutedVersion"] == "$LATEST"


@pytest.mark.parametrize("runtime", PYTHON_RUNTIMES)
def test_reserved_and_user_environment_variables(server: Server, lam: Any, runtime: str) -> None:
    if runtime not in available_runtimes(server):
        pytest.skip(f"{runtime} is not installed on this machine")
    name = create_function(
        lam,
        {"app.py": INTROSPECT},
        runtime=runtime,
        MemorySize=192,
        Environment={"Variables": {"GREETING": "hello", "EMPTYISH": " "}},
    )
    body = invoke(lam, name)["Body"]
    env = body["env"]
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == name
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "192"
    assert env["AWS_LAMBDA_FUNCTION_VERSION"] == "$LATEST"
    assert env["AWS_REGION"] == env["AWS_DEFAULT_REGION"] == "us-east-1"
    assert env["AWS_EXECUTION_ENV"] == f"AWS_Lambda_{runtime}"
    assert env["AWS_LAMBDA_LOG_GROUP_NAME"] == f"/aws/lambda/{name}"
    assert env["AWS_LAMBDA_LOG_STREAM_NAME"] == body["log_stream_name"]
    assert re.fullmatch(r"[\w.\[\]-]+:\d+", env["AWS_LAMBDA_RUNTIME_API"])
    assert env["LAMBDA_TASK_ROOT"] and env["LAMBDA_RUNTIME_DIR"]
    assert env["AWS_LAMBDA_INITIALIZATION_TYPE"] == "on-demand"
    assert env["_HANDLER"] == "app.handler"
    assert env["TZ"] == ":UTC"
    assert re.fullmatch(r"ASIA[A-Z0-9]{16}", env["AWS_ACCESS_KEY_ID"])
    assert len(env["AWS_SECRET_ACCESS_KEY"]) == 40
    assert env["AWS_SESSION_TOKEN"]
    assert env["GREETING"] == "hello"
    assert env["EMPTYISH"] == " "


def test_client_context_reaches_the_handler(lam: Any) -> None:
    name = create_function(lam, {"app.py": INTROSPECT})
    document = {
        "custom": {"tenant": "acme"},
        "env": {"platform": "test"},
        "client": {"installation_id": "inst-1", "app_title": "App", "app_package_name": "pkg"},
    }
    encoded = base64.b64encode(json.dumps(document).encode()).decode()
    body = invoke(lam, name, ClientContext=encoded)["Body"]
    assert body["client_context"] == {
        "custom": {"tenant": "acme"},
        "env": {"platform": "test"},
        "client": {"installation_id": "inst-1", "app_title": "App", "app_package_name": "pkg"},
    }


def test_invalid_client_context_is_rejected(lam: Any) -> None:
    name = create_function(lam, {"app.py": ECHO})
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.invoke(FunctionName=name, ClientContext="not base64 json!")


# -- function errors ----------------------------------------------------------------------------


def test_handler_exception_is_an_unhandled_function_error(lam: Any) -> None:
    code = """
class CustomError(Exception):
    pass

def handler(event, context):
    raise CustomError("something broke")
"""
    name = create_function(lam, {"app.py": code})
    response = invoke(lam, name, LogType="Tail")
    assert response["StatusCode"] == 200
    assert response["FunctionError"] == "Unhandled"
    body = response["Body"]
    assert body["errorType"] == "CustomError"
    assert body["errorMessage"] == "something broke"
    assert isinstance(body["stackTrace"], list) and body["stackTrace"]
    assert any('raise CustomError("something broke")' in frame for frame in body["stackTrace"])
    assert "[ERROR] CustomError: something broke" in response["Log"]
    # the environment survives a handled exception and keeps serving
    assert invoke(lam, name)["FunctionError"] == "Unhandled"


def test_unserialisable_result_is_a_marshal_error(lam: Any) -> None:
    code = "def handler(event, context):\n    return {'s': {1, 2}}\n"
    name = create_function(lam, {"app.py": code})
    response = invoke(lam, name)
    assert response["FunctionError"] == "Unhandled"
    assert response["Body"]["errorType"] == "Runtime.MarshalError"
    assert response["Body"]["errorMessage"].startswith("Unable to marshal response:")
    assert "set is not JSON serializable" in response["Body"]["errorMessage"]


@pytest.mark.parametrize(
    ("files", "handler", "error_type", "message"),
    [
        (
            {"app.py": ECHO},
            "nope.handler",
            "Runtime.ImportModuleError",
            "Unable to import module 'nope': No module named 'nope'",
        ),
        (
            {"app.py": ECHO},
            "app.missing",
            "Runtime.HandlerNotFound",
            "Handler 'missing' missing on module 'app'",
        ),
        (
            {"app.py": "def handler(event, context)\n    return 1\n"},
            "app.handler",
            "Runtime.UserCodeSyntaxError",
            "Syntax error in module 'app':",
        ),
        (
            {"app.py": "raise ValueError('broken at import')\ndef handler(e, c):\n    pass\n"},
            "app.handler",
            "ValueError",
            "broken at import",
        ),
    ],
    ids=["missing-module", "missing-handler", "syntax-error", "import-time-exception"],
)
def test_init_errors(
    lam: Any, files: dict[str, str], handler: str, error_type: str, message: str
) -> None:
    name = create_function(lam, files, handler=handler)
    for _ in range(2):  # every invocation reports the init error again, from a fresh environment
        response = invoke(lam, name, LogType="Tail")
        assert response["StatusCode"] == 200
        assert response["FunctionError"] == "Unhandled"
        assert response["Body"]["errorType"] == error_type
        assert response["Body"]["errorMessage"].startswith(message)
        log = response["Log"]
        assert re.search(
            rf"^INIT_REPORT Init Duration: \d+\.\d\d ms\tPhase: init\tStatus: error\t"
            rf"Error Type: {re.escape(error_type)}$",
            log,
            re.M,
        )
        assert re.search(rf"^START RequestId: {REQUEST_ID} Version: \$LATEST$", log, re.M)
        assert "END RequestId:" in log and "REPORT RequestId:" in log


# -- payload limits -----------------------------------------------------------------------------


def _json_string_of_size(size: int) -> bytes:
    return b'"' + b"a" * (size - 2) + b'"'


def test_sync_payload_limit(lam: Any) -> None:
    name = create_function(lam, {"app.py": "def handler(e, c):\n    return len(e)\n"})
    limit = 6_291_456
    assert invoke(lam, name, _json_string_of_size(limit))["Body"] == limit - 2
    with pytest.raises(lam.exceptions.RequestTooLargeException) as info:
        lam.invoke(FunctionName=name, Payload=_json_string_of_size(limit + 1))
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413


def test_event_payload_limit(lam: Any) -> None:
    name = create_function(lam, {"app.py": "def handler(e, c):\n    return None\n"})
    limit = 1_048_576
    accepted = lam.invoke(
        FunctionName=name, InvocationType="Event", Payload=_json_string_of_size(limit)
    )
    assert accepted["StatusCode"] == 202
    with pytest.raises(lam.exceptions.RequestTooLargeException) as info:
        lam.invoke(
            FunctionName=name, InvocationType="Event", Payload=_json_string_of_size(limit + 1)
        )
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413


@pytest.mark.parametrize("payload", [b"not json", b'{"a": 1', b"\x99\xeb,j"])
def test_non_json_payload_is_rejected(lam: Any, payload: bytes) -> None:
    name = create_function(lam, {"app.py": ECHO})
    with pytest.raises(lam.exceptions.InvalidRequestContentException) as info:
        lam.invoke(FunctionName=name, Payload=payload)
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert info.value.response["Error"]["Message"].startswith(
        "Could not parse request body into json"
    )


def test_oversized_response_is_a_function_error(lam: Any) -> None:
    code = "def handler(event, context):\n    return 'x' * (event['n'])\n"
    name = create_function(lam, {"app.py": code})
    response = invoke(lam, name, json.dumps({"n": 7_000_000}).encode())
    assert response["StatusCode"] == 200
    assert response["FunctionError"] == "Unhandled"
    assert response["Body"] == {
        "errorMessage": "Response payload size exceeded maximum allowed payload size "
        "(6291556 bytes).",
        "errorType": "Function.ResponseSizeTooLarge",
    }
    # the server and the function keep working
    assert invoke(lam, name, json.dumps({"n": 10}).encode())["Body"] == "x" * 10


# -- log tail -----------------------------------------------------------------------------------


def test_tail_holds_the_invocations_log(lam: Any) -> None:
    code = """
import logging, sys
logger = logging.getLogger()
logger.setLevel(logging.INFO)

def handler(event, context):
    print("to stdout")
    print("to stderr", file=sys.stderr)
    logger.info("from logging")
    return context.aws_request_id
"""
    name = create_function(lam, {"app.py": code})
    response = invoke(lam, name, LogType="Tail")
    request_id = response["Body"]
    lines = response["Log"].splitlines()
    # the cold start's tail begins with the environment's INIT_START, as AWS's
    assert lines[0].startswith("INIT_START Runtime Version: python:3.")
    assert lines[1] == f"START RequestId: {request_id} Version: $LATEST"
    assert "to stdout" in lines and "to stderr" in lines
    info = [line for line in lines if line.startswith("[INFO]")]
    assert len(info) == 1
    assert re.fullmatch(
        rf"\[INFO\]\t\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{{3}}Z\t{request_id}\tfrom logging",
        info[0],
    )
    assert f"END RequestId: {request_id}" in lines
    assert lines[-1].startswith(f"REPORT RequestId: {request_id}\t")
    warm = invoke(lam, name, LogType="Tail")  # the same environment: no INIT_START again
    assert warm["Log"].splitlines()[0] == f"START RequestId: {warm['Body']} Version: $LATEST"
    assert lines.index("to stdout") < lines.index(f"END RequestId: {request_id}")


def test_tail_is_the_last_4_kb(lam: Any) -> None:
    code = """
def handler(event, context):
    for i in range(400):
        print(f"line {i:04d} " + "z" * 40)
"""
    name = create_function(lam, {"app.py": code})
    response = invoke(lam, name, LogType="Tail")
    raw = base64.b64decode(response["LogResult"])
    assert len(raw) <= 4096
    assert len(raw) > 3000
    text = raw.decode()
    assert "line 0399" in text and "line 0000" not in text
    assert "END RequestId:" in text and "REPORT RequestId:" in text


def test_no_tail_without_log_type(lam: Any) -> None:
    name = create_function(lam, {"app.py": ECHO})
    assert "LogResult" not in lam.invoke(FunctionName=name)


# -- Event invocations: retries and durability ---------------------------------------------------

# A module-level counter: retries run in the function's (only) warm environment.
RETRIES = """
ATTEMPTS = 0

def handler(event, context):
    global ATTEMPTS
    ATTEMPTS += 1
    print(f"attempt {ATTEMPTS} of {context.aws_request_id}")
    if ATTEMPTS < event["succeed_on"]:
        raise RuntimeError(f"attempt {ATTEMPTS} fails")
    print("succeeded")
    return ATTEMPTS
"""


def test_failing_event_is_retried_twice(lam: Any, logs: Any) -> None:
    name = create_function(lam, {"app.py": RETRIES})
    event = json.dumps({"succeed_on": 3})
    assert lam.invoke(FunctionName=name, InvocationType="Event", Payload=event)["StatusCode"] == 202
    assert wait_for(lambda: bool(logged(logs, name, "succeeded"))), logged(logs, name, "attempt")
    time.sleep(1.0)  # the retry delays are 0.2 s: nothing more may come
    attempts = [line for line in logged(logs, name, "attempt ") if line.startswith("attempt")]
    assert [a.split(" of ")[0] for a in attempts] == ["attempt 1", "attempt 2", "attempt 3"]
    assert len({a.split(" of ")[1] for a in attempts}) == 1, "retries keep the request id"
    assert len(logged(logs, name, "REPORT RequestId")) == 3


def test_event_that_always_fails_runs_three_times(lam: Any, logs: Any) -> None:
    name = create_function(lam, {"app.py": RETRIES})
    lam.invoke(FunctionName=name, InvocationType="Event", Payload=json.dumps({"succeed_on": 99}))
    assert wait_for(lambda: len(logged(logs, name, "REPORT RequestId")) >= 3)
    time.sleep(1.0)
    assert len(logged(logs, name, "REPORT RequestId")) == 3
    assert len(logged(logs, name, "[ERROR] RuntimeError")) == 3


def test_queued_event_survives_a_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = start_server(data_dir)
    token = uuid.uuid4().hex
    try:
        lam = first.client()
        name = create_function(lam, {"app.py": TOKEN}, Timeout=30)
        event = json.dumps({"token": token, "sleep": 3})
        response = lam.invoke(FunctionName=name, InvocationType="Event", Payload=event)
        assert response["StatusCode"] == 202
    finally:
        first.stop()
    assert first.process.returncode is not None
    restarted_at = int(time.time() * 1000)
    second = start_server(data_dir)
    try:
        logs = second.client("logs")
        ran = wait_for(lambda: bool(logged(logs, name, token)), timeout=30)
        assert ran, "the queued event did not run after the restart"
        time.sleep(3.5)  # the first server's attempt was killed: it must not finish late
        group = f"/aws/lambda/{name}"
        [event] = logs.filter_log_events(logGroupName=group, filterPattern=token)["events"]
        assert event["timestamp"] >= restarted_at, "the event had finished before the restart"
    finally:
        second.stop()


def test_client_context_over_3583_bytes_is_refused(lam: Any) -> None:
    name = create_function(lam, {"app.py": "def handler(e, c):\n    return 1\n"})
    encoded = base64.b64encode(json.dumps({"custom": {"k": "v" * 3000}}).encode()).decode()
    assert len(encoded) > 3583
    with pytest.raises(ClientError) as refused:
        lam.invoke(FunctionName=name, ClientContext=encoded)
    assert refused.value.response["Error"]["Code"] == "InvalidParameterValueException"
    small = base64.b64encode(json.dumps({"custom": {"k": "v"}}).encode()).decode()
    assert lam.invoke(FunctionName=name, ClientContext=small)["StatusCode"] == 200
