"""The Node.js bootstrap against a fake Runtime API (skipped when `node` is missing)."""

from __future__ import annotations

import json
import re
import shutil
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from fake_runtime_api import (
    BootstrapHarness,
    CapturedProcess,
    FakeRuntimeAPI,
    reserved_env,
    run_check,
)

NODE = shutil.which("node")
pytestmark = [
    pytest.mark.skipif(NODE is None, reason="node is not installed"),
    pytest.mark.toolchain,
]

BOOTSTRAP = (
    Path(__file__).resolve().parents[2]
    / "lambdad"
    / "runtime"
    / "bootstraps"
    / "node"
    / "bootstrap.mjs"
)

INDEX_JS = """
let count = 0;
console.log('init log');

const info = (event, context) => ({
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
  clientContext: context.clientContext,
  identity: context.identity,
  remaining: context.getRemainingTimeInMillis(),
  waits: context.callbackWaitsForEmptyEventLoop,
  trace: process.env._X_AMZN_TRACE_ID,
  cwd: process.cwd(),
});

exports.handler = async (event, context) => {
  count++;
  console.log('hello', { a: 1 }, context.awsRequestId);
  console.info('multi\\nline');
  console.warn('warned');
  console.error('errored');
  console.debug('debugged');
  process.stdout.write('raw stdout\\n');
  return info(event, context);
};

exports.dispatch = (event, context, callback) => exports[event.call](event, context, callback);

exports.callback = (event, context, callback) => {
  setTimeout(() => callback(null, { via: 'callback' }), 5);
};
exports.callbackWaits = (event, context, callback) => {
  setTimeout(() => console.log('timer fired'), 30);
  callback(null, 'after-timer');
};
exports.callbackNoWait = (event, context, callback) => {
  context.callbackWaitsForEmptyEventLoop = false;
  setTimeout(() => console.log('late timer'), 300);
  callback(null, 'no-wait');
};
exports.callbackError = (event, context, callback) => callback(new Error('cb err'));
exports.callbackStringError = (event, context, callback) => callback('plain failure');
exports.done = (event, context) => context.done(null, 'done-ok');
exports.doneError = (event, context) => context.done(new RangeError('done err'));
exports.succeed = (event, context) => context.succeed({ s: 1 });
exports.fail = (event, context) => context.fail(new Error('failed'));
exports.failEmpty = (event, context) => context.fail();
exports.twice = (event, context, callback) => {
  context.succeed('first');
  context.succeed('second');
  callback(null, 'third');
};
exports.promise = (event) => Promise.resolve({ promised: event.call });
exports.throws = async () => {
  throw new TypeError('boom');
};
exports.throwsSync = () => {
  throw new Error('sync boom');
};
exports.syncReturn = () => 'ignored';
exports.circular = async () => {
  const o = {};
  o.self = o;
  return o;
};
exports.undef = async () => undefined;
exports.nested = { deeper: { fn: async () => 'nested' } };
exports.notFn = 42;
exports.asyncNeverSettles = async () => new Promise(() => {});
exports.uncaught = () => {
  setTimeout(() => {
    throw new Error('async uncaught');
  }, 1);
};
exports.rejection = async () => {
  Promise.reject(new Error('rejected'));
  await new Promise((r) => setTimeout(r, 50));
  return 'unreachable';
};
exports.streaming = awslambda.streamifyResponse(async (event, responseStream) => {
  responseStream.setContentType('text/plain');
  responseStream.write('hello ');
  responseStream.end('stream');
});
"""

INDEX_MJS = """
let count = 0;
await Promise.resolve();
export const handler = async (event, context) => {
  count++;
  console.log('esm');
  return { esm: true, event, count, name: context.functionName };
};
"""


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


class Harness(BootstrapHarness):
    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root

    def start(
        self,
        handler: str,
        files: dict[str, str] | None = None,
        api_options: dict[str, bool] | None = None,
        **extra: str,
    ) -> tuple[FakeRuntimeAPI, CapturedProcess]:
        _write(self.root, files if files is not None else {"index.js": INDEX_JS})
        assert NODE is not None
        return self.launch(
            [NODE, str(BOOTSTRAP)],
            lambda api: reserved_env(
                api,
                handler,
                self.root,
                **{
                    "NODE_PATH": "/opt/nodejs/node20/node_modules:/opt/nodejs/node_modules",
                    "AWS_EXECUTION_ENV": "AWS_Lambda_nodejs20.x",
                    **extra,
                },
            ),
            self.root,
            api_options,
        )


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path)
    try:
        yield h
    finally:
        h.close()


TS = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


def test_cjs_async_echo_context_and_console(harness: Harness) -> None:
    api, proc = harness.start("index.handler")
    deadline = int(time.time() * 1000) + 60_000
    client_context = {"client": {"installation_id": "i"}, "custom": {"k": "v"}, "env": {}}
    identity = {"cognitoIdentityId": "id-1", "cognitoIdentityPoolId": "pool-1"}
    rid = api.enqueue(
        {"hello": "world"}, deadline_ms=deadline, client_context=client_context, identity=identity
    )
    res = api.wait_result(rid)
    assert res.kind == "response", res.body
    body = res.json()
    assert body["event"] == {"hello": "world"}
    assert body["count"] == 1
    assert body["awsRequestId"] == rid
    assert body["functionName"] == "fn"
    assert body["functionVersion"] == "$LATEST"
    assert body["invokedFunctionArn"] == "arn:aws:lambda:us-east-1:123456789012:function:fn"
    assert body["memoryLimitInMB"] == "512"
    assert body["logGroupName"] == "/aws/lambda/fn"
    assert body["logStreamName"] == "2024/01/01/[$LATEST]abcdef"
    assert body["clientContext"] == client_context
    assert body["identity"] == identity
    assert 55_000 < body["remaining"] <= 60_000
    assert body["waits"] is True
    assert body["trace"].startswith("Root=1-5759e988")
    assert body["cwd"] == str(harness.root)
    assert res.headers["content-type"] == "application/json"

    log = res.log or ""
    assert re.search(rf"^{TS}\tundefined\tINFO\tinit log\n", log, re.M), log
    assert re.search(rf"^{TS}\t{rid}\tINFO\thello {{ a: 1 }} {rid}\n", log, re.M), log
    assert re.search(rf"^{TS}\t{rid}\tINFO\tmulti\rline\n", log, re.M), log
    assert re.search(rf"^{TS}\t{rid}\tWARN\twarned\n", log, re.M), log
    assert re.search(rf"^{TS}\t{rid}\tERROR\terrored\n", log, re.M), log
    assert re.search(rf"^{TS}\t{rid}\tDEBUG\tdebugged\n", log, re.M), log
    assert "raw stdout\n" in log

    for n in (2, 3):
        res2 = api.invoke({"n": n}, trace_id=None)
        b2 = res2.json()
        assert b2["count"] == n
        assert b2["pid"] == body["pid"]
        assert "trace" not in b2  # no trace header: _X_AMZN_TRACE_ID is removed
        assert "clientContext" not in b2 and "identity" not in b2
        assert f"\t{b2['awsRequestId']}\tINFO\thello" in (res2.log or "")
    assert proc.proc.poll() is None


def test_log_level_filter(harness: Harness) -> None:
    api, _ = harness.start("index.handler", AWS_LAMBDA_LOG_LEVEL="warn")
    log = api.invoke({}).log or ""
    assert "\tWARN\twarned\n" in log and "\tERROR\terrored\n" in log
    assert "\tINFO\t" not in log and "\tDEBUG\t" not in log


def test_json_log_format(harness: Harness) -> None:
    api, _ = harness.start("index.handler", AWS_LAMBDA_LOG_FORMAT="JSON")
    res = api.invoke({})
    records = [json.loads(line) for line in (res.log or "").splitlines() if line.startswith("{")]
    warned = next(r for r in records if r.get("message") == "warned")
    assert warned["level"] == "WARN"
    assert warned["requestId"] == res.request_id
    assert re.fullmatch(TS, warned["timestamp"])
    assert any(r.get("message") == "multi\nline" for r in records)


def _call(api: FakeRuntimeAPI, name: str, **kwargs: object):  # type: ignore[no-untyped-def]
    return api.invoke({"call": name}, **kwargs)


def test_handler_styles(harness: Harness) -> None:
    api, proc = harness.start("index.dispatch")

    res = _call(api, "callback")
    assert (res.kind, res.json()) == ("response", {"via": "callback"})

    # callbackWaitsForEmptyEventLoop (default true): answered once the timer has run
    res = _call(api, "callbackWaits")
    assert (res.kind, res.json()) == ("response", "after-timer")
    assert "\tINFO\ttimer fired\n" in (res.log or "")

    # ... and false: answered at once
    res = _call(api, "callbackNoWait")
    assert (res.kind, res.json()) == ("response", "no-wait")
    assert "late timer" not in (res.log or "")

    assert _call(api, "done").json() == "done-ok"
    assert _call(api, "succeed").json() == {"s": 1}
    assert _call(api, "promise").json() == {"promised": "promise"}
    assert _call(api, "syncReturn").body == b"null"  # no callback, loop empty: null
    assert _call(api, "undef").body == b"null"

    res = _call(api, "twice")
    assert (res.kind, res.json()) == ("response", "first")

    res = _call(api, "fail")
    assert (res.kind, res.error_type) == ("error", "Error")
    assert res.json()["errorMessage"] == "failed"

    res = _call(api, "failEmpty")
    assert res.json() == {"errorType": "string", "errorMessage": "handled", "trace": []}

    res = _call(api, "doneError")
    assert (res.error_type, res.json()["errorMessage"]) == ("RangeError", "done err")

    res = _call(api, "callbackError")
    assert (res.error_type, res.json()["errorMessage"]) == ("Error", "cb err")

    res = _call(api, "callbackStringError")
    assert res.json() == {"errorType": "string", "errorMessage": "plain failure", "trace": []}
    assert res.error_type == "string"

    res = _call(api, "throwsSync")
    body = res.json()
    assert (res.error_type, body["errorType"], body["errorMessage"]) == (
        "Error",
        "Error",
        "sync boom",
    )
    assert body["trace"][0] == "Error: sync boom"
    assert "index.js" in body["trace"][1]

    res = _call(api, "circular")
    assert res.kind == "error"
    assert res.json()["errorMessage"] == "Unable to stringify response body"

    res = _call(api, "handler")
    assert res.json()["event"] == {"call": "handler"}
    assert proc.proc.poll() is None


def test_response_streaming_handler_is_buffered(harness: Harness) -> None:
    api, _ = harness.start("index.streaming")
    res = api.invoke({})
    assert (res.kind, res.body) == ("response", b"hello stream")
    assert res.headers["content-type"] == "text/plain"


def test_thrown_error_shape_and_log(harness: Harness) -> None:
    api, proc = harness.start("index.throws")
    res = api.invoke({})
    assert res.kind == "error"
    assert res.error_type == "TypeError"
    body = res.json()
    assert set(body) == {"errorType", "errorMessage", "trace"}
    assert body["errorType"] == "TypeError"
    assert body["errorMessage"] == "boom"
    assert body["trace"][0] == "TypeError: boom"
    assert body["trace"][1].startswith(f"    at exports.throws ({harness.root / 'index.js'}:")
    rid = res.request_id
    match = re.search(rf"^{TS}\t{rid}\tERROR\tInvoke Error \t(.*)\n", res.log or "", re.M)
    assert match, res.log
    logged = json.loads(match.group(1))
    assert logged["errorType"] == "TypeError" and logged["errorMessage"] == "boom"
    assert logged["stack"] == body["trace"]
    assert api.invoke({}).kind == "error"  # still alive
    assert proc.proc.poll() is None


def test_async_handler_that_never_settles(harness: Harness) -> None:
    api, proc = harness.start("index.asyncNeverSettles")
    res = api.invoke({})
    assert (res.kind, res.error_type) == ("error", "Runtime.NodeJsExit")
    assert "Promise that was never settled" in res.json()["errorMessage"]
    assert proc.proc.poll() is None


@pytest.mark.parametrize(
    ("handler", "error_type", "message", "code"),
    [
        ("index.uncaught", "Error", "async uncaught", 129),
        ("index.rejection", "Runtime.UnhandledPromiseRejection", "Error: rejected", 128),
    ],
)
def test_process_level_errors(
    harness: Harness, handler: str, error_type: str, message: str, code: int
) -> None:
    api, proc = harness.start(handler)
    res = api.invoke({})
    assert (res.kind, res.error_type) == ("error", error_type)
    assert res.json()["errorMessage"] == message
    assert proc.wait() == code


def test_esm_handler(harness: Harness) -> None:
    api, _ = harness.start("index.handler", {"index.mjs": INDEX_MJS})
    res = api.invoke({"x": 1})
    assert res.json() == {"esm": True, "event": {"x": 1}, "count": 1, "name": "fn"}
    assert "\tINFO\tesm\n" in (res.log or "")
    assert api.invoke({}).json()["count"] == 2


def test_module_kinds_and_paths(harness: Harness) -> None:
    files = {
        "src/package.json": '{"type": "module"}',
        "src/app.js": "export const handler = async () => 'esm-js';\n",
        "lib/x.cjs": "module.exports.handler = async () => 'cjs';\n",
        "node_modules/mypkg/index.js": "exports.handler = async () => 'from-node-modules';\n",
        "index.js": INDEX_JS,
    }
    for handler, expected in [
        ("src/app.handler", "esm-js"),
        ("lib/x.handler", "cjs"),
        ("mypkg.handler", "from-node-modules"),
        ("index.nested.deeper.fn", "nested"),
    ]:
        api, _ = harness.start(handler, files)
        assert api.invoke({}).json() == expected, handler


def test_reconnects_and_chunked_responses(harness: Harness) -> None:
    api, proc = harness.start(
        "index.handler", api_options={"chunked": True, "close_connections": True}
    )
    counts = [api.invoke({"i": i}).json()["count"] for i in range(4)]
    assert counts == [1, 2, 3, 4]
    assert proc.proc.poll() is None


BAD_CJS = """
exports.handler = async () => {
  return 1;
}}
"""
BAD_ESM = """
export const handler = async () => {
  return 1;
}}
"""
THROWS_AT_INIT = """
function setup() {
  throw new Error('init boom');
}
setup();
exports.handler = async () => 1;
"""


@pytest.mark.parametrize(
    ("handler", "error_type", "message"),
    [
        (
            "nope.handler",
            "Runtime.ImportModuleError",
            "Error: Cannot find module 'nope'\nRequire stack:\n- /var/runtime/index.mjs",
        ),
        ("index.nope", "Runtime.HandlerNotFound", "index.nope is undefined or not exported"),
        ("index.notFn", "Runtime.HandlerNotFound", "index.notFn is not a function"),
        ("bad.handler", "Runtime.UserCodeSyntaxError", "SyntaxError: Unexpected token '}'"),
        ("badesm.handler", "Runtime.UserCodeSyntaxError", "SyntaxError: Unexpected token '}'"),
        ("boom.handler", "Error", "init boom"),
        ("index", "Runtime.MalformedHandlerName", "Bad handler"),
        (
            "../index.handler",
            "Runtime.MalformedHandlerName",
            "'../index.handler' is not a valid handler name. Use absolute paths when "
            "specifying root directories in handler names.",
        ),
    ],
)
def test_init_errors(harness: Harness, handler: str, error_type: str, message: str) -> None:
    files = {
        "index.js": INDEX_JS,
        "bad.js": BAD_CJS,
        "badesm.mjs": BAD_ESM,
        "boom.js": THROWS_AT_INIT,
    }
    api, proc = harness.start(handler, files)
    err = api.wait_init_error()
    assert proc.wait() == 129
    assert api.next_calls == 0
    assert err.error_type == error_type
    body = err.json()
    assert set(body) == {"errorType", "errorMessage", "trace"}
    assert (body["errorType"], body["errorMessage"]) == (error_type, message)
    first = body["trace"][0]
    if error_type.startswith("Runtime."):
        assert first == f"{error_type}: {message.splitlines()[0]}"
    else:
        assert first == "Error: init boom"
        assert str(harness.root / "boom.js") in body["trace"][1]
    match = re.search(rf"^{TS}\tundefined\tERROR\tUncaught Exception \t(.*)\n", err.log or "", re.M)
    assert match, err.log
    assert json.loads(match.group(1))["errorType"] == error_type


TRACE_VARIABLE_CHECK = r"""
import { execSync } from 'node:child_process';
import fs from 'node:fs';
const { setTraceId } = await import(process.argv[2]);
const seen = () => [
  process.env._X_AMZN_TRACE_ID,
  execSync('printf %s "${_X_AMZN_TRACE_ID-unset}"', { shell: '/bin/sh' }).toString(),
];
const expect = (want) => {
  const got = seen();
  if (JSON.stringify(got) !== JSON.stringify(want)) throw new Error(JSON.stringify(got));
};
setTraceId('Root=1-a');
expect(['Root=1-a', 'Root=1-a']);
setTraceId(undefined);
expect([undefined, 'unset']);
process.env._X_AMZN_TRACE_ID = 'set by the function';
setTraceId('Root=1-b;Parent=c');
expect(['Root=1-b;Parent=c', 'Root=1-b;Parent=c']);
setTraceId('x'.repeat(600)); // longer than the addon's buffer: process.env takes it
expect(['x'.repeat(600), 'x'.repeat(600)]);
setTraceId('Root=1-d');
expect(['Root=1-d', 'Root=1-d']);
const pages = () => Number(fs.readFileSync('/proc/self/statm', 'utf8').split(' ')[1]);
globalThis.gc();
const before = pages();
for (let n = 0; n < 200000; n++) {
  const hex = n.toString(16).padStart(8, '0');
  setTraceId(`Root=1-${hex}-${'0'.repeat(24)};Parent=${hex.padStart(16, '0')};Sampled=0`);
}
globalThis.gc();
const grown = pages() - before;
if (grown > 2048) throw new Error(`${grown} pages more after 200,000 invocations' trace ids`);
console.log('ok');
"""


def test_the_trace_id_variable_is_set_per_invocation_without_growing_memory(
    tmp_path: Path,
) -> None:
    # process.env assignment would keep every value (glibc's setenv): ~7,000 pages for these
    from lambdad.runtime.toolchains import build_module

    addon = build_module("node").ensure_built()
    if addon is None:
        pytest.skip("no C compiler or Node.js headers: the addon cannot be built")
    check = tmp_path / "check.mjs"
    check.write_text(TRACE_VARIABLE_CHECK)
    assert NODE is not None
    run_check([NODE, "--expose-gc", str(check), BOOTSTRAP.as_uri()], tmp_path)
