"""What an execution environment of a function is started with: argv, cwd and AWS's variables."""

from __future__ import annotations

import os
import secrets
import string
from dataclasses import dataclass
from pathlib import Path

from lambdad.control.model import FunctionConfig
from lambdad.runtime.runtimes import NODE_BOOTSTRAP, PYTHON_BOOTSTRAP, Family, RuntimeSpec
from lambdad.sandbox.base import LaunchSpec

SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"
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
        alphabet = string.ascii_uppercase + string.digits
        key = "ASIA" + "".join(secrets.choice(alphabet) for _ in range(16))
        return cls(key, secrets.token_urlsafe(30)[:40], secrets.token_urlsafe(96))


@dataclass(frozen=True)
class EnvironmentPlan:
    """Everything needed to start one environment, apart from its log fd."""

    config: FunctionConfig
    runtime: RuntimeSpec
    code_dir: Path
    runtime_api: str
    log_stream: str
    initialization_type: str = "on-demand"


def environment_variables(plan: EnvironmentPlan, creds: SessionCredentials) -> dict[str, str]:
    cfg, rt = plan.config, plan.runtime
    task_root = str(plan.code_dir)
    env: dict[str, str] = {
        "PATH": f"{SYSTEM_PATH}:/opt/bin",
        "LD_LIBRARY_PATH": "/lib64:/usr/lib64:/var/runtime:/var/runtime/lib:/var/task:"
        "/var/task/lib:/opt/lib",
        "LANG": "en_US.UTF-8",
        "TZ": ":UTC",
        "HOME": os.environ.get("HOME", "/root") if rt.family is Family.PROVIDED else task_root,
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
            "LAMBDA_RUNTIME_DIR": str(PYTHON_BOOTSTRAP.parent.parent),
            "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR",
        }
    )
    if rt.execution_env:
        env["AWS_EXECUTION_ENV"] = rt.execution_env
    if rt.family is Family.PYTHON:
        env["PYTHONUNBUFFERED"] = "1"
    if rt.family is Family.NODEJS:
        env["NODE_PATH"] = (
            f"/opt/nodejs/node{rt.version}/node_modules:/opt/nodejs/node_modules:"
            f"/var/runtime/node_modules:/var/runtime:/var/task:{task_root}"
        )
    return env


def launch_spec(plan: EnvironmentPlan, log_fd: int, creds: SessionCredentials) -> LaunchSpec:
    env = environment_variables(plan, creds)
    cwd = str(plan.code_dir)
    rt = plan.runtime
    if rt.family is Family.PYTHON:
        assert rt.executable is not None
        return LaunchSpec(
            argv=(rt.executable, "-u", str(PYTHON_BOOTSTRAP)),
            env=env,
            cwd=cwd,
            log_fd=log_fd,
            memory_mb=plan.config.memory_size,
            zygote_interpreter=rt.executable,
        )
    if rt.family is Family.NODEJS:
        assert rt.executable is not None
        return LaunchSpec(
            argv=(rt.executable, str(NODE_BOOTSTRAP)),
            env=env,
            cwd=cwd,
            log_fd=log_fd,
            memory_mb=plan.config.memory_size,
        )
    return LaunchSpec(
        argv=(provided_bootstrap(plan.code_dir),),
        env=env,
        cwd=cwd,
        log_fd=log_fd,
        memory_mb=plan.config.memory_size,
    )


def provided_bootstrap(code_dir: Path) -> str:
    """`bootstrap` from the function's code, else from /opt (layers), as AWS looks for it."""
    for candidate in (code_dir / "bootstrap", Path("/opt/bootstrap")):
        if candidate.exists():
            return str(candidate)
    return str(code_dir / "bootstrap")
