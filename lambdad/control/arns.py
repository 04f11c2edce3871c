"""Function names as callers write them: name, name:qualifier, partial ARN, full ARN."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from lambdad.errors import InvalidParameterValueException, ResourceNotFoundException

_FUNCTION_REF = re.compile(
    r"^(?:arn:(?P<partition>aws[a-zA-Z-]*)?:lambda:)?"
    r"(?:(?P<region>[a-z]{2}(?:-gov|-iso[a-z]?)?-[a-z]+-\d):)?"
    r"(?:(?P<account>\d{12}):)?"
    r"(?:function:)?"
    r"(?P<name>[a-zA-Z0-9-_.]+)"
    r"(?::(?P<qualifier>\$LATEST|[a-zA-Z0-9-_]+))?$"
)


@dataclass(frozen=True)
class FunctionRef:
    name: str
    qualifier: str | None
    account_id: str | None
    region: str | None


@lru_cache(maxsize=4096)  # every Invoke names its function: the same few strings, again and again
def parse_function_ref(value: str, qualifier: str | None = None) -> FunctionRef:
    """Split a FunctionName parameter; a Qualifier parameter must agree with the ARN's."""
    match = _FUNCTION_REF.match(value)
    if match is None:
        raise InvalidParameterValueException(f"Invalid function name: {value}")
    derived = match.group("qualifier")
    if derived is not None and qualifier is not None and derived != qualifier:
        raise InvalidParameterValueException(
            "The derived qualifier from the function name does not match the specified qualifier."
        )
    return FunctionRef(
        name=match.group("name"),
        qualifier=derived if derived is not None else qualifier,
        account_id=match.group("account"),
        region=match.group("region"),
    )


def check_reachable(ref: FunctionRef, region: str) -> None:
    if ref.region is not None and ref.region != region:
        raise ResourceNotFoundException(
            f"Functions from '{ref.region}' are not reachable in this region ('{region}')"
        )
