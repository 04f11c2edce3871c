"""The control plane's typed records: functions and their lifecycle states."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

LATEST = "$LATEST"


class FunctionState(StrEnum):
    PENDING = "Pending"  # created; its code is being prepared, invocations must wait
    ACTIVE = "Active"  # ready to be invoked
    FAILED = "Failed"  # preparing the code failed; invocations are refused
    INACTIVE = "Inactive"  # reclaimed after long idleness (AWS); never set by lambdad yet


class UpdateStatus(StrEnum):
    IN_PROGRESS = "InProgress"  # an update was accepted and is being applied
    SUCCESSFUL = "Successful"  # the last update is live
    FAILED = "Failed"  # the last update could not be applied; the previous code still runs


def aws_timestamp(when: datetime | None = None) -> str:
    """LastModified as Lambda prints it: 2024-05-01T12:34:56.789+0000."""
    moment = when or datetime.now(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}+0000"


def new_revision_id() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True)
class FunctionConfig:
    """One version of a function ($LATEST is the mutable one): code plus configuration."""

    account_id: str
    region: str
    name: str
    runtime: str
    handler: str
    role: str
    code_key: str  # blob key (hex SHA-256 of the ZIP)
    code_sha256: str  # base64 SHA-256 of the ZIP, as AWS reports it
    code_size: int
    description: str = ""
    timeout: int = 3
    memory_size: int = 128
    ephemeral_storage: int = 512
    environment: Mapping[str, str] = field(default_factory=dict)
    architectures: tuple[str, ...] = ("x86_64",)
    tags: Mapping[str, str] = field(default_factory=dict)
    version: str = LATEST
    package_type: str = "Zip"
    tracing_mode: str = "PassThrough"
    log_format: str = "Text"
    last_modified: str = field(default_factory=aws_timestamp)
    revision_id: str = field(default_factory=new_revision_id)
    state: FunctionState = FunctionState.PENDING
    state_reason: str | None = "The function is being created."
    state_reason_code: str | None = "Creating"
    last_update_status: UpdateStatus | None = None
    last_update_status_reason: str | None = None
    last_update_status_reason_code: str | None = None

    @property
    def arn(self) -> str:
        return function_arn(self.region, self.account_id, self.name)

    @property
    def qualified_arn(self) -> str:
        return f"{self.arn}:{self.version}"

    @property
    def log_group(self) -> str:
        return f"/aws/lambda/{self.name}"

    @property
    def generation(self) -> tuple[str, str]:
        """Identity of what an execution environment was built from; changes on every update."""
        return (self.name, self.revision_id)

    def evolve(self, **changes: Any) -> FunctionConfig:
        return dataclasses.replace(self, **changes)

    def to_record(self) -> dict[str, Any]:
        record = dataclasses.asdict(self)
        record["environment"] = dict(self.environment)
        record["tags"] = dict(self.tags)
        record["architectures"] = list(self.architectures)
        return record

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> FunctionConfig:
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in record.items() if k in fields}
        values["architectures"] = tuple(values.get("architectures", ("x86_64",)))
        values["state"] = FunctionState(values["state"])
        if values.get("last_update_status"):
            values["last_update_status"] = UpdateStatus(values["last_update_status"])
        return cls(**values)


def function_arn(region: str, account_id: str, name: str) -> str:
    return f"arn:aws:lambda:{region}:{account_id}:function:{name}"
