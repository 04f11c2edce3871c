"""The Java runtime (java17/java21) against a fake Runtime API.

Handlers are compiled with javac against the runtime's own API jar into a temporary task root
(a classes directory, a ``lib/*.jar`` and a top-level function JAR variant), then run with the
launch command the platform uses. Skipped when java, javac or Debian's Jackson jars are missing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from fake_runtime_api import BootstrapHarness, CapturedProcess, FakeRuntimeAPI, reserved_env

from lambdad.runtime.bootstraps.java import build


def _toolchain_missing() -> str | None:
    if not build.java_available():
        return "java/javac not installed"
    try:
        build.find_jackson()
    except build.BuildError as e:
        return str(e)
    return None


MISSING = _toolchain_missing()
pytestmark = [
    pytest.mark.skipif(MISSING is not None, reason=MISSING or ""),
    pytest.mark.toolchain,
]

TIMEOUT = 60.0  # a cold JVM on a busy machine

SOURCES: dict[str, str] = {
    "example/Echo.java": """
        package example;

        import com.amazonaws.services.lambda.runtime.Client;
        import com.amazonaws.services.lambda.runtime.ClientContext;
        import com.amazonaws.services.lambda.runtime.CognitoIdentity;
        import com.amazonaws.services.lambda.runtime.Context;
        import com.amazonaws.services.lambda.runtime.LambdaRuntime;
        import com.amazonaws.services.lambda.runtime.RequestHandler;
        import java.nio.charset.StandardCharsets;
        import java.util.Arrays;
        import java.util.LinkedHashMap;
        import java.util.Map;

        public class Echo implements RequestHandler<Map<String, Object>, Map<String, Object>> {
            static int count;

            static {
                System.out.println("INIT Echo");
            }

            @Override
            public Map<String, Object> handleRequest(Map<String, Object> event, Context context) {
                count++;
                System.out.println("PRINT " + context.getAwsRequestId());
                System.err.println("STDERR " + context.getAwsRequestId());
                System.out.print("NO-NEWLINE " + context.getAwsRequestId());
                context.getLogger().log("LOGGER " + context.getAwsRequestId() + "\\n");
                LambdaRuntime.getLogger().log("BYTES\\n".getBytes(StandardCharsets.UTF_8));
                Map<String, Object> out = new LinkedHashMap<>();
                out.put("event", event);
                out.put("count", count);
                out.put("pid", ProcessHandle.current().pid());
                out.put("awsRequestId", context.getAwsRequestId());
                out.put("functionName", context.getFunctionName());
                out.put("functionVersion", context.getFunctionVersion());
                out.put("invokedFunctionArn", context.getInvokedFunctionArn());
                out.put("memoryLimitInMB", context.getMemoryLimitInMB());
                out.put("logGroupName", context.getLogGroupName());
                out.put("logStreamName", context.getLogStreamName());
                out.put("remaining", context.getRemainingTimeInMillis());
                CognitoIdentity id = context.getIdentity();
                out.put("identity", id == null ? "none"
                        : Arrays.asList(id.getIdentityId(), id.getIdentityPoolId()));
                ClientContext cc = context.getClientContext();
                if (cc == null) {
                    out.put("clientContext", "none");
                } else {
                    Map<String, Object> c = new LinkedHashMap<>();
                    Client cl = cc.getClient();
                    c.put("client", cl == null ? "none" : Arrays.asList(cl.getInstallationId(),
                            cl.getAppTitle(), cl.getAppVersionName(), cl.getAppVersionCode(),
                            cl.getAppPackageName()));
                    c.put("custom", cc.getCustom());
                    c.put("env", cc.getEnvironment());
                    out.put("clientContext", c);
                }
                out.put("trace", System.getProperty("com.amazonaws.xray.traceHeader", "none"));
                out.put("cwd", System.getProperty("user.dir"));
                out.put("maxHeapMb", Runtime.getRuntime().maxMemory() / (1024 * 1024));
                ClassLoader tccl = Thread.currentThread().getContextClassLoader();
                out.put("contextLoader", tccl == Echo.class.getClassLoader());
                out.put("unicode", "h\\u00e9llo \\u2603");
                try {
                    Class<?> jf = Class.forName("com.fasterxml.jackson.core.JsonFactory", false,
                            Echo.class.getClassLoader());
                    out.put("ownJackson", jf.getClassLoader() == Echo.class.getClassLoader());
                } catch (ClassNotFoundException e) {
                    out.put("ownJackson", "missing");
                }
                return out;
            }
        }
    """,
    "example/Person.java": """
        package example;

        import java.util.List;

        public class Person {
            public String name;
            private int age;
            private boolean vip;
            private List<String> tags;

            public int getAge() { return age; }
            public void setAge(int age) { this.age = age; }
            public boolean isVip() { return vip; }
            public void setVip(boolean vip) { this.vip = vip; }
            public List<String> getTags() { return tags; }
            public void setTags(List<String> tags) { this.tags = tags; }
        }
    """,
    "example/Greeting.java": """
        package example;

        public class Greeting {
            private final String message;
            private final int nextAge;
            public String missing;

            public Greeting(String message, int nextAge) {
                this.message = message;
                this.nextAge = nextAge;
            }

            public String getMessage() { return message; }
            public int getNextAge() { return nextAge; }
        }
    """,
    "example/PojoHandler.java": """
        package example;

        import com.amazonaws.services.lambda.runtime.Context;
        import com.amazonaws.services.lambda.runtime.RequestHandler;

        public class PojoHandler implements RequestHandler<Person, Greeting> {
            @Override
            public Greeting handleRequest(Person p, Context context) {
                String tags = p.getTags() == null ? "-" : String.join("+", p.getTags());
                return new Greeting("hi " + p.name + (p.isVip() ? " (vip) " : " ") + tags,
                        p.getAge() + 1);
            }
        }
    """,
    "example/Methods.java": """
        package example;

        import com.amazonaws.services.lambda.runtime.Context;
        import java.io.IOException;
        import java.io.InputStream;
        import java.io.OutputStream;
        import java.nio.charset.StandardCharsets;

        public class Methods {
            public static String upper(String s, Context context) {
                return s.toUpperCase() + "/" + context.getFunctionName();
            }

            // the (I) overload loses to (I, Context): a trailing Context weighs one more
            public static String upper(String s) {
                return "wrong overload";
            }

            public int twice(int n) {
                return n * 2;
            }

            public void stream(InputStream in, OutputStream out, Context context)
                    throws IOException {
                String body = new String(in.readAllBytes(), StandardCharsets.UTF_8);
                out.write(("stream:" + body).getBytes(StandardCharsets.UTF_8));
            }

            public static String noInput(Context context) {
                return context.getAwsRequestId();
            }
        }
    """,
    "example/Stream.java": """
        package example;

        import com.amazonaws.services.lambda.runtime.Context;
        import com.amazonaws.services.lambda.runtime.RequestStreamHandler;
        import java.io.IOException;
        import java.io.InputStream;
        import java.io.OutputStream;
        import java.nio.charset.StandardCharsets;

        public class Stream implements RequestStreamHandler {
            @Override
            public void handleRequest(InputStream in, OutputStream out, Context context)
                    throws IOException {
                String body = new String(in.readAllBytes(), StandardCharsets.UTF_8);
                out.write(("raw:" + body).getBytes(StandardCharsets.UTF_8));
            }
        }
    """,
    "example/Thrower.java": """
        package example;

        import com.amazonaws.services.lambda.runtime.Context;
        import com.amazonaws.services.lambda.runtime.RequestHandler;
        import java.util.Map;

        public class Thrower implements RequestHandler<Map<String, Object>, String> {
            @Override
            public String handleRequest(Map<String, Object> event, Context context) {
                System.out.println("before throw");
                if (Boolean.TRUE.equals(event.get("ok"))) {
                    return "fine";
                }
                Exception inner = new IllegalArgumentException("inner"); // INNER
                throw new IllegalStateException("boom", inner); // THROW
            }
        }
    """,
    "example/Levels.java": """
        package example;

        import com.amazonaws.services.lambda.runtime.Context;
        import com.amazonaws.services.lambda.runtime.LambdaLogger;
        import com.amazonaws.services.lambda.runtime.RequestHandler;
        import com.amazonaws.services.lambda.runtime.logging.LogLevel;

        public class Levels implements RequestHandler<Object, String> {
            @Override
            public String handleRequest(Object event, Context context) {
                LambdaLogger log = context.getLogger();
                log.log("debug msg", LogLevel.DEBUG);
                log.log("warn msg", LogLevel.WARN);
                log.log("plain msg");
                return "ok";
            }
        }
    """,
    "example/BadStatic.java": """
        package example;

        import com.amazonaws.services.lambda.runtime.Context;
        import com.amazonaws.services.lambda.runtime.RequestHandler;

        public class BadStatic implements RequestHandler<Object, Object> {
            static final int VALUE = explode();

            static int explode() {
                throw new IllegalStateException("static boom");
            }

            @Override
            public Object handleRequest(Object event, Context context) {
                return VALUE;
            }
        }
    """,
    "example/BadCtor.java": """
        package example;

        import com.amazonaws.services.lambda.runtime.Context;
        import com.amazonaws.services.lambda.runtime.RequestHandler;

        public class BadCtor implements RequestHandler<Object, Object> {
            public BadCtor() {
                throw new IllegalStateException("ctor boom");
            }

            @Override
            public Object handleRequest(Object event, Context context) {
                return null;
            }
        }
    """,
    "example/Plain.java": """
        package example;

        public class Plain {
        }
    """,
    # Implementing every interface with exactly aws-lambda-java-core 1.2.x's abstract methods
    # (all with @Override) fails to compile if ours differ.
    "example/compat/Doubles.java": """
        package example.compat;

        import com.amazonaws.services.lambda.runtime.Client;
        import com.amazonaws.services.lambda.runtime.ClientContext;
        import com.amazonaws.services.lambda.runtime.CognitoIdentity;
        import com.amazonaws.services.lambda.runtime.Context;
        import com.amazonaws.services.lambda.runtime.LambdaLogger;
        import java.util.Map;

        public final class Doubles {
            public static final class Ctx implements Context {
                @Override public String getAwsRequestId() { return null; }
                @Override public String getLogGroupName() { return null; }
                @Override public String getLogStreamName() { return null; }
                @Override public String getFunctionName() { return null; }
                @Override public String getFunctionVersion() { return null; }
                @Override public String getInvokedFunctionArn() { return null; }
                @Override public CognitoIdentity getIdentity() { return null; }
                @Override public ClientContext getClientContext() { return null; }
                @Override public int getRemainingTimeInMillis() { return 0; }
                @Override public int getMemoryLimitInMB() { return 0; }
                @Override public LambdaLogger getLogger() { return null; }
            }

            public static final class Logger implements LambdaLogger {
                @Override public void log(String message) { }
                @Override public void log(byte[] message) { }
            }

            public static final class Cl implements Client {
                @Override public String getInstallationId() { return null; }
                @Override public String getAppTitle() { return null; }
                @Override public String getAppVersionName() { return null; }
                @Override public String getAppVersionCode() { return null; }
                @Override public String getAppPackageName() { return null; }
            }

            public static final class Cc implements ClientContext {
                @Override public Client getClient() { return null; }
                @Override public Map<String, String> getCustom() { return null; }
                @Override public Map<String, String> getEnvironment() { return null; }
            }

            public static final class Id implements CognitoIdentity {
                @Override public String getIdentityId() { return null; }
                @Override public String getIdentityPoolId() { return null; }
            }
        }
    """,
}


# ---------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def runtime() -> list[str]:
    return build.ensure_built()


@pytest.fixture(scope="module")
def roots(runtime: list[str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Task roots: compiled classes, the same classes as lib/*.jar, and as a function JAR."""
    base = tmp_path_factory.mktemp("java-task")
    src = base / "src"
    for name, text in SOURCES.items():
        path = src / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    classes = base / "classes"
    classes.mkdir()
    cmd = [
        "javac",
        "-J-XX:TieredStopAtLevel=1",
        "-J-XX:+UseSerialGC",
        "--release",
        "17",
        "-g",
        "-cp",
        runtime[0],  # the API types only: what a function compiles against
        "-d",
        str(classes),
        *(str(p) for p in sorted(src.rglob("*.java"))),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr

    def jar(target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(target, "w") as zf:
            for path in sorted(classes.rglob("*.class")):
                zf.write(path, path.relative_to(classes).as_posix())

    lib_root = base / "lib-root"
    jar(lib_root / "lib" / "handlers.jar")
    # a function that bundles its own Jackson gets it, not the runtime's
    shutil.copyfile(runtime[2], lib_root / "lib" / "jackson-core-2.x.jar")
    jar_root = base / "jar-root"
    jar(jar_root / "function.jar")
    layer_root = base / "layer-root"  # an empty task root; the code comes from a layer
    layer_root.mkdir()
    jar(base / "opt-java" / "lib" / "layer.jar")
    return {"classes": classes, "lib": lib_root, "jar": jar_root, "layer": layer_root}


class Harness(BootstrapHarness):
    def __init__(self, roots: dict[str, Path]) -> None:
        super().__init__()
        self.roots = roots

    def start(
        self,
        handler: str,
        *,
        layout: str = "classes",
        memory: int = 256,
        jvm_args: tuple[str, ...] = (),
        api_options: dict[str, bool] | None = None,
        **extra_env: str,
    ) -> tuple[FakeRuntimeAPI, CapturedProcess]:
        root = self.roots[layout]
        argv = build.launch_command(memory)
        if layout == "layer":  # where the sandbox mounts layers' /opt/java
            jvm_args = (*jvm_args, f"-Dlambdad.optRoot={root.parent / 'opt-java'}")
        argv[1:1] = jvm_args
        return self.launch(
            argv,
            lambda api: reserved_env(
                api,
                handler,
                root,
                **{
                    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory),
                    "AWS_EXECUTION_ENV": "AWS_Lambda_java17",
                    **extra_env,
                },
            ),
            root,
            api_options,
        )


@pytest.fixture
def harness(roots: dict[str, Path]) -> Iterator[Harness]:
    h = Harness(roots)
    try:
        yield h
    finally:
        h.close()


def _line_of(source: str, marker: str) -> int:
    for number, line in enumerate(textwrap.dedent(SOURCES[source]).splitlines(), 1):
        if marker in line:
            return number
    raise AssertionError(marker)


# ---------------------------------------------------------------------------------------------
# Invocations
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["classes", "lib", "jar", "layer"])
def test_map_echo_context_logs_and_warm_reuse(harness: Harness, layout: str) -> None:
    api, proc = harness.start("example.Echo", layout=layout)
    client_context = {
        "client": {
            "installation_id": "inst",
            "app_title": "title",
            "app_version_name": "1.0",
            "app_version_code": "100",
            "app_package_name": "pkg",
        },
        "custom": {"k": "v", "n": 1},
        "env": {"platform": "Android"},
    }
    identity = {"cognitoIdentityId": "id-1", "cognitoIdentityPoolId": "pool-1"}
    first = api.invoke(
        {"a": [1, 2.5, "x", None, True]},
        timeout=TIMEOUT,
        request_id="req-1",
        client_context=client_context,
        identity=identity,
    )
    assert first.kind == "response", (first.body, proc.output())
    assert first.headers["content-type"] == "application/json"
    out = first.json()
    assert out["event"] == {"a": [1, 2.5, "x", None, True]}
    assert out["count"] == 1
    assert out["awsRequestId"] == "req-1"
    assert out["functionName"] == "fn"
    assert out["functionVersion"] == "$LATEST"
    assert out["invokedFunctionArn"] == "arn:aws:lambda:us-east-1:123456789012:function:fn"
    assert out["memoryLimitInMB"] == 256
    assert out["logGroupName"] == "/aws/lambda/fn"
    assert out["logStreamName"] == "2024/01/01/[$LATEST]abcdef"
    assert 0 < out["remaining"] <= 30000
    assert out["identity"] == ["id-1", "pool-1"]
    assert out["clientContext"] == {
        "client": ["inst", "title", "1.0", "100", "pkg"],
        "custom": {"k": "v", "n": "1"},
        "env": {"platform": "Android"},
    }
    assert out["trace"].startswith("Root=1-5759e988")
    assert out["cwd"] == str(harness.roots[layout])
    assert 150 <= out["maxHeapMb"] <= 218  # -Xmx = 85% of 256 MB
    assert out["contextLoader"] is True
    assert out["unicode"] == "h\u00e9llo \u2603"
    assert out["ownJackson"] is (layout == "lib")
    assert "h\u00e9llo".encode() in first.body  # UTF-8, not \\u escapes
    # everything the handler wrote reached the log before the response was posted
    assert first.log is not None
    for text in ("INIT Echo", "PRINT req-1", "STDERR req-1", "NO-NEWLINE req-1", "LOGGER req-1"):
        assert text in first.log
    assert "BYTES" in first.log

    second = api.invoke({"b": 2}, timeout=TIMEOUT, request_id="req-2", trace_id=None)
    assert second.kind == "response", second.body
    out2 = second.json()
    assert out2["count"] == 2
    assert out2["pid"] == out["pid"]
    assert out2["awsRequestId"] == "req-2"
    assert out2["identity"] == "none"
    assert out2["clientContext"] == "none"
    assert out2["trace"] == "none"
    assert proc.proc.poll() is None
    assert api.init_errors == []


def test_pojo_input_and_output(harness: Harness) -> None:
    api, proc = harness.start("example.PojoHandler")
    ok = api.invoke(
        {"name": "Ann", "age": 41, "vip": True, "tags": ["a", "b"], "unknown": {"x": 1}},
        timeout=TIMEOUT,
    )
    assert ok.kind == "response", (ok.body, proc.output())
    # null properties are left out, like AWS's serialiser
    assert ok.json() == {"message": "hi Ann (vip) a+b", "nextAge": 42}

    single = api.invoke({"name": "Bob", "tags": "solo"})  # a single value accepted as a list
    assert single.json() == {"message": "hi Bob solo", "nextAge": 1}

    bad = api.invoke({"name": "Eve", "age": "not a number"})
    assert bad.kind == "error"
    err = bad.json()
    assert err["errorMessage"] == "An error occurred during JSON parsing"
    assert err["errorType"] == "java.lang.RuntimeException"
    assert err["stackTrace"] == []
    assert err["cause"]["errorType"] == "java.io.UncheckedIOException"
    inner = err["cause"]["cause"]
    assert inner["errorType"] == "com.fasterxml.jackson.databind.exc.InvalidFormatException"
    assert inner["stackTrace"][0].startswith("com.fasterxml.jackson.databind.")
    assert bad.error_type == "java.lang.RuntimeException"


@pytest.mark.parametrize(
    ("handler", "event", "expected"),
    [
        ("example.Methods::upper", "hello", b'"HELLO/fn"'),  # String in, String out as JSON
        ("example.Methods::twice", 21, b"42"),  # primitives, instance method
        ("example.Methods::stream", {"k": 1}, b'stream:{"k": 1}'),  # (In, Out, Context)
        ("example.Methods::noInput", None, None),  # (Context) only
        ("example.Stream", {"k": 1}, b'raw:{"k": 1}'),  # RequestStreamHandler: raw bytes
    ],
)
def test_handler_forms(harness: Harness, handler: str, event: Any, expected: bytes | None) -> None:
    api, proc = harness.start(handler)
    result = api.invoke(event, timeout=TIMEOUT, request_id="rid-9")
    assert result.kind == "response", (result.body, proc.output())
    assert result.body == (expected if expected is not None else b'"rid-9"')


def test_thrown_exception_shape_log_and_recovery(harness: Harness) -> None:
    api, proc = harness.start("example.Thrower")
    result = api.invoke({}, timeout=TIMEOUT)
    assert result.kind == "error", (result.body, proc.output())
    err = result.json()
    line = _line_of("example/Thrower.java", "// THROW")
    inner = _line_of("example/Thrower.java", "// INNER")
    # the second frame is javac's bridge handleRequest(Object, Context), as on AWS
    declared = _line_of("example/Thrower.java", "public class Thrower")
    bridge = f"example.Thrower.handleRequest(Thrower.java:{declared})"
    assert err == {
        "errorMessage": "boom",
        "errorType": "java.lang.IllegalStateException",
        "stackTrace": [f"example.Thrower.handleRequest(Thrower.java:{line})", bridge],
        "cause": {
            "errorMessage": "inner",
            "errorType": "java.lang.IllegalArgumentException",
            "stackTrace": [f"example.Thrower.handleRequest(Thrower.java:{inner})", bridge],
        },
    }
    assert list(err) == ["errorMessage", "errorType", "stackTrace", "cause"]
    assert result.error_type == "java.lang.IllegalStateException"
    assert result.log is not None
    assert "before throw" in result.log
    assert "boom: java.lang.IllegalStateException\njava.lang.IllegalStateException: boom\n" in (
        result.log
    )
    assert f"\tat example.Thrower.handleRequest(Thrower.java:{line})" in result.log
    assert "Caused by: java.lang.IllegalArgumentException: inner" in result.log
    assert "lambdad.runtime" not in result.log  # the runtime's frames are filtered out
    ok = api.invoke({"ok": True})
    assert ok.kind == "response"
    assert ok.body == b'"fine"'
    assert proc.proc.poll() is None


def test_json_log_format_and_level_filter(harness: Harness) -> None:
    api, proc = harness.start(
        "example.Levels", AWS_LAMBDA_LOG_FORMAT="JSON", AWS_LAMBDA_LOG_LEVEL="WARN"
    )
    result = api.invoke({}, timeout=TIMEOUT, request_id="rid-json")
    assert result.kind == "response", (result.body, proc.output())
    assert result.log is not None
    assert "debug msg" not in result.log
    records = [json.loads(x) for x in result.log.splitlines() if x.startswith("{")]
    by_message = {r["message"]: r for r in records}
    assert by_message["warn msg"]["level"] == "WARN"
    assert by_message["warn msg"]["AWSRequestId"] == "rid-json"
    assert by_message["plain msg"]["level"] == "UNDEFINED"
    assert by_message["plain msg"]["timestamp"].endswith("Z")


def test_reconnects_and_chunked_bodies(harness: Harness) -> None:
    api, proc = harness.start(
        "example.Echo", api_options={"chunked": True, "close_connections": True}
    )
    for i in range(3):
        result = api.invoke({"i": i, "pad": "x" * 5000}, timeout=TIMEOUT)
        assert result.kind == "response", (result.body, proc.output())
        assert result.json()["event"] == {"i": i, "pad": "x" * 5000}


# ---------------------------------------------------------------------------------------------
# Init errors
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("handler", "expected"),
    [
        (
            "example.BadStatic",
            {
                "errorMessage": "Error loading class example.BadStatic",
                "errorType": "java.lang.ExceptionInInitializerError",
            },
        ),
        (
            "example.BadCtor",
            {"errorMessage": "ctor boom", "errorType": "java.lang.IllegalStateException"},
        ),
    ],
)
def test_fatal_init_errors(harness: Harness, handler: str, expected: dict[str, str]) -> None:
    api, proc = harness.start(handler)
    error = api.wait_init_error(timeout=TIMEOUT)
    assert error.json() == expected
    assert error.error_type == expected["errorType"]
    assert proc.wait(TIMEOUT) == 1
    log = proc.output()
    assert f"{expected['errorMessage']}: {expected['errorType']}" in log
    assert "static boom" in log or "ctor boom" in log
    assert api.next_calls == 0


@pytest.mark.parametrize(
    ("handler", "expected"),
    [
        (
            "example.Nope",
            {
                "errorMessage": "Class not found: example.Nope",
                "errorType": "java.lang.ClassNotFoundException",
            },
        ),
        (
            "example.Echo::nope",
            {
                "errorMessage": "No public method named nope with appropriate method signature "
                "found on class example.Echo"
            },
        ),
        (
            "example.Plain",
            {
                "errorMessage": "Class does not implement an appropriate handler interface: "
                "example.Plain"
            },
        ),
        ("::x", {"errorMessage": "Invalid handler: `::x'"}),
    ],
)
def test_deferred_handler_errors_like_aws(
    harness: Harness, handler: str, expected: dict[str, str]
) -> None:
    """AWS's Java runtime reports these on every invocation rather than as an init error."""
    api, proc = harness.start(handler)
    for _ in range(2):
        result = api.invoke({}, timeout=TIMEOUT)
        assert result.kind == "error", (result.body, proc.output())
        assert result.json() == expected
        assert result.error_type == expected.get("errorType")
    assert api.init_errors == []
    assert proc.proc.poll() is None
    assert expected["errorMessage"] in proc.output()


@pytest.mark.parametrize(
    ("handler", "message", "error_type"),
    [
        ("example.Nope", "Class not found: example.Nope", "java.lang.ClassNotFoundException"),
        (
            "example.Echo::nope",
            "No public method named nope with appropriate method signature found on class "
            "example.Echo",
            None,
        ),
    ],
)
def test_eager_init_errors_option(
    harness: Harness, handler: str, message: str, error_type: str | None
) -> None:
    api, proc = harness.start(handler, jvm_args=("-Dlambdad.eagerInitErrors=true",))
    error = api.wait_init_error(timeout=TIMEOUT)
    body = error.json()
    assert body["errorMessage"] == message
    assert body.get("errorType") == error_type
    assert error.error_type == error_type
    assert proc.wait(TIMEOUT) == 1


# ---------------------------------------------------------------------------------------------
# build.py
# ---------------------------------------------------------------------------------------------


def test_build_is_idempotent_and_reports_its_classpath(runtime: list[str]) -> None:
    stamp = build.STAMP.stat().st_mtime_ns
    jar = build.RUNTIME_JAR.stat().st_mtime_ns
    started = time.monotonic()
    again = build.ensure_built()
    assert time.monotonic() - started < 5
    assert again == runtime
    assert build.STAMP.stat().st_mtime_ns == stamp
    assert build.RUNTIME_JAR.stat().st_mtime_ns == jar
    assert [Path(p).name for p in runtime] == [
        "lambdad-java-runtime.jar",
        "jackson-databind.jar",
        "jackson-core.jar",
        "jackson-annotations.jar",
    ]
    assert all(Path(p).is_file() for p in runtime)
    with zipfile.ZipFile(runtime[0]) as zf:
        names = set(zf.namelist())
    assert "lambdad/runtime/Bootstrap.class" in names
    assert "com/amazonaws/services/lambda/runtime/Context.class" in names
    relocated = build.classpath("/var/runtime")
    assert relocated[0] == "/var/runtime/java/build/lambdad-java-runtime.jar"
    assert relocated[1] == "/var/runtime/java/build/lib/jackson-databind.jar"


def test_jvm_options() -> None:
    opts = build.jvm_options(512)
    assert "-XX:MaxHeapSize=445644k" in opts  # 85%, as AWS
    assert "-XX:ReservedCodeCacheSize=26214k" in opts
    assert "-XX:MaxMetaspaceSize=52428k" in opts
    assert "-XX:+UseSerialGC" in opts
    assert "-XX:TieredStopAtLevel=1" in opts
    small = build.jvm_options(128)
    assert "-XX:MaxHeapSize=111411k" in small
    assert f"-XX:MaxMetaspaceSize={build.MIN_METASPACE_MB * 1024}k" in small
    cmd = build.launch_command(1024, java="/usr/bin/java")
    assert cmd[0] == "/usr/bin/java"
    assert cmd[-1] == "lambdad.runtime.Bootstrap"
    assert cmd[-3] == "-cp"
    if build.CDS_ARCHIVE.is_file():
        assert f"-XX:SharedArchiveFile={build.CDS_ARCHIVE}" in cmd


def test_small_memory_runs(harness: Harness) -> None:
    """128 MB: heap, metaspace and code cache limits leave room for Jackson."""
    api, proc = harness.start("example.PojoHandler", memory=128)
    result = api.invoke({"name": "x"}, timeout=TIMEOUT)
    assert result.kind == "response", (result.body, proc.output())


def test_missing_jackson_is_reported(tmp_path: Path) -> None:
    with pytest.raises(build.BuildError, match="libjackson2-databind-java"):
        build.find_jackson([tmp_path])
    assert shutil.which("javac") is not None
