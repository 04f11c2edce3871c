"""The AWS ``rest-json`` protocol for the Lambda API, driven by botocore's service model.

``LambdaProtocol`` turns HTTP requests into operation inputs and operation outputs
into HTTP responses, exactly as AWS's Lambda front end does:

* ``match``: method + raw path (+ query, for query-discriminated routes such as
  ``GET /2018-10-31/layers?find=LayerVersion``) -> operation name and URI labels;
* ``parse``: labels, query string, headers and body -> the operation's input dict
  (keyed by model member names, as boto3 takes them), then model validation
  (``lambdad.api.validation``);
* ``serialize`` / ``serialize_error``: output dict / ``LambdaError`` -> ``Response``.

Everything (routes, member locations, JSON codecs, validators) is compiled from the
model once, in ``__init__``; the per-request work is dictionary lookups.

Value conventions of parsed inputs: blobs are ``bytes``; timestamps are timezone-aware
``datetime`` objects; integers/longs are ``int``, doubles ``float``, booleans ``bool``.
A blob payload (Invoke's ``Payload``) is present only when the body is non-empty.
Outputs accept ``bytes``/``bytearray``/``memoryview`` for blobs and ``datetime`` (or an
already formatted value) for timestamps; ``None`` members and members the model does
not know are dropped.
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import functools
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import format_datetime
from typing import Any
from urllib.parse import unquote

import orjson
from botocore.loaders import Loader
from botocore.model import ServiceModel
from botocore.utils import parse_timestamp

from lambdad.api.http_server import HttpResponse
from lambdad.api.validation import InputValidator
from lambdad.errors import (
    InvalidParameterValueException,
    InvalidRequestContentException,
    LambdaError,
    UnknownOperationException,
)

__all__ = ["LambdaProtocol", "Response", "service_model"]

JSON_CONTENT_TYPE = "application/json"

# Where real AWS answers with another status than the model's ``http.responseCode``.
STATUS_OVERRIDES: dict[str, int] = {
    # The model says 200, but Lambda answers DeleteFunction with 204 No Content.
    "DeleteFunction": 204,
}

_JSON_PREFIX = "Could not parse request body into json: Could not parse payload into json: "


# What the protocol renders is what the HTTP server writes.
Response = HttpResponse


@functools.cache
def service_model() -> Any:
    """botocore's Lambda model, loaded once per process."""
    data = Loader().load_service_model("lambda", "service-2")
    return ServiceModel(data, service_name="lambda")


# --------------------------------------------------------------------------- helpers


def _bad_content(detail: str) -> InvalidRequestContentException:
    return InvalidRequestContentException(_JSON_PREFIX + detail)


def _to_datetime(value: Any) -> _dt.datetime:
    if isinstance(value, _dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=_dt.UTC)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _dt.datetime.fromtimestamp(value, _dt.UTC)
    parsed: _dt.datetime = parse_timestamp(value)
    return parsed


def _format_timestamp(value: Any, fmt: str) -> Any:
    """Render a timestamp output value; non-datetime values are taken as already rendered."""
    if not isinstance(value, _dt.datetime):
        return value
    value = _to_datetime(value)
    if fmt == "unixTimestamp":
        seconds = value.timestamp()
        return int(seconds) if seconds.is_integer() else round(seconds, 3)
    if fmt == "rfc822":
        return format_datetime(value.astimezone(_dt.UTC), usegmt=True)
    text = value.astimezone(_dt.UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def _scalar_from_text(shape: Any, wire_name: str) -> Callable[[str], Any]:
    """Converter for a scalar carried as text (URI label, query value, header)."""
    kind = shape.type_name

    def invalid(raw: str, expected: str) -> LambdaError:
        return InvalidParameterValueException(
            f"Invalid value '{raw}' for parameter {wire_name}: expected {expected}"
        )

    if kind in ("integer", "long"):

        def to_int(raw: str) -> int:
            try:
                return int(raw.strip())
            except ValueError:
                raise invalid(raw, "an integer") from None

        return to_int
    if kind in ("double", "float"):

        def to_float(raw: str) -> float:
            try:
                return float(raw)
            except ValueError:
                raise invalid(raw, "a number") from None

        return to_float
    if kind == "boolean":

        def to_bool(raw: str) -> bool:
            lowered = raw.strip().lower()
            if lowered in ("true", "false"):
                return lowered == "true"
            raise invalid(raw, "true or false")

        return to_bool
    if kind == "timestamp":

        def to_ts(raw: str) -> _dt.datetime:
            try:
                return _to_datetime(raw)
            except (ValueError, TypeError, OverflowError):
                raise invalid(raw, "a timestamp") from None

        return to_ts
    if kind == "string" and shape.serialization.get("jsonvalue"):

        def to_json(raw: str) -> Any:
            try:
                return orjson.loads(base64.b64decode(raw))
            except (ValueError, binascii.Error):
                raise invalid(raw, "base64-encoded JSON") from None

        return to_json
    return str


def _scalar_to_text(shape: Any, default_ts_format: str) -> Callable[[Any], str]:
    kind = shape.type_name
    if kind == "boolean":
        return lambda v: "true" if v else "false"
    if kind == "timestamp":
        fmt = shape.serialization.get("timestampFormat", default_ts_format)
        return lambda v: str(_format_timestamp(v, fmt))
    if kind == "string" and shape.serialization.get("jsonvalue"):
        return lambda v: base64.b64encode(orjson.dumps(v)).decode("ascii")
    return str


# ------------------------------------------------------------------------ JSON codecs


class _Codec:
    """Decodes one shape from parsed JSON (coercing like Jackson) and encodes it back."""

    __slots__ = ("kind", "ts_format")

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.ts_format = "unixTimestamp"

    def decode(self, value: Any, path: str) -> Any:
        kind = self.kind
        if kind == "string":
            if isinstance(value, str):
                return value
            if isinstance(value, bool):
                return "true" if value else "false"
            if isinstance(value, int | float):
                return str(value)
        elif kind in ("integer", "long"):
            if isinstance(value, int) and not isinstance(value, bool):
                return value
            if isinstance(value, float) and value.is_integer():
                return int(value)
            if isinstance(value, str):
                try:
                    return int(value.strip())
                except ValueError:
                    pass
        elif kind in ("double", "float"):
            if isinstance(value, int | float) and not isinstance(value, bool):
                return float(value)
            if isinstance(value, str):
                try:
                    return float(value)
                except ValueError:
                    pass
        elif kind == "boolean":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false"):
                return value.lower() == "true"
        elif kind == "blob":
            if isinstance(value, str):
                try:
                    return base64.b64decode(value, validate=True)
                except (binascii.Error, ValueError):
                    raise _bad_content(f"Invalid base64 value for field {path}") from None
        elif kind == "timestamp":
            if not isinstance(value, bool):
                try:
                    return _to_datetime(value)
                except (ValueError, TypeError, OverflowError):
                    pass
        else:  # document
            return value
        raise _bad_content(f"Cannot deserialize {kind} field {path} from {_json_kind(value)}")

    def encode(self, value: Any) -> Any:
        if self.kind == "blob" and isinstance(value, bytes | bytearray | memoryview):
            return base64.b64encode(value).decode("ascii")
        if self.kind == "timestamp":
            return _format_timestamp(value, self.ts_format)
        return value


class _StructCodec(_Codec):
    __slots__ = ("by_member", "by_wire")

    def __init__(self) -> None:
        super().__init__("structure")
        self.by_wire: dict[str, tuple[str, _Codec]] = {}  # JSON key -> (member, codec)
        self.by_member: dict[str, tuple[str, _Codec]] = {}  # member -> (JSON key, codec)

    def decode(self, value: Any, path: str) -> Any:
        if not isinstance(value, dict):
            raise _bad_content(
                f"Cannot deserialize structure {path or 'body'} from {_json_kind(value)}"
            )
        out: dict[str, Any] = {}
        by_wire = self.by_wire
        prefix = f"{path}." if path else ""
        for key, item in value.items():
            entry = by_wire.get(key)
            if entry is None or item is None:  # unknown members are ignored, as AWS does
                continue
            member, codec = entry
            out[member] = codec.decode(item, prefix + key)
        return out

    def encode(self, value: Any) -> Any:
        out: dict[str, Any] = {}
        by_member = self.by_member
        for member, item in value.items():
            entry = by_member.get(member)
            if entry is None or item is None:
                continue
            out[entry[0]] = entry[1].encode(item)
        return out


class _ListCodec(_Codec):
    __slots__ = ("member",)

    def __init__(self) -> None:
        super().__init__("list")
        self.member: _Codec = _Codec("document")

    def decode(self, value: Any, path: str) -> Any:
        if not isinstance(value, list):
            raise _bad_content(f"Cannot deserialize list field {path} from {_json_kind(value)}")
        codec = self.member
        return [None if item is None else codec.decode(item, path) for item in value]

    def encode(self, value: Any) -> Any:
        codec = self.member
        return [codec.encode(item) for item in value if item is not None]


class _MapCodec(_Codec):
    __slots__ = ("value",)

    def __init__(self) -> None:
        super().__init__("map")
        self.value: _Codec = _Codec("document")

    def decode(self, value: Any, path: str) -> Any:
        if not isinstance(value, dict):
            raise _bad_content(f"Cannot deserialize map field {path} from {_json_kind(value)}")
        codec = self.value
        return {k: codec.decode(v, f"{path}.{k}") for k, v in value.items() if v is not None}

    def encode(self, value: Any) -> Any:
        codec = self.value
        return {str(k): codec.encode(v) for k, v in value.items() if v is not None}


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


class _CodecCompiler:
    def __init__(self) -> None:
        self._cache: dict[str, _Codec] = {}

    def codec(self, shape: Any) -> _Codec:
        cached = self._cache.get(shape.name)
        if cached is not None:
            return cached
        kind = shape.type_name
        codec: _Codec
        if kind == "structure":
            struct = _StructCodec()
            self._cache[shape.name] = struct
            self._fill(struct, shape, located_too=True)
            return struct
        if kind == "list":
            lst = _ListCodec()
            self._cache[shape.name] = lst
            lst.member = self.codec(shape.member)
            return lst
        if kind == "map":
            mp = _MapCodec()
            self._cache[shape.name] = mp
            mp.value = self.codec(shape.value)
            return mp
        codec = _Codec(kind)
        codec.ts_format = shape.serialization.get("timestampFormat", "unixTimestamp")
        self._cache[shape.name] = codec
        return codec

    def body_codec(self, shape: Any) -> _StructCodec:
        """Codec for the members of a top-level shape that travel in the JSON body."""
        struct = _StructCodec()
        self._fill(struct, shape, located_too=False)
        return struct

    def _fill(self, struct: _StructCodec, shape: Any, located_too: bool) -> None:
        for name, member in shape.members.items():
            if not located_too and "location" in member.serialization:
                continue
            wire = member.serialization.get("name", name)
            codec = self.codec(member)
            ts_format = member.serialization.get("timestampFormat")
            if member.type_name == "timestamp" and ts_format and ts_format != codec.ts_format:
                codec = _Codec("timestamp")
                codec.ts_format = ts_format
            struct.by_wire[wire] = (name, codec)
            struct.by_member[name] = (wire, codec)


# ---------------------------------------------------------------------------- routing


@dataclass(frozen=True, slots=True)
class _Route:
    operation: str
    template: str
    nparts: int
    literals: tuple[tuple[int, str], ...]  # (index in path.split("/"), text), beyond the key
    labels: tuple[tuple[int, str], ...]  # (index, label name)
    query: tuple[tuple[str, str | None], ...]  # required query pairs (value None: presence)
    regex: re.Pattern[str] | None  # only for routes that cannot be indexed (greedy labels)
    regex_labels: tuple[str, ...]


_LABEL = re.compile(r"^\{([^}]+)\}$")


def _build_route(operation: str, request_uri: str) -> _Route:
    path, _, query_text = request_uri.partition("?")
    query: list[tuple[str, str | None]] = []
    for pair in filter(None, query_text.split("&")):
        key, eq, value = pair.partition("=")
        query.append((unquote(key), unquote(value) if eq else None))
    parts = path.split("/")
    literals: list[tuple[int, str]] = []
    labels: list[tuple[int, str]] = []
    regex_parts: list[str] = []
    regex_labels: list[str] = []
    greedy = False
    for index, part in enumerate(parts):
        found = _LABEL.match(part)
        if found is None:
            literals.append((index, part))
            regex_parts.append(re.escape(part))
            continue
        name = found.group(1)
        if name.endswith("+"):
            greedy = True
            name = name[:-1]
            regex_parts.append("(.+)")
        else:
            regex_parts.append("([^/]+)")
        labels.append((index, name))
        regex_labels.append(name)
    indexable = not greedy and len(parts) >= 3 and all(i >= 3 for i, _ in labels)
    return _Route(
        operation=operation,
        template=request_uri,
        nparts=len(parts),
        literals=tuple((i, t) for i, t in literals if i >= 3),
        labels=tuple(labels),
        query=tuple(query),
        regex=None if indexable else re.compile("/".join(regex_parts) + r"/?\Z"),
        regex_labels=tuple(regex_labels),
    )


def _route_order(route: _Route) -> tuple[int, int]:
    # Query-discriminated routes first, then the most literal segments.
    return (-len(route.query), -len(route.literals))


def _query_matches(route: _Route, query: Mapping[str, list[str]]) -> bool:
    for key, value in route.query:
        values = query.get(key)
        if not values or (value is not None and value not in values):
            return False
    return True


# ------------------------------------------------------------------ per-operation plans


class _OpPlan:
    """Everything ``parse`` and ``serialize`` need for one operation, precomputed."""

    __slots__ = (
        "body_codec",
        "default_status",
        "header_members",
        "name",
        "out_body_codec",
        "out_headers",
        "out_payload",
        "out_payload_codec",
        "out_payload_raw",
        "out_prefix_headers",
        "out_status_member",
        "out_typed",
        "payload",
        "payload_codec",
        "payload_raw",
        "prefix_headers",
        "query_map",
        "query_members",
        "uri_members",
        "validator",
    )

    def __init__(self, op: Any, codecs: _CodecCompiler) -> None:
        self.name: str = op.name
        self.uri_members: list[tuple[str, str, Callable[[str], Any]]] = []
        self.query_members: list[tuple[str, str, Callable[[str], Any], bool]] = []
        self.query_map: str | None = None
        self.header_members: list[tuple[str, str, Callable[[str], Any]]] = []
        self.prefix_headers: list[tuple[str, str]] = []
        self.payload: str | None = None
        self.payload_raw = False
        self.payload_codec: _Codec | None = None
        self.body_codec: _StructCodec | None = None
        shape = op.input_shape
        if shape is not None:
            self._plan_input(shape, codecs)
        self.validator = InputValidator(shape)

        model_status = op.http.get("responseCode", 200)
        self.default_status: int = STATUS_OVERRIDES.get(op.name, model_status)
        self.out_status_member: str | None = None
        self.out_headers: list[tuple[str, str, Callable[[Any], str]]] = []
        self.out_prefix_headers: list[tuple[str, str]] = []
        self.out_payload: str | None = None
        self.out_payload_raw = False
        self.out_payload_codec: _Codec | None = None
        self.out_body_codec: _StructCodec | None = None
        if op.output_shape is not None:
            self._plan_output(op.output_shape, codecs)
        # whether an output member can set the Content-Type header itself
        self.out_typed = bool(self.out_prefix_headers) or any(
            wire.lower() == "content-type" for _, wire, _ in self.out_headers
        )

    def _plan_input(self, shape: Any, codecs: _CodecCompiler) -> None:
        for name, member in shape.members.items():
            location = member.serialization.get("location")
            wire = member.serialization.get("name", name)
            if location == "uri":
                self.uri_members.append((wire, name, _scalar_from_text(member, wire)))
            elif location == "querystring":
                if member.type_name == "map":
                    self.query_map = name
                elif member.type_name == "list":
                    conv = _scalar_from_text(member.member, wire)
                    self.query_members.append((wire, name, conv, True))
                else:
                    self.query_members.append((wire, name, _scalar_from_text(member, wire), False))
            elif location == "header":
                conv = _scalar_from_text(member, wire)
                self.header_members.append((wire.lower(), name, conv))
            elif location == "headers":
                self.prefix_headers.append((wire.lower(), name))
        payload = shape.serialization.get("payload")
        if payload is not None:
            self.payload = payload
            target = shape.members[payload]
            if target.type_name in ("blob", "string"):
                self.payload_raw = True
            else:
                self.payload_codec = codecs.codec(target)
        elif any("location" not in m.serialization for m in shape.members.values()):
            self.body_codec = codecs.body_codec(shape)

    def _plan_output(self, shape: Any, codecs: _CodecCompiler) -> None:
        for name, member in shape.members.items():
            location = member.serialization.get("location")
            wire = member.serialization.get("name", name)
            if location == "statusCode":
                self.out_status_member = name
            elif location == "header":
                self.out_headers.append((name, wire, _scalar_to_text(member, "rfc822")))
            elif location == "headers":
                self.out_prefix_headers.append((name, wire))
        payload = shape.serialization.get("payload")
        if payload is not None:
            self.out_payload = payload
            target = shape.members[payload]
            if target.type_name in ("blob", "string"):
                self.out_payload_raw = True
            else:
                self.out_payload_codec = codecs.codec(target)
        else:
            self.out_body_codec = codecs.body_codec(shape)


# --------------------------------------------------------------------------- protocol


class LambdaProtocol:
    """rest-json codec for every Lambda operation in botocore's model."""

    def __init__(self) -> None:
        self.model = service_model()
        codecs = _CodecCompiler()
        self._plans: dict[str, _OpPlan] = {}
        # method -> (number of path parts, first part, second part) -> candidate routes
        self._index: dict[str, dict[tuple[int, str, str], list[_Route]]] = {}
        # method -> routes that need a regex (labels early in the path, greedy labels)
        self._slow: dict[str, list[_Route]] = {}
        for name in self.model.operation_names:
            op = self.model.operation_model(name)
            self._plans[name] = _OpPlan(op, codecs)
            method = op.http.get("method", "POST").upper()
            route = _build_route(name, op.http["requestUri"])
            if route.regex is None:
                path = route.template.partition("?")[0].split("/")
                key = (route.nparts, path[1], path[2])
                self._index.setdefault(method, {}).setdefault(key, []).append(route)
            else:
                self._slow.setdefault(method, []).append(route)
        for buckets in self._index.values():
            for routes in buckets.values():
                routes.sort(key=_route_order)
        for routes in self._slow.values():
            routes.sort(key=_route_order)

    @property
    def operation_names(self) -> list[str]:
        return list(self._plans)

    # ------------------------------------------------------------------------ match

    def match(
        self, method: str, raw_path: str, query: dict[str, list[str]]
    ) -> tuple[str, dict[str, str]]:
        """Find the operation for a request; labels are percent-decoded after splitting."""
        path = raw_path.partition("?")[0]
        parts = path.split("/")
        if len(parts) > 2 and parts[-1] == "":
            parts.pop()  # tolerate one trailing slash
        nparts = len(parts)
        method = method.upper()
        buckets = self._index.get(method)
        if buckets is not None and nparts >= 3:
            candidates = buckets.get((nparts, parts[1], parts[2]))
            if candidates is not None:
                for route in candidates:
                    if route.query and not _query_matches(route, query):
                        continue
                    for index, text in route.literals:
                        if parts[index] != text:
                            break
                    else:
                        labels: dict[str, str] = {}
                        for index, name in route.labels:
                            raw = parts[index]
                            if not raw:
                                break
                            labels[name] = unquote(raw) if "%" in raw else raw
                        else:
                            return route.operation, labels
        for route in self._slow.get(method, ()):
            if route.query and not _query_matches(route, query):
                continue
            assert route.regex is not None
            found = route.regex.match(path)
            if found is not None:
                values = (unquote(v) for v in found.groups())
                return route.operation, dict(zip(route.regex_labels, values, strict=True))
        raise UnknownOperationException(f"Unknown operation: {method} {path}")

    # ------------------------------------------------------------------------ parse

    def parse(
        self,
        operation: str,
        labels: dict[str, str],
        query: dict[str, list[str]],
        headers: Mapping[str, str],
        body: bytes,
    ) -> dict[str, Any]:
        """Build and validate the operation's input dict (keys are model member names)."""
        plan = self._plans.get(operation)
        if plan is None:
            raise UnknownOperationException(f"Unknown operation: {operation}")
        params: dict[str, Any] = {}
        for wire, name, conv in plan.uri_members:
            raw = labels.get(wire)
            if raw is not None:
                params[name] = conv(raw)
        for wire, name, conv, is_list in plan.query_members:
            values = query.get(wire)
            if values:
                params[name] = [conv(v) for v in values] if is_list else conv(values[0])
        if plan.query_map is not None:
            taken = {wire for wire, _, _, _ in plan.query_members}
            extra = {k: v[0] for k, v in query.items() if v and k not in taken}
            if extra:
                params[plan.query_map] = extra
        for header, name, conv in plan.header_members:
            raw = headers.get(header)
            if raw is not None:
                params[name] = conv(raw)
        for prefix, name in plan.prefix_headers:
            found = {k[len(prefix) :]: v for k, v in headers.items() if k.startswith(prefix)}
            if found:
                params[name] = found
        if plan.payload is not None:
            if body:
                if plan.payload_raw:
                    params[plan.payload] = body if type(body) is bytes else bytes(body)
                else:
                    assert plan.payload_codec is not None
                    params[plan.payload] = plan.payload_codec.decode(_load_json(body), "")
        elif plan.body_codec is not None and body:
            decoded = plan.body_codec.decode(_load_json(body), "")
            for name, value in decoded.items():
                params.setdefault(name, value)
        plan.validator.validate(params)
        return params

    # -------------------------------------------------------------------- serialize

    def serialize(
        self, operation: str, output: Mapping[str, Any], *, request_id: str | None = None
    ) -> Response:
        """Render an operation's output dict as AWS does."""
        plan = self._plans[operation]
        status = plan.default_status
        headers: list[tuple[str, str]] = []
        if plan.out_status_member is not None:
            code = output.get(plan.out_status_member)
            if isinstance(code, int) and not isinstance(code, bool):
                status = code
        for name, wire, conv in plan.out_headers:
            value = output.get(name)
            if value is not None:
                headers.append((wire, conv(value)))
        for name, prefix in plan.out_prefix_headers:
            values = output.get(name)
            if values:
                headers.extend((prefix + str(k), str(v)) for k, v in values.items())
        body = b""
        if plan.out_payload is not None:
            value = output.get(plan.out_payload)
            if value is None:
                body = b""
            elif isinstance(value, bytes | bytearray | memoryview):
                body = bytes(value)
            elif isinstance(value, str):
                body = value.encode()
            elif plan.out_payload_codec is not None:
                body = orjson.dumps(plan.out_payload_codec.encode(value))
        elif plan.out_body_codec is not None and status != 204:
            body = orjson.dumps(plan.out_body_codec.encode(output))
        elif status != 204:
            body = b"{}"
        if body and not (plan.out_typed and any(k.lower() == "content-type" for k, _ in headers)):
            headers.append(("Content-Type", JSON_CONTENT_TYPE))
        headers.append(("x-amzn-RequestId", request_id or str(uuid.uuid4())))
        return Response(status=status, headers=headers, body=body)

    def serialize_error(self, error: LambdaError, *, request_id: str | None = None) -> Response:
        headers = list(error.headers().items())
        headers.append(("Content-Type", JSON_CONTENT_TYPE))
        headers.append(("x-amzn-RequestId", request_id or str(uuid.uuid4())))
        return Response(status=error.status, headers=headers, body=orjson.dumps(error.body()))


def _load_json(body: bytes) -> Any:
    if not body.strip():
        return {}
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise _bad_content(str(exc)) from None
    return {} if value is None else value
