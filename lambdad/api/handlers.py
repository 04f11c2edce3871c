"""One small function per Lambda operation: typed call into the core, AWS document out.

Handlers get the validated parameters the protocol layer parsed from the botocore model, and
return the output members; the protocol layer serialises them.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from lambdad.api.code_urls import CodeUrlSigner
from lambdad.api.shapes import function_configuration
from lambdad.control.arns import FunctionRef, check_reachable, parse_function_ref
from lambdad.control.functions import FunctionRegistry, FunctionSettings
from lambdad.control.package import MAX_UNZIPPED_BYTES, MAX_ZIPPED_BYTES
from lambdad.errors import InvalidParameterValueException
from lambdad.invoke.invoker import InvocationType, Invoker, InvokeRequest

Params = dict[str, Any]
Output = dict[str, Any]

MAX_LIST_ITEMS = 50
TOTAL_CODE_SIZE_LIMIT = 80_530_636_800


@dataclass(frozen=True)
class Services:
    registry: FunctionRegistry
    invoker: Invoker
    signer: CodeUrlSigner
    account_concurrency: int = 1000


@dataclass(frozen=True)
class Call:
    """Who is calling and how they reach us."""

    account_id: str
    base_url: str


Handler = Callable[[Services, Call, Params], Awaitable[Output]]
HANDLERS: dict[str, Handler] = {}


def handles(operation: str) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        HANDLERS[operation] = handler
        return handler

    return register


def _ref(services: Services, params: Params, key: str = "FunctionName") -> FunctionRef:
    ref = parse_function_ref(params[key], params.get("Qualifier"))
    check_reachable(ref, services.registry.region)
    return ref


def _settings(params: Params) -> FunctionSettings:
    environment = params.get("Environment")
    ephemeral = params.get("EphemeralStorage")
    architectures = params.get("Architectures")
    return FunctionSettings(
        runtime=params.get("Runtime"),
        handler=params.get("Handler"),
        role=params.get("Role"),
        description=params.get("Description"),
        timeout=params.get("Timeout"),
        memory_size=params.get("MemorySize"),
        ephemeral_storage=ephemeral.get("Size") if ephemeral else None,
        environment=(environment.get("Variables") or {}) if environment is not None else None,
        architectures=tuple(architectures) if architectures else None,
    )


def _zip_file(params: Params) -> bytes:
    code = params.get("Code") if "Code" in params else params
    zip_file = code.get("ZipFile") if isinstance(code, Mapping) else None
    if zip_file is None:
        if isinstance(code, Mapping) and (code.get("S3Bucket") or code.get("ImageUri")):
            raise InvalidParameterValueException(
                "lambdad accepts code as ZipFile only (S3Bucket/ImageUri are not supported yet)."
            )
        raise InvalidParameterValueException("Please provide a source for function code.")
    return bytes(zip_file)


@handles("CreateFunction")
async def create_function(services: Services, call: Call, params: Params) -> Output:
    ref = _ref(services, params)
    if params.get("PackageType", "Zip") != "Zip":
        raise InvalidParameterValueException("lambdad supports PackageType Zip only.")
    config = await services.registry.create(
        call.account_id, ref.name, _settings(params), _zip_file(params), params.get("Tags") or {}
    )
    return function_configuration(config)


@handles("GetFunction")
async def get_function(services: Services, call: Call, params: Params) -> Output:
    config = services.registry.get(call.account_id, _ref(services, params))
    output: Output = {
        "Configuration": function_configuration(config),
        "Code": {
            "RepositoryType": "S3",
            "Location": services.signer.url(call.base_url, config.code_key),
        },
    }
    if config.tags:
        output["Tags"] = dict(config.tags)
    return output


@handles("GetFunctionConfiguration")
async def get_function_configuration(services: Services, call: Call, params: Params) -> Output:
    return function_configuration(services.registry.get(call.account_id, _ref(services, params)))


@handles("ListFunctions")
async def list_functions(services: Services, call: Call, params: Params) -> Output:
    functions = services.registry.functions(call.account_id)
    marker = params.get("Marker")
    if marker:
        start = _decode_marker(marker)
        functions = [f for f in functions if f.name >= start]
    limit = min(params.get("MaxItems") or MAX_LIST_ITEMS, MAX_LIST_ITEMS)
    page, rest = functions[:limit], functions[limit:]
    output: Output = {"Functions": [function_configuration(f, listing=True) for f in page]}
    if rest:
        output["NextMarker"] = base64.urlsafe_b64encode(rest[0].name.encode()).decode()
    return output


def _decode_marker(marker: str) -> str:
    try:
        encoded = marker.encode("ascii")
        if base64.urlsafe_b64encode(base64.urlsafe_b64decode(encoded)) != encoded:
            raise ValueError("not canonical base64")
        return base64.urlsafe_b64decode(encoded).decode()
    except (ValueError, UnicodeError):
        raise InvalidParameterValueException("Invalid marker: " + marker) from None


@handles("UpdateFunctionCode")
async def update_function_code(services: Services, call: Call, params: Params) -> Output:
    if params.get("S3Bucket") or params.get("ImageUri"):
        raise InvalidParameterValueException(
            "lambdad accepts code as ZipFile only (S3Bucket/ImageUri are not supported yet)."
        )
    config = await services.registry.update_code(
        call.account_id, _ref(services, params), _zip_file(params), params.get("RevisionId")
    )
    return function_configuration(config)


@handles("UpdateFunctionConfiguration")
async def update_function_configuration(services: Services, call: Call, params: Params) -> Output:
    config = await services.registry.update_configuration(
        call.account_id, _ref(services, params), _settings(params), params.get("RevisionId")
    )
    return function_configuration(config)


@handles("DeleteFunction")
async def delete_function(services: Services, call: Call, params: Params) -> Output:
    await services.registry.delete(call.account_id, _ref(services, params))
    return {}


@handles("Invoke")
async def invoke(services: Services, call: Call, params: Params) -> Output:
    kind = InvocationType(params.get("InvocationType") or "RequestResponse")
    outcome = await services.invoker.invoke(
        InvokeRequest(
            account_id=call.account_id,
            ref=_ref(services, params),
            payload=params.get("Payload") or b"",
            invocation_type=kind,
            tail=params.get("LogType") == "Tail" and kind is InvocationType.REQUEST_RESPONSE,
            client_context=params.get("ClientContext"),
        )
    )
    output: Output = {"StatusCode": outcome.status, "Payload": outcome.payload}
    if outcome.function_error:
        output["FunctionError"] = outcome.function_error
    if outcome.log_result is not None:
        output["LogResult"] = outcome.log_result
    if outcome.executed_version:
        output["ExecutedVersion"] = outcome.executed_version
    return output


@handles("GetAccountSettings")
async def get_account_settings(services: Services, call: Call, params: Params) -> Output:
    usage = services.registry.usage(call.account_id)
    return {
        "AccountLimit": {
            "TotalCodeSize": TOTAL_CODE_SIZE_LIMIT,
            "CodeSizeUnzipped": MAX_UNZIPPED_BYTES,
            "CodeSizeZipped": MAX_ZIPPED_BYTES,
            "ConcurrentExecutions": services.account_concurrency,
            "UnreservedConcurrentExecutions": services.account_concurrency,
        },
        "AccountUsage": {
            "TotalCodeSize": usage.total_code_size,
            "FunctionCount": usage.function_count,
        },
    }


@handles("TagResource")
async def tag_resource(services: Services, call: Call, params: Params) -> Output:
    services.registry.tag(call.account_id, _ref(services, params, "Resource"), params["Tags"])
    return {}


@handles("UntagResource")
async def untag_resource(services: Services, call: Call, params: Params) -> Output:
    services.registry.untag(call.account_id, _ref(services, params, "Resource"), params["TagKeys"])
    return {}


@handles("ListTags")
async def list_tags(services: Services, call: Call, params: Params) -> Output:
    return {"Tags": services.registry.tags(call.account_id, _ref(services, params, "Resource"))}


def json_dumps(document: Mapping[str, Any]) -> bytes:
    return orjson.dumps(document)
