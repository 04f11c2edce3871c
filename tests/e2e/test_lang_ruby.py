"""Ruby managed runtimes (ruby3.2/3.3/3.4) through boto3 against a real, sandboxed `lambdad serve`:
echo and context, errors, timeouts, logs, warm reuse, AWS_EXECUTION_ENV."""

from __future__ import annotations

import json
import re
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
from tests.e2e.test_staged import check_a_deployed_function_takes_its_staged_environment

pytestmark = pytest.mark.toolchain

RUNTIMES = ("ruby3.2", "ruby3.3", "ruby3.4")
MEMORY = 1024

APP = """\
require 'json'

COUNT = [0]

class FunctionFailure < StandardError; end

def handler(event:, context:)
  COUNT[0] += 1
  puts "hello from ruby #{context.aws_request_id}"
  $stderr.puts "to stderr #{context.aws_request_id}"
  raise FunctionFailure, 'ruby says no' if event.is_a?(Hash) && event['fail'] # RAISE
  sleep event['sleep'] if event.is_a?(Hash) && event['sleep']
  {
    event: event,
    count: COUNT[0],
    pid: Process.pid,
    awsRequestId: context.aws_request_id,
    functionName: context.function_name,
    functionVersion: context.function_version,
    invokedFunctionArn: context.invoked_function_arn,
    memoryLimitInMB: context.memory_limit_in_mb,
    remainingMs: context.get_remaining_time_in_millis,
    logGroupName: context.log_group_name,
    logStreamName: context.log_stream_name,
    executionEnv: ENV['AWS_EXECUTION_ENV'],
  }
end

def no_method(event:, context:)
  nil.frobnicate
end

module Shop
  class Orders
    def self.total(event:, context:)
      { total: event['items'].sum { |i| i['price'] * i['qty'] }, by: context.function_name }
    end
  end
end
"""
RAISE_LINE = next(i for i, line in enumerate(APP.splitlines(), 1) if "# RAISE" in line)


@pytest.fixture(scope="module")
def ruby(server: Server) -> Server:
    require_runtimes(server, *RUNTIMES)
    return server


def deploy(lam: Any, runtime: str = "ruby3.3", **kwargs: Any) -> str:
    kwargs.setdefault("handler", "app.handler")
    kwargs.setdefault("MemorySize", MEMORY)
    return create_function(lam, {"app.rb": APP}, runtime=runtime, **kwargs)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_echo_context_logs_and_warm_reuse(ruby: Server, lam: Any, runtime: str) -> None:
    name = deploy(lam, runtime, Timeout=10)
    first = invoke(lam, name, EVENT)
    body = check_echo(
        first,
        name=name,
        event=EVENT,
        memory=str(MEMORY),  # AWS's Ruby context hands the variable over as a String
        timeout=10,
        execution_env=f"AWS_Lambda_{runtime}",
    )
    assert body["count"] == 1
    report_init("ruby", runtime, MEMORY, first)
    lines = first.log.splitlines()
    assert f"hello from ruby {body['awsRequestId']}" in lines
    assert f"to stderr {body['awsRequestId']}" in lines
    check_warm(lam, name, body)


def test_module_class_method_handler(ruby: Server, lam: Any) -> None:
    name = deploy(lam, handler="app.Shop::Orders.total")
    inv = invoke(lam, name, {"items": [{"price": 2, "qty": 3}, {"price": 5, "qty": 1}]})
    assert inv.function_error is None, inv.explain()
    assert inv.body == {"total": 11, "by": name}


def test_raised_error_shape_and_the_environment_survives(ruby: Server, lam: Any) -> None:
    name = deploy(lam)
    ok = invoke(lam, name)
    assert ok.body["count"] == 1
    failed = invoke(lam, name, {"fail": True})
    body = check_unhandled(failed)
    assert list(body) == ["errorMessage", "errorType", "stackTrace"]
    assert body["errorMessage"] == "ruby says no"
    assert body["errorType"] == "Function<FunctionFailure>"
    assert re.fullmatch(rf"/var/task/app\.rb:{RAISE_LINE}:in .handler.", body["stackTrace"][0])
    assert not any("bootstrap.rb" in frame for frame in body["stackTrace"])
    # the handler's output before the raise and the error document are in the log
    assert f"hello from ruby {failed.request_id}" in failed.log
    assert '"errorType": "Function<FunctionFailure>"' in failed.log
    # a StandardError keeps the environment: the counter goes on
    again = invoke(lam, name)
    assert again.function_error is None and again.init_ms is None, again.explain()
    assert again.body["count"] == 3


def test_no_method_error_is_critical(ruby: Server, lam: Any) -> None:
    """AWS's Ruby runtime posts a NameError/NoMethodError and then exits."""
    name = deploy(lam, handler="app.no_method")
    failed = invoke(lam, name)
    body = check_unhandled(failed)
    assert body["errorType"] == "Function<NoMethodError>"
    assert body["errorMessage"].startswith("undefined method `frobnicate' for nil")
    assert "Critical exception from handler" in failed.log


def test_the_invocation_after_a_critical_error_gets_a_new_environment(
    ruby: Server, lam: Any
) -> None:
    name = deploy(lam, handler="app.no_method")
    assert invoke(lam, name).function_error == "Unhandled"
    after = invoke(lam, name)
    assert after.body["errorType"] == "Function<NoMethodError>", after.explain()
    assert after.init_ms is not None


def test_timeout_then_a_fresh_environment(ruby: Server, lam: Any) -> None:
    name = deploy(lam, Timeout=1)
    check_timeout(lam, name, {"sleep": 3})


def test_a_dependency_supplied_by_a_layer(ruby: Server, lam: Any) -> None:
    """A library from a layer's ruby/lib (AWS puts /opt/ruby/lib on the load path)."""
    layer = lam.publish_layer_version(
        LayerName=unique_name("rblib"),
        Content={"ZipFile": make_zip({"ruby/lib/greeting.rb": "GREETING = 'from a layer'\n"})},
    )["LayerVersionArn"]
    name = create_function(
        lam,
        {"app.rb": "require 'greeting'\ndef handler(event:, context:)\n  GREETING\nend\n"},
        runtime="ruby3.3",
        handler="app.handler",
        MemorySize=1024,
        Layers=[layer],
    )
    reply = lam.invoke(FunctionName=name, Payload=b"{}")
    assert reply.get("FunctionError") is None
    assert json.loads(reply["Payload"].read()) == "from a layer"


STAGED_PROBE = """\
IMPORTED_AT = Time.now.to_f

def handler(event:, context:)
  { imported_at: IMPORTED_AT, staged: ENV['LAMBDAD_STAGED'] }
end
"""


def test_a_deployed_function_takes_its_staged_environment(ruby: Server, lam: Any) -> None:
    """The bootstrap of a staged environment waits (GET /runtime/lambdad/wait) before it
    requires the handler file: the function's init runs for its first invocation."""
    body = check_a_deployed_function_takes_its_staged_environment(
        ruby, lam, {"app.rb": STAGED_PROBE}, runtime="ruby3.3", handler="app.handler"
    )
    assert body["staged"] is None  # (the bootstrap took LAMBDAD_STAGED out)
