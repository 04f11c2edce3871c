"""Version and alias operations: PublishVersion, ListVersionsByFunction and the alias CRUD."""

from __future__ import annotations

from lambdad.api.handlers import Call, Output, Params, Services, handles, paginate, ref_of
from lambdad.api.shapes import alias_configuration, function_configuration
from lambdad.control.functions import not_found
from lambdad.control.versions import version_rank


@handles("PublishVersion")
async def publish_version(services: Services, call: Call, params: Params) -> Output:
    version = await services.registry.publish(
        call.account_id,
        ref_of(services, params),
        code_sha256=params.get("CodeSha256"),
        description=params.get("Description"),
        revision_id=params.get("RevisionId"),
    )
    return function_configuration(version, qualifier=version.version)


@handles("ListVersionsByFunction")
async def list_versions_by_function(services: Services, call: Call, params: Params) -> Output:
    found = services.registry.versions(call.account_id, ref_of(services, params))
    page, next_marker = paginate(found, lambda v: v.version, version_rank, params)
    output: Output = {
        "Versions": [function_configuration(v, listing=True, qualifier=v.version) for v in page]
    }
    if next_marker:
        output["NextMarker"] = next_marker
    return output


@handles("CreateAlias")
async def create_alias(services: Services, call: Call, params: Params) -> Output:
    alias = services.registry.aliases.create(
        call.account_id,
        _function(services, call, params),
        params["Name"],
        params["FunctionVersion"],
        params.get("Description"),
        _weights(params),
    )
    return alias_configuration(alias)


@handles("GetAlias")
async def get_alias(services: Services, call: Call, params: Params) -> Output:
    name = _function(services, call, params)
    return alias_configuration(services.registry.aliases.get(call.account_id, name, params["Name"]))


@handles("UpdateAlias")
async def update_alias(services: Services, call: Call, params: Params) -> Output:
    alias = services.registry.aliases.update(
        call.account_id,
        _function(services, call, params),
        params["Name"],
        params.get("FunctionVersion"),
        params.get("Description"),
        _weights(params),
        params.get("RevisionId"),
    )
    return alias_configuration(alias)


@handles("DeleteAlias")
async def delete_alias(services: Services, call: Call, params: Params) -> Output:
    services.registry.aliases.delete(
        call.account_id, _function(services, call, params), params["Name"]
    )
    return {}


@handles("ListAliases")
async def list_aliases(services: Services, call: Call, params: Params) -> Output:
    found = services.registry.aliases.aliases(
        call.account_id, _function(services, call, params), params.get("FunctionVersion")
    )
    page, next_marker = paginate(found, lambda a: a.name, lambda n: (0, n), params)
    output: Output = {"Aliases": [alias_configuration(a) for a in page]}
    if next_marker:
        output["NextMarker"] = next_marker
    return output


def _function(services: Services, call: Call, params: Params) -> str:
    """The name of the function whose aliases an operation reads or changes (the caller's)."""
    ref = ref_of(services, params)
    if ref.account_id not in (None, call.account_id):
        raise not_found(services.registry.region, call.account_id, ref.name, None)
    return ref.name


def _weights(params: Params) -> dict[str, float] | None:
    """RoutingConfig's weights; None when no RoutingConfig was given (update: unchanged)."""
    routing = params.get("RoutingConfig")
    if routing is None:
        return None
    return {k: float(v) for k, v in (routing.get("AdditionalVersionWeights") or {}).items()}
