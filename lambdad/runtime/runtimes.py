"""Runtime identifiers, what the machine has for each, and how an environment of each starts."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from lambdad.errors import InvalidParameterValueException

BOOTSTRAP_DIR = Path(__file__).resolve().parent / "bootstraps"
PYTHON_BOOTSTRAP = BOOTSTRAP_DIR / "python" / "lambdad_bootstrap.py"
# What a Python zygote imports before forking: (its directory, the module)
PYTHON_PRELOAD = (str(PYTHON_BOOTSTRAP.parent), PYTHON_BOOTSTRAP.stem)
NODE_BOOTSTRAP = BOOTSTRAP_DIR / "node" / "bootstrap.mjs"


class Family(StrEnum):
    PYTHON = "python"  # our bootstrap, forked from a per-interpreter zygote
    NODEJS = "nodejs"  # our bootstrap, exec'd under node
    RUBY = "ruby"  # our bootstrap, exec'd under ruby
    JAVA = "java"  # our runtime client + AWS-compatible API jar, on the machine's JDK
    DOTNET = "dotnet"  # our runtime host + Amazon.Lambda.Core-compatible assemblies, on Mono
    GO = "go"  # legacy go1.x: the handler names the function's executable
    PROVIDED = "provided"  # the function's own `bootstrap` executable


# Runtimes AWS no longer accepts for create/update (its InvalidParameterValueException wording).
DEPRECATED = frozenset(
    {
        "python2.7",
        "python3.6",
        "python3.7",
        "python3.8",
        "python3.9",
        "nodejs",
        "nodejs4.3",
        "nodejs4.3-edge",
        "nodejs6.10",
        "nodejs8.10",
        "nodejs10.x",
        "nodejs12.x",
        "nodejs14.x",
        "nodejs16.x",
        "java8",
        "java11",
        "ruby2.5",
        "ruby2.7",
        "dotnetcore1.0",
        "dotnetcore2.0",
        "dotnetcore2.1",
        "dotnetcore3.1",
        "dotnet6",
        "provided",
    }
)

PYTHON_RUNTIMES = ("python3.10", "python3.11", "python3.12", "python3.13")
NODE_RUNTIMES = ("nodejs18.x", "nodejs20.x", "nodejs22.x")
PROVIDED_RUNTIMES = ("provided.al2", "provided.al2023")
RUBY_RUNTIMES = ("ruby3.2", "ruby3.3", "ruby3.4")
JAVA_RUNTIMES = ("java17", "java21")
DOTNET_RUNTIMES = ("dotnet8",)
GO_RUNTIMES = ("go1.x",)


@dataclass(frozen=True)
class RuntimeSpec:
    runtime_id: str
    family: Family
    executable: str | None  # interpreter; None for provided runtimes
    version: str = ""  # interpreter version as reported (e.g. "3.12" or "20")

    @property
    def execution_env(self) -> str | None:
        """AWS_EXECUTION_ENV (absent on provided runtimes)."""
        if self.family in (Family.PROVIDED, Family.GO):
            return None
        return f"AWS_Lambda_{self.runtime_id}"


class RuntimeCatalog:
    """The runtimes this machine can run, discovered once at start-up."""

    def __init__(self, specs: Mapping[str, RuntimeSpec]) -> None:
        self._specs = dict(specs)

    @classmethod
    def discover(cls, overrides: Mapping[str, str] | None = None) -> RuntimeCatalog:
        overrides = overrides or {}
        specs: dict[str, RuntimeSpec] = {}
        for runtime_id in PYTHON_RUNTIMES:
            exe = overrides.get(runtime_id) or find_python(runtime_id.removeprefix("python"))
            if exe:
                specs[runtime_id] = RuntimeSpec(
                    runtime_id, Family.PYTHON, exe, runtime_id.removeprefix("python")
                )
        node = overrides.get("nodejs") or shutil.which("node")
        major = node_major(node) if node else None
        if node and major:
            for runtime_id in NODE_RUNTIMES:
                specs[runtime_id] = RuntimeSpec(
                    runtime_id, Family.NODEJS, overrides.get(runtime_id, node), major
                )
        for runtime_id in PROVIDED_RUNTIMES:
            specs[runtime_id] = RuntimeSpec(runtime_id, Family.PROVIDED, None)
        for runtime_id in GO_RUNTIMES:
            specs[runtime_id] = RuntimeSpec(runtime_id, Family.GO, None)
        specs.update(_toolchain_runtimes(overrides))
        return cls(specs)

    def available(self) -> list[RuntimeSpec]:
        return list(self._specs.values())

    def require(self, runtime_id: str) -> RuntimeSpec:
        """The spec for a runtime a function may be created with, or AWS's refusal."""
        if runtime_id in DEPRECATED:
            raise InvalidParameterValueException(
                f"The runtime parameter of {runtime_id} is no longer supported for creating or "
                "updating AWS Lambda functions. We recommend you use a supported runtime while "
                "creating or updating functions."
            )
        spec = self._specs.get(runtime_id)
        if spec is None:
            raise InvalidParameterValueException(
                f"The runtime parameter of {runtime_id} is not supported by this lambdad host "
                "(its toolchain is not installed; see `lambdad doctor`). We recommend you use a "
                "supported runtime while creating or updating functions."
            )
        return spec

    def get(self, runtime_id: str) -> RuntimeSpec | None:
        return self._specs.get(runtime_id)


def find_python(version: str) -> str | None:
    """A real `pythonX.Y` executable: PATH first (skipping pyenv shims), then pyenv versions."""
    name = f"python{version}"
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        if not directory or "shims" in Path(directory).parts:
            continue
        candidate = Path(directory) / name
        if os.access(candidate, os.X_OK):
            return str(candidate)
    pyenv_root = Path(os.environ.get("PYENV_ROOT", str(Path.home() / ".pyenv")))
    matches = sorted(
        pyenv_root.glob(f"versions/{version}.*/bin/{name}"),
        key=lambda p: [int(x) for x in re.findall(r"\d+", p.parent.parent.name)],
    )
    for candidate in reversed(matches):
        if os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def node_major(node: str) -> str | None:
    try:
        out = subprocess.run(
            [node, "--version"], capture_output=True, text=True, timeout=10, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.match(r"v(\d+)", out.strip())
    return match.group(1) if match else None


def _toolchain_runtimes(overrides: Mapping[str, str]) -> dict[str, RuntimeSpec]:
    """Ruby, Java and .NET runtimes, where the machine has (and has built) what they need."""
    from lambdad.runtime import toolchains

    specs: dict[str, RuntimeSpec] = {}
    ruby = overrides.get("ruby") or shutil.which("ruby")
    if ruby:
        for runtime_id in RUBY_RUNTIMES:
            specs[runtime_id] = RuntimeSpec(runtime_id, Family.RUBY, ruby)
    java = overrides.get("java") or shutil.which("java")
    if java and toolchains.java_ready():
        for runtime_id in JAVA_RUNTIMES:
            specs[runtime_id] = RuntimeSpec(runtime_id, Family.JAVA, java)
    mono = overrides.get("mono") or shutil.which("mono")
    if mono and toolchains.dotnet_ready():
        for runtime_id in DOTNET_RUNTIMES:
            specs[runtime_id] = RuntimeSpec(runtime_id, Family.DOTNET, mono)
    return specs
