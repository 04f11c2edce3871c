"""A fork server for one interpreter: imports the bootstrap once, forks environments.

Runs under the *function's* interpreter (python3.10+), stdlib only, and holds no secrets: every
environment's variables arrive with the request that creates it.
Usage: python lambdad_zygote.py CONTROL_FD [PRELOAD_DIR PRELOAD_MODULE]

Protocol on the SOCK_SEQPACKET socket CONTROL_FD (one JSON message per packet):
  lambdad -> zygote  either a plain environment, with SCM_RIGHTS [log_fd]:
                       {"id": n, "env": {...}, "cwd": "...",
                        "entry": "module:function" | "argv": [...]}   run in-process or exec
                     or a sandbox to prepare, with SCM_RIGHTS [channel_fd]:
                       {"id": n, "jail": {...}}   the rest (env, cwd, entry/argv, log fd)
                       arrives later on the channel: see lambdad_jail.prepare
  zygote -> lambdad  {"id": n, "pid": pid}            or {"id": n, "error": "..."}
  zygote -> lambdad  {"exit": pid, "code": c, "signal": s}   when a child ends
The zygote exits when lambdad closes the socket (and dies with lambdad, via PDEATHSIG).
"""

import ctypes
import gc
import importlib
import json
import os
import selectors
import signal
import socket
import sys
from typing import Any

PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def _die_with_parent() -> None:
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _child(
    control: socket.socket, wake_r: int, wake_w: int, request: dict[str, Any], fds: list[int]
) -> None:
    """Runs in the forked child: become the environment's main process."""
    try:
        control.close()
        os.close(wake_r)
        os.close(wake_w)
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.setsid()
        _die_with_parent()
        if request.get("jail"):
            import lambdad_jail  # type: ignore[import-not-found]

            channel = socket.socket(fileno=fds[0])
            request = {**request, **lambdad_jail.prepare(request["jail"], channel)}
        else:
            os.dup2(fds[0], 1)
            os.dup2(fds[0], 2)
            os.close(fds[0])
        os.environ.clear()
        os.environ.update(request["env"])
        os.chdir(request["cwd"])
        if request.get("argv"):
            argv = request["argv"]
            try:
                os.execve(argv[0], argv, request["env"])
            except OSError as exc:  # as a shell reports it: 127 not found, 126 not runnable
                sys.stderr.write(f"exec {argv[0]}: {exc.strerror}\n")
                sys.stderr.flush()
                os._exit(127 if isinstance(exc, FileNotFoundError) else 126)
        module_name, function_name = request["entry"].split(":")
        entry = getattr(importlib.import_module(module_name), function_name)
        gc.unfreeze()
        entry()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


def _send(control: socket.socket, message: dict[str, Any]) -> None:
    control.send(json.dumps(message).encode())


def _reap(control: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        if os.WIFSIGNALED(status):
            _send(control, {"exit": pid, "code": None, "signal": os.WTERMSIG(status)})
        else:
            _send(control, {"exit": pid, "code": os.WEXITSTATUS(status), "signal": None})


def _fork(control: socket.socket, wake_r: int, wake_w: int) -> bool:
    try:
        data, fds, _flags, _addr = socket.recv_fds(control, 1 << 20, 4)
    except OSError:
        return False
    if not data:
        return False
    request = json.loads(data)
    if len(fds) != 1:
        for fd in fds:
            os.close(fd)
        _send(control, {"id": request.get("id"), "error": "expected exactly one fd"})
        return True
    pid = os.fork()
    if pid == 0:
        _child(control, wake_r, wake_w, request, fds)
    for fd in fds:
        os.close(fd)
    _send(control, {"id": request["id"], "pid": pid})
    return True


def main() -> None:
    _die_with_parent()
    control = socket.socket(fileno=int(sys.argv[1]))
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, here)
    importlib.import_module("lambdad_jail")
    if len(sys.argv) > 3:
        sys.path.insert(0, sys.argv[2])
        importlib.import_module(sys.argv[3])  # pay the imports once, before any fork
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    selector = selectors.DefaultSelector()
    selector.register(control, selectors.EVENT_READ, "control")
    selector.register(wake_r, selectors.EVENT_READ, "wake")
    gc.collect()
    gc.freeze()
    _send(control, {"ready": os.getpid()})
    while True:
        for key, _ in selector.select():
            if key.data == "wake":
                os.read(wake_r, 4096)
                _reap(control)
            elif not _fork(control, wake_r, wake_w):
                return


if __name__ == "__main__":
    main()
