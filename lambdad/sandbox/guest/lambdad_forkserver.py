"""The fork-server loop shared by zygotes and SnapStart snapshots (stdlib only, python3.10+).

A zygote forks environments from a freshly imported runtime; a snapshot forks *restored*
environments from a function's initialised process. Both answer the same protocol on a
SOCK_SEQPACKET socket (one message per packet, file descriptors by SCM_RIGHTS):

  lambdad -> server  "ID PIDNS INIT UID GID\n" + JSON request   with the fds the request needs
  server -> lambdad  {"id": n, "pid": pid}  or  {"id": n, "error": "..."}
  server -> lambdad  {"exit": pid, "code": c, "signal": s}   when a child ends
  server -> lambdad  {"ready": pid}                           once, when the loop starts

A request's header line (sandbox/zygote.py's fork_header) says what the server itself needs:
the request's id, whether its child is born in a new PID namespace (PIDNS 1), and which
compiled init is spawned there (INIT 0: none, 1: with the "go" pipe only, 2: also mounting for
the sandbox, which runs as UID:GID). The JSON is parsed by the child alone: objects the server
made for a request would be copied page by page, copy-on-write, in the server after every fork
(it runs with hundreds of children sharing its memory) and again in the child that reads them.

`serve` returns in each forked child with whatever the child function returned (a zygote's
child function never returns); in the server it returns None once lambdad closes the socket.
"""

import _signal  # type: ignore[import-not-found]  # (no stubs: signal without its enums)
import contextlib
import ctypes
import json
import os
import select
import signal
import socket
from collections.abc import Callable
from typing import Any, NoReturn

Child = Callable[[dict[str, Any], list[int]], Any]
# Spawns a compiled init as PID 1 of the new PID namespace a request's child is forked into
# (lambdad_jail.spawn_init): given the header's INIT, UID and GID and the request's fds,
# returns init's pid and the descriptors made for the child by name (they go into its jail
# plan as "init"; this process closes its copies once the child is forked, or fails to be:
# init then ends), or None to fork the child as PID 1 itself.
SpawnInit = Callable[[int, int, int, list[int]], "tuple[int, dict[str, int]] | None"]

CLONE_NEWPID = 0x20000000
_libc = ctypes.CDLL(None, use_errno=True)

# The cgroups' `tasks` files open across the fork in progress (_fork, born_in_cgroups). A child
# closes them in its first at-fork hook, registered here, before any function's code could
# register one: a SnapStart function's own after-fork hooks run in each restored child, which
# could otherwise move itself into its snapshot's cgroups through them.
_tasks_in_fork: list[int] = []


def _close_tasks_in_child() -> None:
    for fd in _tasks_in_fork:
        os.close(fd)
    _tasks_in_fork.clear()


os.register_at_fork(after_in_child=_close_tasks_in_child)
# A request with PIDNS 1 forks its child as PID 1 of a new PID namespace (no extra
# process needed to get one). PID 1 cannot end itself by a signal, so such a child reports how
# the environment ended on a status pipe ("code N" / "signal N"): child pid -> read end.
_status_pipes: dict[int, int] = {}
# With a spawned init (see SpawnInit) the child is PID 2 and this process's own child: it ends
# first, init (which then ends the namespace) after it; its exit is reported once both are
# reaped, so that nothing of the environment runs any more. child pid -> init pid, and back.
_inits: dict[int, int] = {}
_children_of_init: dict[int, int] = {}
_ended: dict[int, int] = {}  # the status of a child whose init is still running


def send(control: socket.socket, message: dict[str, Any]) -> None:
    control.send(json.dumps(message).encode())


def _reap(control: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        if pid in _inits or pid in _children_of_init:
            _reap_with_init(control, pid, status)
            continue
        report_fd = _status_pipes.pop(pid, None)
        if report_fd is not None:
            try:
                kind, _, value = os.read(report_fd, 64).decode().partition(" ")
            except OSError:
                kind = value = ""
            os.close(report_fd)
            if kind in ("code", "signal") and value.isdigit():
                code, signum = (int(value), None) if kind == "code" else (None, int(value))
                send(control, {"exit": pid, "code": code, "signal": signum})
                continue
        _send_exit(control, pid, status)


def _send_exit(control: socket.socket, pid: int, status: int) -> None:
    if os.WIFSIGNALED(status):
        send(control, {"exit": pid, "code": None, "signal": os.WTERMSIG(status)})
    else:
        send(control, {"exit": pid, "code": os.WEXITSTATUS(status), "signal": None})


def _reap_with_init(control: socket.socket, pid: int, status: int) -> None:
    """A child with a spawned init, or that init, ended: report the child once both did."""
    init = _inits.pop(pid, None)
    if init is not None:  # the child
        if init in _children_of_init:  # its init still runs
            _ended[pid] = status
            return
        _send_exit(control, pid, status)
        return
    child = _children_of_init.pop(pid)
    if child < 0:  # an init whose child could not be forked
        return
    if child not in _inits:  # the child was reaped first
        _send_exit(control, child, _ended.pop(child))


class _Forked(Exception):
    """Unwinds the server loop in a child (carries the child function's result)."""

    def __init__(self, result: Any) -> None:
        super().__init__("forked")
        self.result = result


def _fork(
    control: socket.socket,
    wake: tuple[int, int],
    fds_allowed: tuple[int, ...],
    child: Child,
    spawn_init: SpawnInit | None,
    born_in_cgroups: bool = False,
) -> bool:
    try:
        data, fds, flags, _addr = socket.recv_fds(control, len(_buffer), _MAX_FDS)
    except OSError:
        return False
    if not data:
        return False
    header, _, body = data.partition(b"\n")
    try:
        request_id, new_namespace, init_kind, uid, gid = map(int, header.split())
    except ValueError:  # not this protocol: nothing to answer to
        for fd in fds:
            os.close(fd)
        raise
    if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC) or len(fds) not in fds_allowed:
        for fd in fds:
            os.close(fd)
        error = f"expected {fds_allowed} fd(s) and at most {len(_buffer)} bytes"
        send(control, {"id": request_id, "error": error})
        return True
    cgroup_fds: list[int] = []
    born_in = False
    if born_in_cgroups and len(fds) > 1:  # the child's descriptor, then `tasks` files
        cgroup_fds, fds = fds[1:], fds[:1]
    status = init = None
    if new_namespace:
        _enter_pid_namespace()
        try:
            if spawn_init is not None and init_kind:
                init = spawn_init(init_kind, uid, gid, fds)
        except OSError as exc:  # no init: no namespace either
            return _refuse(control, request_id, True, fds + cgroup_fds, f"spawn init: {exc}")
        if init is None:
            status = os.pipe()
    if cgroup_fds:
        born_in = _enter_cgroups(cgroup_fds)
        _tasks_in_fork[:] = cgroup_fds
    try:
        pid = os.fork()
    except OSError as exc:
        _tasks_in_fork.clear()
        _leave_cgroups(cgroup_fds, born_in)
        if init is not None:
            _children_of_init[init[0]] = -1  # it ends (no child to wait for): reaped quietly
            for fd in init[1].values():
                os.close(fd)
        if status is not None:
            os.close(status[0])
            os.close(status[1])
        return _refuse(control, request_id, new_namespace, fds, f"fork: {exc}")
    if pid == 0:
        if status is not None:
            os.close(status[0])
        _become_child(
            control,
            wake,
            child,
            body,
            fds,
            init[1] if init is not None else None,
            status[1] if status is not None else None,
            born_in,
        )
    _tasks_in_fork.clear()
    _leave_cgroups(cgroup_fds, born_in)
    if new_namespace:
        _leave_pid_namespace()
    if init is not None:
        _inits[pid] = init[0]
        _children_of_init[init[0]] = pid
        for fd in init[1].values():
            os.close(fd)
    if status is not None:
        os.close(status[1])
        _status_pipes[pid] = status[0]
    for fd in fds:
        os.close(fd)
    control.send(b'{"id": %d, "pid": %d}' % (request_id, pid))
    return True


# The compiled loop receives requests into this buffer, made once (a fresh one per request
# would be mapped, touched and unmapped each time); 1 MiB: a plain environment's request
# carries its variables. The Python loop reads at most as much.
_buffer = bytearray(1 << 20)
_MAX_FDS = 8  # descriptors a request may carry at most (lambdad_forkloop.c's MAX_FDS)


def _become_child(
    control: socket.socket,
    wake: tuple[int, int],
    child: Child,
    body: "bytes | bytearray",
    fds: list[int],
    init: "dict[str, int] | None",
    status_fd: "int | None",
    born_in_its_cgroups: bool = False,
) -> NoReturn:
    """In a forked child (either loop): leave the server, parse the request (the server never
    does) with its init's descriptors and status pipe, and run it."""
    _leave_server(control, wake)
    request = json.loads(body)
    if born_in_its_cgroups:
        request["born_in_its_cgroups"] = True
    if init is not None:
        request["jail"]["init"] = init
    if status_fd is not None:
        request["status_fd"] = status_fd
    raise _Forked(child(request, fds))


def _leave_server(control: socket.socket, wake: tuple[int, int]) -> None:
    """In a forked child: drop what is the server's (its descriptors).

    The tables of the server's children stay as they are: emptying them would write to every
    entry's objects, and so copy their pages, in every child (~40 page faults a child, 0.1-0.3
    ms of CPU, once a burst had forked a thousand). Nothing in the child reads them, and
    emptying them would not erase them from its memory anyway. A child that serves forks of
    its own (a SnapStart snapshot) empties them when it starts serving: `_forget_children`."""
    global _poller
    control.close()
    os.close(wake[0])
    os.close(wake[1])
    if _poller is not None:
        _poller.close()
        _poller = None
    _forget_pid_namespace()
    signal.set_wakeup_fd(-1)
    # _signal's, not signal's: the latter's enum conversions touch ~35 more pages, each one
    # copied in every child
    _signal.signal(_signal.SIGCHLD, _signal.SIG_DFL)
    for report_fd in _status_pipes.values():
        os.close(report_fd)


def _enter_cgroups(tasks: "list[int]") -> bool:
    """Move this thread into the cgroups whose `tasks` files are the first half of `tasks`,
    so that the child it forks next is born there: every page the child touches is then
    charged to its own memory cgroup from the first (cgroup v1 never moves a charge later; the
    restored children of a SnapStart snapshot, ~0.5-1 MB each charged to the snapshot until
    lambdad moved them, made a burst of restores kill the snapshot for lack of memory). The
    second half are the `tasks` files of the cgroups this thread is in, to return through
    (_leave_cgroups). False when a move failed: then none stays made, the child is born here,
    and lambdad moves it."""
    count = len(tasks) // 2
    if count == 0 or len(tasks) != 2 * count:
        return False
    moved = 0
    try:
        for fd in tasks[:count]:
            os.write(fd, b"0")
            moved += 1
    except OSError:
        _return_through(tasks[count : count + moved])
        return False
    return True


def _leave_cgroups(tasks: "list[int]", entered: bool) -> None:
    """After the fork: back to this thread's own cgroups if it left them; closes `tasks`."""
    if entered:
        _return_through(tasks[len(tasks) // 2 :])
    for fd in tasks:
        os.close(fd)


def _return_through(homes: "list[int]") -> None:
    for fd in homes:
        try:
            os.write(fd, b"0")
        except OSError as exc:  # left in a child's cgroup: say so, it is never meant to be
            os.write(2, f"lambdad fork server: cannot return to its cgroup: {exc}\n".encode())


def _forget_children() -> None:
    """The tables of a server's children, emptied where a forked child starts serving (what it
    inherited is its parent's, and the status pipes are closed: _leave_server)."""
    for table in (_status_pipes, _inits, _children_of_init, _ended):
        table.clear()


def _refuse(
    control: socket.socket, request_id: int, new_namespace: int, fds: list[int], error: str
) -> bool:
    if new_namespace:
        _leave_pid_namespace()
    for fd in fds:
        os.close(fd)
    send(control, {"id": request_id, "error": error})
    return True


_own_pid_namespace = -1


def remember_pid_namespace() -> None:
    """Open this process's own PID namespace (to return to after each child born in a new
    one) now, while /proc is there."""
    global _own_pid_namespace
    if _own_pid_namespace < 0:
        _own_pid_namespace = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)


def _forget_pid_namespace() -> None:
    """In a child: close this server's PID namespace (a child keeps no host namespace)."""
    global _own_pid_namespace
    if _own_pid_namespace >= 0:
        os.close(_own_pid_namespace)
        _own_pid_namespace = -1


def _enter_pid_namespace() -> None:
    """Make the next child PID 1 of a new PID namespace."""
    remember_pid_namespace()
    if _libc.unshare(CLONE_NEWPID) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unshare(CLONE_NEWPID): {os.strerror(err)}")


def _leave_pid_namespace() -> None:
    """Children after this one are born in our own PID namespace again."""
    if _libc.setns(_own_pid_namespace, CLONE_NEWPID) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns(CLONE_NEWPID): {os.strerror(err)}")


# --- the compiled loop (lambdad_forkloop.c: the same protocol, for a sandbox zygote) ----------


class _LoopConfig(ctypes.Structure):
    _fields_ = [
        ("control", ctypes.c_int),
        ("wake", ctypes.c_int),
        ("own_pid_namespace", ctypes.c_int),
        ("init_dir", ctypes.c_int),
        ("init_name", ctypes.c_char_p),
        ("fds_allowed", ctypes.c_uint),
        ("buffer", ctypes.c_void_p),
        ("buffer_size", ctypes.c_size_t),
    ]


class _ForkRecord(ctypes.Structure):
    _fields_ = [("pid", ctypes.c_int), ("init_pid", ctypes.c_int), ("status_fd", ctypes.c_int)]


class _ChildRecord(ctypes.Structure):
    _fields_ = [
        ("body_offset", ctypes.c_size_t),
        ("body_size", ctypes.c_size_t),
        ("fds", ctypes.c_int * _MAX_FDS),
        ("nfds", ctypes.c_int),
        ("go", ctypes.c_int),
        ("mounts", ctypes.c_int),
        ("ready", ctypes.c_int),
        ("status_fd", ctypes.c_int),
    ]


# The compiled loop's entry point (load_compiled_loop), and the directory (an O_PATH
# descriptor, or -1) and name of the compiled init it spawns.
CompiledLoop = tuple[Any, int, str]
_LOOP_EOF, _LOOP_WAKE, _LOOP_CHILD, _LOOP_FULL, _LOOP_BAD_REQUEST, _LOOP_STRANDED = range(6)
_RECORDS = 64  # forks between two returns to Python at most


def load_compiled_loop(path: "str | None") -> Any:
    """The compiled loop's entry point (lambdad_forkloop.c, built by lambdad beside
    lambdad-init), loaded now, while its file is reachable; None without one."""
    if not path:
        return None
    try:
        # PyDLL: it runs holding the GIL; use_errno: a stranded loop's errno reaches Python
        entry = ctypes.PyDLL(path, use_errno=True).lambdad_fork_loop
    except (OSError, AttributeError) as exc:
        os.write(2, f"lambdad zygote: the fork loop stays Python's ({exc})\n".encode())
        return None
    entry.restype = ctypes.c_int
    entry.argtypes = [
        ctypes.POINTER(_LoopConfig),
        ctypes.POINTER(_ForkRecord),
        ctypes.c_int,
        ctypes.POINTER(ctypes.c_int),
        ctypes.POINTER(_ChildRecord),
    ]
    return entry


def _remember(records: Any, count: int) -> None:
    """The compiled loop's forks since its last return, into the tables `_reap` reads."""
    for record in records[:count]:
        if record.pid < 0:  # the fork failed: its init ends by itself, reaped quietly
            _children_of_init[record.init_pid] = -1
            continue
        if record.init_pid >= 0:
            _inits[record.pid] = record.init_pid
            _children_of_init[record.init_pid] = record.pid
        if record.status_fd >= 0:
            _status_pipes[record.pid] = record.status_fd


def _serve_compiled(
    control: socket.socket,
    wake: tuple[int, int],
    fds_allowed: tuple[int, ...],
    child: Child,
    compiled: CompiledLoop,
) -> None:
    entry, init_dir, init_name = compiled
    remember_pid_namespace()
    os.set_blocking(wake[0], False)
    config = _LoopConfig(
        control.fileno(),
        wake[0],
        _own_pid_namespace,
        init_dir,
        init_name.encode(),
        sum(1 << n for n in fds_allowed),
        ctypes.addressof((ctypes.c_char * len(_buffer)).from_buffer(_buffer)),
        len(_buffer),
    )
    records = (_ForkRecord * _RECORDS)()
    count = ctypes.c_int(0)
    info = _ChildRecord()
    while True:
        outcome = entry(ctypes.byref(config), records, _RECORDS, ctypes.byref(count), info)
        _remember(records, count.value)
        if outcome == _LOOP_WAKE:
            with contextlib.suppress(BlockingIOError):
                os.read(wake[0], 4096)
            _reap(control)
        elif outcome == _LOOP_CHILD:
            init = None
            if info.go >= 0:
                init = {"go": info.go}
                if info.mounts >= 0:
                    init.update(mounts=info.mounts, ready=info.ready)
            _become_child(
                control,
                wake,
                child,
                _buffer[info.body_offset : info.body_offset + info.body_size],
                list(info.fds[: info.nfds]),
                init,
                info.status_fd if info.status_fd >= 0 else None,
            )
        elif outcome == _LOOP_EOF:
            return
        elif outcome == _LOOP_BAD_REQUEST:
            raise ValueError("a fork request without its header line")
        elif outcome == _LOOP_STRANDED:
            err = ctypes.get_errno()
            raise OSError(err, f"setns(CLONE_NEWPID): {os.strerror(err)}")
        elif outcome != _LOOP_FULL:  # (full: its records are taken above; serve on)
            raise RuntimeError(f"the compiled fork loop returned {outcome}")


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",  # free bytes, the top chunk's included
            "keepcost",  # the top chunk's bytes
        )
    ]


_KEPT_CHUNKS: list[int] = []  # allocated once and never freed (see take_free_chunks)


def take_free_chunks() -> int:
    """Allocate, and keep for good, every free chunk of C malloc's heap below its top chunk;
    returns how many bytes that took (0 where glibc has no mallinfo2).

    A forked child's allocations would otherwise be carved out of these chunks, spread over
    the whole heap, and writing each chunk's header (and the free lists' neighbours) copies
    the zygote's page it lies on: ~100 of an environment's ~770 copy-on-write pages. Taken
    here, they stay untouched and shared; a child's allocations come from the top chunk,
    side by side on few pages. The bytes were free already: the zygote's size is unchanged."""
    try:
        mallinfo2 = _libc.mallinfo2
    except AttributeError:  # glibc < 2.33, or another C library
        return 0
    mallinfo2.restype = _Mallinfo2
    malloc, free, sbrk = _libc.malloc, _libc.free, _libc.sbrk
    malloc.restype, malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    free.restype, free.argtypes = None, [ctypes.c_void_p]
    sbrk.restype, sbrk.argtypes = ctypes.c_void_p, [ctypes.c_ssize_t]
    before = mallinfo2()
    # Each chunk kept takes at least its request from the free bytes below the top chunk (or
    # from the per-thread cache, which mallinfo counts as used: at most 64 sizes of 7 chunks
    # up to 1 KiB), so the requests never add up to more: where they would (a heap not where
    # sbrk says, the top chunk misplaced), this stops rather than take the top chunk by bits.
    budget = before.fordblks - before.keepcost + (1 << 20)
    size = 1 << 16  # below the mmap threshold: every larger free chunk is split as it goes
    while size >= 16:
        while True:
            info = mallinfo2()
            top = sbrk(0) - info.keepcost  # where the top chunk begins
            pointer = malloc(size)
            if pointer is None:
                return 0
            if pointer >= top:  # from the top chunk (or mmap): no free chunk of this size left
                free(pointer)
                break
            if size > budget:
                free(pointer)
                return 0
            budget -= size
            _KEPT_CHUNKS.append(pointer)
        size //= 2
    after = mallinfo2()
    taken: int = (before.fordblks - before.keepcost) - (after.fordblks - after.keepcost)
    return taken


def serve(
    control: socket.socket,
    child: Child,
    fds_allowed: tuple[int, ...] = (1,),
    spawn_init: SpawnInit | None = None,
    compiled: CompiledLoop | None = None,
    born_in_cgroups: bool = False,
) -> Any:
    """Fork one child per request until lambdad closes `control` (in the compiled loop when
    there is one: see lambdad_forkloop.c; it spawns the compiled init itself). With
    `born_in_cgroups` (Python loop), a request's descriptors after the first may be `tasks`
    files: of the cgroups its child is to be born in, then of the server's own
    (_enter_cgroups)."""
    _forget_children()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    previous = signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(wake_w)
    take_free_chunks()
    send(control, {"ready": os.getpid()})
    try:
        if compiled is not None:
            _serve_compiled(control, (wake_r, wake_w), fds_allowed, child, compiled)
        else:
            _serve_python(
                control, (wake_r, wake_w), fds_allowed, child, spawn_init, born_in_cgroups
            )
    except _Forked as forked:  # in a child
        return forked.result
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, previous)
    return None


def _serve_python(
    control: socket.socket,
    wake: tuple[int, int],
    fds_allowed: tuple[int, ...],
    child: Child,
    spawn_init: SpawnInit | None,
    born_in_cgroups: bool = False,
) -> None:
    global _poller
    # epoll itself, not selectors: fewer objects touched per request (see the module's doc)
    poller = _poller = select.epoll()
    try:
        poller.register(control.fileno(), select.EPOLLIN)
        poller.register(wake[0], select.EPOLLIN)
        while True:
            for fd, _ in poller.poll():
                if fd == wake[0]:
                    os.read(wake[0], 4096)
                    _reap(control)
                elif not _fork(control, wake, fds_allowed, child, spawn_init, born_in_cgroups):
                    return
    finally:
        poller.close()
        _poller = None


# The Python loop's epoll instance while it serves: a forked child closes it (_leave_server), as
# a function holding it could add descriptors of its own to what the zygote waits for.
_poller: "select.epoll | None" = None


def serve_snapshot(fd: int) -> "dict[str, Any]":
    """In a SnapStart snapshot (the function's initialised process): fork a restored
    environment per request until lambdad closes the channel, then end the snapshot. Returns
    only in a restored environment, with its assignment ({"env": ..., "cwd": ...})."""
    import lambdad_jail  # type: ignore[import-not-found]  # loaded by the zygote already

    # a restore request: its channel, then (see serve) up to 3 cgroups' `tasks` files twice
    assignment: dict[str, Any] | None = serve(
        socket.socket(fileno=fd), lambdad_jail.restore, (1, 3, 5, 7), born_in_cgroups=True
    )
    if assignment is None:
        os._exit(0)
    return assignment
