"""Build the Node.js bootstrap's addon (lambdad_env.c, N-API) into ``build/lambdad_env.node``.

The bootstrap loads it to set ``_X_AMZN_TRACE_ID`` per invocation without glibc's setenv
keeping every old value (see the C source); without it (no C compiler, no Node.js headers) the
bootstrap assigns ``process.env`` as before. A stamp beside the addon names the source's digest,
so an edited source is rebuilt; the addon is replaced atomically (parallel builders agree).
Standard library only.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

__all__ = ["ADDON", "SOURCE", "ensure_built", "headers_dir"]

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "lambdad_env.c"
BUILD_DIR = HERE / "build"
ADDON = BUILD_DIR / "lambdad_env.node"
STAMP = BUILD_DIR / "lambdad_env.sha256"


def headers_dir(node: str | None = None) -> Path | None:
    """Where node_api.h is: <prefix>/include/node beside the node executable."""
    executable = node or shutil.which("node")
    if executable is None:
        return None
    prefix = Path(os.path.realpath(executable)).parent.parent
    for candidate in (prefix / "include" / "node", Path("/usr/include/node")):
        if (candidate / "node_api.h").is_file():
            return candidate
    return None


def _digest() -> str:
    return hashlib.sha256(SOURCE.read_bytes()).hexdigest()


def ensure_built() -> Path | None:
    """The addon, compiled now if missing or stale; None without a compiler or headers."""
    digest = _digest()
    if ADDON.is_file() and STAMP.is_file() and STAMP.read_text().strip() == digest:
        return ADDON
    compiler = shutil.which("cc") or shutil.which("gcc")
    headers = headers_dir()
    if compiler is None or headers is None:
        return None
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=BUILD_DIR) as tmp:
        output = Path(tmp) / ADDON.name
        done = subprocess.run(
            [
                compiler,
                "-O2",
                "-Wall",
                "-shared",
                "-fPIC",
                f"-I{headers}",
                "-o",
                str(output),
                str(SOURCE),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"building {SOURCE.name} failed: {done.stderr.strip()[-500:]}")
        stamp = Path(tmp) / STAMP.name
        stamp.write_text(digest + "\n")
        os.replace(output, ADDON)  # atomic: concurrent builders agree
        os.replace(stamp, STAMP)
    return ADDON


if __name__ == "__main__":
    print(ensure_built() or "not built: no C compiler or no Node.js headers")
