"""Typed records -> the JSON documents Lambda answers with (field names as AWS spells them)."""

from __future__ import annotations

from typing import Any

from lambdad.control.model import Alias, FunctionConfig


def function_configuration(
    config: FunctionConfig, *, listing: bool = False, qualifier: str | None = None
) -> dict[str, Any]:
    """FunctionConfiguration; list items omit the state fields, as ListFunctions does.

    FunctionArn carries the qualifier the caller named (a version, $LATEST or an alias), as
    AWS's does; unqualified requests get the unqualified ARN.
    """
    doc: dict[str, Any] = {
        "FunctionName": config.name,
        "FunctionArn": f"{config.arn}:{qualifier}" if qualifier else config.arn,
        "Runtime": config.runtime,
        "Role": config.role,
        "Handler": config.handler,
        "CodeSize": config.code_size,
        "Description": config.description,
        "Timeout": config.timeout,
        "MemorySize": config.memory_size,
        "LastModified": config.last_modified,
        "CodeSha256": config.code_sha256,
        "Version": config.version,
        "TracingConfig": {"Mode": config.tracing_mode},
        "RevisionId": config.revision_id,
        "PackageType": config.package_type,
        "Architectures": list(config.architectures),
        "EphemeralStorage": {"Size": config.ephemeral_storage},
        "SnapStart": {
            "ApplyOn": config.snap_start,
            "OptimizationStatus": "On" if config.snap_start_on else "Off",
        },
        "LoggingConfig": logging_config(config),
    }
    if config.environment:
        doc["Environment"] = {"Variables": dict(config.environment)}
    if config.layers:
        doc["Layers"] = [{"Arn": arn, "CodeSize": size} for arn, size in config.layers]
    if listing:
        return doc
    doc["RuntimeVersionConfig"] = {"RuntimeVersionArn": config.runtime_version_arn}
    doc["State"] = config.state.value
    if config.state_reason:
        doc["StateReason"] = config.state_reason
    if config.state_reason_code:
        doc["StateReasonCode"] = config.state_reason_code
    if config.last_update_status is not None:
        doc["LastUpdateStatus"] = config.last_update_status.value
    if config.last_update_status_reason:
        doc["LastUpdateStatusReason"] = config.last_update_status_reason
    if config.last_update_status_reason_code:
        doc["LastUpdateStatusReasonCode"] = config.last_update_status_reason_code
    return doc


def logging_config(config: FunctionConfig) -> dict[str, str]:
    """LoggingConfig; the levels only when the format is JSON, as AWS answers."""
    doc = {"LogFormat": config.log_format, "LogGroup": config.log_group}
    if config.application_log_level:
        doc["ApplicationLogLevel"] = config.application_log_level
    if config.system_log_level:
        doc["SystemLogLevel"] = config.system_log_level
    return doc


def alias_configuration(alias: Alias) -> dict[str, Any]:
    """AliasConfiguration; RoutingConfig only when the alias routes to a second version."""
    doc: dict[str, Any] = {
        "AliasArn": alias.arn,
        "Name": alias.name,
        "FunctionVersion": alias.function_version,
        "Description": alias.description,
        "RevisionId": alias.revision_id,
    }
    if alias.routing:
        doc["RoutingConfig"] = {"AdditionalVersionWeights": dict(alias.routing)}
    return doc
