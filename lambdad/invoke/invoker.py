"""Invoker: resolve the function, check the request, run it in an environment, frame the result.

The synchronous path touches no database and starts no thread: the function comes from the
registry's memory, the environment from its pool (a free provisioned one first), admission from
the ConcurrencyLimiter (a provisioned lease on a provisioned environment, else an on-demand lease
for the function and a scaling-rate token when a new environment must start), and the answer
from the environment's Runtime API.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import os
import time
from collections.abc import Callable
from enum import StrEnum
from typing import NamedTuple

import orjson

from lambdad.control.arns import FunctionRef, check_reachable
from lambdad.control.functions import FunctionRegistry
from lambdad.control.model import LATEST, FunctionConfig, FunctionState
from lambdad.errors import (
    InvalidParameterValueException,
    InvalidRequestContentException,
    RequestTooLargeException,
    ResourceConflictException,
    ResourceNotFoundException,
    SnapStartException,
    SnapStartNotReadyException,
)
from lambdad.invoke.async_queue import Admission, AsyncQueue
from lambdad.scheduler.environment import Environment, Invocation, InvocationResult, RestoreFailed
from lambdad.scheduler.limiter import ConcurrencyLimiter
from lambdad.scheduler.pools import PoolManager
from lambdad.store.metadata import QueuedEvent

MAX_SYNC_PAYLOAD = 6_291_456
MAX_ASYNC_PAYLOAD = 1_048_576
MAX_CLIENT_CONTEXT = 3583  # bytes of Base64 (AWS's documented limit)


class InvocationType(StrEnum):
    REQUEST_RESPONSE = "RequestResponse"  # run now, answer with the result (200)
    EVENT = "Event"  # queue durably, answer at once (202)
    DRY_RUN = "DryRun"  # check the request only (204)


class InvokeRequest(NamedTuple):
    account_id: str
    ref: FunctionRef
    payload: bytes
    invocation_type: InvocationType = InvocationType.REQUEST_RESPONSE
    tail: bool = False
    client_context: str | None = None  # base64 JSON, as the X-Amz-Client-Context header


class InvokeOutcome(NamedTuple):
    status: int
    payload: bytes = b""
    function_error: str | None = None
    log_result: str | None = None
    executed_version: str | None = None
    # The invocation's request id (AWS answers it as x-amzn-RequestId for Invoke).
    request_id: str | None = None


# hex digit -> the same digit with the RFC 4122 variant bits (10xx) set
_VARIANT = {f"{i:x}": f"{(i & 3) | 8:x}" for i in range(16)}


class _RandomDigits:
    """Hex digits from the system's random source, read in batches: one getrandom() call
    per ~100 invocations instead of one each. A forked child starts with a batch of its own."""

    BATCH_BYTES = 4096

    def __init__(self) -> None:
        self._digits = ""
        self._offset = 0
        os.register_at_fork(after_in_child=self.discard)

    def take(self, count: int) -> str:
        """`count` hex digits (4 random bits each) never handed out before."""
        start = self._offset
        if start + count > len(self._digits):
            self._digits, start = os.urandom(self.BATCH_BYTES).hex(), 0
        self._offset = start + count
        return self._digits[start : self._offset]

    def discard(self) -> None:
        self._digits, self._offset = "", 0


_RANDOM = _RandomDigits()


def new_ids() -> tuple[str, bytes]:
    """A request id (a random version 4 UUID, as ``str(uuid.uuid4())``) and an X-Ray trace
    header, from 36 random bytes."""
    digits = _RANDOM.take(72)
    request_id = (
        f"{digits[:8]}-{digits[8:12]}-4{digits[13:16]}-"
        f"{_VARIANT[digits[16]]}{digits[17:20]}-{digits[20:32]}"
    )
    trace_id = f"Root=1-{int(time.time()):08x}-{digits[32:56]};Parent={digits[56:]};Sampled=0"
    return request_id, trace_id.encode()


class Invoker:
    def __init__(
        self,
        registry: FunctionRegistry,
        pools: PoolManager,
        queue: AsyncQueue,
        limiter: ConcurrencyLimiter,
    ) -> None:
        self._registry = registry
        self._pools = pools
        self._queue = queue
        self._limiter = limiter
        self.invocations = 0  # Invoke requests so far, every kind (memory merging paces with it)

    async def invoke(self, request: InvokeRequest) -> InvokeOutcome:
        self.invocations += 1
        config = self._resolve(request.account_id, request.ref)
        kind = request.invocation_type
        limit = MAX_ASYNC_PAYLOAD if kind is InvocationType.EVENT else MAX_SYNC_PAYLOAD
        if len(request.payload) > limit:
            raise RequestTooLargeException(
                f"Request must be smaller than {limit} bytes for the InvokeFunction operation"
            )
        _check_json(request.payload)
        client_context = _decode_client_context(request.client_context)
        if kind is InvocationType.DRY_RUN:
            return InvokeOutcome(204)
        request_id, trace_id = new_ids()
        if kind is InvocationType.EVENT:
            await self._queue.put(
                QueuedEvent(
                    event_id=request_id,
                    account_id=request.account_id,
                    function_name=config.name,
                    # as invoked ("" for none): an alias picks its version when the event runs
                    qualifier=request.ref.qualifier or "",
                    payload=request.payload,
                    client_context=None,  # AWS passes ClientContext to synchronous calls only
                    enqueued_at=time.time(),
                )
            )
            return InvokeOutcome(202, request_id=request_id)
        invocation = Invocation(
            request_id=request_id,
            payload=request.payload,
            invoked_arn=_invoked_arn(config, request.ref),
            tail=request.tail,
            client_context=client_context,
            trace_id=trace_id,
        )
        # The reservation (and the account's pool) counts the function, whatever its version;
        # a free provisioned environment of the version runs it on capacity set aside already.
        pool = self._pools.pool_for(config)
        env = pool.claim_provisioned()
        lease = self._limiter.provisioned_lease if env else self._limiter.lease_nowait
        with lease(request.account_id, config.name):
            try:
                result = await pool.run(invocation, self._admit(config), env)
            except RestoreFailed as failed:
                raise SnapStartException(_restore_failure_message(failed)) from None
        return InvokeOutcome(
            status=200,
            payload=result.payload,
            function_error=result.function_error,
            log_result=result.log_tail,
            executed_version=config.version,
            request_id=request_id,
        )

    def admit_event(self, event: QueuedEvent, first: bool) -> Admission | None:
        """Capacity for a queued Event invocation now (AsyncQueue's `admit`), or None: a free
        provisioned environment of the version it names (an alias picks its version now) with
        a provisioned lease, else an on-demand lease. `first`: count a refusal as a throttle."""
        try:
            config = self._registry.invocation_target(event.account_id, _event_ref(event))
        except ResourceNotFoundException:
            return Admission(None)  # run_event drops it
        env = self._pools.pool_for(config).claim_provisioned()
        if env is not None:
            lease = self._limiter.acquire_provisioned(event.account_id, config.name)
            return Admission(lease, _EventTarget(config, env))
        found = self._limiter.try_lease(event.account_id, config.name, count_throttle=first)
        return None if found is None else Admission(found, _EventTarget(config, None))

    async def run_event(self, event: QueuedEvent, admission: Admission) -> InvocationResult | None:
        """Run one queued Event invocation admitted by admit_event (the queue holds its lease);
        None if its function, version or alias is gone."""
        target = admission.claimed
        if not isinstance(target, _EventTarget):
            return None
        config = target.config
        invocation = Invocation(
            request_id=event.event_id,
            payload=event.payload,
            invoked_arn=_invoked_arn(config, _event_ref(event)),
            client_context=_decode_client_context(event.client_context),
            trace_id=new_ids()[1],
        )
        try:
            pool = self._pools.pool_for(config)
            return await pool.run(invocation, self._admit(config), target.env)
        except RestoreFailed as failed:  # retried like any failed event
            return InvocationResult(failed.payload, function_error="Unhandled")

    def _admit(self, config: FunctionConfig) -> Callable[[], None]:
        """The scaling-rate check a cold start of this function must pass."""
        return functools.partial(
            self._limiter.admit_scale_out_nowait, config.account_id, config.name
        )

    def _resolve(self, account_id: str, ref: FunctionRef) -> FunctionConfig:
        check_reachable(ref, self._registry.region)
        # Invoke names $LATEST in its not-found message even when no qualifier was given.
        if ref.qualifier is None:
            ref = FunctionRef(ref.name, LATEST, ref.account_id, ref.region)
        config = self._registry.invocation_target(account_id, ref)
        if config.state is FunctionState.PENDING and config.snap_start_on:
            raise SnapStartNotReadyException(
                "Lambda is initializing your function. You can invoke the function when the "
                "state of your function is Active."
            )
        if config.state is not FunctionState.ACTIVE:
            raise ResourceConflictException(
                "The operation cannot be performed at this time. The function is currently in "
                f"the following state: {config.state.value}"
            )
        return config


class _EventTarget(NamedTuple):
    """What admit_event resolved for a queued event: the version it runs and the
    provisioned environment claimed for it (None: any of the pool's)."""

    config: FunctionConfig
    env: Environment | None


def _event_ref(event: QueuedEvent) -> FunctionRef:
    """The function a queued event names, as it was invoked ("" for no qualifier)."""
    return FunctionRef(event.function_name, event.qualifier or None, None, None)


def _restore_failure_message(failed: RestoreFailed) -> str:
    """SnapStartException's message: the failed hook's error, as the runtime reported it."""
    detail = failed.error_type
    with contextlib.suppress(orjson.JSONDecodeError):
        document = orjson.loads(failed.payload)
        if isinstance(document, dict) and document.get("errorMessage"):
            detail = f"{detail}: {document['errorMessage']}"
    return f"Lambda couldn't restore the snapshot: an afterRestore hook failed ({detail})"


def _invoked_arn(config: FunctionConfig, ref: FunctionRef) -> str:
    return f"{config.arn}:{ref.qualifier}" if ref.qualifier else config.arn


def _check_json(payload: bytes) -> None:
    if not payload:
        return
    try:
        orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequestContentException(
            f"Could not parse request body into json: Could not parse payload into json: {exc}"
        ) from None


def _decode_client_context(value: str | None) -> bytes | None:
    if not value:
        return None
    if len(value) > MAX_CLIENT_CONTEXT:
        raise InvalidParameterValueException(
            f"Client context must be at most {MAX_CLIENT_CONTEXT} bytes of Base64-encoded data."
        )
    try:
        decoded = base64.b64decode(value, validate=True)
        orjson.loads(decoded)
    except (binascii.Error, ValueError):
        raise InvalidParameterValueException(
            "Client context must be a valid Base64-encoded JSON object."
        ) from None
    return decoded
