"""The system log lines of an environment, in Text (unchanged) and AWS's JSON events."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from lambdad.control.model import FunctionConfig
from lambdad.scheduler.platform_log import (
    TEXT,
    ApplicationLogFilter,
    JsonPlatformLog,
    Report,
    SystemLogLevel,
    platform_log,
)

RID = "c0ffee00-0000-4000-8000-000000000001"
CONFIG = FunctionConfig("1", "us-east-1", "fn", "python3.12", "app.h", "r", "k", "s", 1)
COLD = Report(RID, 12.3456, 128, 40, init_ms=150.5)
WARM = Report(RID, 0.4, 128, 41)
RESTORED = Report(RID, 2.0, 256, 50, restore_ms=3.25, billed_restore_ms=4)
TIMED_OUT = Report(RID, 3000.0, 128, 40, status="timeout")


def event(line: str | None) -> dict[str, Any]:
    assert line is not None and line.endswith("\n") and "\n" not in line[:-1]
    document: dict[str, Any] = json.loads(line)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", document.pop("time"))
    return document


def test_text_lines_are_awss() -> None:
    assert TEXT.start(RID, "$LATEST") == f"START RequestId: {RID} Version: $LATEST\n"
    assert TEXT.end(RID, 1.0, None) == f"END RequestId: {RID}\n"
    assert TEXT.report(COLD) == (
        f"REPORT RequestId: {RID}\tDuration: 12.35 ms\tBilled Duration: 13 ms\t"
        "Memory Size: 128 MB\tMax Memory Used: 40 MB\tInit Duration: 150.50 ms\t\n"
    )
    assert TEXT.report(RESTORED).endswith(
        "Restore Duration: 3.25 ms\tBilled Restore Duration: 4 ms\t\n"
    )
    assert TEXT.report(TIMED_OUT).endswith("Max Memory Used: 40 MB\tStatus: timeout\t\n")
    assert TEXT.report(WARM).endswith(
        "Billed Duration: 1 ms\tMemory Size: 128 MB\tMax Memory Used: 41 MB\t\n"
    )
    assert TEXT.init_failed(5.0, "Runtime.ExitError", "on-demand") == (
        "INIT_REPORT Init Duration: 5.00 ms\tPhase: init\tStatus: error\t"
        "Error Type: Runtime.ExitError\n"
    )
    assert TEXT.init_report(7.125, "snap-start") == "INIT_REPORT Init Duration: 7.12 ms\n"
    assert TEXT.restore_failed(1.0, "X") == (
        "RESTORE_REPORT Restore Duration: 1.00 ms\tStatus: error\tError Type: X\n"
    )
    # AWS's first line of every environment's stream (tab-separated): the runtime version
    runtime = f"Runtime Version: python:3.12.v1\tRuntime Version ARN: {CONFIG.runtime_version_arn}"
    assert TEXT.init_start(CONFIG, "on-demand") == f"INIT_START {runtime}\n"
    assert TEXT.restore_start(CONFIG) == f"RESTORE_START {runtime}\n"
    assert TEXT.init_done("on-demand") is None


def test_json_events() -> None:
    log = JsonPlatformLog(SystemLogLevel.DEBUG)
    assert event(log.start(RID, "3")) == {
        "type": "platform.start",
        "record": {"requestId": RID, "version": "3"},
    }
    assert event(log.report(COLD)) == {
        "type": "platform.report",
        "record": {
            "requestId": RID,
            "metrics": {
                "durationMs": 12.346,
                "billedDurationMs": 13,
                "memorySizeMB": 128,
                "maxMemoryUsedMB": 40,
                "initDurationMs": 150.5,
            },
            "status": "success",
        },
    }
    assert event(log.report(TIMED_OUT))["record"]["status"] == "timeout"
    restored = event(log.report(RESTORED))["record"]["metrics"]
    assert (restored["restoreDurationMs"], restored["billedRestoreDurationMs"]) == (3.25, 4)
    assert "initDurationMs" not in restored
    assert event(log.init_start(CONFIG, "provisioned-concurrency"))["record"] == {
        "initializationType": "provisioned-concurrency",
        "phase": "init",
        "runtimeVersion": "python:3.12.v1",
        "runtimeVersionArn": CONFIG.runtime_version_arn,
        "functionName": "fn",
        "functionVersion": "$LATEST",
    }
    assert event(log.restore_start(CONFIG))["record"] == {
        "runtimeVersion": "python:3.12.v1",
        "runtimeVersionArn": CONFIG.runtime_version_arn,
        "functionName": "fn",
        "functionVersion": "$LATEST",
    }
    assert event(log.init_failed(5.0, "Runtime.ExitError", "on-demand")) == {
        "type": "platform.initReport",
        "record": {
            "initializationType": "on-demand",
            "phase": "init",
            "status": "error",
            "errorType": "Runtime.ExitError",
            "metrics": {"durationMs": 5.0},
        },
    }
    assert event(log.init_report(7.0, "snap-start"))["record"]["status"] == "success"
    assert event(log.restore_failed(1.0, "X"))["type"] == "platform.restoreReport"
    assert event(log.end(RID, 2.5, None)) == {
        "type": "platform.runtimeDone",
        "record": {"requestId": RID, "status": "success", "metrics": {"durationMs": 2.5}},
    }
    assert event(log.init_done("on-demand"))["type"] == "platform.initRuntimeDone"


def test_system_log_level_filters() -> None:
    info, warn = JsonPlatformLog(SystemLogLevel.INFO), JsonPlatformLog(SystemLogLevel.WARN)
    assert info.start(RID, "1") and info.report(WARM) and info.init_start(CONFIG, "on-demand")
    assert info.end(RID, 1.0, None) is None and info.init_done("on-demand") is None
    calls = (
        warn.start(RID, "1"),
        warn.end(RID, 1.0, None),
        warn.report(WARM),
        warn.init_start(CONFIG, "on-demand"),
        warn.init_done("on-demand"),
        warn.init_failed(1.0, "X", "on-demand"),
        warn.init_report(1.0, "snap-start"),
        warn.restore_failed(1.0, "X"),
    )
    assert calls == (None,) * len(calls)


def test_one_shared_platform_log_per_format_and_level() -> None:
    assert platform_log(CONFIG) is TEXT
    json_config = CONFIG.evolve(log_format="JSON", system_log_level="WARN")
    chosen = platform_log(json_config)
    assert isinstance(chosen, JsonPlatformLog) and chosen is platform_log(json_config)
    assert chosen.start(RID, "1") is None
    default = platform_log(CONFIG.evolve(log_format="JSON"))  # stored before levels existed
    assert default.start(RID, "1") is not None and default.end(RID, 1.0, None) is None


@pytest.mark.parametrize(
    ("line", "at_warn", "at_info", "at_trace"),
    [
        (b"plain text\n", False, True, True),
        (b'{"level": "ERROR", "message": "m"}\n', True, True, True),
        (b'{"level": "warning"}\n', True, True, True),  # Python's name for WARN
        (b'{"level": "critical"}\n', True, True, True),  # and for FATAL
        (b'{"level": "debug"}\n', False, False, True),
        (b'{"level": "TRACE"}\n', False, False, True),
        (b'{"level": "shout"}\n', False, True, True),  # unknown: INFO
        (b'{"level": 3}\n', False, True, True),
        (b'{"no": "level"}\n', False, True, True),
        (b'["level", "ERROR"]\n', False, True, True),
        (b"{not json\n", False, True, True),
    ],
)
def test_application_log_filter(line: bytes, at_warn: bool, at_info: bool, at_trace: bool) -> None:
    """AWS's rule: a JSON object's "level" is its level, anything else INFO."""
    assert ApplicationLogFilter("WARN").keeps(line) is at_warn
    assert ApplicationLogFilter("INFO").keeps(line) is at_info
    assert ApplicationLogFilter("TRACE").keeps(line) is at_trace
