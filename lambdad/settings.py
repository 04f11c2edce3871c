"""The one frozen configuration object, built once by the composition root and handed down."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

DEFAULT_PORT = 9000
DEFAULT_REGION = "us-east-1"
DEFAULT_ACCOUNT_ID = "000000000000"


def default_data_dir(environ: dict[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if env.get("LAMBDAD_DATA_DIR"):
        return Path(env["LAMBDAD_DATA_DIR"])
    base = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "lambdad"


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    region: str = DEFAULT_REGION
    account_id: str = DEFAULT_ACCOUNT_ID
    # Idle execution environments are stopped after this many seconds without work.
    keep_alive_seconds: float = 300.0
    # How often the reaper looks for idle environments past their keep-alive.
    reap_interval_seconds: float = 1.0
    # Idle environments beyond this many are stopped, least recently used first.
    max_idle_environments: int = 1000
    # Below this much available host memory, idle environments are evicted (LRU).
    min_free_memory_mb: int = 256
    # Environments built ahead of a function's next cold start (staged: see
    # EnvironmentLauncher.stage), at most this many at once across all functions; 0: none.
    staged_environments: int = 64
    # ... and the memory they may use together (their peaks so far), in MB.
    staged_memory_mb: int = 512
    # Async (Event) invocations run by this many concurrent workers at most.
    async_workers: int = 64
    # Delays before retrying an Event invocation that failed (AWS: two retries).
    async_retry_delays: tuple[float, ...] = (60.0, 120.0)
    # Concurrency, per account: invocations running at once, and the share of it reservations
    # must leave to functions without one (AWS: 1,000 and 100).
    account_concurrency: int = 1000
    min_unreserved_concurrency: int = 100
    # Scaling rate, per function: at most `burst` new environments per `burst_window` seconds.
    burst: int = 1000
    burst_window_seconds: float = 10.0
    # Microseconds lambdad may busy-poll a warm environment for its answer while that is the
    # only invocation running (scheduler/answer_polling.py); 0 always sleeps until it comes.
    answer_polling_us: int = 200
    # Sandbox backend: "auto" (namespaces where the host allows, else processes),
    # "namespaces" (refuse to start without them) or "process" (no isolation).
    isolation: str = "auto"
    # Samepage merging of environments' memory (sandbox/memory_merge.py): "auto" (where the
    # host has KSM and lambdad is root), "on" (refuse to start without it) or "off".
    memory_merge: Literal["auto", "on", "off"] = "auto"
    # Host-backed memory kept for the pages starting environments write first
    # (sandbox/memory_reserve.py), in MB; None: auto (only where the host's free memory is
    # reported to a hypervisor).
    memory_reserve_mb: int | None = None
    # Development only: accept any well-formed SigV4 signature by any access key (unknown keys
    # act for the default account). Off by default; the serve banner warns when it is on.
    allow_any_credentials: bool = False
    # Interpreters and toolchains: runtime id -> executable, overriding discovery.
    runtime_overrides: dict[str, str] = field(default_factory=dict)

    @property
    def db_path(self) -> Path:
        return self.data_dir / "lambdad.sqlite3"

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"

    @property
    def code_dir(self) -> Path:
        return self.data_dir / "code"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def run_dir(self) -> Path:
        return self.data_dir / "run"

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"
