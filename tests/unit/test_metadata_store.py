"""The SQLite store and its in-memory fake honour one contract."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lambdad.control.model import Alias, FunctionConfig, FunctionMeta, FunctionState
from lambdad.store.metadata import (
    MemoryMetadataStore,
    MetadataStore,
    QueuedEvent,
    SqliteMetadataStore,
)


@pytest.fixture(params=["sqlite", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MetadataStore]:
    impl: MetadataStore = (
        SqliteMetadataStore(tmp_path / "m.sqlite3")
        if request.param == "sqlite"
        else MemoryMetadataStore()
    )
    yield impl
    impl.close()


def sample(name: str) -> FunctionConfig:
    return FunctionConfig(
        account_id="000000000000",
        region="us-east-1",
        name=name,
        runtime="python3.11",
        handler="app.handler",
        role="arn:aws:iam::000000000000:role/r",
        code_key="a" * 64,
        code_sha256="x",
        code_size=3,
        environment={"A": "1"},
        tags={"t": "v"},
    )


def test_function_round_trip(store: MetadataStore) -> None:
    config = sample("one")
    store.put_function(config.account_id, config.name, config.version, config.to_record())
    (loaded,) = [FunctionConfig.from_record(r) for r in store.load_functions()]
    assert loaded == config
    assert loaded.state is FunctionState.PENDING


def test_replace_and_delete(store: MetadataStore) -> None:
    config = sample("two")
    store.put_function(config.account_id, config.name, config.version, config.to_record())
    changed = config.evolve(memory_size=512)
    store.put_function(changed.account_id, changed.name, changed.version, changed.to_record())
    assert [r["memory_size"] for r in store.load_functions()] == [512]
    store.delete_function(config.account_id, config.name)
    store.delete_function(config.account_id, config.name)
    assert store.load_functions() == []


def test_versions_aliases_and_meta_go_with_the_function(store: MetadataStore) -> None:
    config = sample("three")
    version = config.evolve(version="1")
    for c in (config, version, sample("other")):
        store.put_function(c.account_id, c.name, c.version, c.to_record())
    alias = Alias(config.account_id, config.region, config.name, "live", "1", routing={"2": 0.5})
    store.put_alias(config.account_id, config.name, "live", alias.to_record())
    meta = FunctionMeta(config.account_id, config.name, last_version=4, reserved_concurrency=0)
    store.put_function_meta(config.account_id, config.name, meta.to_record())
    assert [Alias.from_record(r) for r in store.load_aliases()] == [alias]
    assert [FunctionMeta.from_record(r) for r in store.load_function_meta()] == [meta]
    store.delete_function_version(config.account_id, config.name, "1")
    store.delete_function_version(config.account_id, config.name, "1")
    assert sorted((r["name"], r["version"]) for r in store.load_functions()) == [
        ("other", "$LATEST"),
        ("three", "$LATEST"),
    ]
    store.delete_alias(config.account_id, config.name, "live")
    assert store.load_aliases() == []
    store.put_alias(config.account_id, config.name, "live", alias.to_record())
    store.delete_function(config.account_id, config.name)
    assert [r["name"] for r in store.load_functions()] == ["other"]
    assert store.load_aliases() == [] and store.load_function_meta() == []


def test_event_queue(store: MetadataStore) -> None:
    first = QueuedEvent("b", "000000000000", "fn", "$LATEST", b"{}", None, 2.0)
    second = QueuedEvent("a", "000000000000", "fn", "$LATEST", b"[]", "e30=", 1.0)
    store.enqueue_event(first)
    store.enqueue_event(second)
    assert [e.event_id for e in store.queued_events()] == ["a", "b"]
    store.record_attempt("a", 2)
    assert store.queued_events()[0].attempts == 2
    store.finish_event("a")
    store.finish_event("a")
    assert [e.event_id for e in store.queued_events()] == ["b"]


def test_sqlite_is_in_wal_mode(tmp_path: Path) -> None:
    SqliteMetadataStore(tmp_path / "w.sqlite3").close()
    assert (tmp_path / "w.sqlite3").exists()
    import sqlite3

    mode = sqlite3.connect(tmp_path / "w.sqlite3").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
