"""Build lambdad's Java runtime (managed runtimes java17 and java21) with the machine's JDK.

``ensure_built()`` compiles ``src/`` (the ``com.amazonaws.services.lambda.runtime`` API types and
the ``lambdad.runtime.Bootstrap`` runtime client) with ``javac --release 17`` into
``build/lambdad-java-runtime.jar``, copies Debian's Jackson jars (``libjackson2-databind-java``:
jackson-databind, jackson-core, jackson-annotations from /usr/share/java) into ``build/lib/``,
and records an application class-data-sharing archive (``build/lambdad-java-runtime.jsa``) from
a training run, which roughly halves the JVM's start-up. It does nothing when all that is up to
date (sources, Jackson jars and ``java -version`` unchanged), and is safe to call from several
processes at once. It returns the classpath an environment must be started with.

Start an environment with ``launch_command(memory_mb)`` (or ``java`` + ``jvm_options(memory_mb)``
+ ``-cp`` + ``classpath()`` + ``lambdad.runtime.Bootstrap``), with cwd = LAMBDA_TASK_ROOT and
AWS's reserved variables set. When the bootstraps directory is seen at another path inside the
sandbox (``/var/runtime``), pass that path as ``runtime_dir``: the jars and the archive are all
under ``build/``, so only that prefix changes.

Run ``python build.py`` to build and print the classpath (``--command MB`` prints a whole
launch command, ``--force`` rebuilds, ``--no-cds`` skips the archive).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

__all__ = [
    "BUILD_DIR",
    "CDS_ARCHIVE",
    "JACKSON_JARS",
    "MAIN_CLASS",
    "RUNTIME_JAR",
    "BuildError",
    "classpath",
    "ensure_built",
    "find_jackson",
    "java_available",
    "jvm_options",
    "launch_command",
]

HERE = Path(__file__).resolve().parent
BOOTSTRAPS_DIR = HERE.parent  # what the sandbox mounts as the runtime dir
SRC_DIR = HERE / "src"
BUILD_DIR = HERE / "build"
RUNTIME_JAR = BUILD_DIR / "lambdad-java-runtime.jar"
LIB_DIR = BUILD_DIR / "lib"
CDS_ARCHIVE = BUILD_DIR / "lambdad-java-runtime.jsa"
STAMP = BUILD_DIR / "stamp.json"
LOCK = BUILD_DIR / ".lock"
MAIN_CLASS = "lambdad.runtime.Bootstrap"
JACKSON_JARS = ("jackson-databind", "jackson-core", "jackson-annotations")
JACKSON_DIRS = ("/usr/share/java",)
BUILD_VERSION = 3  # bump to force a rebuild after changing how things are built

# Fast start for short-lived, small-heap JVMs: C1 only (AWS's java17+ default), the serial
# collector, class data sharing. AWS sizes heap, metaspace and code cache as 85%, 10% and 5%
# of the function's memory.
BASE_JVM_OPTIONS = (
    "-XX:+UseSerialGC",
    "-XX:+TieredCompilation",
    "-XX:TieredStopAtLevel=1",
    "-Xshare:auto",
    "-XX:-UsePerfData",
    "-Djava.net.preferIPv4Stack=true",
)
MIN_METASPACE_MB = 48  # Jackson plus a small function needs ~25 MB of class metadata


class BuildError(RuntimeError):
    """The JDK or Jackson is missing, or javac failed."""


def java_available() -> bool:
    """Whether this machine has the JDK tools the Java runtime needs."""
    return shutil.which("java") is not None and shutil.which("javac") is not None


def find_jackson(dirs: Sequence[str | os.PathLike[str]] = JACKSON_DIRS) -> list[Path]:
    """The jackson-databind, -core and -annotations jars (Debian's unversioned names first)."""
    found: list[Path] = []
    for name in JACKSON_JARS:
        jar = None
        for d in dirs:
            base = Path(d)
            plain = base / f"{name}.jar"
            if plain.is_file():
                jar = plain
                break
            versioned = sorted(base.glob(f"{name}-2.*.jar"))
            if versioned:
                jar = versioned[-1]
                break
        if jar is None:
            raise BuildError(
                f"{name}.jar not found in {', '.join(map(str, dirs))}: "
                "install Debian's libjackson2-databind-java"
            )
        found.append(jar.resolve())
    return found


def classpath(runtime_dir: str | os.PathLike[str] | None = None) -> list[str]:
    """The runtime's classpath; under ``runtime_dir`` (the sandbox's view of the bootstraps
    directory) instead of this machine's path when given."""
    entries = [RUNTIME_JAR, *(LIB_DIR / f"{name}.jar" for name in JACKSON_JARS)]
    return [_relocate(p, runtime_dir) for p in entries]


def _relocate(path: Path, runtime_dir: str | os.PathLike[str] | None) -> str:
    if runtime_dir is None:
        return str(path)
    return str(Path(runtime_dir) / path.relative_to(BOOTSTRAPS_DIR))


def jvm_options(
    memory_mb: int, *, runtime_dir: str | os.PathLike[str] | None = None, cds: bool = True
) -> list[str]:
    """JVM flags for an environment with ``memory_mb`` of memory (AWS's proportions: heap
    85%, metaspace 10% but at least MIN_METASPACE_MB, code cache 5%), plus the CDS archive
    when one was built."""
    memory_kb = max(int(memory_mb), 1) * 1024
    options = [
        f"-XX:MaxHeapSize={memory_kb * 85 // 100}k",
        f"-XX:MaxMetaspaceSize={max(memory_kb * 10 // 100, MIN_METASPACE_MB * 1024)}k",
        f"-XX:ReservedCodeCacheSize={max(memory_kb * 5 // 100, 4096)}k",
        *BASE_JVM_OPTIONS,
    ]
    if cds and CDS_ARCHIVE.is_file():
        options.append(f"-XX:SharedArchiveFile={_relocate(CDS_ARCHIVE, runtime_dir)}")
        options.append("-Xlog:cds=off,cds+dynamic=off")  # a stale archive must not talk
    return options


def launch_command(
    memory_mb: int,
    *,
    java: str = "java",
    runtime_dir: str | os.PathLike[str] | None = None,
) -> list[str]:
    """The argv of an environment (after ``ensure_built()``)."""
    return [
        java,
        *jvm_options(memory_mb, runtime_dir=runtime_dir),
        "-cp",
        os.pathsep.join(classpath(runtime_dir)),
        MAIN_CLASS,
    ]


# --------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------


def _sources() -> list[Path]:
    return sorted(SRC_DIR.rglob("*.java"))


def _java_version(java: str) -> str:
    out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60)
    return (out.stderr + out.stdout).strip()


def _fingerprint(java: str, jackson: Sequence[Path], cds: bool) -> str:
    h = hashlib.sha256()
    h.update(f"v{BUILD_VERSION} cds={cds}\n".encode())
    h.update(_java_version(java).encode())
    h.update(os.path.realpath(shutil.which(java) or java).encode())
    for src in _sources():
        h.update(str(src.relative_to(SRC_DIR)).encode())
        h.update(src.read_bytes())
    h.update(Path(__file__).read_bytes())
    for jar in jackson:
        st = jar.stat()
        h.update(f"{jar}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _up_to_date(fingerprint: str, cds: bool) -> bool:
    try:
        stamp = json.loads(STAMP.read_text())
    except (OSError, ValueError):
        return False
    if stamp.get("fingerprint") != fingerprint:
        return False
    wanted = [RUNTIME_JAR, *(LIB_DIR / f"{n}.jar" for n in JACKSON_JARS)]
    if cds and stamp.get("cds"):
        wanted.append(CDS_ARCHIVE)
    return all(p.is_file() for p in wanted)


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    with open(LOCK, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_built(*, force: bool = False, cds: bool = True, java: str = "java") -> list[str]:
    """Build the runtime if anything changed; return its classpath (this machine's paths)."""
    if not java_available():
        raise BuildError("java and javac are needed for the Java runtime (install a JDK 17+)")
    jackson = find_jackson()
    fingerprint = _fingerprint(java, jackson, cds)
    if not force and _up_to_date(fingerprint, cds):
        return classpath()
    with _locked():
        if not force and _up_to_date(fingerprint, cds):  # another process built it meanwhile
            return classpath()
        started = time.monotonic()
        _compile(jackson)
        LIB_DIR.mkdir(parents=True, exist_ok=True)
        for jar, name in zip(jackson, JACKSON_JARS, strict=True):
            _copy_jar(jar, LIB_DIR / f"{name}.jar")
        archived = False
        CDS_ARCHIVE.unlink(missing_ok=True)
        if cds:
            archived = _dump_archive(java)
        STAMP.write_text(
            json.dumps(
                {
                    "fingerprint": fingerprint,
                    "cds": archived,
                    "seconds": round(time.monotonic() - started, 2),
                },
                indent=1,
            )
        )
    return classpath()


def _compile(jackson: Sequence[Path]) -> None:
    with tempfile.TemporaryDirectory(prefix="lambdad-javac-", dir=BUILD_DIR) as tmp:
        classes = Path(tmp) / "classes"
        classes.mkdir()
        argfile = Path(tmp) / "sources.txt"
        argfile.write_text("\n".join(f'"{p}"' for p in _sources()) + "\n")
        cmd = [
            "javac",
            "-J-XX:TieredStopAtLevel=1",  # C1 compiles this small tree faster
            "-J-XX:+UseSerialGC",
            "--release",
            "17",
            "-encoding",
            "UTF-8",
            "-nowarn",
            "-g",
            "-cp",
            os.pathsep.join(map(str, jackson)),
            "-d",
            str(classes),
            f"@{argfile}",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            raise BuildError(f"javac failed:\n{proc.stdout}{proc.stderr}")
        staged = Path(tmp) / "runtime.jar"
        with zipfile.ZipFile(staged, "w", zipfile.ZIP_DEFLATED) as zf:
            manifest = "Manifest-Version: 1.0\r\nCreated-By: lambdad build.py\r\n"
            manifest += f"Main-Class: {MAIN_CLASS}\r\n\r\n"
            zf.writestr(_entry("META-INF/MANIFEST.MF"), manifest)
            for path in sorted(classes.rglob("*")):
                if path.is_file():
                    zf.writestr(_entry(path.relative_to(classes).as_posix()), path.read_bytes())
        os.replace(staged, RUNTIME_JAR)


def _entry(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    return info


def _copy_jar(src: Path, dst: Path) -> None:
    """Copy a jar without its manifest's Class-Path: Debian's jackson-databind.jar names
    /usr/share/java/jackson-core.jar there, which would load Jackson from outside build/ (and
    outside the CDS archive)."""
    tmp = dst.with_name(dst.name + ".tmp")
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename.upper() == "META-INF/MANIFEST.MF":
                data = _strip_class_path(data)
            zout.writestr(info, data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, dst)


def _strip_class_path(manifest: bytes) -> bytes:
    out: list[bytes] = []
    skipping = False
    for line in manifest.splitlines(keepends=True):
        if line.startswith(b" ") and skipping:
            continue  # a continuation of the Class-Path value
        skipping = line.lower().startswith(b"class-path:")
        if not skipping:
            out.append(line)
    return b"".join(out)


SANDBOX_RUNTIME_DIR = "/var/runtime"


def _can_bind_runtime_dir() -> bool:
    """Root with `unshare`, and this directory not under /var (which the dump hides)."""
    return (
        os.geteuid() == 0
        and shutil.which("unshare") is not None
        and not str(BOOTSTRAPS_DIR).startswith("/var/")
    )


def _dump_archive(java: str) -> bool:
    """Record the classes a training run loads into a dynamic AppCDS archive (JDK 13+)."""
    tmp = CDS_ARCHIVE.with_name(CDS_ARCHIVE.name + ".tmp")
    tmp.unlink(missing_ok=True)
    # The JVM only uses an archive whose recorded classpath matches its own. Sandboxes see
    # this directory at /var/runtime: where we can (root), record it at that path, in a
    # private mount namespace that shows it there.
    sandboxed = SANDBOX_RUNTIME_DIR if _can_bind_runtime_dir() else None
    archive = _relocate(tmp, sandboxed)
    cmd = [
        java,
        f"-XX:ArchiveClassesAtExit={archive}",
        *(o for o in BASE_JVM_OPTIONS if o != "-Xshare:auto"),
        "-cp",
        os.pathsep.join(classpath(sandboxed)),
        MAIN_CLASS,
        "--train",
    ]
    if sandboxed is not None:
        script = (
            'mount -t tmpfs tmpfs /var && mkdir -p "$1" && mount --bind "$2" "$1" '
            '&& shift 2 && exec "$@"'
        )
        cmd = [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
            sandboxed,
            str(BOOTSTRAPS_DIR),
            *cmd,
        ]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAVA_TOOL_OPTIONS", "_JAVA"))}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    except (OSError, subprocess.TimeoutExpired) as e:
        print(f"lambdad java build: no CDS archive ({e})", file=sys.stderr)
        return False
    if proc.returncode != 0 or not tmp.is_file():
        print(
            f"lambdad java build: no CDS archive (exit {proc.returncode}):\n"
            f"{(proc.stdout + proc.stderr)[-2000:]}",
            file=sys.stderr,
        )
        tmp.unlink(missing_ok=True)
        return False
    os.chmod(tmp, 0o644)
    os.replace(tmp, CDS_ARCHIVE)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--force", action="store_true", help="rebuild even when up to date")
    parser.add_argument("--no-cds", action="store_true", help="skip the class-data-sharing archive")
    parser.add_argument("--command", type=int, metavar="MB", help="print a launch command")
    parser.add_argument("--runtime-dir", help="the sandbox's path of the bootstraps directory")
    args = parser.parse_args(argv)
    try:
        ensure_built(force=args.force, cds=not args.no_cds)
    except BuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.command:
        print(" ".join(launch_command(args.command, runtime_dir=args.runtime_dir)))
    else:
        print(os.pathsep.join(classpath(args.runtime_dir)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
