"""Published versions: immutable snapshots of $LATEST, numbered per function.

A version copies $LATEST's code and configuration when it is published and never changes
afterwards. Its number is one more than the highest ever published for the function, so numbers
are never reused, not even after a deletion. Publishing when $LATEST did not change since the
last version was published from it answers that version instead of a new one, as AWS does (a new
Description given to PublishVersion is no change; a new description of $LATEST is).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping

import orjson

from lambdad.control.model import (
    LATEST,
    FunctionConfig,
    FunctionState,
    UpdateStatus,
    aws_timestamp,
    new_revision_id,
)
from lambdad.errors import InvalidParameterValueException

# FunctionConfig fields that are bookkeeping, not what $LATEST is made of: a change of these
# alone is no reason to publish a new version. Tags belong to the function as a whole.
_NOT_CONTENT = frozenset(
    {
        "version",
        "tags",
        "last_modified",
        "revision_id",
        "state",
        "state_reason",
        "state_reason_code",
        "last_update_status",
        "last_update_status_reason",
        "last_update_status_reason_code",
    }
)


def snapshot(latest: FunctionConfig, number: int, description: str | None) -> FunctionConfig:
    """Version `number` of a function, copied from its $LATEST: Active, or with SnapStart
    Pending until its snapshot is taken (lambdad.control.snapshots)."""
    version = latest.evolve(
        version=str(number),
        description=latest.description if description is None else description,
        tags={},
        last_modified=aws_timestamp(),
        revision_id=new_revision_id(),
        state=FunctionState.ACTIVE,
        state_reason=None,
        state_reason_code=None,
        last_update_status=UpdateStatus.SUCCESSFUL,
        last_update_status_reason=None,
        last_update_status_reason_code=None,
    )
    if version.snap_start_on:
        return version.evolve(
            state=FunctionState.PENDING,
            state_reason="The function is being created.",
            state_reason_code="Creating",
        )
    return version


def digest(latest: FunctionConfig) -> str:
    """A fingerprint of $LATEST's code and configuration (what publishing would copy)."""
    # Unset optional fields (None) are left out: a field added later (LoggingConfig's levels)
    # keeps the fingerprints of functions stored before it.
    content = {
        f.name: value
        for f in dataclasses.fields(FunctionConfig)
        if f.name not in _NOT_CONTENT and (value := getattr(latest, f.name)) is not None
    }
    return hashlib.sha256(orjson.dumps(content, option=orjson.OPT_SORT_KEYS)).hexdigest()


def check_code_sha256(latest: FunctionConfig, expected: str | None) -> None:
    """PublishVersion's CodeSha256 precondition."""
    if expected is not None and expected != latest.code_sha256:
        raise InvalidParameterValueException(
            f"CodeSHA256 ({expected}) is different from current CodeSHA256 in $LATEST "
            f"({latest.code_sha256}). Please try again with the CodeSHA256 in $LATEST."
        )


def version_rank(version: str) -> tuple[int, str]:
    """Listing order: $LATEST first, then published versions by number."""
    return (-1, "") if version == LATEST else (int(version), "")


def listing(latest: FunctionConfig, versions: Mapping[str, FunctionConfig]) -> list[FunctionConfig]:
    """$LATEST and every published version, in ListVersionsByFunction's order."""
    return [latest, *sorted(versions.values(), key=lambda v: version_rank(v.version))]
