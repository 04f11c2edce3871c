"""Build lambdad's .NET (Mono) runtime and compile C# handler assemblies against it.

Everything is compiled with Mono's C# compiler ``mcs`` (Debian ``mono-mcs``) and runs on
``mono`` (Debian ``mono-runtime``); no NuGet, no .NET SDK. :func:`ensure_built` produces, in
``build/`` next to this file (git-ignored):

* ``Amazon.Lambda.Core.dll`` - API-compatible ``Amazon.Lambda.Core`` (ILambdaContext, ...);
* ``Amazon.Lambda.Serialization.SystemTextJson.dll`` - ``DefaultLambdaJsonSerializer`` and
  friends, plus the JSON engine;
* ``Amazon.Lambda.Serialization.Json.dll`` - the older ``JsonSerializer`` name;
* ``lambdad-dotnet-runtime.exe`` - the runtime host, started as
  ``mono <build>/lambdad-dotnet-runtime.exe`` (see :func:`launch_argv`).

:func:`compile_function` builds a handler DLL the way a user would::

    mcs -target:library -out:Function.dll -r:<build>/Amazon.Lambda.Core.dll \\
        -r:<build>/Amazon.Lambda.Serialization.SystemTextJson.dll Function.cs

Standard library only; safe to call from parallel test workers (a lock file serialises
builders, outputs are replaced atomically, and a stamp makes rebuilding idempotent).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

__all__ = [
    "BUILD_DIR",
    "CORE_DLL",
    "JSON_DLL",
    "RUNTIME_EXE",
    "SRC_DIR",
    "STJ_DLL",
    "BuildError",
    "compile_function",
    "ensure_built",
    "launch_argv",
    "toolchain_available",
]

HERE = Path(__file__).resolve().parent
SRC_DIR = HERE / "src"
BUILD_DIR = HERE / "build"

CORE_DLL = "Amazon.Lambda.Core.dll"
STJ_DLL = "Amazon.Lambda.Serialization.SystemTextJson.dll"
JSON_DLL = "Amazon.Lambda.Serialization.Json.dll"
RUNTIME_EXE = "lambdad-dotnet-runtime.exe"

_COMMON_FLAGS = ("-nologo", "-optimize+", "-debug-", "-warn:1")

# (output, target, source file, references among our outputs, framework references, flags)
_TARGETS: tuple[tuple[str, str, str, tuple[str, ...], tuple[str, ...], tuple[str, ...]], ...] = (
    (CORE_DLL, "library", "Amazon.Lambda.Core.cs", (), (), ()),
    (STJ_DLL, "library", "Amazon.Lambda.Serialization.SystemTextJson.cs", (CORE_DLL,), (), ()),
    (JSON_DLL, "library", "Amazon.Lambda.Serialization.Json.cs", (CORE_DLL, STJ_DLL), (), ()),
    # -unsafe: the Runtime API client calls libc's socket functions directly
    (RUNTIME_EXE, "exe", "LambdadRuntime.cs", (CORE_DLL, STJ_DLL), ("System.Core",), ("-unsafe",)),
)
_STAMP = ".build-stamp"


class BuildError(RuntimeError):
    """``mcs`` failed; the message carries its output."""


def toolchain_available() -> bool:
    """Whether both ``mcs`` and ``mono`` are on PATH."""
    return shutil.which("mcs") is not None and shutil.which("mono") is not None


def _mcs() -> str:
    mcs = shutil.which("mcs")
    if mcs is None:
        raise BuildError("mcs (Debian package mono-mcs) is not installed")
    return mcs


def _fingerprint(mcs: str) -> str:
    digest = hashlib.sha256()
    digest.update(repr((_TARGETS, _COMMON_FLAGS)).encode())
    digest.update(Path(mcs).resolve().as_posix().encode())
    with contextlib.suppress(OSError):
        digest.update(str(Path(mcs).resolve().stat().st_mtime_ns).encode())
    for _, _, source, *_ in _TARGETS:
        digest.update(source.encode())
        digest.update((SRC_DIR / source).read_bytes())
    return digest.hexdigest()


def _run_mcs(argv: list[str]) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BuildError(
            f"mcs failed ({proc.returncode}): {' '.join(argv)}\n{proc.stdout}{proc.stderr}".rstrip()
        )


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _is_current(build_dir: Path, stamp: str) -> bool:
    try:
        if (build_dir / _STAMP).read_text() != stamp:
            return False
    except OSError:
        return False
    return all((build_dir / out).is_file() for out, *_ in _TARGETS)


def ensure_built(build_dir: str | os.PathLike[str] | None = None) -> Path:
    """Compile the runtime and the API assemblies unless they are up to date.

    Returns the build directory (``lambdad/runtime/bootstraps/dotnet/build`` by default)
    holding :data:`RUNTIME_EXE` and the DLLs. Raises :class:`BuildError` if ``mcs`` is
    missing or fails.
    """
    out_dir = Path(build_dir) if build_dir is not None else BUILD_DIR
    mcs = _mcs()
    stamp = _fingerprint(mcs)
    if _is_current(out_dir, stamp):
        return out_dir
    with _locked(out_dir):
        if _is_current(out_dir, stamp):  # another process built it while we waited
            return out_dir
        with tempfile.TemporaryDirectory(prefix=".tmp-", dir=out_dir) as tmp_name:
            tmp = Path(tmp_name)
            for output, target, source, refs, framework, flags in _TARGETS:
                argv = [
                    mcs,
                    *_COMMON_FLAGS,
                    *flags,
                    f"-target:{target}",
                    f"-out:{tmp / output}",
                    *(f"-r:{tmp / ref}" for ref in refs),
                    *(f"-r:{name}" for name in framework),
                    str(SRC_DIR / source),
                ]
                _run_mcs(argv)
            (out_dir / _STAMP).unlink(missing_ok=True)
            for output, *_ in _TARGETS:
                os.replace(tmp / output, out_dir / output)
        (out_dir / _STAMP).write_text(stamp)
    return out_dir


def launch_argv(
    build_dir: str | os.PathLike[str] | None = None, *, debug: bool = True
) -> list[str]:
    """The command that starts the runtime (after :func:`ensure_built`).

    ``debug`` adds ``mono --debug``: stack traces then carry file names and line numbers
    when the function ships its debug symbols (``.pdb``/``.mdb``), as on AWS; it costs
    nothing measurable at start-up.
    """
    out_dir = Path(build_dir) if build_dir is not None else BUILD_DIR
    mono = shutil.which("mono") or "mono"
    return [mono, *(["--debug"] if debug else []), str(out_dir / RUNTIME_EXE)]


def compile_function(
    sources: Sequence[str | os.PathLike[str]],
    out_dll: str | os.PathLike[str],
    *,
    references: Sequence[str | os.PathLike[str]] = (),
    build_dir: str | os.PathLike[str] | None = None,
    debug: bool = True,
) -> Path:
    """Compile C# handler sources into a class library referencing our Lambda API DLLs.

    ``references`` may name further assemblies (paths, or framework names such as
    ``System.Core``, which is always added). The DLL's file name (without ``.dll``) is
    the assembly part of the handler string: ``_HANDLER=<Name>::<Namespace.Class>::<Method>``.
    ``debug`` also writes the debug symbols (``<out>.mdb``) for line numbers in traces.
    """
    out_dir = ensure_built(build_dir)
    out = Path(out_dll)
    out.parent.mkdir(parents=True, exist_ok=True)
    argv = [
        _mcs(),
        "-nologo",
        "-target:library",
        "-debug" if debug else "-debug-",
        f"-out:{out}",
        f"-r:{out_dir / CORE_DLL}",
        f"-r:{out_dir / STJ_DLL}",
        f"-r:{out_dir / JSON_DLL}",
        "-r:System.Core",
        *(f"-r:{ref}" for ref in references),
        *(str(source) for source in sources),
    ]
    _run_mcs(argv)
    return out


if __name__ == "__main__":
    import sys

    built = ensure_built(sys.argv[1] if len(sys.argv) > 1 else None)
    print(" ".join(launch_argv(built)))
