"""ProvisionedConcurrency: provisioned concurrency configurations of versions and aliases.

A configuration asks for N execution environments initialised ahead of any request, for a
published version or for an alias. An alias's environments run its version; a weighted alias's
are split between its two versions by the weights, as AWS does (``split``: the second version
gets N * weight rounded to the nearest whole environment, a half going to the primary version;
the primary gets the rest, so the shares always add up to N). Configurations are held in memory
and written through to the MetadataStore; their numbers live in the ConcurrencyLimiter (they
count against the function's reservation, or without one against the account's unreserved
pool), and an ``Allocator`` (the scheduler's Provisioner) keeps the environments and reports
their progress. One version has at most one configuration, directly or through an alias (AWS's
ResourceConflictExceptions; an alias covers both versions it routes to). A deleted alias,
version or function takes its configurations with it; an alias whose version or weights change
has its environments split again (IN_PROGRESS until the new shares are initialised).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any, Protocol

from lambdad.control.aliases import AliasRegistry, VersionSource
from lambdad.control.arns import FunctionRef
from lambdad.control.model import LATEST, Alias, FunctionConfig, function_arn, is_version_number
from lambdad.errors import (
    InvalidParameterValueException,
    ProvisionedConcurrencyConfigNotFoundException,
    ResourceConflictException,
    ResourceNotFoundException,
)
from lambdad.scheduler.limiter import ConcurrencyLimiter
from lambdad.scheduler.provisioner import Allocation, ConfigKey, ProvisionedStatus, Share
from lambdad.store.metadata import MetadataStore

UNPUBLISHED = "Provisioned Concurrency Configs cannot be applied to unpublished function versions."
NOT_A_VERSION_OR_ALIAS = "The function resource provided must be an alias or a published version."
NOT_FOUND = "No Provisioned Concurrency Config found for this function"
ALIAS_ON_PROVISIONED_VERSION = (
    "Alias can't be used for Provisioned Concurrency configuration on an already Provisioned "
    "version"
)
VERSION_UNDER_ALIAS = "Version is pointed by a Provisioned Concurrency alias"
# SnapStart and provisioned concurrency exclude each other (AWS's documented limitation; the
# wording follows UNPUBLISHED's).
SNAP_START = "Provisioned Concurrency Configs cannot be applied to SnapStart enabled functions."


class Allocator(Protocol):
    """Keeps the environments of configurations (lambdad.scheduler.provisioner.Provisioner)."""

    def allocate(self, key: ConfigKey, shares: Sequence[Share]) -> None:
        """Keep each share's environments initialised for the configuration `key` (and none of
        a version without a share)."""

    def release(self, key: ConfigKey) -> None:
        """Stop the environments of a configuration."""

    def allocation(self, key: ConfigKey) -> Allocation:
        """How far the configuration's environments are."""


class NoAllocator:
    """The shipped fake: records requests, starts nothing (every status stays IN_PROGRESS)."""

    def __init__(self) -> None:
        # configuration -> qualified ARN of a version -> its requested environments
        self.allocated: dict[ConfigKey, dict[str, int]] = {}

    def allocate(self, key: ConfigKey, shares: Sequence[Share]) -> None:
        self.allocated[key] = {s.version.qualified_arn: s.count for s in shares}

    def release(self, key: ConfigKey) -> None:
        self.allocated.pop(key, None)

    def allocation(self, key: ConfigKey) -> Allocation:
        return Allocation(0, 0, ProvisionedStatus.IN_PROGRESS)


def split(requested: int, primary: str, routing: Mapping[str, float]) -> dict[str, int]:
    """Version -> environments: a configuration of a (weighted) alias divided by the weights.

    The routed version gets requested * weight rounded to the nearest integer, a tie going to
    the primary version (5 at 0.5 → 3 and 2); the primary gets the rest, so the shares add up
    to `requested`. Weights are taken as the decimals they were written as (0.3 is 3/10, not
    the float just under it). A version whose share is 0 is left out."""
    shares = {primary: requested}
    for version, weight in routing.items():
        exact = requested * Fraction(repr(weight))
        routed = min(math.ceil(exact - Fraction(1, 2)), shares[primary])
        shares[primary] -= routed
        shares[version] = routed
    return {version: count for version, count in shares.items() if count > 0}


def provisioned_timestamp(when: datetime | None = None) -> str:
    """LastModified as AWS prints it for these configurations: 2019-11-21T19:32:12+0000."""
    return (when or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S+0000")


@dataclass(frozen=True)
class ProvisionedConfig:
    """What a caller asked for: N environments for a version or an alias."""

    account_id: str
    function_name: str
    qualifier: str  # a version number or an alias name
    requested: int
    last_modified: str

    @property
    def key(self) -> ConfigKey:
        return (self.account_id, self.function_name, self.qualifier)

    def to_record(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> ProvisionedConfig:
        return cls(**{k: record[k] for k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class ProvisionedView:
    """A configuration with its progress: what the API answers."""

    function_arn: str  # of the version or alias
    config: ProvisionedConfig
    allocation: Allocation


@dataclass(frozen=True)
class _Target:
    qualifier: str
    version: FunctionConfig  # what the environments run
    alias: Alias | None


class ProvisionedConcurrency:
    def __init__(
        self,
        store: MetadataStore,
        functions: VersionSource,
        aliases: AliasRegistry,
        limiter: ConcurrencyLimiter,
        allocator: Allocator,
    ) -> None:
        self._store = store
        self._functions = functions
        self._aliases = aliases
        self._limiter = limiter
        self._allocator = allocator
        # (account id, function name) -> qualifier -> configuration
        self._configs: dict[tuple[str, str], dict[str, ProvisionedConfig]] = {}
        aliases.on_change(self._alias_changed)
        aliases.check_updates(self._check_alias_update)

    def load(self) -> None:
        """Reinstate stored configurations (after the functions and aliases) and provision them
        again: environments do not survive a restart."""
        for record in self._store.load_provisioned_configs():
            config = ProvisionedConfig.from_record(record)
            self._configs.setdefault(config.key[:2], {})[config.qualifier] = config
        for (account_id, name), found in self._configs.items():
            total = sum(c.requested for c in found.values())
            self._limiter.restore_provisioned(account_id, name, total)
            for config in found.values():
                self._allocator.allocate(config.key, self._shares(config))

    # operations ------------------------------------------------------------------------------
    def put(self, account_id: str, ref: FunctionRef, requested: int) -> ProvisionedView:
        """PutProvisionedConcurrencyConfig: refusals are AWS's; allocation starts at once."""
        if ref.qualifier in (None, LATEST):
            raise InvalidParameterValueException(UNPUBLISHED)
        target = self._resolve(account_id, ref)
        if target.version.version == LATEST:
            raise InvalidParameterValueException(UNPUBLISHED)
        if self._snap_start_on(account_id, ref.name, target):
            raise InvalidParameterValueException(SNAP_START)
        self._check_conflicts(account_id, ref.name, target)
        found = self._configs.get((account_id, ref.name), {})
        others = sum(c.requested for q, c in found.items() if q != target.qualifier)
        self._limiter.set_provisioned(account_id, ref.name, others + requested)
        config = ProvisionedConfig(
            account_id, ref.name, target.qualifier, requested, provisioned_timestamp()
        )
        self._store.put_provisioned_config(
            account_id, ref.name, target.qualifier, config.to_record()
        )
        self._configs.setdefault((account_id, ref.name), {})[target.qualifier] = config
        self._allocator.allocate(config.key, self._shares(config))
        return self._view(config)

    def get(self, account_id: str, ref: FunctionRef) -> ProvisionedView:
        config = self._find(account_id, ref)
        if config is None:
            raise ProvisionedConcurrencyConfigNotFoundException(NOT_FOUND)
        return self._view(config)

    def delete(self, account_id: str, ref: FunctionRef) -> None:
        """DeleteProvisionedConcurrencyConfig: its environments stop; none is no error (204)."""
        config = self._find(account_id, ref)
        if config is not None:
            self._drop(config)

    def configs(self, account_id: str, ref: FunctionRef) -> list[ProvisionedView]:
        """ListProvisionedConcurrencyConfigs: the function's configurations by qualifier."""
        if self._functions.lookup(account_id, ref.name) is None or _stranger(account_id, ref):
            raise ResourceNotFoundException(
                f"Function not found: {self._arn(account_id, ref.name)}"
            )
        found = self._configs.get((account_id, ref.name), {})
        return [self._view(found[q]) for q in sorted(found)]

    # lifecycle of what configurations belong to ----------------------------------------------
    def forget_function(self, account_id: str, name: str) -> None:
        """A deleted function's configurations go (the store deleted their rows with it)."""
        for config in self._configs.pop((account_id, name), {}).values():
            self._allocator.release(config.key)

    def forget_version(self, account_id: str, name: str, version: str) -> None:
        """A deleted version's configuration goes with it."""
        config = self._configs.get((account_id, name), {}).get(version)
        if config is not None:
            self._drop(config)

    def _alias_changed(
        self, account_id: str, name: str, alias_name: str, alias: Alias | None
    ) -> None:
        config = self._configs.get((account_id, name), {}).get(alias_name)
        if config is None:
            return
        if alias is None:
            self._drop(config)
        else:
            self._allocator.allocate(config.key, self._shares(config))

    def _check_alias_update(
        self, account_id: str, name: str, alias_name: str, updated: Alias
    ) -> None:
        """An alias with provisioned concurrency cannot be moved onto a SnapStart version (nor
        route to one): the same refusal as putting the configuration there."""
        if alias_name not in self._configs.get((account_id, name), {}):
            return
        for number in updated.versions - {LATEST}:
            version = self._functions.version(account_id, name, number)
            if version is not None and version.snap_start_on:
                raise InvalidParameterValueException(SNAP_START)

    # helpers ---------------------------------------------------------------------------------
    def _find(self, account_id: str, ref: FunctionRef) -> ProvisionedConfig | None:
        if ref.qualifier in (None, LATEST):
            raise InvalidParameterValueException(NOT_A_VERSION_OR_ALIAS)
        target = self._resolve(account_id, ref)
        return self._configs.get((account_id, ref.name), {}).get(target.qualifier)

    def _resolve(self, account_id: str, ref: FunctionRef) -> _Target:
        """The version or alias a request names, or AWS's not-found for it."""
        qualifier = ref.qualifier
        assert qualifier is not None
        arn = f"{self._arn(account_id, ref.name)}:{qualifier}"
        exists = self._functions.lookup(account_id, ref.name) is not None
        if _stranger(account_id, ref):
            exists = False
        if is_version_number(qualifier):
            version = self._functions.version(account_id, ref.name, qualifier) if exists else None
            if version is None:
                raise ResourceNotFoundException(f"Function not found: {arn}")
            return _Target(qualifier, version, None)
        alias = self._aliases.find(account_id, ref.name, qualifier) if exists else None
        primary = None
        if alias is not None:
            primary = self._functions.version(account_id, ref.name, alias.function_version)
        if alias is None or primary is None:
            raise ResourceNotFoundException(f"Cannot find alias arn: {arn}")
        return _Target(qualifier, primary, alias)

    def _snap_start_on(self, account_id: str, name: str, target: _Target) -> bool:
        """Whether any version the target runs (an alias's weighted one too) is SnapStart's."""
        if target.version.snap_start_on:
            return True
        for number in self._covered(account_id, name, target.qualifier):
            version = self._functions.version(account_id, name, number)
            if version is not None and version.snap_start_on:
                return True
        return False

    def _check_conflicts(self, account_id: str, name: str, target: _Target) -> None:
        """One configuration per version, directly or through an alias (AWS's 409s)."""
        wanted = self._covered(account_id, name, target.qualifier)
        for qualifier in self._configs.get((account_id, name), {}):
            if qualifier == target.qualifier:
                continue
            if not wanted & self._covered(account_id, name, qualifier):
                continue
            if target.alias is not None:
                raise ResourceConflictException(ALIAS_ON_PROVISIONED_VERSION)
            if not is_version_number(qualifier):
                raise ResourceConflictException(VERSION_UNDER_ALIAS)

    def _covered(self, account_id: str, name: str, qualifier: str) -> frozenset[str]:
        """The published versions a version or alias can run (an alias: both it routes to)."""
        if is_version_number(qualifier):
            return frozenset({qualifier})
        alias = self._aliases.find(account_id, name, qualifier)
        return frozenset() if alias is None else alias.versions - {LATEST}

    def _shares(self, config: ProvisionedConfig) -> list[Share]:
        """What a configuration's environments run: its version, or its alias's version —
        a weighted alias's two versions by the weights (``split``)."""
        account_id, name, qualifier = config.key
        if is_version_number(qualifier):
            counts = {qualifier: config.requested}
        else:
            alias = self._aliases.find(account_id, name, qualifier)
            if alias is None:
                return []
            counts = split(config.requested, alias.function_version, alias.routing)
        shares = []
        for number, count in counts.items():
            version = self._functions.version(account_id, name, number)
            if version is not None and version.version != LATEST:
                shares.append(Share(version, count))
        return shares

    def _drop(self, config: ProvisionedConfig) -> None:
        account_id, name, qualifier = config.key
        self._store.delete_provisioned_config(account_id, name, qualifier)
        found = self._configs.get((account_id, name), {})
        found.pop(qualifier, None)
        total = sum(c.requested for c in found.values())
        self._limiter.restore_provisioned(account_id, name, total)
        self._allocator.release(config.key)

    def _view(self, config: ProvisionedConfig) -> ProvisionedView:
        arn = f"{self._arn(config.account_id, config.function_name)}:{config.qualifier}"
        return ProvisionedView(arn, config, self._allocator.allocation(config.key))

    def _arn(self, account_id: str, name: str) -> str:
        return function_arn(self._functions.region, account_id, name)


def _stranger(account_id: str, ref: FunctionRef) -> bool:
    """Whether the reference names another account's function (never found)."""
    return ref.account_id not in (None, account_id)
