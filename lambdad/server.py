"""The composition root: build every component from Settings, run them behind one port."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import gc
import logging
import os
import resource
import signal
import sys
from collections.abc import Mapping
from typing import Any

import uvloop

from lambdad import __version__
from lambdad.api import http_server
from lambdad.api.app import MAX_REQUEST_BYTES, LambdadApp
from lambdad.api.auth import Authenticator
from lambdad.api.code_urls import CodeUrlSigner
from lambdad.api.handlers import Services
from lambdad.api.logs_api import LogsApi
from lambdad.api.protocol import LambdaProtocol
from lambdad.control.accounts import AccountRegistry
from lambdad.control.functions import FunctionRegistry
from lambdad.control.layers import LayerRegistry
from lambdad.control.model import FunctionConfig, FunctionState
from lambdad.control.snapshots import Snapshotter
from lambdad.credentials import RootCredentials, load_root_credentials, server_secret
from lambdad.invoke.async_queue import AsyncQueue
from lambdad.invoke.invoker import Invoker
from lambdad.observability.logs import LogStore
from lambdad.runtime import toolchains
from lambdad.runtime.runtimes import BOOTSTRAP_DIR, PYTHON_PRELOAD, Family, RuntimeCatalog
from lambdad.sandbox import memory_merge, memory_reserve
from lambdad.sandbox.base import SandboxBackend
from lambdad.sandbox.cgroups import memory_limit_bytes
from lambdad.sandbox.memory_merge import MemoryMerge
from lambdad.sandbox.memory_reserve import ReserveClient
from lambdad.sandbox.namespaces import NamespaceBackend
from lambdad.sandbox.process import ProcessBackend
from lambdad.scheduler.answer_polling import AnswerPolling
from lambdad.scheduler.launcher import EnvironmentLauncher
from lambdad.scheduler.limiter import ConcurrencyLimiter
from lambdad.scheduler.pools import EvictionPolicy, PoolManager
from lambdad.scheduler.provisioner import Provisioner
from lambdad.scheduler.snapshots import SnapshotManager
from lambdad.settings import Settings
from lambdad.store.accounts import SqliteAccountStore
from lambdad.store.blobs import DirectoryBlobStore
from lambdad.store.code_cache import CodeCache
from lambdad.store.layers import OptCache, SqliteLayerStore
from lambdad.store.metadata import SqliteMetadataStore

log = logging.getLogger("lambdad")


class Platform:
    """Every long-lived component, wired once."""

    def __init__(self, settings: Settings, environ: Mapping[str, str]) -> None:
        self.settings = settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.credentials: RootCredentials = load_root_credentials(settings.data_dir, environ)
        if not (toolchains.java_ready() and toolchains.dotnet_ready()):
            for language, outcome in toolchains.build_all().items():
                log.info("runtime %s: %s", language, outcome)
        self.catalog = RuntimeCatalog.discover(settings.runtime_overrides)
        self.store = SqliteMetadataStore(settings.db_path)
        self.account_store = SqliteAccountStore(settings.db_path)
        # Access key -> account: root, `lambdad accounts` accounts, environments' session keys.
        self.accounts = AccountRegistry(self.account_store, self.credentials, settings.account_id)
        self.blobs = DirectoryBlobStore(settings.blob_dir)
        self.code = CodeCache(settings.code_dir, self.blobs)
        self.logs = LogStore(settings.log_dir)
        self.layer_store = SqliteLayerStore(settings.db_path)
        self.layers = LayerRegistry(
            self.layer_store,
            self.blobs,
            self.code,
            OptCache(settings.data_dir / "layers", self.code),
            settings.region,
        )
        try:
            self.memory_merge = memory_merge.configure(settings.memory_merge)
        except memory_merge.MemoryMergeUnavailable as exc:
            raise SystemExit(f"lambdad: {exc}") from None
        self.backend: SandboxBackend = choose_backend(settings, self.memory_merge)
        self.memory_reserve = make_memory_reserve(settings)
        self.limiter = ConcurrencyLimiter(
            account_limit=settings.account_concurrency,
            min_unreserved=settings.min_unreserved_concurrency,
            burst=settings.burst,
            burst_window=settings.burst_window_seconds,
        )
        self.answer_polling = AnswerPolling(settings.answer_polling_us)
        self.frozen_objects = 0  # what start-up made, out of every collection (serve sets it)
        launcher = EnvironmentLauncher(
            self.backend,
            self.catalog,
            self.code,
            self.logs,
            self.accounts,
            self.layers,
            self.answer_polling,
            self.memory_reserve.draw,
        )
        # SnapStart versions' snapshots; it starts every environment (restoring those versions').
        self.snapshots = SnapshotManager(launcher)
        self.pools = PoolManager(
            self.snapshots.launch,
            settings.keep_alive_seconds,
            settings.reap_interval_seconds,
            EvictionPolicy(
                max_idle=settings.max_idle_environments,
                min_available_bytes=settings.min_free_memory_mb * 1048576,
                give_up_reserve=self.memory_reserve.give_up,
            ),
            stage=launcher.stage,
            max_staged=settings.staged_environments,
            staged_memory_bytes=settings.staged_memory_mb * 1048576,
        )
        # Keeps provisioned concurrency's environments initialised, off the request path.
        self.provisioner = Provisioner(self.pools)
        self.snapshotter: Snapshotter | None = self.snapshots
        self.registry = FunctionRegistry(
            self.store,
            self.blobs,
            self.code,
            self.catalog,
            settings.region,
            self.limiter,
            allocator=self.provisioner,
            layers=self.layers,
            snapshotter=self.snapshotter,
        )
        self.queue = AsyncQueue(
            self.store, settings.async_workers, settings.async_retry_delays, self.limiter
        )
        self.invoker = Invoker(self.registry, self.pools, self.queue, self.limiter)
        self.registry.on_change(self._function_changed)
        self._background: set[asyncio.Future[None]] = set()
        self._pacing: asyncio.Task[None] | None = None  # ksmd's pace (memory_merge.MergePace)
        signer = CodeUrlSigner(server_secret(settings.data_dir))
        self.app = LambdadApp(
            protocol=LambdaProtocol(),
            services=Services(self.registry, self.invoker, signer, self.layers),
            logs_api=LogsApi(self.logs, settings.region),
            signer=signer,
            authenticator=Authenticator(
                self.accounts,
                settings.account_id,
                allow_any_credentials=settings.allow_any_credentials,
            ),
            status=self.status,
        )

    def _function_changed(self, config: FunctionConfig | None, account_id: str, name: str) -> None:
        if config is None:
            self.pools.drop_function(account_id, name)
        elif config.state is FunctionState.ACTIVE:  # its next cold start is built ahead
            self.pools.stage(config)  # (retires environments of the previous configuration)
        else:
            self.pools.pool_for(config)  # retires environments of the previous configuration

    def status(self) -> dict[str, Any]:
        iso = self.backend.isolation()
        return {
            "version": __version__,
            "region": self.settings.region,
            "accountId": self.settings.account_id,
            "isolation": {
                "backend": iso.backend,
                "features": dict(iso.features),
                "notes": list(iso.notes),
            },
            "runtimes": [
                {"runtime": r.runtime_id, "family": r.family.value, "executable": r.executable}
                for r in self.catalog.available()
            ],
            "memoryMerge": {
                "enabled": self.memory_merge.enabled,
                "detail": self.memory_merge.detail,
                **self.memory_merge.statistics,
            },
            "memoryReserve": {
                "detail": self.memory_reserve.detail,
                **dataclasses.asdict(self.memory_reserve.statistics()),
            },
            "pools": {k: dataclasses.asdict(v) for k, v in self.pools.statistics().items()},
            "staged": dataclasses.asdict(self.pools.staged_statistics()),
            **self._sandbox_statistics(),
            "provisioned": dataclasses.asdict(self.provisioner.statistics()),
            "snapStart": self.snapshots.statistics(),
            "asyncQueue": dataclasses.asdict(self.queue.statistics()),
            "answerPolling": dataclasses.asdict(self.answer_polling.statistics()),
            "garbageCollector": {  # lambdad's own (see GC_THRESHOLDS)
                "thresholds": list(gc.get_threshold()),
                "collections": [generation["collections"] for generation in gc.get_stats()],
                "frozen": self.frozen_objects,
            },
            "concurrency": {
                account: dataclasses.asdict(self.limiter.statistics(account))
                for account in self.limiter.account_ids()
            },
        }

    def _sandbox_statistics(self) -> dict[str, Any]:
        if not isinstance(self.backend, NamespaceBackend):
            return {}
        found: dict[str, Any] = {"sandboxPool": dataclasses.asdict(self.backend.statistics())}
        network = self.backend.network_statistics()
        if network is not None:
            found["network"] = network
        return found

    async def start(self) -> None:
        await self.backend.open()
        await self.memory_reserve.start()
        self.registry.load()
        self.layers.load()
        self.layers.prune(in_use=self.registry.layer_arns_in_use())
        self.queue.start(self.invoker.run_event, self.invoker.admit_event)
        self.pools.start()
        if self.memory_merge.pace is not None:
            pacing = memory_merge.pace_with_load(
                self.memory_merge.pace, lambda: self.invoker.invocations, self.pools.working
            )
            self._pacing = asyncio.ensure_future(pacing)
        preload = PYTHON_PRELOAD
        for spec in self.catalog.available():
            if spec.family is Family.PYTHON and spec.executable:
                warm_up = self.backend.prepare(spec.executable, preload)
                self._background.add(asyncio.ensure_future(warm_up))

    async def stop(self) -> None:
        if self._pacing is not None:  # (it puts the host's own pace back)
            self._pacing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pacing
        await self.registry.close()
        await self.queue.close()
        await self.provisioner.close()
        self.snapshots.close()
        await self.pools.close()
        await asyncio.sleep(0.05)
        await self.backend.close()
        await self.memory_reserve.close()
        self.logs.close()
        self.store.close()
        self.layer_store.close()
        self.account_store.close()


def make_memory_reserve(settings: Settings) -> ReserveClient:
    """The memory reserve Settings ask for (None: auto)."""
    # (lambdad's own cgroup limit, where it has one, bounds it and the environments)
    limit = memory_limit_bytes()
    total = memory_reserve.total_memory_bytes()
    usable = total if limit is None else min(total, limit)
    if settings.memory_reserve_mb is None:
        size, detail = memory_reserve.auto_size(
            settings.burst, usable, memory_reserve.free_page_reporting()
        )
    else:
        size = settings.memory_reserve_mb * 1048576
        if size >= usable:
            raise SystemExit(
                f"lambdad: --memory-reserve {settings.memory_reserve_mb:,} MB is not less than "
                f"the {usable >> 20:,} MB of memory lambdad may use here"
            )
        detail = f"{settings.memory_reserve_mb:,} MB (--memory-reserve)" if size else "off"
    floor = 2 * settings.min_free_memory_mb * 1048576  # it fills only above this
    return ReserveClient(size, floor_bytes=floor, detail=detail)


def choose_backend(settings: Settings, merge: MemoryMerge) -> SandboxBackend:
    """The strongest sandbox this host allows (or the one Settings insists on)."""
    if settings.isolation == "process":
        return ProcessBackend("disabled with --isolation process", merge.enabled)
    backend, reason = NamespaceBackend.probe(
        settings.run_dir, BOOTSTRAP_DIR, memory_merge=merge.enabled
    )
    if backend is not None:
        return backend
    if settings.isolation == "namespaces":
        raise SystemExit(f"lambdad: --isolation namespaces, but {reason}")
    return ProcessBackend(reason, merge.enabled)


def banner(platform: Platform) -> str:
    s = platform.settings
    iso = platform.backend.isolation()
    runtimes = ", ".join(r.runtime_id for r in platform.catalog.available())
    lines = [
        f"lambdad listening on {s.endpoint} (region {s.region}, account {s.account_id})",
        f"data dir: {s.data_dir}",
        f"runtimes: {runtimes}",
        f"isolation: {iso.backend} backend",
        f"memory merging: {platform.memory_merge.detail}",
        f"memory reserve: {platform.memory_reserve.detail}",
    ]
    lines += [f"WARNING: {note}" for note in iso.notes]
    if s.allow_any_credentials:
        lines.append(
            "WARNING: --allow-any-credentials: requests are NOT authenticated; any well-formed "
            "signature by any access key is accepted (development only)"
        )
    if platform.credentials.generated:
        lines.append("root credentials were generated; use them with:")
        lines.append(platform.credentials.export_lines().rstrip())
    return "\n".join(lines)


def serve(settings: Settings) -> None:
    """Run lambdad until SIGINT/SIGTERM: the API on the lean HTTP server, on uvloop."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    _raise_open_file_limit()
    _reserve_descriptor_table(settings)
    platform = Platform(settings, os.environ)
    print(banner(platform), file=sys.stderr, flush=True)
    uvloop.run(_run(platform))


def _raise_open_file_limit() -> None:
    """Use the hard limit on open files: lambdad holds ~7 descriptors per environment (log
    pipe, Runtime API sockets, cgroup files), so the usual soft 1,024 would stop it near 140."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = 1 << 20 if hard == resource.RLIM_INFINITY else hard
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


# Descriptors lambdad holds per environment (log pipe, Runtime API sockets, cgroup files...),
# with room to spare, and for the rest of it.
DESCRIPTORS_PER_ENVIRONMENT = 8
DESCRIPTORS_BESIDE = 1024


def _reserve_descriptor_table(settings: Settings) -> None:
    """Grow the descriptor table once, now, while lambdad has no threads, to what its most
    environments (busy up to the account's concurrency, idle up to the cap) hold. Growing it
    later, with threads, waits for an RCU grace period (expand_files: 10-25 ms here) in
    whatever opens the descriptor that crosses a power of two — the event loop, in the middle
    of a cold start (it made the 12th and 44th of 50 cold starts take 15-30 ms)."""
    environments = settings.account_concurrency + settings.max_idle_environments
    wanted = DESCRIPTORS_PER_ENVIRONMENT * environments + DESCRIPTORS_BESIDE
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    highest = min(wanted, soft) - 1
    null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with contextlib.suppress(OSError):  # a lower limit on the table (nr_open): as it comes
            os.close(fcntl.fcntl(null, fcntl.F_DUPFD_CLOEXEC, highest))  # the lowest free >= it
    finally:
        os.close(null)


# The collector's thresholds (CPython's default: 700, 10, 10). In a burst of 1,000 cold starts
# the default ran ~350 young collections, ~30 middle and 2-3 full ones (35-95 ms each, the event
# loop stopped): 0.32-0.45 s of lambdad's time, as objects that live as long as an environment
# (its connections, tasks, records) were promoted through every generation. With these, 26, 1
# and none: 0.19-0.24 s, and the bursts' last start 4.09-4.15 s against 4.36-4.81 s
# (alternating, one host phase); the benchmark's warm and throughput p99 did not grow.
GC_THRESHOLDS = (10_000, 20, 20)


def _freeze_startup_objects() -> int:
    """Leave what start-up made (botocore's model, routes, the registries: ~57,000 objects)
    out of every later garbage collection. A full collection walks all it tracks with the
    event loop stopped: 35-42 ms with them in it, 6 ms without (one such collection per
    ~90,000 no-op invocations here, always a latency outlier, a cold start's if one was in
    flight). Then collect less often (GC_THRESHOLDS). Returns how many were frozen (counted
    once: gc.get_freeze_count walks them all, ~6 ms)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    return gc.get_freeze_count()


async def _run(platform: Platform) -> None:
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    await platform.start()
    platform.frozen_objects = _freeze_startup_objects()
    server = await http_server.serve(
        platform.app.handle,
        platform.settings.host,
        platform.settings.port,
        MAX_REQUEST_BYTES,
        platform.app.too_large,
    )
    try:
        await stopping.wait()
    finally:
        server.close()
        await platform.stop()
