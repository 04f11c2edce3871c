"""Environment, EnvironmentPool and PoolManager over the in-process FakeBackend."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Mapping
from pathlib import Path

import orjson

from lambdad.control.model import FunctionConfig
from lambdad.observability.logs import LogStore
from lambdad.runtime.runtimes import Family, RuntimeCatalog, RuntimeSpec
from lambdad.sandbox.fake import FakeBackend, FakeBehaviour, FakeExit
from lambdad.scheduler.answer_polling import AnswerPolling
from lambdad.scheduler.environment import Invocation, InvocationResult
from lambdad.scheduler.launcher import EnvironmentLauncher
from lambdad.scheduler.pools import EvictionPolicy, PoolManager
from lambdad.store.blobs import MemoryBlobStore
from lambdad.store.code_cache import CodeCache


async def echo(event: bytes, headers: Mapping[str, str]) -> bytes:
    return event


def config(**changes: object) -> FunctionConfig:
    base = FunctionConfig(
        account_id="000000000000",
        region="us-east-1",
        name="fn",
        runtime="provided.al2023",
        handler="x",
        role="arn:aws:iam::000000000000:role/r",
        code_key="0" * 64,
        code_sha256="",
        code_size=0,
    )
    return base.evolve(**changes)


def manager(
    tmp_path: Path, behaviour: FakeBehaviour, polling: AnswerPolling | None = None
) -> tuple[PoolManager, FakeBackend, LogStore]:
    backend = FakeBackend(behaviour)
    catalog = RuntimeCatalog(
        {"provided.al2023": RuntimeSpec("provided.al2023", Family.PROVIDED, None)}
    )
    logs = LogStore(tmp_path / "logs")
    code = CodeCache(tmp_path / "code", MemoryBlobStore())
    code.path_for("0" * 64).mkdir(parents=True)
    (code.path_for("0" * 64) / "bootstrap").write_text("#!/bin/sh\n")
    launcher = EnvironmentLauncher(backend, catalog, code, logs, polling=polling)
    return PoolManager(launcher.launch, keep_alive_seconds=60, reap_interval=60), backend, logs


async def invoke(
    pools: PoolManager, cfg: FunctionConfig, payload: bytes = b"{}", *, tail: bool = True
) -> InvocationResult:
    invocation = Invocation(
        request_id=f"req-{id(payload)}-{asyncio.get_running_loop().time()}",
        payload=payload,
        invoked_arn=cfg.arn,
        tail=tail,
    )
    return await pools.pool_for(cfg).run(invocation)


async def test_warm_reuse_and_init_duration_only_on_cold(tmp_path: Path) -> None:
    pools, backend, _ = manager(tmp_path, FakeBehaviour(echo))
    cfg = config()
    first = await invoke(pools, cfg, b'{"a":1}')
    second = await invoke(pools, cfg, b'{"a":2}')
    assert (first.payload, second.payload) == (b'{"a":1}', b'{"a":2}')
    assert first.init_duration_ms is not None and second.init_duration_ms is None
    assert len(backend.processes) == 1
    assert pools.pool_for(cfg).statistics().warm_starts == 1
    await pools.close()


async def test_lambdad_polls_for_a_fast_environments_answer_only(tmp_path: Path) -> None:
    # The fake runtime runs on lambdad's own loop, so no poll can see its answer: each one
    # spends its budget (20 ms here) and the invocation completes after it, as it would have.
    async def slow(event: bytes, headers: Mapping[str, str]) -> bytes:
        await asyncio.sleep(0.05)
        return event

    polling = AnswerPolling(budget_us=20_000)
    pools, _, _ = manager(tmp_path, FakeBehaviour(echo), polling)
    fast = config()
    for i in range(3):
        assert (await invoke(pools, fast, b"%d" % i)).payload == b"%d" % i
    # not the cold start's delivery (nothing known of the environment yet), then each one
    assert (polling.polls, polling.answered, polling.running) == (2, 0, 0)
    await pools.close()

    polling = AnswerPolling(budget_us=20_000)
    pools, _, _ = manager(tmp_path / "slow", FakeBehaviour(slow), polling)
    for i in range(3):
        assert (await invoke(pools, config(name="slow"), b"%d" % i)).payload == b"%d" % i
    assert (polling.polls, polling.running) == (0, 0)  # 50 ms answers: slept on
    await pools.close()


async def test_parallel_invocations_scale_out(tmp_path: Path) -> None:
    gate = asyncio.Event()

    async def wait_for_gate(event: bytes, headers: Mapping[str, str]) -> bytes:
        await gate.wait()
        return b"null"

    pools, backend, _ = manager(tmp_path, FakeBehaviour(wait_for_gate))
    cfg = config()
    tasks = [asyncio.ensure_future(invoke(pools, cfg, b"%d" % i)) for i in range(3)]
    while len(backend.processes) < 3:
        await asyncio.sleep(0.01)
    gate.set()
    results = await asyncio.gather(*tasks)
    assert all(r.payload == b"null" for r in results)
    assert pools.pool_for(cfg).statistics().idle == 3
    await pools.close()


async def test_function_error_is_unhandled(tmp_path: Path) -> None:
    async def fail(event: bytes, headers: Mapping[str, str]) -> bytes:
        raise ValueError("boom")

    pools, _, _ = manager(tmp_path, FakeBehaviour(fail))
    result = await invoke(pools, config())
    assert result.function_error == "Unhandled"
    assert orjson.loads(result.payload) == {"errorMessage": "boom", "errorType": "ValueError"}
    await pools.close()


async def test_timeout_kills_environment_and_next_starts_fresh(tmp_path: Path) -> None:
    async def hang(event: bytes, headers: Mapping[str, str]) -> bytes:
        if event == b'"hang"':
            await asyncio.sleep(30)
        return b"1"

    pools, backend, _ = manager(tmp_path, FakeBehaviour(hang))
    cfg = config(timeout=1)
    result = await invoke(pools, cfg, b'"hang"')
    body = orjson.loads(result.payload)
    assert result.function_error == "Unhandled"
    assert body["errorType"] == "Sandbox.Timedout"
    assert body["errorMessage"].endswith("Task timed out after 1.00 seconds")
    again = await invoke(pools, cfg)
    assert again.payload == b"1" and again.init_duration_ms is not None
    assert len(backend.processes) == 2
    await pools.close()


async def test_runtime_exit_reports_exit_error(tmp_path: Path) -> None:
    async def leave(event: bytes, headers: Mapping[str, str]) -> bytes:
        raise FakeExit(3)

    pools, _, _ = manager(tmp_path, FakeBehaviour(leave))
    result = await invoke(pools, config())
    body = orjson.loads(result.payload)
    assert body["errorType"] == "Runtime.ExitError"
    assert body["errorMessage"].endswith("Error: Runtime exited with error: exit status 3")
    await pools.close()


async def test_init_error_is_the_invocation_result(tmp_path: Path) -> None:
    error = b'{"errorMessage":"Unable to import module","errorType":"Runtime.ImportModuleError"}'
    pools, _, _ = manager(tmp_path, FakeBehaviour(echo, init_error=error))
    result = await invoke(pools, config())
    assert result.function_error == "Unhandled"
    assert result.payload == error
    assert result.log_tail is not None
    await pools.close()


async def test_log_stream_has_init_start_start_end_report(tmp_path: Path) -> None:
    pools, _, logs = manager(tmp_path, FakeBehaviour(echo))
    cfg = config(memory_size=256)
    await invoke(pools, cfg)
    (stream,) = logs.streams(cfg.account_id, cfg.log_group)
    messages = [e.message for e in logs.events(cfg.account_id, cfg.log_group, stream.name)]
    assert messages[0] == (
        f"INIT_START Runtime Version: {cfg.runtime_version}\t"
        f"Runtime Version ARN: {cfg.runtime_version_arn}\n"
    )
    messages = messages[1:]
    assert messages[0].startswith("START RequestId: ") and messages[0].endswith(
        "Version: $LATEST\n"
    )
    assert messages[1].startswith("END RequestId: ")
    report = messages[2]
    assert report.startswith("REPORT RequestId: ")
    fields = report.rstrip("\n").split("\t")
    assert fields[1].startswith("Duration: ") and fields[1].endswith(" ms")
    assert fields[3] == "Memory Size: 256 MB"
    assert fields[4] == "Max Memory Used: 32 MB"
    assert fields[5].startswith("Init Duration: ")
    await pools.close()


def _lines(logs: LogStore, cfg: FunctionConfig) -> list[str]:
    (stream,) = logs.streams(cfg.account_id, cfg.log_group)
    return [e.message for e in logs.events(cfg.account_id, cfg.log_group, stream.name)]


async def test_end_and_report_follow_the_answer_without_a_tail(tmp_path: Path) -> None:
    pools, _, logs = manager(tmp_path, FakeBehaviour(echo))
    cfg = config()
    await invoke(pools, cfg, tail=False)
    # the caller has its answer; END and REPORT are written a loop callback later
    assert [m.split(" ")[0] for m in _lines(logs, cfg)] == ["INIT_START", "START"]
    await asyncio.sleep(0)
    assert [m.split(" ")[0] for m in _lines(logs, cfg)] == ["INIT_START", "START", "END", "REPORT"]
    await pools.close()


async def test_a_due_report_is_written_before_the_next_invocation_starts(tmp_path: Path) -> None:
    pools, backend, logs = manager(tmp_path, FakeBehaviour(echo))
    cfg = config()
    first = await invoke(pools, cfg, tail=False)
    second = await invoke(pools, cfg, b'{"b":2}')  # at once, on the same environment
    assert len(backend.processes) == 1
    assert first.log_tail is None
    assert second.log_tail is not None
    kinds = [m.split(" ")[0] for m in _lines(logs, cfg)]
    assert kinds == ["INIT_START", "START", "END", "REPORT", "START", "END", "REPORT"]
    tail = base64.b64decode(second.log_tail).decode()
    assert tail.startswith("START ") and "\nREPORT " in tail  # only its own lines
    await pools.close()


async def test_reap_stops_idle_environments(tmp_path: Path) -> None:
    pools, backend, _ = manager(tmp_path, FakeBehaviour(echo))
    cfg = config()
    await invoke(pools, cfg)
    pool = pools.pool_for(cfg)
    assert pool.reap(keep_alive_seconds=3600) == 0
    assert pool.reap(keep_alive_seconds=0, now=10**9) == 1
    status = await backend.processes[0].wait()
    assert status.signal == 9
    await pools.close()


async def test_new_revision_retires_previous_environments(tmp_path: Path) -> None:
    pools, backend, _ = manager(tmp_path, FakeBehaviour(echo))
    old = config()
    await invoke(pools, old)
    new = old.evolve(revision_id="another")
    await invoke(pools, new)
    assert len(backend.processes) == 2
    assert (await backend.processes[0].wait()).signal == 9
    await pools.close()


async def test_idle_environments_beyond_the_cap_are_evicted_lru(tmp_path: Path) -> None:
    gate = asyncio.Event()

    async def wait_for_gate(event: bytes, headers: Mapping[str, str]) -> bytes:
        await gate.wait()
        return b"1"

    behaviour = FakeBehaviour(wait_for_gate)
    pools, backend, _ = manager(tmp_path, behaviour)
    pools._eviction = EvictionPolicy(max_idle=1, available=lambda: 10**12)
    cfg = config()
    tasks = [asyncio.ensure_future(invoke(pools, cfg, b"%d" % i)) for i in range(3)]
    while len(backend.processes) < 3:
        await asyncio.sleep(0.01)
    gate.set()
    await asyncio.gather(*tasks)
    newest = max(pools.pool_for(cfg).idle_environments(), key=lambda env: env.last_used)
    assert pools.evict() == 2
    assert pools.pool_for(cfg).idle_environments() == [newest]
    await pools.close()


async def test_memory_pressure_evicts_some_idle_environments(tmp_path: Path) -> None:
    pools, _, _ = manager(tmp_path, FakeBehaviour(echo))
    pools._eviction = EvictionPolicy(max_idle=100, min_available_bytes=1 << 30, available=lambda: 1)
    cfg = config()
    await invoke(pools, cfg)
    assert pools.evict() == 1
    assert pools.pool_for(cfg).idle_environments() == []
    await pools.close()


async def test_memory_pressure_gives_the_memory_reserve_back_before_evicting(
    tmp_path: Path,
) -> None:
    held = [64 << 20]

    def give_up() -> int:
        given, held[0] = held[0], 0
        return given

    pools, _, _ = manager(tmp_path, FakeBehaviour(echo))
    pools._eviction = EvictionPolicy(
        max_idle=100, min_available_bytes=1 << 30, available=lambda: 1, give_up_reserve=give_up
    )
    assert pools.evict() == 0  # no environment at all: the reserve is given back all the same
    assert held == [0]
    held[0] = 64 << 20  # (filled again)
    cfg = config()
    await invoke(pools, cfg)
    assert pools.evict() == 0  # the reserve went instead
    assert held == [0] and len(pools.pool_for(cfg).idle_environments()) == 1
    assert pools.evict() == 1  # still short, and the reserve holds nothing now
    assert pools.pool_for(cfg).idle_environments() == []
    await pools.close()
