"""MetadataStore: durable records of functions and queued async events.

The store is written by the control plane and the async queue, never on the synchronous invoke
path: the registry keeps every function in memory and writes through.
``SqliteMetadataStore`` is the embedded default (WAL mode); ``MemoryMetadataStore`` is the fake.
"""

from __future__ import annotations

import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson


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
        """Remove a function with all of its versions (idempotent)."""

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


class SqliteMetadataStore(MetadataStore):
    """SQLite in WAL mode; one connection guarded by a lock (calls are short)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def load_functions(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT record FROM functions ORDER BY rowid").fetchall()
        return [orjson.loads(row[0]) for row in rows]

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
            db.execute(
                "DELETE FROM functions WHERE account_id = ? AND name = ?", (account_id, name)
            )

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

    def close(self) -> None:
        with self._lock:
            self._db.close()


class MemoryMetadataStore(MetadataStore):
    """The shipped fake: same contract, nothing durable."""

    def __init__(self) -> None:
        self._functions: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._events: dict[str, QueuedEvent] = {}

    def load_functions(self) -> list[dict[str, Any]]:
        return [dict(record) for record in self._functions.values()]

    def put_function(
        self, account_id: str, name: str, version: str, record: dict[str, Any]
    ) -> None:
        self._functions[(account_id, name, version)] = dict(record)

    def delete_function(self, account_id: str, name: str) -> None:
        for key in [k for k in self._functions if k[:2] == (account_id, name)]:
            del self._functions[key]

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
