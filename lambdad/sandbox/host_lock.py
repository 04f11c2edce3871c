"""An exclusive lock between lambdad processes on one host: an flock on a directory itself
(made if missing), so it leaves no file behind. Released when the block ends, or when the
process holding it dies."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def locked_directory(path: Path, mode: int = 0o755) -> Iterator[None]:
    path.mkdir(mode=mode, parents=True, exist_ok=True)
    directory = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(directory, fcntl.LOCK_EX)
        yield
    finally:
        os.close(directory)
