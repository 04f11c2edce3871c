"""The lines lambdad writes into an environment's log (AWS's system logs), in its LogFormat.

Text is what AWS writes by default (INIT_START, START, END, REPORT, INIT_REPORT, RESTORE_START,
RESTORE_REPORT). With LoggingConfig's JSON format AWS writes each as one JSON object instead,
``{"time": ..., "type": "platform.<event>", "record": {...}}`` (the Telemetry API's event
schema), and filters them by SystemLogLevel: platform.start, platform.report, platform.initStart,
platform.initReport and the restore events are INFO; platform.runtimeDone (END's counterpart)
and platform.initRuntimeDone are DEBUG; WARN keeps none of these.

An environment takes its ``PlatformLog`` once (``platform_log``); a method answers the line to
write, or None when the format leaves the event out.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum
from typing import Any

import orjson

from lambdad.control.logging_config import LogFormat
from lambdad.control.model import FunctionConfig


class SystemLogLevel(IntEnum):
    """SystemLogLevel, most detailed first: a level keeps the events at it and above."""

    DEBUG = 0
    INFO = 1
    WARN = 2


@dataclass(slots=True)  # not frozen: one is made per invocation, and frozen costs 4x that
class Report:
    """What REPORT / platform.report says of one invocation."""

    request_id: str
    duration_ms: float
    memory_size_mb: int
    max_memory_used_mb: int
    init_ms: float | None = None  # the first invocation of an environment started for it
    restore_ms: float | None = None  # the first invocation of a restored (SnapStart) one
    billed_restore_ms: int = 0
    status: str | None = None  # "timeout", "error"; None: it answered

    @property
    def billed_ms(self) -> int:
        return max(1, math.ceil(self.duration_ms))


class PlatformLog(ABC):
    """How an environment's system log lines are written (one instance per format and level)."""

    @abstractmethod
    def init_start(self, config: FunctionConfig, initialization_type: str) -> str | None:
        """Its init began: the first line of an environment's stream (AWS: INIT_START)."""

    @abstractmethod
    def restore_start(self, config: FunctionConfig) -> str | None:
        """A SnapStart restore began: the first line of a restored environment's stream."""

    @abstractmethod
    def init_done(self, initialization_type: str) -> str | None:
        """Its runtime reached /next."""

    @abstractmethod
    def init_report(self, init_ms: float, initialization_type: str) -> str | None:
        """A SnapStart snapshot's init ended."""

    @abstractmethod
    def init_failed(self, init_ms: float, error_type: str, initialization_type: str) -> str | None:
        """Its init failed (crashed, timed out, or its runtime reported an init error)."""

    @abstractmethod
    def restore_failed(self, restore_ms: float, error_type: str) -> str | None:
        """A restored environment's after-restore hooks failed."""

    @abstractmethod
    def start(self, request_id: str, version: str) -> str | None:
        """An invocation was handed to the runtime."""

    @abstractmethod
    def end(self, request_id: str, duration_ms: float, status: str | None) -> str | None:
        """The runtime answered (or failed) an invocation."""

    @abstractmethod
    def report(self, report: Report) -> str | None:
        """An invocation's figures."""


class TextPlatformLog(PlatformLog):
    """AWS's default plain-text lines."""

    def init_start(self, config: FunctionConfig, initialization_type: str) -> str | None:
        return f"INIT_START {_runtime_version(config)}\n"

    def restore_start(self, config: FunctionConfig) -> str | None:
        return f"RESTORE_START {_runtime_version(config)}\n"

    def init_done(self, initialization_type: str) -> str | None:
        return None

    def init_report(self, init_ms: float, initialization_type: str) -> str | None:
        return f"INIT_REPORT Init Duration: {init_ms:.2f} ms\n"

    def init_failed(self, init_ms: float, error_type: str, initialization_type: str) -> str | None:
        return (
            f"INIT_REPORT Init Duration: {init_ms:.2f} ms\tPhase: init\tStatus: error\t"
            f"Error Type: {error_type}\n"
        )

    def restore_failed(self, restore_ms: float, error_type: str) -> str | None:
        return (
            f"RESTORE_REPORT Restore Duration: {restore_ms:.2f} ms\tStatus: error\t"
            f"Error Type: {error_type}\n"
        )

    def start(self, request_id: str, version: str) -> str | None:
        return f"START RequestId: {request_id} Version: {version}\n"

    def end(self, request_id: str, duration_ms: float, status: str | None) -> str | None:
        return f"END RequestId: {request_id}\n"

    def report(self, report: Report) -> str | None:
        line = (
            f"REPORT RequestId: {report.request_id}\tDuration: {report.duration_ms:.2f} ms\t"
            f"Billed Duration: {report.billed_ms} ms\t"
            f"Memory Size: {report.memory_size_mb} MB\t"
            f"Max Memory Used: {report.max_memory_used_mb} MB\t"
        )
        if report.restore_ms is not None:
            line += (
                f"Restore Duration: {report.restore_ms:.2f} ms\t"
                f"Billed Restore Duration: {report.billed_restore_ms} ms\t"
            )
        elif report.init_ms is not None:
            line += f"Init Duration: {report.init_ms:.2f} ms\t"
        if report.status:
            line += f"Status: {report.status}\t"
        return line + "\n"


class JsonPlatformLog(PlatformLog):
    """AWS's JSON system log events, filtered by SystemLogLevel."""

    def __init__(self, level: SystemLogLevel) -> None:
        self._debug = level <= SystemLogLevel.DEBUG
        self._info = level <= SystemLogLevel.INFO

    def init_start(self, config: FunctionConfig, initialization_type: str) -> str | None:
        if not self._info:
            return None
        return _event(
            "platform.initStart",
            {
                "initializationType": initialization_type,
                "phase": "init",
                "runtimeVersion": config.runtime_version,
                "runtimeVersionArn": config.runtime_version_arn,
                "functionName": config.name,
                "functionVersion": config.version,
            },
        )

    def restore_start(self, config: FunctionConfig) -> str | None:
        if not self._info:
            return None
        record = {
            "runtimeVersion": config.runtime_version,
            "runtimeVersionArn": config.runtime_version_arn,
            "functionName": config.name,
            "functionVersion": config.version,
        }
        return _event("platform.restoreStart", record)

    def init_done(self, initialization_type: str) -> str | None:
        if not self._debug:
            return None
        record = {"initializationType": initialization_type, "phase": "init", "status": "success"}
        return _event("platform.initRuntimeDone", record)

    def init_report(self, init_ms: float, initialization_type: str) -> str | None:
        if not self._info:
            return None
        return _event("platform.initReport", _init_record(init_ms, initialization_type, None))

    def init_failed(self, init_ms: float, error_type: str, initialization_type: str) -> str | None:
        if not self._info:
            return None
        return _event("platform.initReport", _init_record(init_ms, initialization_type, error_type))

    def restore_failed(self, restore_ms: float, error_type: str) -> str | None:
        if not self._info:
            return None
        record = {"status": "error", "errorType": error_type, "metrics": _ms(restore_ms)}
        return _event("platform.restoreReport", record)

    def start(self, request_id: str, version: str) -> str | None:
        if not self._info:
            return None
        return _event("platform.start", {"requestId": request_id, "version": version})

    def end(self, request_id: str, duration_ms: float, status: str | None) -> str | None:
        if not self._debug:
            return None
        record = {"requestId": request_id, "status": status or "success"}
        return _event("platform.runtimeDone", {**record, "metrics": _ms(duration_ms)})

    def report(self, report: Report) -> str | None:
        if not self._info:
            return None
        metrics: dict[str, float] = {
            "durationMs": round(report.duration_ms, 3),
            "billedDurationMs": report.billed_ms,
            "memorySizeMB": report.memory_size_mb,
            "maxMemoryUsedMB": report.max_memory_used_mb,
        }
        if report.restore_ms is not None:
            metrics["restoreDurationMs"] = round(report.restore_ms, 3)
            metrics["billedRestoreDurationMs"] = report.billed_restore_ms
        elif report.init_ms is not None:
            metrics["initDurationMs"] = round(report.init_ms, 3)
        record = {"requestId": report.request_id, "metrics": metrics}
        return _event("platform.report", {**record, "status": report.status or "success"})


TEXT = TextPlatformLog()
# SystemLogLevel -> the JSON platform log of that level
_JSON = {level.name: JsonPlatformLog(level) for level in SystemLogLevel}


def platform_log(config: FunctionConfig) -> PlatformLog:
    """The platform log of a function version's LoggingConfig (shared, stateless)."""
    if config.log_format != LogFormat.JSON:
        return TEXT
    return _JSON[config.system_log_level or SystemLogLevel.INFO.name]


# ApplicationLogLevel, most detailed first; what a JSON line's "level" may say (any case), and
# Python's names for two of them
_APPLICATION_LEVELS = {"TRACE": 0, "DEBUG": 1, "INFO": 2, "WARN": 3, "ERROR": 4, "FATAL": 5}
_LEVEL_WORDS = {**_APPLICATION_LEVELS, "WARNING": 3, "CRITICAL": 5}


class ApplicationLogFilter:
    """A JSON-format function's application log, filtered by its ApplicationLogLevel as AWS
    filters it: a line that is a JSON object with a "level" has that level, any other line
    (or an unknown level) is INFO; lines below the function's level are dropped. Runtimes whose
    logger filters already (Python's logging, Node.js's console...) never print such lines;
    this catches the rest (print, other loggers)."""

    def __init__(self, level: str) -> None:
        self._least = _APPLICATION_LEVELS.get(level.upper(), _APPLICATION_LEVELS["INFO"])
        self.plain_kept = self._least <= _APPLICATION_LEVELS["INFO"]  # lines without a level

    def keeps(self, line: bytes) -> bool:
        if not line.startswith(b"{"):
            return self.plain_kept
        try:
            document = orjson.loads(line)
        except orjson.JSONDecodeError:
            return self.plain_kept
        level = document.get("level") if isinstance(document, dict) else None
        if not isinstance(level, str):
            return self.plain_kept
        rank = _LEVEL_WORDS.get(level.upper())
        return self.plain_kept if rank is None else rank >= self._least


def application_log_filter(config: FunctionConfig) -> ApplicationLogFilter | None:
    """The filter of a function version's application log (None: Text, nothing filtered)."""
    if config.log_format != LogFormat.JSON:
        return None
    return ApplicationLogFilter(config.application_log_level or "INFO")


def _runtime_version(config: FunctionConfig) -> str:
    """INIT_START's and RESTORE_START's words (AWS's, a tab between them)."""
    return (
        f"Runtime Version: {config.runtime_version}\t"
        f"Runtime Version ARN: {config.runtime_version_arn}"
    )


def now_ms() -> int:
    return int(time.time() * 1000)


def rfc3339(ms: int) -> str:
    """2024-05-01T12:34:56.789Z"""
    return (
        datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"
    )


def _event(kind: str, record: dict[str, Any]) -> str:
    return orjson.dumps({"time": rfc3339(now_ms()), "type": kind, "record": record}).decode() + "\n"


def _ms(duration_ms: float) -> dict[str, float]:
    return {"durationMs": round(duration_ms, 3)}


def _init_record(
    init_ms: float, initialization_type: str, error_type: str | None
) -> dict[str, Any]:
    record: dict[str, Any] = {"initializationType": initialization_type, "phase": "init"}
    record["status"] = "error" if error_type else "success"
    if error_type:
        record["errorType"] = error_type
    return {**record, "metrics": _ms(init_ms)}
