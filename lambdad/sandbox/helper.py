"""Helper processes: kernel work that must not wait on lambdad's GIL or block its event loop.

A worker *thread* of lambdad re-takes the GIL after every system call, and while the event loop
is busy (a burst of cold starts) each re-take waits up to the switch interval (5 ms): measured,
a network slot took 16-28 ms on a thread against 2.9 ms alone. Done on the event loop instead,
calls that wait on kernel locks (cgroup mkdir waits for cgroup_mutex, held by migrations that
wait for an RCU grace period: p90 13 ms during a burst) stall every request. A helper is a
small interpreter of its own (`python -I -S`, stdlib only, no secrets) that does one kind of
work in order; lambdad awaits its answers on the event loop.

Protocol on a SOCK_SEQPACKET pair, one JSON message per packet:
  lambdad -> helper  {"id": n, ...request}
  helper -> lambdad  {"id": n, ...reply} or {"id": n, "error": "..."}; file descriptors a
                     reply carries (SCM_RIGHTS) become its "fds", owned by the requester
The helper exits when lambdad closes its end, and dies with lambdad (PDEATHSIG).
"""

from __future__ import annotations

import asyncio
import ctypes
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

PR_SET_PDEATHSIG = 1
MAX_FDS = 8  # file descriptors one reply may carry
_PACKAGE_ROOT = Path(__file__).resolve().parent.parent.parent  # the directory holding lambdad/


class HelperError(OSError):
    """The helper refused a request, or is not running."""


class HelperProcess:
    """lambdad's side of one helper, whose loop is `entry` ("module:function", a function
    taking the control socket, typically built on `serve`)."""

    def __init__(self, entry: str) -> None:
        self._entry = entry
        self._sock: socket.socket | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._ids = itertools.count(1)
        # request id -> future of the reply
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}

    @property
    def alive(self) -> bool:
        return self._sock is not None

    def start(self) -> None:
        """Spawn the helper (again, if the previous one exited)."""
        self._reap()
        module, function = self._entry.split(":")
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        code = (
            f"import sys; sys.path.insert(0, {str(_PACKAGE_ROOT)!r}); "
            f"from {module} import {function}; {function}(int(sys.argv[1]))"
        )
        self._proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", code, str(theirs.fileno())],
            pass_fds=[theirs.fileno()],
            env={},
            cwd="/",
            stdin=subprocess.DEVNULL,
        )
        theirs.close()
        ours.setblocking(False)
        self._sock = ours
        asyncio.get_running_loop().add_reader(ours.fileno(), self._on_readable)

    async def request(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send one request and wait for its reply; HelperError if the helper refused it or
        is gone. Callers bound how many they have in flight (the socket buffer is finite)."""
        if self._sock is None:
            raise HelperError(f"the helper {self._entry} is not running")
        request_id = next(self._ids)
        reply: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = reply
        try:
            self._sock.send(json.dumps({**message, "id": request_id}).encode())
        except OSError as exc:
            self._pending.pop(request_id, None)
            raise HelperError(f"the helper {self._entry}: {exc}") from exc
        return await reply

    def _on_readable(self) -> None:
        assert self._sock is not None
        while True:
            try:
                data, fds, _, _ = socket.recv_fds(
                    self._sock, 65536, MAX_FDS, socket.MSG_CMSG_CLOEXEC
                )
            except BlockingIOError:
                return
            except OSError:
                data, fds = b"", []
            if not data:
                self.close_nowait()
                return
            message = json.loads(data)
            reply = self._pending.pop(message.pop("id"), None)
            if reply is None or reply.done():
                for fd in fds:
                    os.close(fd)
                continue
            if fds:
                message["fds"] = fds
            if "error" in message:
                reply.set_exception(HelperError(message["error"]))
            else:
                reply.set_result(message)

    def close_nowait(self) -> None:
        """Close lambdad's end (the helper then exits); pending requests fail."""
        if self._sock is not None:
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        error = HelperError(f"the helper {self._entry} exited")
        for reply in self._pending.values():
            if not reply.done():
                reply.set_exception(error)
        self._pending.clear()

    async def close(self) -> None:
        self.close_nowait()
        if self._proc is not None:
            await asyncio.to_thread(self._reap)

    def _reap(self) -> None:
        if self._proc is None:
            return
        proc, self._proc = self._proc, None
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def serve(fd: int, handle: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    """The helper's loop (runs in the helper): answer each request with handle(request), or
    with the OSError it raised, until lambdad closes the socket. A reply's "fds" are sent
    along and closed here."""
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    control = socket.socket(fileno=fd)
    while request := control.recv(1 << 16):
        message = json.loads(request)
        try:
            reply = {**handle(message), "id": message["id"]}
        except OSError as exc:
            reply = {"id": message["id"], "error": str(exc)}
        fds: list[int] = reply.pop("fds", [])
        socket.send_fds(control, [json.dumps(reply).encode()], fds)
        for passed in fds:
            os.close(passed)
    os._exit(0)
