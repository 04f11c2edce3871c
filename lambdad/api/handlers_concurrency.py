"""Reserved concurrency (PutFunctionConcurrency, GetFunctionConcurrency,
DeleteFunctionConcurrency) and provisioned concurrency (Put/Get/Delete/List
ProvisionedConcurrencyConfig(s)).

A reservation belongs to the function as a whole (all versions and aliases share it); a
provisioned concurrency configuration to one published version or alias.
"""

from __future__ import annotations

from lambdad.api.handlers import Call, Output, Params, Services, handles, paginate, ref_of
from lambdad.control.provisioned import ProvisionedView


@handles("PutFunctionConcurrency")
async def put_function_concurrency(services: Services, call: Call, params: Params) -> Output:
    reserved = services.registry.put_concurrency(
        call.account_id, ref_of(services, params), params["ReservedConcurrentExecutions"]
    )
    return {"ReservedConcurrentExecutions": reserved}


@handles("GetFunctionConcurrency")
async def get_function_concurrency(services: Services, call: Call, params: Params) -> Output:
    reserved = services.registry.reserved_concurrency(call.account_id, ref_of(services, params))
    return {} if reserved is None else {"ReservedConcurrentExecutions": reserved}


@handles("DeleteFunctionConcurrency")
async def delete_function_concurrency(services: Services, call: Call, params: Params) -> Output:
    services.registry.delete_concurrency(call.account_id, ref_of(services, params))
    return {}


@handles("PutProvisionedConcurrencyConfig")
async def put_provisioned_concurrency_config(
    services: Services, call: Call, params: Params
) -> Output:
    view = services.registry.provisioned.put(
        call.account_id, ref_of(services, params), params["ProvisionedConcurrentExecutions"]
    )
    return _provisioned(view)


@handles("GetProvisionedConcurrencyConfig")
async def get_provisioned_concurrency_config(
    services: Services, call: Call, params: Params
) -> Output:
    return _provisioned(
        services.registry.provisioned.get(call.account_id, ref_of(services, params))
    )


@handles("DeleteProvisionedConcurrencyConfig")
async def delete_provisioned_concurrency_config(
    services: Services, call: Call, params: Params
) -> Output:
    services.registry.provisioned.delete(call.account_id, ref_of(services, params))
    return {}


@handles("ListProvisionedConcurrencyConfigs")
async def list_provisioned_concurrency_configs(
    services: Services, call: Call, params: Params
) -> Output:
    found = services.registry.provisioned.configs(call.account_id, ref_of(services, params))
    page, next_marker = paginate(found, lambda v: v.config.qualifier, lambda q: (0, q), params)
    output: Output = {
        "ProvisionedConcurrencyConfigs": [
            {"FunctionArn": view.function_arn, **_provisioned(view)} for view in page
        ]
    }
    if next_marker:
        output["NextMarker"] = next_marker
    return output


def _provisioned(view: ProvisionedView) -> Output:
    """A configuration as AWS answers it (StatusReason only when there is one)."""
    allocation = view.allocation
    output: Output = {
        "RequestedProvisionedConcurrentExecutions": view.config.requested,
        "AvailableProvisionedConcurrentExecutions": allocation.available,
        "AllocatedProvisionedConcurrentExecutions": allocation.allocated,
        "Status": allocation.status.value,
        "LastModified": view.config.last_modified,
    }
    if allocation.reason:
        output["StatusReason"] = allocation.reason
    return output
