"""Java managed runtimes (java17/java21) through boto3 against a real, sandboxed `lambdad serve`.

Handlers are compiled here with ``javac --release 17`` against the runtime's API jar (what
``build.ensure_built()`` returns first) and packaged the way AWS documents: classes at the
ZIP root (``com/example/...class``) with dependencies in ``lib/*.jar``, or everything in
``lib/*.jar``. Covers a ``RequestHandler<Map, Map>``, a POJO handler and a
``RequestStreamHandler``; echo and context, errors, timeouts, logs, warm reuse,
AWS_EXECUTION_ENV, and a deployed function's staged environment (its init run for its first
invocation).
"""

from __future__ import annotations

import io
import subprocess
import textwrap
import zipfile
from typing import Any

import pytest

from lambdad.runtime.bootstraps.java import build
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
from tests.e2e.test_staged import check_a_deployed_function_takes_its_staged_environment

# Not `slow`: at MEMORY (1024 MB, ~0.6 vCPU) a cold start takes 0.4-0.8 s here; below
# 512 MB the CPU share makes it more than a second.
pytestmark = pytest.mark.toolchain

RUNTIMES = ("java17", "java21")
MEMORY = 1024

SOURCES = {
    "com/example/Echo.java": """
        package com.example;

        import com.amazonaws.services.lambda.runtime.Context;
        import com.amazonaws.services.lambda.runtime.RequestHandler;
        import com.example.lib.Greeter;
        import java.util.LinkedHashMap;
        import java.util.Map;

        public class Echo implements RequestHandler<Map<String, Object>, Map<String, Object>> {
            private static int count;

            @Override
            public Map<String, Object> handleRequest(Map<String, Object> event, Context context) {
                count++;
                System.out.println(Greeter.greet("java") + " " + context.getAwsRequestId());
                System.err.println("to stderr " + context.getAwsRequestId());
                context.getLogger().log("via LambdaLogger " + context.getAwsRequestId());
                if (event.containsKey("fail")) {
                    throw new IllegalStateException("java says no", // THROW
                            new IllegalArgumentException("the cause"));
                }
                if (event.containsKey("sleep")) {
                    try {
                        Thread.sleep(((Number) event.get("sleep")).longValue() * 1000);
                    } catch (InterruptedException e) {
                        Thread.currentThread().interrupt();
                    }
                }
                Map<String, Object> out = new LinkedHashMap<>();
                out.put("event", event);
                out.put("count", count);
                out.put("pid", ProcessHandle.current().pid());
                out.put("awsRequestId", context.getAwsRequestId());
                out.put("functionName", context.getFunctionName());
                out.put("functionVersion", context.getFunctionVersion());
                out.put("invokedFunctionArn", context.getInvokedFunctionArn());
                out.put("memoryLimitInMB", context.getMemoryLimitInMB());
                out.put("remainingMs", context.getRemainingTimeInMillis());
                out.put("logGroupName", context.getLogGroupName());
                out.put("logStreamName", context.getLogStreamName());
                out.put("executionEnv", System.getenv("AWS_EXECUTION_ENV"));
                return out;
            }
        }
    """,
    "com/example/lib/Greeter.java": """
        package com.example.lib;

        public final class Greeter {
            public static String greet(String who) {
                return "hello from " + who;
            }
        }
    """,
    "com/example/Order.java": """
        package com.example;

        import java.util.List;

        public class Order {
            private String customer;
            private List<Integer> quantities;
            private boolean express;

            public String getCustomer() { return customer; }
            public void setCustomer(String customer) { this.customer = customer; }
            public List<Integer> getQuantities() { return quantities; }
            public void setQuantities(List<Integer> quantities) { this.quantities = quantities; }
            public boolean isExpress() { return express; }
            public void setExpress(boolean express) { this.express = express; }
        }
    """,
    "com/example/Receipt.java": """
        package com.example;

        public class Receipt {
            private final String message;
            private final int items;
            private final String note = null;

            public Receipt(String message, int items) {
                this.message = message;
                this.items = items;
            }

            public String getMessage() { return message; }
            public int getItems() { return items; }
            public String getNote() { return note; }
        }
    """,
    "com/example/PojoHandler.java": """
        package com.example;

        import com.amazonaws.services.lambda.runtime.Context;
        import com.amazonaws.services.lambda.runtime.RequestHandler;

        public class PojoHandler implements RequestHandler<Order, Receipt> {
            @Override
            public Receipt handleRequest(Order order, Context context) {
                int items = order.getQuantities().stream().mapToInt(Integer::intValue).sum();
                String how = order.isExpress() ? "express" : "standard";
                return new Receipt(order.getCustomer() + ": " + how, items);
            }
        }
    """,
    "com/example/StreamHandler.java": """
        package com.example;

        import com.amazonaws.services.lambda.runtime.Context;
        import com.amazonaws.services.lambda.runtime.RequestStreamHandler;
        import java.io.IOException;
        import java.io.InputStream;
        import java.io.OutputStream;
        import java.nio.charset.StandardCharsets;

        public class StreamHandler implements RequestStreamHandler {
            @Override
            public void handleRequest(InputStream in, OutputStream out, Context context)
                    throws IOException {
                byte[] body = in.readAllBytes();
                context.getLogger().log("stream got " + body.length + " bytes\\n");
                out.write(("stream(" + context.getFunctionName() + "):").getBytes(
                        StandardCharsets.UTF_8));
                out.write(body);
            }
        }
    """,
    "com/example/Probe.java": """
        package com.example;

        import com.amazonaws.services.lambda.runtime.Context;
        import com.amazonaws.services.lambda.runtime.RequestHandler;
        import java.util.LinkedHashMap;
        import java.util.Map;

        public class Probe implements RequestHandler<Map<String, Object>, Map<String, Object>> {
            private static final double IMPORTED_AT = System.currentTimeMillis() / 1000.0;

            @Override
            public Map<String, Object> handleRequest(Map<String, Object> event, Context context) {
                Map<String, Object> out = new LinkedHashMap<>();
                out.put("imported_at", IMPORTED_AT);
                out.put("initialization_type", System.getenv("AWS_LAMBDA_INITIALIZATION_TYPE"));
                out.put("staged", System.getenv("LAMBDAD_STAGED"));
                return out;
            }
        }
    """,
}
THROW_LINE = next(
    i
    for i, line in enumerate(textwrap.dedent(SOURCES["com/example/Echo.java"]).splitlines(), 1)
    if "// THROW" in line
)


def _jar(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in sorted(entries.items()):
            archive.writestr(name, data)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def java(server: Server) -> Server:
    require_runtimes(server, *RUNTIMES)
    return server


@pytest.fixture(scope="module")
def packages(java: Server, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, bytes]]:
    """The function's files: "root" (classes at the ZIP root, the dependency in lib/*.jar) and
    "lib" (everything in lib/*.jar)."""
    api_jar = build.ensure_built()[0]  # the API types, what a function compiles against
    base = tmp_path_factory.mktemp("java-fn")
    src, classes = base / "src", base / "classes"
    for name, text in SOURCES.items():
        path = src / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    classes.mkdir()
    javac = subprocess.run(
        ["javac", "--release", "17", "-g", "-cp", api_jar, "-d", str(classes)]
        + [str(p) for p in sorted(src.rglob("*.java"))],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert javac.returncode == 0, javac.stderr
    compiled = {
        p.relative_to(classes).as_posix(): p.read_bytes() for p in sorted(classes.rglob("*.class"))
    }
    dependency = {k: v for k, v in compiled.items() if k.startswith("com/example/lib/")}
    own = {k: v for k, v in compiled.items() if k not in dependency}
    assert "com/example/Echo.class" in own and dependency
    return {
        "root": {**own, "lib/greeter-1.0.jar": _jar(dependency)},
        "lib": {"lib/function-1.0.jar": _jar(compiled)},
    }


def deploy(lam: Any, files: dict[str, bytes], handler: str, **kwargs: Any) -> str:
    kwargs.setdefault("MemorySize", MEMORY)
    kwargs.setdefault("runtime", "java17")
    return create_function(lam, files, handler=handler, **kwargs)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_map_handler_echo_context_logs_and_warm_reuse(
    lam: Any, packages: dict[str, dict[str, bytes]], runtime: str
) -> None:
    name = deploy(
        lam, packages["root"], "com.example.Echo::handleRequest", runtime=runtime, Timeout=15
    )
    first = invoke(lam, name, EVENT)
    body = check_echo(
        first,
        name=name,
        event=EVENT,
        memory=MEMORY,
        timeout=15,
        execution_env=f"AWS_Lambda_{runtime}",
    )
    assert body["count"] == 1
    report_init("java", runtime, MEMORY, first)
    request_id = body["awsRequestId"]
    lines = first.log.splitlines()
    assert f"hello from java {request_id}" in lines  # Greeter came from lib/greeter-1.0.jar
    assert f"to stderr {request_id}" in lines
    assert f"via LambdaLogger {request_id}" in first.log
    check_warm(lam, name, body)


def test_thrown_exception_shape_and_the_environment_survives(
    lam: Any, packages: dict[str, dict[str, bytes]]
) -> None:
    name = deploy(lam, packages["root"], "com.example.Echo::handleRequest", Timeout=15)
    assert invoke(lam, name).body["count"] == 1
    failed = invoke(lam, name, {"fail": True})
    body = check_unhandled(failed)
    assert list(body) == ["errorMessage", "errorType", "stackTrace", "cause"]
    assert body["errorMessage"] == "java says no"
    assert body["errorType"] == "java.lang.IllegalStateException"
    assert body["stackTrace"][0] == f"com.example.Echo.handleRequest(Echo.java:{THROW_LINE})"
    assert all(isinstance(frame, str) for frame in body["stackTrace"])
    assert not any("lambdad.runtime" in frame for frame in body["stackTrace"])
    assert body["cause"]["errorMessage"] == "the cause"
    assert body["cause"]["errorType"] == "java.lang.IllegalArgumentException"
    assert f"hello from java {failed.request_id}" in failed.log
    assert "java.lang.IllegalStateException: java says no" in failed.log
    assert f"\tat com.example.Echo.handleRequest(Echo.java:{THROW_LINE})" in failed.log
    assert "Caused by: java.lang.IllegalArgumentException: the cause" in failed.log
    again = invoke(lam, name)
    assert again.function_error is None and again.init_ms is None, again.explain()
    assert again.body["count"] == 3


def test_pojo_handler_from_lib_jar(lam: Any, packages: dict[str, dict[str, bytes]]) -> None:
    name = deploy(lam, packages["lib"], "com.example.PojoHandler", runtime="java21")
    inv = invoke(lam, name, {"customer": "Ann", "quantities": [2, 3], "express": True, "x": 1})
    assert inv.function_error is None, inv.explain()
    # null properties are left out, like AWS's serialiser
    assert inv.body == {"message": "Ann: express", "items": 5}
    bad = invoke(lam, name, {"customer": "Bob", "quantities": "many"})
    body = check_unhandled(bad)
    assert body["errorMessage"] == "An error occurred during JSON parsing"
    assert body["errorType"] == "java.lang.RuntimeException"


def test_request_stream_handler_gets_the_raw_bytes(
    lam: Any, packages: dict[str, dict[str, bytes]]
) -> None:
    name = deploy(lam, packages["root"], "com.example.StreamHandler")
    raw = b'{ "spacing" :  "kept",\n "n": 1.50 }'
    inv = invoke(lam, name, raw=raw)
    assert inv.function_error is None, inv.explain()
    assert inv.raw == f"stream({name}):".encode() + raw
    assert f"stream got {len(raw)} bytes" in inv.log


def test_timeout_then_a_fresh_environment(lam: Any, packages: dict[str, dict[str, bytes]]) -> None:
    name = deploy(lam, packages["root"], "com.example.Echo::handleRequest", Timeout=1)
    check_timeout(lam, name, {"sleep": 3})


def test_a_missing_dependency_jar_is_a_java_error(
    lam: Any, packages: dict[str, dict[str, bytes]]
) -> None:
    """Without lib/greeter-1.0.jar the handler's dependency is missing: a Java error, not a
    crash of the runtime."""
    files = {k: v for k, v in packages["root"].items() if not k.startswith("lib/")}
    name = deploy(lam, files, "com.example.Echo::handleRequest", Timeout=15)
    body = check_unhandled(invoke(lam, name))
    assert body["errorType"] == "java.lang.NoClassDefFoundError"
    assert "com/example/lib/Greeter" in body["errorMessage"]


def test_a_dependency_supplied_by_a_layer(lam: Any, packages: dict[str, dict[str, bytes]]) -> None:
    """The dependency jar comes from a layer's java/lib (AWS puts /opt/java/lib/* on the
    classpath) instead of the function's own lib/."""
    layer_jar = packages["root"]["lib/greeter-1.0.jar"]
    layer = lam.publish_layer_version(
        LayerName=unique_name("greeter"),
        Content={"ZipFile": make_zip({"java/lib/greeter-1.0.jar": layer_jar})},
    )["LayerVersionArn"]
    files = {k: v for k, v in packages["root"].items() if not k.startswith("lib/")}
    name = deploy(lam, files, "com.example.Echo::handleRequest", Layers=[layer])
    inv = invoke(lam, name, {"hello": "layer"})
    assert inv.function_error is None, inv.explain()


def test_a_deployed_function_takes_its_staged_environment(
    java: Server, lam: Any, packages: dict[str, dict[str, bytes]]
) -> None:
    """The JVM and the runtime client start ahead; the handler's class (its static
    initialiser: IMPORTED_AT) is loaded only when the first invocation arrives."""
    files: dict[str, Any] = dict(packages["root"])  # (make_zip takes bytes too)
    body = check_a_deployed_function_takes_its_staged_environment(
        java,
        lam,
        files,
        runtime="java17",
        handler="com.example.Probe::handleRequest",
        MemorySize=MEMORY,
    )
    assert body["initialization_type"] == "on-demand"
    assert body.get("staged") is None  # (lambdad gives a JVM no such variable: Bootstrap.java)
