"""EnvironmentLauncher: builds and starts one execution environment for a function version."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from lambdad.control.model import FunctionConfig
from lambdad.observability.logs import LogStore, new_stream_name
from lambdad.runtime.api_server import RuntimeApiServer
from lambdad.runtime.launch import (
    EXEC_WRAPPER,
    EnvironmentPlan,
    SessionCredentials,
    has_bootstrap,
    launch_spec,
)
from lambdad.runtime.runtimes import Family, RuntimeCatalog
from lambdad.sandbox.base import SandboxBackend, SandboxProcess
from lambdad.scheduler.answer_polling import AnswerPolling
from lambdad.scheduler.environment import Environment, EnvironmentRole, InitializationType
from lambdad.store.code_cache import CodeCache


class EnvironmentLauncher:
    def __init__(
        self,
        backend: SandboxBackend,
        catalog: RuntimeCatalog,
        code: CodeCache,
        logs: LogStore,
        sessions: SessionRegistry | None = None,
        layers: LayerContent | None = None,
        polling: AnswerPolling | None = None,
        draw_memory: Callable[[int], None] | None = None,
    ) -> None:
        """`draw_memory`: told as each environment's sandbox has started, with how many are
        starting now (the memory reserve's `draw`: sandbox/memory_reserve.py)."""
        self.backend = backend
        self.catalog = catalog
        self.code = code
        self.logs = logs
        self.sessions = sessions
        self.layers = layers
        # shared by every environment it starts: it counts the invocations they run
        self.polling = AnswerPolling(0) if polling is None else polling
        self.draw_memory = draw_memory or (lambda starting: None)
        self.starting = 0  # sandboxes being started now

    async def launch(
        self,
        config: FunctionConfig,
        on_dead: Callable[[Environment], None],
        initialization_type: InitializationType = InitializationType.ON_DEMAND,
        *,
        role: EnvironmentRole = EnvironmentRole.RUNS,
        snapshot: SandboxProcess | None = None,
        staged: bool = False,
    ) -> Environment:
        """Start an environment of `config`; SnapStart: with `role` SNAPSHOT, one that becomes
        the version's snapshot; with RESTORED, one forked from `snapshot` (a snapshot's
        process). The sandbox gets its assignment first and lambdad's own bookkeeping (the
        Environment, its log, its session) follows while it starts (Init Duration still counts
        from here). `staged`: see ``stage``."""
        created = time.monotonic()
        stream = new_stream_name(config.version)
        creds = SessionCredentials.generate()
        forget = self._forgetting(creds, on_dead)

        def environment(api: RuntimeApiServer | None = None) -> Environment:
            log = self.logs.open_stream(config.account_id, config.log_group, stream)
            return Environment(
                config,
                log,
                forget,
                initialization_type,
                role,
                created=created,
                polling=self.polling,
                api=api,
                staged=staged,
            )

        runtime = self.catalog.get(config.runtime)
        if runtime is None:
            return _failed(
                environment(),
                "Runtime.InvalidRuntime",
                f"The runtime {config.runtime} is not available",
            )
        layout = self.backend.layout()
        code_dir = self.code.path_for(config.code_key)
        opt_dir = await self._opt_dir(config)
        missing_go_binary = (
            runtime.family is Family.GO and not (code_dir / config.handler).is_file()
        )
        no_bootstrap = runtime.family is Family.PROVIDED and not has_bootstrap(code_dir, opt_dir)
        if no_bootstrap or missing_go_binary:
            return _failed(environment(), "Runtime.InvalidEntrypoint", NO_BOOTSTRAP)
        env = None
        address = layout.runtime_api
        if not address:  # a Runtime API listener of lambdad's own, started before the runtime
            env = environment()
            address = await env.api.start()
        plan = EnvironmentPlan(
            config,
            runtime,
            code_dir,
            address,
            stream,
            initialization_type=initialization_type,
            layout=layout,
            opt_dir=opt_dir,
        )
        read_fd, write_fd = os.pipe()
        try:
            spec = launch_spec(
                plan, write_fd, creds, snapshot=role is EnvironmentRole.SNAPSHOT, staged=staged
            )
            self.starting += 1
            try:
                if role is EnvironmentRole.RESTORED:
                    assert snapshot is not None
                    process = await self.backend.restore(snapshot, spec)
                else:
                    process = await self.backend.start(spec)
            finally:
                self.draw_memory(self.starting)
                self.starting -= 1
        except OSError as exc:
            os.close(read_fd)
            if role is EnvironmentRole.RESTORED:  # its snapshot's manager decides what next
                if env is not None:
                    env.kill()  # (its Runtime API listener: nothing else was started)
                raise
            if runtime.family is not Family.PROVIDED:
                message = f"could not start the runtime: {exc}"
                return _failed(env or environment(), "Runtime.Unknown", message)
            if not isinstance(exc, FileNotFoundError):
                message = f"fork/exec bootstrap: {exc.strerror}"
                return _failed(env or environment(), "Runtime.InvalidEntrypoint", message)
            return _failed(env or environment(), "Runtime.InvalidEntrypoint", NO_BOOTSTRAP)
        finally:
            os.close(write_fd)
        # Nothing above awaited since the start: the runtime cannot have used these yet.
        # (a Runtime API served while the sandbox waited is bound to it)
        env = env or environment(process.runtime_api_server)
        if self.sessions is not None:
            self.sessions.register_session(
                creds.access_key_id, creds.secret_access_key, config.account_id, creds.session_token
            )
        if process.runtime_api_socket is not None:
            await env.api.serve(process.runtime_api_socket)
        if process.runtime_api_unix_socket is not None:
            await env.api.serve(process.runtime_api_unix_socket)
        if process.runtime_api_connection is not None:
            await env.api.adopt(process.runtime_api_connection)
        connection = env.api.connection  # adopted now, or by the server served ahead
        if connection is not None:
            # lambdad's own bootstrap, run in-process on that connection, takes a pushed event
            in_process = spec.zygote_interpreter is not None and not spec.exec_argv
            on_demand = initialization_type is InitializationType.ON_DEMAND
            if in_process and on_demand and role is EnvironmentRole.RUNS:
                env.accept_pushes(connection)
        env.attach(process, read_fd)
        return env

    async def stage(
        self, config: FunctionConfig, on_dead: Callable[[Environment], None]
    ) -> Environment | None:
        """An on-demand environment of `config` built ahead of its invocation, or None where
        that cannot be done. It is a cold start's environment up to the moment the function's
        init would run: sandbox, code mounted, variables (its own credentials), the runtime
        started (lambdad's Python bootstrap also finds the handler's module and reads its
        .pyc) — no code of the function runs. It then waits (EnvironmentState.STAGED) for the
        first invocation, which starts its init: INIT_START, the init time limit and Init
        Duration count from there, as in any cold start. The runtime learns of it from the
        event pushed to it (lambdad's Python bootstrap on a connection made ahead) or from the
        answer to its `GET /runtime/lambdad/wait` (lambdad's other bootstraps, and Python's
        without such a connection). Only lambdad's own bootstraps wait so: not a custom
        runtime's bootstrap (the function's own code), nor any runtime behind an exec
        wrapper, and a SnapStart version is restored instead."""
        runtime = self.catalog.get(config.runtime)
        if (
            runtime is None
            or runtime.family not in STAGED_FAMILIES
            or config.snap_start_on
            or EXEC_WRAPPER in config.environment
        ):
            return None
        env = await self.launch(config, on_dead, staged=True)
        if env.process is None:  # it could not start: its cold start will say why
            env.kill()
            return None
        return env

    async def _opt_dir(self, config: FunctionConfig) -> Path | None:
        """The function's layers, merged once into one directory (mounted at /opt)."""
        if not config.layers or self.layers is None:
            return None
        arns = [arn for arn, _ in config.layers]
        content = await asyncio.to_thread(self.layers.content_for_existing, arns)
        return content.opt_dir

    def _forgetting(
        self, creds: SessionCredentials, on_dead: Callable[[Environment], None]
    ) -> Callable[[Environment], None]:
        """on_dead, after revoking the environment's credentials."""

        def dead(env: Environment) -> None:
            if self.sessions is not None:
                self.sessions.forget_session(creds.access_key_id)
            on_dead(env)

        return dead


class SessionRegistry(Protocol):
    """Where environment credentials become valid API keys (lambdad.control.accounts)."""

    def register_session(
        self, access_key_id: str, secret: str, account_id: str, session_token: str | None = None
    ) -> None: ...

    def forget_session(self, access_key_id: str) -> None: ...


# Runtimes whose bootstrap is lambdad's own and waits, staged, for its first invocation.
STAGED_FAMILIES = frozenset({Family.PYTHON, Family.NODEJS, Family.RUBY, Family.JAVA, Family.DOTNET})

NO_BOOTSTRAP = "Couldn't find valid bootstrap(s): [/var/task/bootstrap /opt/bootstrap]"


def _failed(env: Environment, error_type: str, message: str) -> Environment:
    """An environment that could not start: its first invocation reports this init error."""
    env.launch_failed(error_type, message)
    return env


class LayerContent(Protocol):
    """Where a function's layers are unpacked (lambdad.control.layers.LayerRegistry)."""

    def content_for_existing(self, layer_arns: Sequence[str]) -> ResolvedLayerContent: ...


class ResolvedLayerContent(Protocol):
    @property
    def opt_dir(self) -> Path | None: ...
