"""The .NET (Mono) runtime host against a fake Runtime API (skipped without mono/mcs).

Handler DLLs are compiled in the test with ``mcs`` against our Amazon.Lambda.Core.dll, the
way users build them (``compile_function``), then run by ``mono lambdad-dotnet-runtime.exe``.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from fake_runtime_api import BootstrapHarness, CapturedProcess, FakeRuntimeAPI, reserved_env

from lambdad.runtime.bootstraps.dotnet import build as dotnet_build

pytestmark = [
    pytest.mark.skipif(
        not dotnet_build.toolchain_available(), reason="mono/mcs (mono-runtime, mono-mcs) missing"
    ),
    pytest.mark.toolchain,
]

HANDLERS_CS = r"""
using System;
using System.Collections.Generic;
using System.IO;
using System.Text;
using System.Threading.Tasks;
using Amazon.Lambda.Core;

namespace Fn
{
    public class Echo
    {
        public Dictionary<string, object> Handle(
            Dictionary<string, object> input, ILambdaContext context)
        {
            var identity = context.Identity;
            var client = context.ClientContext;
            var app = client == null ? null : client.Client;
            return new Dictionary<string, object>
            {
                { "event", input },
                { "AwsRequestId", context.AwsRequestId },
                { "FunctionName", context.FunctionName },
                { "FunctionVersion", context.FunctionVersion },
                { "InvokedFunctionArn", context.InvokedFunctionArn },
                { "MemoryLimitInMB", context.MemoryLimitInMB },
                { "LogGroupName", context.LogGroupName },
                { "LogStreamName", context.LogStreamName },
                { "RemainingMs", (long)context.RemainingTime.TotalMilliseconds },
                { "IdentityId", identity == null ? null : identity.IdentityId },
                { "IdentityPoolId", identity == null ? null : identity.IdentityPoolId },
                { "InstallationId", app == null ? null : app.InstallationId },
                { "AppTitle", app == null ? null : app.AppTitle },
                { "Custom", client == null ? null : client.Custom },
                { "Env", client == null ? null : client.Environment },
                { "LoggerIsSet", context.Logger != null },
                { "Trace", Environment.GetEnvironmentVariable("_X_AMZN_TRACE_ID") },
                { "Cwd", Directory.GetCurrentDirectory() },
            };
        }
    }

    public enum Size { Small, Large }

    public class Item
    {
        public string Sku { get; set; }
        public int Quantity { get; set; }
        public decimal Price { get; set; }
    }

    public class Order
    {
        public string OrderId { get; set; }
        public List<Item> Items { get; set; }
        public Size Size { get; set; }
        public DateTime PlacedAt { get; set; }
        public Dictionary<string, string> Tags { get; set; }
        public bool Gift;
    }

    public class Receipt
    {
        public string OrderId { get; set; }
        public int Count { get; set; }
        public decimal Total { get; set; }
        public Size Size { get; set; }
        public string Note { get; set; }           // null: omitted
        public int? Missing { get; set; }          // null: omitted
        public string[] Skus { get; set; }
        public DateTime PlacedAt { get; set; }
        public bool Gift { get; set; }
        public Dictionary<string, string> Tags { get; set; }
    }

    public static class Poco
    {
        public static Receipt Handle(Order order)
        {
            var skus = new List<string>();
            decimal total = 0;
            int count = 0;
            foreach (var item in order.Items)
            {
                skus.Add(item.Sku);
                total += item.Price * item.Quantity;
                count += item.Quantity;
            }
            return new Receipt
            {
                OrderId = order.OrderId, Count = count, Total = total, Size = order.Size,
                Skus = skus.ToArray(), PlacedAt = order.PlacedAt, Gift = order.Gift,
                Tags = order.Tags,
            };
        }
    }

    public class Strings
    {
        public string Upper(string input) { return input.ToUpperInvariant(); }

        public int Length(string input, ILambdaContext context) { return input.Length; }

        public void Nothing(ILambdaContext context)
        {
            Console.WriteLine("nothing for " + context.AwsRequestId);
        }
    }

    public static class Streams
    {
        public static Stream Reverse(Stream input)
        {
            var ms = new MemoryStream();
            input.CopyTo(ms);
            byte[] bytes = ms.ToArray();
            Array.Reverse(bytes);
            return new MemoryStream(bytes);
        }
    }

    public class Async
    {
        public async Task<Dictionary<string, object>> Handle(
            Dictionary<string, object> input, ILambdaContext context)
        {
            await Task.Delay(5);
            await Task.Yield();
            return new Dictionary<string, object> {
                { "async", true }, { "id", context.AwsRequestId }, { "event", input },
            };
        }

        public async Task Fire(Dictionary<string, object> input)
        {
            await Task.Delay(1);
            Console.WriteLine("fired");
        }

        public async Task<string> Fail(Dictionary<string, object> input)
        {
            await Task.Delay(1);
            throw new TimeoutException("async boom");
        }
    }

    public class Counter
    {
        public static int Static;
        public static int Constructed;
        private int _calls;

        public Counter() { Constructed++; Console.WriteLine("constructed " + Constructed); }

        public Dictionary<string, object> Handle(Dictionary<string, object> input)
        {
            Static++;
            _calls++;
            return new Dictionary<string, object> {
                { "static", Static }, { "instance", _calls }, { "constructed", Constructed },
                { "pid", System.Diagnostics.Process.GetCurrentProcess().Id },
            };
        }
    }

    public class Failing
    {
        public string Handle(Dictionary<string, object> input, ILambdaContext context)
        {
            if (input.ContainsKey("aggregate"))
                throw new AggregateException(
                    "many", new ArgumentException("first"), new FormatException("second"));
            Inner();
            return "unreachable";
        }

        private static void Inner()
        {
            try
            {
                throw new ArgumentException("the cause");
            }
            catch (ArgumentException e)
            {
                throw new InvalidOperationException("boom \"quoted\"\nline two", e);
            }
        }
    }

    public class Logging
    {
        public string Handle(Dictionary<string, object> input, ILambdaContext context)
        {
            Console.WriteLine("hello from Console.WriteLine");
            Console.WriteLine("formatted {0} and {1}", 1, "two");
            Console.Write("partial ");
            Console.Write("write\n");
            Console.Error.WriteLine("to stderr");
            context.Logger.LogLine("from context.Logger.LogLine");
            context.Logger.Log("from context.Logger.Log");
            LambdaLogger.Log("from LambdaLogger.Log");
            Console.WriteLine("unicode \u00e9\u4e2d\U0001F600");
            return "logged";
        }
    }

    public class BadCtor
    {
        public BadCtor() { throw new InvalidOperationException("constructor failed"); }

        public string Handle(string input) { return input; }
    }

    public class TooMany
    {
        public string Handle(string a, string b, string c) { return a; }
    }

    public class Overloaded
    {
        public string Handle(string a) { return a; }

        public string Handle(int a) { return a.ToString(); }
    }
}
"""

CAMEL_CS = r"""
using System.Text.Json.Serialization;
using Amazon.Lambda.Core;
using Amazon.Lambda.Serialization.SystemTextJson;

[assembly: LambdaSerializer(typeof(CamelCaseLambdaJsonSerializer))]

namespace Camel
{
    public class Request { public string FirstName { get; set; } public int Age { get; set; } }

    public class Response
    {
        public string Greeting { get; set; }
        public int NextAge { get; set; }
        [JsonPropertyName("custom_name")] public string Renamed { get; set; }
        [JsonIgnore] public string Hidden { get; set; }
    }

    public class Function
    {
        public Response Handle(Request request, ILambdaContext context)
        {
            return new Response {
                Greeting = "hi " + request.FirstName, NextAge = request.Age + 1,
                Renamed = "r", Hidden = "h",
            };
        }
    }
}
"""

TS = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


@pytest.fixture(scope="module")
def task_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dotnet-task")
    src = tmp_path_factory.mktemp("dotnet-src")
    (src / "Handlers.cs").write_text(HANDLERS_CS)
    (src / "Camel.cs").write_text(CAMEL_CS)
    dotnet_build.compile_function([src / "Handlers.cs"], root / "Handlers.dll")
    dotnet_build.compile_function([src / "Camel.cs"], root / "Camel.dll")
    return root


class Harness(BootstrapHarness):
    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root

    def start(
        self, handler: str, api_options: dict[str, bool] | None = None, **extra: str
    ) -> tuple[FakeRuntimeAPI, CapturedProcess]:
        return self.launch(
            dotnet_build.launch_argv(),
            lambda api: reserved_env(
                api,
                handler,
                self.root,
                **{"AWS_EXECUTION_ENV": "AWS_Lambda_dotnet8", "LANG": "en_US.UTF-8", **extra},
            ),
            self.root,
            api_options,
        )


@pytest.fixture
def harness(task_root: Path) -> Iterator[Harness]:
    h = Harness(task_root)
    try:
        yield h
    finally:
        h.close()


def test_echo_and_every_context_field(harness: Harness) -> None:
    api, _ = harness.start("Handlers::Fn.Echo::Handle")
    deadline = int(time.time() * 1000) + 60_000
    client_context = {
        "client": {"installation_id": "inst-1", "app_title": "App"},
        "custom": {"k": "v"},
        "env": {"platform": "linux"},
    }
    identity = {"cognitoIdentityId": "id-1", "cognitoIdentityPoolId": "pool-1"}
    event = {"a": 1, "b": [True, None, 2.5, "x"], "nested": {"c": "é"}}
    result = api.invoke(
        event,
        request_id="req-1",
        deadline_ms=deadline,
        client_context=client_context,
        identity=identity,
        function_arn="arn:aws:lambda:us-east-1:123456789012:function:fn:live",
        timeout=30,
    )
    assert result.kind == "response", result.body
    body = result.json()
    assert body["event"] == event
    assert body["AwsRequestId"] == "req-1"
    assert body["FunctionName"] == "fn"
    assert body["FunctionVersion"] == "$LATEST"
    assert body["InvokedFunctionArn"] == "arn:aws:lambda:us-east-1:123456789012:function:fn:live"
    assert body["MemoryLimitInMB"] == 512
    assert body["LogGroupName"] == "/aws/lambda/fn"
    assert body["LogStreamName"] == "2024/01/01/[$LATEST]abcdef"
    assert 50_000 < body["RemainingMs"] <= 60_000
    assert body["IdentityId"] == "id-1"
    assert body["IdentityPoolId"] == "pool-1"
    assert body["InstallationId"] == "inst-1"
    assert body["AppTitle"] == "App"
    assert body["Custom"] == {"k": "v"}
    assert body["Env"] == {"platform": "linux"}
    assert body["LoggerIsSet"] is True
    assert body["Trace"].startswith("Root=1-5759e988")
    assert body["Cwd"] == str(harness.root)
    assert result.headers["content-type"] == "application/json"

    # without the optional headers, Identity and ClientContext are null
    second = api.invoke({"x": 1}, trace_id=None, timeout=10).json()
    assert second["IdentityId"] is None
    assert second["InstallationId"] is None
    assert second["Custom"] is None
    assert second["Trace"] is None


def test_poco_in_and_out(harness: Harness) -> None:
    api, _ = harness.start("Handlers::Fn.Poco::Handle")
    order = {
        "orderid": "o-1",  # matched case-insensitively
        "Items": [
            {"Sku": "a", "Quantity": 2, "Price": 1.25},
            {"sku": "b", "quantity": 1, "price": 10},
        ],
        "Size": 1,
        "PlacedAt": "2024-05-06T07:08:09Z",
        "Tags": {"t": "v"},
        "Gift": True,
        "Unknown": {"ignored": True},
    }
    result = api.invoke(order, timeout=30)
    assert result.kind == "response", result.body
    assert result.json() == {
        "OrderId": "o-1",
        "Count": 3,
        "Total": 12.5,
        "Size": 1,
        "Skus": ["a", "b"],
        "PlacedAt": "2024-05-06T07:08:09Z",
        "Gift": True,
        "Tags": {"t": "v"},
    }


def test_camel_case_serializer_attribute(harness: Harness) -> None:
    api, _ = harness.start("Camel::Camel.Function::Handle")
    result = api.invoke({"firstName": "Ann", "age": 41}, timeout=30)
    assert result.kind == "response", result.body
    assert result.json() == {"greeting": "hi Ann", "nextAge": 42, "custom_name": "r"}


def test_string_input_and_other_signatures(harness: Harness) -> None:
    api, _ = harness.start("Handlers::Fn.Strings::Upper")
    assert api.invoke("hello wörld", timeout=30).json() == "HELLO WÖRLD"
    # a JSON value that is not a string: AWS's serializer error
    error = api.invoke({"not": "a string"})
    assert error.kind == "error"
    assert error.error_type == "JsonSerializerException"
    assert error.json()["errorMessage"].startswith(
        "Error converting the Lambda event JSON payload to a string. JSON strings must be "
        'quoted, for example "Hello World" in order to be converted to a string: '
    )

    api2, _ = harness.start("Handlers::Fn.Strings::Length")
    assert api2.invoke("four", timeout=30).json() == 4

    api3, _ = harness.start("Handlers::Fn.Strings::Nothing")
    rid = api3.enqueue({"ignored": True})
    result = api3.wait_result(rid, timeout=30)
    assert result.kind == "response"
    assert result.body == b""  # void handler: empty payload, like AWS's runtime
    assert f"nothing for {rid}" in (result.log or "")


def test_stream_in_and_out(harness: Harness) -> None:
    api, _ = harness.start("Handlers::Fn.Streams::Reverse")
    rid = api.enqueue(raw_body=b"abc\x00\xff")
    result = api.wait_result(rid, timeout=30)
    assert result.kind == "response"
    assert result.body == b"\xff\x00cba"


def test_async_task_handlers(harness: Harness) -> None:
    api, _ = harness.start("Handlers::Fn.Async::Handle")
    result = api.invoke({"k": [1, 2]}, request_id="async-1", timeout=30)
    assert result.kind == "response", result.body
    assert result.json() == {"async": True, "id": "async-1", "event": {"k": [1, 2]}}

    api2, _ = harness.start("Handlers::Fn.Async::Fire")
    fired = api2.invoke({}, timeout=30)
    assert fired.kind == "response"
    assert fired.body == b""
    assert "\tinfo\tfired" in (fired.log or "")

    api3, _ = harness.start("Handlers::Fn.Async::Fail")
    failed = api3.invoke({}, timeout=30)
    assert failed.kind == "error"
    assert failed.error_type == "TimeoutException"  # the task's exception, not AggregateException
    assert failed.json()["errorMessage"] == "async boom"


def test_warm_reuse_keeps_state(harness: Harness) -> None:
    api, proc = harness.start("Handlers::Fn.Counter::Handle")
    bodies = [api.invoke({"n": i}, timeout=30).json() for i in range(5)]
    assert [b["static"] for b in bodies] == [1, 2, 3, 4, 5]
    assert [b["instance"] for b in bodies] == [1, 2, 3, 4, 5]
    assert {b["constructed"] for b in bodies} == {1}
    assert {b["pid"] for b in bodies} == {proc.proc.pid}
    assert proc.proc.poll() is None
    assert re.search(rf"^{TS}\t\tinfo\tconstructed 1$", proc.output(), re.M)  # init: no request id


def test_exception_shape_header_and_log(harness: Harness) -> None:
    api, proc = harness.start("Handlers::Fn.Failing::Handle")
    result = api.invoke({}, request_id="err-1", timeout=30)
    assert result.kind == "error"
    assert result.error_type == "InvalidOperationException"
    assert result.headers["content-type"] == "application/vnd.aws.lambda.error+json"
    body = result.json()
    assert list(body) == ["errorType", "errorMessage", "stackTrace", "cause"]
    assert body["errorType"] == "InvalidOperationException"
    assert body["errorMessage"] == 'boom "quoted"\nline two'
    assert isinstance(body["stackTrace"], list) and body["stackTrace"]
    assert all(isinstance(f, str) and f.startswith("at ") for f in body["stackTrace"])
    assert "Fn.Failing.Inner" in body["stackTrace"][0]
    # mono --debug + the .mdb written by compile_function: file and line, like AWS with PDBs
    assert "Handlers.cs:" in body["stackTrace"][0]
    assert not any("System.Reflection" in f for f in body["stackTrace"])
    assert body["cause"]["errorType"] == "ArgumentException"
    assert body["cause"]["errorMessage"] == "the cause"
    assert result.body.decode().startswith('{\n  "errorType": "InvalidOperationException",\n')
    # the exception is logged on stderr (AWS: Console.Error.WriteLine(exception)) before the post
    assert re.search(
        rf"^{TS}\terr-1\tfail\tSystem.InvalidOperationException: boom", result.log or "", re.M
    )

    aggregate = api.invoke({"aggregate": True}, timeout=30).json()
    assert aggregate["errorType"] == "AggregateException"
    assert [c["errorType"] for c in aggregate["causes"]] == ["ArgumentException", "FormatException"]
    assert aggregate["cause"]["errorType"] == "ArgumentException"  # InnerException = first

    # the environment stays warm after errors
    assert api.invoke({}, timeout=30).kind == "error"
    assert proc.proc.poll() is None


def test_console_and_loggers_before_the_response(harness: Harness) -> None:
    api, _ = harness.start("Handlers::Fn.Logging::Handle")
    result = api.invoke({}, request_id="log-1", timeout=30)
    assert result.kind == "response"
    assert result.json() == "logged"
    log = result.log or ""
    for pattern in (
        rf"^{TS}\tlog-1\tinfo\thello from Console.WriteLine$",
        rf"^{TS}\tlog-1\tinfo\tformatted 1 and two$",
        r"^partial write$",
        rf"^{TS}\tlog-1\tfail\tto stderr$",
        rf"^{TS}\tlog-1\tinfo\tfrom context.Logger.LogLine$",
        rf"^{TS}\tlog-1\tinfo\tfrom context.Logger.Log$",
        rf"^{TS}\tlog-1\tfrom LambdaLogger.Log$",
        rf"^{TS}\tlog-1\tinfo\tunicode é中😀$",
    ):
        assert re.search(pattern, log, re.M), (pattern, log)


def test_log_level_and_unformatted(harness: Harness) -> None:
    api, _ = harness.start("Handlers::Fn.Logging::Handle", AWS_LAMBDA_HANDLER_LOG_LEVEL="Warning")
    log = api.invoke({}, request_id="lv-1", timeout=30).log or ""
    assert "hello from Console.WriteLine" not in log
    assert re.search(rf"^{TS}\tlv-1\tfail\tto stderr$", log, re.M)

    api2, _ = harness.start(
        "Handlers::Fn.Logging::Handle", AWS_LAMBDA_HANDLER_LOG_FORMAT="Unformatted"
    )
    log2 = api2.invoke({}, timeout=30).log or ""
    assert re.search(r"^hello from Console.WriteLine$", log2, re.M)


@pytest.mark.parametrize(
    "env",
    [
        {"AWS_LAMBDA_DOTNET_PREJIT": "Always"},
        {"AWS_LAMBDA_INITIALIZATION_TYPE": "provisioned-concurrency"},
    ],
)
def test_prejit_during_init(harness: Harness, env: dict[str, str]) -> None:
    api, proc = harness.start("Handlers::Fn.Poco::Handle", **env)
    order = {"OrderId": "p", "Items": [{"Sku": "s", "Quantity": 1, "Price": 2}]}
    assert api.invoke(order, timeout=30).json()["Total"] == 2
    assert "pre-JIT skipped" not in proc.output()


def test_json_log_format(harness: Harness) -> None:
    api, _ = harness.start("Handlers::Fn.Logging::Handle", AWS_LAMBDA_LOG_FORMAT="JSON")
    log = api.invoke({}, request_id="js-1", timeout=30).log or ""
    records = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    by_message = {r["message"]: r for r in records}
    hello = by_message["hello from Console.WriteLine"]
    assert hello["level"] == "Information"
    assert hello["requestId"] == "js-1"
    assert re.fullmatch(TS, hello["timestamp"])
    assert by_message["to stderr"]["level"] == "Error"
    assert "level" not in by_message["from LambdaLogger.Log"]


def test_reconnects_and_chunked_responses(harness: Harness) -> None:
    api, _ = harness.start(
        "Handlers::Fn.Echo::Handle", api_options={"chunked": True, "close_connections": True}
    )
    for i in range(3):
        result = api.invoke({"i": i, "pad": "x" * 70_000}, timeout=30)
        assert result.kind == "response"
        assert result.json()["event"]["i"] == i


@pytest.mark.parametrize(
    ("handler", "message"),
    [
        (
            "Missing::Fn.Echo::Handle",
            "Could not find the specified handler assembly with the file name "
            "'Missing, Culture=neutral, PublicKeyToken=null'. The assembly should be located "
            "in the root of your uploaded .zip file.",
        ),
        ("Handlers::Fn.Nope::Handle", "Unable to load type 'Fn.Nope' from assembly 'Handlers'."),
        (
            "Handlers::Fn.Echo::Nope",
            "Unable to find method 'Nope' in type 'Fn.Echo' from assembly 'Handlers': "
            "Found no methods matching method name 'Nope'.",
        ),
        (
            "Handlers.Fn.Echo.Handle",
            "Invalid lambda function handler: 'Handlers.Fn.Echo.Handle'. "
            "The valid format is 'ASSEMBLY::TYPE::METHOD'.",
        ),
        (
            "Handlers::Fn.TooMany::Handle",
            "Method 'Handle' of type 'Fn.TooMany' is not supported: "
            "the method has more than 2 parameters.",
        ),
    ],
)
def test_init_errors(harness: Harness, handler: str, message: str) -> None:
    api, proc = harness.start(handler)
    error = api.wait_init_error(timeout=30)
    body = error.json()
    assert body["errorType"] == "LambdaValidationException"
    assert body["errorMessage"] == message
    assert proc.wait(30) == 1
    assert "LambdaValidationException" in proc.output()
    assert api.next_calls == 0


def test_init_errors_from_user_code_and_overloads(harness: Harness) -> None:
    api, proc = harness.start("Handlers::Fn.BadCtor::Handle")
    body = api.wait_init_error(timeout=30).json()
    assert body["errorType"] == "TargetInvocationException"  # Activator.CreateInstance, as AWS
    assert body["cause"]["errorType"] == "InvalidOperationException"
    assert body["cause"]["errorMessage"] == "constructor failed"
    assert proc.wait(30) == 1

    api2, proc2 = harness.start("Handlers::Fn.Overloaded::Handle")
    body2 = api2.wait_init_error(timeout=30).json()
    assert body2["errorType"] == "LambdaValidationException"
    assert "appears to have a number of overloads" in body2["errorMessage"]
    assert proc2.wait(30) == 1

    # a full signature picks one overload
    api3, _ = harness.start("Handlers::Fn.Overloaded::System.String Handle(Int32)")
    assert api3.invoke(7, timeout=30).json() == "7"


TRACE_VARIABLE_CHECK = r"""
using System;
using System.Diagnostics;
using System.IO;
using System.Reflection;

static class Check
{
    static long Pages() { return long.Parse(File.ReadAllText("/proc/self/statm").Split(' ')[1]); }

    static string Seen()
    {
        var printf = "-c 'printf %s \"${_X_AMZN_TRACE_ID-unset}\"'";
        var start = new ProcessStartInfo("sh", printf);
        start.UseShellExecute = false;
        start.RedirectStandardOutput = true;
        var sh = Process.Start(start);
        string shell = sh.StandardOutput.ReadToEnd();
        sh.WaitForExit();
        return Environment.GetEnvironmentVariable("_X_AMZN_TRACE_ID") + "|" + shell;
    }

    static int Main(string[] args)
    {
        var type = Assembly.LoadFrom(args[0]).GetType("Lambdad.Runtime.TraceIdVariable", true);
        var set = type.GetMethod("Set", BindingFlags.Public | BindingFlags.Static);
        Action<string> trace = value => set.Invoke(null, new object[] { value });
        trace("Root=1-a");
        if (Seen() != "Root=1-a|Root=1-a") { Console.WriteLine(Seen()); return 1; }
        trace(null);
        if (Seen() != "|unset") { Console.WriteLine(Seen()); return 2; }
        Environment.SetEnvironmentVariable("_X_AMZN_TRACE_ID", "set by the function");
        trace("Root=1-b;Parent=c");
        if (Seen() != "Root=1-b;Parent=c|Root=1-b;Parent=c") return 3;
        Func<int, string> id = n => String.Format("Root=1-{0:x8}-0;Parent={0:x16};Sampled=0", n);
        for (int n = 0; n < 100000; n++)  // the managed heap grows to what the strings need
            if (id(n).Length == 0) return 5;
        GC.Collect();
        long before = Pages();
        for (int n = 0; n < 100000; n++)
            trace(id(n));
        GC.Collect();
        long grown = Pages() - before;
        Console.WriteLine(grown > 1024 ? grown + " pages more after 100,000 trace ids" : "ok");
        return grown > 1024 ? 4 : 0;
    }
}
"""


def test_the_trace_id_variable_is_set_per_invocation_without_growing_memory(
    tmp_path: Path,
) -> None:
    # Environment.SetEnvironmentVariable would keep every value (glibc's setenv): ~3,500 pages
    mono, runtime = dotnet_build.launch_argv(dotnet_build.ensure_built(), debug=False)
    source = tmp_path / "Check.cs"
    source.write_text(TRACE_VARIABLE_CHECK)
    mcs = shutil.which("mcs")
    assert mcs is not None
    subprocess.run([mcs, "-nologo", f"-out:{tmp_path / 'Check.exe'}", str(source)], check=True)
    out = subprocess.run(
        [mono, str(tmp_path / "Check.exe"), runtime],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (out.returncode, out.stdout) == (0, "ok\n"), out.stderr
