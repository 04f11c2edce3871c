"""Deployment packages: a directory zipped deterministically, or a .zip taken as it is.

The same tree always gives the same bytes (and so the same CodeSha256): entries in sorted
order, a fixed timestamp, permissions normalised to 0644, or 0755 when any execute bit is set.
`__pycache__` and `.git` directories are left out.
"""

from __future__ import annotations

import io
import os
import stat
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from lambdad.cli.client import CliError

EXCLUDED_DIRECTORIES = frozenset({"__pycache__", ".git"})
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest date a ZIP entry can carry
CHUNK = 1 << 20

# Called with the number of input bytes just compressed.
Advance = Callable[[int], None]


@dataclass(frozen=True)
class SourceFile:
    archive_name: str  # posix path inside the ZIP
    path: Path
    size: int
    executable: bool


def is_zip_file(path: Path) -> bool:
    return path.is_file() and zipfile.is_zipfile(path)


def read_zip(path: Path) -> bytes:
    if not is_zip_file(path):
        raise CliError(f"{path} is not a ZIP file (give a directory or a .zip)")
    return path.read_bytes()


def collect(root: Path) -> list[SourceFile]:
    """Every file under `root` that goes into the package, in archive order."""
    if not root.exists():
        raise CliError(f"{root} does not exist")
    if not root.is_dir():
        raise CliError(f"{root} is neither a directory nor a .zip file")
    files = sorted(_walk(root), key=lambda f: f.archive_name)
    if not files:
        raise CliError(f"nothing to deploy: {root} holds no files")
    return files


def _walk(root: Path) -> Iterator[SourceFile]:
    seen: set[str] = set()  # real paths of directories visited (symlink loops)
    for directory, subdirectories, names in os.walk(root, followlinks=True):
        real = os.path.realpath(directory)
        if real in seen:
            subdirectories[:] = []
            continue
        seen.add(real)
        subdirectories[:] = [d for d in subdirectories if d not in EXCLUDED_DIRECTORIES]
        for name in names:
            path = Path(directory) / name
            info = path.stat()
            if stat.S_ISREG(info.st_mode):
                yield SourceFile(
                    path.relative_to(root).as_posix(),
                    path,
                    info.st_size,
                    bool(info.st_mode & 0o111),
                )


def build_zip(files: list[SourceFile], advance: Advance) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for source in files:
            _add(archive, source, advance)
    return buffer.getvalue()


def _add(archive: zipfile.ZipFile, source: SourceFile, advance: Advance) -> None:
    entry = zipfile.ZipInfo(source.archive_name, date_time=ZIP_EPOCH)
    entry.create_system = 3  # unix, so that unzip honours the permission bits
    mode = 0o755 if source.executable else 0o644
    entry.external_attr = (stat.S_IFREG | mode) << 16
    entry.compress_type = zipfile.ZIP_DEFLATED
    with open(source.path, "rb") as reader, archive.open(entry, "w") as writer:
        while chunk := reader.read(CHUNK):
            writer.write(chunk)
            advance(len(chunk))
