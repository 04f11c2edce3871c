"""One small function per Lambda operation: typed call into the core, AWS document out.

Handlers get the validated parameters the protocol layer parsed from the botocore model, and
return the output members; the protocol layer serialises them.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from lambdad.api.code_urls import CodeUrlSigner
from lambdad.api.shapes import function_configuration
from lambdad.control.arns import FunctionRef, check_reachable, parse_function_ref
from lambdad.control.functions import FunctionRegistry, FunctionSettings
from lambdad.control.layers import LayerRegistry
from lambdad.control.logging_config import LoggingUpdate
from lambdad.control.model import LATEST, FunctionConfig, FunctionState
from lambdad.control.package import MAX_UNZIPPED_BYTES, MAX_ZIPPED_BYTES
from lambdad.errors import InvalidParameterValueException
from lambdad.invoke.invoker import InvocationType, Invoker, InvokeRequest

Params = dict[str, Any]
Output = dict[str, Any]
T = TypeVar("T")

MAX_LIST_ITEMS = 50
TOTAL_CODE_SIZE_LIMIT = 80_530_636_800


@dataclass(frozen=True)
class Services:
    registry: FunctionRegistry
    invoker: Invoker
    signer: CodeUrlSigner
    layers: LayerRegistry


@dataclass(frozen=True)
class Call:
    """Who is calling and how they reach us."""

    account_id: str
    base_url: str


# An output key (not an AWS member) naming the response's x-amzn-RequestId, popped by the edge.
REQUEST_ID_KEY = "__request_id__"

Handler = Callable[[Services, Call, Params], Awaitable[Output]]
HANDLERS: dict[str, Handler] = {}


def handles(operation: str) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        HANDLERS[operation] = handler
        return handler

    return register


def ref_of(services: Services, params: Params, key: str = "FunctionName") -> FunctionRef:
    ref = parse_function_ref(params[key], params.get("Qualifier"))
    check_reachable(ref, services.registry.region)
    return ref


def _settings(params: Params) -> FunctionSettings:
    environment = params.get("Environment")
    ephemeral = params.get("EphemeralStorage")
    architectures = params.get("Architectures")
    snap_start = params.get("SnapStart")
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
        # None: unchanged; () removes every layer (Layers=[]).
        layers=tuple(params["Layers"]) if "Layers" in params else None,
        # SnapStart={} (no ApplyOn) is taken as ApplyOn None, the member's default.
        snap_start=(snap_start.get("ApplyOn") or "None") if snap_start is not None else None,
        logging=_logging(params.get("LoggingConfig")),
    )


def _logging(config: Mapping[str, str] | None) -> LoggingUpdate | None:
    if config is None:
        return None
    return LoggingUpdate(
        log_format=config.get("LogFormat"),
        application_log_level=config.get("ApplicationLogLevel"),
        system_log_level=config.get("SystemLogLevel"),
        log_group=config.get("LogGroup"),
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
    ref = ref_of(services, params)
    if params.get("PackageType", "Zip") != "Zip":
        raise InvalidParameterValueException("lambdad supports PackageType Zip only.")
    config = await services.registry.create(
        call.account_id,
        ref.name,
        _settings(params),
        _zip_file(params),
        params.get("Tags") or {},
        publish=bool(params.get("Publish")),
    )
    return function_configuration(config)


@handles("GetFunction")
async def get_function(services: Services, call: Call, params: Params) -> Output:
    ref = ref_of(services, params)
    config = services.registry.get(call.account_id, ref)
    output: Output = {
        "Configuration": function_configuration(config, qualifier=ref.qualifier),
        "Code": {
            "RepositoryType": "S3",
            "Location": services.signer.url(call.base_url, config.code_key),
        },
    }
    latest = services.registry.lookup(call.account_id, config.name)
    if latest is not None and latest.tags:  # tags belong to the function, not to a version
        output["Tags"] = dict(latest.tags)
    reserved = services.registry.reserved_concurrency(call.account_id, _bare(ref))
    if reserved is not None:
        output["Concurrency"] = {"ReservedConcurrentExecutions": reserved}
    return output


@handles("GetFunctionConfiguration")
async def get_function_configuration(services: Services, call: Call, params: Params) -> Output:
    ref = ref_of(services, params)
    config = services.registry.get(call.account_id, ref)
    return function_configuration(config, qualifier=ref.qualifier)


@handles("ListFunctions")
async def list_functions(services: Services, call: Call, params: Params) -> Output:
    functions = services.registry.functions(call.account_id)
    page, next_marker = paginate(functions, lambda f: f.name, _by_name, params)
    output: Output = {"Functions": [function_configuration(f, listing=True) for f in page]}
    if next_marker:
        output["NextMarker"] = next_marker
    return output


def paginate(
    items: Sequence[T],
    ident: Callable[[T], str],
    rank: Callable[[str], tuple[int, str]],
    params: Params,
) -> tuple[list[T], str | None]:
    """One page of `items` (in listing order) after Marker, at most MaxItems (and 50) long.

    A marker encodes the ident of the page's first item; `rank` orders idents as the listing
    does, so a page still starts in the right place when that item went away in between.
    """
    found = list(items)
    marker = params.get("Marker")
    if marker:
        start = rank(_decode_marker(marker))
        found = [item for item in found if rank(ident(item)) >= start]
    limit = min(params.get("MaxItems") or MAX_LIST_ITEMS, MAX_LIST_ITEMS)
    page, rest = found[:limit], found[limit:]
    next_marker = base64.urlsafe_b64encode(ident(rest[0]).encode()).decode() if rest else None
    return page, next_marker


def _by_name(name: str) -> tuple[int, str]:
    return (0, name)


def _bare(ref: FunctionRef) -> FunctionRef:
    """The function itself, whichever version or alias `ref` names."""
    return FunctionRef(ref.name, None, ref.account_id, ref.region)


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
        call.account_id,
        ref_of(services, params),
        _zip_file(params),
        params.get("RevisionId"),
        publish=bool(params.get("Publish")),
    )
    if config.version != LATEST:
        # AWS answers a publishing update with the new version, still being created.
        return function_configuration(_being_created(config), qualifier=config.version)
    return function_configuration(config)


def _being_created(config: FunctionConfig) -> FunctionConfig:
    return config.evolve(
        state=FunctionState.PENDING,
        state_reason="The function is being created.",
        state_reason_code="Creating",
        last_update_status=None,
        last_update_status_reason=None,
        last_update_status_reason_code=None,
    )


@handles("UpdateFunctionConfiguration")
async def update_function_configuration(services: Services, call: Call, params: Params) -> Output:
    config = await services.registry.update_configuration(
        call.account_id, ref_of(services, params), _settings(params), params.get("RevisionId")
    )
    return function_configuration(config)


@handles("DeleteFunction")
async def delete_function(services: Services, call: Call, params: Params) -> Output:
    await services.registry.delete(call.account_id, ref_of(services, params))
    return {}


@handles("Invoke")
async def invoke(services: Services, call: Call, params: Params) -> Output:
    kind = InvocationType(params.get("InvocationType") or "RequestResponse")
    outcome = await services.invoker.invoke(
        InvokeRequest(
            account_id=call.account_id,
            ref=ref_of(services, params),
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
    if outcome.request_id:
        output[REQUEST_ID_KEY] = outcome.request_id  # x-amzn-RequestId: the invocation's id
    return output


@handles("GetAccountSettings")
async def get_account_settings(services: Services, call: Call, params: Params) -> Output:
    usage = services.registry.usage(call.account_id)
    limits = services.registry.limiter.statistics(call.account_id)
    return {
        "AccountLimit": {
            "TotalCodeSize": TOTAL_CODE_SIZE_LIMIT,
            "CodeSizeUnzipped": MAX_UNZIPPED_BYTES,
            "CodeSizeZipped": MAX_ZIPPED_BYTES,
            "ConcurrentExecutions": limits.account_limit,
            "UnreservedConcurrentExecutions": limits.unreserved_limit,
        },
        "AccountUsage": {
            "TotalCodeSize": usage.total_code_size + services.layers.usage(call.account_id),
            "FunctionCount": usage.function_count,
        },
    }


@handles("TagResource")
async def tag_resource(services: Services, call: Call, params: Params) -> Output:
    services.registry.tag(call.account_id, ref_of(services, params, "Resource"), params["Tags"])
    return {}


@handles("UntagResource")
async def untag_resource(services: Services, call: Call, params: Params) -> Output:
    ref = ref_of(services, params, "Resource")
    services.registry.untag(call.account_id, ref, params["TagKeys"])
    return {}


@handles("ListTags")
async def list_tags(services: Services, call: Call, params: Params) -> Output:
    return {"Tags": services.registry.tags(call.account_id, ref_of(services, params, "Resource"))}


# The other operation groups register themselves with @handles when imported.
import lambdad.api.handlers_concurrency  # noqa: E402
import lambdad.api.handlers_layers  # noqa: E402
import lambdad.api.handlers_versions  # noqa: E402, F401
