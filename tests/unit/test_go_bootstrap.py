"""A stdlib-only Go `bootstrap` (provided.al2023 / provided.al2 / go1.x) against a fake
Runtime API, started the way a provided runtime starts it (skipped when `go` is missing)."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from fake_runtime_api import BootstrapHarness, CapturedProcess, FakeRuntimeAPI, reserved_env

from tests.fixtures.go.build import ECHO_DIR, build_go_bootstrap, go_available

pytestmark = [
    pytest.mark.skipif(not go_available(), reason="go (golang-go) is not installed"),
    pytest.mark.toolchain,
]


@pytest.fixture(scope="module")
def code_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The function's code directory, as /var/task: `bootstrap` plus a go1.x-style copy."""
    root = tmp_path_factory.mktemp("go-task")
    build_go_bootstrap(ECHO_DIR, root / "bootstrap")
    shutil.copy2(root / "bootstrap", root / "hello")  # go1.x: _HANDLER names the binary
    return root


class Harness(BootstrapHarness):
    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root

    def start(
        self,
        executable: str = "bootstrap",
        handler: str = "handler.name.ignored",
        api_options: dict[str, bool] | None = None,
        **extra: str,
    ) -> tuple[FakeRuntimeAPI, CapturedProcess]:
        return self.launch(
            [str(self.root / executable)],
            lambda api: reserved_env(  # what a provided runtime gives (no AWS_EXECUTION_ENV)
                api,
                handler,
                self.root,
                **{
                    "PATH": "/usr/local/bin:/usr/bin/:/bin:/opt/bin",
                    "LD_LIBRARY_PATH": "/lib64:/usr/lib64:/var/runtime:/var/runtime/lib:/var/task:"
                    "/var/task/lib:/opt/lib",
                    "AWS_LAMBDA_FUNCTION_NAME": "gofn",
                    "AWS_LAMBDA_FUNCTION_VERSION": "7",
                    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
                    "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/gofn",
                    "AWS_LAMBDA_LOG_STREAM_NAME": "2024/01/01/[7]0123456789abcdef",
                    "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
                    **extra,
                },
            ),
            self.root,
            api_options,
        )


@pytest.fixture
def harness(code_dir: Path) -> Iterator[Harness]:
    h = Harness(code_dir)
    try:
        yield h
    finally:
        h.close()


def test_echo_with_context_and_log(harness: Harness) -> None:
    api, proc = harness.start()
    deadline = int(time.time() * 1000) + 30_000
    identity = {"cognitoIdentityId": "id-9", "cognitoIdentityPoolId": "pool-9"}
    client_context = {"client": {"installation_id": "i-1"}, "custom": {"k": "v"}, "env": {}}
    event = {"hello": "wörld", "n": [1, 2.5, None, True]}
    result = api.invoke(
        event,
        request_id="go-req-1",
        deadline_ms=deadline,
        identity=identity,
        client_context=client_context,
        function_arn="arn:aws:lambda:us-east-1:123456789012:function:gofn:prod",
    )
    assert result.kind == "response", result.body
    # aws-lambda-go posts responses as application/octet-stream
    assert result.headers["content-type"] == "application/octet-stream"
    body = result.json()
    assert body["event"] == event
    ctx = body["context"]
    assert ctx["awsRequestId"] == "go-req-1"
    assert ctx["deadlineMs"] == deadline
    assert 20_000 < ctx["remainingMs"] <= 30_000
    assert ctx["invokedFunctionArn"] == "arn:aws:lambda:us-east-1:123456789012:function:gofn:prod"
    assert ctx["traceId"].startswith("Root=1-5759e988")
    assert ctx["functionName"] == "gofn"
    assert ctx["functionVersion"] == "7"
    assert ctx["memoryLimitInMB"] == 256
    assert ctx["logGroupName"] == "/aws/lambda/gofn"
    assert ctx["logStreamName"] == "2024/01/01/[7]0123456789abcdef"
    assert ctx["identity"] == identity
    assert ctx["clientContext"] == client_context
    assert body["process"]["executable"] == "bootstrap"
    assert body["process"]["cwd"] == str(harness.root)
    assert body["process"]["pid"] == proc.proc.pid
    # one log line per invocation, written before the response was posted
    assert "echo: go-req-1 " in (result.log or "")

    # warm: same process, state kept
    second = api.invoke({"again": True}, request_id="go-req-2").json()
    assert second["process"]["pid"] == proc.proc.pid
    assert second["process"]["invocationSeen"] == 2
    assert second["context"]["awsRequestId"] == "go-req-2"
    assert "echo: go-req-2 " in proc.output()


def test_error_shape_and_header(harness: Harness) -> None:
    api, proc = harness.start()
    result = api.invoke({"fail": True}, request_id="go-err-1")
    assert result.kind == "error"
    assert result.error_type == "requestedFailure"
    assert result.headers["content-type"] == "application/json"
    assert result.json() == {
        "errorMessage": "failure requested by the event",
        "errorType": "requestedFailure",
    }
    assert '"errorType":"requestedFailure"' in (result.log or "")
    # the environment keeps serving after a handled error
    assert api.invoke({"ok": 1}).kind == "response"
    assert proc.proc.poll() is None


def test_panic_reports_stack_and_exits(harness: Harness) -> None:
    api, proc = harness.start()
    result = api.invoke({"panic": True})
    assert result.kind == "error"
    body = result.json()
    assert body["errorType"] == "string"
    assert body["errorMessage"] == "panic requested by the event"
    assert body["stackTrace"] and {"path", "line", "label"} <= set(body["stackTrace"][0])
    assert any(frame["label"] == "handle" for frame in body["stackTrace"])
    assert proc.wait(10) == 1


def test_init_error(harness: Harness) -> None:
    api, proc = harness.start(ECHO_INIT_FAIL="missing config")
    error = api.wait_init_error()
    assert error.error_type == "Runtime.InitError"
    assert error.json() == {
        "errorMessage": "init failure requested: missing config",
        "errorType": "Runtime.InitError",
    }
    assert proc.wait(10) == 1
    assert api.next_calls == 0


def test_go1x_style_binary_named_by_handler(harness: Harness) -> None:
    api, _ = harness.start("hello", handler="hello", AWS_EXECUTION_ENV="AWS_Lambda_go1.x")
    body = api.invoke({"x": 1}).json()
    assert body["process"]["executable"] == "hello"
    assert body["process"]["handler"] == "hello"
    assert body["process"]["executionEnv"] == "AWS_Lambda_go1.x"


def test_reconnects_and_chunked_responses(harness: Harness) -> None:
    api, _ = harness.start(api_options={"chunked": True, "close_connections": True})
    for i in range(3):
        result = api.invoke({"i": i, "pad": "y" * 100_000})
        assert result.kind == "response"
        assert json.loads(result.body)["event"]["i"] == i


def test_many_warm_invocations_on_one_connection(harness: Harness) -> None:
    api, proc = harness.start()
    ids = [api.enqueue({"i": i}) for i in range(50)]
    for i, rid in enumerate(ids):
        body = api.wait_result(rid).json()
        assert body["event"] == {"i": i}
        assert body["process"]["invocationSeen"] == i + 1
    assert proc.proc.poll() is None
    assert os.path.exists(harness.root / "bootstrap")
