"""Provisioned concurrency on a weighted alias: the split by the weights, the control plane
following UpdateAlias (over the shipped NoAllocator) and the Provisioner's shares (over the
FakeBackend)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest

from lambdad.control.functions import FunctionRegistry
from lambdad.control.provisioned import NoAllocator, split
from lambdad.errors import ResourceConflictException
from lambdad.sandbox.fake import FakeBehaviour
from lambdad.scheduler.provisioner import ProvisionedStatus, Share
from lambdad.store.metadata import SqliteMetadataStore
from tests.unit.test_provisioned import (
    ACCOUNT,
    ARN,
    echo,
    platform,
    ref,
    registry,
    two_versions,
    until,
)
from tests.unit.test_scheduler import config as function_config

LIVE = (ACCOUNT, "fn", "live")
V1, V2 = f"{ARN}:fn:1", f"{ARN}:fn:2"


# the split -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("requested", "weight", "expected"),
    [
        (10, 0.3, {"1": 7, "2": 3}),  # 10 * 0.3 is 3.0000000000000004 as floats
        (10, 0.7, {"1": 3, "2": 7}),
        (4, 0.5, {"1": 2, "2": 2}),
        (5, 0.5, {"1": 3, "2": 2}),  # a tie goes to the primary version
        (1, 0.5, {"1": 1}),
        (10, 0.05, {"1": 10}),  # 0.5 of an environment: none for the routed version
        (10, 0.06, {"1": 9, "2": 1}),
        (3, 1.0, {"2": 3}),
        (3, 0.0, {"1": 3}),
    ],
)
def test_split_rounds_the_routed_share_to_the_nearest(
    requested: int, weight: float, expected: dict[str, int]
) -> None:
    assert split(requested, "1", {"2": weight}) == expected


def test_split_always_adds_up_to_the_request() -> None:
    for requested in range(1, 60):
        for hundredths in range(101):
            weight = hundredths / 100
            shares = split(requested, "1", {"2": weight})
            assert sum(shares.values()) == requested
            exact = requested * Fraction(hundredths, 100)
            assert abs(shares.get("2", 0) - exact) <= Fraction(1, 2)
    assert split(7, "1", {}) == {"1": 7}


# control plane ---------------------------------------------------------------------------------
async def test_a_weighted_alias_splits_and_follows_its_updates(tmp_path: Path) -> None:
    allocator = NoAllocator()
    reg = registry(tmp_path, allocator=allocator)
    await two_versions(reg)
    reg.aliases.update(ACCOUNT, "fn", "live", None, None, {"2": 0.3}, None)
    reg.provisioned.put(ACCOUNT, ref("live"), 10)
    assert allocator.allocated[LIVE] == {V1: 7, V2: 3}
    assert reg.limiter.provisioned(ACCOUNT, "fn") == 10  # the alias's total, once
    reg.aliases.update(ACCOUNT, "fn", "live", None, None, {"2": 0.5}, None)
    assert allocator.allocated[LIVE] == {V1: 5, V2: 5}
    reg.aliases.update(ACCOUNT, "fn", "live", "2", None, {"1": 0.2}, None)
    assert allocator.allocated[LIVE] == {V2: 8, V1: 2}
    reg.aliases.update(ACCOUNT, "fn", "live", None, None, {}, None)  # routing removed
    assert allocator.allocated[LIVE] == {V2: 10}
    reg.aliases.update(ACCOUNT, "fn", "live", None, "a description", None, None)
    assert allocator.allocated[LIVE] == {V2: 10}
    reg.provisioned.put(ACCOUNT, ref("live"), 4)
    assert allocator.allocated[LIVE] == {V2: 4}
    assert reg.limiter.provisioned(ACCOUNT, "fn") == 4


async def test_a_weighted_alias_covers_both_its_versions(tmp_path: Path) -> None:
    reg = registry(tmp_path)
    await two_versions(reg)
    reg.aliases.update(ACCOUNT, "fn", "live", None, None, {"2": 0.5}, None)
    reg.provisioned.put(ACCOUNT, ref("live"), 2)
    with pytest.raises(ResourceConflictException, match="pointed by a Provisioned"):
        reg.provisioned.put(ACCOUNT, ref("2"), 1)
    reg.provisioned.delete(ACCOUNT, ref("live"))
    reg.provisioned.put(ACCOUNT, ref("2"), 1)
    with pytest.raises(ResourceConflictException, match="already Provisioned version"):
        reg.provisioned.put(ACCOUNT, ref("live"), 2)


async def test_a_weighted_alias_is_split_again_after_a_restart(tmp_path: Path) -> None:
    store = SqliteMetadataStore(tmp_path / "db.sqlite3")
    reg: FunctionRegistry = registry(tmp_path, store)
    await two_versions(reg)
    reg.aliases.update(ACCOUNT, "fn", "live", None, None, {"2": 0.3}, None)
    reg.provisioned.put(ACCOUNT, ref("live"), 10)
    allocator = NoAllocator()
    registry(tmp_path, store, allocator)
    assert allocator.allocated == {LIVE: {V1: 7, V2: 3}}
    store.close()


# environments ----------------------------------------------------------------------------------
async def test_shares_are_kept_in_each_versions_pool(tmp_path: Path) -> None:
    behaviour = FakeBehaviour(echo)
    pools, provisioner = platform(tmp_path, behaviour)
    v1, v2 = function_config(version="1"), function_config(version="2")
    key = (ACCOUNT, "fn", "live")
    provisioner.allocate(key, [Share(v1, 2), Share(v2, 1)])
    assert provisioner.allocation(key).status is ProvisionedStatus.IN_PROGRESS
    await until(lambda: provisioner.allocation(key).status is ProvisionedStatus.READY)
    whole = provisioner.allocation(key)
    assert (whole.allocated, whole.available) == (3, 3)
    assert [pools.pool_for(v).statistics().provisioned for v in (v1, v2)] == [2, 1]
    assert provisioner.statistics().configurations == 1
    # New weights: the share that grows makes the whole IN_PROGRESS until it is initialised.
    provisioner.allocate(key, [Share(v1, 1), Share(v2, 2)])
    assert provisioner.allocation(key).status is ProvisionedStatus.IN_PROGRESS
    await until(lambda: provisioner.allocation(key).status is ProvisionedStatus.READY)
    assert provisioner.allocation(key).available == 3
    await until(lambda: pools.pool_for(v1).statistics().provisioned == 1)
    assert pools.pool_for(v2).statistics().provisioned == 2
    # A version without a share loses its environments.
    provisioner.allocate(key, [Share(v2, 3)])
    await until(lambda: pools.pool_for(v1).statistics().provisioned == 0)
    await until(lambda: provisioner.allocation(key).status is ProvisionedStatus.READY)
    assert provisioner.allocation(key).available == 3
    assert len(behaviour.started) == 5  # 2 + 1, then version 2 grew twice (none restarted)
    provisioner.release(key)
    await until(lambda: pools.pool_for(v2).statistics().provisioned == 0)
    await provisioner.close()
    await pools.close()


async def test_one_failed_share_fails_the_configuration(tmp_path: Path) -> None:
    pools, provisioner = platform(tmp_path, FakeBehaviour(echo))
    good = function_config(version="1")
    broken = function_config(version="2", runtime="nothing9.x")  # its launch fails
    key = (ACCOUNT, "fn", "live")
    provisioner.allocate(key, [Share(good, 2), Share(broken, 1)])
    await until(lambda: provisioner.allocation(key).status is ProvisionedStatus.FAILED)
    await until(lambda: provisioner.allocation(key).available == 2)
    whole = provisioner.allocation(key)
    assert (whole.allocated, whole.reason) == (2, "FUNCTION_ERROR_INIT_FAILURE")
    assert provisioner.statistics().failed == 1
    await provisioner.close()
    await pools.close()
