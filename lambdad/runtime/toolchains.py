"""The managed runtimes that need building (Java, .NET, Node.js's addon): their build scripts,
loaded by path.

The scripts live beside their sources in `bootstraps/<language>/build.py` (package data that
also runs on its own); lambdad loads them here to build at set-up time and to compute launch
commands.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
from functools import cache
from types import ModuleType

from lambdad.runtime.runtimes import BOOTSTRAP_DIR

log = logging.getLogger(__name__)


@cache
def build_module(language: str) -> ModuleType:
    """`bootstraps/<language>/build.py` as a module (language: "java", "dotnet" or "node")."""
    path = BOOTSTRAP_DIR / language / "build.py"
    spec = importlib.util.spec_from_file_location(f"lambdad_build_{language}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def java_ready() -> bool:
    java = build_module("java")
    return bool(java.java_available()) and java.RUNTIME_JAR.is_file()


def dotnet_ready() -> bool:
    dotnet = build_module("dotnet")
    built = dotnet.BUILD_DIR / dotnet.RUNTIME_EXE
    return shutil.which("mono") is not None and built.is_file()


def build_all() -> dict[str, str]:
    """Build every runtime whose toolchain is present; language -> outcome."""
    outcomes: dict[str, str] = {}
    java = build_module("java")
    if java.java_available() and java.find_jackson():
        try:
            java.ensure_built()
            outcomes["java"] = "built"
        except Exception as exc:  # a build boundary: report, keep the others going
            outcomes["java"] = f"failed: {exc}"
    else:
        outcomes["java"] = "skipped: no JDK or no Jackson (libjackson2-databind-java)"
    dotnet = build_module("dotnet")
    if dotnet.toolchain_available():
        try:
            dotnet.ensure_built()
            outcomes["dotnet"] = "built"
        except Exception as exc:  # a build boundary: report, keep the others going
            outcomes["dotnet"] = f"failed: {exc}"
    else:
        outcomes["dotnet"] = "skipped: no mono/mcs"
    node = build_module("node")
    try:
        addon = node.ensure_built()
        outcomes["node addon"] = "built" if addon else "skipped: no C compiler or Node.js headers"
    except Exception as exc:  # a build boundary: report, keep the others going
        outcomes["node addon"] = f"failed: {exc}"
    from lambdad.sandbox import init_binary  # (the sandbox's, not a language's: built alike)

    init = init_binary.ensure_built()
    outcomes["sandbox init"] = f"built: {init.name}" if init else "skipped: no C compiler"
    loop = init_binary.ensure_fork_loop_built()
    outcomes["sandbox fork loop"] = f"built: {loop.name}" if loop else "skipped: no C compiler"
    return outcomes
