"""The control plane's typed records: function versions, aliases and their lifecycle states."""

from __future__ import annotations

import dataclasses
import hashlib
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

LATEST = "$LATEST"
_VERSION_NUMBER = re.compile(r"^[0-9]+$")


class FunctionState(StrEnum):
    PENDING = "Pending"  # created; its code (or SnapStart snapshot) is being prepared
    ACTIVE = "Active"  # ready to be invoked
    FAILED = "Failed"  # preparing the code (or snapshot) failed; invocations are refused
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
    # (LayerVersionArn, CodeSize) in the order /opt is assembled
    layers: tuple[tuple[str, int], ...] = ()
    version: str = LATEST
    package_type: str = "Zip"
    tracing_mode: str = "PassThrough"
    log_format: str = "Text"  # LoggingConfig (control/logging_config.py): "Text" or "JSON"
    application_log_level: str | None = None  # JSON only: TRACE ... FATAL
    system_log_level: str | None = None  # JSON only: DEBUG, INFO or WARN
    custom_log_group: str | None = None  # None: the default, /aws/lambda/<name>
    snap_start: str = "None"  # SnapStart.ApplyOn: "PublishedVersions" snapshots published versions
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
    def snap_start_on(self) -> bool:
        """SnapStart's OptimizationStatus: this version runs from a snapshot of its init."""
        return self.snap_start == "PublishedVersions" and self.version != LATEST

    @property
    def runtime_version(self) -> str:
        """The runtime version INIT_START names ("python:3.12.v1"; AWS: "python:3.12.v36"): one
        per runtime here, as its ARN."""
        return f"{runtime_version_family(self.runtime)}.v1"

    @property
    def runtime_version_arn(self) -> str:
        """RuntimeVersionConfig.RuntimeVersionArn (one per runtime and region here)."""
        digest = hashlib.sha256(self.runtime.encode()).hexdigest()
        return f"arn:aws:lambda:{self.region}::runtime:{digest}"

    @property
    def log_group(self) -> str:
        """The CloudWatch Logs group its environments write to."""
        return self.custom_log_group or default_log_group(self.name)

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
        values["layers"] = tuple((str(a), int(s)) for a, s in values.get("layers", ()))
        values["state"] = FunctionState(values["state"])
        if values.get("last_update_status"):
            values["last_update_status"] = UpdateStatus(values["last_update_status"])
        return cls(**values)


@dataclass(frozen=True)
class Alias:
    """A name for one function version; it may send a share of its invocations to a second."""

    account_id: str
    region: str
    function_name: str
    name: str
    function_version: str
    description: str = ""
    # additional version -> share of the alias's invocations it runs (0.0-1.0; one entry at most)
    routing: Mapping[str, float] = field(default_factory=dict)
    revision_id: str = field(default_factory=new_revision_id)

    @property
    def arn(self) -> str:
        return f"{function_arn(self.region, self.account_id, self.function_name)}:{self.name}"

    @property
    def versions(self) -> frozenset[str]:
        """Every version the alias can run."""
        return frozenset({self.function_version, *self.routing})

    def choose(self, draw: float) -> str:
        """The version one invocation runs, given a uniform draw in [0, 1)."""
        for version, weight in self.routing.items():
            if draw < weight:
                return version
            draw -= weight
        return self.function_version

    def evolve(self, **changes: Any) -> Alias:
        return dataclasses.replace(self, **changes)

    def to_record(self) -> dict[str, Any]:
        record = dataclasses.asdict(self)
        record["routing"] = dict(self.routing)
        return record

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Alias:
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in record.items() if k in fields})


@dataclass(frozen=True)
class FunctionMeta:
    """What belongs to a function as a whole rather than to one of its versions."""

    account_id: str
    name: str
    last_version: int = 0  # highest version number ever published; numbers are never reused
    published_digest: str | None = None  # fingerprint of $LATEST when last_version was published
    reserved_concurrency: int | None = None  # None: the function shares the unreserved pool

    def evolve(self, **changes: Any) -> FunctionMeta:
        return dataclasses.replace(self, **changes)

    def to_record(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> FunctionMeta:
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in record.items() if k in fields})


def is_version_number(qualifier: str) -> bool:
    """Whether a qualifier names a published version (digits) rather than an alias."""
    return _VERSION_NUMBER.match(qualifier) is not None


def runtime_version_family(runtime: str) -> str:
    """AWS's name of a runtime in its runtime versions: python3.12 -> python:3.12, nodejs20.x ->
    nodejs:20, java17 -> java:17, provided.al2023 -> provided:al2023."""
    if runtime.startswith("provided."):
        return "provided:" + runtime.removeprefix("provided.")
    language = runtime.rstrip("0123456789.x")
    return f"{language}:{runtime[len(language) :].removesuffix('.x')}"


def default_log_group(name: str) -> str:
    return f"/aws/lambda/{name}"


def function_arn(region: str, account_id: str, name: str) -> str:
    return f"arn:aws:lambda:{region}:{account_id}:function:{name}"
