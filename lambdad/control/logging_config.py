"""LoggingConfig: a function's log format, its two log levels and its log group.

AWS's rules (recorded, test_lambda_api TestLoggingConfig): a function logs as Text to
/aws/lambda/<name> unless told otherwise; a JSON function has an ApplicationLogLevel and a
SystemLogLevel (both INFO unless given); switching back to Text drops the levels; an update
merges what it names with what is stored. Levels are refused with Text (AWS's message, as
CloudFormation relays it: aws/aws-cdk#28045).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TypedDict

from lambdad.control.model import FunctionConfig, default_log_group
from lambdad.errors import InvalidParameterValueException

DEFAULT_LEVEL = "INFO"
LEVELS_NEED_JSON = (
    'LogLevel is not supported when LogFormat is set to "Text". Remove LogLevel from your '
    'request or change the LogFormat to "Json" and try again.'
)


class LogFormat(StrEnum):
    TEXT = "Text"  # plain lines: START/END/REPORT, the runtime's own text format
    JSON = "JSON"  # one JSON object per line, system and application logs filtered by level


@dataclass(frozen=True)
class LoggingUpdate:
    """LoggingConfig as a request gives it: None is 'not given' (default, or unchanged)."""

    log_format: str | None = None
    application_log_level: str | None = None
    system_log_level: str | None = None
    log_group: str | None = None


class LoggingFields(TypedDict):
    """The FunctionConfig fields LoggingConfig is stored in."""

    log_format: str
    application_log_level: str | None
    system_log_level: str | None
    custom_log_group: str | None


def logging_fields(
    current: FunctionConfig | None, update: LoggingUpdate, name: str
) -> LoggingFields:
    """The FunctionConfig logging fields after `update` (`current` None: a new function), or
    AWS's InvalidParameterValueException when levels come with the Text format."""
    log_format = update.log_format or (current.log_format if current else LogFormat.TEXT)
    application_level: str | None = None
    system_level: str | None = None
    if log_format == LogFormat.TEXT:
        if update.application_log_level or update.system_log_level:
            raise InvalidParameterValueException(LEVELS_NEED_JSON)
    else:
        stored_application = current.application_log_level if current else None
        stored_system = current.system_log_level if current else None
        application_level = update.application_log_level or stored_application or DEFAULT_LEVEL
        system_level = update.system_log_level or stored_system or DEFAULT_LEVEL
    group = current.custom_log_group if current else None
    if update.log_group is not None:
        group = None if update.log_group == default_log_group(name) else update.log_group
    return {
        "log_format": str(log_format),
        "application_log_level": application_level,
        "system_log_level": system_level,
        "custom_log_group": group,
    }
