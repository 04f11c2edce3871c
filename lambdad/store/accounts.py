"""AccountStore: durable records of the accounts beside the default one, with their access keys.

Written by the `lambdad accounts` admin command (directly, not through the API) and read by the
server when an access key it has not seen yet signs a request. A secret is stored in clear
because SigV4 verification recomputes an HMAC with it; the database file is therefore kept
private to its owner (mode 0600). ``SqliteAccountStore`` shares the metadata database file;
``MemoryAccountStore`` is the fake.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

from lambdad.store.sqlite import SqliteDatabase


class AccountExists(Exception):
    """An account with this name, id or access key id is already stored."""


@dataclass(frozen=True)
class StoredAccount:
    account_id: str
    name: str
    access_key_id: str
    # Never logged or printed (repr=False keeps it out of tracebacks and debug output).
    secret_access_key: str = field(repr=False)
    created_at: float


class AccountStore(ABC):
    @abstractmethod
    def add(self, account: StoredAccount) -> None:
        """Store a new account; AccountExists if its name, id or key is taken."""

    @abstractmethod
    def by_access_key(self, access_key_id: str) -> StoredAccount | None:
        """The account an access key belongs to, if any."""

    @abstractmethod
    def accounts(self) -> list[StoredAccount]:
        """Every stored account, oldest first."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources."""


_SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    account_id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    access_key_id TEXT NOT NULL UNIQUE,
    secret_access_key TEXT NOT NULL,
    created_at REAL NOT NULL
);
"""
_COLUMNS = "account_id, name, access_key_id, secret_access_key, created_at"


class SqliteAccountStore(SqliteDatabase, AccountStore):
    """The `accounts` table of the data dir's SQLite database (WAL; shared with MetadataStore)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, _SCHEMA)
        _make_private(path)

    def add(self, account: StoredAccount) -> None:
        try:
            with self._lock:
                self._db.execute(
                    f"INSERT INTO accounts ({_COLUMNS}) VALUES (?, ?, ?, ?, ?)",
                    (
                        account.account_id,
                        account.name,
                        account.access_key_id,
                        account.secret_access_key,
                        account.created_at,
                    ),
                )
        except sqlite3.IntegrityError:
            raise AccountExists(account.name) from None

    def by_access_key(self, access_key_id: str) -> StoredAccount | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT {_COLUMNS} FROM accounts WHERE access_key_id = ?", (access_key_id,)
            ).fetchone()
        return None if row is None else StoredAccount(*row)

    def accounts(self) -> list[StoredAccount]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM accounts ORDER BY created_at, rowid"
            ).fetchall()
        return [StoredAccount(*row) for row in rows]


class MemoryAccountStore(AccountStore):
    """The shipped fake: same contract, nothing durable."""

    def __init__(self) -> None:
        self._accounts: list[StoredAccount] = []

    def add(self, account: StoredAccount) -> None:
        if any(
            (a.account_id == account.account_id)
            or (a.name == account.name)
            or (a.access_key_id == account.access_key_id)
            for a in self._accounts
        ):
            raise AccountExists(account.name)
        self._accounts.append(account)

    def by_access_key(self, access_key_id: str) -> StoredAccount | None:
        return next((a for a in self._accounts if a.access_key_id == access_key_id), None)

    def accounts(self) -> list[StoredAccount]:
        return list(self._accounts)


def _make_private(path: Path) -> None:
    """Secrets live in this database: owner-only, including SQLite's WAL and shared-memory files."""
    for candidate in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        with contextlib.suppress(FileNotFoundError):
            os.chmod(candidate, 0o600)
