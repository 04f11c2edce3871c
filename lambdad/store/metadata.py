"""MetadataStore: durable records of functions (versions, aliases, provisioned concurrency
configurations) and queued async events.

The store is written by the control plane and the async queue, never on the synchronous invoke
path: the registry keeps every function in memory and writes through.
``SqliteMetadataStore`` is the embedded default (WAL mode); ``MemoryMetadataStore`` is the fake.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from lambdad.store.sqlite import SqliteDatabase


@dataclass(frozen=True)
class QueuedEvent:
    """One accepted Event invocation, waiting to run."""

    event_id: str
    account_id: str
    function_name: str
    qualifier: str
    payload: bytes
    client_context: str | None
    enqueued_at: float
    attempts: int = 0


class MetadataStore(ABC):
    @abstractmethod
    def load_functions(self) -> list[dict[str, Any]]:
        """Every stored function version record."""

    @abstractmethod
    def put_function(
        self, account_id: str, name: str, version: str, record: dict[str, Any]
    ) -> None:
        """Insert or replace one function version."""

    @abstractmethod
    def delete_function(self, account_id: str, name: str) -> None:
        """Remove a function with all of its versions, aliases, provisioned concurrency
        configurations and meta record (idempotent)."""

    @abstractmethod
    def delete_function_version(self, account_id: str, name: str, version: str) -> None:
        """Remove one published version (idempotent)."""

    @abstractmethod
    def load_aliases(self) -> list[dict[str, Any]]:
        """Every stored alias record."""

    @abstractmethod
    def put_alias(self, account_id: str, name: str, alias: str, record: dict[str, Any]) -> None:
        """Insert or replace one alias of a function."""

    @abstractmethod
    def delete_alias(self, account_id: str, name: str, alias: str) -> None:
        """Remove one alias (idempotent)."""

    @abstractmethod
    def load_provisioned_configs(self) -> list[dict[str, Any]]:
        """Every stored provisioned concurrency configuration record."""

    @abstractmethod
    def put_provisioned_config(
        self, account_id: str, name: str, qualifier: str, record: dict[str, Any]
    ) -> None:
        """Insert or replace the provisioned concurrency configuration of a version or alias."""

    @abstractmethod
    def delete_provisioned_config(self, account_id: str, name: str, qualifier: str) -> None:
        """Remove one provisioned concurrency configuration (idempotent)."""

    @abstractmethod
    def load_function_meta(self) -> list[dict[str, Any]]:
        """Every stored function meta record (version counter, reserved concurrency)."""

    @abstractmethod
    def put_function_meta(self, account_id: str, name: str, record: dict[str, Any]) -> None:
        """Insert or replace the meta record of a function."""

    @abstractmethod
    def enqueue_event(self, event: QueuedEvent) -> None:
        """Durably record an accepted async invocation."""

    @abstractmethod
    def queued_events(self) -> list[QueuedEvent]:
        """Events accepted but not finished, oldest first."""

    @abstractmethod
    def finish_event(self, event_id: str) -> None:
        """Forget an event that ran (or was dropped after its retries)."""

    @abstractmethod
    def record_attempt(self, event_id: str, attempts: int) -> None:
        """Persist how many times an event has been tried."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources."""


_SCHEMA = """
CREATE TABLE IF NOT EXISTS functions (
    account_id TEXT NOT NULL,
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    record BLOB NOT NULL,
    PRIMARY KEY (account_id, name, version)
);
CREATE TABLE IF NOT EXISTS aliases (
    account_id TEXT NOT NULL,
    name TEXT NOT NULL,
    alias TEXT NOT NULL,
    record BLOB NOT NULL,
    PRIMARY KEY (account_id, name, alias)
);
CREATE TABLE IF NOT EXISTS provisioned_configs (
    account_id TEXT NOT NULL,
    name TEXT NOT NULL,
    qualifier TEXT NOT NULL,
    record BLOB NOT NULL,
    PRIMARY KEY (account_id, name, qualifier)
);
CREATE TABLE IF NOT EXISTS function_meta (
    account_id TEXT NOT NULL,
    name TEXT NOT NULL,
    record BLOB NOT NULL,
    PRIMARY KEY (account_id, name)
);
CREATE TABLE IF NOT EXISTS async_events (
    event_id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    function_name TEXT NOT NULL,
    qualifier TEXT NOT NULL,
    payload BLOB NOT NULL,
    client_context TEXT,
    enqueued_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0
);
"""


class SqliteMetadataStore(SqliteDatabase, MetadataStore):
    """SQLite in WAL mode; one connection guarded by a lock (calls are short)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, _SCHEMA)

    def load_functions(self) -> list[dict[str, Any]]:
        return self._records("functions")

    def put_function(
        self, account_id: str, name: str, version: str, record: dict[str, Any]
    ) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO functions VALUES (?, ?, ?, ?)",
                (account_id, name, version, orjson.dumps(record)),
            )

    def delete_function(self, account_id: str, name: str) -> None:
        with self._tx() as db:
            for table in ("functions", "aliases", "provisioned_configs", "function_meta"):
                db.execute(
                    f"DELETE FROM {table} WHERE account_id = ? AND name = ?", (account_id, name)
                )

    def delete_function_version(self, account_id: str, name: str, version: str) -> None:
        with self._tx() as db:
            db.execute(
                "DELETE FROM functions WHERE account_id = ? AND name = ? AND version = ?",
                (account_id, name, version),
            )

    def load_aliases(self) -> list[dict[str, Any]]:
        return self._records("aliases")

    def put_alias(self, account_id: str, name: str, alias: str, record: dict[str, Any]) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO aliases VALUES (?, ?, ?, ?)",
                (account_id, name, alias, orjson.dumps(record)),
            )

    def delete_alias(self, account_id: str, name: str, alias: str) -> None:
        with self._tx() as db:
            db.execute(
                "DELETE FROM aliases WHERE account_id = ? AND name = ? AND alias = ?",
                (account_id, name, alias),
            )

    def load_provisioned_configs(self) -> list[dict[str, Any]]:
        return self._records("provisioned_configs")

    def put_provisioned_config(
        self, account_id: str, name: str, qualifier: str, record: dict[str, Any]
    ) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO provisioned_configs VALUES (?, ?, ?, ?)",
                (account_id, name, qualifier, orjson.dumps(record)),
            )

    def delete_provisioned_config(self, account_id: str, name: str, qualifier: str) -> None:
        with self._tx() as db:
            db.execute(
                "DELETE FROM provisioned_configs WHERE account_id = ? AND name = ? AND "
                "qualifier = ?",
                (account_id, name, qualifier),
            )

    def load_function_meta(self) -> list[dict[str, Any]]:
        return self._records("function_meta")

    def put_function_meta(self, account_id: str, name: str, record: dict[str, Any]) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO function_meta VALUES (?, ?, ?)",
                (account_id, name, orjson.dumps(record)),
            )

    def _records(self, table: str) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(f"SELECT record FROM {table} ORDER BY rowid").fetchall()
        return [orjson.loads(row[0]) for row in rows]

    def enqueue_event(self, event: QueuedEvent) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO async_events VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    event.event_id,
                    event.account_id,
                    event.function_name,
                    event.qualifier,
                    event.payload,
                    event.client_context,
                    event.enqueued_at,
                    event.attempts,
                ),
            )

    def queued_events(self) -> list[QueuedEvent]:
        with self._lock:
            rows = self._db.execute(
                "SELECT event_id, account_id, function_name, qualifier, payload, client_context,"
                " enqueued_at, attempts FROM async_events ORDER BY enqueued_at"
            ).fetchall()
        return [QueuedEvent(*row) for row in rows]

    def finish_event(self, event_id: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM async_events WHERE event_id = ?", (event_id,))

    def record_attempt(self, event_id: str, attempts: int) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE async_events SET attempts = ? WHERE event_id = ?", (attempts, event_id)
            )


class MemoryMetadataStore(MetadataStore):
    """The shipped fake: same contract, nothing durable."""

    def __init__(self) -> None:
        self._functions: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._aliases: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._provisioned: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._meta: dict[tuple[str, str], dict[str, Any]] = {}
        self._events: dict[str, QueuedEvent] = {}

    def load_functions(self) -> list[dict[str, Any]]:
        return [dict(record) for record in self._functions.values()]

    def put_function(
        self, account_id: str, name: str, version: str, record: dict[str, Any]
    ) -> None:
        self._functions[(account_id, name, version)] = dict(record)

    def delete_function(self, account_id: str, name: str) -> None:
        for table in (self._functions, self._aliases, self._provisioned):
            for key in [k for k in table if k[:2] == (account_id, name)]:
                del table[key]
        self._meta.pop((account_id, name), None)

    def delete_function_version(self, account_id: str, name: str, version: str) -> None:
        self._functions.pop((account_id, name, version), None)

    def load_aliases(self) -> list[dict[str, Any]]:
        return [dict(record) for record in self._aliases.values()]

    def put_alias(self, account_id: str, name: str, alias: str, record: dict[str, Any]) -> None:
        self._aliases[(account_id, name, alias)] = dict(record)

    def delete_alias(self, account_id: str, name: str, alias: str) -> None:
        self._aliases.pop((account_id, name, alias), None)

    def load_provisioned_configs(self) -> list[dict[str, Any]]:
        return [dict(record) for record in self._provisioned.values()]

    def put_provisioned_config(
        self, account_id: str, name: str, qualifier: str, record: dict[str, Any]
    ) -> None:
        self._provisioned[(account_id, name, qualifier)] = dict(record)

    def delete_provisioned_config(self, account_id: str, name: str, qualifier: str) -> None:
        self._provisioned.pop((account_id, name, qualifier), None)

    def load_function_meta(self) -> list[dict[str, Any]]:
        return [dict(record) for record in self._meta.values()]

    def put_function_meta(self, account_id: str, name: str, record: dict[str, Any]) -> None:
        self._meta[(account_id, name)] = dict(record)

    def enqueue_event(self, event: QueuedEvent) -> None:
        self._events[event.event_id] = event

    def queued_events(self) -> list[QueuedEvent]:
        return sorted(self._events.values(), key=lambda e: e.enqueued_at)

    def finish_event(self, event_id: str) -> None:
        self._events.pop(event_id, None)

    def record_attempt(self, event_id: str, attempts: int) -> None:
        event = self._events.get(event_id)
        if event is not None:
            self._events[event_id] = QueuedEvent(**{**event.__dict__, "attempts": attempts})
