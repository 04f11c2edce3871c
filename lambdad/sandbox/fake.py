"""FakeBackend: environments as in-process asyncio tasks, for unit tests of everything above.

Each fake environment is a small Runtime API client (real HTTP over loopback, to the
environment's own listener) that calls a Python coroutine per invocation. A `FakeBehaviour`
decides what the "runtime" does: answer, fail, init-fail, exit, or hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from lambdad.sandbox.base import (
    ExitStatus,
    IsolationReport,
    LaunchSpec,
    SandboxBackend,
    SandboxProcess,
)

Handler = Callable[[bytes, Mapping[str, str]], Awaitable[bytes]]


class FakeExit(Exception):
    """Raised by a fake handler to end its environment with an exit code."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


@dataclass
class FakeBehaviour:
    handler: Handler
    init_error: bytes | None = None  # posted to /runtime/init/error instead of serving
    restore_error: bytes | None = None  # SnapStart: posted to /runtime/restore/error
    restore_fork_failures: int = 0  # SnapStart: this many restores fail to fork (OSError)
    peak_memory: int = 32 * 1048576
    # Like the namespace backend for lambdad's Python bootstrap: each environment's runtime
    # gets a Runtime API connection made ahead (its first event may be pushed down it). A
    # staged one (LAMBDAD_STAGED) waits for that event before it initialises, or, without such
    # a connection, for the answer to GET /runtime/lambdad/wait.
    connected: bool = False
    ignores_staging: bool = False  # a misbehaving runtime: initialises at once even if staged
    started: list[LaunchSpec] = field(default_factory=list)
    restored: list[LaunchSpec] = field(default_factory=list)


async def _request(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    method: str,
    path: str,
    body: bytes = b"",
    headers: Mapping[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    head = (
        f"{method} /2018-06-01{path} HTTP/1.1\r\nHost: runtime\r\nContent-Length: {len(body)}\r\n"
    )
    for name, value in (headers or {}).items():
        head += f"{name}: {value}\r\n"
    writer.write(head.encode() + b"\r\n" + body)
    await writer.drain()
    status_line = await reader.readuntil(b"\r\n")
    found: dict[str, str] = {}
    while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
        name, _, value = line.decode().partition(":")
        found[name.strip().lower()] = value.strip()
    payload = await reader.readexactly(int(found.get("content-length", "0")))
    return int(status_line.split()[1]), found, payload


async def _readable(sock: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(sock.fileno(), wake)
    try:
        await ready
    finally:
        loop.remove_reader(sock.fileno())


class _FakeProcess(SandboxProcess):
    _pids = iter(range(10_000_000, 20_000_000))

    def __init__(self, behaviour: FakeBehaviour, spec: LaunchSpec, restored: bool = False) -> None:
        self.pid = next(self._pids)
        self._behaviour = behaviour
        loop = asyncio.get_running_loop()
        self._exited: asyncio.Future[ExitStatus] = loop.create_future()
        # SnapStart: resolved when this snapshot's runtime called /runtime/restore/next
        self._ready: asyncio.Future[None] | None = loop.create_future() if spec.snapshot else None
        self._restored = restored
        theirs = None
        if behaviour.connected:
            self.runtime_api_connection, theirs = socket.socketpair()
        staged = spec.env.get("LAMBDAD_STAGED") == "1" and not behaviour.ignores_staging
        self._task = asyncio.ensure_future(
            self._run(spec.env["AWS_LAMBDA_RUNTIME_API"], theirs, staged)
        )

    async def snapshot_ready(self) -> None:
        if self._ready is None:
            raise OSError("this environment is not a snapshot")
        waiters: set[asyncio.Future[Any]] = {self._ready, self._exited}
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        if not self._ready.done():
            raise OSError("the snapshot ended before it could be used")

    async def _run(self, address: str, connection: socket.socket | None, staged: bool) -> None:
        status = ExitStatus(code=0)
        if connection is None:
            host, port = address.rsplit(":", 1)
            reader, writer = await asyncio.open_connection(host, int(port))
            if staged:  # as lambdad's bootstraps wait without a connection made ahead
                try:
                    await _request(reader, writer, "GET", "/runtime/lambdad/wait")
                except asyncio.CancelledError:
                    writer.close()
                    self._exited.set_result(ExitStatus(signal=signal.SIGKILL))
                    return
        else:
            if staged:
                try:
                    await _readable(connection)
                except asyncio.CancelledError:
                    connection.close()
                    self._exited.set_result(ExitStatus(signal=signal.SIGKILL))
                    return
            reader, writer = await asyncio.open_connection(sock=connection)
        try:
            if self._behaviour.init_error is not None and not self._restored:
                await _request(
                    reader, writer, "POST", "/runtime/init/error", self._behaviour.init_error
                )
                status = ExitStatus(code=1)
                return
            if self._ready is not None:  # a snapshot: initialised, then frozen until killed
                await _request(reader, writer, "GET", "/runtime/restore/next")
                self._ready.set_result(None)
                await asyncio.Event().wait()
            if self._restored:
                await _request(reader, writer, "GET", "/runtime/restore/next")
                if self._behaviour.restore_error is not None:
                    await _request(
                        reader,
                        writer,
                        "POST",
                        "/runtime/restore/error",
                        self._behaviour.restore_error,
                    )
                    status = ExitStatus(code=1)
                    return
            while True:
                _, headers, event = await _request(
                    reader, writer, "GET", "/runtime/invocation/next"
                )
                request_id = headers["lambda-runtime-aws-request-id"]
                try:
                    result = await self._behaviour.handler(event, headers)
                except FakeExit as exit_:
                    status = ExitStatus(code=exit_.code)
                    return
                except Exception as exc:  # the fake runtime reports it like a real one
                    body = f'{{"errorMessage":"{exc}","errorType":"{type(exc).__name__}"}}'
                    await _request(
                        reader,
                        writer,
                        "POST",
                        f"/runtime/invocation/{request_id}/error",
                        body.encode(),
                    )
                    continue
                await _request(
                    reader, writer, "POST", f"/runtime/invocation/{request_id}/response", result
                )
        except asyncio.CancelledError:
            status = ExitStatus(signal=signal.SIGKILL)
        except (ConnectionError, asyncio.IncompleteReadError):
            status = ExitStatus(code=1)
        finally:
            writer.close()
            if not self._exited.done():
                self._exited.set_result(status)

    async def wait(self) -> ExitStatus:
        return await asyncio.shield(self._exited)

    def kill(self) -> None:
        self._task.cancel()

    def peak_memory_bytes(self) -> int:
        return self._behaviour.peak_memory


class FakeBackend(SandboxBackend):
    def __init__(self, behaviour: FakeBehaviour) -> None:
        self.behaviour = behaviour
        self.processes: list[SandboxProcess] = []

    async def start(self, spec: LaunchSpec) -> SandboxProcess:
        self.behaviour.started.append(spec)
        process = _FakeProcess(self.behaviour, spec)
        self.processes.append(process)
        return process

    async def restore(self, snapshot: SandboxProcess, spec: LaunchSpec) -> SandboxProcess:
        await snapshot.snapshot_ready()
        if self.behaviour.restore_fork_failures > 0:
            self.behaviour.restore_fork_failures -= 1
            raise OSError("the snapshot's fork server is gone")
        self.behaviour.restored.append(spec)
        process = _FakeProcess(self.behaviour, spec, restored=True)
        self.processes.append(process)
        return process

    def isolation(self) -> IsolationReport:
        return IsolationReport("fake", {}, ("in-process fake for tests",))

    async def close(self) -> None:
        for process in self.processes:
            process.kill()
        with contextlib.suppress(Exception):
            await asyncio.gather(*(p.wait() for p in self.processes))
