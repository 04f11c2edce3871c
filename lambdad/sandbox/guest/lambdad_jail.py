"""Turn a freshly forked process into a sandboxed execution environment (runs as root, stdlib only).

Executed inside the zygote's child under the runtime's interpreter (python3.10+), so it uses
ctypes for what `os` lacks there. The host side (lambdad.sandbox.namespaces) decides everything;
this module carries the plan out in phases, so the slow part happens before any request:

*template* (once, in the zygote, before its first fork: enter_template): a mount namespace of
its own whose root is the sandboxes' common tree — a tmpfs with read-only binds (/usr, the
runtime, allowed /etc files...), mount points and a minimal /dev — the host's root detached.
*prepare* (filling the pool, off the request path), in a process the zygote forked into a new
PID namespace, whose PID 1 the zygote spawned just before (vfork + exec of lambdad-init,
spawn_init; it mounts the assignment, reaps orphans and ends the namespace when the function
process ends). The forked process is the *function process*, PID 2:
  attach to the environment's cgroups and join its network namespace (descriptors lambdad
  sent) -> unshare mount (a copy of the template), ipc, uts -> its own /proc, /dev/shm,
  /run/lambdad -> loopback up, hostname, rlimits -> the Runtime API sockets, created inside the
  namespace, are sent to lambdad (which also means "ready") -> drop to the unprivileged uid,
  no_new_privs, seccomp -> with "warm" (lambdad's own bootstrap, run in this process, and no
  request waiting yet): warm it up, make room for the variables and let it set up what no
  function changes (its Runtime API client, sys.path, logging: prepare_ahead) -> wait
(Without the compiled init, the forked process is PID 1 itself: it forks the function process
and stays as a Python init.)
*assign* (on the request path, well under a millisecond):
  PID 1 receives a detached mount of the code (and layers) and /tmp's size: joins the function
  process's mount namespace, moves the code onto /var/task, mounts /tmp -> "ok" to the
  function process, which meanwhile received {env, cwd,
  entry|argv} with the log fd -> stdout/stderr to the log -> returns the assignment (the
  caller waits for the "ok", then runs the runtime)
A SnapStart snapshot's sandbox keeps its privileges until assigned and mounts the assignment
itself (_assign_snapshot), as it needs them for a user namespace of its own.
"""

import contextlib
import ctypes
import errno
import fcntl
import json
import os
import platform
import resource
import signal
import socket
import struct
import sys
from typing import Any

_libc = ctypes.CDLL(None, use_errno=True)
RUNTIME_API_HOST = "127.0.0.1"  # the Runtime API's TCP listener inside a sandbox

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_NEWUSER = 0x10000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MNT_DETACH = 2
MOVE_MOUNT_F_EMPTY_PATH = 0x00000004
AT_FDCWD = -100
_MOVE_MOUNT = {"x86_64": 429, "aarch64": 429}
PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
PR_SET_DUMPABLE = 4
PR_CAPBSET_DROP = 24
PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
_CAPSET = {"x86_64": 126, "aarch64": 91}
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
SECCOMP_MODE_FILTER = 2
SIOCGIFFLAGS, SIOCSIFFLAGS = 0x8913, 0x8914
IFF_UP, IFF_RUNNING = 0x1, 0x40
_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}
INIT_GO, INIT_MOUNTS = 1, 2  # a fork request's INIT (lambdad_forkserver; sandbox/zygote.py)
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")


class JailError(OSError):
    """A step of the sandbox set-up failed (the environment must not run)."""


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise JailError(err, f"{what}: {os.strerror(err)}")


def _mount(
    source: "str | None", target: str, fstype: "str | None", flags: int, data: "str | None" = None
) -> None:
    _check(
        _libc.mount(
            source.encode() if source else None,
            target.encode(),
            fstype.encode() if fstype else None,
            ctypes.c_ulong(flags),
            data.encode() if data else None,
        ),
        f"mount {source or fstype} on {target}",
    )


def _prctl(option: int, arg: int) -> None:
    _check(_libc.prctl(option, ctypes.c_ulong(arg), 0, 0, 0), f"prctl {option}")


def _die_with_parent() -> None:
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _encode_status(status: int) -> bytes:
    if os.WIFSIGNALED(status):
        return b"signal %d" % os.WTERMSIG(status)
    return b"code %d" % os.WEXITSTATUS(status)


def _mirror(report: bytes) -> None:
    """End this process the way the environment's process ended."""
    kind, _, value = report.decode().partition(" ")
    if kind == "signal" and value:
        signum = int(value)
        if signum not in (signal.SIGKILL, signal.SIGSTOP):  # these cannot (and need not) be reset
            signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        os._exit(128 + signum)
    os._exit(int(value) if value else 1)


def _shim(child: int, status_r: int) -> None:
    """Outside the namespaces: wait for init, then exit as the function process did."""
    os.waitpid(child, 0)
    report = os.read(status_r, 64)
    _mirror(report or b"signal 9")


def _init(function_pid: int, status_w: int, mounter: "_Mounter | None" = None) -> None:
    """PID 1 inside: mount the assignment (with a mounter), reap every orphan; leave with the
    function process's status."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if mounter is not None:
        mounter.serve(function_pid)
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            os._exit(1)
        if pid == function_pid:
            with contextlib.suppress(OSError):  # the reader is gone: so is everything
                os.write(status_w, _encode_status(status))
            os._exit(0)


def _bind(source: str, target: str, read_only: bool) -> None:
    if os.path.isdir(source):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if not os.path.exists(target):
            open(target, "w").close()
    _mount(source, target, None, MS_BIND | MS_REC)
    if read_only:
        _mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_REC)


def _build_template(plan: "dict[str, Any]") -> str:
    """The part of every sandbox's root that is the same for all (a zygote's template): a tmpfs
    with the read-only binds, symlinks, mount points and a minimal /dev, made read-only when
    the zygote pivots into it (see enter_template)."""
    root: str = plan["root"]
    _mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=4m,mode=755")
    for source, target, read_only in plan["binds"]:
        _bind(source, root + target, read_only)
    for target, link in plan["symlinks"]:
        os.symlink(target, root + link)
    for directory in (*plan["dirs"], "/tmp", "/var/task", "/proc", "/dev/shm", "/run/lambdad"):
        os.makedirs(root + directory, exist_ok=True)
    dev = root + "/dev"
    _mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NOEXEC, "size=64k,mode=755")
    for name in DEVICES:
        if os.path.exists("/dev/" + name):
            _bind("/dev/" + name, f"{dev}/{name}", False)
    os.makedirs(dev + "/shm", exist_ok=True)
    for name, target in (
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ):
        os.symlink(target, f"{dev}/{name}")
    _mount(None, dev, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NOEXEC)
    return root


def enter_template(plan: "dict[str, Any]") -> None:
    """In a zygote, before it forks any sandbox: move into a mount namespace of its own whose
    root is the sandboxes' common read-only tree (_build_template), the host's root detached.
    A sandbox forked from it then copies that small tree when it unshares its mount namespace
    and adds only its own mounts (/proc, /dev/shm, /run/lambdad; /var/task and /tmp when
    assigned): no binds, no pivot_root and no unmount of the host's root (which waits for an
    RCU grace period) per sandbox. The sandboxes' seccomp filter comes with it, made ready
    for the kernel once here rather than decoded in every sandbox."""
    global _sandbox_seccomp
    if plan.get("seccomp"):
        _sandbox_seccomp = _seccomp_program(bytes.fromhex(plan["seccomp"]))
    _open_init_directory(plan.get("init_program"))
    _check(_libc.unshare(CLONE_NEWNS), "unshare mount namespace")
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    _pivot(_build_template(plan))


def _sandbox_mounts(plan: "dict[str, Any]") -> None:
    """A sandbox's own mounts on its copy of the template: a /proc of its PID namespace, its
    /dev/shm and the directory of its Runtime API socket."""
    _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    _mount_shm(plan["uid"], plan["gid"])
    _mount("tmpfs", "/run/lambdad", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=64k,mode=755")


def _mount_shm(uid: int, gid: int) -> None:
    options = f"size=64m,mode=1777,uid={uid},gid={gid}"
    _mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, options)


def _loopback_up() -> None:
    """Unless it is up already (a network slot's is): setting flags takes the kernel's rtnl
    lock, for which a burst of sandboxes would queue behind the slot builder."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(sock, SIOCGIFFLAGS, request))[1]
        if flags & IFF_UP:
            return
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP | IFF_RUNNING))


def _runtime_api_sockets(
    port: int,
    unix_path: str,
    uid: int,
    reply: socket.socket,
    connected: bool = False,
    mounts: "socket.socket | None" = None,
) -> "int | None":
    """Listen inside the sandbox — on 127.0.0.1:port (what AWS_LAMBDA_RUNTIME_API names) and on
    a Unix socket (lambdad's own bootstraps prefer it: cheaper than loopback TCP) — and hand
    both listeners to lambdad, which serves the Runtime API on them. With `connected`, also a
    connected pair: lambdad gets one end, and the fd of the other is returned for the runtime
    (its first request then needs no connect or accept). With `mounts`, lambdad also gets
    init's mount socket (it sends the assignment's code there). The message names what came,
    and means "ready"."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((RUNTIME_API_HOST, port))
    listener.listen(64)
    local = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    directory, name = os.path.split(unix_path)
    os.makedirs(directory, exist_ok=True)
    os.chdir(directory)  # a relative name: the host path may exceed AF_UNIX's 108 bytes
    local.bind(name)
    os.chown(name, uid, -1)
    os.chdir("/")
    local.listen(64)
    fds = [listener.fileno(), local.fileno()]
    words = [b"runtime-api"]
    pair = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM) if connected else None
    if pair is not None:
        fds.append(pair[1].fileno())
        words.append(b"connected")
    if mounts is not None:
        fds.append(mounts.fileno())
        words.append(b"mounts")
    try:
        socket.send_fds(reply, [b" ".join(words)], fds)
    except OSError:  # lambdad stopped or discarded this sandbox before it was ready
        os._exit(0)
    listener.close()
    local.close()
    if mounts is not None:
        mounts.close()
    if pair is None:
        return None
    pair[1].close()
    return pair[0].detach()


def _pivot(root: str) -> None:
    number = _PIVOT_ROOT.get(platform.machine())
    if number is None:
        raise JailError(errno.ENOSYS, f"pivot_root: unsupported machine {platform.machine()}")
    os.chdir(root)
    os.makedirs(".old", exist_ok=True)
    _check(_libc.syscall(number, b".", b".old"), "pivot_root")
    _check(_libc.umount2(b"/.old", MNT_DETACH), "umount old root")
    os.rmdir("/.old")
    os.chdir("/")
    _mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)


class _SockFilter(ctypes.Structure):
    _fields_ = [
        ("code", ctypes.c_ushort),
        ("jt", ctypes.c_ubyte),
        ("jf", ctypes.c_ubyte),
        ("k", ctypes.c_uint),
    ]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def _seccomp_program(program: bytes) -> "tuple[_SockFprog, Any]":
    """The filter as the kernel takes it (the array is returned too: it must stay alive)."""
    count = len(program) // 8
    filters = (_SockFilter * count).from_buffer_copy(program)
    return _SockFprog(count, filters), filters


def _seccomp(program: "bytes | tuple[_SockFprog, Any]") -> None:
    prog, _filters = _seccomp_program(program) if isinstance(program, bytes) else program
    _check(_libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0), "seccomp")


def _drop_privileges(uid: int, gid: int) -> None:
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    _prctl(PR_SET_NO_NEW_PRIVS, 1)


def prepare(plan: "dict[str, Any]", channel: socket.socket) -> "dict[str, Any]":
    """Build the sandbox, wait for an assignment, apply it; returns only in the function process."""
    global _init_dir
    if _init_dir >= 0:  # a directory of the host: never in a sandbox (openat would escape)
        os.close(_init_dir)
        _init_dir = -1
    pid = str(os.getpid()).encode()
    extra: list[int] = plan.get("fds", [])
    for index in plan["cgroup_fds"]:  # cgroup.procs of each of its cgroups, opened by lambdad
        os.write(extra[index], pid)
    # lambdad_forkserver forked this process into a new PID namespace: as PID 2 when the zygote
    # spawned lambdad-init as its PID 1 (spawn_init), else as PID 1, the environment's init
    # (its status pipe reports how the function process ended).
    init: dict[str, int] | None = plan.get("init")  # the spawned init's descriptors
    status_fd = plan.get("status_fd")
    if os.getpid() != (1 if init is None else 2) or (status_fd is None and init is None):
        raise JailError(errno.EINVAL, "a sandbox must be forked into a PID namespace of its own")
    flags = CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS
    network = plan.get("network_fd")
    if network is None:
        flags |= CLONE_NEWNET
    else:  # a pooled network namespace (veth + NAT), prepared by lambdad
        _check(_libc.setns(extra[network], CLONE_NEWNET), "setns network")
    for fd in extra:
        os.close(fd)
    _check(_libc.unshare(flags), "unshare")
    if init is not None:  # init may join the new mount namespace now (it mounts there)
        with contextlib.suppress(OSError):  # init is gone: so is this namespace, soon
            os.write(init["go"], b"x")
        os.close(init["go"])
    # Unless the sandbox may become a SnapStart snapshot (which needs its privileges when it is
    # assigned), init mounts the assignment: lambdad sends it the code on a socket of its own,
    # and the function process waits for "ok" on a pipe, having dropped every privilege ahead.
    lambdads_end = ready = None
    if init is not None:
        if "mounts" in init:
            lambdads_end, ready = socket.socket(fileno=init["mounts"]), init["ready"]
    else:
        assert status_fd is not None
        mounter = None if plan.get("late_privileges") else _Mounter(plan["uid"], plan["gid"])
        function = os.fork()
        if function:
            channel.close()
            if mounter is not None:
                mounter.for_init()
            _init(function, status_fd, mounter)
        os.close(status_fd)
        _die_with_parent()
        if mounter is not None:
            lambdads_end, ready = mounter.for_function(), mounter.ready
    _build_function_process(plan, channel, lambdads_end)
    if ready is not None:
        _confine(plan)
    if plan.get("warm"):  # the preloaded runtime will run in this very process
        _warm_up(plan["warm"])
        _make_room_for_variables()
        _prepare_ahead(plan)
    if ready is None:
        return _assign_snapshot(plan, channel)
    return _assigned(channel, plan.get("runtime_api_fd"), ready)


_init_dir = -1  # the directory of the compiled init (enter_template opens it: see spawn_init)
_sandbox_seccomp: "tuple[_SockFprog, Any] | None" = None  # the template's filter (enter_template)
_init_name = ""


def init_program() -> "tuple[int, str]":
    """The compiled init's directory (an O_PATH descriptor; -1: none) and name in it."""
    return _init_dir, _init_name


def spawn_init(
    kind: int, uid: int, gid: int, fds: "list[int]"
) -> "tuple[int, dict[str, int]] | None":
    """In the zygote, between unshare(CLONE_NEWPID) and forking a sandbox: spawn lambdad-init
    (guest/lambdad_init.c) as PID 1 of the new namespace — vfork + exec, so init never holds a
    copy of the zygote's interpreter. `kind` is the fork request's INIT (lambdad_forkserver):
    INIT_GO for a sandbox that mounts for itself (a SnapStart snapshot's, which keeps its
    privileges), INIT_MOUNTS for one whose init mounts its assignment as `uid`:`gid`. Returns
    init's pid and the sandbox's descriptors for it, which go into its plan as "init" ("go",
    the write end of init's pipe, one byte once the sandbox has unshared its namespaces, see
    prepare; with INIT_MOUNTS also "mounts", lambdad's end of init's mount socket, and "ready",
    the read end of init's "ok" pipe); None without the compiled init (the sandbox then is its
    own PID 1). `fds` are the request's: init must not hold them."""
    if _init_dir < 0:
        return None
    go_r, go_w = os.pipe()
    theirs, ours = [go_r], {"go": go_w}
    if kind == INIT_MOUNTS:
        init_end, lambdads_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ready_r, ready_w = os.pipe()
        theirs += [init_end.detach(), ready_w]
        ours.update(mounts=lambdads_end.detach(), ready=ready_r)
    args = [str(fd) for fd in theirs]
    if len(theirs) > 1:
        args += [str(uid), str(gid)]
    try:
        for fd in theirs:
            os.set_inheritable(fd, True)
        os.fchdir(_init_dir)  # exec'd by a name relative to it: the zygote's root lacks it
        try:
            pid = os.posix_spawn(
                _init_name,
                ["lambdad-init", *args],
                {},
                # lambdad's descriptors for the sandbox arrived without close-on-exec
                file_actions=[(os.POSIX_SPAWN_CLOSE, fd) for fd in fds],
                setsid=True,
            )
        finally:
            os.chdir("/")
    except OSError:
        for fd in ours.values():
            os.close(fd)
        raise
    finally:
        for fd in theirs:
            os.close(fd)
    return pid, ours


class _Mounter:
    """The Python init's side of the assignment (without the compiled init): the socket lambdad
    sends the code on and the pipe the function process learns the outcome from (created
    before the fork, each end then kept by the one process that uses it)."""

    def __init__(self, uid: int, gid: int) -> None:
        self.uid, self.gid = uid, gid  # who owns /tmp
        self.init_end, self.lambdads_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.ready, self.ready_w = os.pipe()

    def for_init(self) -> None:
        self.lambdads_end.close()
        os.close(self.ready)

    def for_function(self) -> socket.socket:
        self.init_end.close()
        os.close(self.ready_w)
        return self.lambdads_end

    def serve(self, function_pid: int) -> None:
        """As lambdad-init does (guest/lambdad_init.c), where it is not compiled."""
        import select

        waits = select.poll()
        waits.register(self.init_end, select.POLLIN)
        with contextlib.suppress(OSError):
            waits.register(os.pidfd_open(function_pid), select.POLLIN)
        fd = next(iter(dict(waits.poll())))
        if fd == self.init_end.fileno():
            report = b"ok"
            step = "receive"
            try:
                text, trees, _, _ = socket.recv_fds(self.init_end, 32, 2)
                step = "message"
                if not text or len(trees) not in (1, 2):
                    raise JailError(errno.EINVAL, step)
                if len(trees) == 2:
                    step = "move_mount /opt"
                    _move_mount(trees[1], "/opt")
                step = "move_mount /var/task"
                _move_mount(trees[0], "/var/task")
                step = "mount /tmp"
                _mount_tmp(int(text), self.uid, self.gid)
            except OSError as exc:
                report = b"error %d %s" % (exc.errno or errno.EIO, step.encode())
            with contextlib.suppress(OSError):
                os.write(self.ready_w, report)
        self.init_end.close()
        os.close(self.ready_w)


def _mount_tmp(size_mb: int, uid: int, gid: int) -> None:
    options = f"size={size_mb}m,mode=1777,uid={uid},gid={gid}"
    _mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, options)


def _confine(plan: "dict[str, Any]") -> None:
    """The function process's last privileged step: drop to the sandbox user, no new
    privileges, the seccomp filter (done while the sandbox waits, off the request path)."""
    _drop_privileges(plan["uid"], plan["gid"])
    if _sandbox_seccomp is not None:
        _seccomp(_sandbox_seccomp)


def _assigned(channel: socket.socket, api_fd: "int | None", ready: int) -> "dict[str, Any]":
    """Wait for lambdad's assignment (init mounts its code meanwhile); unprivileged already."""
    message, fds, _, _ = socket.recv_fds(channel, 1 << 20, 1)
    if not message or len(fds) != 1:
        os._exit(0)  # lambdad discarded this sandbox
    channel.close()
    assignment: dict[str, Any] = json.loads(message)
    os.dup2(fds[0], 1)
    os.dup2(fds[0], 2)
    os.close(fds[0])
    _hand_over_connection(api_fd, assignment)
    assignment["mounted_fd"] = ready  # see wait_mounted: as late as possible
    return assignment


def wait_mounted(ready: int) -> None:
    """Until init reports the assignment's mounts (/var/task, /opt, /tmp) made."""
    report = os.read(ready, 96)
    os.close(ready)
    if report != b"ok":
        kind, _, detail = report.decode(errors="replace").partition(" ")
        number, _, step = detail.partition(" ")
        err = int(number) if kind == "error" and number.isdigit() else errno.EIO
        raise JailError(err, f"{step or 'init'}: {os.strerror(err)}")


def _open_init_directory(path: "str | None") -> None:
    """The compiled init's directory, opened now (the zygote then leaves the host's root)."""
    global _init_dir, _init_name
    if not path:
        return
    try:
        _init_dir = os.open(os.path.dirname(path), os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    _init_name = os.path.basename(path)


def _fork_into_pid_namespace(channel: socket.socket) -> None:
    """After unshare(CLONE_NEWPID) (a restored environment: its snapshot cannot fork it into a
    new PID namespace directly): this process stays outside as the shim, its child becomes the
    namespace's PID-1 init, and only the grandchild — the function process — returns."""
    status_r, status_w = os.pipe()
    init = os.fork()
    if init:
        os.close(status_w)
        channel.close()
        _shim(init, status_r)
    os.close(status_r)
    _die_with_parent()
    function = os.fork()
    if function:
        channel.close()
        _init(function, status_w)
    os.close(status_w)
    _die_with_parent()


def _make_room_for_variables() -> None:
    """Drop the zygote's variables and set (then unset) as many as an assignment brings: the
    memory they need (C environ array, strings, os.environ's table) is then this process's
    own, and setting the assignment's costs no page faults on the request path."""
    os.environ.clear()
    os.environ.update({f"LAMBDAD_ROOM_{n:02d}": "x" * 120 for n in range(64)})
    os.environ.clear()


def _warm_up(entry: str) -> None:
    """Run the preloaded runtime's warm-up ("module:function") while waiting for work: this
    process's copy-on-write faults and first runs then happen before the request, not in it."""
    module, function = entry.split(":")
    loaded = sys.modules.get(module)
    if loaded is not None and hasattr(loaded, function):
        getattr(loaded, function)()


def _prepare_ahead(plan: "dict[str, Any]") -> None:
    """Let the preloaded runtime set up, while waiting, what the assignment will not change:
    its `prepare_ahead` (lambdad_bootstrap's), given what the assignment will name (the
    connection made for it, the Runtime API's address and socket, the task root)."""
    module = sys.modules.get(plan["warm"].split(":")[0])
    prepare = getattr(module, "prepare_ahead", None)
    fd = plan.get("runtime_api_fd")
    if prepare is None or fd is None or "task_root" not in plan:
        return
    address = f"{RUNTIME_API_HOST}:{plan['runtime_api_port']}"  # where it listens
    prepare(fd, address, plan["runtime_api_unix"], plan["task_root"])


def _build_function_process(
    plan: "dict[str, Any]", channel: socket.socket, mounts: "socket.socket | None"
) -> None:
    _sandbox_mounts(plan)
    _loopback_up()
    socket.sethostname(plan.get("hostname", "localhost"))
    nofile = plan.get("nofile", 1024)
    resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
    plan["runtime_api_fd"] = _runtime_api_sockets(
        plan["runtime_api_port"],
        plan["runtime_api_unix"],
        plan["uid"],
        channel,
        connected=bool(plan.get("runtime_api_connected")),
        mounts=mounts,
    )


def _move_mount(tree: int, target: str) -> None:
    _check(
        _libc.syscall(
            _MOVE_MOUNT[platform.machine()],
            tree,
            b"",
            AT_FDCWD,
            target.encode(),
            MOVE_MOUNT_F_EMPTY_PATH,
        ),
        f"move_mount {target}",
    )
    os.close(tree)


def _assign_snapshot(plan: "dict[str, Any]", channel: socket.socket) -> "dict[str, Any]":
    """Wait for the assignment of a sandbox built to become a SnapStart snapshot and apply it,
    mounts included (still root, inside the namespaces)."""
    message, fds, _, _ = socket.recv_fds(channel, 1 << 20, 4)
    if not message or len(fds) not in (2, 3):
        os._exit(0)  # lambdad discarded this sandbox
    assignment: dict[str, Any] = json.loads(message)
    snapshot = assignment.get("snapshot")
    if snapshot is None:
        raise JailError(errno.EINVAL, "a sandbox that keeps its privileges is for a snapshot")
    log_fd, code_tree = fds[0], fds[1]
    if len(fds) == 3:  # the function's layers, merged
        _move_mount(fds[2], "/opt")
    _move_mount(code_tree, "/var/task")
    uid, gid = plan["uid"], plan["gid"]
    _mount_tmp(assignment["tmp_mb"], uid, gid)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    _hand_over_connection(plan.get("runtime_api_fd"), assignment)
    # A SnapStart snapshot keeps the channel, where lambdad later asks it to fork restored
    # environments (lambdad_forkserver), and a user namespace of its own, so that each restored
    # environment can get fresh namespaces (see restore) without any privilege on the host.
    _drop_privileges(uid, gid)
    _own_user_namespace(uid, gid)
    if snapshot.get("seccomp"):
        _seccomp(bytes.fromhex(snapshot["seccomp"]))
    assignment["env"]["LAMBDAD_SNAPSHOT_FD"] = str(channel.detach())
    return assignment


def _hand_over_connection(fd: "int | None", assignment: "dict[str, Any]") -> None:
    """Give the runtime its end of the pre-connected Runtime API pair — only lambdad's own
    bootstrap, run in this process, knows it; an exec'd runtime never sees the fd."""
    if fd is None:
        return
    if "argv" in assignment:
        os.close(fd)
    else:
        assignment["env"]["LAMBDAD_RUNTIME_API_FD"] = str(fd)


def _own_user_namespace(uid: int, gid: int) -> None:
    """Enter a new user namespace mapping only our own (unprivileged) uid and gid: we keep
    capabilities over namespaces created from now on, and nothing on the host."""
    _prctl(PR_SET_DUMPABLE, 1)  # lets this process write its own id maps
    _check(_libc.unshare(CLONE_NEWUSER), "unshare user namespace")
    for name, text in (
        ("uid_map", f"{uid} {uid} 1"),
        ("setgroups", "deny"),
        ("gid_map", f"{gid} {gid} 1"),
    ):
        with open(f"/proc/self/{name}", "w") as f:
            f.write(text)


# --- SnapStart: a restored environment, forked from its snapshot ---------------------------


def restore(request: "dict[str, Any]", fds: "list[int]") -> "dict[str, Any]":
    """Runs in a child of a snapshot (lambdad_forkserver): become a restored environment in
    sandboxes of its own and return its assignment (env, cwd). With a "restore" plan:
      tell lambdad our pid (it moves us into the environment's cgroups), wait for "go"
      -> unshare mount, PID, network, IPC, UTS (owned by the snapshot's user namespace)
      -> shim / PID-1 init / function process, as in prepare
      -> fresh /proc, /tmp (the snapshot's files beneath, copy-on-write), /dev/shm, /run/lambdad
      -> the Runtime API listeners to lambdad -> the assignment (variables, log)
      -> drop every capability, stack the environment's seccomp filter.
    Without a plan (no sandbox backend) only the assignment is applied."""
    channel = socket.socket(fileno=fds[0])
    os.setsid()
    _die_with_parent()
    plan = request.get("restore")
    if plan is None:
        return _restored_assignment(channel)
    # SO_PASSCRED on lambdad's end tells it our pid; "born": in our cgroups already
    channel.send(b"born" if request.get("born_in_its_cgroups") else b"attach")
    if channel.recv(16) != b"go":
        os._exit(0)
    _check(
        _libc.unshare(CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNET),
        "unshare",
    )
    _fork_into_pid_namespace(channel)
    _restored_filesystems(plan)
    _loopback_up()
    socket.sethostname(plan.get("hostname", "localhost"))
    connection = _runtime_api_sockets(
        plan["runtime_api_port"], plan["runtime_api_unix"], plan["uid"], channel, connected=True
    )
    seccomp = _seccomp_program(bytes.fromhex(plan["seccomp"])) if plan.get("seccomp") else None
    assignment = _restored_assignment(channel)
    _hand_over_connection(connection, assignment)
    _drop_capabilities()
    if seccomp is not None:
        _seccomp(seccomp)
    return assignment


def _restored_assignment(channel: socket.socket) -> "dict[str, Any]":
    message, fds, _, _ = socket.recv_fds(channel, 1 << 20, 1)
    channel.close()
    if not message or len(fds) != 1:
        os._exit(0)  # lambdad gave up on this environment
    os.dup2(fds[0], 1)
    os.dup2(fds[0], 2)
    os.close(fds[0])
    assignment: dict[str, Any] = json.loads(message)
    return assignment


def _restored_filesystems(plan: "dict[str, Any]") -> None:
    uid, gid = plan["uid"], plan["gid"]
    _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    run = os.path.dirname(plan["runtime_api_unix"])
    _mount("tmpfs", run, "tmpfs", MS_NOSUID | MS_NODEV, f"size={plan['tmp_mb']}m,mode=755")
    if os.listdir("/tmp"):  # the snapshot's init left files: keep them, copy-on-write
        for name in ("upper", "work"):
            os.mkdir(f"{run}/.tmp-{name}", 0o700)
        os.chmod(f"{run}/.tmp-upper", 0o1777)
        _mount(
            "overlay",
            "/tmp",
            "overlay",
            MS_NOSUID | MS_NODEV,
            f"lowerdir=/tmp,upperdir={run}/.tmp-upper,workdir={run}/.tmp-work",
        )
    else:
        _mount_tmp(plan["tmp_mb"], uid, gid)
    _mount_shm(uid, gid)


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def _drop_capabilities() -> None:
    """Give up the capabilities held in the snapshot's user namespace, for good."""
    _check(_libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "clear ambient caps")
    cap = 0
    while _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) == 0:
        cap += 1
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    _check(
        _libc.syscall(_CAPSET[platform.machine()], ctypes.byref(header), ctypes.byref(data)),
        "capset",
    )
