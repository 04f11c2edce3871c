"""NamespaceBackend: every environment in its own namespaces, cgroups and seccomp filter.

Per environment (see guest/lambdad_jail.py for the steps inside): new mount, PID, IPC, UTS and
network namespaces; a tmpfs root holding only read-only binds of the system directories, the
runtime's interpreter, the code at /var/task and the runtime at /var/runtime, an allow-listed
/etc, a private /tmp sized to EphemeralStorage, a fresh /proc and a minimal /dev; cgroup v1
limits (memory = MemorySize, CPU quota proportional to memory, 1,024 tasks); 1,024 open files;
an unprivileged uid with no capabilities, no_new_privs and a seccomp filter. The network
namespace has only loopback; the Runtime API socket is created inside it and handed to lambdad,
so the environment reaches the Runtime API and nothing else of the host.

Environments are forked from zygotes (one per interpreter; Node.js and custom runtimes are
exec'd from a zygote running lambdad's own interpreter after the jail is in place).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import secrets
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import orjson

from lambdad.sandbox import init_binary, mounts
from lambdad.sandbox.base import (
    ExitStatus,
    IsolationReport,
    LaunchSpec,
    SandboxBackend,
    SandboxLayout,
    SandboxProcess,
)
from lambdad.sandbox.cgroups import CgroupManager, EnvironmentCgroup
from lambdad.sandbox.etc import EtcMirror
from lambdad.sandbox.memory_merge import MERGE_NOTE
from lambdad.sandbox.mounts import SpareTrees
from lambdad.sandbox.network import NetworkPool, NetworkPoolError, sweep_stale_pools
from lambdad.sandbox.prepared import (
    PoolKey,
    PoolStatistics,
    PreparedSandbox,
    SandboxPool,
    receive_runtime_api,
)
from lambdad.sandbox.restores import RestorePool
from lambdad.sandbox.seccomp import build_filter
from lambdad.sandbox.zygote import Zygote, Zygotes

log = logging.getLogger(__name__)

TASK_ROOT = "/var/task"
RUNTIME_DIR = "/var/runtime"
RUNTIME_API_PORT = 9001
# AWS_LAMBDA_RUNTIME_API in a sandbox: where its jail listens (lambdad_jail.RUNTIME_API_HOST),
# and what the Python bootstrap set up ahead is checked against
RUNTIME_API_ADDRESS = f"127.0.0.1:{RUNTIME_API_PORT}"
DEFAULT_MEMORY_MB = 128  # AWS's default MemorySize
# lambdad's own bootstraps reach the Runtime API here (cheaper than loopback TCP).
RUNTIME_API_UNIX = "/run/lambdad/runtime-api.sock"
SANDBOX_UID = 993  # AWS runs functions as sbx_user1051 (uid 993)
SANDBOX_GID = 990
ETC_ALLOWED = (
    "hosts",
    "resolv.conf",
    "nsswitch.conf",
    "host.conf",
    "gai.conf",
    "services",
    "protocols",
    "localtime",
    "timezone",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "ssl",
    "ca-certificates",
    "ca-certificates.conf",
    "alternatives",
    "mime.types",
    "os-release",
    "debian_version",
    "pki",
    "crypto-policies",
    "mono",  # Mono's dllmap (/etc/mono/config: System.Native, libc) for dotnet8
)
ROOT_LINKS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
# Fork requests a zygote has not answered yet, at most: a plan is ~4 KB and the control
# socket's buffer ~200 KB, so a burst of cold starts must not send them all at once.
FORKS_IN_FLIGHT = 16
PYTHON_INIT_NOTE = (
    "lambdad-init is not compiled (no C compiler, or LAMBDAD_COMPILED_INIT=off): each "
    "environment's PID 1 is a forked Python process (about 1 MB more memory per environment)"
)


def _root_entries() -> tuple[list[list[Any]], list[list[str]]]:
    """Binds and symlinks that recreate the host's /usr-based system directories."""
    binds: list[list[Any]] = [["/usr", "/usr", True]]
    links: list[list[str]] = []
    for name in ROOT_LINKS:
        path = Path("/") / name
        if path.is_symlink():
            links.append([os.readlink(path), f"/{name}"])
        elif path.is_dir():
            binds.append([str(path), f"/{name}", True])
    return binds, links


class _JailedProcess(SandboxProcess):
    def __init__(
        self,
        pid: int,
        exited: asyncio.Future[ExitStatus],
        cgroup: EnvironmentCgroup,
        api_socket: socket.socket | None,
    ) -> None:
        self.pid = pid
        self.runtime_api_socket = api_socket
        self._exited = exited
        self._cgroup = cgroup
        self._peak = 0
        self._oom = False
        # SnapStart: the snapshot's fork server, once this environment is a snapshot, and
        # its restored environments waiting to be assigned
        self.forkserver: Zygote | None = None
        self.restores: RestorePool | None = None
        exited.add_done_callback(self._on_exit)

    @property
    def cgroup(self) -> EnvironmentCgroup:
        return self._cgroup

    async def snapshot_ready(self) -> None:
        if self.forkserver is None:
            raise OSError("this environment is not a snapshot")
        await self.forkserver.wait_ready_unless(self._exited)

    async def wait(self) -> ExitStatus:
        return await asyncio.shield(self._exited)

    def kill(self) -> None:
        if not self._exited.done():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)

    def peak_memory_bytes(self) -> int:
        self._peak = max(self._peak, self._cgroup.peak_memory_bytes())
        return self._peak

    def out_of_memory(self) -> bool:
        return self._oom

    def initialised(self, memory_mb: int) -> None:
        self._cgroup.throttle_cpu(memory_mb)

    def _on_exit(self, _: asyncio.Future[ExitStatus]) -> None:
        # Runs before anyone awaiting wait() resumes, and before the cgroup is removed.
        if self.restores is not None:
            self.restores.close()
        if self.forkserver is not None:
            self.forkserver.disconnect()
        self.peak_memory_bytes()
        self._oom = self._cgroup.oom_killed()
        self._cleanup = asyncio.ensure_future(self._remove_cgroup())

    async def _remove_cgroup(self) -> None:
        self.peak_memory_bytes()
        for _ in range(100):
            if self._cgroup.remove():
                return
            await asyncio.sleep(0.02)


class NamespaceBackend(SandboxBackend):
    def __init__(
        self,
        run_dir: Path,
        runtime_dir: Path,
        cgroups: CgroupManager,
        seccomp: bytes | None,
        exec_interpreter: str = sys.executable,
        pool_size: int = 3,
        networking: bool = True,
        memory_merge: bool = False,
    ) -> None:
        self._run_dir = run_dir
        self._runtime_dir = runtime_dir
        self._cgroups = cgroups
        self._seccomp = seccomp
        self._snapshot_seccomp = build_filter(snapshot=True) if seccomp is not None else None
        self._seccomp_hex = seccomp.hex() if seccomp is not None else ""
        # pool key -> the memory size its last assignment had (prepared cgroups get it ahead)
        self._likely_memory_mb: dict[PoolKey, int] = {}
        # PID 1 of every environment: a tiny compiled program, or (None) a Python process
        self._init_program = init_binary.ensure_built()
        # the zygotes' fork loop in C, or (None) their Python loop
        self._fork_loop = init_binary.ensure_fork_loop_built()
        self._exec_interpreter = exec_interpreter
        self._zygotes = Zygotes(memory_merge, self._template)
        self._trees = SpareTrees()  # detached code (and layer) mounts made ahead
        self._root = run_dir / "sandbox-root"
        self._root.mkdir(parents=True, exist_ok=True)
        self._etc = self._write_identity_files(run_dir / "etc")
        self._etc_mirror = EtcMirror(Path("/etc"), self._etc, ETC_ALLOWED)
        self._system_binds, self._links = _root_entries()
        self._pool = SandboxPool(
            lambda key, waited_for: self._build(key, warm=not waited_for), pool_size
        )
        # zygote key -> fork requests it may have unanswered (FORKS_IN_FLIGHT)
        self._fork_slots: dict[PoolKey, asyncio.Semaphore] = {}
        # Outbound networking (veth + NAT) where the host allows it; loopback only otherwise.
        self._network: NetworkPool | None = None
        self._network_start: asyncio.Task[NetworkPool | None] | None = None
        self._network_note = "" if networking else "outbound networking disabled"
        self._networking = networking

    @classmethod
    def probe(
        cls, run_dir: Path, runtime_dir: Path, pool_size: int = 3, memory_merge: bool = False
    ) -> tuple[NamespaceBackend | None, str]:
        """The backend if this host can sandbox (root, cgroups, namespaces); else the reason."""
        if os.geteuid() != 0:
            return None, "not running as root: namespaces, cgroups and uid changes need root"
        cgroups, reason = CgroupManager.detect(f"lambdad-{os.getpid()}")
        if cgroups is None:
            return None, reason
        if not _can_unshare():
            cgroups.cleanup()
            return None, "unshare(mount|pid|net|ipc|uts) is not permitted here"
        if not mounts.supported():
            cgroups.cleanup()
            return None, "open_tree/move_mount unavailable on this CPU architecture"
        backend = cls(
            run_dir,
            runtime_dir,
            cgroups,
            build_filter(),
            pool_size=pool_size,
            memory_merge=memory_merge,
        )
        return backend, ""

    def layout(self) -> SandboxLayout:
        return SandboxLayout(TASK_ROOT, RUNTIME_DIR, RUNTIME_API_ADDRESS, RUNTIME_API_UNIX)

    async def start(self, spec: LaunchSpec) -> SandboxProcess:
        interpreter = spec.zygote_interpreter or self._exec_interpreter
        preload = spec.zygote_preload if spec.zygote_interpreter else None
        self._likely_memory_mb[(interpreter, preload)] = spec.memory_mb
        if spec.snapshot:  # built for it: a snapshot keeps privileges until it is assigned
            prepared = await self._build((interpreter, preload), late_privileges=True)
        else:
            prepared = await self._pool.take((interpreter, preload))
        if prepared is None:
            raise OSError("the sandbox could not be prepared (see the server log)")
        try:
            self._assign(prepared, spec)
        except BaseException:
            prepared.discard()
            raise
        process = _JailedProcess(prepared.pid, prepared.exited, prepared.cgroup, None)
        if prepared.api is not None:
            process.runtime_api_server = prepared.api
        else:
            process.runtime_api_socket = prepared.runtime_api
            process.runtime_api_unix_socket = prepared.runtime_api_unix
            process.runtime_api_connection = prepared.runtime_api_connection
        if spec.snapshot:
            process.forkserver = Zygote.adopt(prepared.channel, f"snapshot {prepared.pid}")
        return process

    async def restore(self, snapshot: SandboxProcess, spec: LaunchSpec) -> SandboxProcess:
        """An environment restored from `snapshot`: a pre-forked one when its pool has one
        (see sandbox/restores.py), given `spec`'s variables and log."""
        pool = self._restore_pool(snapshot, spec.memory_mb, spec.tmp_mb)
        restored = await pool.take()
        message = {"env": dict(spec.env), "cwd": TASK_ROOT}
        try:
            socket.send_fds(restored.channel, [orjson.dumps(message)], [spec.log_fd])
        except BaseException:
            restored.discard()
            raise
        finally:
            restored.channel.close()
        process = _JailedProcess(
            restored.pid, restored.exited, restored.cgroup, restored.runtime_api
        )
        process.runtime_api_unix_socket = restored.runtime_api_unix
        process.runtime_api_connection = restored.runtime_api_connection
        return process

    def warm_restores(self, snapshot: SandboxProcess, memory_mb: int, tmp_mb: int) -> None:
        self._restore_pool(snapshot, memory_mb, tmp_mb).fill()

    def _restore_pool(self, snapshot: SandboxProcess, memory_mb: int, tmp_mb: int) -> RestorePool:
        if not isinstance(snapshot, _JailedProcess) or snapshot.forkserver is None:
            raise OSError("not a snapshot of this backend")
        if snapshot.restores is None:
            plan = {**self._sandbox_plan(), "seccomp": self._seccomp_hex, "tmp_mb": tmp_mb}
            snapshot.restores = RestorePool(
                snapshot,
                snapshot.forkserver,
                self._cgroups,
                plan,
                memory_mb,
                snapshot_cgroup=snapshot.cgroup,
            )
        return snapshot.restores

    def _assign(self, prepared: PreparedSandbox, spec: LaunchSpec) -> None:
        """Give a prepared sandbox its function: limits, code, /tmp size, variables, log."""
        prepared.cgroup.limit(spec.memory_mb, initialising=True)
        message: dict[str, Any] = {"env": dict(spec.env), "cwd": TASK_ROOT, "tmp_mb": spec.tmp_mb}
        if spec.snapshot:
            message["snapshot"] = {"seccomp": (self._snapshot_seccomp or b"").hex()}
        if spec.zygote_interpreter and not spec.exec_argv:
            message["entry"] = spec.zygote_entry
        else:
            message["argv"] = list(spec.argv)
        trees = [self._trees.take(spec.code_dir)]
        if spec.opt_dir:
            trees.append(self._trees.take(spec.opt_dir))
        try:
            if prepared.mounts is not None:  # init mounts while the function process starts
                tmp_mb = message.pop("tmp_mb")
                socket.send_fds(prepared.mounts, [b"%d" % tmp_mb], trees)
                socket.send_fds(prepared.channel, [orjson.dumps(message)], [spec.log_fd])
            else:
                socket.send_fds(prepared.channel, [orjson.dumps(message)], [spec.log_fd, *trees])
        finally:
            for tree in trees:
                os.close(tree)
            # the next assignment of these directories takes a tree made meanwhile
            loop = asyncio.get_running_loop()
            for directory in (spec.code_dir, spec.opt_dir):
                if directory:
                    loop.call_soon(self._trees.refill, directory)
            if prepared.mounts is not None:
                prepared.mounts.close()
            if not spec.snapshot:  # a snapshot's channel stays: restores are asked there
                prepared.channel.close()

    async def _build(
        self, key: PoolKey, *, warm: bool = True, late_privileges: bool = False
    ) -> PreparedSandbox | None:
        """Fork a sandbox from the key's zygote and wait until it is ready for an assignment.
        Its function process drops its privileges while it waits, and its init mounts the
        assignment; with `late_privileges` (a SnapStart snapshot), the function process keeps
        them and mounts the assignment itself. Without `warm` (a request waits for this one: the
        pool was empty), no warm-up run and no room made for variables: they pay off only in a
        sandbox that waits for a request, and would delay this one's request by as much as
        its own first run then saves (a burst of 1,000 took 10.5 s without them, 14.3 s with:
        four alternating runs each, 30-38 against 35-47 ms of CPU per environment)."""
        interpreter, preload = key
        zygote = await self._zygotes.get(interpreter, preload)
        self._etc_mirror.refresh()
        network = await self._network_pool()
        slot = await network.acquire() if network is not None else None
        # the memory limit its function will likely have (the last one of this pool), set now
        likely_mb = self._likely_memory_mb.get(key, DEFAULT_MEMORY_MB)
        try:
            cgroup = await self._cgroups.make(f"env-{secrets.token_hex(6)}", likely_mb)
        except BaseException:
            if network is not None and slot is not None:
                network.release(slot)
            raise
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        plan = self._sandbox_plan()
        if preload is not None:  # lambdad's own bootstrap: pre-connect it (and warm it up)
            plan["runtime_api_connected"] = True
            if warm:
                plan["warm"] = f"{preload[1]}:warm_up"
        if late_privileges:
            plan["late_privileges"] = True
        # The zygote lives in the sandboxes' root: what the sandbox joins goes as descriptors.
        extra = cgroup.take_procs()
        plan["cgroup_fds"] = list(range(len(extra)))
        forks = self._fork_slots.setdefault(key, asyncio.Semaphore(FORKS_IN_FLIGHT))
        try:
            if slot is not None:
                extra.append(os.open(slot.path, os.O_RDONLY | os.O_CLOEXEC))
                plan["network_fd"] = len(extra) - 1
            async with forks:
                pid, exited = await zygote.fork(
                    {"jail": plan, "pid_namespace": True}, [theirs.fileno(), *extra]
                )
        except BaseException:
            ours.close()
            cgroup.remove()
            if network is not None and slot is not None:
                network.release(slot)
            raise
        finally:
            theirs.close()
            for fd in extra:
                os.close(fd)
        if network is not None and slot is not None:
            exited.add_done_callback(lambda _: network.release(slot))
        listeners = await receive_runtime_api(ours, exited)
        if listeners is None:
            ours.close()
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            exited.add_done_callback(lambda _: cgroup.remove())
            return None
        prepared = PreparedSandbox.ready(pid, exited, cgroup, ours, listeners)
        try:
            await prepared.serve_ahead()
        except BaseException:
            prepared.discard()
            exited.add_done_callback(lambda _: cgroup.remove())
            raise
        return prepared

    def _sandbox_plan(self) -> dict[str, Any]:
        """The jail plan of a sandbox (see guest/lambdad_jail.prepare), before what is its own."""
        return {
            "uid": SANDBOX_UID,
            "gid": SANDBOX_GID,
            "hostname": "localhost",
            "nofile": 1024,
            "runtime_api_port": RUNTIME_API_PORT,
            "runtime_api_unix": RUNTIME_API_UNIX,
            "task_root": TASK_ROOT,
        }

    def _template(self, interpreter: str) -> dict[str, Any]:
        """The root every sandbox of this interpreter's zygote shares (read-only), which the
        zygote moves into when it starts (guest/lambdad_jail.enter_template)."""
        binds = [*self._system_binds]
        prefix = Path(os.path.realpath(interpreter)).parent.parent
        if not str(prefix).startswith("/usr"):
            binds.append([str(prefix), str(prefix), True])
        binds.append([str(self._runtime_dir), RUNTIME_DIR, True])
        # /etc is lambdad's directory of copies (kept current: sandbox/etc.py), with the
        # allowed directories bound onto it; a zygote's template outlives changes to /etc.
        self._etc_mirror.refresh(force=True)
        binds.append([str(self._etc), "/etc", True])
        for directory in self._etc_mirror.directories():
            binds.append([f"/etc/{directory}", f"/etc/{directory}", True])
        return {
            "root": str(self._root),
            "binds": binds,
            "symlinks": self._links,
            "dirs": ["/opt", "/var/lang", "/home"],
            "init_program": str(self._init_program) if self._init_program else None,
            "seccomp": self._seccomp_hex,  # every sandbox's filter (see lambdad_jail)
            "fork_loop": str(self._fork_loop) if self._fork_loop else None,
        }

    async def open(self) -> None:
        """Start bringing networking up; sandboxes built meanwhile wait for it (the API is
        served at once: on a busy host the pool can take a while)."""
        if self._networking and self._network_start is None:
            self._network_start = asyncio.ensure_future(self._start_network())

    async def _network_pool(self) -> NetworkPool | None:
        """The network pool, started on first use (None where the host cannot network)."""
        if not self._networking:
            return None
        if self._network_start is None:
            self._network_start = asyncio.ensure_future(self._start_network())
        return await asyncio.shield(self._network_start)

    async def _start_network(self) -> NetworkPool | None:
        usable, reason = NetworkPool.probe()
        if not usable:
            self._network_note = f"no outbound network (loopback only): {reason}"
            return None
        stale = await asyncio.to_thread(sweep_stale_pools)
        if stale:
            log.info("removed %d network resources left by stopped lambdad servers", stale)
        last = ""
        for second_octet in range(200, 240):  # another server may hold a subnet already
            pool = NetworkPool(subnet=f"10.{second_octet}.0.0/16", target_idle=4)
            try:
                await pool.start()
            except NetworkPoolError as exc:
                last = str(exc)
                continue
            self._network = pool
            return pool
        self._network_note = f"no outbound network (loopback only): {last}"
        return None

    def network_statistics(self) -> dict[str, Any] | None:
        """The network pool's figures, {"state": "starting"} before it is up, None without."""
        if self._network is not None:
            return dataclasses.asdict(self._network.statistics())
        if self._network_start is not None and not self._network_start.done():
            return {"state": "starting"}
        return None

    async def prepare(self, interpreter: str, preload: tuple[str, str] | None) -> None:
        """Start the interpreter's zygote and fill its pool (plus the exec pool, once)."""
        await self._zygotes.get(interpreter, preload)
        self._pool.fill((interpreter, preload))
        self._pool.fill((self._exec_interpreter, None))

    def statistics(self) -> PoolStatistics:
        return self._pool.statistics()

    @staticmethod
    def _write_identity_files(directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "passwd").write_text(
            "root:x:0:0:root:/root:/sbin/nologin\n"
            f"sbx_user1051:x:{SANDBOX_UID}:{SANDBOX_GID}::/tmp:/sbin/nologin\n"
        )
        (directory / "group").write_text(f"root:x:0:\nsbx_user1051:x:{SANDBOX_GID}:\n")
        return directory

    def isolation(self) -> IsolationReport:
        features = {
            "pid_namespace": True,
            "mount_namespace": True,
            "network_namespace": True,
            "ipc_uts_namespaces": True,
            "cgroup_limits": True,
            "seccomp": self._seccomp is not None,
            "unprivileged_uid": True,
            "no_new_privs": True,
            "outbound_network_nat": self._network is not None,
        }
        notes: tuple[str, ...] = ()
        if self._seccomp is None:
            notes = ("no seccomp table for this CPU architecture: system calls are not filtered",)
        if self._network_note:
            notes = (*notes, self._network_note)
        if self._zygotes.memory_merge:
            notes = (*notes, MERGE_NOTE)
        if self._init_program is None:
            notes = (*notes, PYTHON_INIT_NOTE)
        return IsolationReport("namespaces", features, notes)

    async def close(self) -> None:
        self._trees.close()
        await self._pool.close()
        await self._zygotes.close()
        if self._network is not None:
            await asyncio.sleep(0.1)  # let the killed sandboxes' exits release their slots
            await self._network.close()
        await asyncio.sleep(0.05)
        await self._cgroups.close()


def _can_unshare() -> bool:
    """Try the namespaces in a throw-away child."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    newns, newpid, newnet, newipc, newuts = 0x20000, 0x20000000, 0x40000000, 0x8000000, 0x4000000
    flags = newns | newpid | newnet | newipc | newuts
    pid = os.fork()
    if pid == 0:
        os._exit(0 if libc.unshare(flags) == 0 else 1)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0
