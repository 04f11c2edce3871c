"""Pre-built sandboxes, waiting for work: the slow half of a cold start, done ahead.

A prepared sandbox has its cgroups (joined), namespaces, mounts and Runtime API socket, and
waits on its channel for an assignment (see guest/lambdad_jail.py). One pool per zygote
(interpreter): taking one is a pop; a background task builds replacements.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from lambdad.runtime.api_server import RuntimeApiServer
from lambdad.sandbox.base import ExitStatus
from lambdad.sandbox.cgroups import EnvironmentCgroup
from lambdad.sandbox.zygote import ZygoteKey

log = logging.getLogger(__name__)

PoolKey = ZygoteKey  # a pool per zygote
# How long a refill waits after a sandbox was taken while others remain: building one costs
# ~10 ms of CPU (zygote fork, jail), which on a small machine would otherwise be taken from the
# cold start that is running in the sandbox just taken (its first milliseconds).
REFILL_DELAY_S = 0.015  # (interpreter, preloaded module)


@dataclass
class PreparedSandbox:
    pid: int  # its top process: PID 1 of its namespace, or a shim (killing it tears all down)
    exited: asyncio.Future[ExitStatus]
    cgroup: EnvironmentCgroup
    channel: socket.socket  # where the assignment is sent
    runtime_api: socket.socket  # listening inside the sandbox's network namespace
    runtime_api_unix: socket.socket  # the same API on a Unix socket, for lambdad's bootstraps
    # lambdad's end of a connection made inside for lambdad's own bootstrap (Python), if any
    runtime_api_connection: socket.socket | None = None
    # where the sandbox's init takes the assignment's code to mount (the function process has
    # dropped its privileges ahead); None: the function process mounts it itself
    mounts: socket.socket | None = None
    # the Runtime API served on the sockets above while it waits (serve_ahead), unbound
    api: RuntimeApiServer | None = None

    @classmethod
    def ready(
        cls,
        pid: int,
        exited: asyncio.Future[ExitStatus],
        cgroup: EnvironmentCgroup,
        channel: socket.socket,
        sockets: RuntimeApiSockets,
    ) -> PreparedSandbox:
        return cls(
            pid,
            exited,
            cgroup,
            channel,
            sockets.listener,
            sockets.unix,
            sockets.connection,
            sockets.mounts,
        )

    async def serve_ahead(self) -> None:
        """Serve its Runtime API now, unbound (see RuntimeApiServer): off the path of the
        cold start that takes it."""
        api = RuntimeApiServer()
        try:
            await api.serve(self.runtime_api)
            await api.serve(self.runtime_api_unix)
            if self.runtime_api_connection is not None:
                await api.adopt(self.runtime_api_connection)
        except BaseException:
            api.close()
            raise
        self.api = api

    @property
    def alive(self) -> bool:
        return not self.exited.done()

    def discard(self) -> None:
        """Tear down a sandbox that will never be assigned."""
        if self.api is not None:
            self.api.close()  # (the sockets' last users: it closes them)
        self.channel.close()
        self.runtime_api.close()
        self.runtime_api_unix.close()
        if self.runtime_api_connection is not None:
            self.runtime_api_connection.close()
        if self.mounts is not None:
            self.mounts.close()
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)


@dataclass(frozen=True)
class PoolStatistics:
    idle: int
    built: int
    taken_warm: int
    built_on_demand: int


class SandboxPool:
    def __init__(
        self, build: Callable[[PoolKey, bool], Awaitable[PreparedSandbox | None]], target: int
    ) -> None:
        """`build(key, waited_for)` prepares one sandbox; `waited_for`: a take is waiting for
        it (the pool was empty), so it may skip what only pays off while a sandbox waits."""
        self._build = build
        self._target = target
        # zygote key -> idle prepared sandboxes, oldest first
        self._idle: dict[PoolKey, list[PreparedSandbox]] = {}
        self._filling: dict[PoolKey, asyncio.Task[None]] = {}
        self._built = 0
        self._warm = 0
        self._on_demand = 0
        self._closed = False

    async def take(self, key: PoolKey) -> PreparedSandbox | None:
        """A ready sandbox: from the pool if one is waiting, else built now."""
        idle = self._idle.setdefault(key, [])
        while idle:
            prepared = idle.pop()
            if prepared.alive:
                self._warm += 1
                if idle:  # replacements wait a little: the sandbox just taken needs the CPU
                    asyncio.get_running_loop().call_later(REFILL_DELAY_S, self.fill, key)
                else:
                    self.fill(key)
                return prepared
            prepared.discard()
        self.fill(key)
        self._on_demand += 1
        return await self._build_one(key, waited_for=True)

    def fill(self, key: PoolKey) -> None:
        """Top the pool of `key` up to its target, in the background."""
        task = self._filling.get(key)
        if self._closed:  # (a delayed refill may come after close)
            return
        if self._target > 0 and (task is None or task.done()):
            self._filling[key] = asyncio.ensure_future(self._fill(key))

    async def _fill(self, key: PoolKey) -> None:
        """Build what is missing all at once (the zygote forks them one after another, the
        sandboxes get ready side by side), until the target is met or 3 builds failed."""
        idle = self._idle.setdefault(key, [])
        failures = 0
        while (missing := self._target - len(idle)) > 0 and failures < 3:
            builds = [self._build_one(key, waited_for=False) for _ in range(missing)]
            results = await asyncio.gather(*builds, return_exceptions=True)
            for result in results:
                if isinstance(result, PreparedSandbox):
                    if self._closed:
                        result.discard()
                    else:
                        idle.append(result)
            for result in results:
                if isinstance(result, BaseException) and not isinstance(result, Exception):
                    raise result  # cancelled (close() discards what was built)
                if isinstance(result, Exception):  # a task boundary: log and back off
                    log.error("preparing a sandbox failed", exc_info=result)
                if not isinstance(result, PreparedSandbox):
                    failures += 1
            if failures:
                await asyncio.sleep(0.1 * failures)

    async def _build_one(self, key: PoolKey, *, waited_for: bool) -> PreparedSandbox | None:
        prepared = await self._build(key, waited_for)
        if prepared is not None:
            self._built += 1
        return prepared

    def statistics(self) -> PoolStatistics:
        idle = sum(len(v) for v in self._idle.values())
        return PoolStatistics(idle, self._built, self._warm, self._on_demand)

    async def close(self) -> None:
        self._closed = True
        for task in self._filling.values():
            task.cancel()
        for task in self._filling.values():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for idle in self._idle.values():
            for prepared in idle:
                prepared.discard()
        self._idle.clear()


@dataclass(frozen=True)
class RuntimeApiSockets:
    """What a sandbox sends when it is ready (see guest/lambdad_jail._runtime_api_sockets)."""

    listener: socket.socket  # 127.0.0.1:9001 inside
    unix: socket.socket  # the same API on a Unix socket
    connection: socket.socket | None  # lambdad's end of a pre-made connection
    mounts: socket.socket | None  # init's mount socket

    @classmethod
    def parse(cls, message: bytes, fds: list[int]) -> RuntimeApiSockets | None:
        words = message.split()
        extras = [w for w in (b"connected", b"mounts") if w in words]
        if not words or words[0] != b"runtime-api" or len(fds) != 2 + len(extras):
            for fd in fds:
                os.close(fd)
            return None
        sockets = [socket.socket(fileno=fd) for fd in fds]
        named = dict(zip(extras, sockets[2:], strict=True))
        return cls(sockets[0], sockets[1], named.get(b"connected"), named.get(b"mounts"))


async def receive_runtime_api(
    channel: socket.socket, exited: asyncio.Future[ExitStatus]
) -> RuntimeApiSockets | None:
    """The sockets the sandbox made inside (None if it died before it was ready)."""
    loop = asyncio.get_running_loop()
    channel.setblocking(False)
    received: asyncio.Future[RuntimeApiSockets | None] = loop.create_future()

    def on_readable() -> None:
        try:
            message, fds, _, _ = socket.recv_fds(channel, 64, 4)
        except BlockingIOError:
            return
        except OSError:
            message, fds = b"", []
        loop.remove_reader(channel.fileno())
        if received.done():
            for fd in fds:
                os.close(fd)
            return
        received.set_result(RuntimeApiSockets.parse(message, fds))

    loop.add_reader(channel.fileno(), on_readable)
    waiters: set[asyncio.Future[Any]] = {received, exited}
    try:
        await asyncio.wait(waiters, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    finally:
        loop.remove_reader(channel.fileno())
    return received.result() if received.done() else None
