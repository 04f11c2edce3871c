"""FunctionRegistry: functions, their published versions and reserved concurrency.

Every function version is held in memory (the invoke path reads it without touching SQLite) and
written through to the MetadataStore. Code packages are validated, stored by content and
extracted once at deploy time, so an environment's cold start never unzips anything. Aliases
live in the AliasRegistry the function registry owns (`registry.aliases`), provisioned
concurrency configurations in its ProvisionedConcurrency (`registry.provisioned`), the
snapshots of SnapStart versions in its SnapshotTasks (`registry.snapshots`).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import orjson

from lambdad.control import versions
from lambdad.control.aliases import STALE_REVISION, AliasRegistry
from lambdad.control.arns import FunctionRef
from lambdad.control.layers import LayerRegistry, check_combined_size
from lambdad.control.logging_config import LoggingUpdate, logging_fields
from lambdad.control.model import (
    LATEST,
    FunctionConfig,
    FunctionMeta,
    FunctionState,
    UpdateStatus,
    aws_timestamp,
    function_arn,
    is_version_number,
    new_revision_id,
)
from lambdad.control.package import CodePackage, inspect_zip
from lambdad.control.provisioned import Allocator, NoAllocator, ProvisionedConcurrency
from lambdad.control.snapshots import (
    NoSnapshotter,
    SnapshotFailure,
    SnapshotTasks,
    Snapshotter,
    check_snap_start,
    settled,
)
from lambdad.errors import (
    InvalidParameterValueException,
    PreconditionFailedException,
    ResourceConflictException,
    ResourceNotFoundException,
    ValidationException,
)
from lambdad.runtime.launch import RESERVED_KEYS
from lambdad.runtime.runtimes import Family, RuntimeCatalog
from lambdad.scheduler.limiter import ConcurrencyLimiter
from lambdad.store.blobs import BlobStore
from lambdad.store.code_cache import CodeCache
from lambdad.store.metadata import MetadataStore

log = logging.getLogger(__name__)

MAX_ENVIRONMENT_BYTES = 4096
MAX_TAGS = 50
MAX_NAME_LENGTH = 64
MEMORY_RANGE = (128, 10240)
TIMEOUT_RANGE = (1, 900)
EPHEMERAL_RANGE = (512, 10240)
UNQUALIFIED_ONLY = (
    "This operation is permitted on Lambda functions only. Aliases and versions do not support "
    "this operation. Please specify either a function name or an unqualified function ARN."
)


@dataclass(frozen=True)
class FunctionSettings:
    """Configuration a caller sets; None means 'default' on create and 'unchanged' on update."""

    runtime: str | None = None
    handler: str | None = None
    role: str | None = None
    description: str | None = None
    timeout: int | None = None
    memory_size: int | None = None
    ephemeral_storage: int | None = None
    environment: Mapping[str, str] | None = None
    architectures: tuple[str, ...] | None = None
    layers: tuple[str, ...] | None = None  # LayerVersionArns; () removes every layer
    snap_start: str | None = None  # SnapStart.ApplyOn: "PublishedVersions" or "None"
    logging: LoggingUpdate | None = None  # LoggingConfig; its members merge with what is stored


@dataclass(frozen=True)
class AccountUsage:
    function_count: int
    total_code_size: int


ChangeListener = Callable[[FunctionConfig | None, str, str], None]


class FunctionRegistry:
    def __init__(
        self,
        store: MetadataStore,
        blobs: BlobStore,
        code: CodeCache,
        catalog: RuntimeCatalog,
        region: str,
        limiter: ConcurrencyLimiter | None = None,
        draw: Callable[[], float] = random.random,
        allocator: Allocator | None = None,
        layers: LayerRegistry | None = None,
        snapshotter: Snapshotter | None = None,
    ) -> None:
        self._layers = layers
        self._store = store
        self._blobs = blobs
        self._code = code
        self._catalog = catalog
        self.region = region
        self.limiter = limiter or ConcurrencyLimiter()
        self.aliases = AliasRegistry(store, self)
        self.provisioned = ProvisionedConcurrency(
            store, self, self.aliases, self.limiter, allocator or NoAllocator()
        )
        # Without a snapshotter, SnapStart versions fail (InternalError) instead of activating.
        self.snapshots = SnapshotTasks(snapshotter or NoSnapshotter(), self._snapshot_settled)
        self._draw = draw  # uniform in [0, 1): picks the version of a weighted alias invocation
        # (account id, function name) -> $LATEST configuration
        self._functions: dict[tuple[str, str], FunctionConfig] = {}
        # (account id, function name) -> version number -> published version
        self._versions: dict[tuple[str, str], dict[str, FunctionConfig]] = {}
        # (account id, function name) -> version counter and reserved concurrency
        self._meta: dict[tuple[str, str], FunctionMeta] = {}
        self._listeners: list[ChangeListener] = []
        # (account, name) -> lock serialising updates of one function
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    def load(self) -> None:
        """Read every record back; SnapStart versions stored Pending (the server stopped while
        their snapshot was taken) are snapshotted again, so call it with the loop running."""
        for record in self._store.load_functions():
            config = FunctionConfig.from_record(record)
            self._remember(config)
            if config.snap_start_on and config.state is FunctionState.PENDING:
                self.snapshots.start(config)
        for record in self._store.load_function_meta():
            meta = FunctionMeta.from_record(record)
            self._meta[(meta.account_id, meta.name)] = meta
            if meta.reserved_concurrency is not None:
                self.limiter.restore_reserved(meta.account_id, meta.name, meta.reserved_concurrency)
        self.aliases.load()
        self.provisioned.load()

    def on_change(self, listener: ChangeListener) -> None:
        """Call listener(new config or None when deleted, account, name) after every change."""
        self._listeners.append(listener)

    # reads -------------------------------------------------------------------------------
    def get(self, account_id: str, ref: FunctionRef) -> FunctionConfig:
        """The version a reference names (an alias names its primary version), or AWS's
        ResourceNotFoundException."""
        return self._resolve(account_id, ref, weighted=False)

    def invocation_target(self, account_id: str, ref: FunctionRef) -> FunctionConfig:
        """The version one invocation runs: like `get`, but a weighted alias picks by weight."""
        return self._resolve(account_id, ref, weighted=True)

    def lookup(self, account_id: str, name: str) -> FunctionConfig | None:
        """Hot-path read: the $LATEST configuration or None."""
        return self._functions.get((account_id, name))

    def version(self, account_id: str, name: str, version: str) -> FunctionConfig | None:
        """$LATEST or a published version, or None."""
        if version == LATEST:
            return self._functions.get((account_id, name))
        return self._versions.get((account_id, name), {}).get(version)

    def versions(self, account_id: str, ref: FunctionRef) -> list[FunctionConfig]:
        """$LATEST and the published versions, in ListVersionsByFunction's order."""
        latest = self._latest(account_id, ref)
        return versions.listing(latest, self._versions.get((account_id, ref.name), {}))

    def reserved_concurrency(self, account_id: str, ref: FunctionRef) -> int | None:
        _unqualified_only(ref)
        latest = self._latest(account_id, ref)
        return self._meta_of(latest).reserved_concurrency

    def _resolve(self, account_id: str, ref: FunctionRef, *, weighted: bool) -> FunctionConfig:
        qualifier = ref.qualifier or LATEST
        if ref.account_id not in (None, account_id):
            raise not_found(self.region, account_id, ref.name, ref.qualifier)
        if qualifier == LATEST or is_version_number(qualifier):
            config = self.version(account_id, ref.name, qualifier)
        else:
            alias = self.aliases.find(account_id, ref.name, qualifier)
            config = None
            if alias is not None and self.lookup(account_id, ref.name) is not None:
                chosen = alias.choose(self._draw()) if weighted else alias.function_version
                config = self.version(account_id, ref.name, chosen)
        if config is None:
            raise not_found(self.region, account_id, ref.name, ref.qualifier)
        return config

    def _mutable(self, account_id: str, ref: FunctionRef) -> FunctionConfig:
        """$LATEST, the one version updates change; other qualifiers are not found."""
        config = self._functions.get((account_id, ref.name))
        stranger = ref.account_id not in (None, account_id)
        if config is None or stranger or ref.qualifier not in (None, LATEST):
            raise not_found(self.region, account_id, ref.name, ref.qualifier)
        return config

    def _latest(self, account_id: str, ref: FunctionRef) -> FunctionConfig:
        """The function's $LATEST, whatever the qualifier; not found names the bare function."""
        config = self._functions.get((account_id, ref.name))
        if config is None or ref.account_id not in (None, account_id):
            raise not_found(self.region, account_id, ref.name, None)
        return config

    def layer_arns_in_use(self) -> set[str]:
        """Every LayerVersionArn some version of some function still references."""
        configs = [*self._functions.values()]
        configs += [v for versions in self._versions.values() for v in versions.values()]
        return {arn for config in configs for arn, _ in config.layers}

    def functions(self, account_id: str) -> list[FunctionConfig]:
        return sorted(
            (c for (acct, _), c in self._functions.items() if acct == account_id),
            key=lambda c: c.name,
        )

    def usage(self, account_id: str) -> AccountUsage:
        """Function count, and code size over every version (published ones count, as on AWS)."""
        functions = self.functions(account_id)
        published = [
            v
            for (acct, _), found in self._versions.items()
            if acct == account_id
            for v in found.values()
        ]
        return AccountUsage(len(functions), sum(c.code_size for c in [*functions, *published]))

    def code_blob(self, key: str) -> bytes:
        return self._blobs.get(key)

    # writes ------------------------------------------------------------------------------
    async def create(
        self,
        account_id: str,
        name: str,
        settings: FunctionSettings,
        zip_bytes: bytes,
        tags: Mapping[str, str],
        *,
        publish: bool = False,
    ) -> FunctionConfig:
        """Create a function; with `publish`, version 1 too (the answer then names it, as AWS's
        create response does)."""
        async with self._lock(account_id, name):
            if len(name) > MAX_NAME_LENGTH:
                # AWS answers this model violation as InvalidParameterValueException, not
                # ValidationException (the model allows 140 characters for ARNs).
                raise InvalidParameterValueException(
                    f"1 validation error detected: Value '{name}' at 'functionName' failed to "
                    "satisfy constraint: Member must have length less than or equal to "
                    f"{MAX_NAME_LENGTH}"
                )
            if (account_id, name) in self._functions:
                raise ResourceConflictException(f"Function already exist: {name}")
            if not settings.runtime or not settings.handler:
                raise InvalidParameterValueException(
                    "Runtime and Handler are mandatory parameters for functions created with "
                    "deployment packages."
                )
            self._check_settings(settings)
            ephemeral_storage = settings.ephemeral_storage or FunctionConfig.ephemeral_storage
            check_snap_start(settings.runtime, settings.snap_start or "None", ephemeral_storage)
            logging = logging_fields(None, settings.logging or LoggingUpdate(), name)
            self._check_tags(tags)
            architectures = settings.architectures or ("x86_64",)
            layers = await self._resolve_layers(
                account_id, settings.layers or (), settings.runtime, architectures, zip_bytes
            )
            package = await self._store_code(zip_bytes, settings.runtime)
            assert settings.role is not None
            created = FunctionConfig(
                account_id=account_id,
                region=self.region,
                name=name,
                runtime=settings.runtime,
                handler=settings.handler,
                role=settings.role,
                code_key=package.sha256_hex,
                code_sha256=package.code_sha256,
                code_size=package.code_size,
                description=settings.description or "",
                timeout=settings.timeout if settings.timeout is not None else 3,
                memory_size=settings.memory_size or 128,
                ephemeral_storage=ephemeral_storage,
                environment=dict(settings.environment or {}),
                architectures=architectures,
                tags=dict(tags),
                layers=layers,
                snap_start=settings.snap_start or "None",
                **logging,
            )
            # The package is extracted already, so the function is Active at once; the create
            # response still shows Pending, as AWS's does.
            active = self._activated(created)
            self._save(active)
            if publish:
                return created.evolve(version=self._publish_locked(active, None).version)
            return created

    async def update_code(
        self,
        account_id: str,
        ref: FunctionRef,
        zip_bytes: bytes,
        revision_id: str | None,
        *,
        publish: bool = False,
    ) -> FunctionConfig:
        """Replace $LATEST's code; answers $LATEST, or with `publish` the version published."""
        async with self._lock(account_id, ref.name):
            current = self._mutable(account_id, ref)
            self._check_revision(current, revision_id)
            if current.layers and self._layers is not None:
                unzipped = (await asyncio.to_thread(inspect_zip, zip_bytes)).unzipped_size
                existing = await asyncio.to_thread(
                    self._layers.content_for_existing, [arn for arn, _ in current.layers]
                )
                check_combined_size(unzipped, existing.unzipped_size)
            package = await self._store_code(zip_bytes, current.runtime)
            updated = current.evolve(
                code_key=package.sha256_hex,
                code_sha256=package.code_sha256,
                code_size=package.code_size,
                **_in_progress(),
            )
            successful = self._successful(updated)
            self._save(successful)
            if publish:
                return self._publish_locked(successful, None)
            return updated

    async def update_configuration(
        self,
        account_id: str,
        ref: FunctionRef,
        settings: FunctionSettings,
        revision_id: str | None,
    ) -> FunctionConfig:
        async with self._lock(account_id, ref.name):
            current = self._mutable(account_id, ref)
            self._check_revision(current, revision_id)
            self._check_settings(settings)
            check_snap_start(
                settings.runtime or current.runtime,
                settings.snap_start or current.snap_start,
                settings.ephemeral_storage or current.ephemeral_storage,
            )
            changes: dict[str, object] = {
                field: value
                for field, value in (
                    ("runtime", settings.runtime),
                    ("handler", settings.handler),
                    ("role", settings.role),
                    ("description", settings.description),
                    ("timeout", settings.timeout),
                    ("memory_size", settings.memory_size),
                    ("ephemeral_storage", settings.ephemeral_storage),
                    ("architectures", settings.architectures),
                    ("snap_start", settings.snap_start),
                )
                if value is not None
            }
            if settings.logging is not None:
                changes.update(logging_fields(current, settings.logging, current.name))
            if settings.environment is not None:
                changes["environment"] = dict(settings.environment)
            if settings.layers is not None:
                code = await asyncio.to_thread(self._blobs.get, current.code_key)
                changes["layers"] = await self._resolve_layers(
                    account_id,
                    settings.layers,
                    settings.runtime or current.runtime,
                    settings.architectures or current.architectures,
                    code,
                )
            updated = current.evolve(**changes, **_in_progress())
            if settings.runtime is not None and settings.runtime != current.runtime:
                await self._precompile(current.code_key, settings.runtime)
            self._save(self._successful(updated))
            return updated

    async def delete(self, account_id: str, ref: FunctionRef) -> None:
        """Delete a function with everything it has, or (with a qualifier) one version."""
        qualifier = ref.qualifier
        if qualifier is not None and qualifier != LATEST and not is_version_number(qualifier):
            raise InvalidParameterValueException("Deletion of aliases is not currently supported.")
        if qualifier == LATEST:
            raise InvalidParameterValueException(
                "$LATEST version cannot be deleted without deleting the function."
            )
        async with self._lock(account_id, ref.name):
            self._latest(account_id, ref)
            if qualifier is None:
                self._delete_function(account_id, ref.name)
            else:
                self._delete_version(account_id, ref.name, qualifier)

    def _delete_function(self, account_id: str, name: str) -> None:
        key = (account_id, name)
        self._store.delete_function(account_id, name)
        del self._functions[key]
        for version in self._versions.pop(key, {}).values():
            if version.snap_start_on:
                self.snapshots.discard(version)
        self._meta.pop(key, None)
        self.aliases.forget_function(account_id, name)
        self.provisioned.forget_function(account_id, name)
        self.limiter.forget_function(account_id, name)
        self._locks.pop(key, None)
        for listener in self._listeners:
            listener(None, account_id, name)

    def _delete_version(self, account_id: str, name: str, version: str) -> None:
        """Delete a published version; an unknown one is no error (AWS answers 204)."""
        if self.version(account_id, name, version) is None:
            return
        aliases = self.aliases.referencing(account_id, name, version)
        if aliases:
            raise ResourceConflictException(
                "Unable to delete version because the following aliases reference it: "
                f"[{', '.join(aliases)}]"
            )
        self.provisioned.forget_version(account_id, name, version)
        self._store.delete_function_version(account_id, name, version)
        deleted = self._versions[(account_id, name)].pop(version)
        if deleted.snap_start_on:
            self.snapshots.discard(deleted)

    # versions ------------------------------------------------------------------------------
    async def publish(
        self,
        account_id: str,
        ref: FunctionRef,
        *,
        code_sha256: str | None = None,
        description: str | None = None,
        revision_id: str | None = None,
    ) -> FunctionConfig:
        """Publish $LATEST as a new version (or answer the newest one if nothing changed)."""
        async with self._lock(account_id, ref.name):
            latest = self._latest(account_id, ref)
            self._check_revision(latest, revision_id)
            versions.check_code_sha256(latest, code_sha256)
            return self._publish_locked(latest, description)

    def _publish_locked(self, latest: FunctionConfig, description: str | None) -> FunctionConfig:
        meta = self._meta_of(latest)
        digest = versions.digest(latest)
        last = self.version(latest.account_id, latest.name, str(meta.last_version))
        if last is not None and meta.published_digest == digest:
            return last  # nothing changed since it was published
        number = meta.last_version + 1
        self._save_meta(meta.evolve(last_version=number, published_digest=digest))
        published = versions.snapshot(latest, number, description)
        self._save(published)
        if published.state is FunctionState.PENDING:
            self.snapshots.start(published)  # Active or Failed later; the answer says Pending
        # Publishing gives $LATEST a new RevisionId (recorded on AWS).
        self._save(latest.evolve(revision_id=new_revision_id()))
        return published

    def _snapshot_settled(self, version: FunctionConfig, failure: SnapshotFailure | None) -> None:
        """Record how a SnapStart version's snapshot went, unless the version went away."""
        current = self.version(version.account_id, version.name, version.version)
        if current is not None and current.revision_id == version.revision_id:
            self._save(settled(current, failure))

    async def close(self) -> None:
        """Stop background work (snapshots in progress are taken again at the next start)."""
        await self.snapshots.close()

    # concurrency ---------------------------------------------------------------------------
    def put_concurrency(self, account_id: str, ref: FunctionRef, value: int) -> int:
        """Reserve concurrency for the function (all its versions); refusals are AWS's (a
        reservation may not be lower than the function's provisioned concurrency)."""
        _unqualified_only(ref)
        latest = self._functions.get((account_id, ref.name))
        if latest is None or ref.account_id not in (None, account_id):
            # PutFunctionConcurrency names $LATEST in its not-found message (recorded).
            raise not_found(self.region, account_id, ref.name, LATEST)
        self.limiter.set_reserved(account_id, ref.name, value)
        self._save_meta(self._meta_of(latest).evolve(reserved_concurrency=value))
        return value

    def delete_concurrency(self, account_id: str, ref: FunctionRef) -> None:
        _unqualified_only(ref)
        latest = self._latest(account_id, ref)
        self.limiter.clear_reserved(account_id, ref.name)
        self._save_meta(self._meta_of(latest).evolve(reserved_concurrency=None))

    def _meta_of(self, latest: FunctionConfig) -> FunctionMeta:
        key = (latest.account_id, latest.name)
        return self._meta.get(key) or FunctionMeta(latest.account_id, latest.name)

    def _save_meta(self, meta: FunctionMeta) -> None:
        self._store.put_function_meta(meta.account_id, meta.name, meta.to_record())
        self._meta[(meta.account_id, meta.name)] = meta

    # tags ----------------------------------------------------------------------------------
    def tag(self, account_id: str, ref: FunctionRef, tags: Mapping[str, str]) -> None:
        current = self._taggable(account_id, ref)
        if not tags:
            raise InvalidParameterValueException(
                "An error occurred and the request cannot be processed."
            )
        merged = {**current.tags, **tags}
        self._check_tags(merged)
        self._save(current.evolve(tags=merged), notify=False)

    def untag(self, account_id: str, ref: FunctionRef, keys: list[str]) -> None:
        current = self._taggable(account_id, ref)
        remaining = {k: v for k, v in current.tags.items() if k not in set(keys)}
        self._save(current.evolve(tags=remaining), notify=False)

    def tags(self, account_id: str, ref: FunctionRef) -> dict[str, str]:
        return dict(self._taggable(account_id, ref).tags)

    def _taggable(self, account_id: str, ref: FunctionRef) -> FunctionConfig:
        if ref.qualifier is not None:
            raise InvalidParameterValueException(
                "Tags on function aliases and versions are not supported. Please specify a "
                "function ARN."
            )
        return self.get(account_id, ref)

    # helpers ---------------------------------------------------------------------------------
    def _lock(self, account_id: str, name: str) -> asyncio.Lock:
        return self._locks.setdefault((account_id, name), asyncio.Lock())

    def _save(self, config: FunctionConfig, notify: bool = True) -> None:
        self._store.put_function(config.account_id, config.name, config.version, config.to_record())
        self._remember(config)
        if notify:
            for listener in self._listeners:
                listener(config, config.account_id, config.name)

    def _remember(self, config: FunctionConfig) -> None:
        key = (config.account_id, config.name)
        if config.version == LATEST:
            self._functions[key] = config
        else:
            self._versions.setdefault(key, {})[config.version] = config

    @staticmethod
    def _activated(config: FunctionConfig) -> FunctionConfig:
        return config.evolve(
            state=FunctionState.ACTIVE,
            state_reason=None,
            state_reason_code=None,
            last_update_status=UpdateStatus.SUCCESSFUL,
            revision_id=new_revision_id(),
        )

    @staticmethod
    def _successful(config: FunctionConfig) -> FunctionConfig:
        return config.evolve(
            last_update_status=UpdateStatus.SUCCESSFUL,
            last_update_status_reason=None,
            last_update_status_reason_code=None,
            revision_id=new_revision_id(),
        )

    @staticmethod
    def _check_revision(current: FunctionConfig, revision_id: str | None) -> None:
        if revision_id is not None and revision_id != current.revision_id:
            raise PreconditionFailedException(STALE_REVISION)

    def _check_settings(self, settings: FunctionSettings) -> None:
        errors = [
            message
            for message in (
                _out_of_range("memorySize", settings.memory_size, MEMORY_RANGE),
                _out_of_range("timeout", settings.timeout, TIMEOUT_RANGE),
                _out_of_range("ephemeralStorage.size", settings.ephemeral_storage, EPHEMERAL_RANGE),
            )
            if message
        ]
        if errors:
            noun = "error" if len(errors) == 1 else "errors"
            raise ValidationException(
                f"{len(errors)} validation {noun} detected: " + "; ".join(errors)
            )
        if settings.runtime is not None:
            self._catalog.require(settings.runtime)
        if settings.environment is not None:
            _check_environment(settings.environment)

    @staticmethod
    def _check_tags(tags: Mapping[str, str]) -> None:
        if len(tags) > MAX_TAGS:
            raise InvalidParameterValueException("Number of tags exceeds resource tag limit.")

    async def _resolve_layers(
        self,
        account_id: str,
        arns: tuple[str, ...],
        runtime: str,
        architectures: tuple[str, ...],
        zip_bytes: bytes,
    ) -> tuple[tuple[str, int], ...]:
        """Check the layers a function asks for (count, access, size with its code)."""
        if not arns:
            return ()
        if self._layers is None:
            raise InvalidParameterValueException("Layers are not available on this server.")
        unzipped = (await asyncio.to_thread(inspect_zip, zip_bytes)).unzipped_size
        resolved = await asyncio.to_thread(
            self._layers.resolve_for_function,
            account_id,
            list(arns),
            runtime,
            architectures,
            unzipped,
        )
        return tuple(zip(resolved.arns, resolved.code_sizes, strict=True))

    async def _store_code(self, zip_bytes: bytes, runtime: str) -> CodePackage:
        package = await asyncio.to_thread(inspect_zip, zip_bytes)
        existed = self._blobs.exists(package.sha256_hex)
        await asyncio.to_thread(self._blobs.put, zip_bytes)
        try:
            await asyncio.to_thread(self._code.ensure, package.sha256_hex)
        except BaseException:
            if not existed:  # a refused package leaves nothing behind
                self._blobs.delete(package.sha256_hex)
            raise
        await self._precompile(package.sha256_hex, runtime)
        return package

    async def _precompile(self, key: str, runtime: str) -> None:
        """Write .pyc files with the function's own interpreter, so cold starts skip compiling."""
        spec = self._catalog.get(runtime)
        if spec is not None and spec.family is Family.PYTHON:
            await asyncio.to_thread(
                self._code.compile_python, self._code.path_for(key), spec.executable
            )


def _in_progress() -> dict[str, object]:
    return {
        "last_modified": aws_timestamp(),
        "revision_id": new_revision_id(),
        "last_update_status": UpdateStatus.IN_PROGRESS,
        "last_update_status_reason": "The function is being created.",
        "last_update_status_reason_code": "Creating",
    }


def _unqualified_only(ref: FunctionRef) -> None:
    if ref.qualifier is not None:
        raise InvalidParameterValueException(UNQUALIFIED_ONLY)


def _out_of_range(path: str, value: int | None, bounds: tuple[int, int]) -> str | None:
    if value is None:
        return None
    low, high = bounds
    prefix = f"Value '{value}' at '{path}' failed to satisfy constraint: Member must have value"
    if value < low:
        return f"{prefix} greater than or equal to {low}"
    if value > high:
        return f"{prefix} less than or equal to {high}"
    return None


def _check_environment(variables: Mapping[str, str]) -> None:
    reserved = sorted(k for k in variables if k in RESERVED_KEYS)
    if reserved:
        raise InvalidParameterValueException(
            "Lambda was unable to configure your environment variables because the environment "
            "variables you have provided contains reserved keys that are currently not supported "
            f"for modification. Reserved keys used in this request: {', '.join(reserved)}"
        )
    measured = orjson.dumps(dict(variables)).decode()
    if len(measured.encode()) > MAX_ENVIRONMENT_BYTES:
        raise InvalidParameterValueException(
            "Lambda was unable to configure your environment variables because the environment "
            "variables you have provided exceeded the 4KB limit. String measured: " + measured
        )


def not_found(
    region: str, account_id: str, name: str, qualifier: str | None
) -> ResourceNotFoundException:
    arn = function_arn(region, account_id, name)
    if qualifier:
        arn = f"{arn}:{qualifier}"
    return ResourceNotFoundException(f"Function not found: {arn}")
