"""SandboxBackend: how an execution environment's process is started, watched and killed.

Contract:
- ``start`` returns a running ``SandboxProcess`` whose stdout and stderr are the ``log_fd`` given
  in the spec; the caller keeps ownership of that fd (the backend dups what it needs).
- ``SandboxProcess.kill`` is idempotent and kills every process the environment started.
- ``SandboxProcess.wait`` resolves once, with how the environment's main process ended; after
  that no process of the environment is left.
"""

from __future__ import annotations

import signal
import socket
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass

from lambdad.runtime.api_server import RuntimeApiServer


@dataclass(frozen=True)
class LaunchSpec:
    """What to run for one execution environment."""

    argv: tuple[str, ...]  # command to exec (ignored when forked from a zygote)
    env: Mapping[str, str]
    cwd: str
    log_fd: int  # write end of the environment's log pipe: becomes stdout and stderr
    memory_mb: int = 128
    # Interpreter whose zygote should fork this environment instead of an exec (Python runtimes).
    zygote_interpreter: str | None = None
    # (directory, module) the zygote imports once before forking, e.g. the runtime's bootstrap.
    zygote_preload: tuple[str, str] | None = None
    # Exec argv even though a zygote of zygote_interpreter forks it (an exec wrapper).
    exec_argv: bool = False
    # Module-level callable the zygote child runs after fork ("module:function").
    zygote_entry: str = "lambdad_bootstrap:main"
    # Host directory holding the function's code (the sandbox mounts it at task_root).
    code_dir: str = ""
    # Size of the environment's writable /tmp (EphemeralStorage).
    tmp_mb: int = 512
    # Host directory holding the function's layers, merged (mounted at /opt); "" for none.
    opt_dir: str = ""
    # SnapStart: this environment becomes a snapshot once initialised (see SandboxBackend.restore).
    snapshot: bool = False


@dataclass(frozen=True)
class ExitStatus:
    """How an environment's main process ended (exit code, or the signal that killed it)."""

    code: int | None = None
    signal: int | None = None

    def describe(self) -> str:
        """AWS's wording: 'exit status 1', 'signal: killed'."""
        if self.signal is not None:
            return f"signal: {_signal_word(self.signal)}"
        return f"exit status {self.code}"


def _signal_word(signum: int) -> str:
    words = {
        signal.SIGKILL: "killed",
        signal.SIGTERM: "terminated",
        signal.SIGSEGV: "segmentation fault",
        signal.SIGABRT: "aborted",
        signal.SIGINT: "interrupt",
        signal.SIGBUS: "bus error",
        signal.SIGFPE: "floating point exception",
    }
    return words.get(signal.Signals(signum), signal.Signals(signum).name.lower())


class SandboxProcess(ABC):
    pid: int
    # The Runtime API listener created inside the environment (backends with a fixed
    # SandboxLayout.runtime_api); lambdad serves the environment's Runtime API on it.
    runtime_api_socket: socket.socket | None = None
    # The same API on a Unix socket (lambdad's own bootstraps use it when offered).
    runtime_api_unix_socket: socket.socket | None = None
    # lambdad's end of a Runtime API connection already made for the runtime, if any.
    runtime_api_connection: socket.socket | None = None
    # Or all of them served already, while the sandbox waited (bound to the environment by
    # the launcher): then the three above are left unset.
    runtime_api_server: RuntimeApiServer | None = None

    @abstractmethod
    async def wait(self) -> ExitStatus:
        """Wait until the environment's main process has ended."""

    @abstractmethod
    def kill(self) -> None:
        """Kill every process of the environment (idempotent)."""

    @abstractmethod
    def peak_memory_bytes(self) -> int:
        """Peak resident memory of the environment so far (0 if unknown)."""

    async def snapshot_ready(self) -> None:
        """SnapStart: wait until this snapshot environment can fork restored environments
        (its runtime has initialised and handed itself over); raises OSError if it cannot."""
        raise OSError("this environment is not a snapshot")

    def initialised(self, memory_mb: int) -> None:  # noqa: B027 - optional hook
        """The runtime finished its init phase: apply the steady-state CPU share."""

    def out_of_memory(self) -> bool:
        """True once the environment was killed for exceeding its memory limit."""
        return False


@dataclass(frozen=True)
class SandboxLayout:
    """Where things are as the environment sees them (None: the host's own paths)."""

    task_root: str | None = None  # the code directory (AWS: /var/task)
    runtime_dir: str | None = None  # the managed runtime's files (AWS: /var/runtime)
    runtime_api: str | None = None  # fixed Runtime API address, or None for a host port
    runtime_api_unix: str | None = None  # a Unix socket path for lambdad's own bootstraps


@dataclass(frozen=True)
class IsolationReport:
    backend: str
    features: Mapping[str, bool]
    notes: tuple[str, ...] = ()


class SandboxBackend(ABC):
    def layout(self) -> SandboxLayout:
        """How paths and the Runtime API look from inside this backend's environments."""
        return SandboxLayout()

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Bring up shared facilities (e.g. networking) before the first environment."""

    async def prepare(  # noqa: B027 - optional hook
        self, interpreter: str, preload: tuple[str, str] | None
    ) -> None:
        """Warm up whatever starting environments of this interpreter needs (optional)."""

    @abstractmethod
    async def start(self, spec: LaunchSpec) -> SandboxProcess:
        """Start one environment's process."""

    async def restore(self, snapshot: SandboxProcess, spec: LaunchSpec) -> SandboxProcess:
        """SnapStart: start an environment as a copy of `snapshot` (a process started with
        ``spec.snapshot`` whose runtime initialised), with `spec`'s variables and log."""
        raise OSError(f"{type(self).__name__} cannot restore snapshots")

    def warm_restores(  # noqa: B027 - optional hook
        self, snapshot: SandboxProcess, memory_mb: int, tmp_mb: int
    ) -> None:
        """SnapStart: prepare restored environments of `snapshot` ahead of need (optional)."""

    @abstractmethod
    def isolation(self) -> IsolationReport:
        """What this backend enforces, for start-up messages and `lambdad doctor`."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Stop helpers (zygotes); environments are stopped by their owners."""
