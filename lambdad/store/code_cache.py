"""The cache of extracted code packages.

Each package is extracted once into ``root/<blob key>`` and then shared,
read-only, by every environment that runs it. A directory under that name is
always complete: it only ever appears through an atomic rename of a fully
extracted tree (see ``extract_zip``), and disappears through a rename too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

from lambdad.control.package import MAX_UNZIPPED_BYTES, extract_zip
from lambdad.store.blobs import BlobStore, validate_key

__all__ = ["CodeCache"]

COMPILE_TIMEOUT_SECONDS = 600.0


class CodeCache:
    """Extracted code packages, shared read-only by every environment that uses them.

    One directory per blob key. Safe for concurrent use by threads and by
    processes sharing ``root``.
    """

    def __init__(self, root: Path, blobs: BlobStore) -> None:
        self._root = root
        self._blobs = blobs
        self._paths: dict[str, Path] = {}  # path_for's answers (one per package: few)

    @property
    def root(self) -> Path:
        return self._root

    def path_for(self, key: str) -> Path:
        """Where package ``key`` is (or would be) extracted (asked at every launch)."""
        path = self._paths.get(key)
        if path is None:
            path = self._paths[key] = self._root / validate_key(key)
        return path

    def ensure(self, key: str, *, max_unzipped: int = MAX_UNZIPPED_BYTES) -> Path:
        """Return the directory holding package ``key``, extracting it if needed.

        Idempotent. When several threads or processes race, each extracts into
        its own temporary directory; the first rename wins and the others
        discard their copy. ``KeyError`` if the blob is not stored; the
        package errors of ``extract_zip`` if it is not a valid package.
        """
        dest = self.path_for(key)
        if dest.is_dir():
            return dest
        data = self._blobs.get(key)
        try:
            extract_zip(data, dest, max_unzipped=max_unzipped)
        except FileExistsError:
            if not dest.is_dir():
                raise
        return dest

    def remove(self, key: str) -> None:
        """Delete package ``key``'s directory, if present.

        The directory is first renamed away, so ``ensure`` never sees a
        half-deleted tree.
        """
        dest = self.path_for(key)
        trash = self._root / f".{key}.{uuid.uuid4().hex}.trash"
        try:
            os.rename(dest, trash)
        except FileNotFoundError:
            return
        shutil.rmtree(trash, ignore_errors=True)

    def compile_python(self, directory: Path, interpreter: str | None = None) -> None:
        """Precompile the ``.py`` files under ``directory`` into ``__pycache__``.

        Best effort: runs ``interpreter`` (default: this Python) as
        ``-I -m compileall`` in a subprocess, so the bytecode matches the
        runtime's Python version and no warnings or output leak into this
        process. Syntax errors, a missing interpreter or a timeout are
        ignored; the runtime then simply compiles at import time. The ``.pyc``
        files use unchecked hash validation: packages never change, so the
        runtime need not compare them with the source files.
        """
        command = [
            interpreter or sys.executable,
            "-I",
            "-m",
            "compileall",
            "-qq",
            "--invalidation-mode",
            "unchecked-hash",
            str(directory),
        ]
        try:
            subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=COMPILE_TIMEOUT_SECONDS,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return
