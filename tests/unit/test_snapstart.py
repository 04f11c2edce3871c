"""SnapStart in the control plane: settings, the Pending -> Active/Failed state machine of
published versions, invoke gating and restarts, over a FakeSnapshotter."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from lambdad.api.protocol import service_model
from lambdad.api.shapes import function_configuration
from lambdad.api.validation import InputValidator
from lambdad.control.arns import FunctionRef
from lambdad.control.functions import FunctionRegistry, FunctionSettings
from lambdad.control.model import FunctionConfig, FunctionState
from lambdad.control.snapshots import FakeSnapshotter, SnapshotFailure, Snapshotter
from lambdad.errors import (
    InvalidParameterValueException,
    ResourceConflictException,
    SnapStartNotReadyException,
    ValidationException,
)
from lambdad.invoke.invoker import InvocationType, Invoker, InvokeRequest
from lambdad.runtime.runtimes import Family, RuntimeCatalog, RuntimeSpec
from lambdad.store.blobs import MemoryBlobStore
from lambdad.store.code_cache import CodeCache
from lambdad.store.metadata import MemoryMetadataStore, MetadataStore, SqliteMetadataStore
from tests.conftest import make_zip

ACCOUNT = "000000000000"
SUPPORTED = "java21"
UNSUPPORTED = "provided.al2023"
ROLE = "arn:aws:iam::000000000000:role/r"
SNAP = FunctionSettings(runtime=SUPPORTED, handler="x", role=ROLE, snap_start="PublishedVersions")
NOT_READY = (
    "Lambda is initializing your function. You can invoke the function when the state of your "
    "function is Active."
)
ZIP = make_zip({"bootstrap": "#!/bin/sh\n"}, {"bootstrap": 0o755})


def registry(
    tmp_path: Path, snapshotter: Snapshotter | None, store: MetadataStore | None = None
) -> FunctionRegistry:
    blobs = MemoryBlobStore()
    catalog = RuntimeCatalog(
        {r: RuntimeSpec(r, Family.PROVIDED, None) for r in (SUPPORTED, UNSUPPORTED)}
    )
    reg = FunctionRegistry(
        store or MemoryMetadataStore(),
        blobs,
        CodeCache(tmp_path / "code", blobs),
        catalog,
        "us-east-1",
        snapshotter=snapshotter,
    )
    reg.load()
    return reg


def ref(name: str = "fn", qualifier: str | None = None) -> FunctionRef:
    return FunctionRef(name, qualifier, None, None)


def arn_of(name: str, version: str) -> str:
    return f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:{name}:{version}"


def snap_start(config: FunctionConfig) -> dict[str, str]:
    shape: dict[str, str] = function_configuration(config)["SnapStart"]
    return shape


def states(reg: FunctionRegistry, version: str = "1") -> tuple[str, str | None, str | None]:
    config = reg.get(ACCOUNT, ref("fn", version))
    return config.state.value, config.state_reason, config.state_reason_code


# settings -------------------------------------------------------------------------------------
def test_bad_apply_on_is_a_validation_error() -> None:
    for operation in ("CreateFunction", "UpdateFunctionConfiguration"):
        validator = InputValidator(service_model().operation_model(operation).input_shape)
        params: dict[str, Any] = {
            "FunctionName": "f",
            "Role": ROLE,
            "Code": {"ZipFile": b"zip"},
            "SnapStart": {"ApplyOn": "invalidOption"},
        }
        with pytest.raises(ValidationException) as info:
            validator.validate(params)
        assert info.value.message == (  # recorded
            "1 validation error detected: Value 'invalidOption' at 'snapStart.applyOn' failed to "
            "satisfy constraint: Member must satisfy enum value set: [PublishedVersions, None]"
        )


async def test_unsupported_runtime_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    store = MemoryMetadataStore()
    reg = registry(tmp_path, FakeSnapshotter(), store)
    unsupported = FunctionSettings(
        runtime=UNSUPPORTED, handler="x", role=ROLE, snap_start="PublishedVersions"
    )
    with pytest.raises(InvalidParameterValueException) as info:
        await reg.create(ACCOUNT, "fn", unsupported, ZIP, {})
    assert info.value.message == "provided.al2023 is not supported for SnapStart enabled functions."
    assert (info.value.status, info.value.body()["Type"]) == (400, "User")
    assert reg.lookup(ACCOUNT, "fn") is None and store.load_functions() == []
    off = FunctionSettings(runtime=UNSUPPORTED, handler="x", role=ROLE, snap_start="None")
    assert (await reg.create(ACCOUNT, "fn", off, ZIP, {})).snap_start == "None"


async def test_updates_keep_snap_start_on_supported_runtimes(tmp_path: Path) -> None:
    reg = registry(tmp_path, FakeSnapshotter())
    plain = FunctionSettings(runtime=UNSUPPORTED, handler="x", role=ROLE)
    await reg.create(ACCOUNT, "fn", plain, ZIP, {})
    before = reg.get(ACCOUNT, ref())
    with pytest.raises(InvalidParameterValueException, match=r"^provided\.al2023 is not supported"):
        await reg.update_configuration(
            ACCOUNT, ref(), FunctionSettings(snap_start="PublishedVersions"), None
        )
    assert reg.get(ACCOUNT, ref()) == before  # nothing half-written
    on = FunctionSettings(runtime=SUPPORTED, snap_start="PublishedVersions")
    updated = await reg.update_configuration(ACCOUNT, ref(), on, None)
    assert snap_start(updated) == {"ApplyOn": "PublishedVersions", "OptimizationStatus": "Off"}
    # Changing to a runtime without SnapStart while it is on is refused the same way.
    with pytest.raises(InvalidParameterValueException, match=r"^provided\.al2023 is not supported"):
        await reg.update_configuration(ACCOUNT, ref(), FunctionSettings(runtime=UNSUPPORTED), None)
    assert reg.get(ACCOUNT, ref()).runtime == SUPPORTED
    off = FunctionSettings(runtime=UNSUPPORTED, snap_start="None")
    assert (await reg.update_configuration(ACCOUNT, ref(), off, None)).snap_start == "None"


def test_records_without_snap_start_load_as_none() -> None:
    config = FunctionConfig(ACCOUNT, "us-east-1", "fn", SUPPORTED, "x", ROLE, "k", "s", 1)
    record = config.evolve(snap_start="PublishedVersions").to_record()
    assert FunctionConfig.from_record(record).snap_start == "PublishedVersions"
    del record["snap_start"]
    assert FunctionConfig.from_record(record).snap_start == "None"


# the state machine of published versions ------------------------------------------------------
async def test_a_published_version_is_pending_until_its_snapshot_is_taken(tmp_path: Path) -> None:
    snapshotter = FakeSnapshotter()
    store = SqliteMetadataStore(tmp_path / "m.sqlite3")
    reg = registry(tmp_path, snapshotter, store)
    await reg.create(ACCOUNT, "fn", SNAP, ZIP, {})
    published = await reg.publish(ACCOUNT, ref())
    assert (published.state, published.state_reason, published.state_reason_code) == (
        FunctionState.PENDING,
        "The function is being created.",
        "Creating",
    )
    assert snap_start(published) == {"ApplyOn": "PublishedVersions", "OptimizationStatus": "On"}
    assert snap_start(reg.get(ACCOUNT, ref())) == {
        "ApplyOn": "PublishedVersions",
        "OptimizationStatus": "Off",
    }
    await asyncio.sleep(0)
    assert snapshotter.created == [published.qualified_arn]
    assert states(reg) == ("Pending", "The function is being created.", "Creating")
    snapshotter.release.set()
    await reg.snapshots.wait_settled()
    assert states(reg) == ("Active", None, None)
    assert reg.get(ACCOUNT, ref("fn", "1")).revision_id == published.revision_id
    again = registry(tmp_path, FakeSnapshotter(), SqliteMetadataStore(tmp_path / "m.sqlite3"))
    assert again.get(ACCOUNT, ref("fn", "1")).state is FunctionState.ACTIVE  # persisted
    assert again.snapshots.in_progress == 0


async def test_a_refused_snapshot_fails_the_version(tmp_path: Path) -> None:
    failure = SnapshotFailure("FunctionError", "Runtime.ExitError: exit status 1")
    snapshotter = FakeSnapshotter(failure)
    snapshotter.release.set()
    reg = registry(tmp_path, snapshotter)
    await reg.create(ACCOUNT, "fn", SNAP, ZIP, {})
    await reg.publish(ACCOUNT, ref())
    await reg.snapshots.wait_settled()
    assert states(reg) == ("Failed", "Runtime.ExitError: exit status 1", "FunctionError")


class BrokenSnapshotter(FakeSnapshotter):
    async def create(self, config: FunctionConfig) -> SnapshotFailure | None:
        raise RuntimeError("boom")


async def test_a_snapshotter_that_raises_or_is_missing_fails_the_version(tmp_path: Path) -> None:
    for snapshotter, reason in (
        (BrokenSnapshotter(), "RuntimeError: boom"),
        (None, "SnapStart is not available on this server."),
    ):
        reg = registry(tmp_path, snapshotter)
        await reg.create(ACCOUNT, "fn", SNAP, ZIP, {})
        await reg.publish(ACCOUNT, ref())
        await reg.snapshots.wait_settled()
        assert states(reg) == ("Failed", reason, "InternalError")


async def test_without_snap_start_versions_are_active_at_once(tmp_path: Path) -> None:
    snapshotter = FakeSnapshotter()
    reg = registry(tmp_path, snapshotter)
    await reg.create(
        ACCOUNT, "fn", FunctionSettings(runtime=SUPPORTED, handler="x", role=ROLE), ZIP, {}
    )
    published = await reg.publish(ACCOUNT, ref())
    assert published.state is FunctionState.ACTIVE
    assert snap_start(published) == {"ApplyOn": "None", "OptimizationStatus": "Off"}
    assert reg.snapshots.in_progress == 0 and snapshotter.created == []


async def test_create_and_code_updates_that_publish_take_snapshots(tmp_path: Path) -> None:
    snapshotter = FakeSnapshotter()
    reg = registry(tmp_path, snapshotter)
    created = await reg.create(ACCOUNT, "fn", SNAP, ZIP, {}, publish=True)
    assert (created.version, snap_start(created)["OptimizationStatus"]) == ("1", "On")
    other = make_zip({"bootstrap": "#!/bin/sh\n# 2\n"}, {"bootstrap": 0o755})
    await reg.update_code(ACCOUNT, ref(), other, None, publish=True)
    await asyncio.sleep(0)
    assert [arn.rsplit(":", 1)[1] for arn in snapshotter.created] == ["1", "2"]
    snapshotter.release.set()
    await reg.snapshots.wait_settled()
    assert states(reg, "1")[0] == states(reg, "2")[0] == "Active"


# deletion -------------------------------------------------------------------------------------
async def test_deleting_a_version_discards_its_snapshot(tmp_path: Path) -> None:
    snapshotter = FakeSnapshotter()
    reg = registry(tmp_path, snapshotter)
    await reg.create(ACCOUNT, "fn", SNAP, ZIP, {})
    published = await reg.publish(ACCOUNT, ref())
    await asyncio.sleep(0)
    await reg.delete(ACCOUNT, ref("fn", "1"))  # while its snapshot is being taken
    assert snapshotter.discarded == [published.qualified_arn]
    snapshotter.release.set()
    await reg.snapshots.wait_settled()
    assert reg.version(ACCOUNT, "fn", "1") is None  # the cancelled snapshot revived nothing


async def test_deleting_the_function_discards_every_snapshot(tmp_path: Path) -> None:
    snapshotter = FakeSnapshotter()
    snapshotter.release.set()
    reg = registry(tmp_path, snapshotter)
    await reg.create(ACCOUNT, "fn", SNAP, ZIP, {}, publish=True)
    await reg.update_configuration(ACCOUNT, ref(), FunctionSettings(snap_start="None"), None)
    await reg.publish(ACCOUNT, ref())  # version 2: no SnapStart, nothing to discard
    await reg.snapshots.wait_settled()
    await reg.delete(ACCOUNT, ref())
    assert snapshotter.discarded == [arn_of("fn", "1")]


# restarts -------------------------------------------------------------------------------------
async def test_a_version_left_pending_is_snapshotted_after_a_restart(tmp_path: Path) -> None:
    store = SqliteMetadataStore(tmp_path / "m.sqlite3")
    reg = registry(tmp_path, FakeSnapshotter(), store)
    await reg.create(ACCOUNT, "fn", SNAP, ZIP, {})
    await reg.publish(ACCOUNT, ref())
    await asyncio.sleep(0)
    await reg.close()  # the server stops mid-snapshot: the version stays Pending
    store.close()
    assert states(reg) == ("Pending", "The function is being created.", "Creating")
    snapshotter = FakeSnapshotter()
    again = registry(tmp_path, snapshotter, SqliteMetadataStore(tmp_path / "m.sqlite3"))
    assert again.snapshots.in_progress == 1
    snapshotter.release.set()
    await again.snapshots.wait_settled()
    assert snapshotter.created == [arn_of("fn", "1")]
    assert states(again) == ("Active", None, None)


# invoking -------------------------------------------------------------------------------------
async def test_invoking_a_pending_or_failed_version(tmp_path: Path) -> None:
    snapshotter = FakeSnapshotter(SnapshotFailure("FunctionError", "init failed"))
    reg = registry(tmp_path, snapshotter)
    invoker = Invoker(reg, None, None, None)  # type: ignore[arg-type]  # DryRun: registry only
    await reg.create(ACCOUNT, "fn", SNAP, ZIP, {}, publish=True)
    reg.aliases.create(ACCOUNT, "fn", "live", "1", None, None)
    for qualifier in ("1", "live"):
        request = InvokeRequest(ACCOUNT, ref("fn", qualifier), b"", InvocationType.DRY_RUN)
        with pytest.raises(SnapStartNotReadyException) as info:
            await invoker.invoke(request)
        assert info.value.body() == {"Type": "User", "Message": NOT_READY}
        assert (info.value.status, info.value.code) == (409, "SnapStartNotReadyException")
    dry_run = InvokeRequest(ACCOUNT, ref(), b"", InvocationType.DRY_RUN)
    assert (await invoker.invoke(dry_run)).status == 204  # $LATEST runs without a snapshot
    snapshotter.release.set()
    await reg.snapshots.wait_settled()
    for qualifier in ("1", "live"):
        request = InvokeRequest(ACCOUNT, ref("fn", qualifier), b"", InvocationType.DRY_RUN)
        with pytest.raises(ResourceConflictException, match=r"following state: Failed$"):
            await invoker.invoke(request)
