"""The dotnet8 managed runtime (lambdad's host on Mono) through boto3 against a real, sandboxed
`lambdad serve`.

The handler assembly is compiled here with ``compile_function`` into ``Fn.dll`` (plus its debug
symbols) at the ZIP root; handlers are ``Fn::Ns.Type::Method``. Echo and context, errors,
timeouts, logs, warm reuse, AWS_EXECUTION_ENV, a POCO handler, a staged environment.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from lambdad.runtime.bootstraps.dotnet import build
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

MEMORY = 1024
TS = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"

SOURCE = r"""
using System;
using System.Collections.Generic;
using System.Threading;
using Amazon.Lambda.Core;

namespace Ns
{
    public class Echo
    {
        private static int count;

        public Dictionary<string, object> Handle(
            Dictionary<string, object> input, ILambdaContext context)
        {
            count++;
            Console.WriteLine("hello from dotnet " + context.AwsRequestId);
            context.Logger.LogLine("via ILambdaLogger " + context.AwsRequestId);
            if (input.ContainsKey("fail"))
                Fail();
            if (input.ContainsKey("sleep"))
                Thread.Sleep(Convert.ToInt32(input["sleep"]) * 1000);
            return new Dictionary<string, object>
            {
                { "event", input },
                { "count", count },
                { "pid", System.Diagnostics.Process.GetCurrentProcess().Id },
                { "awsRequestId", context.AwsRequestId },
                { "functionName", context.FunctionName },
                { "functionVersion", context.FunctionVersion },
                { "invokedFunctionArn", context.InvokedFunctionArn },
                { "memoryLimitInMB", context.MemoryLimitInMB },
                { "remainingMs", (long)context.RemainingTime.TotalMilliseconds },
                { "logGroupName", context.LogGroupName },
                { "logStreamName", context.LogStreamName },
                { "executionEnv", Environment.GetEnvironmentVariable("AWS_EXECUTION_ENV") },
            };
        }

        private static void Fail()
        {
            try
            {
                throw new ArgumentException("the cause");
            }
            catch (ArgumentException e)
            {
                throw new InvalidOperationException("dotnet says no", e);
            }
        }
    }

    public class Order
    {
        public string Customer { get; set; }
        public List<int> Quantities { get; set; }
    }

    public class Receipt
    {
        public string Message { get; set; }
        public int Items { get; set; }
        public string Note { get; set; }
    }

    public static class Orders
    {
        public static Receipt Total(Order order)
        {
            int items = 0;
            foreach (var q in order.Quantities)
                items += q;
            return new Receipt { Message = "receipt for " + order.Customer, Items = items };
        }
    }
}
"""


@pytest.fixture(scope="module")
def dotnet(server: Server) -> Server:
    require_runtimes(server, "dotnet8")
    return server


@pytest.fixture(scope="module")
def package(dotnet: Server, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    base = tmp_path_factory.mktemp("dotnet-fn")
    (base / "Function.cs").write_text(SOURCE)
    out = build.compile_function([base / "Function.cs"], base / "out" / "Fn.dll")
    files = {p.name: p.read_bytes() for p in sorted(out.parent.iterdir())}
    assert "Fn.dll" in files
    return files


def deploy(lam: Any, files: dict[str, bytes], **kwargs: Any) -> str:
    kwargs.setdefault("handler", "Fn::Ns.Echo::Handle")
    kwargs.setdefault("MemorySize", MEMORY)
    return create_function(lam, files, runtime="dotnet8", **kwargs)


def test_echo_context_logs_and_warm_reuse(lam: Any, package: dict[str, bytes]) -> None:
    name = deploy(lam, package, Timeout=10)
    first = invoke(lam, name, EVENT)
    body = check_echo(
        first,
        name=name,
        event=EVENT,
        memory=MEMORY,
        timeout=10,
        execution_env="AWS_Lambda_dotnet8",
    )
    assert body["count"] == 1
    report_init("dotnet", "dotnet8", MEMORY, first)
    request_id = body["awsRequestId"]
    # Console output carries AWS's .NET prefix: timestamp, request id, level
    assert re.search(
        rf"^{TS}\t{request_id}\tinfo\thello from dotnet {request_id}$", first.log, re.M
    ), first.log
    assert f"via ILambdaLogger {request_id}" in first.log
    check_warm(lam, name, body)


def test_thrown_exception_shape_and_the_environment_survives(
    lam: Any, package: dict[str, bytes]
) -> None:
    name = deploy(lam, package)
    assert invoke(lam, name).body["count"] == 1
    failed = invoke(lam, name, {"fail": True})
    body = check_unhandled(failed)
    assert list(body) == ["errorType", "errorMessage", "stackTrace", "cause"]
    assert body["errorType"] == "InvalidOperationException"
    assert body["errorMessage"] == "dotnet says no"
    assert body["stackTrace"] and all(f.startswith("at ") for f in body["stackTrace"])
    assert body["stackTrace"][0].startswith("at Ns.Echo.Fail ()")
    assert any(f.startswith("at Ns.Echo.Handle (") for f in body["stackTrace"])
    assert not any("Lambdad.Runtime" in f for f in body["stackTrace"])
    assert body["cause"]["errorType"] == "ArgumentException"
    assert body["cause"]["errorMessage"] == "the cause"
    assert f"hello from dotnet {failed.request_id}" in failed.log
    assert re.search(
        rf"^{TS}\t{failed.request_id}\tfail\tSystem.InvalidOperationException: dotnet says no",
        failed.log,
        re.M,
    ), failed.log
    again = invoke(lam, name)
    assert again.function_error is None and again.init_ms is None, again.explain()
    assert again.body["count"] == 3


def test_poco_handler(lam: Any, package: dict[str, bytes]) -> None:
    name = deploy(lam, package, handler="Fn::Ns.Orders::Total")
    inv = invoke(lam, name, {"Customer": "Ann", "Quantities": [2, 3]})
    assert inv.function_error is None, inv.explain()
    assert inv.body == {"Message": "receipt for Ann", "Items": 5}  # null Note left out


def test_timeout_then_a_fresh_environment(lam: Any, package: dict[str, bytes]) -> None:
    name = deploy(lam, package, Timeout=1)
    check_timeout(lam, name, {"sleep": 3})


def test_a_dependency_supplied_by_a_layer(
    dotnet: Server, lam: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A library assembly from a layer's lib/ (the host resolves assemblies from /opt/lib)."""
    base = tmp_path_factory.mktemp("dotnet-layer")
    (base / "Greeter.cs").write_text(
        "namespace Lib { public static class Greeter { public static string Hi() "
        '{ return "hi from a layer"; } } }\n'
    )
    (base / "Uses.cs").write_text(
        "using Amazon.Lambda.Core;\nnamespace Ns { public class Uses {\n"
        "  public string Handle(object input, ILambdaContext context) "
        "{ return Lib.Greeter.Hi(); } } }\n"
    )
    library = build.compile_function([base / "Greeter.cs"], base / "lib" / "Greeter.dll")
    handler = build.compile_function(
        [base / "Uses.cs"], base / "fn" / "Uses.dll", references=[library]
    )
    layer = lam.publish_layer_version(
        LayerName=unique_name("dotnetlib"),
        Content={"ZipFile": make_zip({"lib/Greeter.dll": library.read_bytes()})},
    )["LayerVersionArn"]
    name = deploy(
        lam, {"Uses.dll": handler.read_bytes()}, handler="Uses::Ns.Uses::Handle", Layers=[layer]
    )
    reply = lam.invoke(FunctionName=name, Payload=b"{}")
    body = reply["Payload"].read()
    assert reply.get("FunctionError") is None, body
    assert json.loads(body) == "hi from a layer"


STAGED_PROBE = r"""
using System;
using System.Collections;
using System.Collections.Generic;
using Amazon.Lambda.Core;

namespace Ns
{
    public class Probe
    {
        private static readonly double ImportedAt;

        // an explicit static constructor runs when the host creates the handler (its init),
        // not lazily at the first use of the field
        static Probe()
        {
            var epoch = new DateTime(1970, 1, 1, 0, 0, 0, DateTimeKind.Utc);
            ImportedAt = (DateTime.UtcNow - epoch).TotalSeconds; // (finer than milliseconds)
        }

        public Dictionary<string, object> Handle(object input, ILambdaContext context)
        {
            var variables = new List<object>();
            foreach (DictionaryEntry entry in Environment.GetEnvironmentVariables())
                if (((string)entry.Key).StartsWith("LAMBDAD", StringComparison.Ordinal))
                    variables.Add(entry.Key);
            return new Dictionary<string, object>
            {
                { "imported_at", ImportedAt },
                { "staged", Environment.GetEnvironmentVariable("LAMBDAD_STAGED") },
                { "variables", variables },
            };
        }
    }
}
"""


def test_a_deployed_function_takes_its_staged_environment(
    dotnet: Server, lam: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The host waits (GET /runtime/lambdad/wait) before it loads the handler: the handler
    type's static constructor runs for the first invocation, not when the environment is
    staged at deploy."""
    base = tmp_path_factory.mktemp("dotnet-staged")
    (base / "Probe.cs").write_text(STAGED_PROBE)
    dll = build.compile_function([base / "Probe.cs"], base / "out" / "Probe.dll")
    files: dict[str, Any] = {p.name: p.read_bytes() for p in dll.parent.iterdir()}
    body = check_a_deployed_function_takes_its_staged_environment(
        dotnet,
        lam,
        files,
        runtime="dotnet8",
        handler="Probe::Ns.Probe::Handle",
        MemorySize=MEMORY,
    )
    # (the host took it out of its environment)
    assert body.get("staged") is None and "LAMBDAD_STAGED" not in body["variables"]
