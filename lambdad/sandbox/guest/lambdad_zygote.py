"""A fork server for one interpreter: imports the bootstrap once, forks environments.

Runs under the *function's* interpreter (python3.10+), stdlib only, and holds no secrets: every
environment's variables arrive with the request that creates it.
Usage: python lambdad_zygote.py CONTROL_FD [PRELOAD_DIR PRELOAD_MODULE]
With LAMBDAD_TEMPLATE (a jail plan, JSON) in its environment, the zygote first moves into the
sandboxes' common read-only root (lambdad_jail.enter_template) and forks only sandboxes.

Protocol on the SOCK_SEQPACKET socket CONTROL_FD (one message per packet; a fork request is
lambdad_forkserver's header line, then JSON that only the forked child parses):
  lambdad -> zygote  either a plain environment, with SCM_RIGHTS [log_fd] (plus, for a
                     SnapStart snapshot, the channel restores are requested on):
                       {"env": {...}, "cwd": "...",
                        "entry": "module:function" | "argv": [...]}   run in-process or exec
                     or a sandbox to prepare, with SCM_RIGHTS [channel_fd, *extra]
                     (extra: its cgroups' cgroup.procs files, its network namespace):
                       {"jail": {...}}   the rest (env, cwd, entry/argv, log fd)
                       arrives later on the channel: see lambdad_jail.prepare
  zygote -> lambdad  {"id": n, "pid": pid}            or {"id": n, "error": "..."}
  zygote -> lambdad  {"exit": pid, "code": c, "signal": s}   when a child ends
(The loop itself is lambdad_forkserver's.) The zygote exits when lambdad closes the socket
(and dies with lambdad, via PDEATHSIG).
"""

import ctypes
import gc
import importlib
import json
import os
import signal
import socket
import sys
from typing import Any

PR_SET_PDEATHSIG = 1
PR_SET_MEMORY_MERGE = 67
MAX_FDS = (1, 2, 3, 4, 5, 6)  # how many fds a fork request may carry (see the protocol)
_libc = ctypes.CDLL(None, use_errno=True)


def _die_with_parent() -> None:
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _child(request: dict[str, Any], fds: list[int]) -> None:
    """Runs in the forked child: become the environment's main process (never returns)."""
    try:
        os.setsid()
        _die_with_parent()
        if request.get("jail"):
            import lambdad_jail  # type: ignore[import-not-found]

            channel = socket.socket(fileno=fds[0])
            plan = {**request["jail"], "status_fd": request.get("status_fd"), "fds": fds[1:]}
            request = {**request, **lambdad_jail.prepare(plan, channel)}
        else:
            os.dup2(fds[0], 1)
            os.dup2(fds[0], 2)
            os.close(fds[0])
            if len(fds) == 2:  # a SnapStart snapshot's channel (unsandboxed)
                request["env"]["LAMBDAD_SNAPSHOT_FD"] = str(fds[1])
        _set_variables(request["env"])
        if request.get("mounted_fd") is not None:  # init mounted the code meanwhile
            lambdad_jail.wait_mounted(request["mounted_fd"])
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
        module = sys.modules.get(module_name) or importlib.import_module(module_name)
        entry = getattr(module, function_name)
        # The zygote's objects stay frozen (gc.freeze) in the environment too: a collection
        # that walked them would copy every page they live on (copy-on-write) and pause for it.
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


def _set_variables(env: dict[str, str]) -> None:
    """os.environ becomes `env` (the zygote's variables gone): what os.environ.clear() and
    update() do, each variable put with one putenv and stored in os.environ's own mapping, but
    without the per-variable method calls of MutableMapping.update, which ~30 variables make
    ~25 us of a cold start (a process just forked runs them cache-cold)."""
    environ = os.environ
    if environ:
        environ.clear()
    data = getattr(environ, "_data", None)
    if not isinstance(data, dict):  # (CPython's os.environ keeps one: bytes -> bytes)
        environ.update(env)
        return
    putenv, encoding = os.putenv, sys.getfilesystemencoding()
    for key, value in env.items():
        name = key.encode(encoding, "surrogateescape")
        text = value.encode(encoding, "surrogateescape")
        putenv(name, text)
        data[name] = text


def _merge_memory() -> None:
    """Samepage merging for this process and all it forks (lambdad's sandbox/memory_merge.py)."""
    if _libc.prctl(PR_SET_MEMORY_MERGE, 1, 0, 0, 0) != 0:
        reason = os.strerror(ctypes.get_errno())
        sys.stderr.write(f"lambdad zygote: no memory merging (prctl: {reason})\n")


def main() -> None:
    _die_with_parent()
    if os.environ.get("LAMBDAD_MEMORY_MERGE") == "1":
        _merge_memory()
    control = socket.socket(fileno=int(sys.argv[1]))
    control.set_inheritable(False)  # passed to us inheritable: not to what we spawn
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, here)
    # Imported here, before any sandbox hides this directory: environments (and SnapStart
    # snapshots, which fork restored environments) find them in sys.modules.
    jail = importlib.import_module("lambdad_jail")
    forkserver = importlib.import_module("lambdad_forkserver")
    warm_up = None
    if len(sys.argv) > 3:
        sys.path.insert(0, sys.argv[2])
        preloaded = importlib.import_module(sys.argv[3])  # pay the imports once, before any fork
        warm_up = getattr(preloaded, "warm_up", None)
    template = os.environ.pop("LAMBDAD_TEMPLATE", None)
    compiled_loop = None
    if template is not None:  # a sandboxing zygote: it lives in the sandboxes' common root
        plan = json.loads(template)
        compiled_loop = forkserver.load_compiled_loop(plan.get("fork_loop"))
        forkserver.remember_pid_namespace()
        jail.enter_template(plan)
    if warm_up is not None:  # the preloaded runtime's first runs (specialised bytecode shared)
        warm_up()
    gc.collect()
    gc.freeze()
    spawn_init = jail.spawn_init if template is not None else None
    compiled = None if compiled_loop is None else (compiled_loop, *jail.init_program())
    forkserver.serve(control, _child, MAX_FDS, spawn_init, compiled)


if __name__ == "__main__":
    main()
