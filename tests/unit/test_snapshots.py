"""SnapshotManager over the in-process FakeBackend: taking a snapshot, restoring from it."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Mapping
from pathlib import Path

import orjson
import pytest

from lambdad.control.model import FunctionConfig
from lambdad.observability.logs import LogStore
from lambdad.runtime.runtimes import Family, RuntimeCatalog, RuntimeSpec
from lambdad.sandbox.fake import FakeBackend, FakeBehaviour
from lambdad.scheduler.environment import Invocation, RestoreFailed
from lambdad.scheduler.launcher import EnvironmentLauncher
from lambdad.scheduler.pools import PoolManager
from lambdad.scheduler.snapshots import SnapshotManager
from lambdad.store.blobs import MemoryBlobStore
from lambdad.store.code_cache import CodeCache


async def echo(event: bytes, headers: Mapping[str, str]) -> bytes:
    return event


def version(**changes: object) -> FunctionConfig:
    return FunctionConfig(
        account_id="000000000000",
        region="us-east-1",
        name="fn",
        runtime="python3.12",
        handler="app.handler",
        role="arn:aws:iam::000000000000:role/r",
        code_key="0" * 64,
        code_sha256="",
        code_size=0,
        version="1",
        snap_start="PublishedVersions",
    ).evolve(**changes)


def setup(tmp_path: Path, behaviour: FakeBehaviour) -> tuple[SnapshotManager, PoolManager]:
    catalog = RuntimeCatalog(
        {
            "python3.12": RuntimeSpec("python3.12", Family.PYTHON, "/usr/bin/python3"),
            "nodejs20.x": RuntimeSpec("nodejs20.x", Family.NODEJS, "/usr/bin/node"),
        }
    )
    code = CodeCache(tmp_path / "code", MemoryBlobStore())
    code.path_for("0" * 64).mkdir(parents=True)
    launcher = EnvironmentLauncher(FakeBackend(behaviour), catalog, code, LogStore(tmp_path))
    snapshots = SnapshotManager(launcher)
    return snapshots, PoolManager(snapshots.launch, keep_alive_seconds=60, reap_interval=60)


async def snapshotted(
    tmp_path: Path, behaviour: FakeBehaviour
) -> tuple[SnapshotManager, PoolManager, FunctionConfig]:
    """A version whose snapshot was taken, and the pools that run it."""
    snapshots, pools = setup(tmp_path, behaviour)
    cfg = version()
    assert await snapshots.create(cfg) is None
    return snapshots, pools, cfg


async def run(pools: PoolManager, cfg: FunctionConfig) -> tuple[bytes, str]:
    invocation = Invocation(
        request_id=f"req-{asyncio.get_running_loop().time()}",
        payload=b'{"n": 1}',
        invoked_arn=cfg.arn,
        tail=True,
    )
    result = await pools.pool_for(cfg).run(invocation)
    log = base64.b64decode(result.log_tail or "").decode()
    return result.payload, next(line for line in log.splitlines() if line.startswith("REPORT"))


async def test_versions_are_restored_from_their_snapshot(tmp_path: Path) -> None:
    behaviour = FakeBehaviour(echo)
    snapshots, pools, cfg = await snapshotted(tmp_path, behaviour)
    assert [s.snapshot for s in behaviour.started] == [True]
    assert behaviour.started[0].env["AWS_LAMBDA_INITIALIZATION_TYPE"] == "snap-start"
    assert "AWS_LAMBDA_LOG_STREAM_NAME" not in behaviour.started[0].env
    payload, report = await run(pools, cfg)
    assert payload == b'{"n": 1}'
    assert "Restore Duration: " in report and "Billed Restore Duration: " in report
    assert "Init Duration" not in report
    assert len(behaviour.restored) == 1 and len(behaviour.started) == 1
    _, report = await run(pools, cfg)  # warm: no restore
    assert "Restore Duration" not in report
    assert snapshots.statistics() == {"snapshots": 1, "restores": 1}
    await pools.close()
    snapshots.close()


async def test_latest_is_started_as_usual(tmp_path: Path) -> None:
    behaviour = FakeBehaviour(echo)
    _, pools = setup(tmp_path, behaviour)
    _, report = await run(pools, version(version="$LATEST"))
    assert "Init Duration" in report
    assert behaviour.restored == [] and not behaviour.started[0].snapshot
    await pools.close()


async def test_init_failure_is_the_snapshots_failure(tmp_path: Path) -> None:
    error = orjson.dumps({"errorType": "Runtime.ImportModuleError", "errorMessage": "no app"})
    snapshots, _ = setup(tmp_path, FakeBehaviour(echo, init_error=error))
    failure = await snapshots.create(version())
    assert failure is not None
    assert failure.reason_code == "FunctionError"
    assert failure.reason == "Runtime.ImportModuleError: no app"
    assert snapshots.statistics()["snapshots"] == 0


async def test_runtimes_lambdad_cannot_fork_fail_before_starting_anything(tmp_path: Path) -> None:
    behaviour = FakeBehaviour(echo)
    snapshots, _ = setup(tmp_path, behaviour)
    failure = await snapshots.create(version(runtime="nodejs20.x"))
    assert failure is not None and failure.reason_code == "InvalidRuntime"
    assert behaviour.started == []


async def test_failed_after_restore_hooks_raise_restore_failed(tmp_path: Path) -> None:
    error = orjson.dumps({"errorType": "Runtime.AfterRestoreError", "errorMessage": "boom"})
    snapshots, pools, cfg = await snapshotted(tmp_path, FakeBehaviour(echo, restore_error=error))
    with pytest.raises(RestoreFailed) as info:
        await run(pools, cfg)
    assert info.value.error_type == "Runtime.AfterRestoreError"
    await pools.close()
    snapshots.close()


async def test_a_lost_snapshot_is_taken_again_and_discard_stops_it(tmp_path: Path) -> None:
    behaviour = FakeBehaviour(echo)
    snapshots, pools, cfg = await snapshotted(tmp_path, behaviour)
    behaviour_processes = list(behaviour.started)
    snapshots.discard(cfg)
    await asyncio.sleep(0.05)
    assert snapshots.statistics()["snapshots"] == 0
    _, report = await run(pools, cfg)  # taken again on demand, then restored
    assert "Restore Duration" in report
    assert len(behaviour.started) == len(behaviour_processes) + 1
    await pools.close()
    snapshots.close()


async def test_a_snapshot_that_cannot_fork_is_taken_again_once(tmp_path: Path) -> None:
    behaviour = FakeBehaviour(echo, restore_fork_failures=1)
    snapshots, pools, cfg = await snapshotted(tmp_path, behaviour)
    _, report = await run(pools, cfg)  # the first restore fails: a new snapshot restores
    assert "Restore Duration" in report
    assert len(behaviour.started) == 2  # the snapshot, taken twice
    assert len(behaviour.restored) == 1
    await pools.close()
    snapshots.close()


async def test_a_snapshot_that_cannot_fork_twice_fails_the_invocation(tmp_path: Path) -> None:
    behaviour = FakeBehaviour(echo, restore_fork_failures=2)
    snapshots, pools, cfg = await snapshotted(tmp_path, behaviour)
    payload, report = await run(pools, cfg)  # as when the snapshot cannot be taken again
    assert orjson.loads(payload) == {
        "errorType": "SnapStartException",
        "errorMessage": (
            "the snapshot's process could not fork (the snapshot's fork server is gone)"
        ),
    }
    assert "Status: error" in report
    assert len(behaviour.started) == 2 and behaviour.restored == []
    await pools.close()
    snapshots.close()
