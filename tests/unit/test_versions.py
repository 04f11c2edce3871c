"""FunctionRegistry's versions, aliases and reservations, over the shipped fakes and SQLite."""

from __future__ import annotations

from pathlib import Path

import pytest

from lambdad.control.arns import FunctionRef
from lambdad.control.functions import FunctionRegistry, FunctionSettings
from lambdad.control.model import Alias
from lambdad.errors import (
    InvalidParameterValueException,
    PreconditionFailedException,
    ResourceConflictException,
    ResourceNotFoundException,
)
from lambdad.runtime.runtimes import Family, RuntimeCatalog, RuntimeSpec
from lambdad.scheduler.limiter import ConcurrencyLimiter
from lambdad.store.blobs import MemoryBlobStore
from lambdad.store.code_cache import CodeCache
from lambdad.store.metadata import MemoryMetadataStore, MetadataStore, SqliteMetadataStore
from tests.conftest import make_zip

ACCOUNT = "000000000000"
RUNTIME = "provided.al2023"
SETTINGS = FunctionSettings(
    runtime=RUNTIME, handler="x", role="arn:aws:iam::000000000000:role/r", description="d"
)


def package(tag: str) -> bytes:
    return make_zip({"bootstrap": f"#!/bin/sh\n# {tag}\n"}, {"bootstrap": 0o755})


def registry(
    tmp_path: Path,
    store: MetadataStore | None = None,
    limiter: ConcurrencyLimiter | None = None,
    draws: list[float] | None = None,
) -> FunctionRegistry:
    blobs = MemoryBlobStore()
    catalog = RuntimeCatalog({RUNTIME: RuntimeSpec(RUNTIME, Family.PROVIDED, None)})
    pending = draws if draws is not None else []
    reg = FunctionRegistry(
        store or MemoryMetadataStore(),
        blobs,
        CodeCache(tmp_path / "code", blobs),
        catalog,
        "us-east-1",
        limiter,
        draw=lambda: pending.pop(0),
    )
    reg.load()
    return reg


def ref(name: str, qualifier: str | None = None) -> FunctionRef:
    return FunctionRef(name, qualifier, None, None)


async def with_versions(reg: FunctionRegistry, name: str = "fn") -> None:
    """$LATEST ("c") with versions 1 ("a") and 2 ("b")."""
    await reg.create(ACCOUNT, name, SETTINGS, package("a"), {})
    await reg.publish(ACCOUNT, ref(name))
    await reg.update_code(ACCOUNT, ref(name), package("b"), None)
    await reg.publish(ACCOUNT, ref(name))
    await reg.update_code(ACCOUNT, ref(name), package("c"), None)


async def test_versions_snapshot_latest_and_are_numbered(tmp_path: Path) -> None:
    reg = registry(tmp_path)
    await with_versions(reg)
    listed = reg.versions(ACCOUNT, ref("fn"))
    assert [v.version for v in listed] == ["$LATEST", "1", "2"]
    assert len({v.code_key for v in listed}) == 3
    assert reg.get(ACCOUNT, ref("fn", "1")).code_key == listed[1].code_key
    assert all(v.tags == {} for v in listed[1:])
    with pytest.raises(ResourceNotFoundException, match=r"function:fn:3$"):
        reg.get(ACCOUNT, ref("fn", "3"))


async def test_publish_answers_the_last_version_until_latest_changes(tmp_path: Path) -> None:
    reg = registry(tmp_path)
    await reg.create(ACCOUNT, "fn", SETTINGS, package("a"), {})
    first = await reg.publish(ACCOUNT, ref("fn"), description="one")
    revision = reg.get(ACCOUNT, ref("fn")).revision_id
    again = await reg.publish(ACCOUNT, ref("fn"), description="other")
    assert again == first and first.description == "one"
    assert reg.get(ACCOUNT, ref("fn")).revision_id == revision  # nothing published, no bump
    # A new description of $LATEST is a change (recorded), unlike PublishVersion's Description.
    await reg.update_configuration(ACCOUNT, ref("fn"), FunctionSettings(description="e"), None)
    second = await reg.publish(ACCOUNT, ref("fn"))
    assert (second.version, second.description) == ("2", "e")


async def test_preconditions(tmp_path: Path) -> None:
    reg = registry(tmp_path)
    await reg.create(ACCOUNT, "fn", SETTINGS, package("a"), {})
    with pytest.raises(PreconditionFailedException):
        await reg.publish(ACCOUNT, ref("fn"), revision_id="stale")
    with pytest.raises(InvalidParameterValueException, match=r"^CodeSHA256 \(x\) is different"):
        await reg.publish(ACCOUNT, ref("fn"), code_sha256="x")
    latest = reg.get(ACCOUNT, ref("fn"))
    published = await reg.publish(
        ACCOUNT, ref("fn"), code_sha256=latest.code_sha256, revision_id=latest.revision_id
    )
    assert published.version == "1"


async def test_versions_are_not_updated_in_place(tmp_path: Path) -> None:
    reg = registry(tmp_path)
    await with_versions(reg)
    with pytest.raises(ResourceNotFoundException, match=r"function:fn:1$"):
        await reg.update_code(ACCOUNT, ref("fn", "1"), package("z"), None)
    with pytest.raises(ResourceNotFoundException):
        await reg.update_configuration(ACCOUNT, ref("fn", "1"), FunctionSettings(timeout=9), None)


async def test_deleting_versions(tmp_path: Path) -> None:
    reg = registry(tmp_path)
    await with_versions(reg)
    reg.aliases.create(ACCOUNT, "fn", "live", "1", None, {"2": 0.5})
    for version in ("1", "2"):
        with pytest.raises(ResourceConflictException, match=r"reference it: \[live\]$"):
            await reg.delete(ACCOUNT, ref("fn", version))
    with pytest.raises(InvalidParameterValueException, match="Deletion of aliases"):
        await reg.delete(ACCOUNT, ref("fn", "live"))
    reg.aliases.update(ACCOUNT, "fn", "live", None, None, {}, None)
    await reg.delete(ACCOUNT, ref("fn", "2"))
    await reg.delete(ACCOUNT, ref("fn", "2"))  # already gone: no error
    assert [v.version for v in reg.versions(ACCOUNT, ref("fn"))] == ["$LATEST", "1"]
    await reg.update_code(ACCOUNT, ref("fn"), package("d"), None)
    assert (await reg.publish(ACCOUNT, ref("fn"))).version == "3"


async def test_alias_invocations_follow_the_weights(tmp_path: Path) -> None:
    draws = [0.0, 0.29, 0.3, 0.99]
    reg = registry(tmp_path, draws=draws)
    await with_versions(reg)
    reg.aliases.create(ACCOUNT, "fn", "canary", "1", "", {"2": 0.3})
    chosen = [reg.invocation_target(ACCOUNT, ref("fn", "canary")).version for _ in range(4)]
    assert chosen == ["2", "2", "1", "1"]
    assert reg.get(ACCOUNT, ref("fn", "canary")).version == "1"  # reads name the primary


def test_alias_choice_without_routing() -> None:
    alias = Alias(ACCOUNT, "us-east-1", "fn", "live", "4")
    assert {alias.choose(d) for d in (0.0, 0.5, 0.999)} == {"4"}
    assert alias.versions == {"4"}


async def test_deleting_the_function_forgets_everything(tmp_path: Path) -> None:
    limiter = ConcurrencyLimiter(account_limit=50, min_unreserved=10)
    reg = registry(tmp_path, limiter=limiter)
    await with_versions(reg)
    reg.aliases.create(ACCOUNT, "fn", "live", "1", None, None)
    reg.put_concurrency(ACCOUNT, ref("fn"), 30)
    assert limiter.unreserved_limit(ACCOUNT) == 20
    await reg.delete(ACCOUNT, ref("fn"))
    assert limiter.unreserved_limit(ACCOUNT) == 50
    await with_versions(reg)
    assert reg.aliases.find(ACCOUNT, "fn", "live") is None
    assert reg.reserved_concurrency(ACCOUNT, ref("fn")) is None
    assert [v.version for v in reg.versions(ACCOUNT, ref("fn"))] == ["$LATEST", "1", "2"]


async def test_concurrency_refusals(tmp_path: Path) -> None:
    reg = registry(tmp_path, limiter=ConcurrencyLimiter(account_limit=50, min_unreserved=10))
    with pytest.raises(ResourceNotFoundException, match=r"function:nope:\$LATEST$"):
        reg.put_concurrency(ACCOUNT, ref("nope"), 1)
    await reg.create(ACCOUNT, "fn", SETTINGS, package("a"), {})
    with pytest.raises(InvalidParameterValueException, match="permitted on Lambda functions only"):
        reg.put_concurrency(ACCOUNT, ref("fn", "$LATEST"), 1)
    with pytest.raises(InvalidParameterValueException, match=r"minimum value of \[10\]"):
        reg.put_concurrency(ACCOUNT, ref("fn"), 41)
    assert reg.reserved_concurrency(ACCOUNT, ref("fn")) is None


async def test_everything_survives_a_restart(tmp_path: Path) -> None:
    store = SqliteMetadataStore(tmp_path / "m.sqlite3")
    reg = registry(tmp_path, store)
    await with_versions(reg)
    await reg.delete(ACCOUNT, ref("fn", "2"))
    created = reg.aliases.create(ACCOUNT, "fn", "live", "1", "the one", {})
    reg.put_concurrency(ACCOUNT, ref("fn"), 0)
    store.close()
    limiter = ConcurrencyLimiter()
    again = registry(tmp_path, SqliteMetadataStore(tmp_path / "m.sqlite3"), limiter)
    assert [v.version for v in again.versions(ACCOUNT, ref("fn"))] == ["$LATEST", "1"]
    assert again.aliases.get(ACCOUNT, "fn", "live") == created
    assert again.reserved_concurrency(ACCOUNT, ref("fn")) == 0
    assert limiter.reserved(ACCOUNT, "fn") == 0
    await again.update_code(ACCOUNT, ref("fn"), package("e"), None)
    assert (await again.publish(ACCOUNT, ref("fn"))).version == "3"
