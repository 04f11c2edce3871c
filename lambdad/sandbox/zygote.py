"""lambdad's side of a zygote (see sandbox/guest/lambdad_zygote.py)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from lambdad.sandbox.base import ExitStatus

log = logging.getLogger(__name__)

GUEST_DIR = Path(__file__).resolve().parent / "guest"
ZYGOTE_SCRIPT = GUEST_DIR / "lambdad_zygote.py"
# A fork's answer takes ~1 ms (16 requests in flight at most: namespaces.FORKS_IN_FLIGHT); a
# zygote that has not answered in this long is wedged, and the cold start waiting fails.
FORK_ANSWER_TIMEOUT_S = 30.0


class ZygoteError(OSError):
    """The zygote could not fork an environment (or is gone): like a failed fork itself."""


# What the fork server needs of a request before it forks (lambdad_forkserver's header), so
# that only the child parses the request: see lambdad_forkserver.
INIT_NONE, INIT_GO, INIT_MOUNTS = 0, 1, 2


def fork_header(request_id: int, request: dict[str, Any]) -> bytes:
    """The header line of a fork request: its id, whether the child gets a PID namespace of
    its own, and, for a sandbox, which compiled init it gets (INIT_GO: only the "go" pipe,
    for a sandbox that mounts for itself; INIT_MOUNTS: init mounts the assignment) and the
    sandbox's uid and gid."""
    jail = request.get("jail")
    init = INIT_NONE
    uid = gid = 0
    if jail is not None:
        init = INIT_GO if jail.get("late_privileges") else INIT_MOUNTS
        uid, gid = int(jail["uid"]), int(jail["gid"])
    namespace = 1 if request.get("pid_namespace") else 0
    return b"%d %d %d %d %d\n" % (request_id, namespace, init, uid, gid)


class Zygote:
    """One fork server per interpreter; forks are answered in order over a SOCK_SEQPACKET pair.

    `preload` is (directory, module) the zygote imports before its first fork (the runtime's
    bootstrap), so forked environments start with it loaded.
    """

    def __init__(
        self,
        interpreter: str,
        preload: tuple[str, str] | None = None,
        memory_merge: bool = False,
        template: dict[str, Any] | None = None,
    ) -> None:
        self.interpreter = interpreter
        self.preload = preload
        # the sandboxes' common root, which the zygote moves into (lambdad_jail.enter_template)
        self.template = template
        # opt the zygote and every environment it forks in to samepage merging (memory_merge.py)
        self.memory_merge = memory_merge
        self._ids = itertools.count(1)
        # request id -> future of the forked pid
        self._forks: dict[int, asyncio.Future[tuple[int, asyncio.Future[ExitStatus]]]] = {}
        # pid -> future of its exit status (created on fork)
        self._exits: dict[int, asyncio.Future[ExitStatus]] = {}
        self._ready: asyncio.Future[int] | None = None
        self._sock: socket.socket | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        # requests waiting for room in the socket's buffer (see _send)
        self._waiting_for_room: list[asyncio.Future[None]] = []

    @classmethod
    def adopt(cls, sock: socket.socket, name: str) -> Zygote:
        """Talk the fork-server protocol over `sock` to a process lambdad did not start here
        (a SnapStart snapshot); `wait_ready` resolves once it serves."""
        zygote = cls(name)
        loop = asyncio.get_running_loop()
        sock.setblocking(False)
        zygote._sock = sock
        zygote._ready = loop.create_future()
        loop.add_reader(sock.fileno(), zygote._on_readable)
        return zygote

    async def wait_ready(self) -> int:
        """The server's pid (in its own PID namespace) once it serves requests."""
        if self._ready is None:
            raise ZygoteError("zygote is not running")
        return await asyncio.shield(self._ready)

    async def wait_ready_unless(self, exited: asyncio.Future[ExitStatus]) -> None:
        """`wait_ready`, but OSError if `exited` (the server's process ending) comes first."""
        ready = asyncio.ensure_future(self.wait_ready())
        waiters: set[asyncio.Future[Any]] = {ready, exited}
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        if not ready.done():
            ready.cancel()
            raise OSError("the snapshot ended before it could be used")
        ready.result()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONDONTWRITEBYTECODE": "1"}
        if self.memory_merge:
            env["LAMBDAD_MEMORY_MERGE"] = "1"
        if self.template is not None:
            env["LAMBDAD_TEMPLATE"] = orjson.dumps(self.template).decode()
        argv = [self.interpreter, "-u", str(ZYGOTE_SCRIPT), str(theirs.fileno())]
        if self.preload is not None:
            argv += list(self.preload)
        self._proc = subprocess.Popen(
            argv,
            pass_fds=[theirs.fileno()],
            env=env,
            cwd="/",
            stdin=subprocess.DEVNULL,
        )
        theirs.close()
        ours.setblocking(False)
        self._sock = ours
        self._ready = loop.create_future()
        loop.add_reader(ours.fileno(), self._on_readable)
        await asyncio.wait_for(self._ready, timeout=30)

    @property
    def alive(self) -> bool:
        if self._sock is None:
            return False
        return self._proc is None or self._proc.poll() is None

    async def fork(
        self, request: dict[str, Any], fds: list[int]
    ) -> tuple[int, asyncio.Future[ExitStatus]]:
        """Fork one environment (env, cwd, entry or argv, jail); fds[0] is its log."""
        if self._sock is None:
            raise ZygoteError("zygote is not running")
        request_id = next(self._ids)
        message = fork_header(request_id, request) + orjson.dumps(request)
        await self._send(message, fds)
        # Registered right after the send, with no await between: the answer is read later.
        reply: asyncio.Future[tuple[int, asyncio.Future[ExitStatus]]]
        reply = asyncio.get_running_loop().create_future()
        self._forks[request_id] = reply
        # (the exit future comes with the pid: a child may have ended, and its exit been
        # dispatched, before this coroutine runs again)
        try:
            return await asyncio.wait_for(reply, FORK_ANSWER_TIMEOUT_S)
        except TimeoutError:
            raise ZygoteError(
                f"zygote for {self.interpreter} did not answer a fork in "
                f"{FORK_ANSWER_TIMEOUT_S:g} s"
            ) from None
        finally:
            # nobody waits for it any more (answered, timed out or cancelled): a late answer's
            # child is killed (_dispatch)
            self._forks.pop(request_id, None)

    async def _send(self, message: bytes, fds: list[int]) -> None:
        """Send one request; while the socket's buffer is full (the zygote reads late: busy
        forking, or many requests at once), wait for room rather than fail the fork."""
        while True:
            if self._sock is None:
                raise ZygoteError("zygote is not running")
            try:
                socket.send_fds(self._sock, [message], fds)
                return
            except BlockingIOError:
                pass
            loop = asyncio.get_running_loop()
            room: asyncio.Future[None] = loop.create_future()
            if not self._waiting_for_room:
                loop.add_writer(self._sock.fileno(), self._wake_senders)
            self._waiting_for_room.append(room)
            await room

    def _wake_senders(self) -> None:
        if self._sock is not None and self._waiting_for_room:
            asyncio.get_running_loop().remove_writer(self._sock.fileno())
        waiting, self._waiting_for_room = self._waiting_for_room, []
        for room in waiting:
            if not room.done():
                room.set_result(None)

    def _on_readable(self) -> None:
        assert self._sock is not None
        while True:
            try:
                data = self._sock.recv(65536)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._on_closed()
                return
            self._dispatch(orjson.loads(data))

    def _dispatch(self, message: dict[str, object]) -> None:
        loop = asyncio.get_running_loop()
        if "exit" in message:
            pid = int(message["exit"])  # type: ignore[call-overload]
            status = ExitStatus(message.get("code"), message.get("signal"))  # type: ignore[arg-type]
            exit_future = self._exits.pop(pid, None)
            if exit_future is not None and not exit_future.done():
                exit_future.set_result(status)
        elif "ready" in message:
            if self._ready is not None and not self._ready.done():
                self._ready.set_result(int(message["ready"]))  # type: ignore[call-overload]
        else:
            reply = self._forks.pop(int(message["id"]), None)  # type: ignore[call-overload]
            if reply is None or reply.done():
                if "pid" in message:  # forked for a caller that stopped waiting: not wanted
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(message["pid"]), signal.SIGKILL)  # type: ignore[call-overload]
                return
            if "pid" in message:
                pid = int(message["pid"])  # type: ignore[call-overload]
                exited: asyncio.Future[ExitStatus] = loop.create_future()
                self._exits[pid] = exited
                reply.set_result((pid, exited))
            else:
                reply.set_exception(ZygoteError(str(message.get("error"))))

    def _on_closed(self) -> None:
        self._wake_senders()  # they find the socket gone: ZygoteError
        if self._sock is not None:
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        error = ZygoteError(f"zygote for {self.interpreter} exited")
        for reply in self._forks.values():
            if not reply.done():
                reply.set_exception(error)
        self._forks.clear()
        # Children of a dead zygote die with it (PDEATHSIG): report them as killed.
        for exit_future in self._exits.values():
            if not exit_future.done():
                exit_future.set_result(ExitStatus(signal=9))
        self._exits.clear()
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(error)

    def disconnect(self) -> None:
        """Close the socket (an adopted server ends when it sees that)."""
        if self._sock is not None:
            self._on_closed()

    async def close(self) -> None:
        if self._sock is not None:
            self._on_closed()
        if self._proc is not None:
            self._proc.kill()
            await asyncio.to_thread(self._proc.wait)
            self._proc = None


ZygoteKey = tuple[str, tuple[str, str] | None]  # (interpreter, preloaded module)


class Zygotes:
    """A backend's zygotes: one per (interpreter, preload), started on first use (concurrent
    callers share one start) and again if it died."""

    def __init__(
        self,
        memory_merge: bool = False,
        template: Callable[[str], dict[str, Any]] | None = None,
    ) -> None:
        self.memory_merge = memory_merge
        self._template = template  # interpreter -> its sandboxes' template (sandboxing zygotes)
        self._running: dict[ZygoteKey, Zygote] = {}
        self._starting: dict[ZygoteKey, asyncio.Task[Zygote]] = {}

    async def get(self, interpreter: str, preload: tuple[str, str] | None) -> Zygote:
        key = (interpreter, preload)
        zygote = self._running.get(key)
        if zygote is not None and zygote.alive:
            return zygote
        task = self._starting.get(key)
        if task is None or task.done():
            task = asyncio.ensure_future(self._start(key))
            self._starting[key] = task
        return await asyncio.shield(task)

    async def _start(self, key: ZygoteKey) -> Zygote:
        template = self._template(key[0]) if self._template is not None else None
        zygote = Zygote(*key, memory_merge=self.memory_merge, template=template)
        await zygote.start()
        self._running[key] = zygote
        return zygote

    async def close(self) -> None:
        for zygote in self._running.values():
            await zygote.close()
        self._running.clear()
