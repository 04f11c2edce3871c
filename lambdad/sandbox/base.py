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
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field


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
    # Module-level callable the zygote child runs after fork ("module:function").
    zygote_entry: str = "lambdad_bootstrap:main"
    extra: Mapping[str, str] = field(default_factory=dict)


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

    @abstractmethod
    async def wait(self) -> ExitStatus:
        """Wait until the environment's main process has ended."""

    @abstractmethod
    def kill(self) -> None:
        """Kill every process of the environment (idempotent)."""

    @abstractmethod
    def peak_memory_bytes(self) -> int:
        """Peak resident memory of the environment so far (0 if unknown)."""


@dataclass(frozen=True)
class IsolationReport:
    backend: str
    features: Mapping[str, bool]
    notes: tuple[str, ...] = ()


class SandboxBackend(ABC):
    @abstractmethod
    async def start(self, spec: LaunchSpec) -> SandboxProcess:
        """Start one environment's process."""

    @abstractmethod
    def isolation(self) -> IsolationReport:
        """What this backend enforces, for start-up messages and `lambdad doctor`."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Stop helpers (zygotes); environments are stopped by their owners."""
