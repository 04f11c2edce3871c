"""Accounts and the access keys that act for them.

An access key resolves to an account from one of three sources, in this order:

- sessions: the temporary keys (``ASIA…`` + session token) handed to execution environments,
  registered by the launcher while the environment lives, so a function can call the API with
  the credentials it was given and act for the account that owns it;
- the root credentials (DESIGN §1): the key of the default account;
- the AccountStore: accounts made by ``lambdad accounts create``. The admin command writes the
  database directly; the registry reads the store on a cache miss, so an account created while
  the server runs can be used at once.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from lambdad.credentials import (
    RootCredentials,
    generate_access_key_id,
    generate_secret_access_key,
)
from lambdad.store.accounts import AccountExists, AccountStore, StoredAccount

ACCOUNT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,49}$")


class InvalidAccountName(ValueError):
    pass


@dataclass(frozen=True)
class AccessKey:
    """A key that may sign requests, and the account it acts for."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    account_id: str
    # Session keys must come with their token (X-Amz-Security-Token); long-term keys without one.
    session_token: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class AccountStatistics:
    cached_keys: int  # long-term keys (root + stored accounts) looked up so far
    sessions: int  # environment session keys currently registered


class AccountRegistry:
    def __init__(self, store: AccountStore, root: RootCredentials, default_account_id: str) -> None:
        self._store = store
        self.default_account_id = default_account_id
        # access key id -> key, for the root key and every stored key already used
        self._keys: dict[str, AccessKey] = {
            root.access_key_id: AccessKey(
                root.access_key_id, root.secret_access_key, default_account_id
            )
        }
        # access key id -> key, for the environments alive now
        self._sessions: dict[str, AccessKey] = {}

    def lookup(self, access_key_id: str) -> AccessKey | None:
        key = self._sessions.get(access_key_id) or self._keys.get(access_key_id)
        if key is not None:
            return key
        stored = self._store.by_access_key(access_key_id)
        if stored is None:
            return None
        key = AccessKey(stored.access_key_id, stored.secret_access_key, stored.account_id)
        self._keys[access_key_id] = key
        return key

    def register_session(
        self,
        access_key_id: str,
        secret: str,
        account_id: str,
        session_token: str | None = None,
    ) -> None:
        """Accept an environment's temporary key for `account_id` until `forget_session`."""
        self._sessions[access_key_id] = AccessKey(access_key_id, secret, account_id, session_token)

    def forget_session(self, access_key_id: str) -> None:
        self._sessions.pop(access_key_id, None)

    def create(self, name: str) -> StoredAccount:
        return create_account(self._store, name, reserved_ids=(self.default_account_id,))

    def accounts(self) -> list[StoredAccount]:
        return self._store.accounts()

    def statistics(self) -> AccountStatistics:
        return AccountStatistics(cached_keys=len(self._keys), sessions=len(self._sessions))


def create_account(
    store: AccountStore,
    name: str,
    *,
    reserved_ids: Collection[str] = (),
    clock: Callable[[], float] = time.time,
) -> StoredAccount:
    """A new account with a fresh 12-digit id and an AKIA… key pair, stored."""
    if not ACCOUNT_NAME.match(name):
        raise InvalidAccountName(
            f"invalid account name {name!r}: 1-50 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    existing = store.accounts()
    if any(a.name == name for a in existing):
        raise AccountExists(name)
    taken = {a.account_id for a in existing} | set(reserved_ids)
    account_id = _new_account_id(taken)
    account = StoredAccount(
        account_id=account_id,
        name=name,
        access_key_id=generate_access_key_id(),
        secret_access_key=generate_secret_access_key(),
        created_at=clock(),
    )
    store.add(account)
    return account


def _new_account_id(taken: Collection[str]) -> str:
    while True:
        candidate = f"{secrets.randbelow(9 * 10**11) + 10**11}"  # 12 digits, no leading zero
        if candidate not in taken:
            return candidate
