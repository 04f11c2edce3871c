"""Content-addressed blob storage: the key of a blob is the hex SHA-256 of its bytes.

Keys are always 64 lowercase hexadecimal characters; any other string is a
programming error and raises ``ValueError`` (this also keeps keys from being
used to build paths outside a store's directory). Blobs are immutable: writing
the same content twice stores it once.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import threading
from abc import ABC, abstractmethod
from pathlib import Path

__all__ = [
    "BlobStore",
    "DirectoryBlobStore",
    "MemoryBlobStore",
    "blob_key",
    "validate_key",
]

_KEY_PATTERN = re.compile(r"[0-9a-f]{64}")
_BLOB_MODE = 0o644


def blob_key(data: bytes) -> str:
    """The key ``data`` is stored under: its hex SHA-256."""
    return hashlib.sha256(data).hexdigest()


def validate_key(key: str) -> str:
    """Return ``key`` if it is 64 lowercase hex characters, else raise ``ValueError``."""
    if not isinstance(key, str) or _KEY_PATTERN.fullmatch(key) is None:
        raise ValueError(f"invalid blob key: {key!r}")
    return key


class BlobStore(ABC):
    """A content-addressed store. Implementations must be safe to share between threads."""

    @abstractmethod
    def put(self, data: bytes) -> str:
        """Store ``data`` (a no-op if already present) and return its key."""

    @abstractmethod
    def get(self, key: str) -> bytes:
        """Return the blob's bytes; ``KeyError`` if it is not stored."""

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether a blob is stored under ``key``."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Forget the blob; deleting a missing key is not an error."""

    @abstractmethod
    def local_path(self, key: str) -> Path | None:
        """A file holding the blob, or ``None`` if this store keeps no files.

        ``KeyError`` if the blob is not stored. The file must not be modified.
        """


class DirectoryBlobStore(BlobStore):
    """Blobs as files ``root/aa/bb/<key>`` (``aa``, ``bb``: the key's first two bytes).

    Writes are atomic: a temporary file in the target directory is written,
    fsynced and renamed over the final name, then the directory is fsynced.
    Readers therefore see either no blob or the whole blob.
    """

    def __init__(self, root: Path) -> None:
        self._root = root

    @property
    def root(self) -> Path:
        return self._root

    def path_for(self, key: str) -> Path:
        """Where the blob ``key`` lives (whether or not it is stored)."""
        validate_key(key)
        return self._root / key[:2] / key[2:4] / key

    def put(self, data: bytes) -> str:
        key = blob_key(data)
        path = self.path_for(key)
        if not path.exists():
            _write_atomically(path, data)
        return key

    def get(self, key: str) -> bytes:
        try:
            return self.path_for(key).read_bytes()
        except FileNotFoundError:
            raise KeyError(key) from None

    def exists(self, key: str) -> bool:
        return self.path_for(key).is_file()

    def delete(self, key: str) -> None:
        self.path_for(key).unlink(missing_ok=True)

    def local_path(self, key: str) -> Path | None:
        path = self.path_for(key)
        if not path.is_file():
            raise KeyError(key)
        return path


def _write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a fsynced temporary file and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as tmp:
            tmp.write(data)
            tmp.flush()
            os.fchmod(tmp.fileno(), _BLOB_MODE)
            os.fsync(tmp.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class MemoryBlobStore(BlobStore):
    """An in-memory store for tests; ``local_path`` always answers ``None``."""

    def __init__(self) -> None:
        self._blobs: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def put(self, data: bytes) -> str:
        key = blob_key(data)
        with self._lock:
            self._blobs.setdefault(key, bytes(data))
        return key

    def get(self, key: str) -> bytes:
        validate_key(key)
        with self._lock:
            return self._blobs[key]

    def exists(self, key: str) -> bool:
        validate_key(key)
        with self._lock:
            return key in self._blobs

    def delete(self, key: str) -> None:
        validate_key(key)
        with self._lock:
            self._blobs.pop(key, None)

    def local_path(self, key: str) -> Path | None:
        if not self.exists(key):
            raise KeyError(key)
        return None
