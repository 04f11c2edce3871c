"""Node.js managed runtimes through boto3 against a real `lambdad serve`: handler styles, errors,
context, logs, init failures and timeouts."""

from __future__ import annotations

import base64
import json
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Server, create_function, gone, live_processes, start_server, wait_for
from tests.e2e.test_staged import check_a_deployed_function_takes_its_staged_environment

pytestmark = [
    pytest.mark.toolchain,
    pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed"),
]

REQUEST_ID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"

CONTEXT_HANDLER = """
let count = 0;
exports.handler = async (event, context) => {
  count += 1;
  console.log("hello from node", JSON.stringify(event));
  return {
    event,
    count,
    pid: process.pid,
    awsRequestId: context.awsRequestId,
    functionName: context.functionName,
    functionVersion: context.functionVersion,
    invokedFunctionArn: context.invokedFunctionArn,
    memoryLimitInMB: context.memoryLimitInMB,
    logGroupName: context.logGroupName,
    logStreamName: context.logStreamName,
    remaining: context.getRemainingTimeInMillis(),
    clientContext: context.clientContext,
    env: {
      AWS_EXECUTION_ENV: process.env.AWS_EXECUTION_ENV,
      AWS_LAMBDA_FUNCTION_NAME: process.env.AWS_LAMBDA_FUNCTION_NAME,
      AWS_REGION: process.env.AWS_REGION,
      GREETING: process.env.GREETING,
      _HANDLER: process.env._HANDLER,
    },
  };
};
"""


def invoke(lam: Any, name: str, event: Any = None, **kwargs: Any) -> dict[str, Any]:
    response = lam.invoke(
        FunctionName=name,
        Payload=json.dumps({} if event is None else event),
        LogType="Tail",
        **kwargs,
    )
    raw = response["Payload"].read()
    response["Body"] = json.loads(raw) if raw else None
    response["Log"] = base64.b64decode(response["LogResult"]).decode()
    return response


def node(lam: Any, files: dict[str, str], runtime: str = "nodejs20.x", **kwargs: Any) -> str:
    return create_function(
        lam, files, runtime=runtime, handler=kwargs.pop("handler", "index.handler"), **kwargs
    )


@pytest.mark.parametrize("runtime", ["nodejs18.x", "nodejs20.x", "nodejs22.x"])
def test_async_handler_and_context(lam: Any, runtime: str) -> None:
    name = node(
        lam,
        {"index.js": CONTEXT_HANDLER},
        runtime=runtime,
        MemorySize=256,
        Timeout=5,
        Environment={"Variables": {"GREETING": "hi"}},
    )
    response = invoke(lam, name, {"x": 1})
    assert response["StatusCode"] == 200
    assert "FunctionError" not in response
    body = response["Body"]
    assert body["event"] == {"x": 1}
    assert re.fullmatch(REQUEST_ID, body["awsRequestId"])
    assert body["functionName"] == name
    assert body["functionVersion"] == "$LATEST"
    assert body["invokedFunctionArn"] == f"arn:aws:lambda:us-east-1:000000000000:function:{name}"
    assert body["memoryLimitInMB"] == "256"
    assert body["logGroupName"] == f"/aws/lambda/{name}"
    assert re.fullmatch(r"\d{4}/\d{2}/\d{2}/\[\$LATEST\][0-9a-f]{32}", body["logStreamName"])
    assert 0 < body["remaining"] <= 5000
    assert body["env"] == {
        "AWS_EXECUTION_ENV": f"AWS_Lambda_{runtime}",
        "AWS_LAMBDA_FUNCTION_NAME": name,
        "AWS_REGION": "us-east-1",
        "GREETING": "hi",
        "_HANDLER": "index.handler",
    }
    # console.log lines carry AWS's prefix: time, request id, level
    assert re.search(
        rf"^\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{{3}}Z\t{body['awsRequestId']}\tINFO\t"
        r'hello from node \{"x":1\}$',
        response["Log"],
        re.M,
    )
    assert f"START RequestId: {body['awsRequestId']} Version: $LATEST" in response["Log"]
    assert re.search(
        r"^REPORT RequestId: .*\tInit Duration: \d+\.\d\d ms\t$", response["Log"], re.M
    )

    warm = invoke(lam, name)
    assert warm["Body"]["count"] == 2 and warm["Body"]["pid"] == body["pid"]
    assert "Init Duration" not in warm["Log"]


def test_client_context_reaches_node(lam: Any) -> None:
    name = node(lam, {"index.js": CONTEXT_HANDLER})
    document = {"custom": {"k": "v"}, "env": {"e": "1"}, "client": {"installation_id": "i"}}
    encoded = base64.b64encode(json.dumps(document).encode()).decode()
    body = invoke(lam, name, ClientContext=encoded)["Body"]
    assert body["clientContext"]["custom"] == {"k": "v"}
    assert body["clientContext"]["env"] == {"e": "1"}


@pytest.mark.parametrize(
    "source",
    [
        "exports.handler = (event, context, callback) => { callback(null, {style: 'callback'}); };",
        "exports.handler = (event, context) => { context.succeed({style: 'callback'}); };",
        "exports.handler = (event, context) => { context.done(null, {style: 'callback'}); };",
        "exports.handler = function (event, context, callback) {\n"
        "  setTimeout(() => callback(null, {style: 'callback'}), 50);\n};",
    ],
    ids=["callback", "succeed", "done", "callback-later"],
)
def test_callback_style_handlers(lam: Any, source: str) -> None:
    name = node(lam, {"index.js": source})
    response = invoke(lam, name)
    assert "FunctionError" not in response
    assert response["Body"] == {"style": "callback"}


def test_callback_waits_for_the_event_loop(lam: Any) -> None:
    source = """
exports.handler = (event, context, callback) => {
  setTimeout(() => console.log('timer fired'), 300);
  callback(null, 'answered');
};
"""
    name = node(lam, {"index.js": source})
    response = invoke(lam, name)
    assert response["Body"] == "answered"
    lines = response["Log"].splitlines()
    fired = [i for i, line in enumerate(lines) if line.endswith("\tINFO\ttimer fired")]
    end = [i for i, line in enumerate(lines) if line.startswith("END RequestId:")]
    assert fired and end and fired[0] < end[0], "the response came before the event loop emptied"


def test_callback_can_skip_waiting_for_the_event_loop(lam: Any) -> None:
    source = """
exports.handler = (event, context, callback) => {
  context.callbackWaitsForEmptyEventLoop = false;
  setTimeout(() => console.log('timer fired'), 2000);
  callback(null, 'answered');
};
"""
    name = node(lam, {"index.js": source}, Timeout=10)
    response = invoke(lam, name)
    assert response["Body"] == "answered"
    assert "timer fired" not in response["Log"]


def test_esm_handler(lam: Any) -> None:
    source = """
import { platform } from 'node:os';
export const handler = async (event, context) => ({ esm: true, platform: platform(),
  id: context.awsRequestId });
"""
    name = node(lam, {"index.mjs": source})
    body = invoke(lam, name)["Body"]
    assert body["esm"] is True and body["platform"] == "linux"
    assert re.fullmatch(REQUEST_ID, body["id"])


def test_thrown_error_shape(lam: Any) -> None:
    source = """
exports.handler = async () => { throw new TypeError("bad input"); };
"""
    name = node(lam, {"index.js": source})
    response = invoke(lam, name)
    assert response["StatusCode"] == 200
    assert response["FunctionError"] == "Unhandled"
    body = response["Body"]
    assert body["errorType"] == "TypeError"
    assert body["errorMessage"] == "bad input"
    assert isinstance(body["trace"], list)
    assert body["trace"][0] == "TypeError: bad input"
    assert re.search(r"\tERROR\tInvoke Error \t", response["Log"])
    # the environment survives and serves again
    assert invoke(lam, name)["FunctionError"] == "Unhandled"


def test_callback_error(lam: Any) -> None:
    source = "exports.handler = (e, c, cb) => cb(new Error('via callback'));"
    name = node(lam, {"index.js": source})
    response = invoke(lam, name)
    assert response["FunctionError"] == "Unhandled"
    assert response["Body"]["errorType"] == "Error"
    assert response["Body"]["errorMessage"] == "via callback"


@pytest.mark.parametrize(
    ("files", "handler", "error_type", "message"),
    [
        (
            {"index.js": "exports.handler = async () => 1;"},
            "nope.handler",
            "Runtime.ImportModuleError",
            "Error: Cannot find module 'nope'",
        ),
        (
            {"index.js": "exports.handler = async () => 1;"},
            "index.missing",
            "Runtime.HandlerNotFound",
            "index.missing is undefined or not exported",
        ),
        (
            {"index.js": "exports.handler = async () => {;"},
            "index.handler",
            "Runtime.UserCodeSyntaxError",
            "SyntaxError:",
        ),
        (
            {"index.js": "throw new RangeError('at import');\nexports.handler = 1;"},
            "index.handler",
            "RangeError",
            "at import",
        ),
    ],
    ids=["missing-module", "missing-handler", "syntax-error", "import-time-exception"],
)
def test_init_errors(
    lam: Any, files: dict[str, str], handler: str, error_type: str, message: str
) -> None:
    name = node(lam, files, handler=handler)
    response = invoke(lam, name)
    assert response["FunctionError"] == "Unhandled"
    assert response["Body"]["errorType"] == error_type
    assert response["Body"]["errorMessage"].startswith(message)
    assert f"Error Type: {error_type}" in response["Log"]
    # and again: each invocation gets a fresh environment that fails the same way
    assert invoke(lam, name)["Body"]["errorType"] == error_type


def test_timeout(lam: Any) -> None:
    source = """
const tag = 'lbd' + require('crypto').randomBytes(6).toString('hex');
process.title = tag;
let count = 0;
exports.handler = async (event) => {
  count += 1;
  if (event.sleep) await new Promise((r) => setTimeout(r, event.sleep));
  return { count, tag };
};
"""
    name = node(lam, {"index.js": source}, Timeout=1)
    first = invoke(lam, name)["Body"]
    assert live_processes(first["tag"])
    response = invoke(lam, name, {"sleep": 5000})
    match = re.search(rf"START RequestId: ({REQUEST_ID})", response["Log"])
    assert match
    request_id = match.group(1)
    assert response["FunctionError"] == "Unhandled"
    assert response["Body"] == {
        "errorType": "Sandbox.Timedout",
        "errorMessage": f"RequestId: {request_id} Error: Task timed out after 1.00 seconds",
    }
    assert "Task timed out after 1.00 seconds" in response["Log"]
    assert wait_for(lambda: gone(first["tag"])), "the timed-out environment lives on"
    assert invoke(lam, name)["Body"]["count"] == 1


def test_process_exit_is_a_runtime_exit_error(lam: Any) -> None:
    name = node(lam, {"index.js": "exports.handler = async () => { process.exit(7); };"})
    response = invoke(lam, name)
    assert response["Body"]["errorType"] == "Runtime.ExitError"
    assert response["Body"]["errorMessage"].endswith("Runtime exited with error: exit status 7")


STAGED_PROBE = """
const importedAt = Date.now() / 1000;
exports.handler = async () => ({
  imported_at: importedAt,
  variables: Object.keys(process.env).filter((k) => k.startsWith('LAMBDAD')).sort(),
});
"""


def test_a_deployed_function_takes_its_staged_environment(server: Server, lam: Any) -> None:
    # The bootstrap sets up ahead, then waits on GET /runtime/lambdad/wait: the handler's
    # module is loaded (init) only for the invocation that takes the environment.
    body = check_a_deployed_function_takes_its_staged_environment(
        server, lam, {"index.js": STAGED_PROBE}, runtime="nodejs20.x", handler="index.handler"
    )
    assert "LAMBDAD_STAGED" not in body["variables"]  # (the bootstrap took it out)


def test_server_stop_kills_a_busy_node_environment(tmp_path: Path) -> None:
    srv = start_server(tmp_path / "data")
    tag = "lbd" + uuid.uuid4().hex[:12]
    source = """
exports.handler = async (event) => {
  process.title = event.tag;
  await new Promise((r) => setTimeout(r, 20000));
  return 'late';
};
"""
    try:
        lam = srv.client()
        name = node(lam, {"index.js": source}, Timeout=60)
        lam.invoke(FunctionName=name, InvocationType="Event", Payload=json.dumps({"tag": tag}))
        assert wait_for(lambda: bool(live_processes(tag))), "the Event invocation never started"
    finally:
        srv.stop()
    assert wait_for(lambda: gone(tag), timeout=10), "node environment outlived the server"
