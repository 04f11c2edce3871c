"""Layers: immutable, numbered packages of files that functions see, combined, at /opt.

A layer is a name in an account; each PublishLayerVersion adds version N+1 (numbers are never
reused, even after every version was deleted). A version's content is a ZIP stored by hash in
the ``BlobStore`` and unpacked once by the ``CodeCache``; the /opt tree of a function is built
once per sequence of layer contents by the ``OptCache`` and shared read-only.

Deleting a version hides it from the API, but functions that already use it keep working: the
record stays as a tombstone (with its blob, unpacked directory and /opt trees) until ``prune``
is told that no function uses it any more.

Access: an account always reaches its own layers. Another account may only read a version
(GetLayerVersion, or referencing it from a function) when a statement of the version's policy
names it, or ``*`` without an organization (lambdad has no organizations). Every other
operation on another account's layer is denied, as AWS denies it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import threading
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lambdad.control.model import aws_timestamp, new_revision_id
from lambdad.control.package import MAX_UNZIPPED_BYTES, CodePackage, inspect_zip
from lambdad.errors import (
    AccessDeniedException,
    InvalidParameterValueException,
    PreconditionFailedException,
    ResourceConflictException,
    ResourceNotFoundException,
)
from lambdad.store.blobs import BlobStore
from lambdad.store.code_cache import CodeCache
from lambdad.store.layers import LayerKey, LayerStore, OptCache, OptCacheStatistics

__all__ = [
    "GET_LAYER_VERSION",
    "MAX_LAYERS",
    "LayerContentMissing",
    "LayerRegistry",
    "LayerSettings",
    "LayerStatistics",
    "LayerVersion",
    "ResolvedLayers",
    "Statement",
    "check_combined_size",
]

MAX_LAYERS = 5
GET_LAYER_VERSION = "lambda:GetLayerVersion"

NOT_FOUND = "The resource you requested does not exist."
NO_POLICY = "No policy is associated with the given resource."
VERSION_TOO_LOW = "Layer Version Cannot be less than 1"
TOO_MANY_LAYERS = f"Cannot reference more than {MAX_LAYERS} layers."
STALE_REVISION = (
    "The Revision Id provided does not match the latest Revision Id. "
    "Call the GetLayerPolicy API to retrieve the latest Revision Id"
)

_LAYER_NAME = re.compile(
    r"^(?:arn:[a-zA-Z0-9-]+:lambda:(?P<region>[a-zA-Z0-9-]+):(?P<account>\d{12}):layer:)?"
    r"(?P<name>[a-zA-Z0-9-_]+)$"
)
_VERSION_ARN = re.compile(
    r"^arn:[a-zA-Z0-9-]+:lambda:(?P<region>[a-zA-Z0-9-]*):(?P<account>\d{12}):layer:"
    r"(?P<name>[a-zA-Z0-9-_]+):(?P<version>[0-9]+)$"
)


class LayerContentMissing(LookupError):
    """A function names a layer version whose record was pruned (a bug in the caller)."""


@dataclass(frozen=True)
class Statement:
    """One statement of a layer version's policy: who may use the version."""

    sid: str
    principal: str  # as given: "*", a 12-digit account id, or arn:aws:iam::<account>:root
    organization_id: str | None = None

    def grants(self, account_id: str) -> bool:
        """Whether this statement lets `account_id` read the version."""
        if self.organization_id is not None:
            return False  # lambdad accounts belong to no organization
        if self.principal == "*":
            return True
        return self.principal == account_id or self.principal.endswith(f":iam::{account_id}:root")


@dataclass(frozen=True)
class LayerSettings:
    """What PublishLayerVersion says about a version besides its content."""

    description: str = ""
    license_info: str | None = None
    compatible_runtimes: tuple[str, ...] | None = None  # None: not given (AWS omits it then)
    compatible_architectures: tuple[str, ...] | None = None


@dataclass(frozen=True)
class LayerVersion:
    """One published version of a layer; only its policy and `deleted` ever change."""

    account_id: str
    region: str
    name: str
    version: int
    code_key: str  # blob key (hex SHA-256 of the ZIP)
    code_sha256: str  # base64 SHA-256 of the ZIP, as AWS reports it
    code_size: int
    unzipped_size: int
    created_date: str
    settings: LayerSettings = field(default_factory=LayerSettings)
    statements: tuple[Statement, ...] = ()
    policy_revision: str | None = None  # None until the first statement is added
    deleted: bool = False  # hidden from the API; kept for the functions that use it

    @property
    def layer_arn(self) -> str:
        return f"arn:aws:lambda:{self.region}:{self.account_id}:layer:{self.name}"

    @property
    def arn(self) -> str:
        return f"{self.layer_arn}:{self.version}"

    def grants(self, account_id: str) -> bool:
        return account_id == self.account_id or any(s.grants(account_id) for s in self.statements)

    def matches(self, runtime: str | None, architecture: str | None) -> bool:
        """Whether ListLayers/ListLayerVersions filters keep this version."""
        runtimes = self.settings.compatible_runtimes or ()
        architectures = self.settings.compatible_architectures or ()
        return (runtime is None or runtime in runtimes) and (
            architecture is None or architecture in architectures
        )

    def evolve(self, **changes: Any) -> LayerVersion:
        return dataclasses.replace(self, **changes)

    def to_record(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> LayerVersion:
        fields = dict(record)
        settings = dict(fields.pop("settings"))
        for key in ("compatible_runtimes", "compatible_architectures"):
            if settings.get(key) is not None:
                settings[key] = tuple(settings[key])
        fields["statements"] = tuple(Statement(**s) for s in fields.get("statements", ()))
        return cls(settings=LayerSettings(**settings), **fields)


@dataclass(frozen=True)
class ResolvedLayers:
    """The layers of one function, ready to mount."""

    arns: tuple[str, ...]  # the LayerVersionArns in the function's order
    # All layers unpacked into one directory, in order (later files win): mount read-only at
    # /opt. Shared by every environment using the same layer contents; None without layers.
    opt_dir: Path | None
    unzipped_size: int  # sum over the layers
    code_sizes: tuple[int, ...]  # per layer, for FunctionConfiguration.Layers [{Arn, CodeSize}]


NO_LAYERS = ResolvedLayers((), None, 0, ())


@dataclass(frozen=True)
class LayerStatistics:
    layers: int  # layer names with at least one visible version
    versions: int  # visible versions
    tombstones: int  # deleted versions kept for the functions that use them
    opt: OptCacheStatistics


@dataclass(frozen=True)
class _LayerRef:
    """A layer as a LayerName parameter or a version ARN names it."""

    account_id: str
    region: str
    name: str

    @property
    def key(self) -> LayerKey:
        return (self.account_id, self.name)

    @property
    def arn(self) -> str:
        return f"arn:aws:lambda:{self.region}:{self.account_id}:layer:{self.name}"

    def version_arn(self, number: int) -> str:
        return f"{self.arn}:{number}"


def _check_number(number: int) -> None:
    if number < 1:
        raise InvalidParameterValueException(VERSION_TOO_LOW)


class LayerRegistry:
    """Every layer version, in memory, written through to the LayerStore.

    Thread-safe: the function side may resolve layers from a worker thread (building a /opt
    tree the first time blocks on file I/O; call ``resolve_for_function`` and
    ``content_for_existing`` through ``asyncio.to_thread`` from the event loop).
    """

    def __init__(
        self,
        store: LayerStore,
        blobs: BlobStore,
        code: CodeCache,
        opt: OptCache,
        region: str,
    ) -> None:
        self._store = store
        self._blobs = blobs
        self._code = code
        self._opt = opt
        self.region = region
        self._lock = threading.RLock()
        # (account id, layer name) -> version number -> version (tombstones included)
        self._versions: dict[LayerKey, dict[int, LayerVersion]] = {}
        # (account id, layer name) -> highest version number ever published
        self._counters: dict[LayerKey, int] = {}

    def load(self) -> None:
        with self._lock:
            for record in self._store.load_versions():
                self._remember(LayerVersion.from_record(record))
            self._counters.update(self._store.load_counters())

    def _remember(self, version: LayerVersion) -> None:
        self._versions.setdefault((version.account_id, version.name), {})[version.version] = version

    # -- names ----------------------------------------------------------------------------
    def _ref(self, caller: str, layer_name: str) -> _LayerRef:
        match = _LAYER_NAME.match(layer_name)
        if match is None:  # the protocol layer validated the pattern already
            raise ResourceNotFoundException(NOT_FOUND)
        return _LayerRef(
            match.group("account") or caller, match.group("region") or self.region, match["name"]
        )

    def _owned(self, caller: str, layer_name: str, action: str, number: int | None) -> _LayerRef:
        """The caller's own layer; any other account's is denied for every action but reads."""
        ref = self._ref(caller, layer_name)
        if ref.account_id != caller:
            resource = ref.arn if number is None else ref.version_arn(number)
            raise AccessDeniedException.no_policy(caller, action, resource)
        return ref

    def _live(self, ref: _LayerRef, number: int) -> LayerVersion | None:
        if ref.region != self.region:
            return None
        with self._lock:
            found = self._versions.get(ref.key, {}).get(number)
        return None if found is None or found.deleted else found

    def _live_or_missing(self, ref: _LayerRef, number: int) -> LayerVersion:
        found = self._live(ref, number)
        if found is None:
            raise ResourceNotFoundException(
                f"Layer version {ref.version_arn(number)} does not exist."
            )
        return found

    # -- publishing -----------------------------------------------------------------------
    async def publish(
        self, caller: str, layer_name: str, zip_bytes: bytes, settings: LayerSettings
    ) -> LayerVersion:
        """Store and unpack the ZIP (the package errors of function code), add version N+1."""
        ref = self._owned(caller, layer_name, "lambda:PublishLayerVersion", None)
        package = await asyncio.to_thread(self._store_package, zip_bytes)
        with self._lock:
            number = self._counters.get(ref.key, 0) + 1
            version = LayerVersion(
                account_id=ref.account_id,
                region=self.region,
                name=ref.name,
                version=number,
                code_key=package.sha256_hex,
                code_sha256=package.code_sha256,
                code_size=package.code_size,
                unzipped_size=package.unzipped_size,
                created_date=aws_timestamp(),
                settings=settings,
            )
            self._save(version)
            self._counters[ref.key] = number
        return version

    def _store_package(self, zip_bytes: bytes) -> CodePackage:
        package = inspect_zip(zip_bytes)
        existed = self._blobs.exists(package.sha256_hex)
        self._blobs.put(zip_bytes)
        try:
            self._code.ensure(package.sha256_hex)
        except BaseException:
            if not existed:  # a refused package leaves nothing behind
                self._blobs.delete(package.sha256_hex)
            raise
        return package

    def _save(self, version: LayerVersion) -> None:
        with self._lock:
            self._store.put_version(
                version.account_id, version.name, version.version, version.to_record()
            )
            self._remember(version)

    # -- reading --------------------------------------------------------------------------
    def get(self, caller: str, layer_name: str, number: int) -> LayerVersion:
        """GetLayerVersion: the caller's own version, or another account's it may read."""
        _check_number(number)
        ref = self._ref(caller, layer_name)
        found = self._live(ref, number)
        if ref.account_id != caller:
            if found is None or not found.grants(caller):
                resource = ref.version_arn(number)
                raise AccessDeniedException.no_policy(caller, GET_LAYER_VERSION, resource)
            return found
        if found is None:
            raise ResourceNotFoundException(NOT_FOUND)
        return found

    def get_by_arn(self, caller: str, arn: str) -> LayerVersion:
        """GetLayerVersionByArn."""
        match = _VERSION_ARN.match(arn)
        if match is None or not match["region"]:
            raise ResourceNotFoundException(NOT_FOUND)
        name = f"arn:aws:lambda:{match['region']}:{match['account']}:layer:{match['name']}"
        return self.get(caller, name, int(match["version"]))

    def layers(
        self, caller: str, runtime: str | None = None, architecture: str | None = None
    ) -> list[LayerVersion]:
        """ListLayers: the newest matching version of each of the caller's layers, by name."""
        latest: list[LayerVersion] = []
        with self._lock:
            for (account, _), versions in sorted(self._versions.items()):
                if account != caller:
                    continue
                for number in sorted(versions, reverse=True):
                    version = versions[number]
                    if not version.deleted and version.matches(runtime, architecture):
                        latest.append(version)
                        break
        return latest

    def versions(
        self,
        caller: str,
        layer_name: str,
        runtime: str | None = None,
        architecture: str | None = None,
    ) -> list[LayerVersion]:
        """ListLayerVersions: the layer's visible versions, newest first (none: empty)."""
        ref = self._owned(caller, layer_name, "lambda:ListLayerVersions", None)
        if ref.region != self.region:
            return []
        with self._lock:
            found = list(self._versions.get(ref.key, {}).values())
        return sorted(
            (v for v in found if not v.deleted and v.matches(runtime, architecture)),
            key=lambda v: -v.version,
        )

    def usage(self, account_id: str) -> int:
        """Bytes of the account's visible layer versions (part of AccountUsage.TotalCodeSize)."""
        with self._lock:
            return sum(
                v.code_size
                for (account, _), versions in self._versions.items()
                if account == account_id
                for v in versions.values()
                if not v.deleted
            )

    # -- deleting -------------------------------------------------------------------------
    def delete(self, caller: str, layer_name: str, number: int) -> None:
        """DeleteLayerVersion: idempotent; functions using the version keep working."""
        _check_number(number)
        ref = self._owned(caller, layer_name, "lambda:DeleteLayerVersion", number)
        with self._lock:
            found = self._live(ref, number)
            if found is not None:
                self._save(found.evolve(deleted=True))

    def prune(self, in_use: Collection[str]) -> int:
        """Forget deleted versions no function uses (`in_use`: every LayerVersionArn any
        function version references) and the /opt trees built with them; return how many
        versions went. Call it when no function is being created or updated (at start-up).

        Blobs and unpacked packages stay: they are content-addressed and may be shared with
        function code; collecting them needs every reference to the blob store."""
        purged = 0
        with self._lock:
            for key, versions in list(self._versions.items()):
                for number, version in list(versions.items()):
                    if version.deleted and version.arn not in in_use:
                        self._store.purge_version(key[0], key[1], number)
                        del versions[number]
                        purged += 1
                if not versions:
                    del self._versions[key]
            if purged:  # under the lock: no version published meanwhile loses its trees
                self._opt.remove_unless(
                    {v.code_key for versions in self._versions.values() for v in versions.values()}
                )
        return purged

    # -- policies -------------------------------------------------------------------------
    def add_permission(
        self,
        caller: str,
        layer_name: str,
        number: int,
        statement: Statement,
        revision_id: str | None = None,
    ) -> LayerVersion:
        """AddLayerVersionPermission; answers the version with its new policy."""
        _check_number(number)
        ref = self._owned(caller, layer_name, "lambda:AddLayerVersionPermission", number)
        with self._lock:
            found = self._live_or_missing(ref, number)
            _check_revision(found, revision_id)
            if any(s.sid == statement.sid for s in found.statements):
                raise ResourceConflictException(
                    f"The statement id ({statement.sid}) provided already exists. Please provide "
                    "a new statement id, or remove the existing statement."
                )
            updated = found.evolve(
                statements=(*found.statements, statement), policy_revision=new_revision_id()
            )
            self._save(updated)
        return updated

    def remove_permission(
        self,
        caller: str,
        layer_name: str,
        number: int,
        sid: str,
        revision_id: str | None = None,
    ) -> None:
        """RemoveLayerVersionPermission."""
        _check_number(number)
        ref = self._owned(caller, layer_name, "lambda:RemoveLayerVersionPermission", number)
        with self._lock:
            found = self._live_or_missing(ref, number)
            _check_revision(found, revision_id)
            kept = tuple(s for s in found.statements if s.sid != sid)
            if len(kept) == len(found.statements):
                raise ResourceNotFoundException(f"Statement {sid} is not found in resource policy.")
            self._save(found.evolve(statements=kept, policy_revision=new_revision_id()))

    def policy(self, caller: str, layer_name: str, number: int) -> LayerVersion:
        """GetLayerVersionPolicy: the version, which has at least one statement."""
        _check_number(number)
        ref = self._owned(caller, layer_name, "lambda:GetLayerVersionPolicy", number)
        found = self._live_or_missing(ref, number)
        if not found.statements:
            raise ResourceNotFoundException(NO_POLICY)
        return found

    # -- the function side ----------------------------------------------------------------
    def resolve_for_function(
        self,
        caller_account: str,
        layer_arns: Sequence[str],
        runtime: str,
        architectures: tuple[str, ...],
        function_unzipped_size: int,
    ) -> ResolvedLayers:
        """Check a CreateFunction/UpdateFunctionConfiguration `Layers` list as AWS does, and
        build its /opt tree. `runtime` and `architectures` are not checked against the
        layers' compatible ones: those are advisory on AWS too. Blocks on file I/O."""
        del runtime, architectures  # advisory only (AWS accepts any combination)
        if not layer_arns:
            return NO_LAYERS
        if len(layer_arns) > MAX_LAYERS:
            raise InvalidParameterValueException(TOO_MANY_LAYERS)
        refs = [self._function_layer(arn) for arn in layer_arns]
        _check_distinct(layer_arns, refs)
        versions = [
            self._referenceable(caller_account, arn, ref)
            for arn, ref in zip(layer_arns, refs, strict=True)
        ]
        check_combined_size(function_unzipped_size, sum(v.unzipped_size for v in versions))
        return self._resolved(versions)

    def content_for_existing(self, layer_arns: Sequence[str]) -> ResolvedLayers:
        """The layers of a function that already references them: deleted versions and
        revoked permissions included (AWS keeps such functions working). Blocks on file I/O.
        ``LayerContentMissing`` if a version was pruned."""
        versions = [self._kept(arn) for arn in layer_arns]
        return self._resolved(versions) if versions else NO_LAYERS

    def _kept(self, arn: str) -> LayerVersion:
        """The version `arn` names, visible or deleted."""
        match = _VERSION_ARN.match(arn)
        with self._lock:
            versions = self._versions.get((match["account"], match["name"]), {}) if match else {}
            found = versions.get(int(match["version"])) if match else None
        if found is None:
            raise LayerContentMissing(arn)
        return found

    def _function_layer(self, arn: str) -> tuple[_LayerRef, int] | None:
        """The layer and version an ARN of a function's Layers names (None: not a layer of
        any account, e.g. an AWS-managed `awslayer`)."""
        match = _VERSION_ARN.match(arn)
        if match is None:
            return None
        if match["region"] != self.region:
            raise InvalidParameterValueException(
                "Layers are not in the same region as the function. Layers are expected to be "
                f"in region {self.region}."
            )
        ref = _LayerRef(match["account"], match["region"], match["name"])
        return ref, int(match["version"])

    def _referenceable(
        self, caller: str, arn: str, target: tuple[_LayerRef, int] | None
    ) -> LayerVersion:
        if target is None:
            raise InvalidParameterValueException(f"Layer version {arn} does not exist.")
        ref, number = target
        found = self._live(ref, number)
        if ref.account_id != caller:
            if found is None or not found.grants(caller):
                resource = ref.version_arn(number)
                raise AccessDeniedException.no_policy(caller, GET_LAYER_VERSION, resource)
        elif found is None:
            raise InvalidParameterValueException(f"Layer version {arn} does not exist.")
        return found

    def _resolved(self, versions: Sequence[LayerVersion]) -> ResolvedLayers:
        opt_dir = self._opt.ensure([v.code_key for v in versions])
        return ResolvedLayers(
            arns=tuple(v.arn for v in versions),
            opt_dir=opt_dir,
            unzipped_size=sum(v.unzipped_size for v in versions),
            code_sizes=tuple(v.code_size for v in versions),
        )

    def statistics(self) -> LayerStatistics:
        with self._lock:
            everything = [v for versions in self._versions.values() for v in versions.values()]
        visible = [v for v in everything if not v.deleted]
        return LayerStatistics(
            layers=len({(v.account_id, v.name) for v in visible}),
            versions=len(visible),
            tombstones=len(everything) - len(visible),
            opt=self._opt.statistics(),
        )


def check_combined_size(function_unzipped_size: int, layers_unzipped_size: int) -> None:
    """AWS's limit on a function's code and its layers, unzipped (also for UpdateFunctionCode
    of a function that has layers)."""
    total = function_unzipped_size + layers_unzipped_size
    if total > MAX_UNZIPPED_BYTES:
        raise InvalidParameterValueException(
            "Function code combined with layers exceeds the maximum allowed size of "
            f"{MAX_UNZIPPED_BYTES} bytes. The actual size is {total} bytes."
        )


def _check_revision(version: LayerVersion, revision_id: str | None) -> None:
    if revision_id is not None and revision_id != version.policy_revision:
        raise PreconditionFailedException(STALE_REVISION)


def _check_distinct(arns: Sequence[str], refs: Sequence[tuple[_LayerRef, int] | None]) -> None:
    """AWS refuses two versions (or the same version twice) of one layer, naming the first
    pair it finds."""
    seen: dict[LayerKey, str] = {}  # layer -> the first ARN naming it
    for arn, target in zip(arns, refs, strict=True):
        if target is None:
            continue
        first = seen.get(target[0].key)
        if first is not None:
            raise InvalidParameterValueException(
                "Two different versions of the same layer are not allowed to be referenced in "
                f"the same function. {first} and {arn} are versions of the same layer."
            )
        seen[target[0].key] = arn
