"""The plain-process backend: environments are ordinary host processes (no isolation).

Python environments are forked from a per-interpreter zygote; everything else is exec'd.
This backend is the fallback where namespaces/cgroups are unavailable, and says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys

import orjson

from lambdad.sandbox.base import (
    ExitStatus,
    IsolationReport,
    LaunchSpec,
    SandboxBackend,
    SandboxProcess,
)
from lambdad.sandbox.memory_merge import MERGE_NOTE
from lambdad.sandbox.zygote import Zygote, Zygotes


def read_peak_rss(pid: int) -> int:
    """VmHWM of a live process, in bytes (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError, ValueError):
        pass
    return 0


class _Process(SandboxProcess):
    def __init__(
        self, pid: int, exited: asyncio.Future[ExitStatus], forkserver: Zygote | None = None
    ) -> None:
        self.pid = pid
        self._exited = exited
        self._peak = 0
        # SnapStart: the snapshot's fork server, when this environment is a snapshot
        self.forkserver = forkserver
        if forkserver is not None:
            exited.add_done_callback(lambda _: forkserver.disconnect())

    async def snapshot_ready(self) -> None:
        if self.forkserver is None:
            raise OSError("this environment is not a snapshot")
        await self.forkserver.wait_ready_unless(self._exited)

    async def wait(self) -> ExitStatus:
        return await asyncio.shield(self._exited)

    def kill(self) -> None:
        if self._exited.done():
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(self.pid, signal.SIGKILL)

    def peak_memory_bytes(self) -> int:
        self._peak = max(self._peak, read_peak_rss(self.pid))
        return self._peak


class ProcessBackend(SandboxBackend):
    def __init__(self, reason: str = "", memory_merge: bool = False) -> None:
        # Why the stronger backend is not in use (shown at start-up and by `lambdad doctor`).
        self._reason = reason
        self._zygotes = Zygotes(memory_merge)

    async def start(self, spec: LaunchSpec) -> SandboxProcess:
        if spec.zygote_interpreter is not None and not spec.exec_argv:
            zygote = await self._zygotes.get(spec.zygote_interpreter, spec.zygote_preload)
            request = {"env": dict(spec.env), "cwd": spec.cwd, "entry": spec.zygote_entry}
            if not spec.snapshot:
                pid, exited = await zygote.fork(request, [spec.log_fd])
                return _Process(pid, exited)
            # A SnapStart snapshot: restores are asked for on a channel of its own.
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            try:
                pid, exited = await zygote.fork(request, [spec.log_fd, theirs.fileno()])
            except BaseException:
                ours.close()
                raise
            finally:
                theirs.close()
            return _Process(pid, exited, Zygote.adopt(ours, f"snapshot {pid}"))
        # Exec'd runtimes are forked by a zygote of lambdad's own interpreter too, so they die
        # with lambdad (PDEATHSIG survives execve) even when it is killed outright.
        zygote = await self._zygotes.get(sys.executable, None)
        request = {"env": dict(spec.env), "cwd": spec.cwd, "argv": list(spec.argv)}
        pid, exited = await zygote.fork(request, [spec.log_fd])
        return _Process(pid, exited)

    async def restore(self, snapshot: SandboxProcess, spec: LaunchSpec) -> SandboxProcess:
        """Fork the snapshot (no isolation here either): the child takes `spec`'s variables
        and log (guest: lambdad_jail.restore without a plan)."""
        forkserver = getattr(snapshot, "forkserver", None)
        if not isinstance(forkserver, Zygote):
            raise OSError("not a snapshot of this backend")
        await snapshot.snapshot_ready()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            pid, exited = await forkserver.fork({}, [theirs.fileno()])
            message = orjson.dumps({"env": dict(spec.env), "cwd": spec.cwd})
            socket.send_fds(ours, [message], [spec.log_fd])
        finally:
            theirs.close()
            ours.close()
        return _Process(pid, exited)

    async def prepare(self, interpreter: str, preload: tuple[str, str] | None) -> None:
        """Start an interpreter's zygote ahead of its first environment."""
        await self._zygotes.get(interpreter, preload)

    def isolation(self) -> IsolationReport:
        return IsolationReport(
            backend="process",
            features={
                "pid_namespace": False,
                "mount_namespace": False,
                "network_namespace": False,
                "cgroup_limits": False,
                "seccomp": False,
                "unprivileged_uid": False,
            },
            notes=(
                "environments run as plain host processes: no isolation between functions",
                *((f"namespaces unavailable: {self._reason}",) if self._reason else ()),
                *((MERGE_NOTE,) if self._zygotes.memory_merge else ()),
            ),
        )

    async def close(self) -> None:
        await self._zygotes.close()
