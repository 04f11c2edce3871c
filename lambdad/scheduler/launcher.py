"""EnvironmentLauncher: builds and starts one execution environment for a function version."""

from __future__ import annotations

import os
from collections.abc import Callable

from lambdad.control.model import FunctionConfig
from lambdad.observability.logs import LogStore, new_stream_name
from lambdad.runtime.launch import (
    EnvironmentPlan,
    SessionCredentials,
    has_bootstrap,
    launch_spec,
)
from lambdad.runtime.runtimes import Family, RuntimeCatalog
from lambdad.sandbox.base import SandboxBackend
from lambdad.scheduler.environment import Environment
from lambdad.store.code_cache import CodeCache


class EnvironmentLauncher:
    def __init__(
        self,
        backend: SandboxBackend,
        catalog: RuntimeCatalog,
        code: CodeCache,
        logs: LogStore,
    ) -> None:
        self.backend = backend
        self.catalog = catalog
        self.code = code
        self.logs = logs

    async def launch(
        self, config: FunctionConfig, on_dead: Callable[[Environment], None]
    ) -> Environment:
        stream = new_stream_name(config.version)
        log = self.logs.open_stream(config.account_id, config.log_group, stream)
        env = Environment(config, log, on_dead)
        runtime = self.catalog.get(config.runtime)
        if runtime is None:
            env.launch_failed(
                "Runtime.InvalidRuntime", f"The runtime {config.runtime} is not available"
            )
            return env
        layout = self.backend.layout()
        code_dir = self.code.path_for(config.code_key)
        if runtime.family is Family.PROVIDED and not has_bootstrap(code_dir):
            env.launch_failed(
                "Runtime.InvalidEntrypoint",
                "Couldn't find valid bootstrap(s): [/var/task/bootstrap /opt/bootstrap]",
            )
            return env
        address = layout.runtime_api or await env.api.start()
        plan = EnvironmentPlan(config, runtime, code_dir, address, stream, layout=layout)
        read_fd, write_fd = os.pipe()
        try:
            spec = launch_spec(plan, write_fd, SessionCredentials.generate())
            process = await self.backend.start(spec)
        except OSError as exc:
            os.close(read_fd)
            if runtime.family is Family.PROVIDED:
                env.launch_failed(
                    "Runtime.InvalidEntrypoint",
                    "Couldn't find valid bootstrap(s): [/var/task/bootstrap /opt/bootstrap]"
                    if isinstance(exc, FileNotFoundError)
                    else f"fork/exec bootstrap: {exc.strerror}",
                )
            else:
                env.launch_failed("Runtime.Unknown", f"could not start the runtime: {exc}")
            return env
        finally:
            os.close(write_fd)
        if process.runtime_api_socket is not None:
            await env.api.serve(process.runtime_api_socket)
        env.attach(process, read_fd)
        return env
