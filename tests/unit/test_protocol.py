"""Tests for the rest-json protocol layer (routing, parsing, serializing)."""

from __future__ import annotations

import base64
import datetime as dt
import re
import uuid
from typing import Any

import orjson
import pytest
from botocore.awsrequest import HeadersDict
from botocore.model import ServiceModel
from botocore.parsers import create_parser
from botocore.serialize import create_serializer
from botocore.utils import percent_encode

from lambdad.api.protocol import (
    LambdaProtocol,
    Response,
    _build_route,
    _CodecCompiler,
    _OpPlan,
    service_model,
)
from lambdad.errors import (
    InvalidParameterValueException,
    InvalidRequestContentException,
    LambdaError,
    ResourceNotFoundException,
    TooManyRequestsException,
    UnknownOperationException,
    ValidationException,
)

FUNCTION_ARN = "arn:aws:lambda:us-east-1:123456789012:function:my-function"
ROLE = "arn:aws:iam::123456789012:role/lambda-role"
DURABLE_ARN = f"{FUNCTION_ARN}:$LATEST/durable-execution/exec/1"


@pytest.fixture(scope="module")
def proto() -> LambdaProtocol:
    return LambdaProtocol()


# ------------------------------------------------------------------------------ routing

LABEL_SAMPLES: dict[str, list[str]] = {
    "FunctionName": [
        "my-function",
        FUNCTION_ARN,
        "my-function:$LATEST",
        f"{FUNCTION_ARN}:$LATEST",
        "123456789012:function:my-function:prod",
    ],
    "Name": ["live"],
    "LayerName": ["my-layer", "arn:aws:lambda:us-east-1:123456789012:layer:my-layer"],
    "VersionNumber": ["3"],
    "StatementId": ["sid-1"],
    "UUID": ["a1b2c3d4-5678-90ab-cdef-11111EXAMPLE"],
    "Resource": [FUNCTION_ARN],
    "CodeSigningConfigArn": ["arn:aws:lambda:us-east-1:123456789012:code-signing-config:csc-1"],
    "DurableExecutionArn": [DURABLE_ARN],
    "CallbackId": ["cb+/=id"],
    "CapacityProviderName": ["my-provider"],
}


def _route_cases() -> list[tuple[str, str, str, dict[str, list[str]], dict[str, str]]]:
    model = service_model()
    cases = []
    for name in model.operation_names:
        http = model.operation_model(name).http
        path, _, query_text = http["requestUri"].partition("?")
        query = {k: [v] for k, _, v in (p.partition("=") for p in query_text.split("&") if p)}
        labels = re.findall(r"\{([^}+]+)\+?\}", path)
        variants = max((len(LABEL_SAMPLES[label]) for label in labels), default=1)
        for i in range(variants):
            values = {
                label: LABEL_SAMPLES[label][i % len(LABEL_SAMPLES[label])] for label in labels
            }
            raw = path
            for label, value in values.items():
                raw = raw.replace("{" + label + "}", percent_encode(value))
            cases.append((name, http["method"], raw, query, values))
    return cases


ROUTE_CASES = _route_cases()


def test_every_operation_has_route_cases() -> None:
    assert len({case[0] for case in ROUTE_CASES}) == len(service_model().operation_names) >= 85


@pytest.mark.parametrize(
    ("operation", "method", "raw_path", "query", "labels"),
    ROUTE_CASES,
    ids=[f"{c[0]}-{i}" for i, c in enumerate(ROUTE_CASES)],
)
def test_match_every_operation(
    proto: LambdaProtocol,
    operation: str,
    method: str,
    raw_path: str,
    query: dict[str, list[str]],
    labels: dict[str, str],
) -> None:
    assert proto.match(method, raw_path, query) == (operation, labels)


def test_match_decodes_after_split(proto: LambdaProtocol) -> None:
    # %2F inside a label must not split the path.
    op, labels = proto.match("GET", "/2017-03-31/tags/a%2Fb%3Ac", {})
    assert (op, labels) == ("ListTags", {"Resource": "a/b:c"})
    # An unencoded '$' (some clients leave it) works as well.
    op, labels = proto.match("POST", "/2015-03-31/functions/f:$LATEST/invocations", {})
    assert (op, labels) == ("Invoke", {"FunctionName": "f:$LATEST"})
    # '+' in a path is a literal plus, not a space.
    assert proto.match("GET", "/2015-03-31/functions/a+b", {})[1] == {"FunctionName": "a+b"}


def test_query_discriminated_routes(proto: LambdaProtocol) -> None:
    arn = {"Arn": ["arn:aws:lambda:us-east-1:123456789012:layer:l:1"]}
    assert proto.match("GET", "/2018-10-31/layers", {"find": ["LayerVersion"], **arn})[0] == (
        "GetLayerVersionByArn"
    )
    assert proto.match("GET", "/2018-10-31/layers", {})[0] == "ListLayers"
    assert proto.match("GET", "/2018-10-31/layers", {"find": ["Other"]})[0] == "ListLayers"
    path = "/2019-09-30/functions/f/provisioned-concurrency"
    assert proto.match("GET", path, {"List": ["ALL"]}) == (
        "ListProvisionedConcurrencyConfigs",
        {"FunctionName": "f"},
    )
    assert proto.match("GET", path, {"Qualifier": ["live"]})[0] == "GetProvisionedConcurrencyConfig"
    assert proto.match("PUT", path, {"List": ["ALL"]})[0] == "PutProvisionedConcurrencyConfig"


def test_match_trailing_slash_and_method_case(proto: LambdaProtocol) -> None:
    assert proto.match("get", "/2015-03-31/functions/", {}) == ("ListFunctions", {})
    assert proto.match("POST", "/2015-03-31/functions/f/invocations/", {})[0] == "Invoke"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/"),
        ("GET", "/2015-03-31"),
        ("GET", "/2015-03-31/nothing"),
        ("PATCH", "/2015-03-31/functions/f"),
        ("POST", "/2015-03-31/functions/f/bogus"),
        ("POST", "/2015-03-31/functions//invocations"),
        ("GET", "/2015-03-31/functions/f/aliases/a/extra"),
        ("GET", "/2099-01-01/functions"),
    ],
)
def test_unknown_route(proto: LambdaProtocol, method: str, path: str) -> None:
    with pytest.raises(UnknownOperationException) as info:
        proto.match(method, path, {})
    assert info.value.status == 404
    assert path in info.value.message


def test_greedy_label_routes(proto: LambdaProtocol) -> None:
    route = _build_route("GetObject", "/{Bucket}/objects/{Key+}")
    assert route.regex is not None
    proto._slow.setdefault("GET", []).append(route)
    try:
        assert proto.match("GET", "/b%3A1/objects/a/b%20c/d", {}) == (
            "GetObject",
            {"Bucket": "b:1", "Key": "a/b c/d"},
        )
        with pytest.raises(UnknownOperationException):
            proto.match("GET", "/b/objects/", {})
    finally:
        proto._slow["GET"].remove(route)


# -------------------------------------------------------------------------------- parse


def test_parse_create_function(proto: LambdaProtocol) -> None:
    zip_bytes = b"PK\x03\x04 fake zip \xff\x00"
    body = orjson.dumps(
        {
            "FunctionName": "my-function",
            "Runtime": "python3.12",
            "Role": ROLE,
            "Handler": "app.handler",
            "Code": {"ZipFile": base64.b64encode(zip_bytes).decode()},
            "MemorySize": 256,
            "Timeout": 30,
            "Publish": True,
            "Environment": {"Variables": {"STAGE": "prod", "LOG_LEVEL": "debug"}},
            "Architectures": ["arm64"],
            "Tags": {"team": "core"},
            "SnapStart": {"ApplyOn": "None"},
            "Description": None,  # null members are ignored
            "SomethingAwsDoesNotKnow": {"x": 1},  # unknown members are ignored
        }
    )
    op, labels = proto.match("POST", "/2015-03-31/functions", {})
    params = proto.parse(op, labels, {}, {"content-type": "application/json"}, body)
    assert params == {
        "FunctionName": "my-function",
        "Runtime": "python3.12",
        "Role": ROLE,
        "Handler": "app.handler",
        "Code": {"ZipFile": zip_bytes},
        "MemorySize": 256,
        "Timeout": 30,
        "Publish": True,
        "Environment": {"Variables": {"STAGE": "prod", "LOG_LEVEL": "debug"}},
        "Architectures": ["arm64"],
        "Tags": {"team": "core"},
        "SnapStart": {"ApplyOn": "None"},
    }


def test_parse_coerces_scalars_like_jackson(proto: LambdaProtocol) -> None:
    body = b'{"FunctionName": "f", "MemorySize": "512", "Timeout": 3.0, "Publish": "true"}'
    params = proto.parse("UpdateFunctionConfiguration", {"FunctionName": "f"}, {}, {}, body)
    assert params == {"FunctionName": "f", "MemorySize": 512, "Timeout": 3}
    params = proto.parse("PublishVersion", {"FunctionName": "f"}, {}, {}, b'{"Description": 5}')
    assert params == {"FunctionName": "f", "Description": "5"}


def test_parse_invoke(proto: LambdaProtocol) -> None:
    payload = b'{"hello": "world"}'
    context = base64.b64encode(b'{"custom": {"a": 1}}').decode()
    op, labels = proto.match(
        "POST", "/2015-03-31/functions/" + percent_encode(FUNCTION_ARN) + "/invocations", {}
    )
    params = proto.parse(
        op,
        labels,
        {"Qualifier": ["live"]},
        {
            "x-amz-invocation-type": "RequestResponse",
            "x-amz-log-type": "Tail",
            "x-amz-client-context": context,
            "content-type": "application/octet-stream",
            "x-amz-date": "20240101T000000Z",
        },
        payload,
    )
    assert params == {
        "FunctionName": FUNCTION_ARN,
        "Qualifier": "live",
        "InvocationType": "RequestResponse",
        "LogType": "Tail",
        "ClientContext": context,
        "Payload": payload,
    }


def test_parse_invoke_raw_payload_is_not_json(proto: LambdaProtocol) -> None:
    params = proto.parse("Invoke", {"FunctionName": "f"}, {}, {}, b"\x00\x01 not json {")
    assert params == {"FunctionName": "f", "Payload": b"\x00\x01 not json {"}
    # No body: no Payload member at all.
    assert proto.parse("Invoke", {"FunctionName": "f"}, {}, {}, b"") == {"FunctionName": "f"}


def test_parse_invoke_async(proto: LambdaProtocol) -> None:
    params = proto.parse("InvokeAsync", {"FunctionName": "f"}, {}, {}, b'{"k": 1}')
    assert params == {"FunctionName": "f", "InvokeArgs": b'{"k": 1}'}


def test_parse_invoke_bad_invocation_type(proto: LambdaProtocol) -> None:
    with pytest.raises(ValidationException) as info:
        proto.parse("Invoke", {"FunctionName": "f"}, {}, {"x-amz-invocation-type": "Now"}, b"")
    assert info.value.message == (
        "1 validation error detected: Value 'Now' at 'invocationType' failed to satisfy "
        "constraint: Member must satisfy enum value set: [Event, RequestResponse, DryRun]"
    )


def test_parse_list_functions_querystring(proto: LambdaProtocol) -> None:
    query = {"MaxItems": ["25"], "Marker": ["abc=="], "FunctionVersion": ["ALL"]}
    op, labels = proto.match("GET", "/2015-03-31/functions", query)
    assert proto.parse(op, labels, query, {}, b"") == {
        "MaxItems": 25,
        "Marker": "abc==",
        "FunctionVersion": "ALL",
    }
    assert proto.parse(op, labels, {}, {}, b"") == {}


def test_parse_query_int_and_bool_conversion(proto: LambdaProtocol) -> None:
    query = {"IncludeExecutionData": ["true"], "ReverseOrder": ["FALSE"], "MaxItems": ["5"]}
    labels = {"DurableExecutionArn": DURABLE_ARN}
    params = proto.parse("GetDurableExecutionHistory", labels, query, {}, b"")
    assert params == {
        "DurableExecutionArn": DURABLE_ARN,
        "IncludeExecutionData": True,
        "ReverseOrder": False,
        "MaxItems": 5,
    }


def test_parse_query_timestamp_and_list(proto: LambdaProtocol) -> None:
    query = {
        "StartedAfter": ["2024-05-06T07:08:09Z"],
        "Statuses": ["RUNNING", "SUCCEEDED"],
    }
    params = proto.parse("ListDurableExecutionsByFunction", {"FunctionName": "f"}, query, {}, b"")
    assert params["StartedAfter"] == dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.UTC)
    assert params["Statuses"] == ["RUNNING", "SUCCEEDED"]


@pytest.mark.parametrize(
    ("operation", "labels", "query"),
    [
        ("ListFunctions", {}, {"MaxItems": ["many"]}),
        ("GetLayerVersion", {"LayerName": "l", "VersionNumber": "three"}, {}),
        ("GetDurableExecutionHistory", {"DurableExecutionArn": "x"}, {"ReverseOrder": ["yes"]}),
    ],
)
def test_parse_bad_scalar_text(
    proto: LambdaProtocol, operation: str, labels: dict[str, str], query: dict[str, list[str]]
) -> None:
    with pytest.raises(InvalidParameterValueException):
        proto.parse(operation, labels, query, {}, b"")


def test_parse_uri_long_label(proto: LambdaProtocol) -> None:
    op, labels = proto.match("GET", "/2018-10-31/layers/my-layer/versions/7", {})
    assert proto.parse(op, labels, {}, {}, b"") == {"LayerName": "my-layer", "VersionNumber": 7}


def test_parse_tag_and_untag(proto: LambdaProtocol) -> None:
    path = "/2017-03-31/tags/" + percent_encode(FUNCTION_ARN)
    op, labels = proto.match("POST", path, {})
    params = proto.parse(op, labels, {}, {}, b'{"Tags": {"a": "1", "b": ""}}')
    assert (op, params) == ("TagResource", {"Resource": FUNCTION_ARN, "Tags": {"a": "1", "b": ""}})

    query = {"tagKeys": ["a", "b"]}
    op, labels = proto.match("DELETE", path, query)
    assert (op, proto.parse(op, labels, query, {}, b"")) == (
        "UntagResource",
        {"Resource": FUNCTION_ARN, "TagKeys": ["a", "b"]},
    )
    with pytest.raises(ValidationException) as info:
        proto.parse(op, labels, {}, {}, b"")
    assert info.value.message == (
        "1 validation error detected: Value null at 'tagKeys' failed to satisfy constraint: "
        "Member must not be null"
    )


def test_parse_structure_payload(proto: LambdaProtocol) -> None:
    body = b'{"ErrorMessage": "boom", "ErrorType": "Oops"}'
    params = proto.parse("SendDurableExecutionCallbackFailure", {"CallbackId": "cb"}, {}, {}, body)
    assert params == {"CallbackId": "cb", "Error": {"ErrorMessage": "boom", "ErrorType": "Oops"}}


@pytest.mark.parametrize(
    "body",
    [b"{not json", b'{"FunctionName": "f",}', b"\xff\xfe", b'{"a": 1} trailing'],
)
def test_parse_malformed_json(proto: LambdaProtocol, body: bytes) -> None:
    with pytest.raises(InvalidRequestContentException) as info:
        proto.parse("CreateFunction", {}, {}, {}, body)
    assert info.value.status == 400
    assert info.value.message.startswith("Could not parse request body into json: ")


@pytest.mark.parametrize(
    "body",
    [
        b"[1, 2]",
        b'"text"',
        b'{"FunctionName": "f", "Role": "r", "Code": {"ZipFile": "***not base64***"}}',
        b'{"FunctionName": "f", "Role": "r", "Code": []}',
        b'{"FunctionName": "f", "Role": "r", "Code": {}, "MemorySize": "lots"}',
        b'{"FunctionName": "f", "Role": "r", "Code": {}, "Architectures": "arm64"}',
        b'{"FunctionName": "f", "Role": "r", "Code": {}, "Tags": ["a"]}',
        b'{"FunctionName": "f", "Role": "r", "Code": {}, "Publish": 3}',
    ],
)
def test_parse_wrong_json_types(proto: LambdaProtocol, body: bytes) -> None:
    with pytest.raises(InvalidRequestContentException) as info:
        proto.parse("CreateFunction", {}, {}, {}, body)
    assert info.value.message.startswith("Could not parse request body into json: ")


def test_parse_empty_body_still_validates(proto: LambdaProtocol) -> None:
    with pytest.raises(ValidationException) as info:
        proto.parse("CreateFunction", {}, {}, {}, b"")
    assert info.value.message == (
        "3 validation errors detected: "
        "Value null at 'functionName' failed to satisfy constraint: Member must not be null; "
        "Value null at 'role' failed to satisfy constraint: Member must not be null; "
        "Value null at 'code' failed to satisfy constraint: Member must not be null"
    )


def test_parse_unknown_operation(proto: LambdaProtocol) -> None:
    with pytest.raises(UnknownOperationException):
        proto.parse("Nope", {}, {}, {}, b"")


# ---------------------------------------------------------------------------- serialize


def _header(response: Response, name: str) -> str | None:
    values = [v for k, v in response.headers if k.lower() == name.lower()]
    assert len(values) <= 1
    return values[0] if values else None


def _assert_request_id(response: Response) -> None:
    request_id = _header(response, "x-amzn-RequestId")
    assert request_id is not None
    uuid.UUID(request_id)


def test_serialize_invoke(proto: LambdaProtocol) -> None:
    response = proto.serialize(
        "Invoke",
        {
            "StatusCode": 200,
            "FunctionError": "Unhandled",
            "LogResult": "bG9ncw==",
            "ExecutedVersion": "$LATEST",
            "Payload": b'{"errorMessage": "boom"}',
        },
    )
    assert response.status == 200
    assert response.body == b'{"errorMessage": "boom"}'
    assert _header(response, "X-Amz-Function-Error") == "Unhandled"
    assert _header(response, "X-Amz-Log-Result") == "bG9ncw=="
    assert _header(response, "X-Amz-Executed-Version") == "$LATEST"
    assert _header(response, "Content-Type") == "application/json"
    _assert_request_id(response)


def test_serialize_invoke_event_status(proto: LambdaProtocol) -> None:
    response = proto.serialize("Invoke", {"StatusCode": 202, "Payload": b""})
    assert (response.status, response.body) == (202, b"")
    assert _header(response, "X-Amz-Function-Error") is None


def test_serialize_default_statuses(proto: LambdaProtocol) -> None:
    deleted = proto.serialize("DeleteFunction", {})
    assert (deleted.status, deleted.body) == (204, b"")
    _assert_request_id(deleted)
    assert proto.serialize("DeleteAlias", {}).status == 204
    assert proto.serialize("InvokeAsync", {}).status == 202
    created = proto.serialize("CreateFunction", {"FunctionName": "f", "MemorySize": 128})
    assert created.status == 201
    assert orjson.loads(created.body) == {"FunctionName": "f", "MemorySize": 128}
    assert proto.serialize("GetFunction", {}).body == b"{}"


def test_serialize_json_drops_none_and_unknown(proto: LambdaProtocol) -> None:
    response = proto.serialize(
        "GetFunction",
        {
            "Configuration": {
                "FunctionName": "f",
                "Runtime": None,
                "Layers": [{"Arn": "arn:x", "CodeSize": 5}],
                "Environment": {"Variables": {"A": "1"}},
                "internal_only": "secret",
            },
            "Tags": {"team": "core"},
            "NotAMember": 1,
        },
    )
    assert orjson.loads(response.body) == {
        "Configuration": {
            "FunctionName": "f",
            "Layers": [{"Arn": "arn:x", "CodeSize": 5}],
            "Environment": {"Variables": {"A": "1"}},
        },
        "Tags": {"team": "core"},
    }


def test_serialize_timestamps(proto: LambdaProtocol) -> None:
    when = dt.datetime(2024, 1, 2, 3, 4, 5, 500000, tzinfo=dt.UTC)
    response = proto.serialize("GetEventSourceMapping", {"UUID": "u", "LastModified": when})
    assert orjson.loads(response.body) == {"UUID": "u", "LastModified": when.timestamp()}
    # Already-rendered values pass through untouched.
    response = proto.serialize("GetEventSourceMapping", {"LastModified": 1700000000})
    assert orjson.loads(response.body) == {"LastModified": 1700000000}


def test_serialize_request_id_is_fresh_or_given(proto: LambdaProtocol) -> None:
    first = _header(proto.serialize("GetAccountSettings", {}), "x-amzn-RequestId")
    second = _header(proto.serialize("GetAccountSettings", {}), "x-amzn-RequestId")
    assert first != second
    given = proto.serialize("GetAccountSettings", {}, request_id="rid-1")
    assert _header(given, "x-amzn-RequestId") == "rid-1"


def test_serialize_error(proto: LambdaProtocol) -> None:
    response = proto.serialize_error(ValidationException("1 validation error detected: x"))
    assert response.status == 400
    assert orjson.loads(response.body) == {"message": "1 validation error detected: x"}
    assert _header(response, "x-amzn-ErrorType") == "ValidationException"
    assert _header(response, "Content-Type") == "application/json"
    _assert_request_id(response)

    response = proto.serialize_error(ResourceNotFoundException("Function not found: f"))
    assert response.status == 404
    assert orjson.loads(response.body) == {"Type": "User", "Message": "Function not found: f"}

    response = proto.serialize_error(TooManyRequestsException("Rate exceeded", "CallerRateLimit"))
    assert response.status == 429
    assert _header(response, "Retry-After") == "1"
    given = proto.serialize_error(UnknownOperationException("x"), request_id="rid-2")
    assert _header(given, "x-amzn-RequestId") == "rid-2"


# ---------------------------------------------------------- round trips through botocore


def _botocore_request(operation: str, params: dict[str, Any]) -> tuple[str, str, Any, Any, bytes]:
    op_model = service_model().operation_model(operation)
    request = create_serializer("rest-json").serialize_to_request(params, op_model)
    path, _, inline_query = request["url_path"].partition("?")
    query: dict[str, list[str]] = {}
    for key, value in request["query_string"].items():
        query[key] = [str(v) for v in value] if isinstance(value, list) else [str(value)]
    for pair in filter(None, inline_query.split("&")):
        key, _, value = pair.partition("=")
        query.setdefault(key, []).append(value)
    headers = {k.lower(): str(v) for k, v in request["headers"].items()}
    body = request["body"]
    if isinstance(body, str):
        body = body.encode()
    return request["method"], path, query, headers, body


ROUND_TRIPS: list[tuple[str, dict[str, Any]]] = [
    (
        "CreateFunction",
        {
            "FunctionName": "my-function",
            "Runtime": "nodejs20.x",
            "Role": ROLE,
            "Handler": "index.handler",
            "Code": {"ZipFile": b"PK\x03\x04\x00\xff binary"},
            "Environment": {"Variables": {"KEY_1": "v"}},
            "Architectures": ["x86_64"],
            "Tags": {"a": "b"},
            "Timeout": 10,
            "Layers": ["arn:aws:lambda:us-east-1:123456789012:layer:l:1"],
        },
    ),
    (
        "Invoke",
        {
            "FunctionName": f"{FUNCTION_ARN}:$LATEST",
            "InvocationType": "Event",
            "LogType": "None",
            "ClientContext": "eyJ4IjogMX0=",
            "Payload": b'{"x": 1}',
        },
    ),
    ("Invoke", {"FunctionName": "my-function", "Qualifier": "live"}),
    ("ListFunctions", {"MaxItems": 10, "Marker": "next+token/=", "FunctionVersion": "ALL"}),
    ("UntagResource", {"Resource": FUNCTION_ARN, "TagKeys": ["a", "b c"]}),
    ("TagResource", {"Resource": FUNCTION_ARN, "Tags": {"k": "v"}}),
    ("GetLayerVersionByArn", {"Arn": "arn:aws:lambda:us-east-1:123456789012:layer:l:3"}),
    ("GetLayerVersion", {"LayerName": "l", "VersionNumber": 3}),
    ("ListProvisionedConcurrencyConfigs", {"FunctionName": "f", "MaxItems": 5}),
    (
        "PutProvisionedConcurrencyConfig",
        {"FunctionName": "f", "Qualifier": "live", "ProvisionedConcurrentExecutions": 2},
    ),
    (
        "UpdateAlias",
        {
            "FunctionName": "f",
            "Name": "live",
            "FunctionVersion": "2",
            "RoutingConfig": {"AdditionalVersionWeights": {"3": 0.25}},
        },
    ),
    (
        "PublishLayerVersion",
        {"LayerName": "l", "Content": {"ZipFile": b"zip"}, "CompatibleRuntimes": ["python3.12"]},
    ),
    ("DeleteFunction", {"FunctionName": "f", "Qualifier": "1"}),
    ("GetAccountSettings", {}),
]


@pytest.mark.parametrize(("operation", "params"), ROUND_TRIPS, ids=[o for o, _ in ROUND_TRIPS])
def test_botocore_request_round_trip(
    proto: LambdaProtocol, operation: str, params: dict[str, Any]
) -> None:
    method, path, query, headers, body = _botocore_request(operation, params)
    op, labels = proto.match(method, path, query)
    assert op == operation
    assert proto.parse(op, labels, query, headers, body) == params


def _botocore_parse(operation: str, response: Response) -> dict[str, Any]:
    op_model = service_model().operation_model(operation)
    parsed: dict[str, Any] = create_parser("rest-json").parse(
        {
            "status_code": response.status,
            "headers": HeadersDict(response.headers),
            "body": response.body,
        },
        op_model.output_shape,
    )
    parsed.pop("ResponseMetadata")
    return parsed


def test_botocore_parses_invoke_response(proto: LambdaProtocol) -> None:
    output = {
        "StatusCode": 200,
        "FunctionError": "Handled",
        "LogResult": "bG9n",
        "ExecutedVersion": "7",
        "Payload": b'{"ok": true}',
    }
    parsed = _botocore_parse("Invoke", proto.serialize("Invoke", output))
    # Without a streaming body, botocore hands a non-streaming blob payload back as text.
    if isinstance(parsed["Payload"], str):
        parsed["Payload"] = parsed["Payload"].encode()
    assert parsed == output


def test_botocore_parses_json_responses(proto: LambdaProtocol) -> None:
    config = {
        "FunctionName": "f",
        "FunctionArn": FUNCTION_ARN,
        "Runtime": "python3.12",
        "MemorySize": 128,
        "Architectures": ["arm64"],
        "Environment": {"Variables": {"A": "1"}},
        "LastModified": "2024-01-01T00:00:00.000+0000",
        "SnapStart": {"ApplyOn": "None", "OptimizationStatus": "Off"},
    }
    assert _botocore_parse("CreateFunction", proto.serialize("CreateFunction", config)) == config
    listing = {"Functions": [config, {"FunctionName": "g"}], "NextMarker": "m"}
    assert _botocore_parse("ListFunctions", proto.serialize("ListFunctions", listing)) == listing
    when = dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    esm = {"UUID": "u", "LastModified": when, "BatchSize": 10}
    parsed = _botocore_parse("GetEventSourceMapping", proto.serialize("GetEventSourceMapping", esm))
    assert parsed["LastModified"] == when
    assert parsed["BatchSize"] == 10
    assert _botocore_parse("DeleteFunction", proto.serialize("DeleteFunction", {})) == {
        "StatusCode": 204
    }
    assert _botocore_parse("InvokeAsync", proto.serialize("InvokeAsync", {})) == {"Status": 202}


@pytest.mark.parametrize(
    "error",
    [
        ValidationException("1 validation error detected: x"),
        ResourceNotFoundException("Function not found: arn:aws:lambda:f"),
        InvalidRequestContentException("Could not parse request body into json: x"),
        TooManyRequestsException("Rate exceeded", "ReservedFunctionConcurrentInvocationLimit"),
        UnknownOperationException("Unknown operation: GET /x"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_botocore_parses_errors(proto: LambdaProtocol, error: LambdaError) -> None:
    response = proto.serialize_error(error)
    parsed = create_parser("rest-json").parse(
        {
            "status_code": response.status,
            "headers": HeadersDict(response.headers),
            "body": response.body,
        },
        None,
    )
    assert parsed["Error"]["Code"] == error.code
    assert parsed["Error"]["Message"] == error.message
    assert parsed["ResponseMetadata"]["HTTPStatusCode"] == error.status


# ------------------------------------------------ protocol features Lambda does not use yet

SYNTHETIC_MODEL = {
    "metadata": {"protocol": "rest-json", "apiVersion": "2020-01-01", "endpointPrefix": "x"},
    "operations": {
        "Synthetic": {
            "name": "Synthetic",
            "http": {"method": "POST", "requestUri": "/v1/things/{Id}", "responseCode": 200},
            "input": {"shape": "SyntheticInput"},
            "output": {"shape": "SyntheticOutput"},
        }
    },
    "shapes": {
        "SyntheticInput": {
            "type": "structure",
            "required": ["Id"],
            "members": {
                "Id": {"shape": "Str", "location": "uri", "locationName": "Id"},
                "Count": {"shape": "Int", "location": "header", "locationName": "X-Count"},
                "Flag": {"shape": "Bool", "location": "header", "locationName": "X-Flag"},
                "Doc": {"shape": "JsonStr", "location": "header", "locationName": "X-Doc"},
                "Since": {"shape": "Time", "location": "header", "locationName": "X-Since"},
                "Meta": {"shape": "StrMap", "location": "headers", "locationName": "x-meta-"},
                "Extra": {"shape": "StrMap", "location": "querystring"},
                "When": {"shape": "Time"},
                "Data": {"shape": "Bytes"},
                "Renamed": {"shape": "Str", "locationName": "renamed_on_wire"},
            },
        },
        "SyntheticOutput": {
            "type": "structure",
            "members": {
                "Since": {"shape": "Time", "location": "header", "locationName": "X-Since"},
                "Meta": {"shape": "StrMap", "location": "headers", "locationName": "x-meta-"},
                "Flag": {"shape": "Bool", "location": "header", "locationName": "X-Flag"},
                "Data": {"shape": "Bytes"},
                "Items": {"shape": "BytesList"},
            },
        },
        "Str": {"type": "string"},
        "Int": {"type": "integer"},
        "Bool": {"type": "boolean"},
        "JsonStr": {"type": "string", "jsonvalue": True},
        "Time": {"type": "timestamp"},
        "Bytes": {"type": "blob"},
        "BytesList": {"type": "list", "member": {"shape": "Bytes"}},
        "StrMap": {"type": "map", "key": {"shape": "Str"}, "value": {"shape": "Str"}},
    },
}


def test_synthetic_locations_round_trip(proto: LambdaProtocol) -> None:
    op_model = ServiceModel(SYNTHETIC_MODEL, "synthetic").operation_model("Synthetic")
    proto._plans["Synthetic"] = _OpPlan(op_model, _CodecCompiler())
    try:
        when = dt.datetime(2024, 2, 3, 4, 5, 6, tzinfo=dt.UTC)
        params = {
            "Id": "a b",
            "Count": 3,
            "Flag": True,
            "Doc": {"k": [1, 2]},
            "Since": when,
            "Meta": {"color": "red"},
            "Extra": {"page": "2"},
            "When": when,
            "Data": b"\x00\x01",
            "Renamed": "r",
        }
        request = create_serializer("rest-json").serialize_to_request(params, op_model)
        headers = {k.lower(): str(v) for k, v in request["headers"].items()}
        query = {k: [v] for k, v in request["query_string"].items()}
        assert b"renamed_on_wire" in request["body"]
        parsed = proto.parse("Synthetic", {"Id": "a b"}, query, headers, request["body"])
        assert parsed == params

        output = {
            "Since": when,
            "Meta": {"m": "1"},
            "Flag": False,
            "Data": b"\xff",
            "Items": [b"a"],
        }
        response = proto.serialize("Synthetic", output)
        assert _header(response, "X-Since") == "Sat, 03 Feb 2024 04:05:06 GMT"
        assert _header(response, "x-meta-m") == "1"
        assert _header(response, "X-Flag") == "false"
        assert orjson.loads(response.body) == {"Data": "/w==", "Items": ["YQ=="]}
        back = create_parser("rest-json").parse(
            {
                "status_code": response.status,
                "headers": HeadersDict(response.headers),
                "body": response.body,
            },
            op_model.output_shape,
        )
        back.pop("ResponseMetadata")
        assert back == output
    finally:
        del proto._plans["Synthetic"]
