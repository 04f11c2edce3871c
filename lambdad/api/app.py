"""The HTTP edge: an ASGI app that routes AWS requests to handlers and renders AWS errors.

No business logic here: parse (botocore model), one call into the core, serialise.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs, unquote

import orjson

from lambdad.api.auth import Authenticator, Principal, SignedRequest
from lambdad.api.code_urls import PATH_PREFIX, CodeUrlSigner
from lambdad.api.handlers import HANDLERS, Call, Services
from lambdad.api.logs_api import LogsApi
from lambdad.api.protocol import LambdaProtocol, Response
from lambdad.errors import (
    LambdaError,
    RequestEntityTooLargeException,
    ServiceException,
    UnknownOperationException,
)

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# lambdad's own (non-AWS) status document: isolation, runtimes, pools; read by `lambdad doctor`.
STATUS_PATH = "/_lambdad/status"
# AWS refuses CreateFunction requests larger than this before looking at them.
MAX_REQUEST_BYTES = 70_167_211
# SigV4 signing names a request's credential scope may carry, per endpoint.
LAMBDA_SERVICES = frozenset({"lambda"})
LOGS_SERVICES = frozenset({"logs"})
STATUS_SERVICES = LAMBDA_SERVICES | LOGS_SERVICES
# Bodies from this size on are hashed for SigV4 off the event loop.
HASH_IN_THREAD_BYTES = 1 << 20


class BodyTooLarge(Exception):
    pass


class LambdadApp:
    def __init__(
        self,
        protocol: LambdaProtocol,
        services: Services,
        logs_api: LogsApi,
        signer: CodeUrlSigner,
        authenticator: Authenticator,
        on_startup: Callable[[], Awaitable[None]] | None = None,
        on_shutdown: Callable[[], Awaitable[None]] | None = None,
        status: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self._protocol = protocol
        self._services = services
        self._logs = logs_api
        self._signer = signer
        self._authenticator = authenticator
        self._on_startup = on_startup
        self._on_shutdown = on_shutdown
        self._status = status

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        response = await self._respond(scope, receive)
        await send(
            {
                "type": "http.response.start",
                "status": response.status,
                "headers": [
                    (k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers
                ],
            }
        )
        await send({"type": "http.response.body", "body": response.body})

    async def _respond(self, scope: Scope, receive: Receive) -> Response:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            body = await _read_body(receive)
        except BodyTooLarge:
            return self._protocol.serialize_error(
                RequestEntityTooLargeException(
                    f"Request must be smaller than {MAX_REQUEST_BYTES} bytes for the "
                    "CreateFunction operation"
                )
            )
        raw = scope.get("raw_path") or scope["path"].encode()
        raw_path = raw.decode("latin-1")
        query_string = scope.get("query_string", b"")
        query = parse_qs(query_string.decode("latin-1"), keep_blank_values=True)
        if raw_path.startswith(PATH_PREFIX):  # presigned by us (own HMAC): no SigV4
            return self._download(unquote(raw_path[len(PATH_PREFIX) :]), query)
        target = headers.get("x-amz-target")
        request = SignedRequest(scope["method"], raw, query_string, scope["headers"], body)
        try:
            principal = await self._authenticate(request, _services(target, raw_path))
        except LambdaError as error:
            if target is not None:
                return _json_1_1_error(error)
            return self._protocol.serialize_error(error)
        if target is not None:
            status, payload = self._logs.handle(principal.account_id, target, body)
            return Response(status, [("content-type", "application/x-amz-json-1.1")], payload)
        if raw_path == STATUS_PATH and self._status is not None:
            return self._status_document(principal)
        call = Call(
            principal.account_id, f"{scope.get('scheme', 'http')}://{headers.get('host', '')}"
        )
        try:
            operation, labels = self._protocol.match(scope["method"], raw_path, query)
            handler = HANDLERS.get(operation)
            if handler is None:
                raise UnknownOperationException(f"lambdad does not implement {operation} yet")
            params = self._protocol.parse(operation, labels, query, headers, body)
            output = await handler(self._services, call, params)
            return self._protocol.serialize(operation, output)
        except LambdaError as error:
            return self._protocol.serialize_error(error)
        except Exception:  # the request boundary: answer AWS's ServiceException, keep the trace
            log.exception("unhandled error in %s %s", scope["method"], raw_path)
            return self._protocol.serialize_error(ServiceException("An internal error occurred."))

    async def _authenticate(self, request: SignedRequest, services: frozenset[str]) -> Principal:
        if len(request.body) < HASH_IN_THREAD_BYTES:
            return self._authenticator.authenticate(request, services)
        # Hashing a large body (a zipped CreateFunction) would hold up every other request.
        return await asyncio.to_thread(self._authenticator.authenticate, request, services)

    def _status_document(self, principal: Principal) -> Response:
        assert self._status is not None
        document = {**self._status(), "accountId": principal.account_id}
        return Response(200, [("content-type", "application/json")], orjson.dumps(document))

    def _download(self, key: str, query: dict[str, list[str]]) -> Response:
        expires = query.get("Expires", [""])[0]
        signature = query.get("Signature", [""])[0]
        if not self._signer.verify(key, expires, signature):
            return Response(
                403, [("content-type", "text/plain")], b"Request has expired or is not signed"
            )
        try:
            data = self._services.registry.code_blob(key)
        except (KeyError, ValueError):
            return Response(404, [("content-type", "text/plain")], b"NoSuchKey")
        return Response(200, [("content-type", "application/zip")], data)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    if self._on_startup is not None:
                        await self._on_startup()
                except Exception as exc:  # start-up boundary: report and refuse to start
                    log.exception("start-up failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._on_shutdown is not None:
                    await self._on_shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return


def _services(target: str | None, raw_path: str) -> frozenset[str]:
    if target is not None:
        return LOGS_SERVICES
    return STATUS_SERVICES if raw_path == STATUS_PATH else LAMBDA_SERVICES


def _json_1_1_error(error: LambdaError) -> Response:
    """An error in the AWS JSON 1.1 shape (the CloudWatch Logs endpoint)."""
    headers = [
        ("content-type", "application/x-amz-json-1.1"),
        ("x-amzn-ErrorType", error.code),
        ("x-amzn-RequestId", str(uuid.uuid4())),
    ]
    return Response(
        error.status, headers, orjson.dumps({"__type": error.code, "message": error.message})
    )


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > MAX_REQUEST_BYTES:
                raise BodyTooLarge()
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
