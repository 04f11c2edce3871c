"""Go functions through boto3 against a real, sandboxed `lambdad serve`: the stdlib-only echo
fixture (tests/fixtures/go/echo) as a provided.al2023 `bootstrap` and as a legacy go1.x
executable named by the handler. Echo and context, errors (returned and panics), timeouts,
logs, warm reuse, and no AWS_EXECUTION_ENV.

The fixture is built once per session, with one extra file in its package: an init() that
prints whether AWS_EXECUTION_ENV is set at all (the echo itself cannot tell unset from empty).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import Server, create_function, make_zip, unique_name
from tests.e2e.lang_support import (
    EVENT,
    check_echo,
    check_timeout,
    check_unhandled,
    check_warm,
    invoke,
    report_init,
    require_runtimes,
)
from tests.fixtures.go.build import ECHO_DIR, build_go_bootstrap, go_available

pytestmark = pytest.mark.toolchain

MEMORY = 1024
# (runtime, file name in the ZIP, handler)
FORMS = [
    pytest.param("provided.al2023", "bootstrap", "function.handler", id="provided.al2023"),
    pytest.param("go1.x", "hello", "hello", id="go1.x"),
]

ENV_PROBE = """\
package main

import (
	"fmt"
	"os"
)

func init() {
	value, set := os.LookupEnv("AWS_EXECUTION_ENV")
	fmt.Printf("probe: AWS_EXECUTION_ENV set=%t value=%q\\n", set, value)
}
"""


@pytest.fixture(scope="session")
def go_binary(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    if not go_available():
        pytest.skip("go (Debian package golang-go) is not installed: cannot build the fixture")
    src = tmp_path_factory.mktemp("go-echo-src") / "echo"
    shutil.copytree(ECHO_DIR, src)
    (src / "zz_env_probe.go").write_text(ENV_PROBE)
    out = build_go_bootstrap(src, tmp_path_factory.mktemp("go-echo-bin") / "bootstrap")
    return out.read_bytes()


@pytest.fixture(scope="module")
def go(server: Server) -> Server:
    require_runtimes(server, "provided.al2023", "go1.x")
    return server


@pytest.fixture
def deploy(go: Server, lam: Any, go_binary: bytes) -> Callable[..., str]:
    def deploy(runtime: str, filename: str, handler: str, **kwargs: Any) -> str:
        kwargs.setdefault("MemorySize", MEMORY)
        return create_function(
            lam,
            {filename: go_binary},
            runtime=runtime,
            handler=handler,
            modes={filename: 0o755},
            **kwargs,
        )

    return deploy


def shape(document: dict[str, Any]) -> dict[str, Any]:
    """The fixture's document in the shape every language's echo shares."""
    context, process = document["context"], document["process"]
    return {
        **context,
        "event": document["event"],
        "count": process["invocationSeen"],
        "pid": process["pid"],
        "executionEnv": process["executionEnv"] or None,
    }


@pytest.mark.parametrize(("runtime", "filename", "handler"), FORMS)
def test_echo_context_logs_and_warm_reuse(
    deploy: Callable[..., str], lam: Any, runtime: str, filename: str, handler: str
) -> None:
    name = deploy(runtime, filename, handler, Timeout=10)
    event = {**EVENT, "log": "hello from go"}
    first = invoke(lam, name, event, shape=shape)
    body = check_echo(first, name=name, event=event, memory=MEMORY, timeout=10, execution_env=None)
    assert body["count"] == 1
    report_init("go", runtime, MEMORY, first)
    process = first.document["process"]
    assert process["executable"] == process["argv0"] == filename
    assert process["handler"] == handler
    assert process["cwd"] == process["taskRoot"] == "/var/task"
    lines = first.log.splitlines()
    # the init output comes before START, the handler's inside the invocation
    start = lines.index(f"START RequestId: {first.request_id} Version: $LATEST")
    assert lines.index('probe: AWS_EXECUTION_ENV set=false value=""') < start
    assert lines.index(f'echo: init pid={body["pid"]} exe={filename} handler="{handler}"') < start
    assert lines.index("hello from go") > start
    assert any(line.startswith(f"echo: {first.request_id} ") for line in lines[start:])
    check_warm(lam, name, body, shape=shape)


@pytest.mark.parametrize(("runtime", "filename", "handler"), FORMS)
def test_returned_error_shape_and_the_environment_survives(
    deploy: Callable[..., str], lam: Any, runtime: str, filename: str, handler: str
) -> None:
    name = deploy(runtime, filename, handler)
    assert invoke(lam, name, shape=shape).body["count"] == 1
    failed = invoke(lam, name, {"fail": True})
    body = check_unhandled(failed)
    # aws-lambda-go's shape for a returned error: the error's type name, no stack trace
    expected = {"errorMessage": "failure requested by the event", "errorType": "requestedFailure"}
    assert body == expected
    assert (
        '{"errorMessage":"failure requested by the event","errorType":"requestedFailure"}'
        in failed.log.splitlines()
    )
    again = invoke(lam, name, shape=shape)
    assert again.function_error is None and again.init_ms is None, again.explain()
    assert again.body["count"] == 3


def test_panic_shape(deploy: Callable[..., str], lam: Any) -> None:
    name = deploy("provided.al2023", "bootstrap", "function.handler")
    failed = invoke(lam, name, {"panic": True})
    body = check_unhandled(failed)
    assert list(body) == ["errorMessage", "errorType", "stackTrace"]
    assert body["errorMessage"] == "panic requested by the event"
    assert body["errorType"] == "string"  # aws-lambda-go: the type of the panic's value
    frames = body["stackTrace"]
    assert frames and all(set(frame) == {"path", "line", "label"} for frame in frames)
    assert frames[0]["label"] == "handle" and frames[0]["path"].endswith("echo/main.go")
    # aws-lambda-go logs the error document before posting it (and exits after)
    assert any(
        line.startswith('{"errorMessage":"panic requested') for line in failed.log.split("\n")
    )


def test_the_invocation_after_a_panic_gets_a_new_environment(
    deploy: Callable[..., str], lam: Any
) -> None:
    name = deploy("provided.al2023", "bootstrap", "function.handler")
    assert invoke(lam, name, {"panic": True}).function_error == "Unhandled"
    after = invoke(lam, name, shape=shape)
    assert after.function_error is None, after.explain()
    assert after.body["count"] == 1


@pytest.mark.parametrize(("runtime", "filename", "handler"), FORMS)
def test_timeout_then_a_fresh_environment(
    deploy: Callable[..., str], lam: Any, runtime: str, filename: str, handler: str
) -> None:
    name = deploy(runtime, filename, handler, Timeout=1)
    check_timeout(lam, name, {"sleep_ms": 3000}, shape=shape)


def test_the_bootstrap_supplied_by_a_layer(go: Server, lam: Any, go_binary: bytes) -> None:
    """AWS runs /opt/bootstrap when the function's code has none: the Go binary from a layer."""
    layer = lam.publish_layer_version(
        LayerName=unique_name("gobin"),
        Content={"ZipFile": make_zip({"bootstrap": go_binary}, {"bootstrap": 0o755})},
    )["LayerVersionArn"]
    name = create_function(
        lam,
        {"README.txt": "the bootstrap comes from a layer"},
        runtime="provided.al2023",
        handler="unused",
        Layers=[layer],
    )
    reply = lam.invoke(FunctionName=name, Payload=b'{"from": "layer"}')
    assert reply.get("FunctionError") is None
    assert json.loads(reply["Payload"].read())["event"] == {"from": "layer"}
