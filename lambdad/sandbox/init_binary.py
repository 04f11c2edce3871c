"""The environments' PID-1 program (guest/lambdad_init.c), compiled once per source version.

Built into guest/build/ (like the Java and .NET runtimes' builds) by `lambdad build-runtimes`,
or on first use; without a C compiler lambdad keeps its Python init (a forked interpreter, about
1 MB more private memory per environment).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

SOURCE = Path(__file__).resolve().parent / "guest" / "lambdad_init.c"
BUILD_DIR = SOURCE.parent / "build"


def built_path() -> Path:
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:12]
    return BUILD_DIR / f"lambdad-init-{digest}"


def ensure_built() -> Path | None:
    """The compiled program (compiling it now if needed), or None without a C compiler (or
    with LAMBDAD_COMPILED_INIT=off in the environment: the fallback, exercised by the tests)."""
    if os.environ.get("LAMBDAD_COMPILED_INIT") == "off":
        log.info("LAMBDAD_COMPILED_INIT=off: environments keep a Python init process")
        return None
    target = built_path()
    if target.is_file():
        return target
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        log.info("no C compiler: environments keep a Python init process")
        return None
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=BUILD_DIR) as tmp:
        output = Path(tmp) / target.name
        for static in (["-static"], []):  # static: no dynamic loader pages at all
            done = subprocess.run(
                [compiler, "-O2", "-Wall", *static, "-o", str(output), str(SOURCE)],
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode == 0:
                os.replace(output, target)  # atomic: concurrent builders agree
                return target
        log.warning("building %s failed: %s", SOURCE.name, done.stderr.strip()[-500:])
    return None
