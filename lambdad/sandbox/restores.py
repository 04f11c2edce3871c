"""RestorePool: a SnapStart snapshot's restored environments, forked ahead of need.

Restoring has a slow half — the child, born in its own cgroups (its snapshot moves there to fork
it: _tasks_files), makes its namespaces, mounts and Runtime API socket — and a fast half: its
variables and log, then the runtime's after-restore hooks. As with prepared
sandboxes (prepared.py), the slow half is done before any request: each snapshot keeps a few
restored children waiting for an assignment (guest: lambdad_jail.restore), refilled in the
background. Their identity arrives with the assignment, and random state was reseeded by the fork.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
import struct
from typing import Any

from lambdad.sandbox.base import ExitStatus, SandboxProcess
from lambdad.sandbox.cgroups import CgroupManager, EnvironmentCgroup
from lambdad.sandbox.prepared import (
    PoolKey,
    PreparedSandbox,
    SandboxPool,
    receive_runtime_api,
)
from lambdad.sandbox.zygote import Zygote

log = logging.getLogger(__name__)


_KEY: PoolKey = ("snapshot", None)  # a restore pool holds one kind of sandbox


class RestorePool:
    """The pre-forked restored children of one snapshot (a SandboxPool with a single key)."""

    def __init__(
        self,
        snapshot: SandboxProcess,
        forkserver: Zygote,
        cgroups: CgroupManager,
        plan: dict[str, Any],
        memory_mb: int,
        target: int = 2,
        snapshot_cgroup: EnvironmentCgroup | None = None,
    ) -> None:
        self._snapshot = snapshot
        self._forkserver = forkserver
        self._cgroups = cgroups
        # the snapshot's own cgroups: its fork server returns there after each fork, having
        # moved into the child's to fork it (its children are born in their cgroups)
        self._snapshot_cgroup = snapshot_cgroup
        self._plan = plan
        self._memory_mb = memory_mb
        self._pool = SandboxPool(lambda _key, _waited_for: self._build(), target)
        self._closing: asyncio.Task[None] | None = None

    async def take(self) -> PreparedSandbox:
        """A restored child waiting for its assignment: pre-forked if one is ready."""
        restored = await self._pool.take(_KEY)
        if restored is None:
            raise OSError("the snapshot could not be restored (see the server log)")
        return restored

    def fill(self) -> None:
        """Top the pool up to its target, in the background."""
        self._pool.fill(_KEY)

    def close(self) -> None:
        """Stop pre-forking; the waiting children end (they die with the snapshot anyway)."""
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._pool.close())

    async def _build(self) -> PreparedSandbox | None:
        await self._snapshot.snapshot_ready()
        cgroup = await self._cgroups.make(f"env-{secrets.token_hex(6)}", self._memory_mb)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        tasks: list[int] = []
        try:
            tasks = self._tasks_files(cgroup)
            _, exited = await self._forkserver.fork(
                {"restore": self._plan}, [theirs.fileno(), *tasks]
            )
        except BaseException:
            ours.close()
            cgroup.remove()
            raise
        finally:
            theirs.close()
            for fd in tasks:
                os.close(fd)
        pid, born = await _receive_pid(ours, exited)
        listeners = None
        if pid is not None:
            try:
                if not born:  # (its fork server could not move into its cgroups to fork it)
                    cgroup.attach(pid)
                # (credentials would crowd out the descriptors of the messages that follow)
                ours.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 0)
                ours.send(b"go")
            except ProcessLookupError:
                pass  # it died first: its snapshot is being discarded
            except OSError:
                log.exception("moving a restored environment into its cgroups failed")
            else:
                listeners = await receive_runtime_api(ours, exited)
        if pid is None or listeners is None:
            ours.close()
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            exited.add_done_callback(lambda _: cgroup.remove())
            return None
        exited.add_done_callback(lambda _: _remove_later(cgroup))
        return PreparedSandbox.ready(pid, exited, cgroup, ours, listeners)

    def _tasks_files(self, cgroup: EnvironmentCgroup) -> list[int]:
        """The child's cgroups' `tasks` files, then the snapshot's (its fork server moves
        into the first to fork the child there, then back through the second); none when
        they do not pair up (the child is then moved after its birth)."""
        home = self._snapshot_cgroup
        if home is None or len(home.paths) != len(cgroup.paths):
            return []
        targets = cgroup.open_tasks()
        try:
            return [*targets, *home.open_tasks()]
        except OSError:
            for fd in targets:
                os.close(fd)
            raise


def _remove_later(cgroup: EnvironmentCgroup, attempts: int = 50) -> None:
    """Remove a restored child's cgroups once it has ended — a second after, so that the
    environment's own exit handling (which reads the peak memory first) goes before."""
    loop = asyncio.get_running_loop()

    def attempt(left: int) -> None:
        if not cgroup.remove() and left > 0:
            loop.call_later(0.2, attempt, left - 1)

    loop.call_later(1.0, attempt, attempts)


async def _receive_pid(
    channel: socket.socket, exited: asyncio.Future[ExitStatus]
) -> tuple[int | None, bool]:
    """The pid (in lambdad's PID namespace) of the restored child writing on `channel` (the
    kernel attaches it to the message because the channel has SO_PASSCRED), and whether the
    child was born in its cgroups ("born"; else it asks to be moved: "attach")."""
    loop = asyncio.get_running_loop()
    channel.setblocking(False)
    received: asyncio.Future[tuple[int | None, bool]] = loop.create_future()

    def on_readable() -> None:
        try:
            message, ancillary, _, _ = channel.recvmsg(16, socket.CMSG_SPACE(12))
        except BlockingIOError:
            return
        except OSError:
            message, ancillary = b"", []
        loop.remove_reader(channel.fileno())
        pid = None
        for level, kind, data in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = struct.unpack("iII", data[:12])[0]
        if not received.done():
            received.set_result((pid or None, message == b"born"))

    loop.add_reader(channel.fileno(), on_readable)
    try:
        waiters: set[asyncio.Future[Any]] = {received, exited}
        await asyncio.wait(waiters, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    finally:
        loop.remove_reader(channel.fileno())
    return received.result() if received.done() else (None, False)
