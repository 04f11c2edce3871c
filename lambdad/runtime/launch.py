"""What an execution environment of a function is started with: argv, cwd and AWS's variables."""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lambdad.control.logging_config import DEFAULT_LEVEL, LogFormat
from lambdad.control.model import FunctionConfig
from lambdad.runtime.runtimes import (
    BOOTSTRAP_DIR,
    NODE_BOOTSTRAP,
    PYTHON_BOOTSTRAP,
    PYTHON_PRELOAD,
    Family,
    RuntimeSpec,
)
from lambdad.runtime.toolchains import build_module
from lambdad.sandbox.base import LaunchSpec, SandboxLayout

SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"
_PYTHON_BOOTSTRAP_NAME = PYTHON_BOOTSTRAP.name
EXEC_WRAPPER = "AWS_LAMBDA_EXEC_WRAPPER"
# Runtimes AWS starts through AWS_LAMBDA_EXEC_WRAPPER (not custom runtimes).
MANAGED = frozenset({Family.PYTHON, Family.NODEJS, Family.RUBY, Family.JAVA, Family.DOTNET})
# Variables the function may not set (AWS's reserved keys), besides everything we set ourselves.
RESERVED_KEYS = frozenset(
    {
        "_HANDLER",
        "_X_AMZN_TRACE_ID",
        "AWS_DEFAULT_REGION",
        "AWS_REGION",
        "AWS_EXECUTION_ENV",
        "AWS_LAMBDA_FUNCTION_NAME",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
        "AWS_LAMBDA_FUNCTION_VERSION",
        "AWS_LAMBDA_INITIALIZATION_TYPE",
        "AWS_LAMBDA_LOG_GROUP_NAME",
        "AWS_LAMBDA_LOG_STREAM_NAME",
        "AWS_ACCESS_KEY",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_LAMBDA_RUNTIME_API",
        "LAMBDA_TASK_ROOT",
        "LAMBDA_RUNTIME_DIR",
    }
)


@dataclass(frozen=True)
class SessionCredentials:
    """Temporary credentials handed to one environment (AWS: the execution role's session)."""

    access_key_id: str
    secret_access_key: str
    session_token: str

    @classmethod
    def generate(cls) -> SessionCredentials:
        """AWS's shapes: ASIA + 16 of [A-Z2-7], a 40-character secret, a long token (one
        random read and C-level encoding: this runs for every environment started)."""
        raw = os.urandom(16 + 30 + 96)
        key = "ASIA" + raw[:16].translate(_KEY_ALPHABET).decode()
        secret = base64.urlsafe_b64encode(raw[16:46]).decode()
        return cls(key, secret, base64.urlsafe_b64encode(raw[46:]).decode().rstrip("="))


# A random byte -> one of AWS's access key characters (256 is a multiple of 32: uniform).
_KEY_ALPHABET = bytes(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"[i % 32] for i in range(256))


@dataclass(frozen=True)
class EnvironmentPlan:
    """Everything needed to start one environment, apart from its log fd."""

    config: FunctionConfig
    runtime: RuntimeSpec
    code_dir: Path
    runtime_api: str
    log_stream: str
    initialization_type: str = "on-demand"
    layout: SandboxLayout = field(default_factory=SandboxLayout)
    opt_dir: Path | None = None  # the function's layers, merged (AWS: /opt)

    @property
    def task_root(self) -> str:
        """The code directory as the environment sees it."""
        return self.layout.task_root or str(self.code_dir)

    @property
    def runtime_dir(self) -> str:
        """The bootstraps directory as the environment sees it."""
        return self.layout.runtime_dir or str(BOOTSTRAP_DIR)


def environment_variables(plan: EnvironmentPlan, creds: SessionCredentials) -> dict[str, str]:
    cfg, rt = plan.config, plan.runtime
    task_root = plan.task_root
    env: dict[str, str] = {
        "PATH": f"{SYSTEM_PATH}:/opt/bin",
        "LD_LIBRARY_PATH": "/lib64:/usr/lib64:/var/runtime:/var/runtime/lib:/var/task:"
        "/var/task/lib:/opt/lib",
        "LANG": "en_US.UTF-8",
        "TZ": ":UTC",
    }
    env.update(cfg.environment)
    env.update(
        {
            "_HANDLER": cfg.handler,
            "AWS_REGION": cfg.region,
            "AWS_DEFAULT_REGION": cfg.region,
            "AWS_LAMBDA_FUNCTION_NAME": cfg.name,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(cfg.memory_size),
            "AWS_LAMBDA_FUNCTION_VERSION": cfg.version,
            "AWS_LAMBDA_INITIALIZATION_TYPE": plan.initialization_type,
            "AWS_LAMBDA_LOG_GROUP_NAME": cfg.log_group,
            "AWS_LAMBDA_LOG_STREAM_NAME": plan.log_stream,
            "AWS_ACCESS_KEY_ID": creds.access_key_id,
            "AWS_ACCESS_KEY": creds.access_key_id,
            "AWS_SECRET_ACCESS_KEY": creds.secret_access_key,
            "AWS_SESSION_TOKEN": creds.session_token,
            "AWS_LAMBDA_RUNTIME_API": plan.runtime_api,
            "LAMBDA_TASK_ROOT": task_root,
            "LAMBDA_RUNTIME_DIR": plan.runtime_dir,
            "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR",
        }
    )
    if cfg.log_format == LogFormat.JSON:  # AWS sets neither for Text
        env["AWS_LAMBDA_LOG_FORMAT"] = "JSON"
        env["AWS_LAMBDA_LOG_LEVEL"] = cfg.application_log_level or DEFAULT_LEVEL
    if plan.initialization_type == "snap-start":
        # AWS: "not available in Lambda SnapStart functions" (the snapshot is shared by many).
        del env["AWS_LAMBDA_LOG_GROUP_NAME"], env["AWS_LAMBDA_LOG_STREAM_NAME"]
    if plan.layout.runtime_api_unix and rt.family is Family.PYTHON:
        # lambdad's Python bootstrap prefers it to loopback TCP (and takes it out of its
        # environment: the function does not see it)
        env["LAMBDAD_RUNTIME_API_SOCKET"] = plan.layout.runtime_api_unix
    if rt.execution_env:
        env["AWS_EXECUTION_ENV"] = rt.execution_env
    if rt.family is Family.PYTHON:
        env["PYTHONUNBUFFERED"] = "1"
    if rt.family is Family.RUBY:
        declared = rt.runtime_id.removeprefix("ruby")
        env["GEM_PATH"] = (
            f"{task_root}/vendor/bundle/ruby/{declared}.0:/opt/ruby/gems/{declared}.0:"
            f"/opt/ruby/gems/{_ruby_abi()}:"
        )
        env["RUBYLIB"] = f"{task_root}:{plan.runtime_dir}/ruby/lib:/opt/ruby/lib"
    if rt.family is Family.NODEJS:
        env["NODE_PATH"] = (
            f"/opt/nodejs/node{rt.version}/node_modules:/opt/nodejs/node_modules:"
            f"/var/runtime/node_modules:/var/runtime:/var/task:{task_root}"
        )
    return env


def launch_spec(
    plan: EnvironmentPlan,
    log_fd: int,
    creds: SessionCredentials,
    *,
    snapshot: bool = False,
    staged: bool = False,
) -> LaunchSpec:
    """How to start the environment; `snapshot`: it becomes a SnapStart snapshot; `staged`:
    lambdad's Python bootstrap sets up, then waits for its first event before init."""
    env = environment_variables(plan, creds)
    if staged and plan.runtime.family is not Family.JAVA:
        # (the bootstrap takes it out of its environment; a JVM could not, and lambdad's Java
        # client asks to wait in every environment instead: answered at once where not staged)
        env["LAMBDAD_STAGED"] = "1"
    rt = plan.runtime
    argv = _exec_argv(plan)
    zygote: dict[str, Any] = {}
    if rt.family is Family.PYTHON:
        # Forked from the interpreter's zygote, which has the bootstrap loaded already.
        zygote = {
            "zygote_interpreter": rt.executable,
            "zygote_preload": PYTHON_PRELOAD,
        }
    wrapper = plan.config.environment.get(EXEC_WRAPPER)
    if wrapper and rt.family in MANAGED:
        # AWS starts a managed runtime through the wrapper script when this is set.
        argv = (wrapper, *argv)
        zygote["exec_argv"] = True
    return LaunchSpec(
        argv=argv,
        env=env,
        cwd=plan.task_root,
        log_fd=log_fd,
        memory_mb=plan.config.memory_size,
        code_dir=str(plan.code_dir),
        tmp_mb=plan.config.ephemeral_storage,
        opt_dir=str(plan.opt_dir or ""),
        snapshot=snapshot,
        **zygote,
    )


def has_bootstrap(code_dir: Path, opt_dir: Path | None = None) -> bool:
    """Whether a custom runtime's `bootstrap` exists: in the code, else in a layer (/opt)."""
    return (code_dir / "bootstrap").exists() or (
        opt_dir is not None and (opt_dir / "bootstrap").exists()
    )


def _exec_argv(plan: EnvironmentPlan) -> tuple[str, ...]:
    """The command that starts the runtime (Python's is used only with an exec wrapper)."""
    rt, runtime_dir = plan.runtime, plan.runtime_dir
    if rt.family is Family.PYTHON:
        assert rt.executable is not None
        return (rt.executable, "-u", f"{runtime_dir}/python/{_PYTHON_BOOTSTRAP_NAME}")
    if rt.family is Family.NODEJS:
        assert rt.executable is not None
        return (rt.executable, f"{runtime_dir}/{NODE_BOOTSTRAP.relative_to(BOOTSTRAP_DIR)}")
    if rt.family is Family.RUBY:
        assert rt.executable is not None
        return (rt.executable, f"{runtime_dir}/ruby/bootstrap.rb")
    if rt.family is Family.JAVA:
        java = build_module("java")
        # Inside a sandbox the classpath is under /var/runtime, which the class-data-sharing
        # archive (recorded with host paths) does not match: the JVM then starts without it.
        command = java.launch_command(
            plan.config.memory_size, java=rt.executable, runtime_dir=runtime_dir
        )
        return tuple(str(part) for part in command)
    if rt.family is Family.DOTNET:
        assert rt.executable is not None
        dotnet = build_module("dotnet")
        return (rt.executable, "--debug", f"{runtime_dir}/dotnet/build/{dotnet.RUNTIME_EXE}")
    if rt.family is Family.GO:
        return (f"{plan.task_root}/{plan.config.handler}",)
    if not (plan.code_dir / "bootstrap").exists() and plan.opt_dir is not None:
        return ("/opt/bootstrap",)  # from a layer
    return (f"{plan.task_root}/bootstrap",)


def _ruby_abi() -> str:
    """The gem directory version of the installed Ruby (Debian 12: 3.1.0)."""
    gems = Path("/usr/lib/ruby/gems")
    found = sorted(p.name for p in gems.iterdir()) if gems.is_dir() else []
    return found[-1] if found else "3.1.0"
