"""Code packages: validating and extracting the ZIP files users upload.

A package is untrusted input. Everything here is written so that a hostile
archive can at worst be rejected:

* the zipped size is checked before anything is parsed;
* every entry name is reduced to plain path components inside the package;
  absolute names, ``..`` components, backslashes and NUL bytes are refused;
* symlink entries are allowed only when their target, resolved the way the
  kernel would (including through the package's other symlinks), stays inside
  the package; no entry may live below a symlink or a regular file;
* the unzipped size is checked twice: from the sizes the central directory
  declares, and again from the bytes actually decompressed, chunk by chunk;
* extraction happens in a fresh temporary directory beside the destination,
  which is renamed into place only once complete, and removed on any error.

Every defect of the archive itself is reported with AWS's wording for a
package it cannot unzip (``InvalidParameterValueException``); the two size
limits have their own messages. Errors of the local filesystem (disk full,
permissions) are not the user's fault and propagate unchanged.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import io
import os
import shutil
import stat
import struct
import tempfile
import zipfile
import zlib
from collections import deque
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from lambdad.errors import InvalidParameterValueException, RequestEntityTooLargeException

__all__ = [
    "MAX_UNZIPPED_BYTES",
    "MAX_ZIPPED_BYTES",
    "CodePackage",
    "extract_zip",
    "inspect_zip",
]

MAX_ZIPPED_BYTES = 52_428_800
MAX_UNZIPPED_BYTES = 262_144_000

UNZIP_FAILED_MESSAGE = (
    "Could not unzip uploaded file. Please check your file, then try to upload again."
)

_CHUNK = 64 * 1024
_SUPPORTED_COMPRESSION = frozenset({zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED})
_FLAG_ENCRYPTED = 0x1
_MAX_NAME_COMPONENT_BYTES = 255
_MAX_PATH_BYTES = 4095
_MAX_LINK_TARGET_BYTES = 4095
_MAX_LINK_EXPANSIONS = 40  # Linux's MAXSYMLINKS
_DIR_MODE = 0o755
_EXEC_FILE_MODE = 0o755
_PLAIN_FILE_MODE = 0o644

# What zipfile raises for a malformed, truncated or unsupported archive.
_ZIP_ERRORS: tuple[type[BaseException], ...] = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    zlib.error,
    struct.error,
    EOFError,
    NotImplementedError,
    RuntimeError,
    ValueError,
    OSError,
)

_Parts = tuple[str, ...]
_Kind = Literal["dir", "file", "link"]


@dataclass(frozen=True)
class CodePackage:
    """What the control plane records about a validated ZIP package."""

    sha256_hex: str  # hex SHA-256 of the ZIP bytes: the blob key
    code_sha256: str  # base64 of the raw SHA-256 digest: AWS's CodeSha256
    code_size: int  # len(ZIP bytes): AWS's CodeSize
    unzipped_size: int  # sum of the declared sizes of the regular files extracted


@dataclass(frozen=True)
class _Entry:
    """One archive member that will be materialized (the last one wins per path)."""

    info: zipfile.ZipInfo
    parts: _Parts
    kind: _Kind
    mode: int  # permission bits to apply (unused for links)
    target: str = ""  # symlink target, only for kind == "link"


@dataclass(frozen=True)
class _Plan:
    """The validated content of an archive, in creation order."""

    dirs: tuple[_Parts, ...]  # parents before children, implicit ones included
    files: tuple[_Entry, ...]
    links: tuple[_Entry, ...]
    declared_size: int


# -- errors -----------------------------------------------------------------


def _unzip_failed() -> InvalidParameterValueException:
    return InvalidParameterValueException(UNZIP_FAILED_MESSAGE)


def _unzipped_too_large(limit: int) -> InvalidParameterValueException:
    return InvalidParameterValueException(f"Unzipped size must be smaller than {limit} bytes")


@contextmanager
def _zip_errors() -> Iterator[None]:
    """Turn zipfile's errors about the archive into AWS's "could not unzip"."""
    try:
        yield
    except _ZIP_ERRORS as err:
        raise _unzip_failed() from err


# -- public API -------------------------------------------------------------


def inspect_zip(data: bytes, *, max_unzipped: int = MAX_UNZIPPED_BYTES) -> CodePackage:
    """Validate a ZIP upload without writing anything, and describe it.

    Raises ``RequestEntityTooLargeException`` when ``data`` exceeds
    ``MAX_ZIPPED_BYTES`` (checked before parsing), and
    ``InvalidParameterValueException`` when the archive is malformed, has an
    unsafe entry name or symlink, or declares more than ``max_unzipped`` bytes.
    Only symlink targets are decompressed; file contents are checked (CRC,
    real size) by ``extract_zip``.
    """
    _check_zipped_size(data)
    with _open_zip(data) as archive:
        plan = _plan(archive, max_unzipped)
    digest = hashlib.sha256(data).digest()
    return CodePackage(
        sha256_hex=digest.hex(),
        code_sha256=base64.b64encode(digest).decode("ascii"),
        code_size=len(data),
        unzipped_size=plan.declared_size,
    )


def extract_zip(data: bytes, dest: Path, *, max_unzipped: int = MAX_UNZIPPED_BYTES) -> int:
    """Extract a ZIP upload to the new directory ``dest``; return the bytes unzipped.

    Applies every rule of ``inspect_zip``, then counts the bytes actually
    decompressed and stops as soon as they exceed ``max_unzipped``. The tree is
    built in a temporary directory beside ``dest`` and renamed to ``dest`` at
    the end; on any error the temporary directory is removed and ``dest`` is
    left as it was. ``dest`` must not exist (an empty directory is replaced):
    if it does, ``FileExistsError`` is raised. Directories get mode 0o755,
    files 0o755 when their unix mode has an exec bit and 0o644 otherwise.
    """
    _check_zipped_size(data)
    with _open_zip(data) as archive:
        plan = _plan(archive, max_unzipped)
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
        try:
            written = _materialize(archive, plan, staging, max_unzipped)
            staging.chmod(_DIR_MODE)
            _publish(staging, dest)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return written


# -- opening and planning ---------------------------------------------------


def _check_zipped_size(data: bytes) -> None:
    if len(data) > MAX_ZIPPED_BYTES:
        raise RequestEntityTooLargeException(
            f"Zipped size must be smaller than {MAX_ZIPPED_BYTES} bytes"
        )


def _open_zip(data: bytes) -> zipfile.ZipFile:
    with _zip_errors():
        return zipfile.ZipFile(io.BytesIO(data))


def _plan(archive: zipfile.ZipFile, max_unzipped: int) -> _Plan:
    """Validate every member of ``archive`` and decide what to create."""
    kinds: dict[_Parts, _Kind] = {}
    chosen: dict[_Parts, _Entry] = {}
    for info in archive.infolist():
        entry = _entry(archive, info)
        if entry is None:
            continue
        _claim(kinds, entry.parts, entry.kind)
        if entry.kind != "dir":
            chosen[entry.parts] = entry
    links = {parts: e.target for parts, e in chosen.items() if e.kind == "link"}
    for parts in links:
        if _link_escapes(parts, links):
            raise _unzip_failed()
    files = tuple(e for e in chosen.values() if e.kind == "file")
    declared = sum(e.info.file_size for e in files)
    if declared > max_unzipped:
        raise _unzipped_too_large(max_unzipped)
    return _Plan(
        dirs=tuple(sorted(p for p, kind in kinds.items() if kind == "dir")),
        files=files,
        links=tuple(e for e in chosen.values() if e.kind == "link"),
        declared_size=declared,
    )


def _claim(kinds: dict[_Parts, _Kind], parts: _Parts, kind: _Kind) -> None:
    """Record ``parts`` as ``kind``; every ancestor must be (or become) a directory.

    A path below a symlink or a regular file, or a path that is claimed as two
    different kinds, makes the archive invalid, whatever the entry order.
    Repeating a path with the same kind is allowed (the last entry wins).
    """
    for depth in range(1, len(parts)):
        if kinds.setdefault(parts[:depth], "dir") != "dir":
            raise _unzip_failed()
    if kinds.setdefault(parts, kind) != kind:
        raise _unzip_failed()


def _entry(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> _Entry | None:
    """Validate one member; ``None`` for a member naming the package root itself."""
    if info.flag_bits & _FLAG_ENCRYPTED or info.compress_type not in _SUPPORTED_COMPRESSION:
        raise _unzip_failed()
    if "\x00" in info.orig_filename:  # zipfile silently truncates names at NUL
        raise _unzip_failed()
    parts = _safe_parts(info.filename)
    unix_mode = info.external_attr >> 16
    kind: _Kind = "file"
    if info.filename.endswith("/"):
        kind = "dir"
    elif stat.S_ISLNK(unix_mode):
        kind = "link"
    if not parts:
        if kind != "dir":
            raise _unzip_failed()
        return None
    if kind == "link":
        return _Entry(info, parts, kind, 0, _read_link_target(archive, info))
    mode = _EXEC_FILE_MODE if unix_mode & 0o111 else _PLAIN_FILE_MODE
    return _Entry(info, parts, kind, _DIR_MODE if kind == "dir" else mode)


def _safe_parts(name: str) -> _Parts:
    """Split a member name into path components that cannot leave the package.

    Empty and ``.`` components are dropped; absolute names, ``..`` components,
    backslashes, NUL bytes and over-long names are refused.
    """
    if not name or name.startswith("/") or "\\" in name or "\x00" in name:
        raise _unzip_failed()
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise _unzip_failed()
    if len(os.fsencode("/".join(parts))) > _MAX_PATH_BYTES:
        raise _unzip_failed()
    if any(len(os.fsencode(p)) > _MAX_NAME_COMPONENT_BYTES for p in parts):
        raise _unzip_failed()
    return parts


def _read_link_target(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> str:
    """Return a symlink member's target: relative, non-empty, UTF-8, no NUL/backslash."""
    if info.file_size > _MAX_LINK_TARGET_BYTES:
        raise _unzip_failed()
    with _zip_errors():
        raw = archive.read(info)
    try:
        target = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise _unzip_failed() from err
    if not target or target.startswith("/") or "\\" in target or "\x00" in target:
        raise _unzip_failed()
    return target


def _link_escapes(link: _Parts, links: Mapping[_Parts, str]) -> bool:
    """Whether resolving ``link`` as the kernel would ever leaves the package.

    The walk starts in the link's directory, expands every symlink of the
    package it meets (including chains and links to directories), and fails
    on any ``..`` above the package root, on an absolute target, or after
    ``_MAX_LINK_EXPANSIONS`` expansions (a loop). Components that do not exist
    are treated as directories, which can only make the check stricter.
    """
    where = list(link[:-1])
    pending: deque[str] = deque(links[link].split("/"))
    expansions = 0
    while pending:
        part = pending.popleft()
        if part in ("", "."):
            continue
        if part == "..":
            if not where:
                return True
            where.pop()
            continue
        where.append(part)
        target = links.get(tuple(where))
        if target is None:
            continue
        expansions += 1
        if expansions > _MAX_LINK_EXPANSIONS or target.startswith("/"):
            return True
        where.pop()
        pending.extendleft(reversed(target.split("/")))
    return False


# -- writing ----------------------------------------------------------------


def _materialize(archive: zipfile.ZipFile, plan: _Plan, root: Path, limit: int) -> int:
    """Create the planned tree under the empty directory ``root``; return bytes written.

    Directories first, then files (created exclusively, never through a
    symlink), then symlinks last, so that no symlink exists while anything is
    being written.
    """
    for parts in plan.dirs:
        path = root.joinpath(*parts)
        path.mkdir(mode=_DIR_MODE)
        path.chmod(_DIR_MODE)
    written = 0
    for entry in plan.files:
        written += _write_file(archive, entry, root.joinpath(*entry.parts), limit - written, limit)
    for entry in plan.links:
        os.symlink(entry.target, root.joinpath(*entry.parts))
    return written


def _write_file(
    archive: zipfile.ZipFile, entry: _Entry, path: Path, budget: int, limit: int
) -> int:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(path, flags, 0o600)
    with os.fdopen(fd, "wb") as out:
        with _zip_errors():
            member = archive.open(entry.info)
        with member:
            copied = _copy_capped(member, out, budget, limit)
        os.fchmod(out.fileno(), entry.mode)
    return copied


def _copy_capped(src: IO[bytes], dst: IO[bytes], budget: int, limit: int) -> int:
    """Copy ``src`` to ``dst`` in chunks; fail once more than ``budget`` bytes came out.

    ``limit`` is the overall limit quoted in the error message. Read errors
    of the archive become "could not unzip"; write errors propagate.
    """
    copied = 0
    while True:
        with _zip_errors():
            chunk = src.read(_CHUNK)
        if not chunk:
            return copied
        copied += len(chunk)
        if copied > budget:
            raise _unzipped_too_large(limit)
        dst.write(chunk)


def _publish(staging: Path, dest: Path) -> None:
    """Atomically rename the finished tree to ``dest``; ``FileExistsError`` if taken."""
    try:
        os.rename(staging, dest)
    except OSError as err:
        if err.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
            raise FileExistsError(errno.EEXIST, "destination exists", str(dest)) from err
        raise
