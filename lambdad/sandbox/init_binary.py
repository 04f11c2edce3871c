"""The sandboxes' compiled programs, each built once per source version: the environments'
PID-1 program (guest/lambdad_init.c) and the sandbox zygote's fork loop
(guest/lambdad_forkloop.c, a shared object its Python loads).

Built into guest/build/ (like the Java and .NET runtimes' builds) by `lambdad build-runtimes`,
or on first use. Without a C compiler lambdad keeps its Python init (a forked interpreter, about
1 MB more private memory per environment) and the zygote's Python loop (~155 copy-on-write
page faults per fork in a burst, against a few).
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
FORK_LOOP_SOURCE = SOURCE.parent / "lambdad_forkloop.c"
BUILD_DIR = SOURCE.parent / "build"
FREESTANDING = [
    "-static",
    "-nostdlib",
    "-ffreestanding",
    "-fno-stack-protector",
    "-fno-tree-loop-distribute-patterns",  # its memset/memcpy must not call themselves
    "-DLAMBDAD_FREESTANDING",
]


def built_path() -> Path:
    return _target(SOURCE, "lambdad-init-{}")


def ensure_built() -> Path | None:
    """The compiled init (compiling it now if needed), or None without a C compiler (or
    with LAMBDAD_COMPILED_INIT=off in the environment: the fallback, exercised by the tests)."""
    if os.environ.get("LAMBDAD_COMPILED_INIT") == "off":
        log.info("LAMBDAD_COMPILED_INIT=off: environments keep a Python init process")
        return None
    return _build(
        SOURCE,
        built_path(),
        # x86-64: no C library at all (see the source); elsewhere static, else as it can
        [FREESTANDING, ["-static"], []],
        "environments keep a Python init",
    )


def ensure_fork_loop_built() -> Path | None:
    """The compiled fork loop (a shared object), or None without a C compiler (or with
    LAMBDAD_COMPILED_FORK_LOOP=off: the zygote's Python loop, exercised by the tests)."""
    if os.environ.get("LAMBDAD_COMPILED_FORK_LOOP") == "off":
        log.info("LAMBDAD_COMPILED_FORK_LOOP=off: sandbox zygotes keep their Python loop")
        return None
    target = _target(FORK_LOOP_SOURCE, "lambdad-forkloop-{}.so")
    return _build(
        FORK_LOOP_SOURCE, target, [["-shared", "-fPIC"]], "sandbox zygotes keep their Python loop"
    )


def _target(source: Path, pattern: str) -> Path:
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:12]
    return BUILD_DIR / pattern.format(digest)


def _build(source: Path, target: Path, variants: list[list[str]], fallback: str) -> Path | None:
    """`target` compiled from `source` with the first of `variants` (extra flags) that builds."""
    if target.is_file():
        return target
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        log.info("no C compiler: %s", fallback)
        return None
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=BUILD_DIR) as tmp:
        output = Path(tmp) / target.name
        for flags in variants:
            done = subprocess.run(
                [compiler, "-O2", "-Wall", *flags, "-o", str(output), str(source)],
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode == 0:
                os.replace(output, target)  # atomic: concurrent builders agree
                return target
        log.warning("building %s failed: %s", source.name, done.stderr.strip()[-500:])
    return None
