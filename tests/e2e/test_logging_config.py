"""LoggingConfig through boto3 against `lambdad serve`: the API's answers (as recorded on AWS,
test_lambda_api TestLoggingConfig), the runtime's variables, and JSON logs in the configured
group."""

from __future__ import annotations

import base64
import json
import shutil
from typing import Any

import pytest

from tests.conftest import Server, create_function, make_zip, unique_name

CODE = """
import json, logging, os
def handler(event, context):
    logging.getLogger().info("info from the handler")
    logging.getLogger().warning("warning from the handler")
    keys = ("AWS_LAMBDA_LOG_FORMAT", "AWS_LAMBDA_LOG_LEVEL", "AWS_LAMBDA_LOG_GROUP_NAME")
    return {"env": {k: os.environ.get(k) for k in keys}, "group": context.log_group_name,
            "stream": context.log_stream_name, "request_id": context.aws_request_id}
"""
DEFAULT_JSON = {"LogFormat": "JSON", "ApplicationLogLevel": "INFO", "SystemLogLevel": "INFO"}


@pytest.fixture(scope="module")
def logs(server: Server) -> Any:
    return server.client("logs")


def logging_of(lam: Any, name: str, qualifier: str | None = None) -> dict[str, str]:
    extra = {"Qualifier": qualifier} if qualifier else {}
    config = lam.get_function_configuration(FunctionName=name, **extra)
    assert (
        lam.get_function(FunctionName=name, **extra)["Configuration"]["LoggingConfig"]
        == (config["LoggingConfig"])
    )
    logging: dict[str, str] = config["LoggingConfig"]
    return logging


def update(lam: Any, name: str, logging: dict[str, str]) -> dict[str, str]:
    answer = lam.update_function_configuration(FunctionName=name, LoggingConfig=logging)
    lam.get_waiter("function_updated_v2").wait(FunctionName=name)
    result: dict[str, str] = answer["LoggingConfig"]
    assert logging_of(lam, name) == result
    return result


def invoke(lam: Any, name: str, qualifier: str = "$LATEST") -> dict[str, Any]:
    response = lam.invoke(FunctionName=name, Qualifier=qualifier, Payload=b"{}")
    body: dict[str, Any] = json.loads(response["Payload"].read())
    return body


def records(logs: Any, group: str, stream: str) -> list[dict[str, Any]]:
    events = logs.get_log_events(logGroupName=group, logStreamName=stream, startFromHead=True)
    return [json.loads(e["message"]) for e in events["events"]]


def test_create_json_defaults_and_the_recorded_updates(lam: Any) -> None:
    name = unique_name("logcfg")
    created = create_raw(lam, name, {"LogFormat": "JSON"})
    group = f"/aws/lambda/{name}"
    assert created["LoggingConfig"] == {**DEFAULT_JSON, "LogGroup": group}
    lam.get_waiter("function_active_v2").wait(FunctionName=name)
    assert logging_of(lam, name) == {**DEFAULT_JSON, "LogGroup": group}
    # recorded: a new LogGroup keeps the rest; Text drops the levels; JSON brings INFO back
    assert update(lam, name, {"LogGroup": "cool_lambda"}) == {
        **DEFAULT_JSON,
        "LogGroup": "cool_lambda",
    }
    assert update(lam, name, {"LogFormat": "Text"}) == {
        "LogFormat": "Text",
        "LogGroup": "cool_lambda",
    }
    assert update(lam, name, {"LogFormat": "JSON", "SystemLogLevel": "DEBUG"}) == {
        **DEFAULT_JSON,
        "SystemLogLevel": "DEBUG",
        "LogGroup": "cool_lambda",
    }
    assert update(lam, name, {"ApplicationLogLevel": "TRACE"}) == {
        "LogFormat": "JSON",
        "ApplicationLogLevel": "TRACE",
        "SystemLogLevel": "DEBUG",
        "LogGroup": "cool_lambda",
    }
    pages = lam.get_paginator("list_functions").paginate()
    listed = [f for page in pages for f in page["Functions"] if f["FunctionName"] == name]
    assert listed[0]["LoggingConfig"]["ApplicationLogLevel"] == "TRACE"


def test_text_is_the_default(lam: Any) -> None:
    name = create_function(lam, {"app.py": CODE}, runtime="python3.12")
    assert logging_of(lam, name) == {"LogFormat": "Text", "LogGroup": f"/aws/lambda/{name}"}
    body = invoke(lam, name)
    assert body["env"] == {
        "AWS_LAMBDA_LOG_FORMAT": None,
        "AWS_LAMBDA_LOG_LEVEL": None,
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{name}",
    }


def test_levels_with_text_are_refused_and_change_nothing(lam: Any) -> None:
    message = (
        'LogLevel is not supported when LogFormat is set to "Text". Remove LogLevel from your '
        'request or change the LogFormat to "Json" and try again.'
    )
    name = unique_name("logcfg")
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as refused:
        create_raw(lam, name, {"LogFormat": "Text", "ApplicationLogLevel": "DEBUG"})
    assert refused.value.response["Error"]["Message"] == message
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function(FunctionName=name)

    name = create_function(lam, {"app.py": CODE}, runtime="python3.12")
    before = lam.get_function_configuration(FunctionName=name)
    for bad in ({"SystemLogLevel": "WARN"}, {"LogFormat": "Text", "ApplicationLogLevel": "INFO"}):
        with pytest.raises(lam.exceptions.InvalidParameterValueException) as refused:
            lam.update_function_configuration(FunctionName=name, Timeout=9, LoggingConfig=bad)
        assert refused.value.response["Error"]["Message"] == message
    with pytest.raises(lam.exceptions.ClientError) as invalid:
        lam.update_function_configuration(FunctionName=name, LoggingConfig={"LogGroup": "a b"})
    assert invalid.value.response["Error"]["Code"] == "ValidationException"
    assert (
        "Value 'a b' at 'loggingConfig.logGroup' failed to satisfy constraint"
        in (invalid.value.response["Error"]["Message"])
    )
    after = lam.get_function_configuration(FunctionName=name)
    assert (after["RevisionId"], after["Timeout"]) == (before["RevisionId"], before["Timeout"])


def test_json_logs_go_to_the_configured_group(lam: Any, logs: Any) -> None:
    group = unique_name("cool_lambda")
    name = json_function(lam, ApplicationLogLevel="WARN", LogGroup=group)
    cold, warm = invoke(lam, name), invoke(lam, name)
    assert cold["env"] == {
        "AWS_LAMBDA_LOG_FORMAT": "JSON",
        "AWS_LAMBDA_LOG_LEVEL": "WARN",
        "AWS_LAMBDA_LOG_GROUP_NAME": group,
    }
    assert cold["group"] == group and cold["stream"] == warm["stream"]
    names = [g["logGroupName"] for g in logs.describe_log_groups()["logGroups"]]
    assert group in names and f"/aws/lambda/{name}" not in names

    found = records(logs, group, cold["stream"])
    kinds = [r.get("type") or r["level"] for r in found]
    assert kinds == [
        "platform.initStart",
        "platform.start",
        "WARNING",
        "platform.report",
        "platform.start",
        "WARNING",
        "platform.report",
    ], found
    init_start, start, warning, report = found[:4]
    assert init_start["record"]["initializationType"] == "on-demand"
    assert init_start["record"]["functionName"] == name
    assert start["record"] == {"requestId": cold["request_id"], "version": "$LATEST"}
    assert warning["message"] == "warning from the handler"
    assert warning["requestId"] == cold["request_id"]
    metrics = report["record"]["metrics"]
    assert report["record"]["requestId"] == cold["request_id"]
    assert report["record"]["status"] == "success"
    assert set(metrics) == {
        "durationMs",
        "billedDurationMs",
        "memorySizeMB",
        "maxMemoryUsedMB",
        "initDurationMs",
    }
    assert metrics["memorySizeMB"] == 128 and metrics["billedDurationMs"] >= 1
    assert "initDurationMs" not in found[-1]["record"]["metrics"]  # warm
    assert all(r["time"].endswith("Z") for r in found if "type" in r)


def test_system_log_level_filters_platform_records(lam: Any, logs: Any) -> None:
    seen = {}
    for level in ("DEBUG", "WARN"):
        name = json_function(lam, SystemLogLevel=level)
        body = invoke(lam, name)
        found = records(logs, f"/aws/lambda/{name}", body["stream"])
        seen[level] = [r.get("type") or r["message"] for r in found]
    assert seen["DEBUG"] == [
        "platform.initStart",
        "platform.initRuntimeDone",
        "platform.start",
        "info from the handler",
        "warning from the handler",
        "platform.runtimeDone",
        "platform.report",
    ]
    assert seen["WARN"] == ["info from the handler", "warning from the handler"]


def test_published_versions_keep_their_logging_config(lam: Any, logs: Any) -> None:
    group = unique_name("versioned")
    name = json_function(lam, LogGroup=group)
    version = lam.publish_version(FunctionName=name)["Version"]
    update(lam, name, {"LogFormat": "Text"})
    assert logging_of(lam, name, version) == {**DEFAULT_JSON, "LogGroup": group}
    body = invoke(lam, name, version)
    assert body["env"]["AWS_LAMBDA_LOG_FORMAT"] == "JSON"
    types = [r.get("type") for r in records(logs, group, body["stream"])]
    assert "platform.report" in types
    latest = invoke(lam, name)
    assert latest["env"]["AWS_LAMBDA_LOG_FORMAT"] is None and latest["group"] == group


NODE_CODE = """
exports.handler = async (event, context) => {
  console.info("info from node");
  console.warn("warning from node");
  return {stream: context.logStreamName};
};
"""
RUBY_CODE = """
require 'logger'
def handler(event:, context:)
  Logger.new($stdout).warn('warning from ruby')
  { 'stream' => context.log_stream_name }
end
"""


@pytest.mark.toolchain
@pytest.mark.parametrize(
    ("runtime", "tool", "files", "level", "expected"),
    [
        # console.info is filtered at WARN by the Node.js runtime itself
        ("nodejs20.x", "node", {"index.js": NODE_CODE}, "WARN", ("WARN", "warning from node")),
        # Ruby's runtime formats Logger records as JSON (and does not filter them)
        ("ruby3.3", "ruby", {"app.rb": RUBY_CODE}, "INFO", ("WARN", "warning from ruby")),
    ],
)
def test_other_runtimes_log_json(
    lam: Any,
    logs: Any,
    runtime: str,
    tool: str,
    files: dict[str, str],
    level: str,
    expected: tuple[str, str],
) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed")
    name = create_function(
        lam,
        files,
        runtime=runtime,
        handler=f"{next(iter(files)).split('.')[0]}.handler",
        LoggingConfig={"LogFormat": "JSON", "ApplicationLogLevel": level},
    )
    found = records(logs, f"/aws/lambda/{name}", invoke(lam, name)["stream"])
    assert [(r["level"], r["message"]) for r in found if "type" not in r] == [expected]


PRINTING_CODE = """
import json
def handler(event, context):
    print("a plain line")
    print(json.dumps({"level": "debug", "msg": "a debug object"}))
    print(json.dumps({"level": "Error", "msg": "an error object"}))
    print(json.dumps({"level": "loud", "msg": "an unknown level"}))
    print(json.dumps({"msg": "an object without a level"}))
    print(json.dumps(["level", "error"]))
    return context.log_stream_name
"""
# what PRINTING_CODE prints, by the short names the test's cases use
PRINTED = {
    "a plain line": "a plain line",
    "a debug object": "a debug object",
    "an error object": "an error object",
    "an unknown level": "an unknown level",
    "without": "an object without a level",
    "list": '["level", "error"]',
}


@pytest.mark.parametrize(
    ("level", "kept"),
    [
        ("WARN", ["an error object"]),
        ("INFO", ["a plain line", "an error object", "an unknown level", "without", "list"]),
        ("DEBUG", list(PRINTED)),
    ],
)
def test_application_log_level_filters_what_the_function_prints(
    lam: Any, logs: Any, level: str, kept: list[str]
) -> None:
    """AWS filters a JSON-format function's output by ApplicationLogLevel whatever printed it:
    a JSON object's "level" is its level, anything else (or an unknown level) is INFO."""
    name = create_function(
        lam,
        {"app.py": PRINTING_CODE},
        runtime="python3.12",
        LoggingConfig={"LogFormat": "JSON", "ApplicationLogLevel": level},
    )
    response = lam.invoke(FunctionName=name, Payload=b"{}", LogType="Tail")
    stream = json.loads(response["Payload"].read())
    events = logs.get_log_events(
        logGroupName=f"/aws/lambda/{name}", logStreamName=stream, startFromHead=True
    )["events"]
    printed = [e["message"] for e in events if not e["message"].startswith('{"time"')]
    tail = base64.b64decode(response["LogResult"]).decode()
    for key, line in PRINTED.items():
        assert any(line in m for m in printed) == (key in kept), (level, key, printed)
        assert (line in tail) == (key in kept), (level, key, tail)
    assert len(printed) == len(kept), printed  # (platform events are the '{"time"' ones)


def create_raw(lam: Any, name: str, logging: dict[str, str]) -> dict[str, Any]:
    """CreateFunction's own answer (not waiting for Active)."""
    answer: dict[str, Any] = lam.create_function(
        FunctionName=name,
        Runtime="python3.12",
        Role="arn:aws:iam::000000000000:role/r",
        Handler="app.handler",
        Code={"ZipFile": make_zip({"app.py": CODE})},
        LoggingConfig=logging,
    )
    return answer


def json_function(lam: Any, **logging: str) -> str:
    """An Active python3.12 function of CODE logging as JSON, with `logging`'s members."""
    config = {"LogFormat": "JSON", **logging}
    return create_function(lam, {"app.py": CODE}, runtime="python3.12", LoggingConfig=config)
