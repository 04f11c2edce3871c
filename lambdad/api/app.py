"""The HTTP edge: routes AWS requests to handlers and renders AWS errors.

No business logic here: parse (botocore model), one call into the core, serialise.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, unquote

import orjson

from lambdad.api.auth import Authenticator, Principal, SignedRequest
from lambdad.api.code_urls import PATH_PREFIX, CodeUrlSigner
from lambdad.api.handlers import HANDLERS, REQUEST_ID_KEY, Call, Services
from lambdad.api.http_server import HttpRequest, HttpResponse
from lambdad.api.logs_api import LogsApi
from lambdad.api.protocol import LambdaProtocol
from lambdad.control.arns import parse_function_ref
from lambdad.errors import (
    AccessDeniedException,
    LambdaError,
    RequestEntityTooLargeException,
    ServiceException,
    UnknownOperationException,
)

log = logging.getLogger(__name__)

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
# The IAM action of an operation, where it is not the operation's own name.
IAM_ACTIONS = {"Invoke": "InvokeFunction", "InvokeWithResponseStream": "InvokeFunction"}


class LambdadApp:
    def __init__(
        self,
        protocol: LambdaProtocol,
        services: Services,
        logs_api: LogsApi,
        signer: CodeUrlSigner,
        authenticator: Authenticator,
        status: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self._protocol = protocol
        self._services = services
        self._logs = logs_api
        self._signer = signer
        self._authenticator = authenticator
        self._status = status

    def too_large(self) -> HttpResponse:
        """The answer to a request body over MAX_REQUEST_BYTES (never read in full)."""
        return self._protocol.serialize_error(
            RequestEntityTooLargeException(
                f"Request must be smaller than {MAX_REQUEST_BYTES} bytes for the "
                "CreateFunction operation"
            )
        )

    async def handle(self, http: HttpRequest) -> HttpResponse:
        """Answer one complete HTTP request (the lean server calls this)."""
        headers, body, raw_path = http.headers, http.body, http.raw_path
        query = parse_qs(http.query_string, keep_blank_values=True) if http.query_string else {}
        if raw_path.startswith(PATH_PREFIX):  # presigned by us (own HMAC): no SigV4
            return self._download(unquote(raw_path[len(PATH_PREFIX) :]), query)
        target = headers.get("x-amz-target")
        request = SignedRequest(
            http.method,
            raw_path.encode("latin-1"),
            http.query_string.encode("latin-1"),
            http.raw_headers,
            body,
            # the server's map is the verifier's when no header name repeats
            headers if len(headers) == len(http.raw_headers) else None,
        )
        try:
            principal = await self._authenticate(request, _services(target, raw_path))
        except LambdaError as error:
            if target is not None:
                return _json_1_1_error(error)
            return self._protocol.serialize_error(error)
        if target is not None:
            status, payload = self._logs.handle(principal.account_id, target, body)
            return HttpResponse(status, [("content-type", "application/x-amz-json-1.1")], payload)
        if raw_path == STATUS_PATH and self._status is not None:
            return self._status_document(principal)
        call = Call(principal.account_id, f"http://{headers.get('host', '')}")
        try:
            operation, labels = self._protocol.match(http.method, raw_path, query)
            handler = HANDLERS.get(operation)
            if handler is None:
                raise UnknownOperationException(f"lambdad does not implement {operation} yet")
            params = self._protocol.parse(operation, labels, query, headers, body)
            _check_owner(principal.account_id, self._services.registry.region, operation, params)
            output = await handler(self._services, call, params)
            request_id = output.pop(REQUEST_ID_KEY, None)
            return self._protocol.serialize(operation, output, request_id=request_id)
        except LambdaError as error:
            return self._protocol.serialize_error(error)
        except Exception:  # the request boundary: answer AWS's ServiceException, keep the trace
            log.exception("unhandled error in %s %s", http.method, raw_path)
            return self._protocol.serialize_error(ServiceException("An internal error occurred."))

    async def _authenticate(self, request: SignedRequest, services: frozenset[str]) -> Principal:
        if len(request.body) < HASH_IN_THREAD_BYTES:
            return self._authenticator.authenticate(request, services)
        # Hashing a large body (a zipped CreateFunction) would hold up every other request.
        return await asyncio.to_thread(self._authenticator.authenticate, request, services)

    def _status_document(self, principal: Principal) -> HttpResponse:
        assert self._status is not None
        document = {**self._status(), "accountId": principal.account_id}
        return HttpResponse(200, [("content-type", "application/json")], orjson.dumps(document))

    def _download(self, key: str, query: dict[str, list[str]]) -> HttpResponse:
        expires = query.get("Expires", [""])[0]
        signature = query.get("Signature", [""])[0]
        if not self._signer.verify(key, expires, signature):
            return HttpResponse(
                403, [("content-type", "text/plain")], b"Request has expired or is not signed"
            )
        try:
            data = self._services.registry.code_blob(key)
        except (KeyError, ValueError):
            return HttpResponse(404, [("content-type", "text/plain")], b"NoSuchKey")
        return HttpResponse(200, [("content-type", "application/zip")], data)


def _services(target: str | None, raw_path: str) -> frozenset[str]:
    if target is not None:
        return LOGS_SERVICES
    return STATUS_SERVICES if raw_path == STATUS_PATH else LAMBDA_SERVICES


def _json_1_1_error(error: LambdaError) -> HttpResponse:
    """An error in the AWS JSON 1.1 shape (the CloudWatch Logs endpoint)."""
    headers = [
        ("content-type", "application/x-amz-json-1.1"),
        ("x-amzn-ErrorType", error.code),
        ("x-amzn-RequestId", str(uuid.uuid4())),
    ]
    return HttpResponse(
        error.status, headers, orjson.dumps({"__type": error.code, "message": error.message})
    )


def _check_owner(caller: str, region: str, operation: str, params: dict[str, Any]) -> None:
    """A function named by the (full or partial) ARN of another account is that account's, and
    no resource-based policy lets the caller act on it (lambdad has none for functions): AWS's
    403, whether the function exists or not, where it used to be looked up among the caller's
    own."""
    name = params.get("FunctionName")
    if type(name) is not str or ":" not in name:
        resource = params.get("Resource")  # the tagging operations' function ARN
        if type(resource) is not str or ":function:" not in resource:
            return  # a bare name is the caller's (most requests: one string test)
        name = resource
    try:
        ref = parse_function_ref(name, params.get("Qualifier"))
    except LambdaError:
        return  # malformed: the operation answers it as it always did
    if ref.account_id in (None, caller) or ref.region not in (None, region):
        return  # (another region's: "not reachable in this region", as AWS says first)
    action = f"lambda:{IAM_ACTIONS.get(operation, operation)}"
    raise AccessDeniedException.no_policy(caller, action, name)
