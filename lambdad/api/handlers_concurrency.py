"""Reserved concurrency: PutFunctionConcurrency, GetFunctionConcurrency, DeleteFunctionConcurrency.

A reservation belongs to the function as a whole (all versions and aliases share it).
"""

from __future__ import annotations

from lambdad.api.handlers import Call, Output, Params, Services, handles, ref_of


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
