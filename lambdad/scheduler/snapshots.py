"""SnapshotManager: SnapStart's snapshots, and the environments restored from them.

A snapshot is an environment of a published version (role SNAPSHOT) whose runtime ran the
function's init and before-snapshot hooks, then handed itself over (``/runtime/restore/next``):
from then on it only forks. Every new environment of the version is *restored*: forked from that
initialised process into a sandbox of its own (see SandboxBackend.restore), where it runs the
after-restore hooks and serves. The manager is the pools' launcher: environments of other
versions are started as usual.

Lifecycle of one snapshot: CREATING (PublishVersion) -> READY -> gone (version deleted, or the
snapshot process died: it is then taken again, once, by the next restore).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import orjson

from lambdad.control.model import FunctionConfig
from lambdad.control.snapshots import SnapshotFailure
from lambdad.observability.logs import new_stream_name
from lambdad.runtime.launch import EXEC_WRAPPER
from lambdad.runtime.runtimes import Family
from lambdad.scheduler.environment import Environment, EnvironmentRole, InitializationType
from lambdad.scheduler.launcher import EnvironmentLauncher

log = logging.getLogger(__name__)

SnapshotKey = tuple[str, str, str]  # account, function, version


def _key(config: FunctionConfig) -> SnapshotKey:
    return (config.account_id, config.name, config.version)


class SnapshotManager:
    """Implements lambdad.control.snapshots.Snapshotter; `launch` is the pools' Launch."""

    def __init__(self, launcher: EnvironmentLauncher) -> None:
        self._launcher = launcher
        self._ready: dict[SnapshotKey, Environment] = {}
        self._taking: dict[SnapshotKey, asyncio.Task[SnapshotFailure | None]] = {}
        self._configs: dict[SnapshotKey, FunctionConfig] = {}
        self.restores = 0

    # Snapshotter -------------------------------------------------------------------------
    async def create(self, config: FunctionConfig) -> SnapshotFailure | None:
        key = _key(config)
        self._configs[key] = config
        task = self._taking.get(key)
        if task is None or task.done():
            task = asyncio.ensure_future(self._take(config))
            self._taking[key] = task
        return await asyncio.shield(task)

    def discard(self, config: FunctionConfig) -> None:
        key = _key(config)
        self._configs.pop(key, None)
        task = self._taking.pop(key, None)
        if task is not None and not task.done():
            task.cancel()
        env = self._ready.pop(key, None)
        if env is not None:
            env.kill()

    # the pools' Launch ---------------------------------------------------------------------
    async def launch(
        self,
        config: FunctionConfig,
        on_dead: Callable[[Environment], None],
        initialization_type: InitializationType = InitializationType.ON_DEMAND,
    ) -> Environment:
        """A new environment of `config`: restored from its snapshot for a SnapStart version."""
        if not config.snap_start_on:
            return await self._launcher.launch(config, on_dead, initialization_type)
        init_type = (
            InitializationType.PROVISIONED
            if initialization_type is InitializationType.PROVISIONED
            else InitializationType.SNAP_START
        )
        key = _key(config)
        for attempt in (1, 2):
            snapshot = self._ready.get(key)
            if snapshot is None or snapshot.process is None:
                failure = await self.create(config)  # the snapshot died: take it again
                snapshot = self._ready.get(key)
                if failure is not None or snapshot is None or snapshot.process is None:
                    reason = failure.reason if failure else "the snapshot is gone"
                    return self._failed(config, on_dead, reason)
            self.restores += 1
            try:
                return await self._launcher.launch(
                    config,
                    on_dead,
                    init_type,
                    role=EnvironmentRole.RESTORED,
                    snapshot=snapshot.process,
                )
            except OSError as exc:
                # It could not fork (it ended meanwhile, say): take it again, and try once more.
                if self._ready.get(key) is snapshot:
                    del self._ready[key]
                snapshot.kill()
                if attempt == 2:
                    reason = f"the snapshot's process could not fork ({exc})"
                    return self._failed(config, on_dead, reason)
        raise AssertionError("unreachable")  # pragma: no cover

    def _failed(
        self, config: FunctionConfig, on_dead: Callable[[Environment], None], reason: str
    ) -> Environment:
        env = Environment(
            config,
            self._launcher.logs.open_stream(
                config.account_id, config.log_group, new_stream_name(config.version)
            ),
            on_dead,
            InitializationType.SNAP_START,
            EnvironmentRole.RESTORED,
        )
        env.launch_failed("SnapStartException", reason)
        return env

    # taking a snapshot ---------------------------------------------------------------------
    async def _take(self, config: FunctionConfig) -> SnapshotFailure | None:
        key = _key(config)
        unsupported = self._unsupported(config)
        if unsupported is not None:
            return SnapshotFailure("InvalidRuntime", unsupported)
        env = await self._launcher.launch(
            config, self._lost, InitializationType.SNAP_START, role=EnvironmentRole.SNAPSHOT
        )
        try:
            failure = await env.wait_initialised()
            if failure is None and env.process is not None:
                try:
                    await env.process.snapshot_ready()
                except Exception as exc:  # OSError, or the fork server's channel closed
                    env.kill()
                    return SnapshotFailure("InternalError", f"SnapStart: {exc}")
        except BaseException:
            env.kill()
            raise
        if failure is not None:
            env.kill()
            return SnapshotFailure("FunctionError", _describe(failure.payload, failure.error_type))
        if key not in self._configs:  # discarded meanwhile
            env.kill()
            return SnapshotFailure("InternalError", "the version was deleted")
        self._ready[key] = env
        if env.process is not None:
            backend = self._launcher.backend
            backend.warm_restores(env.process, config.memory_size, config.ephemeral_storage)
        log.info("snapshot of %s:%s ready", config.name, config.version)
        return None

    def _unsupported(self, config: FunctionConfig) -> str | None:
        """Why lambdad cannot snapshot this version (None: it can). A snapshot is a forked
        process, and only lambdad's own Python bootstrap (loaded in a zygote) can be forked."""
        runtime = self._launcher.catalog.get(config.runtime)
        if runtime is None or runtime.family is not Family.PYTHON:
            return (
                f"lambdad cannot snapshot {config.runtime}: SnapStart restores by forking the "
                "initialised process, which only its Python runtimes support"
            )
        if EXEC_WRAPPER in config.environment:
            return f"lambdad cannot snapshot a runtime started through {EXEC_WRAPPER}"
        return None

    def _lost(self, env: Environment) -> None:
        key = _key(env.config)
        if self._ready.get(key) is env:
            del self._ready[key]

    def statistics(self) -> dict[str, int]:
        return {"snapshots": len(self._ready), "restores": self.restores}

    def close(self) -> None:
        for task in self._taking.values():
            task.cancel()
        for env in list(self._ready.values()):
            env.kill()
        self._ready.clear()


def _describe(payload: bytes, error_type: str) -> str:
    """StateReason for a failed snapshot: the init error's type and message."""
    try:
        document = orjson.loads(payload)
    except orjson.JSONDecodeError:
        document = None
    message = document.get("errorMessage") if isinstance(document, dict) else None
    return f"{error_type}: {message}" if message else error_type
