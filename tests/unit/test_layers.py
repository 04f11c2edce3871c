"""Layers: the stores, the combined /opt trees, and the registry's rules (AWS's wording)."""

from __future__ import annotations

import errno
import io
import os
import re
import stat
import threading
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest

from lambdad.control.layers import (
    LayerContentMissing,
    LayerRegistry,
    LayerSettings,
    LayerVersion,
    ResolvedLayers,
    Statement,
)
from lambdad.control.package import MAX_UNZIPPED_BYTES
from lambdad.errors import (
    AccessDeniedException,
    InvalidParameterValueException,
    LambdaError,
    PreconditionFailedException,
    ResourceConflictException,
    ResourceNotFoundException,
)
from lambdad.store import layers as layer_store
from lambdad.store.blobs import MemoryBlobStore
from lambdad.store.code_cache import CodeCache
from lambdad.store.layers import LayerStore, MemoryLayerStore, OptCache, SqliteLayerStore

OWNER = "111111111111"
OTHER = "222222222222"
REGION = "us-east-1"
UNZIP_FAILED = "Could not unzip uploaded file. Please check your file, then try to upload again."


def make_zip(files: Mapping[str, bytes], links: Mapping[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            archive.writestr(info, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, target)
    return buffer.getvalue()


def arn(name: str, version: int, account: str = OWNER, region: str = REGION) -> str:
    return f"arn:aws:lambda:{region}:{account}:layer:{name}:{version}"


def refusal(error: type[LambdaError], message: str) -> AbstractContextManager[Any]:
    """Expect `error` with exactly `message`."""
    return pytest.raises(error, match=f"^{re.escape(message)}$")


@pytest.fixture
def code(tmp_path: Path) -> CodeCache:
    return CodeCache(tmp_path / "code", MemoryBlobStore())


@pytest.fixture
def opt(tmp_path: Path, code: CodeCache) -> OptCache:
    return OptCache(tmp_path / "opt", code)


@pytest.fixture
def registry(code: CodeCache, opt: OptCache) -> LayerRegistry:
    blobs = code._blobs  # the CodeCache's own store: the registry must share it
    return LayerRegistry(MemoryLayerStore(), blobs, code, opt, REGION)


def put(code: CodeCache, files: Mapping[str, bytes], links: Mapping[str, str] | None = None) -> str:
    return code._blobs.put(make_zip(files, links))


# -- stores -----------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LayerStore]:
    impl: LayerStore = (
        SqliteLayerStore(tmp_path / "m.sqlite3")
        if request.param == "sqlite"
        else MemoryLayerStore()
    )
    yield impl
    impl.close()


def test_store_keeps_records_and_counters(store: LayerStore) -> None:
    store.put_version(OWNER, "a", 1, {"v": 1})
    store.put_version(OWNER, "a", 2, {"v": 2})
    store.put_version(OWNER, "a", 1, {"v": "one"})  # replaces, counter stays at 2
    store.put_version(OTHER, "b", 7, {"v": 7})
    assert store.load_versions() == [{"v": "one"}, {"v": 2}, {"v": 7}]
    store.purge_version(OWNER, "a", 2)
    store.purge_version(OWNER, "a", 2)
    assert store.load_versions() == [{"v": "one"}, {"v": 7}]
    assert store.load_counters() == {(OWNER, "a"): 2, (OTHER, "b"): 7}


def test_sqlite_store_survives_reopening(tmp_path: Path) -> None:
    first = SqliteLayerStore(tmp_path / "db")
    first.put_version(OWNER, "a", 3, {"v": 3})
    first.purge_version(OWNER, "a", 3)
    first.close()
    again = SqliteLayerStore(tmp_path / "db")
    assert (again.load_versions(), again.load_counters()) == ([], {(OWNER, "a"): 3})
    again.close()


# -- the combined /opt trees ------------------------------------------------------------------


def test_layers_are_laid_over_each_other_in_order(code: CodeCache, opt: OptCache) -> None:
    first = put(
        code,
        {"python/a.py": b"A1", "python/shared.py": b"first", "bin/tool": b"file", "lib/x": b"x"},
        links={"current": "python"},
    )
    second = put(
        code,
        {"python/shared.py": b"second", "bin/tool/inner": b"now a dir", "current/b": b"b"},
        links={"lib": "python"},
    )
    tree = opt.ensure([first, second])
    assert (tree / "python" / "a.py").read_bytes() == b"A1"  # directories merge
    assert (tree / "python" / "shared.py").read_bytes() == b"second"  # later files win
    assert (tree / "bin" / "tool" / "inner").read_bytes() == b"now a dir"
    # Nothing is written through an earlier layer's symlink: the directory replaces it.
    assert (tree / "current").is_dir() and not (tree / "current").is_symlink()
    assert not (tree / "python" / "b").exists()
    assert os.readlink(tree / "lib") == "python"  # a later symlink replaces a directory
    reverse = opt.ensure([second, first])
    assert reverse != tree
    assert (reverse / "python" / "shared.py").read_bytes() == b"first"
    assert os.readlink(reverse / "current") == "python"


def test_a_tree_is_built_once_and_reused(
    code: CodeCache, opt: OptCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = put(code, {"bin/tool": b"#!/bin/sh\n"})
    calls: list[Path] = []
    real = layer_store.overlay

    def counting(source: Path, dest: Path) -> None:
        calls.append(source)
        real(source, dest)

    monkeypatch.setattr(layer_store, "overlay", counting)
    tree = opt.ensure([key])
    assert opt.ensure([key]) == tree == opt.path_for([key])
    assert calls == [code.path_for(key)]
    assert (opt.statistics().built, opt.statistics().reused) == (1, 1)
    # Another cache on the same directory (another process) finds it too.
    assert OptCache(opt.root, code).ensure([key]) == tree
    assert len(calls) == 1


def test_concurrent_builds_leave_one_complete_tree(code: CodeCache, tmp_path: Path) -> None:
    keys = [put(code, {f"f{i}": b"x" * 1000 for i in range(50)}), put(code, {"g": b"y"})]
    caches = [OptCache(tmp_path / "shared", code) for _ in range(4)]  # as separate processes
    barrier = threading.Barrier(len(caches))
    results: list[Path] = []

    def build(cache: OptCache) -> None:
        barrier.wait()
        results.append(cache.ensure(keys))

    threads = [threading.Thread(target=build, args=(c,)) for c in caches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(results)) == 1 and len(results) == 4
    assert sorted(p.name for p in results[0].iterdir()) == sorted(
        [*(f"f{i}" for i in range(50)), "g"]
    )
    assert [p.name for p in (tmp_path / "shared").iterdir()] == [results[0].parent.name]


def test_threads_of_one_cache_build_once(code: CodeCache, opt: OptCache) -> None:
    key = put(code, {"a": b"1"})
    barrier = threading.Barrier(5)

    def build() -> None:
        barrier.wait()
        opt.ensure([key])

    threads = [threading.Thread(target=build) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stats = opt.statistics()
    assert (stats.built, stats.reused, stats.pending) == (1, 4, 0)


def test_files_are_copied_when_they_cannot_be_linked(
    code: CodeCache, opt: OptCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = put(code, {"bin/tool": b"tool"})

    def cross_device(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", cross_device)
    tree = opt.ensure([key])
    assert (tree / "bin" / "tool").read_bytes() == b"tool"
    assert (tree / "bin" / "tool").stat().st_ino != (
        code.path_for(key) / "bin" / "tool"
    ).stat().st_ino


def test_remove_unless_drops_trees_of_forgotten_packages(code: CodeCache, opt: OptCache) -> None:
    a, b = put(code, {"a": b"1"}), put(code, {"b": b"2"})
    kept, dropped = opt.ensure([a]), opt.ensure([a, b])
    assert opt.remove_unless({a}) == 1
    assert kept.is_dir() and not dropped.exists()
    assert list(opt.combinations().values()) == [(a,)]


# -- the registry: publishing and reading ----------------------------------------------------


async def publish(
    registry: LayerRegistry,
    name: str = "lib",
    files: Mapping[str, bytes] | None = None,
    account: str = OWNER,
    **settings: Any,
) -> LayerVersion:
    data = make_zip(files or {"python/lib.py": b"X = 1\n"})
    return await registry.publish(account, name, data, LayerSettings(**settings))


async def test_versions_are_numbered_per_layer_and_never_reused(registry: LayerRegistry) -> None:
    one, two = await publish(registry), await publish(registry)
    other = await publish(registry, "other")
    assert (one.version, two.version, other.version) == (1, 2, 1)
    assert two.arn == arn("lib", 2) and two.layer_arn == arn("lib", 2).rsplit(":", 1)[0]
    registry.delete(OWNER, "lib", 1)
    registry.delete(OWNER, "lib", 2)
    registry.delete(OWNER, "lib", 2)  # idempotent
    registry.delete(OWNER, "missing", 9)
    assert registry.versions(OWNER, "lib") == []
    assert (await publish(registry)).version == 3


async def test_registry_reloads_from_its_store(
    code: CodeCache, opt: OptCache, tmp_path: Path
) -> None:
    store = SqliteLayerStore(tmp_path / "db")
    first = LayerRegistry(store, code._blobs, code, opt, REGION)
    await publish(first, compatible_runtimes=("python3.12",), license_info="MIT")
    first.add_permission(OWNER, "lib", 1, Statement("s1", "*"))
    first.delete(OWNER, "lib", 1)
    second = LayerRegistry(store, code._blobs, code, opt, REGION)
    second.load()
    assert second.content_for_existing([arn("lib", 1)]).arns == (arn("lib", 1),)
    assert (await publish(second)).version == 2
    store.close()


async def test_bad_packages_are_refused_as_function_code_is(registry: LayerRegistry) -> None:
    escaping = make_zip({"../evil": b"x"})
    for data in (b"not a zip", escaping):
        with refusal(InvalidParameterValueException, UNZIP_FAILED):
            await registry.publish(OWNER, "bad", data, LayerSettings())
    assert registry.versions(OWNER, "bad") == [] and registry.statistics().versions == 0


async def test_get_answers_aws_errors(registry: LayerRegistry) -> None:
    version = await publish(registry)
    assert registry.get(OWNER, "lib", 1) == version
    assert registry.get(OWNER, arn("lib", 1).rsplit(":", 1)[0], 1) == version
    assert registry.get_by_arn(OWNER, arn("lib", 1)) == version
    for number in (0, -1):
        with refusal(InvalidParameterValueException, "Layer Version Cannot be less than 1"):
            registry.get(OWNER, "lib", number)
    missing = "The resource you requested does not exist."
    for name, number in (("lib", 2), ("nope", 1)):
        with refusal(ResourceNotFoundException, missing):
            registry.get(OWNER, name, number)
    for version_arn in (arn("lib", 2), arn("lib", 1, region="eu-west-1")):
        with refusal(ResourceNotFoundException, missing):
            registry.get_by_arn(OWNER, version_arn)


async def test_other_accounts_read_only_what_a_policy_grants(registry: LayerRegistry) -> None:
    await publish(registry)
    layer = arn("lib", 1).rsplit(":", 1)[0]
    denied = (
        f"User: arn:aws:iam::{OTHER}:root is not authorized to perform: lambda:GetLayerVersion "
        f"on resource: {arn('lib', 1)} because no resource-based policy allows the "
        "lambda:GetLayerVersion action"
    )
    with refusal(AccessDeniedException, denied):
        registry.get(OTHER, layer, 1)
    for statement in (Statement("org", "*", "o-abcdefghij"), Statement("x", "333333333333")):
        registry.add_permission(OWNER, "lib", 1, statement)
        with pytest.raises(AccessDeniedException):
            registry.get_by_arn(OTHER, arn("lib", 1))
    for principal in (OTHER, f"arn:aws:iam::{OTHER}:root", "*"):
        registry.add_permission(OWNER, "lib", 1, Statement("grant", principal))
        assert registry.get(OTHER, layer, 1).version == 1
        registry.remove_permission(OWNER, "lib", 1, "grant")
    with pytest.raises(AccessDeniedException, match="lambda:DeleteLayerVersion on resource"):
        registry.delete(OTHER, layer, 1)
    with pytest.raises(AccessDeniedException, match="lambda:ListLayerVersions"):
        registry.versions(OTHER, layer)


async def test_listing_filters_and_orders(registry: LayerRegistry) -> None:
    await publish(registry, "b", compatible_runtimes=("python3.12",))
    await publish(
        registry, "b", compatible_runtimes=("nodejs20.x",), compatible_architectures=("arm64",)
    )
    await publish(registry, "a")
    await publish(registry, "mine-only", account=OTHER)
    assert [(v.name, v.version) for v in registry.layers(OWNER)] == [("a", 1), ("b", 2)]
    assert [(v.name, v.version) for v in registry.layers(OWNER, "python3.12")] == [("b", 1)]
    assert [v.version for v in registry.layers(OWNER, None, "arm64")] == [2]
    assert registry.layers(OWNER, "python3.12", "arm64") == []
    assert [v.version for v in registry.versions(OWNER, "b")] == [2, 1]
    assert [v.version for v in registry.versions(OWNER, "b", "nodejs20.x")] == [2]
    registry.delete(OWNER, "b", 2)
    assert [(v.name, v.version) for v in registry.layers(OWNER)] == [("a", 1), ("b", 1)]
    assert registry.usage(OWNER) == sum(v.code_size for v in registry.layers(OWNER))


# -- the registry: policies -------------------------------------------------------------------


async def test_policy_statements_and_revisions(registry: LayerRegistry) -> None:
    await publish(registry)
    with refusal(ResourceNotFoundException, "No policy is associated with the given resource."):
        registry.policy(OWNER, "lib", 1)
    first = registry.add_permission(OWNER, "lib", 1, Statement("s1", "*"))
    with refusal(
        ResourceConflictException,
        "The statement id (s1) provided already exists. Please provide a new statement id, or "
        "remove the existing statement.",
    ):
        registry.add_permission(OWNER, "lib", 1, Statement("s1", OTHER))
    stale = (
        "The Revision Id provided does not match the latest Revision Id. Call the GetLayerPolicy "
        "API to retrieve the latest Revision Id"
    )
    with refusal(PreconditionFailedException, stale):
        registry.add_permission(OWNER, "lib", 1, Statement("s2", "*"), revision_id="nope")
    second = registry.add_permission(
        OWNER, "lib", 1, Statement("s2", OTHER), revision_id=first.policy_revision
    )
    assert [s.sid for s in registry.policy(OWNER, "lib", 1).statements] == ["s1", "s2"]
    with refusal(ResourceNotFoundException, "Statement s3 is not found in resource policy."):
        registry.remove_permission(OWNER, "lib", 1, "s3")
    with refusal(PreconditionFailedException, stale):
        registry.remove_permission(OWNER, "lib", 1, "s1", revision_id=first.policy_revision)
    registry.remove_permission(OWNER, "lib", 1, "s1", revision_id=second.policy_revision)
    after = registry.policy(OWNER, "lib", 1)
    assert [s.sid for s in after.statements] == ["s2"]
    assert after.policy_revision not in (first.policy_revision, second.policy_revision)
    for number in (2, 1):
        if number == 1:
            registry.delete(OWNER, "lib", 1)
        with refusal(
            ResourceNotFoundException, f"Layer version {arn('lib', number)} does not exist."
        ):
            registry.policy(OWNER, "lib", number)


# -- the registry: the function side ----------------------------------------------------------


def resolve(
    registry: LayerRegistry, arns: list[str], caller: str = OWNER, size: int = 0
) -> ResolvedLayers:
    return registry.resolve_for_function(caller, arns, "python3.12", ("x86_64",), size)


async def test_resolve_builds_one_tree_in_the_functions_order(registry: LayerRegistry) -> None:
    await publish(registry, "a", {"python/m.py": b"from a", "a.txt": b"a"})
    await publish(registry, "b", {"python/m.py": b"from b"}, compatible_runtimes=("nodejs20.x",))
    resolved = registry.resolve_for_function(OWNER, [arn("b", 1), arn("a", 1)], "python3.12", (), 7)
    assert resolved.arns == (arn("b", 1), arn("a", 1))  # an incompatible runtime is accepted
    assert resolved.opt_dir is not None
    assert (resolved.opt_dir / "python" / "m.py").read_bytes() == b"from a"
    assert resolved.unzipped_size == len(b"from a") + len(b"a") + len(b"from b")
    assert resolved.code_sizes == tuple(registry.get(OWNER, n, 1).code_size for n in ("b", "a"))
    again = registry.resolve_for_function(OWNER, [arn("b", 1), arn("a", 1)], "java21", (), 0)
    assert again.opt_dir == resolved.opt_dir
    assert registry.resolve_for_function(OWNER, [], "python3.12", (), 0).opt_dir is None


async def test_resolve_refuses_as_aws_does(registry: LayerRegistry) -> None:
    for _ in range(3):
        await publish(registry)
    with refusal(InvalidParameterValueException, "Cannot reference more than 5 layers."):
        resolve(registry, [arn(f"l{i}", 1) for i in range(6)])
    same = "Two different versions of the same layer are not allowed to be referenced in the same function. {} and {} are versions of the same layer."  # noqa: E501
    for listed, (first, second) in (
        ([arn("lib", 1), arn("lib", 2)], (1, 2)),
        ([arn("lib", 1), arn("lib", 2), arn("lib", 3)], (1, 2)),
        ([arn("lib", 1), arn("lib", 1)], (1, 1)),
    ):
        with refusal(
            InvalidParameterValueException, same.format(arn("lib", first), arn("lib", second))
        ):
            resolve(registry, listed)
    for missing in (arn("nope", 1), arn("lib", 9), "arn:aws:lambda:::awslayer:AWSLambda-Python"):
        with refusal(InvalidParameterValueException, f"Layer version {missing} does not exist."):
            resolve(registry, [missing])
    with refusal(
        InvalidParameterValueException,
        "Layers are not in the same region as the function. Layers are expected to be in region "
        "us-east-1.",
    ):
        resolve(registry, [arn("lib", 1, region="eu-west-1")])
    with pytest.raises(AccessDeniedException, match=f"arn:aws:iam::{OTHER}:root .*lib:1 because"):
        resolve(registry, [arn("lib", 1)], caller=OTHER)
    with pytest.raises(AccessDeniedException, match=r"lib:9 because"):
        resolve(registry, [arn("lib", 9)], caller=OTHER)
    registry.add_permission(OWNER, "lib", 1, Statement("all", "*"))
    assert resolve(registry, [arn("lib", 1)], caller=OTHER).arns == (arn("lib", 1),)


async def test_function_and_layers_share_the_unzipped_limit(registry: LayerRegistry) -> None:
    layer = await publish(registry, files={"data": b"x" * 100})
    limit_left = MAX_UNZIPPED_BYTES - layer.unzipped_size
    assert resolve(registry, [layer.arn], size=limit_left).unzipped_size == 100
    with refusal(
        InvalidParameterValueException,
        "Function code combined with layers exceeds the maximum allowed size of 262144000 "
        f"bytes. The actual size is {MAX_UNZIPPED_BYTES + 1} bytes.",
    ):
        resolve(registry, [layer.arn], size=limit_left + 1)


async def test_deleted_versions_keep_serving_existing_functions(
    registry: LayerRegistry, opt: OptCache
) -> None:
    kept = await publish(registry, "a", {"a": b"1"})
    gone = await publish(registry, "b", {"b": b"2"})
    alone = resolve(registry, [kept.arn]).opt_dir
    tree = resolve(registry, [kept.arn, gone.arn]).opt_dir
    assert alone is not None and tree is not None
    registry.add_permission(OWNER, "b", 1, Statement("all", "*"))
    registry.delete(OWNER, "b", 1)
    with refusal(InvalidParameterValueException, f"Layer version {gone.arn} does not exist."):
        resolve(registry, [gone.arn])
    existing = registry.content_for_existing([kept.arn, gone.arn])
    assert existing.opt_dir == tree and (tree / "b").read_bytes() == b"2"
    assert existing.code_sizes == (kept.code_size, gone.code_size)
    assert registry.statistics().tombstones == 1
    assert registry.prune(in_use={gone.arn}) == 0 and tree.is_dir()
    assert registry.prune(in_use=set()) == 1
    assert not tree.exists() and alone.is_dir()  # trees of kept layers stay
    with pytest.raises(LayerContentMissing):
        registry.content_for_existing([gone.arn])
    assert (await publish(registry, "b")).version == 2
