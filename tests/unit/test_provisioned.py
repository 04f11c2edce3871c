"""Provisioned concurrency: the limiter's numbers, the control plane's configurations (over the
shipped fakes and SQLite) and the Provisioner's environments (over the FakeBackend)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from lambdad.control.arns import FunctionRef
from lambdad.control.functions import FunctionRegistry, FunctionSettings
from lambdad.control.provisioned import NoAllocator
from lambdad.errors import (
    InvalidParameterValueException,
    ProvisionedConcurrencyConfigNotFoundException,
    ResourceConflictException,
    ResourceNotFoundException,
    TooManyRequestsException,
    UntypedInvalidParameterValueException,
)
from lambdad.observability.logs import LogStore
from lambdad.runtime.runtimes import Family, RuntimeCatalog, RuntimeSpec
from lambdad.sandbox.fake import FakeBackend, FakeBehaviour
from lambdad.scheduler.environment import Invocation
from lambdad.scheduler.launcher import EnvironmentLauncher
from lambdad.scheduler.limiter import ConcurrencyLimiter
from lambdad.scheduler.pools import PoolManager
from lambdad.scheduler.provisioner import ProvisionedStatus, Provisioner, Share
from lambdad.store.blobs import MemoryBlobStore
from lambdad.store.code_cache import CodeCache
from lambdad.store.metadata import MemoryMetadataStore, MetadataStore, SqliteMetadataStore
from tests.conftest import make_zip
from tests.unit.test_scheduler import config as function_config

ACCOUNT = "000000000000"
ARN = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function"
RUNTIME = "provided.al2023"
SETTINGS = FunctionSettings(runtime=RUNTIME, handler="x", role="arn:aws:iam::0:role/r")


# limiter ---------------------------------------------------------------------------------------
def test_provisioned_concurrency_holds_part_of_the_reservation() -> None:
    limiter = ConcurrencyLimiter(account_limit=10, min_unreserved=2)
    limiter.set_reserved(ACCOUNT, "f", 2)
    with pytest.raises(InvalidParameterValueException, match="reservedConcurrentExecution"):
        limiter.set_provisioned(ACCOUNT, "f", 3)
    limiter.set_provisioned(ACCOUNT, "f", 1)
    held = limiter.acquire_nowait(ACCOUNT, "f")  # the one on-demand slot left
    with pytest.raises(TooManyRequestsException) as caught:
        limiter.acquire_nowait(ACCOUNT, "f")
    assert caught.value.reason == "ReservedFunctionConcurrentInvocationLimitExceeded"
    with limiter.provisioned_lease(ACCOUNT, "f"):  # never refused
        stats = limiter.statistics(ACCOUNT)
        assert (stats.in_use, stats.provisioned_in_use, stats.provisioned_total) == (2, 1, 1)
    limiter.release(held)
    assert limiter.statistics(ACCOUNT).in_use == 0
    with pytest.raises(UntypedInvalidParameterValueException) as refused:
        limiter.set_reserved(ACCOUNT, "f", 0)
    assert refused.value.message == (
        " ReservedConcurrentExecutions  0 should not be lower than function's total provisioned "
        "concurrency [1]."
    )


def test_provisioned_concurrency_without_reservation_takes_from_the_unreserved_pool() -> None:
    limiter = ConcurrencyLimiter(account_limit=10, min_unreserved=2)
    with pytest.raises(UntypedInvalidParameterValueException, match=r"unreserved concurrency \[10"):
        limiter.set_provisioned(ACCOUNT, "f", 11)
    with pytest.raises(UntypedInvalidParameterValueException, match=r"minimum value of \[2\]"):
        limiter.set_provisioned(ACCOUNT, "f", 9)
    limiter.set_provisioned(ACCOUNT, "f", 8)
    assert limiter.unreserved_limit(ACCOUNT) == 2
    leases = [limiter.acquire_nowait(ACCOUNT, name) for name in ("f", "g")]
    with pytest.raises(TooManyRequestsException) as caught:
        limiter.acquire_nowait(ACCOUNT, "h")
    assert caught.value.reason == "ConcurrentInvocationLimitExceeded"
    for lease in leases:
        limiter.release(lease)
    with pytest.raises(UntypedInvalidParameterValueException, match="minimum value"):
        limiter.set_reserved(ACCOUNT, "g", 1)
    limiter.set_provisioned(ACCOUNT, "f", 8)  # no increase: no check
    limiter.set_reserved(ACCOUNT, "f", 8)  # provisioned moves into the reservation
    assert limiter.unreserved_limit(ACCOUNT) == 2
    limiter.forget_function(ACCOUNT, "f")
    assert limiter.unreserved_limit(ACCOUNT) == 10


# control plane ---------------------------------------------------------------------------------
def registry(
    tmp_path: Path, store: MetadataStore | None = None, allocator: NoAllocator | None = None
) -> FunctionRegistry:
    blobs = MemoryBlobStore()
    reg = FunctionRegistry(
        store or MemoryMetadataStore(),
        blobs,
        CodeCache(tmp_path / "code", blobs),
        RuntimeCatalog({RUNTIME: RuntimeSpec(RUNTIME, Family.PROVIDED, None)}),
        "us-east-1",
        ConcurrencyLimiter(account_limit=100, min_unreserved=10),
        allocator=allocator or NoAllocator(),
    )
    reg.load()
    return reg


def ref(qualifier: str | None = None, name: str = "fn") -> FunctionRef:
    return FunctionRef(name, qualifier, None, None)


async def two_versions(reg: FunctionRegistry) -> None:
    """Versions 1 and 2 of `fn`, alias `live` -> 1."""
    for tag in ("a", "b"):
        code = make_zip({"bootstrap": f"#!/bin/sh\n# {tag}\n"}, {"bootstrap": 0o755})
        if tag == "a":
            await reg.create(ACCOUNT, "fn", SETTINGS, code, {})
        else:
            await reg.update_code(ACCOUNT, ref(), code, None)
        await reg.publish(ACCOUNT, ref())
    reg.aliases.create(ACCOUNT, "fn", "live", "1", None, None)


async def test_configurations_follow_versions_and_aliases(tmp_path: Path) -> None:
    allocator = NoAllocator()
    reg = registry(tmp_path, allocator=allocator)
    await two_versions(reg)
    provisioned = reg.provisioned
    view = provisioned.put(ACCOUNT, ref("live"), 3)
    assert view.function_arn.endswith(":function:fn:live")
    assert view.allocation.status is ProvisionedStatus.IN_PROGRESS
    assert list(allocator.allocated[(ACCOUNT, "fn", "live")].values()) == [3]
    assert reg.limiter.provisioned(ACCOUNT, "fn") == 3
    with pytest.raises(ResourceConflictException, match="pointed by a Provisioned"):
        provisioned.put(ACCOUNT, ref("1"), 1)
    provisioned.put(ACCOUNT, ref("2"), 2)
    assert reg.limiter.provisioned(ACCOUNT, "fn") == 5
    # An alias moving onto a provisioned version is not refused; its environments move.
    reg.aliases.update(ACCOUNT, "fn", "live", "2", None, None, None)
    assert [*allocator.allocated[(ACCOUNT, "fn", "live")]] == [f"{ARN}:fn:2"]
    reg.aliases.delete(ACCOUNT, "fn", "live")
    assert (ACCOUNT, "fn", "live") not in allocator.allocated
    assert [v.config.qualifier for v in provisioned.configs(ACCOUNT, ref())] == ["2"]
    await reg.delete(ACCOUNT, ref("2"))
    assert provisioned.configs(ACCOUNT, ref()) == []
    assert reg.limiter.provisioned(ACCOUNT, "fn") == 0
    with pytest.raises(ProvisionedConcurrencyConfigNotFoundException):
        provisioned.get(ACCOUNT, ref("1"))
    with pytest.raises(ResourceNotFoundException, match=r"Cannot find alias arn: .*:fn:live$"):
        provisioned.get(ACCOUNT, ref("live"))


async def test_configurations_survive_a_restart(tmp_path: Path) -> None:
    store = SqliteMetadataStore(tmp_path / "db.sqlite3")
    reg = registry(tmp_path, store)
    await two_versions(reg)
    reg.provisioned.put(ACCOUNT, ref("live"), 2)
    reg.provisioned.put(ACCOUNT, ref("2"), 1)
    allocator = NoAllocator()
    again = registry(tmp_path, store, allocator)
    assert {k[2]: v for k, v in allocator.allocated.items()} == {
        "live": {f"{ARN}:fn:1": 2},
        "2": {f"{ARN}:fn:2": 1},
    }
    assert again.limiter.provisioned(ACCOUNT, "fn") == 3
    await again.delete(ACCOUNT, ref())
    assert store.load_provisioned_configs() == []
    store.close()


# environments ----------------------------------------------------------------------------------
def platform(tmp_path: Path, behaviour: FakeBehaviour) -> tuple[PoolManager, Provisioner]:
    logs = LogStore(tmp_path / "logs")
    code = CodeCache(tmp_path / "code", MemoryBlobStore())
    code.path_for("0" * 64).mkdir(parents=True)
    (code.path_for("0" * 64) / "bootstrap").write_text("#!/bin/sh\n")
    catalog = RuntimeCatalog({RUNTIME: RuntimeSpec(RUNTIME, Family.PROVIDED, None)})
    launcher = EnvironmentLauncher(FakeBackend(behaviour), catalog, code, logs)
    pools = PoolManager(launcher.launch, keep_alive_seconds=0, reap_interval=60)
    return pools, Provisioner(pools)


async def until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0.01)


async def echo(event: bytes, headers: Mapping[str, str]) -> bytes:
    return event


def invocation(n: int) -> Invocation:
    return Invocation(f"req-{n}", b"{}", "arn", tail=True)


async def test_environments_are_initialised_ahead_and_kept(tmp_path: Path) -> None:
    behaviour = FakeBehaviour(echo)
    pools, provisioner = platform(tmp_path, behaviour)
    version = function_config(version="1")
    key = (ACCOUNT, "fn", "1")
    provisioner.allocate(key, [Share(version, 2)])
    await until(lambda: provisioner.allocation(key).status is ProvisionedStatus.READY)
    assert provisioner.allocation(key).available == 2
    init_types = {s.env["AWS_LAMBDA_INITIALIZATION_TYPE"] for s in behaviour.started}
    assert (len(behaviour.started), init_types) == (2, {"provisioned-concurrency"})
    pool = pools.pool_for(version)
    env = pool.claim_provisioned()
    assert env is not None
    result = await pool.run(invocation(1), env=env)
    assert result.init_duration_ms is None  # the init happened ahead
    assert pools.reap() == 0  # kept warm whatever the keep-alive
    # One that dies is replaced.
    env.kill()
    await until(lambda: len(behaviour.started) == 3)
    await until(lambda: provisioner.allocation(key).available == 2)
    assert provisioner.allocation(key).status is ProvisionedStatus.READY
    # Without a claim, a run takes a provisioned environment before starting one.
    await pool.run(invocation(2))
    assert pool.statistics().cold_starts == 0
    provisioner.allocate(key, [Share(version, 1)])
    await until(lambda: pool.statistics().provisioned == 1)
    provisioner.release(key)
    await until(lambda: pool.statistics().provisioned == 0)
    assert pool.claim_provisioned() is None
    await provisioner.close()
    await pools.close()


async def test_init_failure_fails_the_allocation(tmp_path: Path) -> None:
    behaviour = FakeBehaviour(echo, init_error=b'{"errorType":"Runtime.ImportModuleError"}')
    pools, provisioner = platform(tmp_path, behaviour)
    key = (ACCOUNT, "fn", "1")
    provisioner.allocate(key, [Share(function_config(version="1"), 2)])
    await until(lambda: provisioner.allocation(key).status is ProvisionedStatus.FAILED)
    allocation = provisioner.allocation(key)
    assert (allocation.available, allocation.reason) == (0, "FUNCTION_ERROR_INIT_FAILURE")
    assert provisioner.statistics().failed == 1
    await provisioner.close()
    await pools.close()
