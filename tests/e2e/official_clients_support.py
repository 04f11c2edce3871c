"""Helpers for the official-runtime-client tests: cached installs, code trees, log tails.

The official clients are installed once per machine into a cache directory keyed by client
version and toolchain (``$LAMBDAD_TEST_CACHE``, default ``<tmp>/lambdad-test-cache``); an install
is built in a staging directory and renamed into place when complete, under a file lock, so
interrupted or parallel (xdist) sessions never see half an install.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

AWSLAMBDARIC_VERSION = "4.2.2"
NODE_RIC_VERSION = "4.0.2"
# AWS's limit on a directly uploaded (zipped) deployment package.
MAX_ZIP_BYTES = 52_428_800

_COMPLETE = ".lambdad-complete"


def cache_root() -> Path:
    root = os.environ.get("LAMBDAD_TEST_CACHE")
    return Path(root) if root else Path(tempfile.gettempdir()) / "lambdad-test-cache"


def cached_build(key: str, build: Callable[[Path], None]) -> Path:
    """The directory `build` fills for `key`, building it at most once per machine."""
    root = cache_root()
    target = root / key
    if (target / _COMPLETE).exists():
        return target
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / _COMPLETE).exists():
            return target
        staging = Path(tempfile.mkdtemp(prefix=f"{key}.staging-", dir=root))
        try:
            build(staging)
            (staging / _COMPLETE).touch()
            if target.exists():
                shutil.rmtree(target)
            staging.rename(target)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
    return target


def python_interpreter() -> str:
    """Absolute path of the real interpreter running the tests (not a venv symlink)."""
    return os.path.realpath(sys.executable)


def install_awslambdaric() -> Path:
    """`pip install --target` of awslambdaric for the test interpreter; the install dir."""
    interpreter = python_interpreter()
    tag = f"py{sys.version_info.major}{sys.version_info.minor}"

    def build(target: Path) -> None:
        run(
            [
                interpreter,
                "-m",
                "pip",
                "install",
                "--no-input",
                "--disable-pip-version-check",
                "--no-compile",
                "--target",
                str(target),
                f"awslambdaric=={AWSLAMBDARIC_VERSION}",
            ],
            what="pip install awslambdaric",
        )

    return cached_build(f"awslambdaric-{AWSLAMBDARIC_VERSION}-{tag}", build)


def missing_node_toolchain() -> str | None:
    """Why the Node RIC cannot be built here, or None."""
    for tool in ("node", "npm", "make"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (needed to build aws-lambda-ric's native addon)"
    if not any(shutil.which(cxx) for cxx in ("g++", "c++", "clang++")):
        return "no C++ compiler (g++/c++/clang++) to build aws-lambda-ric's native addon"
    return None


def node_major() -> str:
    out = subprocess.run(["node", "--version"], capture_output=True, text=True, check=True)
    return out.stdout.strip().lstrip("v").split(".", 1)[0]


def install_node_ric() -> Path:
    """`npm install aws-lambda-ric` (compiles aws-lambda-cpp and curl: minutes); its project
    directory, with node_modules/aws-lambda-ric/rapid-client.node built."""

    def build(target: Path) -> None:
        (target / "package.json").write_text(
            '{"name": "lambdad-ric-test", "version": "1.0.0", "private": true}\n'
        )
        run(
            [
                "npm",
                "install",
                "--no-audit",
                "--no-fund",
                "--omit=dev",
                "--loglevel=error",
                f"aws-lambda-ric@{NODE_RIC_VERSION}",
            ],
            what="npm install aws-lambda-ric",
            cwd=target,
            timeout=1200,
        )
        addon = target / "node_modules" / "aws-lambda-ric" / "rapid-client.node"
        if not addon.exists():
            raise RuntimeError(
                f"npm install did not build {addon} (were install scripts disabled?)"
            )

    return cached_build(f"aws-lambda-ric-{NODE_RIC_VERSION}-node{node_major()}", build)


def run(argv: list[str], *, what: str, cwd: Path | None = None, timeout: float = 600) -> None:
    proc = subprocess.run(
        argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"{what} failed with status {proc.returncode}:\n{proc.stdout[-4000:]}\n"
            f"{proc.stderr[-4000:]}"
        )


def tree_files(
    root: Path,
    prefix: str,
    *,
    skip_dirs: Iterable[str] = ("__pycache__",),
    skip_suffixes: Iterable[str] = (),
) -> tuple[dict[str, bytes], dict[str, int]]:
    """Files under `root` as ZIP entries named `prefix/...`, with their permission bits."""
    skipped_dirs = set(skip_dirs)
    suffixes = tuple(skip_suffixes)
    files: dict[str, bytes] = {}
    modes: dict[str, int] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in skipped_dirs)
        for filename in sorted(filenames):
            if filename == _COMPLETE or (suffixes and filename.endswith(suffixes)):
                continue
            path = Path(dirpath) / filename
            if path.is_symlink() or not path.is_file():
                continue
            name = f"{prefix}/{path.relative_to(root).as_posix()}".lstrip("/")
            files[name] = path.read_bytes()
            modes[name] = path.stat().st_mode & 0o777
    return files, modes


def decode_tail(log_result: str) -> str:
    return base64.b64decode(log_result).decode("utf-8", "replace")


def report_request_id(tail: str) -> str:
    """The RequestId of the REPORT line in a log tail."""
    match = re.search(r"^REPORT RequestId: (\S+)\t", tail, re.MULTILINE)
    assert match, f"no REPORT line in the log tail:\n{tail}"
    return match.group(1)


def client_context(custom: dict[str, str], env: dict[str, str] | None = None) -> str:
    """`ClientContext` as the Invoke API takes it: base64 of the JSON document."""
    document: dict[str, object] = {"custom": custom}
    if env is not None:
        document["env"] = env
    return base64.b64encode(json.dumps(document).encode()).decode()
