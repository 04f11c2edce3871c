"""AWS Signature Version 4 verification for every API request.

Both forms AWS accepts: the ``Authorization: AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…,
Signature=…`` header (with ``X-Amz-Date`` or ``Date``), and presigned query parameters
(``X-Amz-Algorithm``, ``X-Amz-Credential``, ``X-Amz-Date``, ``X-Amz-Expires``,
``X-Amz-SignedHeaders``, ``X-Amz-Signature``). The server recomputes the canonical request from
what it received, exactly as botocore builds it for non-S3 services (path normalised and
URI-encoded once more, query re-encoded and sorted, the signed headers trimmed, the payload hashed
here — a client's ``X-Amz-Content-SHA256`` is never trusted except ``UNSIGNED-PAYLOAD``), derives
the signing key from the secret it holds for the access key, and compares in constant time.
Nothing the client says is trusted except as input to that computation.

Errors (all HTTP 403; ``message`` member, no ``Type``)::

    LambdaError
    ├── MissingAuthenticationTokenException   no Authorization header, no presigned query
    ├── IncompleteSignatureException          malformed Authorization / query parameters
    ├── UnrecognizedClientException           unknown access key, or a bad session token
    └── InvalidSignatureException             wrong signature, scope, or a stale/future date
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from functools import lru_cache
from typing import NamedTuple, Protocol
from urllib.parse import quote, quote_from_bytes, unquote, unquote_to_bytes

from botocore.utils import normalize_url_path

from lambdad.control.accounts import AccessKey
from lambdad.errors import (
    InvalidSignatureException,
    LambdaError,
    MissingAuthenticationTokenException,
    UnrecognizedClientException,
)

ALGORITHM = "AWS4-HMAC-SHA256"
TERMINATOR = "aws4_request"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
# AWS refuses a request signed more than this long before (or after) its own clock.
MAX_SKEW_SECONDS = 900
# The longest X-Amz-Expires SigV4 allows (seven days).
MAX_PRESIGN_EXPIRES = 604_800
TIMESTAMP_FORMAT = "%Y%m%dT%H%M%SZ"

MISSING_TOKEN = "Missing Authentication Token"
INVALID_TOKEN = "The security token included in the request is invalid."
SIGNATURE_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. Check your "
    "AWS Secret Access Key and signing method. Consult the service documentation for details."
)
HOST_NOT_SIGNED = "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization."

_UNRESERVED = re.compile(r"[A-Za-z0-9\-_.~]*")
_TIMESTAMP = re.compile(r"\d{8}T\d{6}Z")
_REGION = re.compile(r"[a-z0-9-]{1,64}")
_HEADER_FIELDS = frozenset({"Credential", "Signature", "SignedHeaders"})
# The Authorization header as botocore (and every AWS SDK) writes it; anything else takes the
# general parser, which also words the errors.
_COMMON_AUTHORIZATION = re.compile(
    r"AWS4-HMAC-SHA256 Credential=([^,= ]+), SignedHeaders=([^,= ]+), Signature=([^,= ]+)"
)
_QUERY_FIELDS = (
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Signature",
    "X-Amz-Date",
    "X-Amz-SignedHeaders",
)


class IncompleteSignatureException(LambdaError):
    code = "IncompleteSignatureException"
    status = 403
    message_field = "message"
    user_type = False


class KeyResolver(Protocol):
    def lookup(self, access_key_id: str) -> AccessKey | None:
        """The key with this id and the account it acts for, if it exists."""


class SignedRequest(NamedTuple):
    """A request as the edge received it: nothing decoded that the signature covers."""

    method: str
    raw_path: bytes
    query_string: bytes
    headers: Sequence[tuple[bytes, bytes]]  # as received, in order, duplicates kept
    body: bytes
    # The same headers by lower-cased name, decoded as latin-1, when no name repeats (the
    # edge has that map already); None: built here from `headers`.
    header_map: Mapping[str, str] | None = None


class Principal(NamedTuple):
    """Who signed the request: the account every call of this request acts in."""

    account_id: str
    access_key_id: str


class _Claim(NamedTuple):
    """What the client says about its signature; every field is untrusted input."""

    access_key_id: str
    date: str
    region: str
    service: str
    timestamp: str  # ISO-8601 basic, as it enters the string to sign
    signed_headers: str
    signature: str
    security_token: str | None
    expires: int | None  # presigned query form only
    canonical_query: str


class Authenticator:
    def __init__(
        self,
        keys: KeyResolver,
        default_account_id: str,
        *,
        allow_any_credentials: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._keys = keys
        self._default_account_id = default_account_id
        # Development mode: any well-formed signature by any key; unknown keys act as default.
        self.allow_any_credentials = allow_any_credentials
        self._clock = clock

    def authenticate(self, request: SignedRequest, services: Collection[str]) -> Principal:
        """The principal that signed `request` for one of `services`, or a 403 LambdaError."""
        headers = request.header_map
        if headers is None:
            headers = _header_map(request.headers)
        query = request.query_string.decode("latin-1")
        authorization = headers.get("authorization")
        if authorization is not None:
            claim = _header_claim(authorization, headers, query)
        elif "X-Amz-Algorithm=" in query:
            claim = _query_claim(query, headers)
        else:
            raise MissingAuthenticationTokenException(MISSING_TOKEN)
        _check_scope(claim, services)
        if self.allow_any_credentials:
            known = self._keys.lookup(claim.access_key_id)
            account = known.account_id if known is not None else self._default_account_id
            return Principal(account, claim.access_key_id)
        _check_time(claim, self._clock())
        key = self._key(claim)
        canonical = canonical_request(request, headers, claim)
        expected = signature(key.secret_access_key, claim, canonical)
        if not hmac.compare_digest(expected.encode(), claim.signature.encode("utf-8", "replace")):
            raise InvalidSignatureException(SIGNATURE_MISMATCH)
        return Principal(key.account_id, key.access_key_id)

    def _key(self, claim: _Claim) -> AccessKey:
        key = self._keys.lookup(claim.access_key_id)
        if key is None:
            raise UnrecognizedClientException(INVALID_TOKEN)
        if key.session_token is None:
            if claim.security_token is not None:
                raise UnrecognizedClientException(INVALID_TOKEN)
        elif claim.security_token is None or not hmac.compare_digest(
            key.session_token.encode(), claim.security_token.encode("utf-8", "replace")
        ):
            raise UnrecognizedClientException(INVALID_TOKEN)
        return key


# -- the client's claim -----------------------------------------------------------------------


def _header_map(raw: Sequence[tuple[bytes, bytes]]) -> dict[str, str]:
    """Lower-case name -> value; a repeated header's values trimmed and joined by ','."""
    headers: dict[str, str] = {}
    for name, value in raw:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        if key in headers:
            text = f"{_trimall(headers[key])},{_trimall(text)}"
        headers[key] = text
    return headers


def _trimall(value: str) -> str:
    return " ".join(value.split())


def _header_claim(authorization: str, headers: Mapping[str, str], query: str) -> _Claim:
    common = _COMMON_AUTHORIZATION.fullmatch(authorization)
    timestamp = headers.get("x-amz-date")
    if common is not None and timestamp:  # what SDKs send: one match, the same claim
        credential, signed_headers, signature_hex = common.groups()
        return _claim(
            credential,
            timestamp.strip(),
            signed_headers,
            signature_hex,
            headers.get("x-amz-security-token"),
            None,
            canonical_query_string(query),
        )
    algorithm, _, rest = authorization.strip().partition(" ")
    params: dict[str, str] = {}
    for part in rest.split(","):
        part = part.strip()
        if not part:
            continue
        name, equals, value = part.partition("=")
        if not equals:
            raise IncompleteSignatureException(
                f"'{part}' not a valid key=value pair (missing equal-sign) in Authorization "
                f"header: '{authorization}'."
            )
        params[name] = value
    timestamp = _header_timestamp(headers)
    if timestamp is None or not _HEADER_FIELDS.issubset(params):
        problems = [
            f"Authorization header requires '{name}' parameter."
            for name in ("Credential", "Signature", "SignedHeaders")
            if name not in params
        ]
        if timestamp is None:
            problems.append(
                "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' "
                "header."
            )
        raise IncompleteSignatureException(" ".join([*problems, f"Authorization={authorization}"]))
    if algorithm != ALGORITHM:
        raise IncompleteSignatureException(f"Unsupported AWS 'algorithm': '{algorithm}'.")
    token = headers.get("x-amz-security-token")
    return _claim(
        params["Credential"],
        timestamp,
        params["SignedHeaders"],
        params["Signature"],
        token,
        None,
        canonical_query_string(query),
    )


def _header_timestamp(headers: Mapping[str, str]) -> str | None:
    amz_date = headers.get("x-amz-date")
    if amz_date:
        return amz_date.strip()
    date = headers.get("date")
    if not date:
        return None
    try:
        return parsedate_to_datetime(date).astimezone(UTC).strftime(TIMESTAMP_FORMAT)
    except (TypeError, ValueError):
        raise IncompleteSignatureException(
            f"Date must be in ISO-8601 'basic format'. Got '{date}'."
        ) from None


def _query_claim(query: str, headers: Mapping[str, str]) -> _Claim:
    params: dict[str, str] = {}
    for part in query.split("&"):
        name, _, value = part.partition("=")
        if name.startswith("X-Amz-"):
            params[name] = unquote(value)
    missing = [name for name in _QUERY_FIELDS if not params.get(name)]
    if missing:
        wanted = ", ".join(f"'{name}'" for name in _QUERY_FIELDS)
        raise IncompleteSignatureException(
            f"AWS query-string parameters must include {wanted}. "
            "Re-examine the query-string parameters."
        )
    if params["X-Amz-Algorithm"] != ALGORITHM:
        raise IncompleteSignatureException(
            f"Unsupported AWS 'algorithm': '{params['X-Amz-Algorithm']}'."
        )
    token = params.get("X-Amz-Security-Token")
    header_token = headers.get("x-amz-security-token")
    return _claim(
        params["X-Amz-Credential"],
        params["X-Amz-Date"],
        params["X-Amz-SignedHeaders"],
        params["X-Amz-Signature"],
        token if token is not None else header_token,
        _expires(params.get("X-Amz-Expires")),
        canonical_query_string(query, without="X-Amz-Signature"),
    )


def _expires(value: str | None) -> int:
    if value is None:
        return MAX_SKEW_SECONDS
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= MAX_PRESIGN_EXPIRES:
        raise IncompleteSignatureException(
            f"X-Amz-Expires must be a whole number of seconds from 1 to {MAX_PRESIGN_EXPIRES}, "
            f"got '{value}'."
        )
    return int(value)


def _claim(
    credential: str,
    timestamp: str,
    signed_headers: str,
    signature_hex: str,
    security_token: str | None,
    expires: int | None,
    canonical_query: str,
) -> _Claim:
    parts = credential.split("/")
    if len(parts) != 5:
        raise IncompleteSignatureException(
            "Credential must have exactly 5 slash-delimited elements, e.g. "
            f"keyid/date/region/service/term, got '{credential}'"
        )
    if parts[4] != TERMINATOR:
        raise IncompleteSignatureException(
            f"Credential should be scoped with a valid terminator: '{TERMINATOR}', "
            f"not '{parts[4]}'."
        )
    if not _TIMESTAMP.fullmatch(timestamp):
        raise IncompleteSignatureException(
            f"Date must be in ISO-8601 'basic format'. Got '{timestamp}'. "
            "See http://en.wikipedia.org/wiki/ISO_8601"
        )
    return _Claim(
        access_key_id=parts[0],
        date=parts[1],
        region=parts[2],
        service=parts[3],
        timestamp=timestamp,
        signed_headers=signed_headers,
        signature=signature_hex,
        security_token=security_token,
        expires=expires,
        canonical_query=canonical_query,
    )


# -- checks that need no key -------------------------------------------------------------------


def _check_scope(claim: _Claim, services: Collection[str]) -> None:
    if claim.service not in services:
        wanted = sorted(services)[0]
        raise InvalidSignatureException(
            f"Credential should be scoped to correct service: '{wanted}'. "
        )
    if not _REGION.fullmatch(claim.region):
        raise InvalidSignatureException("Credential should be scoped to a valid region. ")
    if claim.date != claim.timestamp[:8]:
        raise InvalidSignatureException(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from "
            f"HTTP: '{claim.date}' != '{claim.timestamp[:8]}', from '{claim.timestamp}'."
        )
    if "host" not in claim.signed_headers.split(";"):
        raise InvalidSignatureException(HOST_NOT_SIGNED)


def _check_time(claim: _Claim, now: float) -> None:
    """AWS's window: 15 minutes either side; a presigned URL's own X-Amz-Expires if shorter."""
    signed_at = _epoch(claim.timestamp)
    window = MAX_SKEW_SECONDS if claim.expires is None else min(claim.expires, MAX_SKEW_SECONDS)
    if signed_at < now - window:
        raise InvalidSignatureException(
            f"Signature expired: {claim.timestamp} is now earlier than {_format(now - window)} "
            f"({_format(now)} - {_span(window)}.)"
        )
    if signed_at > now + MAX_SKEW_SECONDS:
        raise InvalidSignatureException(
            f"Signature not yet current: {claim.timestamp} is still later than "
            f"{_format(now + MAX_SKEW_SECONDS)} ({_format(now)} + {_span(MAX_SKEW_SECONDS)}.)"
        )


@lru_cache(maxsize=256)  # a busy client signs many requests in the same second
def _epoch(timestamp: str) -> float:
    try:
        moment = datetime(
            int(timestamp[0:4]),
            int(timestamp[4:6]),
            int(timestamp[6:8]),
            int(timestamp[9:11]),
            int(timestamp[11:13]),
            int(timestamp[13:15]),
            tzinfo=UTC,
        )
    except ValueError:
        raise IncompleteSignatureException(
            f"Date must be in ISO-8601 'basic format'. Got '{timestamp}'. "
            "See http://en.wikipedia.org/wiki/ISO_8601"
        ) from None
    return moment.timestamp()


def _format(epoch: float) -> str:
    return time.strftime(TIMESTAMP_FORMAT, time.gmtime(epoch))


def _span(seconds: int) -> str:
    return f"{seconds // 60} min" if seconds % 60 == 0 else f"{seconds} sec"


# -- the canonical request, as botocore's SigV4Auth builds it for non-S3 services ---------------


def canonical_request(request: SignedRequest, headers: Mapping[str, str], claim: _Claim) -> str:
    lines = [
        f"{name}:{_trimall(headers.get(name, ''))}\n" for name in claim.signed_headers.split(";")
    ]
    return "\n".join(
        (
            request.method.upper(),
            canonical_uri(request.raw_path),
            claim.canonical_query,
            "".join(lines),
            claim.signed_headers,
            _payload_hash(request.body, headers),
        )
    )


@lru_cache(maxsize=1024)  # one path per function and operation
def canonical_uri(raw_path: bytes) -> str:
    """The path as sent (already URI-encoded once), dot segments removed, encoded again."""
    path = raw_path.decode("latin-1")
    if "//" in path or "/." in path or not path.startswith("/"):
        path = normalize_url_path(path)
    return quote(path, safe="/~", encoding="latin-1")


def canonical_query_string(query: str, without: str | None = None) -> str:
    """Each name and value URI-encoded the AWS way, sorted by name then value."""
    if not query:
        return ""
    pairs: list[tuple[str, str]] = []
    for part in query.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        if name == without:
            continue
        pairs.append((_reencode(name), _reencode(value)))
    pairs.sort()
    return "&".join(f"{name}={value}" for name, value in pairs)


def _reencode(component: str) -> str:
    if _UNRESERVED.fullmatch(component):
        return component
    return quote_from_bytes(unquote_to_bytes(component), safe="-_.~")


def _payload_hash(body: bytes, headers: Mapping[str, str]) -> str:
    """The body's SHA-256 (botocore's presigned URLs too: their body moved to the query)."""
    declared = headers.get("x-amz-content-sha256")
    if declared is not None and declared.strip() == UNSIGNED_PAYLOAD:
        return UNSIGNED_PAYLOAD
    return hashlib.sha256(body).hexdigest()


def signature(secret: str, claim: _Claim, canonical: str) -> str:
    string_to_sign = "\n".join(
        (
            ALGORITHM,
            claim.timestamp,
            f"{claim.date}/{claim.region}/{claim.service}/{TERMINATOR}",
            hashlib.sha256(canonical.encode("utf-8")).hexdigest(),
        )
    )
    mac = _keyed_mac(signing_key(secret, claim.date, claim.region, claim.service)).copy()
    mac.update(string_to_sign.encode("utf-8"))
    return mac.hexdigest()


@lru_cache(maxsize=4096)
def _keyed_mac(key: bytes) -> hmac.HMAC:
    """HMAC-SHA256 keyed with `key` and nothing hashed yet: a copy of it signs a message
    without setting the key up again (which costs more than the hashing)."""
    return hmac.new(key, digestmod=hashlib.sha256)


@lru_cache(maxsize=4096)
def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    """kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request")."""
    key = ("AWS4" + secret).encode("utf-8")
    for part in (date, region, service, TERMINATOR):
        key = hmac.new(key, part.encode("utf-8"), hashlib.sha256).digest()
    return key
