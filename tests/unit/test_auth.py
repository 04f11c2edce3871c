"""SigV4 verification against requests signed by botocore itself, and the accounts behind keys."""

from __future__ import annotations

import datetime
import hashlib
import hmac
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import urlsplit

import botocore.session
import orjson
import pytest
from botocore.auth import SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.parsers import JSONParser, RestJSONParser
from urllib3 import HTTPHeaderDict

from lambdad.api import auth
from lambdad.api.app import _json_1_1_error
from lambdad.api.auth import (
    Authenticator,
    IncompleteSignatureException,
    Principal,
    SignedRequest,
    canonical_query_string,
    canonical_uri,
)
from lambdad.api.protocol import LambdaProtocol
from lambdad.control.accounts import AccountRegistry, InvalidAccountName, create_account
from lambdad.credentials import RootCredentials
from lambdad.errors import (
    InvalidSignatureException,
    LambdaError,
    MissingAuthenticationTokenException,
    UnrecognizedClientException,
)
from lambdad.store.accounts import (
    AccountExists,
    MemoryAccountStore,
    SqliteAccountStore,
    StoredAccount,
)

ROOT_KEY = "AKIAROOTROOTROOTROOT"
ROOT_SECRET = "rootsecretrootsecretrootsecretrootsecret"
DEFAULT_ACCOUNT = "000000000000"
ENDPOINT = "http://127.0.0.1:9000"
ARN = "arn:aws:lambda:us-east-1:000000000000:function:my-fn"
# 2024-01-01T00:30:00Z: the server's clock in these tests; requests are signed then by default.
NOW = datetime.datetime(2024, 1, 1, 0, 30, tzinfo=datetime.UTC)
LAMBDA = frozenset({"lambda"})


class Clock:
    def __init__(self, moment: datetime.datetime = NOW) -> None:
        self.now = moment.timestamp()

    def __call__(self) -> float:
        return self.now


class Captured(Exception):
    """Raised from botocore's before-send hook: the signed request never leaves the process."""


@pytest.fixture
def accounts() -> AccountRegistry:
    root = RootCredentials(ROOT_KEY, ROOT_SECRET)
    return AccountRegistry(MemoryAccountStore(), root, DEFAULT_ACCOUNT)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def authenticator(accounts: AccountRegistry, clock: Clock) -> Authenticator:
    return Authenticator(accounts, DEFAULT_ACCOUNT, clock=clock)


def client(
    service: str = "lambda",
    key: str = ROOT_KEY,
    secret: str = ROOT_SECRET,
    token: str | None = None,
    region: str = "us-east-1",
) -> Any:
    return botocore.session.get_session().create_client(
        service,
        region_name=region,
        endpoint_url=ENDPOINT,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        aws_session_token=token,
        config=Config(retries={"max_attempts": 1}),
    )


def frozen_time(moment: datetime.datetime) -> Any:
    """botocore signs with this time (its SigV4 timestamp comes from get_current_datetime)."""
    naive = moment.astimezone(datetime.UTC).replace(tzinfo=None)
    return mock.patch("botocore.auth.get_current_datetime", return_value=naive)


def signed(
    operation: str,
    params: dict[str, Any],
    *,
    botocore_client: Any = None,
    at: datetime.datetime = NOW,
) -> SignedRequest:
    """What the server receives when botocore sends `operation`."""
    sender = botocore_client or client()
    requests: list[Any] = []

    def capture(request: Any, **_: Any) -> None:
        requests.append(request)
        raise Captured()

    sender.meta.events.register("before-send", capture)
    try:
        with frozen_time(at), pytest.raises(Captured):
            getattr(sender, operation)(**params)
    finally:
        sender.meta.events.unregister("before-send", capture)
    prepared = requests[0]
    return received(prepared.method, prepared.url, dict(prepared.headers), prepared.body)


def received(method: str, url: str, headers: dict[str, Any], body: Any = b"") -> SignedRequest:
    parts = urlsplit(url)
    raw = [(b"host", parts.netloc.encode())]
    raw += [
        (k.lower().encode(), v if isinstance(v, bytes) else v.encode()) for k, v in headers.items()
    ]
    raw.append((b"user-agent", b"unsigned-and-ignored"))
    payload = body.encode() if isinstance(body, str) else (body or b"")
    return SignedRequest(method, parts.path.encode(), parts.query.encode(), raw, payload)


def replace_header(request: SignedRequest, name: bytes, value: bytes | None) -> SignedRequest:
    headers = [(k, v) for k, v in request.headers if k != name]
    if value is not None:
        headers.append((name, value))
    return SignedRequest(
        request.method, request.raw_path, request.query_string, headers, request.body
    )


def refused(check: Callable[[], object], kind: type[LambdaError]) -> str:
    with pytest.raises(LambdaError) as info:
        check()
    assert type(info.value) is kind
    assert info.value.status == 403
    return info.value.message


# -- botocore-signed requests verify -------------------------------------------------------------


OPERATIONS: dict[str, tuple[str, dict[str, Any]]] = {
    "invoke-arn-latest": (
        "invoke",
        {"FunctionName": f"{ARN}:$LATEST", "Payload": b'{"a": 1}', "LogType": "Tail"},
    ),
    "invoke-client-context": (
        "invoke",
        {"FunctionName": "my-fn", "ClientContext": "eyJhIjogMX0=", "InvocationType": "Event"},
    ),
    "get-function-qualifier": ("get_function", {"FunctionName": ARN, "Qualifier": "$LATEST"}),
    "list-functions-query": ("list_functions", {"MaxItems": 10, "Marker": "a b+c/d~e*f"}),
    "create-function": (
        "create_function",
        {
            "FunctionName": "my-fn",
            "Runtime": "python3.12",
            "Role": "arn:aws:iam::000000000000:role/r",
            "Handler": "app.handler",
            "Code": {"ZipFile": b"PK\x05\x06" + bytes(18)},
            "Environment": {"Variables": {"K": "v with spaces & = signs"}},
        },
    ),
    "tag-resource-arn": ("tag_resource", {"Resource": ARN, "Tags": {"team": "a:b"}}),
    "untag-resource-repeated-query": (
        "untag_resource",
        {"Resource": ARN, "TagKeys": ["b", "a", "a b"]},
    ),
    "delete-function-partial-arn": (
        "delete_function",
        {"FunctionName": "000000000000:function:my-fn"},
    ),
    "get-account-settings": ("get_account_settings", {}),
}


@pytest.mark.parametrize("case", sorted(OPERATIONS))
def test_lambda_requests_signed_by_botocore_verify(authenticator: Authenticator, case: str) -> None:
    operation, params = OPERATIONS[case]
    assert authenticator.authenticate(signed(operation, params), LAMBDA) == Principal(
        DEFAULT_ACCOUNT, ROOT_KEY
    )


@pytest.mark.parametrize("region", ["us-east-1", "eu-west-1", "ap-southeast-2"])
def test_any_region_in_the_scope_is_accepted(authenticator: Authenticator, region: str) -> None:
    request = signed("get_function", {"FunctionName": "f"}, botocore_client=client(region=region))
    assert authenticator.authenticate(request, LAMBDA).account_id == DEFAULT_ACCOUNT


def test_logs_requests_signed_by_botocore_verify(authenticator: Authenticator) -> None:
    logs = client("logs")
    for operation, params in [
        ("describe_log_groups", {"logGroupNamePrefix": "/aws/lambda/"}),
        ("filter_log_events", {"logGroupName": "/aws/lambda/my-fn", "filterPattern": "ERROR"}),
    ]:
        request = signed(operation, params, botocore_client=logs)
        assert authenticator.authenticate(request, {"logs"}).account_id == DEFAULT_ACCOUNT


def test_scope_must_name_the_endpoints_service(authenticator: Authenticator) -> None:
    logs_request = signed("describe_log_groups", {}, botocore_client=client("logs"))
    message = refused(
        lambda: authenticator.authenticate(logs_request, LAMBDA), InvalidSignatureException
    )
    assert message == "Credential should be scoped to correct service: 'lambda'. "


@pytest.mark.parametrize(
    "path",
    [
        "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A000000000000%3Afunction%3Af/invocations",
        "/2015-03-31/functions/f%3A%24LATEST",
        "/2015-03-31/functions/f:$LATEST",
        "/a//b/./c/../d/",
        "/",
        "/with%20space/and~tilde/%7E",
    ],
)
def test_canonical_uri_is_botocores(path: str) -> None:
    signer = SigV4Auth(Credentials("k", "s"), "lambda", "us-east-1")
    assert canonical_uri(path.encode()) == signer._normalize_url_path(path)


@pytest.mark.parametrize(
    "query",
    ["", "b=2&a=1", "Marker=a%20b%2Bc&MaxItems=10", "k=2&k=1&j=", "Qualifier=%24LATEST"],
)
def test_canonical_query_of_botocore_encoded_queries_is_botocores(query: str) -> None:
    signer = SigV4Auth(Credentials("k", "s"), "lambda", "us-east-1")
    expected = signer._canonical_query_string_url(urlsplit(f"{ENDPOINT}/?{query}"))
    assert canonical_query_string(query) == expected


def test_canonical_query_reencodes_what_other_clients_leave_plain() -> None:
    assert canonical_query_string("b=x y&a=$&c=%7e") == "a=%24&b=x%20y&c=~"


# -- presigned query form --------------------------------------------------------------------------


def presigned(
    url: str, *, expires: int = 300, at: datetime.datetime = NOW, secret: str = ROOT_SECRET
) -> SignedRequest:
    request = AWSRequest(method="GET", url=url)
    signer = SigV4QueryAuth(Credentials(ROOT_KEY, secret), "lambda", "us-east-1", expires)
    with frozen_time(at):
        signer.add_auth(request)
    return received("GET", request.url, {})


def test_query_form_signed_by_sigv4queryauth_verifies(authenticator: Authenticator) -> None:
    for path in (f"/2015-03-31/functions/{ARN.replace(':', '%3A')}", "/2015-03-31/functions/"):
        request = presigned(f"{ENDPOINT}{path}?Qualifier=%24LATEST")
        assert authenticator.authenticate(request, LAMBDA).account_id == DEFAULT_ACCOUNT


def test_generate_presigned_url_verifies(authenticator: Authenticator) -> None:
    with frozen_time(NOW):
        url = client().generate_presigned_url(
            "get_function", Params={"FunctionName": f"{ARN}:$LATEST"}, ExpiresIn=600
        )
    assert authenticator.authenticate(received("GET", url, {}), LAMBDA).account_id == (
        DEFAULT_ACCOUNT
    )


def test_expired_presigned_url_is_refused(authenticator: Authenticator, clock: Clock) -> None:
    request = presigned(f"{ENDPOINT}/2015-03-31/functions/", expires=60)
    clock.now += 61
    message = refused(
        lambda: authenticator.authenticate(request, LAMBDA), InvalidSignatureException
    )
    assert message == (
        "Signature expired: 20240101T003000Z is now earlier than 20240101T003001Z "
        "(20240101T003101Z - 1 min.)"
    )


def test_presigned_url_lives_at_most_fifteen_minutes(
    authenticator: Authenticator, clock: Clock
) -> None:
    """AWS's non-S3 services keep their 15-minute window whatever X-Amz-Expires says."""
    request = presigned(f"{ENDPOINT}/2015-03-31/functions/", expires=3600)
    clock.now += 899
    assert authenticator.authenticate(request, LAMBDA)
    clock.now += 2
    refused(lambda: authenticator.authenticate(request, LAMBDA), InvalidSignatureException)


def test_presigned_url_with_a_tampered_query_is_refused(authenticator: Authenticator) -> None:
    request = presigned(f"{ENDPOINT}/2015-03-31/functions/?MaxItems=1")
    query = request.query_string.replace(b"MaxItems=1", b"MaxItems=50")
    tampered = SignedRequest("GET", request.raw_path, query, request.headers, b"")
    refused(lambda: authenticator.authenticate(tampered, LAMBDA), InvalidSignatureException)


def test_presigned_url_without_its_fields_is_incomplete(authenticator: Authenticator) -> None:
    request = presigned(f"{ENDPOINT}/2015-03-31/functions/")
    query = b"&".join(p for p in request.query_string.split(b"&") if b"Credential" not in p)
    partial = SignedRequest("GET", request.raw_path, query, request.headers, b"")
    message = refused(
        lambda: authenticator.authenticate(partial, LAMBDA), IncompleteSignatureException
    )
    assert "'X-Amz-Credential'" in message


def test_presigned_expires_must_be_within_a_week(authenticator: Authenticator) -> None:
    request = presigned(f"{ENDPOINT}/2015-03-31/functions/", expires=604_801)
    refused(lambda: authenticator.authenticate(request, LAMBDA), IncompleteSignatureException)


# -- every refusal -------------------------------------------------------------------------------


def test_no_authorization_is_missing_authentication_token(authenticator: Authenticator) -> None:
    request = received("GET", f"{ENDPOINT}/2015-03-31/functions/", {})
    message = refused(
        lambda: authenticator.authenticate(request, LAMBDA), MissingAuthenticationTokenException
    )
    assert message == "Missing Authentication Token"


@pytest.mark.parametrize(
    ("authorization", "fragment"),
    [
        ("Bearer", "Authorization header requires 'Credential' parameter."),
        ("Bearer abc", "'abc' not a valid key=value pair (missing equal-sign)"),
        (
            "AWS4-HMAC-SHA256 Credential=AKIAROOTROOTROOTROOT/20240101/us-east-1/lambda/"
            "aws4_request",
            "Authorization header requires 'Signature' parameter. Authorization header requires "
            "'SignedHeaders' parameter. Authorization=AWS4-HMAC-SHA256 Credential=",
        ),
        (
            "AWS4-HMAC-SHA256 Credential=AKIAROOTROOTROOTROOT/20240101/us-east-1/lambda, "
            "SignedHeaders=host;x-amz-date, Signature=00",
            "Credential must have exactly 5 slash-delimited elements",
        ),
        (
            "AWS4-HMAC-SHA256 Credential=AKIAROOTROOTROOTROOT/20240101/us-east-1/lambda/aws5, "
            "SignedHeaders=host;x-amz-date, Signature=00",
            "Credential should be scoped with a valid terminator: 'aws4_request', not 'aws5'.",
        ),
        (
            "AWS4-HMAC-SHA512 Credential=AKIAROOTROOTROOTROOT/20240101/us-east-1/lambda/"
            "aws4_request, SignedHeaders=host;x-amz-date, Signature=00",
            "Unsupported AWS 'algorithm': 'AWS4-HMAC-SHA512'.",
        ),
    ],
)
def test_malformed_authorization_is_incomplete_signature(
    authenticator: Authenticator, authorization: str, fragment: str
) -> None:
    headers = {"Authorization": authorization, "X-Amz-Date": "20240101T003000Z"}
    request = received("GET", f"{ENDPOINT}/2015-03-31/functions/", headers)
    message = refused(
        lambda: authenticator.authenticate(request, LAMBDA), IncompleteSignatureException
    )
    assert fragment in message


def test_signature_without_a_date_header_is_incomplete(authenticator: Authenticator) -> None:
    request = replace_header(signed("list_functions", {}), b"x-amz-date", None)
    message = refused(
        lambda: authenticator.authenticate(request, LAMBDA), IncompleteSignatureException
    )
    assert "requires existence of either a 'X-Amz-Date' or a 'Date' header" in message


def test_sdk_authorization_takes_one_match_and_yields_the_general_parsers_claim() -> None:
    request = signed("invoke", {"FunctionName": "my-fn", "Payload": b"{}"})
    headers = {k.decode(): v.decode() for k, v in request.headers}
    authorization = headers["authorization"]
    assert auth._COMMON_AUTHORIZATION.fullmatch(authorization) is not None
    fast = auth._header_claim(authorization, headers, "")
    general = auth._header_claim(authorization.replace(", ", ",  "), headers, "")
    assert auth._COMMON_AUTHORIZATION.fullmatch(authorization.replace(", ", ",  ")) is None
    assert fast == general


def test_authorization_spaced_otherwise_still_verifies(authenticator: Authenticator) -> None:
    request = signed("list_functions", {})
    authorization = dict(request.headers)[b"authorization"]
    request = replace_header(request, b"authorization", authorization.replace(b", ", b","))
    assert authenticator.authenticate(request, LAMBDA).account_id == DEFAULT_ACCOUNT


def test_empty_amz_date_falls_back_to_the_date_header(authenticator: Authenticator) -> None:
    request = replace_header(signed("list_functions", {}), b"x-amz-date", b"")
    message = refused(
        lambda: authenticator.authenticate(request, LAMBDA), IncompleteSignatureException
    )
    assert "requires existence of either a 'X-Amz-Date' or a 'Date' header" in message


def test_unknown_key_is_unrecognized_client(authenticator: Authenticator) -> None:
    stranger = client(key="AKIASTRANGERSTRANGER")
    request = signed("list_functions", {}, botocore_client=stranger)
    message = refused(
        lambda: authenticator.authenticate(request, LAMBDA), UnrecognizedClientException
    )
    assert message == "The security token included in the request is invalid."


def test_wrong_secret_is_invalid_signature(authenticator: Authenticator) -> None:
    request = signed("list_functions", {}, botocore_client=client(secret="x" * 40))
    message = refused(
        lambda: authenticator.authenticate(request, LAMBDA), InvalidSignatureException
    )
    assert message == (
        "The request signature we calculated does not match the signature you provided. Check "
        "your AWS Secret Access Key and signing method. Consult the service documentation for "
        "details."
    )
    assert "x" * 40 not in message and ROOT_SECRET not in message


@pytest.mark.parametrize(
    "tamper",
    [
        lambda r: SignedRequest(r.method, r.raw_path, r.query_string, r.headers, b'{"a": 2}'),
        lambda r: SignedRequest(
            r.method, r.raw_path.replace(b"my-fn", b"other"), r.query_string, r.headers, r.body
        ),
        lambda r: SignedRequest("PUT", r.raw_path, r.query_string, r.headers, r.body),
        lambda r: replace_header(r, b"x-amz-log-type", b"None"),
        lambda r: replace_header(r, b"host", b"evil.example:9000"),
    ],
    ids=["body", "path", "method", "signed-header", "host"],
)
def test_tampered_request_is_invalid_signature(
    authenticator: Authenticator, tamper: Callable[[SignedRequest], SignedRequest]
) -> None:
    request = signed("invoke", {"FunctionName": "my-fn", "Payload": b'{"a": 1}', "LogType": "Tail"})
    assert authenticator.authenticate(request, LAMBDA)
    refused(lambda: authenticator.authenticate(tamper(request), LAMBDA), InvalidSignatureException)


def test_declared_payload_hash_is_not_trusted(authenticator: Authenticator) -> None:
    """A client's X-Amz-Content-SHA256 is never taken on faith: the body is hashed here."""
    declared = hashlib.sha256(b'{"a": 1}').hexdigest()
    request = AWSRequest(
        method="POST",
        url=f"{ENDPOINT}/2015-03-31/functions/my-fn/invocations",
        data=b'{"a": 1}',
        headers={"X-Amz-Content-SHA256": declared},
    )
    with frozen_time(NOW):
        SigV4Auth(Credentials(ROOT_KEY, ROOT_SECRET), "lambda", "us-east-1").add_auth(request)
    honest = received("POST", request.url, dict(request.headers), b'{"a": 1}')
    assert authenticator.authenticate(honest, LAMBDA)
    swapped = received("POST", request.url, dict(request.headers), b'{"a": 2}')
    refused(lambda: authenticator.authenticate(swapped, LAMBDA), InvalidSignatureException)


def test_unsigned_payload_is_accepted_when_signed_as_such(authenticator: Authenticator) -> None:
    request = AWSRequest(
        method="POST",
        url=f"{ENDPOINT}/2015-03-31/functions/my-fn/invocations",
        data=b"{}",
        headers={"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"},
    )
    with frozen_time(NOW):
        SigV4Auth(Credentials(ROOT_KEY, ROOT_SECRET), "lambda", "us-east-1").add_auth(request)
    as_received = received("POST", request.url, dict(request.headers), b"any body")
    assert authenticator.authenticate(as_received, LAMBDA)


def test_repeated_and_padded_headers_canonicalise_like_botocore(
    authenticator: Authenticator,
) -> None:
    request = AWSRequest(method="GET", url=f"{ENDPOINT}/2015-03-31/functions/")
    request.headers["X-Amz-Log-Type"] = "  Tail   spaced  "
    request.headers["X-Custom"] = "a  b"
    request.headers["X-Custom"] = " c "  # HTTPHeaders keeps both values
    with frozen_time(NOW):
        SigV4Auth(Credentials(ROOT_KEY, ROOT_SECRET), "lambda", "us-east-1").add_auth(request)
    raw = [(b"host", b"127.0.0.1:9000")]
    raw += [(k.lower().encode(), v.encode()) for k, v in request.headers.items()]
    as_received = SignedRequest("GET", b"/2015-03-31/functions/", b"", raw, b"")
    assert authenticator.authenticate(as_received, LAMBDA)


def test_host_must_be_signed(authenticator: Authenticator) -> None:
    request = signed("list_functions", {})
    authorization = dict(request.headers)[b"authorization"].replace(b"host;", b"")
    unsigned_host = replace_header(request, b"authorization", authorization)
    message = refused(
        lambda: authenticator.authenticate(unsigned_host, LAMBDA), InvalidSignatureException
    )
    assert message == "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization."


def test_scope_date_must_match_the_request_date(authenticator: Authenticator) -> None:
    request = signed("list_functions", {})
    moved = replace_header(request, b"x-amz-date", b"20240102T003000Z")
    message = refused(lambda: authenticator.authenticate(moved, LAMBDA), InvalidSignatureException)
    assert message.startswith("Date in Credential scope does not match YYYYMMDD")


# -- clock skew ----------------------------------------------------------------------------------


def test_request_signed_more_than_fifteen_minutes_ago_has_expired(
    authenticator: Authenticator,
) -> None:
    request = signed("list_functions", {}, at=datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC))
    message = refused(
        lambda: authenticator.authenticate(request, LAMBDA), InvalidSignatureException
    )
    assert message == (
        "Signature expired: 20240101T000000Z is now earlier than 20240101T001500Z "
        "(20240101T003000Z - 15 min.)"
    )


def test_request_signed_in_the_future_is_not_yet_current(authenticator: Authenticator) -> None:
    later = NOW + datetime.timedelta(minutes=16)
    request = signed("list_functions", {}, at=later)
    message = refused(
        lambda: authenticator.authenticate(request, LAMBDA), InvalidSignatureException
    )
    assert message == (
        "Signature not yet current: 20240101T004600Z is still later than 20240101T004500Z "
        "(20240101T003000Z + 15 min.)"
    )


def test_skew_within_fifteen_minutes_is_accepted(
    authenticator: Authenticator, clock: Clock
) -> None:
    request = signed("list_functions", {})
    for offset in (-899, 0, 899):
        clock.now = NOW.timestamp() + offset
        assert authenticator.authenticate(request, LAMBDA)


def test_rfc1123_date_header_signs_like_botocore(authenticator: Authenticator) -> None:
    request = AWSRequest(
        method="GET",
        url=f"{ENDPOINT}/2015-03-31/functions/",
        headers={"Date": "Mon, 01 Jan 2024 00:30:00 GMT"},
    )
    with frozen_time(NOW):
        SigV4Auth(Credentials(ROOT_KEY, ROOT_SECRET), "lambda", "us-east-1").add_auth(request)
    assert "X-Amz-Date" not in request.headers
    assert authenticator.authenticate(received("GET", request.url, dict(request.headers)), LAMBDA)


# -- constant time, caching --------------------------------------------------------------------


def test_signatures_are_compared_in_constant_time(authenticator: Authenticator) -> None:
    request = signed("list_functions", {})
    with mock.patch("lambdad.api.auth.hmac.compare_digest", wraps=hmac.compare_digest) as compare:
        authenticator.authenticate(request, LAMBDA)
    given = dict(request.headers)[b"authorization"].split(b"Signature=")[1]
    assert compare.call_count == 1
    assert compare.call_args.args[1] == given


def test_signing_keys_are_derived_once_per_day_region_and_service(
    authenticator: Authenticator,
) -> None:
    auth.signing_key.cache_clear()
    for _ in range(3):
        authenticator.authenticate(signed("list_functions", {}), LAMBDA)
    info = auth.signing_key.cache_info()
    assert (info.misses, info.hits) == (1, 2)


# -- sessions and accounts ---------------------------------------------------------------------


def test_session_credentials_act_for_their_account(
    accounts: AccountRegistry, authenticator: Authenticator
) -> None:
    accounts.register_session("ASIASESSIONSESSION00", "s" * 40, "111111111111", "token-1")
    session = client(key="ASIASESSIONSESSION00", secret="s" * 40, token="token-1")
    request = signed("list_functions", {}, botocore_client=session)
    assert authenticator.authenticate(request, LAMBDA) == Principal(
        "111111111111", "ASIASESSIONSESSION00"
    )
    wrong_token = replace_header(request, b"x-amz-security-token", b"token-2")
    refused(lambda: authenticator.authenticate(wrong_token, LAMBDA), UnrecognizedClientException)
    accounts.forget_session("ASIASESSIONSESSION00")
    refused(lambda: authenticator.authenticate(request, LAMBDA), UnrecognizedClientException)


def test_session_key_without_its_token_is_refused(
    accounts: AccountRegistry, authenticator: Authenticator
) -> None:
    accounts.register_session("ASIASESSIONSESSION00", "s" * 40, "111111111111", "token-1")
    request = signed(
        "list_functions", {}, botocore_client=client(key="ASIASESSIONSESSION00", secret="s" * 40)
    )
    refused(lambda: authenticator.authenticate(request, LAMBDA), UnrecognizedClientException)


def test_token_with_a_long_term_key_is_refused(authenticator: Authenticator) -> None:
    request = signed("list_functions", {}, botocore_client=client(token="made-up"))
    refused(lambda: authenticator.authenticate(request, LAMBDA), UnrecognizedClientException)


def test_account_created_after_start_is_found_in_the_store(
    accounts: AccountRegistry, authenticator: Authenticator
) -> None:
    created = accounts.create("team-a")
    team = client(key=created.access_key_id, secret=created.secret_access_key)
    request = signed("list_functions", {}, botocore_client=team)
    assert authenticator.authenticate(request, LAMBDA) == Principal(
        created.account_id, created.access_key_id
    )


def test_allow_any_credentials_accepts_any_key_as_the_default_account(
    accounts: AccountRegistry, clock: Clock
) -> None:
    anything = Authenticator(accounts, DEFAULT_ACCOUNT, allow_any_credentials=True, clock=clock)
    stranger = client(key="AKIARANDOMRANDOMRAND", secret="whatever")
    stale = NOW - datetime.timedelta(hours=2)
    request = signed("list_functions", {}, botocore_client=stranger, at=stale)
    assert anything.authenticate(request, LAMBDA).account_id == DEFAULT_ACCOUNT
    unsigned = received("GET", f"{ENDPOINT}/2015-03-31/functions/", {})
    refused(lambda: anything.authenticate(unsigned, LAMBDA), MissingAuthenticationTokenException)


def test_new_accounts_look_like_aws_accounts() -> None:
    store = MemoryAccountStore()
    account = create_account(store, "team-a", reserved_ids=(DEFAULT_ACCOUNT,), clock=lambda: 5.0)
    assert len(account.account_id) == 12 and account.account_id.isdigit()
    assert account.access_key_id.startswith("AKIA") and len(account.access_key_id) == 20
    assert (
        account.access_key_id[4:].isalnum()
        and account.access_key_id[4:].upper() == (account.access_key_id[4:])
    )
    assert len(account.secret_access_key) == 40
    assert account.secret_access_key not in repr(account)
    assert store.accounts() == [account]
    with pytest.raises(AccountExists):
        create_account(store, "team-a")
    with pytest.raises(InvalidAccountName):
        create_account(store, "no spaces")


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[SqliteAccountStore]:
    store = SqliteAccountStore(tmp_path / "lambdad.sqlite3")
    yield store
    store.close()


def test_sqlite_store_round_trips_and_keeps_the_file_private(
    tmp_path: Path, sqlite_store: SqliteAccountStore
) -> None:
    account = StoredAccount("123456789012", "a", "AKIAAAAAAAAAAAAAAAAA", "s" * 40, 1.0)
    sqlite_store.add(account)
    assert sqlite_store.by_access_key("AKIAAAAAAAAAAAAAAAAA") == account
    assert sqlite_store.by_access_key("AKIABBBBBBBBBBBBBBBB") is None
    assert sqlite_store.accounts() == [account]
    with pytest.raises(AccountExists):
        sqlite_store.add(account)
    mode = stat.S_IMODE(os.stat(tmp_path / "lambdad.sqlite3").st_mode)
    assert mode == 0o600


# -- error bodies as botocore reads them ---------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        MissingAuthenticationTokenException("Missing Authentication Token"),
        IncompleteSignatureException("Authorization header requires 'Signature' parameter."),
        UnrecognizedClientException("The security token included in the request is invalid."),
        InvalidSignatureException("Signature expired: …"),
    ],
)
def test_errors_parse_in_botocore_for_both_protocols(error: LambdaError) -> None:
    rest = LambdaProtocol().serialize_error(error)
    parsed = RestJSONParser().parse(
        {"status_code": rest.status, "headers": HTTPHeaderDict(rest.headers), "body": rest.body},
        None,
    )
    assert parsed["Error"] == {"Code": error.code, "Message": error.message}
    assert rest.status == 403 and orjson.loads(rest.body) == {"message": error.message}
    json_1_1 = _json_1_1_error(error)
    parsed = JSONParser().parse(
        {
            "status_code": json_1_1.status,
            "headers": HTTPHeaderDict(json_1_1.headers),
            "body": json_1_1.body,
        },
        None,
    )
    assert parsed["Error"] == {"Code": error.code, "Message": error.message}
    assert orjson.loads(json_1_1.body) == {"__type": error.code, "message": error.message}
