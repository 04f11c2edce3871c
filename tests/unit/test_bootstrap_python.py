"""The Python bootstrap against a fake Runtime API, under every python3.10..3.13 present."""

from __future__ import annotations

import functools
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from fake_runtime_api import BootstrapHarness, CapturedProcess, FakeRuntimeAPI, reserved_env

BOOTSTRAP = (
    Path(__file__).resolve().parents[2]
    / "lambdad"
    / "runtime"
    / "bootstraps"
    / "python"
    / "lambdad_bootstrap.py"
)
VERSIONS = ("3.10", "3.11", "3.12", "3.13")


@functools.cache
def _interpreter(version: str) -> str | None:
    """The executable of python<version>, or None. A pyenv shim runs only the versions pyenv
    has selected, so pyenv's own version directories are preferred to shims."""
    found = shutil.which(f"python{version}")
    if found and os.sep + "shims" + os.sep not in found:
        return found
    pyenv_root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    pattern = os.path.join(pyenv_root, "versions", f"{version}.*", "bin", f"python{version}")
    for exe in sorted(glob.glob(pattern), reverse=True):
        if os.access(exe, os.X_OK):
            return exe
    if found:  # a shim without a pyenv version directory: ask it
        try:
            out = subprocess.run(
                [found, "-c", "import sys; print(sys.executable)"],
                capture_output=True,
                text=True,
                timeout=30,
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    return None


def _python_params() -> list[object]:
    return [
        pytest.param(
            v,
            marks=pytest.mark.skipif(_interpreter(v) is None, reason=f"python{v} not found"),
            id=f"py{v}",
        )
        for v in VERSIONS
    ]


@pytest.fixture(params=_python_params())
def python(request: pytest.FixtureRequest) -> str:
    exe = _interpreter(request.param)
    assert exe is not None
    return exe


APP = """
import json
import logging
import os
import sys

COUNT = 0


def handler(event, context):
    global COUNT
    COUNT += 1
    print("PRINT", context.aws_request_id)
    sys.stderr.write("STDERR " + context.aws_request_id + "\\n")
    cc = context.client_context
    return {
        "event": event,
        "count": COUNT,
        "pid": os.getpid(),
        "aws_request_id": context.aws_request_id,
        "function_name": context.function_name,
        "function_version": context.function_version,
        "invoked_function_arn": context.invoked_function_arn,
        "memory_limit_in_mb": context.memory_limit_in_mb,
        "log_group_name": context.log_group_name,
        "log_stream_name": context.log_stream_name,
        "remaining": context.get_remaining_time_in_millis(),
        "identity": [context.identity.cognito_identity_id,
                     context.identity.cognito_identity_pool_id],
        "client_context": None if cc is None else {
            "custom": cc.custom,
            "env": cc.env,
            "client": None if cc.client is None else {
                "installation_id": cc.client.installation_id,
                "app_title": cc.client.app_title,
                "app_version_name": cc.client.app_version_name,
                "app_version_code": cc.client.app_version_code,
                "app_package_name": cc.client.app_package_name,
            },
        },
        "trace": os.environ.get("_X_AMZN_TRACE_ID"),
        "cwd": os.getcwd(),
        "path": sys.path[:3],
        "stdout_line_buffered": getattr(sys.stdout, "line_buffering", None),
    }


def raises(event, context):
    raise ValueError("x")


def returns_set(event, context):
    return {1, 2}


def returns_none(event, context):
    return None


def returns_bytes(event, context):
    return b"\\x00raw"


def returns_unicode(event, context):
    return {"s": "h\\u00e9llo \\u2603"}


def logs(event, context):
    logging.getLogger().warning("warned %s", 1)
    logging.getLogger("child").info("informed")
    logging.debug("debugged")
    print("printed")
    return "ok"


def returns_decimal(event, context):
    import decimal
    return [decimal.Decimal("1"), decimal.Decimal("2.5"), decimal.Decimal("nan")]


def dispatch(event, context):
    return globals()[event["call"]](event, context)


def exits(event, context):
    sys.exit(3)


class Obj:
    class Inner:
        @staticmethod
        def method(event, context):
            return "nested"
"""


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def _env(api: FakeRuntimeAPI, root: Path, handler: str, **extra: str) -> dict[str, str]:
    return reserved_env(
        api,
        handler,
        root,
        **{
            "PYTHONDONTWRITEBYTECODE": "1",
            "LAMBDA_RUNTIME_DIR": str(BOOTSTRAP.parent),
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EXECUTION_ENV": "AWS_Lambda_python3.12",
            "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
            **extra,
        },
    )


class Harness(BootstrapHarness):
    def __init__(self, python: str, root: Path) -> None:
        super().__init__()
        self.python = python
        self.root = root

    def start(
        self,
        handler: str,
        files: dict[str, str] | None = None,
        argv: list[str] | None = None,
        api_options: dict[str, bool] | None = None,
        **env: str,
    ) -> tuple[FakeRuntimeAPI, CapturedProcess]:
        _write(self.root, files if files is not None else {"app.py": APP})
        return self.launch(
            argv or [self.python, str(BOOTSTRAP)],
            lambda api: _env(api, self.root, handler, **env),
            self.root,
            api_options,
        )


@pytest.fixture
def harness(python: str, tmp_path: Path) -> Iterator[Harness]:
    h = Harness(python, tmp_path)
    try:
        yield h
    finally:
        h.close()


# ---------------------------------------------------------------------------------------------


def test_echo_context_and_warm_reuse(harness: Harness) -> None:
    api, proc = harness.start("app.handler")
    client_context = {
        "client": {
            "installation_id": "inst",
            "app_title": "title",
            "app_version_name": "1.0",
            "app_version_code": "100",
            "app_package_name": "pkg",
        },
        "custom": {"k": "v"},
        "env": {"platform": "linux"},
    }
    identity = {"cognitoIdentityId": "id-1", "cognitoIdentityPoolId": "pool-1"}
    deadline = int(time.time() * 1000) + 60_000
    rid = api.enqueue(
        {"hello": "world", "n": [1, 2.5, None]},
        deadline_ms=deadline,
        client_context=client_context,
        identity=identity,
    )
    res = api.wait_result(rid)
    assert res.kind == "response", res.body
    body = res.json()
    assert body["event"] == {"hello": "world", "n": [1, 2.5, None]}
    assert body["count"] == 1
    assert body["aws_request_id"] == rid
    assert body["function_name"] == "fn"
    assert body["function_version"] == "$LATEST"
    assert body["invoked_function_arn"] == "arn:aws:lambda:us-east-1:123456789012:function:fn"
    assert body["memory_limit_in_mb"] == 256
    assert body["log_group_name"] == "/aws/lambda/fn"
    assert body["log_stream_name"] == "2024/01/01/[$LATEST]abcdef"
    assert 55_000 < body["remaining"] <= 60_000
    assert body["identity"] == ["id-1", "pool-1"]
    assert body["client_context"] == client_context
    assert body["trace"].startswith("Root=1-5759e988")
    assert body["cwd"] == str(harness.root)
    assert body["path"][0] == str(harness.root)
    assert body["path"][1].startswith("/opt/python/lib/python3.")
    assert body["path"][1].endswith("/site-packages")
    assert body["path"][2] == "/opt/python"
    assert body["stdout_line_buffered"] is True
    assert res.headers["content-type"] == "application/json"
    # output reached the pipe before the response was posted
    assert f"PRINT {rid}\n" in (res.log or "")
    assert f"STDERR {rid}\n" in (res.log or "")

    # warm reuse: same process, module state kept; no client context / identity / trace
    for n in (2, 3):
        res2 = api.invoke({"n": n}, trace_id=None)
        b2 = res2.json()
        assert b2["count"] == n
        assert b2["pid"] == body["pid"]
        assert b2["client_context"] is None
        assert b2["identity"] == [None, None]
        assert b2["trace"] is None
        assert f"PRINT {b2['aws_request_id']}\n" in (res2.log or "")
    # an expired deadline reports 0, not a negative number
    res3 = api.invoke({}, deadline_ms=int(time.time() * 1000) - 5000)
    assert res3.json()["remaining"] == 0
    assert proc.proc.poll() is None


def test_handler_exception_shape_and_log(harness: Harness) -> None:
    api, proc = harness.start("app.raises")
    res = api.invoke({})
    assert res.kind == "error"
    assert res.error_type == "ValueError"
    body = res.json()
    line = next(i + 1 for i, text in enumerate(APP.splitlines()) if 'raise ValueError("x")' in text)
    assert body == {
        "errorMessage": "x",
        "errorType": "ValueError",
        "requestId": res.request_id,
        "stackTrace": [
            f'  File "{harness.root / "app.py"}", line {line}, in raises\n'
            '    raise ValueError("x")\n'
        ],
    }
    # AWS's log record for it: one line, \r-separated, traceback indented with NBSPs
    assert (
        "[ERROR] ValueError: x\rTraceback (most recent call last):\r"
        f'\u00a0\u00a0File "{harness.root / "app.py"}", line {line}, in raises\r'
        '\u00a0\u00a0\u00a0\u00a0raise ValueError("x")\n'
    ) in (res.log or "")
    # the process survives handler errors
    assert api.invoke({}).kind == "error"
    assert proc.proc.poll() is None


LOG_LINE = r"\[{level}\]\t\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{{3}}Z\t{rid}\t{msg}\n"


def test_results_logging_and_bad_input(harness: Harness) -> None:
    api, _ = harness.start("app.dispatch")
    res = api.invoke({"call": "returns_set"})
    assert res.kind == "error"
    assert res.error_type == "Runtime.MarshalError"
    assert res.json() == {
        "errorMessage": "Unable to marshal response: Object of type set is not JSON serializable",
        "errorType": "Runtime.MarshalError",
        "requestId": res.request_id,
        "stackTrace": [],
    }
    assert "[ERROR] Runtime.MarshalError: Unable to marshal response: " in (res.log or "")
    res = api.invoke({"call": "returns_none"})
    assert (res.kind, res.body) == ("response", b"null")
    res = api.invoke({"call": "returns_bytes"})
    assert (res.kind, res.body) == ("response", b"\x00raw")
    assert res.headers["content-type"] == "application/unknown"
    res = api.invoke({"call": "returns_unicode"})
    assert (res.kind, res.body) == ("response", '{"s": "h\u00e9llo \u2603"}'.encode())
    res = api.invoke({"call": "returns_decimal"})
    assert (res.kind, res.body) == ("response", b"[1, 2.5, NaN]")

    # logging as AWS sets it up: root handler, WARNING unless AWS_LAMBDA_LOG_LEVEL says more
    res = api.invoke({"call": "logs"})
    assert res.json() == "ok"
    log = res.log or ""
    rid = re.escape(res.request_id or "")
    assert re.search(LOG_LINE.format(level="WARNING", rid=rid, msg="warned 1"), log), log
    assert "informed" not in log
    assert "printed\n" in log

    # bad input
    res = api.invoke(raw_body=b"{not json")
    assert (res.kind, res.error_type) == ("error", "Runtime.UnmarshalError")
    assert res.json()["errorMessage"].startswith("Unable to unmarshal input: Expecting")
    res = api.invoke({"call": "returns_none"}, client_context="{oops")
    assert res.error_type == "Runtime.LambdaContextUnmarshalError"
    assert res.json()["errorMessage"].startswith("Unable to parse Client Context JSON: ")
    assert api.invoke({"call": "returns_none"}).body == b"null"


def test_json_logs_and_ascii_escaping_before_python312(harness: Harness) -> None:
    api, _ = harness.start(
        "app.dispatch",
        AWS_EXECUTION_ENV="AWS_Lambda_python3.11",
        AWS_LAMBDA_LOG_FORMAT="JSON",
        AWS_LAMBDA_LOG_LEVEL="INFO",
    )
    assert api.invoke({"call": "returns_unicode"}).body == b'{"s": "h\\u00e9llo \\u2603"}'
    res = api.invoke({"call": "logs"})
    records = [json.loads(line) for line in (res.log or "").splitlines() if line.startswith("{")]
    by_message = {r["message"]: r for r in records}
    assert by_message["warned 1"]["level"] == "WARNING"
    assert by_message["warned 1"]["requestId"] == res.request_id
    assert by_message["informed"]["logger"] == "child"
    assert "debugged" not in by_message


def test_sys_exit_in_handler_ends_the_process(harness: Harness) -> None:
    api, proc = harness.start("app.exits")
    api.enqueue({})
    assert proc.wait() == 3
    assert not api.results


def _lineno(text: str, line_text: str) -> int:
    lines = textwrap.dedent(text).splitlines()
    return next(i + 1 for i, line in enumerate(lines) if line.strip() == line_text)


BROKEN = """
x = 1

def handler(event, context:
    return 1
"""
RAISES_AT_IMPORT = """
import json

def helper():
    raise RuntimeError("cannot start")

helper()
"""


@pytest.mark.parametrize(
    "case", ["missing-module", "syntax", "missing-handler", "malformed", "import-raises", "builtin"]
)
def test_init_errors(harness: Harness, case: str) -> None:
    files = {"app.py": APP, "broken.py": BROKEN, "boom.py": RAISES_AT_IMPORT}
    handler = {
        "missing-module": "nope.handler",
        "syntax": "broken.handler",
        "missing-handler": "app.nope",
        "malformed": "x",
        "import-raises": "boom.handler",
        "builtin": "sys.handler",
    }[case]
    api, proc = harness.start(handler, files)
    err = api.wait_init_error()
    assert proc.wait() == 1
    assert api.next_calls == 0
    body = err.json()
    assert err.error_type == body["errorType"]
    assert body["requestId"] == ""
    if case == "missing-module":
        assert body == {
            "errorMessage": "Unable to import module 'nope': No module named 'nope'",
            "errorType": "Runtime.ImportModuleError",
            "requestId": "",
            "stackTrace": [],
        }
    elif case == "syntax":
        assert body["errorType"] == "Runtime.UserCodeSyntaxError"
        assert body["errorMessage"].startswith("Syntax error in module 'broken': ")
        assert body["errorMessage"].endswith("(broken.py, line 4)")
        (trace,) = body["stackTrace"]
        assert trace.startswith(f'  File "{harness.root / "broken.py"}" Line 4\n    def handler')
    elif case == "missing-handler":
        assert body == {
            "errorMessage": "Handler 'nope' missing on module 'app'",
            "errorType": "Runtime.HandlerNotFound",
            "requestId": "",
            "stackTrace": [],
        }
    elif case == "malformed":
        assert body == {
            "errorMessage": "Bad handler 'x': not enough values to unpack (expected 2, got 1)",
            "errorType": "Runtime.MalformedHandlerName",
            "requestId": "",
            "stackTrace": [],
        }
    elif case == "builtin":
        assert body == {
            "errorMessage": "Cannot use built-in module sys as a handler module",
            "errorType": "Runtime.BuiltInModuleConflict",
            "requestId": "",
            "stackTrace": [],
        }
    else:
        assert body["errorType"] == "RuntimeError"
        assert body["errorMessage"] == "cannot start"
        path = harness.root / "boom.py"
        call_line = _lineno(RAISES_AT_IMPORT, "helper()")
        raise_line = _lineno(RAISES_AT_IMPORT, 'raise RuntimeError("cannot start")')
        assert body["stackTrace"][-2:] == [
            f'  File "{path}", line {call_line}, in <module>\n    helper()\n',
            f'  File "{path}", line {raise_line}, in helper\n'
            '    raise RuntimeError("cannot start")\n',
        ]
        assert not any("lambdad_bootstrap" in frame for frame in body["stackTrace"])
    log = err.log or ""
    assert "LAMBDA_WARNING: Unhandled exception." in log
    assert f"[ERROR] {body['errorType']}: " in log


def test_logging_level_from_env(harness: Harness) -> None:
    api, _ = harness.start("app.logs", AWS_LAMBDA_LOG_LEVEL="debug")
    res = api.invoke({})
    log = res.log or ""
    rid = re.escape(res.request_id or "")
    assert re.search(LOG_LINE.format(level="INFO", rid=rid, msg="informed"), log), log
    assert re.search(LOG_LINE.format(level="DEBUG", rid=rid, msg="debugged"), log), log


def test_handler_paths(harness: Harness) -> None:
    files = {
        "app.py": APP,
        "src/pkg/mod.py": "def handler(event, context):\n    return 'slash'\n",
    }
    api, _ = harness.start("src/pkg/mod.handler", files)
    assert api.invoke({}).json() == "slash"
    api2, _ = harness.start("src.pkg.mod.handler", files)
    assert api2.invoke({}).json() == "slash"
    api3, _ = harness.start("app.Obj.Inner.method", files)
    assert api3.invoke({}).json() == "nested"


def test_reconnects_and_chunked_responses(harness: Harness) -> None:
    # Started the way the zygote does it: import first, then call main().
    argv = [
        harness.python,
        "-c",
        f"import sys; sys.path.insert(0, {str(BOOTSTRAP.parent)!r}); "
        "import lambdad_bootstrap; lambdad_bootstrap.main()",
    ]
    api, proc = harness.start(
        "app.handler", argv=argv, api_options={"chunked": True, "close_connections": True}
    )
    counts = [api.invoke({"i": i}).json()["count"] for i in range(4)]
    assert counts == [1, 2, 3, 4]
    assert proc.proc.poll() is None


def run_python(python: str, code: str, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`code` under `python`, with a bare environment; asserts it exited 0."""
    out = subprocess.run(
        [python, "-c", code, *args],
        capture_output=True,
        text=True,
        env={"PATH": os.environ.get("PATH", ""), "PYTHONDONTWRITEBYTECODE": "1"},
        cwd=cwd,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return out


def test_import_has_no_side_effects(python: str, tmp_path: Path) -> None:
    code = (
        f"import os, sys; sys.path.insert(0, {str(BOOTSTRAP.parent)!r}); cwd = os.getcwd(); "
        "path = list(sys.path); import lambdad_bootstrap as b; "
        "assert callable(b.main); assert os.getcwd() == cwd; assert sys.path == path; "
        "import logging; assert not logging.getLogger().handlers"
    )
    out = run_python(python, code, tmp_path)
    assert out.stdout == "" and out.stderr == ""


TRACE_VARIABLE_CHECK = r"""
import ctypes, os, subprocess, sys
sys.path.insert(0, sys.argv[1])
import lambdad_bootstrap as b
libc = ctypes.CDLL(None)
libc.getenv.restype = ctypes.c_char_p

def seen():
    shell = subprocess.run(["sh", "-c", 'printf %s "${_X_AMZN_TRACE_ID-unset}"'],
                           capture_output=True, text=True).stdout
    return os.environ.get("_X_AMZN_TRACE_ID"), libc.getenv(b"_X_AMZN_TRACE_ID"), shell

b._TRACE_ID.set("Root=1-a")
assert seen() == ("Root=1-a", b"Root=1-a", "Root=1-a"), seen()
b._TRACE_ID.set(None)
assert seen() == (None, None, "unset"), seen()
os.environ["_X_AMZN_TRACE_ID"] = "set by the function"
b._TRACE_ID.set("Root=1-b;Parent=c")
assert seen() == ("Root=1-b;Parent=c", b"Root=1-b;Parent=c", "Root=1-b;Parent=c"), seen()

def resident_pages():
    return int(open("/proc/self/statm").read().split()[1])

before = resident_pages()
for n in range(100_000):  # ~10 MB if every value were kept (glibc's setenv keeps them)
    b._TRACE_ID.set(f"Root=1-{n:08x}-{'0' * 24};Parent={n:016x};Sampled=0")
grown = resident_pages() - before
assert grown < 64, f"{grown} pages more after 100,000 invocations' trace ids"
print("ok")
"""


def test_the_trace_id_variable_is_set_per_invocation_without_growing_memory(
    python: str, tmp_path: Path
) -> None:
    out = run_python(python, TRACE_VARIABLE_CHECK, tmp_path, str(BOOTSTRAP.parent))
    assert out.stdout == "ok\n"


SOURCE_FINDER_CHECK = r"""
import importlib, importlib.machinery, os, sys, traceback
sys.path.insert(0, sys.argv[1])
import lambdad_bootstrap as b
root = os.getcwd()
sys.path.insert(0, root)
sys.path_importer_cache.pop(root, None)
meta_path = list(sys.meta_path)

# Found by the finder: the spec the path finder gives, and no FileFinder built for the root.
expected = importlib.machinery.PathFinder.find_spec("plain", [root])
sys.path_importer_cache.pop(root, None)
module = b._import_top_level("plain")
assert module.answer == 42 and sys.modules["plain"] is module
assert (module.__spec__.origin, module.__spec__.cached, module.__file__) == (
    expected.origin, expected.cached, expected.origin)
assert type(module.__spec__.loader) is type(expected.loader)
assert root not in sys.path_importer_cache, "the path finder answered"
assert sys.meta_path == meta_path

# Whatever else could answer first leaves the import to importlib alone.
for name in ("pkg", "ext", "__hello__", "plain.sub", "json", "nothing_here"):
    assert b._SourceFinder.install(name) is None, name
assert b._import_top_level("pkg").kind == "package"
sys.path_importer_cache[root] = importlib.machinery.FileFinder(root)
assert b._SourceFinder.install("other") is None
del sys.path_importer_cache[root]

# A module that raises: the same frames as through the path finder.
def frames(name, finder):
    if finder:
        assert b._SourceFinder.install(name) is not None
    try:
        importlib.import_module(name)
    except RuntimeError as e:
        return [f.name for f in traceback.extract_tb(e.__traceback__)]
    finally:
        sys.meta_path[:] = meta_path
        sys.path_importer_cache.pop(root, None)
found, plain = frames("boom_a", True), frames("boom_b", False)
assert found == plain, (found, plain)
print("ok")
"""


def test_handler_modules_are_found_without_the_path_finder_when_only_it_could_answer(
    python: str, tmp_path: Path
) -> None:
    (tmp_path / "plain.py").write_text("answer = 42\n")
    (tmp_path / "other.py").write_text("")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("kind = 'package'\n")
    (tmp_path / "pkg.py").write_text("kind = 'module'\n")
    (tmp_path / "ext.py").write_text("")
    (tmp_path / "ext.so").write_text("")
    (tmp_path / "__hello__.py").write_text("")
    for name in ("boom_a", "boom_b"):
        (tmp_path / f"{name}.py").write_text("def f():\n    raise RuntimeError('x')\nf()\n")
    out = run_python(python, SOURCE_FINDER_CHECK, tmp_path, str(BOOTSTRAP.parent))
    assert out.stdout == "ok\n"


SPARE_HANDLER_CHECK = r"""
import logging, sys
sys.path.insert(0, sys.argv[1])
import lambdad_bootstrap as b
root = logging.getLogger()
before = list(root.handlers)
b.warm_up()
spare = b._spare_text_handler
assert isinstance(spare, b._LambdaLogHandler) and spare not in root.handlers
assert root.handlers == before  # nothing else left behind
b._setup_logging("", "")
assert root.handlers[-1] is spare and b._spare_text_handler is None
root.handlers.remove(spare)
b.warm_up()
b._setup_logging("JSON", "")  # another format: a handler of its own
assert isinstance(root.handlers[-1].formatter, b._JsonFormatter)
assert b._spare_text_handler is None
print("ok")
"""


def test_warm_up_keeps_the_text_log_handler_for_init(python: str, tmp_path: Path) -> None:
    out = run_python(python, SPARE_HANDLER_CHECK, tmp_path, str(BOOTSTRAP.parent))
    assert out.stdout == "ok\n"


AHEAD_CHECK = r"""
import logging, os, socket, sys, threading
bootstrap_dir, task_root, case = sys.argv[1], sys.argv[2], sys.argv[3]
sys.path.insert(0, bootstrap_dir)
import lambdad_bootstrap as b
root = logging.getLogger()
ours, theirs = socket.socketpair()
fd = theirs.detach()  # the connection made for the runtime: prepare_ahead's from now on
b.prepare_ahead(fd, "127.0.0.1:9001", "/no/such.sock", task_root)
ahead = b._ahead
assert ahead is not None and sys.path[0] == task_root
assert [type(h) for h in root.handlers] == [b._LambdaLogHandler]
env = {
    "_HANDLER": "app.handler",
    "AWS_LAMBDA_RUNTIME_API": "127.0.0.1:9001",
    "LAMBDAD_RUNTIME_API_SOCKET": "/no/such.sock",
    "LAMBDAD_RUNTIME_API_FD": str(fd),
    "LAMBDA_TASK_ROOT": task_root,
}
if case == "json":
    env["AWS_LAMBDA_LOG_FORMAT"] = "JSON"
if case == "other-root":
    other = os.path.join(task_root, "sub")
    env["LAMBDA_TASK_ROOT"] = other
os.environ.clear()
os.environ.update(env)
client = b._set_up(os.environ)
assert b._ahead is None and "LAMBDAD_RUNTIME_API_FD" not in os.environ
handlers = [h for h in root.handlers if isinstance(h, b._LambdaLogHandler)]
assert len(handlers) == 1, root.handlers  # the ahead one, or (undone) one in its place
if case == "agrees":
    assert client is ahead.client and handlers[0] is ahead.handler
    assert not isinstance(handlers[0].formatter, b._JsonFormatter)
if case == "json":
    assert client is ahead.client and handlers[0] is not ahead.handler
    assert isinstance(handlers[0].formatter, b._JsonFormatter)
if case == "other-root":
    assert client is not ahead.client and ahead.client._sock is None
    assert sys.path[0] == other and task_root not in sys.path[:3]
assert os.getcwd() == env["LAMBDA_TASK_ROOT"]
# Either way the client speaks on the connection made for it: one invocation end to end.
def runtime_api():
    ours.recv(4096)  # GET /next
    event = b'{"n": 1}'
    ours.sendall(
        b"HTTP/1.1 200 OK\r\nLambda-Runtime-Aws-Request-Id: r1\r\n"
        b"Lambda-Runtime-Deadline-Ms: 0\r\nContent-Length: %d\r\n\r\n%s" % (len(event), event)
    )
    print(ours.recv(4096).split(b"\r\n\r\n", 1)[1].decode())
    ours.sendall(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n")
thread = threading.Thread(target=runtime_api)
thread.start()
headers, body = client.next_invocation()
client.post_response(headers["lambda-runtime-aws-request-id"], b'{"ok": 1}', "application/json")
thread.join()
"""


@pytest.mark.parametrize("case", ["agrees", "json", "other-root"])
def test_prepared_ahead_is_taken_only_when_the_assignment_agrees(
    python: str, tmp_path: Path, case: str
) -> None:
    """prepare_ahead (a prepared sandbox, before its assignment) makes the client, sys.path and
    the text log handler; main's set-up takes them when the variables name the same connection,
    address and task root, replaces only the log handler for JSON logs, and undoes all of it
    for another task root."""
    (tmp_path / "sub").mkdir()
    out = run_python(python, AHEAD_CHECK, tmp_path, str(BOOTSTRAP.parent), str(tmp_path), case)
    assert out.stdout.startswith('{"ok": 1}'), out.stdout


PRECOMPILED_CHECK = r"""
import compileall, importlib, importlib.util, py_compile, sys
bootstrap_dir, root = sys.argv[1], sys.argv[2]
sys.path.insert(0, bootstrap_dir)
import lambdad_bootstrap as b
sys.path.insert(0, root)
unchecked = py_compile.PycInvalidationMode.UNCHECKED_HASH
for name in ("plain", "boom", "swapped"):
    py_compile.compile(f"{root}/{name}.py", invalidation_mode=unchecked, doraise=True)
py_compile.compile(f"{root}/stamped.py", doraise=True)  # a timestamp .pyc: importlib's to check

# The .py files now say something else: only the .pyc's code may run (unchecked means that).
for name in ("plain", "stamped"):
    with open(f"{root}/{name}.py", "a") as f:
        f.write("SOURCE_RAN = True\n")

plain = b._load_precompiled("plain", f"{root}/plain.py")
assert plain is sys.modules["plain"] and plain.VALUE == 42 and not hasattr(plain, "SOURCE_RAN")
spec = plain.__spec__
assert (spec.name, spec.origin, spec.has_location) == ("plain", f"{root}/plain.py", True)
assert spec.cached == plain.__cached__ == importlib.util.cache_from_source(f"{root}/plain.py")
assert plain.__file__ == f"{root}/plain.py" and plain.__package__ == ""
assert type(plain.__loader__).__name__ == "SourceFileLoader" and spec.loader is plain.__loader__
assert plain.where.__code__.co_filename == f"{root}/plain.py"  # not where it was compiled
assert spec._initializing is False

assert b._load_precompiled("stamped", f"{root}/stamped.py") is None  # ran nothing
assert "stamped" not in sys.modules
assert b._load_precompiled("missing", f"{root}/missing.py") is None

try:
    b._load_precompiled("boom", f"{root}/boom.py")
except RuntimeError as e:
    assert str(e) == "at import" and "boom" not in sys.modules
    tb = e.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    assert tb.tb_frame.f_code.co_filename == f"{root}/boom.py" and tb.tb_lineno == 1
else:
    raise AssertionError("boom did not raise")

swapped = b._load_precompiled("swapped", f"{root}/swapped.py")
assert swapped == "replacement" and sys.modules["swapped"] == "replacement"

# Through the handler loader: the precompiled module, found without the path finder.
del sys.modules["plain"]
assert b._import_top_level("plain").VALUE == 42
assert all(type(finder).__name__ != "_SourceFinder" for finder in sys.meta_path)
print("ok")
"""


def test_handler_modules_load_from_their_unchecked_pyc(python: str, tmp_path: Path) -> None:
    """lambdad's code cache compiles packages to unchecked-hash .pyc files; the bootstrap loads a
    handler module from one directly, as importlib's SourceFileLoader would (spec, attributes,
    code filename, sys.modules on success and failure), and leaves any other .pyc to importlib."""
    root = tmp_path / "task"
    root.mkdir()
    (root / "plain.py").write_text("VALUE = 42\ndef where():\n    return 1\n")
    (root / "stamped.py").write_text("VALUE = 1\n")
    (root / "boom.py").write_text("raise RuntimeError('at import')\n")
    (root / "swapped.py").write_text("import sys\nsys.modules[__name__] = 'replacement'\n")
    out = run_python(python, PRECOMPILED_CHECK, tmp_path, str(BOOTSTRAP.parent), str(root))
    assert out.stdout == "ok\n"


STAGED_CHECK = r"""
import os, py_compile, shutil, socket, sys, threading, time
bootstrap_dir, root = sys.argv[1], sys.argv[2]
sys.path.insert(0, bootstrap_dir)
import lambdad_bootstrap as b
sys.path.insert(0, root)
py_compile.compile(
    f"{root}/plain.py", invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH
)

b._stage("plain.handler")  # found and read ahead: nothing of it runs
assert "plain" not in sys.modules and not os.path.exists(f"{root}/ran")
assert all(type(f).__name__ != "_SourceFinder" for f in sys.meta_path)
name, finder, (code, cached) = b._staged_module
assert (name, finder.path, code.co_filename) == ("plain", f"{root}/plain.py", f"{root}/plain.py")

# What was read ahead is what runs (the code directory cannot change in a sandbox: here it does,
# to tell them apart).
with open(f"{root}/plain.py", "w") as f:
    f.write("VALUE = 7\n")
shutil.rmtree(f"{root}/__pycache__")
module = b._import_top_level("plain")
assert module.VALUE == 42 and os.path.exists(f"{root}/ran") and b._staged_module is None
assert all(type(f).__name__ != "_SourceFinder" for f in sys.meta_path)

b._stage("pkg.mod.handler")  # only a top-level module is read ahead
assert b._staged_module is None

# The wait: until lambdad pushes the first event, which stays for /next to read.
ours, theirs = socket.socketpair()
client = b._RuntimeClient("127.0.0.1:9001")
client._sock = theirs
threading.Timer(0.2, ours.sendall, [b"HTTP/1.1 200 OK\r\n"]).start()
start = time.monotonic()
client.wait_for_work()
assert time.monotonic() - start >= 0.15
assert theirs.recv(64) == b"HTTP/1.1 200 OK\r\n"
print("ok", flush=True)
ours.close()  # lambdad discarded the environment: it leaves at once
client.wait_for_work()
print("still here")
"""


def test_a_staged_bootstrap_reads_its_handler_ahead_and_waits_for_work(
    python: str, tmp_path: Path
) -> None:
    """A staged environment (LAMBDAD_STAGED) finds the handler's top-level module and reads its
    .pyc before its first event, running none of it; init then runs that code; the wait ends
    when lambdad pushes the event (left for /next to read), or the process leaves if lambdad
    closes the connection instead."""
    root = tmp_path / "task"
    root.mkdir()
    (root / "plain.py").write_text(
        "VALUE = 42\nopen(__file__.replace('plain.py', 'ran'), 'w').close()\n"
    )
    out = run_python(python, STAGED_CHECK, tmp_path, str(BOOTSTRAP.parent), str(root))
    assert out.stdout == "ok\n"
