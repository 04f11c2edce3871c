"""AliasRegistry: names for function versions, with weighted routing to a second version.

Aliases are held in memory (an alias invocation resolves without touching SQLite) and written
through to the MetadataStore. The registry of function versions is reached through the small
`VersionSource` protocol, so this module does not depend on FunctionRegistry itself.

Model validation at the API edge already refused malformed names, version keys that are not
numbers and weights outside 0.0-1.0; what is checked here is what needs the function's state.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

from lambdad.control.model import LATEST, Alias, FunctionConfig, function_arn, new_revision_id
from lambdad.errors import (
    InvalidParameterValueException,
    PreconditionFailedException,
    ResourceConflictException,
    ResourceNotFoundException,
    UntypedInvalidParameterValueException,
)
from lambdad.store.metadata import MetadataStore

STALE_REVISION = (
    "The Revision Id provided does not match the latest Revision Id. Call the "
    "GetFunction/GetAlias API to retrieve the latest Revision Id"
)


# (account id, function name, alias name, the alias now or None when it was deleted)
AliasListener = Callable[[str, str, str, Alias | None], None]
# (account id, function name, alias name, the alias an update would make): raises to refuse it
AliasCheck = Callable[[str, str, str, Alias], None]


class VersionSource(Protocol):
    """What aliases need to know about functions."""

    region: str

    def lookup(self, account_id: str, name: str) -> FunctionConfig | None:
        """The $LATEST configuration of a function, or None."""

    def version(self, account_id: str, name: str, version: str) -> FunctionConfig | None:
        """One version ($LATEST or a number) of a function, or None."""


class AliasRegistry:
    def __init__(self, store: MetadataStore, functions: VersionSource) -> None:
        self._store = store
        self._functions = functions
        # (account id, function name) -> alias name -> alias
        self._aliases: dict[tuple[str, str], dict[str, Alias]] = {}
        self._listeners: list[AliasListener] = []
        self._checks: list[AliasCheck] = []

    def load(self) -> None:
        for record in self._store.load_aliases():
            self._remember(Alias.from_record(record))

    def on_change(self, listener: AliasListener) -> None:
        """Call listener(account, function, alias name, alias or None) after an update or a
        deletion (provisioned concurrency follows its alias's version)."""
        self._listeners.append(listener)

    def check_updates(self, check: AliasCheck) -> None:
        """Call check(account, function, alias name, the updated alias) before an update is
        saved: what it raises refuses the update, nothing changed (provisioned concurrency
        refuses a move onto a SnapStart version)."""
        self._checks.append(check)

    # reads ---------------------------------------------------------------------------------
    def find(self, account_id: str, function: str, name: str) -> Alias | None:
        """Hot-path read: an alias or None."""
        return self._aliases.get((account_id, function), {}).get(name)

    def get(self, account_id: str, function: str, name: str) -> Alias:
        self._require_function(account_id, function)
        alias = self.find(account_id, function, name)
        if alias is None:
            arn = function_arn(self._functions.region, account_id, function)
            raise ResourceNotFoundException(f"Cannot find alias arn: {arn}:{name}")
        return alias

    def aliases(self, account_id: str, function: str, version: str | None = None) -> list[Alias]:
        """A function's aliases by name; with `version`, those whose primary version it is."""
        self._require_function(account_id, function)
        found = self._aliases.get((account_id, function), {}).values()
        return sorted(
            (a for a in found if version is None or a.function_version == version),
            key=lambda a: a.name,
        )

    def referencing(self, account_id: str, function: str, version: str) -> list[str]:
        """Names of the aliases that can run `version` (primary or routed), sorted."""
        found = self._aliases.get((account_id, function), {}).values()
        return sorted(a.name for a in found if version in a.versions)

    # writes --------------------------------------------------------------------------------
    def create(
        self,
        account_id: str,
        function: str,
        name: str,
        version: str,
        description: str | None,
        routing: Mapping[str, float] | None,
    ) -> Alias:
        self._require_version(account_id, function, version)
        existing = self.find(account_id, function, name)
        if existing is not None:
            raise ResourceConflictException(f"Alias already exists: {existing.arn}")
        weights = dict(routing or {})
        self._check_routing(account_id, function, version, weights)
        alias = Alias(
            account_id=account_id,
            region=self._functions.region,
            function_name=function,
            name=name,
            function_version=version,
            description=description or "",
            routing=weights,
        )
        self._save(alias)
        return alias

    def update(
        self,
        account_id: str,
        function: str,
        name: str,
        version: str | None,
        description: str | None,
        routing: Mapping[str, float] | None,
        revision_id: str | None,
    ) -> Alias:
        """Change what is given (routing None: unchanged; empty: removed); a new RevisionId."""
        self._require_function(account_id, function)
        current = self.find(account_id, function, name)
        if current is None:
            arn = function_arn(self._functions.region, account_id, function)
            raise ResourceNotFoundException(f"Alias not found: {arn}:{name}")
        if revision_id is not None and revision_id != current.revision_id:
            raise PreconditionFailedException(STALE_REVISION)
        if version is not None:
            self._require_version(account_id, function, version)
        target = current.function_version if version is None else version
        weights = dict(current.routing if routing is None else routing)
        self._check_routing(account_id, function, target, weights)
        updated = current.evolve(
            function_version=target,
            description=current.description if description is None else description,
            routing=weights,
            revision_id=new_revision_id(),
        )
        for check in self._checks:
            check(account_id, function, name, updated)
        self._save(updated)
        self._notify(account_id, function, name, updated)
        return updated

    def delete(self, account_id: str, function: str, name: str) -> None:
        """Remove an alias; removing one that does not exist succeeds (AWS answers 204)."""
        self._require_function(account_id, function)
        if self._aliases.get((account_id, function), {}).pop(name, None) is not None:
            self._store.delete_alias(account_id, function, name)
            self._notify(account_id, function, name, None)

    def forget_function(self, account_id: str, function: str) -> None:
        """Drop a deleted function's aliases from memory (the store deleted them with it)."""
        self._aliases.pop((account_id, function), None)

    # helpers -------------------------------------------------------------------------------
    def _notify(self, account_id: str, function: str, name: str, alias: Alias | None) -> None:
        for listener in self._listeners:
            listener(account_id, function, name, alias)

    def _save(self, alias: Alias) -> None:
        self._store.put_alias(alias.account_id, alias.function_name, alias.name, alias.to_record())
        self._remember(alias)

    def _remember(self, alias: Alias) -> None:
        self._aliases.setdefault((alias.account_id, alias.function_name), {})[alias.name] = alias

    def _require_function(self, account_id: str, function: str) -> None:
        if self._functions.lookup(account_id, function) is None:
            raise self._not_found(account_id, function, None)

    def _require_version(self, account_id: str, function: str, version: str) -> None:
        if self._functions.version(account_id, function, version) is None:
            raise self._not_found(account_id, function, version)

    def _check_routing(
        self, account_id: str, function: str, version: str, weights: Mapping[str, float]
    ) -> None:
        """AWS's checks of AdditionalVersionWeights, in AWS's order."""
        if len(weights) > 1:
            raise InvalidParameterValueException(
                "Number of items in AdditionalVersionWeights cannot be greater than 1"
            )
        for extra in weights:
            if extra == version:
                raise InvalidParameterValueException(
                    f"Invalid function version {version}. Function version {version} is already "
                    "included in routing configuration."
                )
            if version == LATEST:
                raise UntypedInvalidParameterValueException(
                    "$LATEST is not supported for an alias pointing to more than 1 version"
                )
            self._require_version(account_id, function, extra)

    def _not_found(
        self, account_id: str, function: str, qualifier: str | None
    ) -> ResourceNotFoundException:
        arn = function_arn(self._functions.region, account_id, function)
        return ResourceNotFoundException(
            f"Function not found: {arn}:{qualifier}" if qualifier else f"Function not found: {arn}"
        )
