"""Layer operations: PublishLayerVersion, Get/List/Delete, and the layer version policies.

Documents are shaped as AWS's: optional members (LicenseInfo, CompatibleRuntimes,
CompatibleArchitectures) appear only when the version was published with them; policies and
statements are JSON text, rendered compactly with AWS's member order.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from lambdad.api.handlers import Call, Output, Params, Services, handles, paginate
from lambdad.control.layers import GET_LAYER_VERSION, LayerSettings, LayerVersion, Statement
from lambdad.errors import InvalidParameterValueException

POLICY_VERSION = "2012-10-17"


# -- documents ------------------------------------------------------------------------------


def layer_version_document(version: LayerVersion, location: str) -> Output:
    """GetLayerVersion/PublishLayerVersion's answer."""
    doc: Output = {
        "Content": {
            "Location": location,
            "CodeSha256": version.code_sha256,
            "CodeSize": version.code_size,
        },
        "LayerArn": version.layer_arn,
        "LayerVersionArn": version.arn,
        "Description": version.settings.description,
        "CreatedDate": version.created_date,
        "Version": version.version,
    }
    return _with_optional(doc, version)


def layer_version_item(version: LayerVersion) -> Output:
    """A LayerVersionsListItem (ListLayerVersions, ListLayers' LatestMatchingVersion)."""
    doc: Output = {
        "LayerVersionArn": version.arn,
        "Version": version.version,
        "Description": version.settings.description,
        "CreatedDate": version.created_date,
    }
    return _with_optional(doc, version)


def _with_optional(doc: Output, version: LayerVersion) -> Output:
    settings = version.settings
    if settings.compatible_runtimes is not None:
        doc["CompatibleRuntimes"] = list(settings.compatible_runtimes)
    if settings.license_info is not None:
        doc["LicenseInfo"] = settings.license_info
    if settings.compatible_architectures is not None:
        doc["CompatibleArchitectures"] = list(settings.compatible_architectures)
    return doc


def statement_document(version: LayerVersion, statement: Statement) -> dict[str, Any]:
    principal: Any = "*"
    if statement.principal != "*":
        arn = statement.principal
        principal = {"AWS": arn if arn.startswith("arn:") else f"arn:aws:iam::{arn}:root"}
    doc: dict[str, Any] = {
        "Sid": statement.sid,
        "Effect": "Allow",
        "Principal": principal,
        "Action": GET_LAYER_VERSION,
        "Resource": version.arn,
    }
    if statement.organization_id is not None:
        doc["Condition"] = {"StringEquals": {"aws:PrincipalOrgID": statement.organization_id}}
    return doc


def policy_document(version: LayerVersion) -> dict[str, Any]:
    return {
        "Version": POLICY_VERSION,
        "Id": "default",
        "Statement": [statement_document(version, s) for s in version.statements],
    }


def _json_text(document: Mapping[str, Any]) -> str:
    return orjson.dumps(document).decode()


# -- parameters -----------------------------------------------------------------------------


def _layer_zip(params: Params) -> bytes:
    content = params.get("Content") or {}
    zip_file = content.get("ZipFile")
    if zip_file is not None:
        return bytes(zip_file)
    if content.get("S3Bucket") or content.get("S3Key"):
        raise InvalidParameterValueException(
            "lambdad accepts layer content as ZipFile only (S3Bucket/S3Key are not supported yet)."
        )
    raise InvalidParameterValueException("Please provide a source for layer content.")


def _layer_settings(params: Params) -> LayerSettings:
    runtimes = params.get("CompatibleRuntimes")
    architectures = params.get("CompatibleArchitectures")
    return LayerSettings(
        description=params.get("Description") or "",
        license_info=params.get("LicenseInfo"),
        compatible_runtimes=tuple(runtimes) if runtimes is not None else None,
        compatible_architectures=tuple(architectures) if architectures is not None else None,
    )


def _newest_first(ident: str) -> tuple[int, str]:
    """Listing rank of a version number (a page marker's ident) in ListLayerVersions."""
    return (-int(ident), "") if ident.isdigit() else (1, ident)


def _by_name(ident: str) -> tuple[int, str]:
    return (0, ident)


def _location(services: Services, call: Call, version: LayerVersion) -> str:
    return services.signer.url(call.base_url, version.code_key)


# -- operations -----------------------------------------------------------------------------


@handles("PublishLayerVersion")
async def publish_layer_version(services: Services, call: Call, params: Params) -> Output:
    version = await services.layers.publish(
        call.account_id, params["LayerName"], _layer_zip(params), _layer_settings(params)
    )
    return layer_version_document(version, _location(services, call, version))


@handles("GetLayerVersion")
async def get_layer_version(services: Services, call: Call, params: Params) -> Output:
    version = services.layers.get(call.account_id, params["LayerName"], params["VersionNumber"])
    return layer_version_document(version, _location(services, call, version))


@handles("GetLayerVersionByArn")
async def get_layer_version_by_arn(services: Services, call: Call, params: Params) -> Output:
    version = services.layers.get_by_arn(call.account_id, params["Arn"])
    return layer_version_document(version, _location(services, call, version))


@handles("ListLayers")
async def list_layers(services: Services, call: Call, params: Params) -> Output:
    latest = services.layers.layers(
        call.account_id, params.get("CompatibleRuntime"), params.get("CompatibleArchitecture")
    )
    page, next_marker = paginate(latest, lambda v: v.name, _by_name, params)
    output: Output = {
        "Layers": [
            {
                "LayerName": v.name,
                "LayerArn": v.layer_arn,
                "LatestMatchingVersion": layer_version_item(v),
            }
            for v in page
        ]
    }
    if next_marker:
        output["NextMarker"] = next_marker
    return output


@handles("ListLayerVersions")
async def list_layer_versions(services: Services, call: Call, params: Params) -> Output:
    found = services.layers.versions(
        call.account_id,
        params["LayerName"],
        params.get("CompatibleRuntime"),
        params.get("CompatibleArchitecture"),
    )
    page, next_marker = paginate(found, lambda v: str(v.version), _newest_first, params)
    output: Output = {"LayerVersions": [layer_version_item(v) for v in page]}
    if next_marker:
        output["NextMarker"] = next_marker
    return output


@handles("DeleteLayerVersion")
async def delete_layer_version(services: Services, call: Call, params: Params) -> Output:
    services.layers.delete(call.account_id, params["LayerName"], params["VersionNumber"])
    return {}


@handles("AddLayerVersionPermission")
async def add_layer_version_permission(services: Services, call: Call, params: Params) -> Output:
    statement = Statement(params["StatementId"], params["Principal"], params.get("OrganizationId"))
    version = services.layers.add_permission(
        call.account_id,
        params["LayerName"],
        params["VersionNumber"],
        statement,
        params.get("RevisionId"),
    )
    return {
        "Statement": _json_text(statement_document(version, statement)),
        "RevisionId": version.policy_revision,
    }


@handles("RemoveLayerVersionPermission")
async def remove_layer_version_permission(services: Services, call: Call, params: Params) -> Output:
    services.layers.remove_permission(
        call.account_id,
        params["LayerName"],
        params["VersionNumber"],
        params["StatementId"],
        params.get("RevisionId"),
    )
    return {}


@handles("GetLayerVersionPolicy")
async def get_layer_version_policy(services: Services, call: Call, params: Params) -> Output:
    version = services.layers.policy(call.account_id, params["LayerName"], params["VersionNumber"])
    return {"Policy": _json_text(policy_document(version)), "RevisionId": version.policy_revision}
