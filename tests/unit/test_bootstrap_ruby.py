"""The Ruby bootstrap (managed ruby3.x runtimes) against a fake Runtime API."""

from __future__ import annotations

import json
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
from fake_runtime_api import (
    BootstrapHarness,
    CapturedProcess,
    FakeRuntimeAPI,
    reserved_env,
    run_check,
)

BOOTSTRAP = (
    Path(__file__).resolve().parents[2]
    / "lambdad"
    / "runtime"
    / "bootstraps"
    / "ruby"
    / "bootstrap.rb"
)
RUBY = shutil.which("ruby")

pytestmark = pytest.mark.skipif(RUBY is None, reason="ruby not installed (apt-get install ruby)")

APP = """\
require 'json'

COUNT = [0]

module Outer
  class Handler
    def self.process(event:, context:)
      { 'nested' => event, 'request_id' => context.aws_request_id }
    end
  end
end

def handler(event:, context:)
  COUNT[0] += 1
  puts "PUTS #{context.aws_request_id}"
  $stderr.puts "STDERR #{context.aws_request_id}"
  {
    event: event,
    count: COUNT[0],
    pid: Process.pid,
    aws_request_id: context.aws_request_id,
    function_name: context.function_name,
    function_version: context.function_version,
    invoked_function_arn: context.invoked_function_arn,
    memory_limit_in_mb: context.memory_limit_in_mb,
    log_group_name: context.log_group_name,
    log_stream_name: context.log_stream_name,
    deadline_ms: context.deadline_ms,
    remaining: context.get_remaining_time_in_millis,
    identity: context.identity,
    client_context: context.client_context,
    context_class: context.class.name,
    trace: ENV['_X_AMZN_TRACE_ID'],
    cwd: Dir.pwd,
    load_path: $LOAD_PATH.first(2),
    gem_path: ENV['GEM_PATH'],
    stdout_sync: $stdout.sync,
    external_encoding: Encoding.default_external.to_s,
    verbose: $VERBOSE,
  }
end

def raises(event:, context:)
  raise 'boom'
end

def raises_argument_error(event:, context:)
  raise ArgumentError, 'bad argument'
end

def returns_nan(event:, context:)
  Float::NAN
end

def returns_io(event:, context:)
  StringIO.new("\\x00raw".b)
end

def returns_nil(event:, context:)
  nil
end

def returns_unicode(event:, context:)
  { 's' => "h\\u00e9llo \\u2603" }
end

def logs(event:, context:)
  require 'logger'
  Logger.new($stdout).info('logged')
  Logger.new($stdout, progname: 'prog').warn('warned')
  Logger.new($stderr, datetime_format: '%Y').error('dated')
  Logger.new(StringIO.new).info('not to the log')
  'ok'
end

def no_method(event:, context:)
  nil.frobnicate
end

def exits(event:, context:)
  exit 3
end

def positional(event, context)
  'never'
end

def dispatch(event:, context:)
  __send__(event['call'], event: event, context: context)
end
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
            "LAMBDA_RUNTIME_DIR": str(BOOTSTRAP.parent),
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EXECUTION_ENV": "AWS_Lambda_ruby3.3",
            "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
            **extra,
        },
    )


class Harness(BootstrapHarness):
    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root

    def start(
        self,
        handler: str,
        files: dict[str, str] | None = None,
        api_options: dict[str, bool] | None = None,
        **env: str,
    ) -> tuple[FakeRuntimeAPI, CapturedProcess]:
        _write(self.root, files if files is not None else {"app.rb": APP})
        assert RUBY is not None
        return self.launch(
            [RUBY, str(BOOTSTRAP)],
            lambda api: _env(api, self.root, handler, **env),
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


def _line(text: str, needle: str) -> int:
    return next(i + 1 for i, line in enumerate(text.splitlines()) if needle in line)


def _frame(path: Path, line: int, method: str) -> str:
    # Ruby < 3.4: "file:1:in `name'"; Ruby 3.4: "file:1:in 'Object#name'" (or 'name')
    return rf"{re.escape(str(path))}:{line}:in [`'](Object#)?{re.escape(method)}'"


# ---------------------------------------------------------------------------------------------


def test_echo_context_and_warm_reuse(harness: Harness) -> None:
    # no LANG (Ruby would default to US-ASCII) and warnings on: the bootstrap emits none
    api, proc = harness.start("app.handler", RUBYOPT="-w")
    client_context = {
        "client": {"installation_id": "inst", "app_title": "title"},
        "custom": {"k": "v"},
        "env": {"platform": "linux"},
    }
    identity = {"cognitoIdentityId": "id-1", "cognitoIdentityPoolId": "pool-1"}
    deadline = int(time.time() * 1000) + 60_000
    event = {"hello": "world", "n": [1, 2.5, None, True], "u": "h\u00e9llo \u2603"}
    rid = api.enqueue(event, deadline_ms=deadline, client_context=client_context, identity=identity)
    res = api.wait_result(rid)
    assert res.kind == "response", res.body
    assert res.headers["content-type"] == "application/json"
    body = res.json()
    assert body["event"] == event
    assert body["count"] == 1
    assert body["aws_request_id"] == rid
    assert body["function_name"] == "fn"
    assert body["function_version"] == "$LATEST"
    assert body["invoked_function_arn"] == "arn:aws:lambda:us-east-1:123456789012:function:fn"
    assert body["memory_limit_in_mb"] == "256"  # a String in AWS's Ruby runtime too
    assert body["log_group_name"] == "/aws/lambda/fn"
    assert body["log_stream_name"] == "2024/01/01/[$LATEST]abcdef"
    assert body["deadline_ms"] == deadline
    assert 55_000 < body["remaining"] <= 60_000
    assert body["identity"] == identity
    assert body["client_context"] == client_context
    assert body["context_class"] == "LambdaContext"
    assert body["trace"].startswith("Root=1-5759e988")
    assert body["cwd"] == str(harness.root)
    assert body["load_path"] == [str(harness.root), "/opt/ruby/lib"]
    # no GEM_PATH from the platform: AWS's layout for the declared and the running version
    gem_path = body["gem_path"].split(":")
    assert gem_path[0] == f"{harness.root}/vendor/bundle/ruby/3.3.0"
    assert "/opt/ruby/gems/3.3.0" in gem_path
    assert gem_path[-1] == ""  # trailing separator: Ruby's own gem directories stay
    assert body["stdout_sync"] is True
    assert body["external_encoding"] == "UTF-8"
    assert body["verbose"] is True
    # output reached the log before the response was posted
    assert f"PUTS {rid}\n" in (res.log or "")
    assert f"STDERR {rid}\n" in (res.log or "")

    # warm reuse: same process, top-level state kept; no client context / identity / trace
    for n in (2, 3):
        res2 = api.invoke({"n": n}, trace_id=None)
        b2 = res2.json()
        assert b2["count"] == n
        assert b2["pid"] == body["pid"]
        assert b2["client_context"] is None
        assert b2["identity"] is None
        assert b2["trace"] is None
        assert f"PUTS {b2['aws_request_id']}\n" in (res2.log or "")
    # an expired deadline reports 0, not a negative number
    res3 = api.invoke({}, deadline_ms=int(time.time() * 1000) - 5000)
    assert res3.json()["remaining"] == 0
    assert proc.proc.poll() is None
    assert "warning:" not in proc.output()


def test_class_method_handler_and_platform_gem_path(harness: Harness) -> None:
    files = {"app.rb": APP, "lib/deep.rb": "def handler(event:, context:) = 'deep'\n"}
    api, _ = harness.start("app.Outer::Handler.process", files, GEM_PATH="/custom/gems")
    res = api.invoke({"a": 1})
    assert res.json() == {"nested": {"a": 1}, "request_id": res.request_id}
    api2, _ = harness.start("lib/deep.handler", files)
    assert api2.invoke({}).json() == "deep"
    # a GEM_PATH set by the platform is left alone
    api3, _ = harness.start(
        "app.handler", files, GEM_PATH="/custom/gems", LANG="C.UTF-8", RUBYOPT="-w"
    )
    body = api3.invoke({}).json()
    assert body["gem_path"] == "/custom/gems"
    assert (body["external_encoding"], body["verbose"]) == ("UTF-8", True)


def test_handler_error_shape_and_log(harness: Harness) -> None:
    api, proc = harness.start("app.raises")
    res = api.invoke({})
    assert res.kind == "error"
    # AWS's header names only a few core classes; everything else is a UserException
    assert res.error_type == "Function<UserException>"
    body = res.json()
    assert list(body) == ["errorMessage", "errorType", "stackTrace"]
    assert body["errorMessage"] == "boom"
    assert body["errorType"] == "Function<RuntimeError>"
    line = _line(APP, "raise 'boom'")
    (frame,) = body["stackTrace"]  # the bootstrap's own frames are cut off
    assert re.fullmatch(_frame(harness.root / "app.rb", line, "raises"), frame), frame
    log = res.log or ""
    assert "Error raised from handler method\n{\n" in log
    assert '  "errorType": "Function<RuntimeError>",\n' in log
    # a StandardError keeps the environment alive
    res = api.invoke({})
    assert (res.kind, res.json()["errorMessage"]) == ("error", "boom")
    assert proc.proc.poll() is None


def test_results_and_serialisation(harness: Harness) -> None:
    api, proc = harness.start("app.dispatch")
    res = api.invoke({"call": "raises_argument_error"})
    assert res.error_type == "Function<ArgumentError>"
    assert res.json()["errorType"] == "Function<ArgumentError>"
    assert res.json()["errorMessage"] == "bad argument"
    res = api.invoke({"call": "returns_nan"})
    assert res.kind == "error"
    assert res.json()["errorType"] == "Function<JSON::GeneratorError>"
    res = api.invoke({"call": "returns_io"})
    assert (res.kind, res.body) == ("response", b"\x00raw")
    assert res.headers["content-type"] == "application/unknown"
    res = api.invoke({"call": "returns_nil"})
    assert (res.kind, res.body) == ("response", b"null")
    res = api.invoke({"call": "returns_unicode"})
    assert res.json() == {"s": "h\u00e9llo \u2603"}
    # handlers are called with keyword arguments, as AWS does
    res = api.invoke({"call": "positional"})
    assert res.json()["errorType"] == "Function<ArgumentError>"
    # Logger to $stdout: AWS's line format with the request id
    res = api.invoke({"call": "logs"})
    assert res.json() == "ok"
    rid = re.escape(res.request_id or "")
    ts = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}"
    log = res.log or ""
    assert re.search(rf"I, \[{ts} #{proc.proc.pid}\]  INFO {rid} -- : logged\n", log), log
    assert re.search(rf"W, \[{ts} #{proc.proc.pid}\]  WARN {rid} -- prog: warned\n", log), log
    assert re.search(rf"E, \[\d{{4}} #{proc.proc.pid}\] ERROR {rid} -- : dated\n", log), log
    assert "not to the log" not in log
    assert proc.proc.poll() is None


def test_json_log_format(harness: Harness) -> None:
    api, _ = harness.start("app.logs", AWS_LAMBDA_LOG_FORMAT="JSON")
    res = api.invoke({})
    records = [json.loads(line) for line in (res.log or "").splitlines() if line.startswith("{")]
    by_message = {r["message"]: r for r in records}
    assert by_message["logged"]["level"] == "INFO"
    assert by_message["logged"]["requestId"] == res.request_id
    assert by_message["warned"]["logger"] == "prog"


@pytest.mark.parametrize(
    ("call", "error_type", "message"),
    [
        ("no_method", "Function<NoMethodError>", r"undefined method [`']frobnicate' for nil"),
        ("exits", "Function<SystemExit>", r"exit"),
    ],
)
def test_critical_errors_end_the_process(
    harness: Harness, call: str, error_type: str, message: str
) -> None:
    # AWS's runtime posts NameError/NoMethodError and non-StandardError exceptions, then exits
    api, proc = harness.start("app.dispatch")
    res = api.invoke({"call": call})
    assert res.kind == "error"
    assert res.error_type == error_type
    body = res.json()
    assert body["errorType"] == error_type
    assert re.match(message, body["errorMessage"]), body["errorMessage"]
    assert "\n" not in body["errorMessage"]  # no error_highlight / did_you_mean hints
    assert "Critical exception from handler" in (res.log or "")
    assert proc.wait() == 255


BROKEN = """\
x = 1
def handler(event:, context:
  1
end
"""
RAISES_AT_REQUIRE = """\
def helper
  raise 'cannot start'
end

helper
"""


@pytest.mark.parametrize(
    "case", ["missing-file", "syntax", "require-raises", "malformed", "missing-dependency"]
)
def test_init_errors(harness: Harness, case: str) -> None:
    files = {
        "app.rb": APP,
        "broken.rb": BROKEN,
        "boom.rb": RAISES_AT_REQUIRE,
        "needs.rb": "require 'no_such_gem_xyz'\n",
    }
    handler = {
        "missing-file": "nope.handler",
        "syntax": "broken.handler",
        "require-raises": "boom.handler",
        "malformed": "handler",
        "missing-dependency": "needs.handler",
    }[case]
    api, proc = harness.start(handler, files)
    err = api.wait_init_error()
    assert proc.wait() == 252  # exit(-4), as AWS's runtime
    assert api.next_calls == 0
    body = err.json()
    assert list(body) == ["errorMessage", "errorType", "stackTrace"]
    assert all(str(BOOTSTRAP) not in frame for frame in body["stackTrace"])
    if case == "missing-file":
        assert body["errorType"] == "Init<LoadError>"
        assert err.error_type == "Init<LoadError>"
        assert body["errorMessage"] == "cannot load such file -- nope"
    elif case == "missing-dependency":
        assert body["errorType"] == "Init<LoadError>"
        assert body["errorMessage"] == "cannot load such file -- no_such_gem_xyz"
        assert any(f"{harness.root / 'needs.rb'}:1:in " in f for f in body["stackTrace"])
    elif case == "syntax":
        assert body["errorType"] == "Init<SyntaxError>"
        assert err.error_type == "Function<UserException>"
        assert str(harness.root / "broken.rb") in body["errorMessage"]
    elif case == "require-raises":
        assert body["errorType"] == "Init<RuntimeError>"
        assert body["errorMessage"] == "cannot start"
        path = harness.root / "boom.rb"
        assert re.fullmatch(_frame(path, 2, "helper"), body["stackTrace"][0])
        assert body["stackTrace"][1].startswith(f"{path}:5:in ")
    else:
        assert body["errorType"] == "Init<ArgumentError>"
        assert err.error_type == "Init<ArgumentError>"
        assert body["errorMessage"].startswith('Invalid handler ["handler"], must be of form')
    log = err.log or ""
    assert f"Init error when loading handler {handler}\n{{\n" in log
    assert f'  "errorType": "{body["errorType"]}",\n' in log


@pytest.mark.parametrize(
    ("handler", "error_type", "message"),
    [
        ("app.nope", "Function<NoMethodError>", r"undefined method [`']nope' for main"),
        ("app.Nope::Klass.run", "Function<NameError>", r"uninitialized constant Nope\Z"),
        ("app.Outer::Handler.nope", "Function<NoMethodError>", r"undefined method [`']nope'"),
    ],
)
def test_missing_handler_fails_the_first_invocation(
    harness: Harness, handler: str, error_type: str, message: str
) -> None:
    # AWS's Ruby runtime does not look the method up at init: the first invocation fails
    # with the NoMethodError/NameError, and the process exits after posting it.
    api, proc = harness.start(handler)
    res = api.invoke({})
    assert not api.init_errors
    assert res.kind == "error"
    body = res.json()
    assert (res.error_type, body["errorType"]) == (error_type, error_type)
    assert re.match(message, body["errorMessage"]), body["errorMessage"]
    assert proc.wait() == 255


GEMSPEC = """\
Gem::Specification.new do |s|
  s.name = 'lambdad_test_gem'
  s.version = '1.0.0'
  s.summary = 'test'
  s.authors = ['lambdad']
  s.files = ['lib/lambdad_test_gem.rb']
  s.require_paths = ['lib']
end
"""


@pytest.mark.parametrize("version", ["3.3.0", "running"])
def test_vendored_gems_are_found_without_platform_gem_path(harness: Harness, version: str) -> None:
    # `bundle install --path vendor/bundle` as for AWS: gems under vendor/bundle/ruby/<ver>,
    # <ver> being the version the function declares (ruby3.3) or the one running it
    assert RUBY is not None
    if version == "running":
        version = subprocess.run(
            [RUBY, "-e", "print RbConfig::CONFIG['ruby_version']"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    base = f"vendor/bundle/ruby/{version}"
    files = {
        f"{base}/specifications/lambdad_test_gem-1.0.0.gemspec": GEMSPEC,
        f"{base}/gems/lambdad_test_gem-1.0.0/lib/lambdad_test_gem.rb": "GEM_OK = 'gem ok'\n",
        "uses_gem.rb": "require 'lambdad_test_gem'\ndef handler(event:, context:) = GEM_OK\n",
    }
    api, _ = harness.start("uses_gem.handler", files)
    assert api.invoke({}).json() == "gem ok"


MARSHALLER = """\
module AwsLambda
  class Marshaller
    def self.marshall_response(response)
      [response.upcase, 'text/plain']
    end
  end
end

def handler(event:, context:) = event['s']
"""


def test_marshaller_can_be_reopened(harness: Harness) -> None:
    # AWS's runtime lets a function replace AwsLambda::Marshaller's methods
    api, _ = harness.start("custom.handler", {"custom.rb": MARSHALLER})
    res = api.invoke({"s": "abc"})
    assert (res.kind, res.body, res.headers["content-type"]) == ("response", b"ABC", "text/plain")


def test_reconnects_and_chunked_responses(harness: Harness) -> None:
    api, proc = harness.start(
        "app.handler", api_options={"chunked": True, "close_connections": True}
    )
    counts = [api.invoke({"i": i}).json()["count"] for i in range(4)]
    assert counts == [1, 2, 3, 4]
    assert proc.proc.poll() is None


def test_bad_context_header_is_reported_on_the_invocation(harness: Harness) -> None:
    api, proc = harness.start("app.handler")
    res = api.invoke({}, client_context="{oops")
    assert res.kind == "error"
    assert res.json()["errorType"] == "Runtime<JSON::ParserError>"
    assert api.invoke({}).json()["count"] == 1
    assert proc.proc.poll() is None


TRACE_VARIABLE_CHECK = r"""
require ARGV[0]
trace = LambdadBootstrap::TraceIdVariable.new
seen = -> { [ENV['_X_AMZN_TRACE_ID'], `sh -c 'printf %s "${_X_AMZN_TRACE_ID-unset}"'`] }
trace.set('Root=1-a')
raise seen.call.inspect unless seen.call == ['Root=1-a', 'Root=1-a']
trace.set(nil)
raise seen.call.inspect unless seen.call == [nil, 'unset']
ENV['_X_AMZN_TRACE_ID'] = 'set by the function'
trace.set('Root=1-b;Parent=c')
raise seen.call.inspect unless seen.call == ['Root=1-b;Parent=c', 'Root=1-b;Parent=c']
pages = -> { File.read('/proc/self/statm').split[1].to_i }
before = pages.call
100_000.times { |n| trace.set(format('Root=1-%08x-%s;Parent=%016x;Sampled=0', n, '0' * 24, n)) }
GC.start
grown = pages.call - before
raise "#{grown} pages more after 100,000 invocations' trace ids" if grown > 1024
puts 'ok'
"""


def test_the_trace_id_variable_is_set_per_invocation_without_growing_memory(
    tmp_path: Path,
) -> None:
    # ENV[]= would keep every value (glibc's setenv): ~3,500 pages for these 100,000
    assert RUBY is not None
    run_check([RUBY, "-e", TRACE_VARIABLE_CHECK, str(BOOTSTRAP)], tmp_path)
