"""Staged environments (EnvironmentLauncher.stage, EnvironmentPool.stage, PoolManager.stage)
over the FakeBackend with connected runtimes, as lambdad's Python bootstrap has them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from pathlib import Path

import pytest

from lambdad.control.model import FunctionConfig
from lambdad.observability.logs import LogStore
from lambdad.runtime.runtimes import Family, RuntimeCatalog, RuntimeSpec
from lambdad.sandbox.fake import FakeBackend, FakeBehaviour
from lambdad.scheduler.environment import EnvironmentState
from lambdad.scheduler.launcher import EnvironmentLauncher
from lambdad.scheduler.pools import STAGE_DELAY_S, EvictionPolicy, PoolManager
from lambdad.store.blobs import MemoryBlobStore
from lambdad.store.code_cache import CodeCache
from tests.unit.test_scheduler import config as base_config
from tests.unit.test_scheduler import echo, invoke

PYTHON = "python3.12"


def config(**changes: object) -> FunctionConfig:
    return base_config(runtime=PYTHON, handler="app.handler").evolve(**changes)


def staging(
    tmp_path: Path,
    behaviour: FakeBehaviour,
    max_staged: int = 4,
    keep_alive: float = 60,
    connected: bool = True,
    staged_memory: int = 1 << 40,
) -> tuple[PoolManager, EnvironmentLauncher, FakeBackend, LogStore]:
    """`connected`: whether runtimes get a connection made ahead (the event is pushed down it,
    as to lambdad's Python bootstrap in a namespace sandbox) or wait on GET
    /runtime/lambdad/wait (lambdad's other bootstraps)."""
    behaviour.connected = connected
    backend = FakeBackend(behaviour)
    catalog = RuntimeCatalog(
        {
            PYTHON: RuntimeSpec(PYTHON, Family.PYTHON, "/usr/bin/python3", "3.12"),
            "provided.al2023": RuntimeSpec("provided.al2023", Family.PROVIDED, None),
        }
    )
    logs = LogStore(tmp_path / "logs")
    code = CodeCache(tmp_path / "code", MemoryBlobStore())
    code.path_for("0" * 64).mkdir(parents=True)
    (code.path_for("0" * 64) / "bootstrap").write_text("#!/bin/sh\n")
    launcher = EnvironmentLauncher(backend, catalog, code, logs)
    pools = PoolManager(
        launcher.launch,
        keep_alive_seconds=keep_alive,
        reap_interval=60,
        eviction=EvictionPolicy(available=lambda: 10**12),
        stage=launcher.stage,
        max_staged=max_staged,
        staged_memory_bytes=staged_memory,
    )
    return pools, launcher, backend, logs


async def until(condition: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


async def stage(pools: PoolManager, cfg: FunctionConfig) -> None:
    """Stage `cfg`'s next cold start and wait until it is built."""
    pools.stage(cfg)
    await until(lambda: pools.pool_for(cfg).has_staged)


@pytest.fixture(params=[True, False], ids=["pushed", "waiting"])
def connected(request: pytest.FixtureRequest) -> bool:
    """Both ways a staged runtime learns of its invocation (see ``staging``)."""
    return bool(request.param)


def streams(logs: LogStore, cfg: FunctionConfig) -> list[str]:
    return [s.name for s in logs.streams(cfg.account_id, cfg.log_group)]


async def test_the_next_cold_start_takes_the_staged_environment(
    tmp_path: Path, connected: bool
) -> None:
    pools, _, backend, logs = staging(tmp_path, FakeBehaviour(echo), connected=connected)
    cfg = config()
    pools.stage(cfg)
    pool = pools.pool_for(cfg)
    await until(lambda: pool.has_staged)
    assert len(backend.processes) == 1
    assert pool.statistics().staged == 1
    assert streams(logs, cfg) == []  # nothing of it shows before it works
    result = await invoke(pools, cfg, b'{"a":1}')
    assert result.payload == b'{"a":1}'
    assert result.init_duration_ms is not None  # still a cold start: init ran for it
    assert result.log_tail is not None
    stats = pool.statistics()
    assert (stats.cold_starts, stats.staged_starts, stats.staged, stats.idle) == (1, 1, 0, 1)
    assert len(backend.processes) == 1  # no second environment was started
    assert len(streams(logs, cfg)) == 1
    await pools.close()


async def test_init_of_a_staged_environment_starts_with_its_invocation(
    tmp_path: Path, connected: bool
) -> None:
    pools, _, _, logs = staging(tmp_path, FakeBehaviour(echo), connected=connected)
    cfg = config()
    await stage(pools, cfg)
    await asyncio.sleep(0.3)
    result = await invoke(pools, cfg)
    assert result.init_duration_ms is not None and result.init_duration_ms < 250
    [stream] = streams(logs, cfg)
    lines = [e.message for e in logs.events(cfg.account_id, cfg.log_group, stream)]
    assert lines[0].startswith("INIT_START") and lines[1].startswith("START")
    await pools.close()


async def test_a_staged_environment_of_an_older_configuration_stops(tmp_path: Path) -> None:
    pools, _, backend, logs = staging(tmp_path, FakeBehaviour(echo))
    old = config()
    await stage(pools, old)
    new = old.evolve(revision_id="another")
    pools.stage(new)
    assert (await backend.processes[0].wait()).signal == 9
    await until(lambda: pools.pool_for(new).has_staged)
    result = await invoke(pools, new)
    assert result.init_duration_ms is not None
    assert pools.pool_for(new).statistics().staged_starts == 1
    assert len(backend.processes) == 2
    assert len(streams(logs, old)) == 1  # the unused one left no stream
    await pools.close()


async def test_at_most_max_staged_wait_the_oldest_making_room(tmp_path: Path) -> None:
    pools, _, _, _ = staging(tmp_path, FakeBehaviour(echo), max_staged=2)
    configs = [config(name=f"fn{i}") for i in range(3)]
    for cfg in configs:
        pools.stage(cfg)
        await until(lambda cfg=cfg: pools.pool_for(cfg).has_staged)
    assert [pools.pool_for(c).has_staged for c in configs] == [False, True, True]
    assert sum(stats.staged for stats in pools.statistics().values()) == 2
    summary = pools.staged_statistics()
    assert (summary.waiting, summary.memory_bytes, summary.max_waiting) == (2, 64 << 20, 2)
    await pools.close()


async def test_ones_still_being_built_count_against_max_staged(tmp_path: Path) -> None:
    """Staged back to back, before any is built: the cap holds (none of them can make room,
    so the last is not staged at all)."""
    pools, _, backend, _ = staging(tmp_path, FakeBehaviour(echo), max_staged=2)
    configs = [config(name=f"fn{i}") for i in range(3)]
    for cfg in configs:
        pools.stage(cfg)
    await until(lambda: all(pools.pool_for(c).has_staged for c in configs[:2]))
    await asyncio.sleep(0.05)
    assert [pools.pool_for(c).has_staged for c in configs] == [True, True, False]
    assert len(backend.processes) == 2  # the third was never started
    await pools.close()


async def test_the_staged_use_at_most_their_memory_the_oldest_making_room(
    tmp_path: Path,
) -> None:
    behaviour = FakeBehaviour(echo, peak_memory=32 << 20)
    pools, _, _, _ = staging(tmp_path, behaviour, max_staged=10, staged_memory=64 << 20)
    configs = [config(name=f"fn{i}") for i in range(3)]
    for cfg in configs:
        await stage(pools, cfg)
    assert [pools.pool_for(c).has_staged for c in configs] == [False, True, True]
    behaviour.peak_memory = 48 << 20  # they grew (a runtime's start takes a moment)
    pools.reap()
    assert [pools.pool_for(c).has_staged for c in configs] == [False, False, True]
    await pools.close()


async def test_a_cold_start_beside_live_environments_stages_the_next(tmp_path: Path) -> None:
    gate = asyncio.Event()

    async def wait_for_gate(event: bytes, headers: Mapping[str, str]) -> bytes:
        await gate.wait()
        return event

    pools, _, backend, _ = staging(tmp_path, FakeBehaviour(wait_for_gate))
    cfg = config()
    pool = pools.pool_for(cfg)
    first = asyncio.ensure_future(invoke(pools, cfg, b"1"))
    await until(lambda: pool.statistics().busy == 1)
    await asyncio.sleep(STAGE_DELAY_S * 3)
    assert not pool.has_staged and not pool.staging  # one environment: nothing staged
    second = asyncio.ensure_future(invoke(pools, cfg, b"2"))
    await until(lambda: pool.has_staged)  # it scaled out: the next is staged
    third = asyncio.ensure_future(invoke(pools, cfg, b"3"))
    await until(lambda: pool.statistics().staged_starts == 1)
    gate.set()
    assert [r.payload for r in await asyncio.gather(first, second, third)] == [b"1", b"2", b"3"]
    await until(lambda: pool.has_staged)  # the third scaled out again
    assert len(backend.processes) == 4
    await pools.close()


async def test_staged_environments_are_reaped_after_the_keep_alive(tmp_path: Path) -> None:
    pools, _, backend, _ = staging(tmp_path, FakeBehaviour(echo), keep_alive=0.05)
    cfg = config()
    await stage(pools, cfg)
    assert pools.reap() == 0
    await asyncio.sleep(0.1)
    assert pools.reap() == 1
    assert (await backend.processes[0].wait()).signal == 9
    assert not pools.pool_for(cfg).has_staged
    await pools.close()


async def test_memory_pressure_drops_staged_environments(tmp_path: Path) -> None:
    pools, _, backend, _ = staging(tmp_path, FakeBehaviour(echo))
    cfg = config()
    await stage(pools, cfg)
    pools._eviction = EvictionPolicy(min_available_bytes=1 << 30, available=lambda: 1)
    pools.evict()
    assert (await backend.processes[0].wait()).signal == 9
    await pools.close()


async def test_a_runtime_that_initialises_before_its_event_is_stopped(tmp_path: Path) -> None:
    pools, launcher, backend, _ = staging(tmp_path, FakeBehaviour(echo, ignores_staging=True))
    cfg = config()
    env = await launcher.stage(cfg, lambda env: None)
    assert env is not None
    assert (await backend.processes[0].wait()).signal == 9
    await until(lambda: env.state is EnvironmentState.DEAD)
    await pools.close()


async def test_only_lambdads_python_bootstrap_is_staged(tmp_path: Path) -> None:
    pools, launcher, backend, _ = staging(tmp_path, FakeBehaviour(echo))

    def dead(env: object) -> None:
        pass

    wrapper = {"AWS_LAMBDA_EXEC_WRAPPER": "/var/task/wrap"}
    assert await launcher.stage(config(runtime="provided.al2023"), dead) is None
    assert await launcher.stage(config(environment=wrapper), dead) is None
    assert await launcher.stage(config(snap_start="PublishedVersions", version="1"), dead) is None
    assert backend.processes == []
    env = await launcher.stage(config(), dead)
    assert env is not None and env.state is EnvironmentState.STAGED
    env.kill()
    await until(lambda: env.state is EnvironmentState.DEAD)
    await pools.close()
