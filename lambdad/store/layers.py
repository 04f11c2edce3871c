"""Layer storage: the records of layer versions, and the /opt trees built from their content.

``LayerStore`` keeps one record per layer version (a deleted version stays as a tombstone while
functions still use it) and, per layer, the highest version number ever given, so numbers are
never reused. ``SqliteLayerStore`` shares the metadata database file; ``MemoryLayerStore`` is
the fake.

``OptCache`` holds the combined trees environments see at ``/opt``: the layers of one function
unpacked into one directory, in order, later layers overwriting earlier files. A tree is built
once per distinct sequence of layer contents and shared read-only; its directory only ever
appears complete, through an atomic rename (as ``CodeCache``'s do).
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import tempfile
import threading
import uuid
from abc import ABC, abstractmethod
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from lambdad.store.blobs import validate_key
from lambdad.store.code_cache import CodeCache
from lambdad.store.sqlite import SqliteDatabase

__all__ = [
    "LayerStore",
    "MemoryLayerStore",
    "OptCache",
    "OptCacheStatistics",
    "SqliteLayerStore",
]

LayerKey = tuple[str, str]  # (account id, layer name)


class LayerStore(ABC):
    """Durable layer version records. Implementations must be safe to share between threads."""

    @abstractmethod
    def load_versions(self) -> list[dict[str, Any]]:
        """Every stored layer version record (tombstones included)."""

    @abstractmethod
    def load_counters(self) -> dict[LayerKey, int]:
        """(account id, layer name) -> the highest version number ever stored for the layer."""

    @abstractmethod
    def put_version(self, account_id: str, name: str, version: int, record: dict[str, Any]) -> None:
        """Insert or replace one version, raising the layer's counter to at least `version`."""

    @abstractmethod
    def purge_version(self, account_id: str, name: str, version: int) -> None:
        """Forget one version's record for good (idempotent); the counter stays."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources."""


_SCHEMA = """
CREATE TABLE IF NOT EXISTS layer_versions (
    account_id TEXT NOT NULL,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    record BLOB NOT NULL,
    PRIMARY KEY (account_id, name, version)
);
CREATE TABLE IF NOT EXISTS layer_counters (
    account_id TEXT NOT NULL,
    name TEXT NOT NULL,
    last_version INTEGER NOT NULL,
    PRIMARY KEY (account_id, name)
);
"""


class SqliteLayerStore(SqliteDatabase, LayerStore):
    """The `layer_versions` and `layer_counters` tables of the data dir's database (WAL)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, _SCHEMA)

    def load_versions(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT record FROM layer_versions ORDER BY account_id, name, version"
            ).fetchall()
        return [orjson.loads(row[0]) for row in rows]

    def load_counters(self) -> dict[LayerKey, int]:
        with self._lock:
            rows = self._db.execute(
                "SELECT account_id, name, last_version FROM layer_counters"
            ).fetchall()
        return {(account, name): int(last) for account, name, last in rows}

    def put_version(self, account_id: str, name: str, version: int, record: dict[str, Any]) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO layer_versions VALUES (?, ?, ?, ?)",
                (account_id, name, version, orjson.dumps(record)),
            )
            db.execute(
                "INSERT INTO layer_counters VALUES (?, ?, ?) ON CONFLICT (account_id, name) "
                "DO UPDATE SET last_version = max(last_version, excluded.last_version)",
                (account_id, name, version),
            )

    def purge_version(self, account_id: str, name: str, version: int) -> None:
        with self._tx() as db:
            db.execute(
                "DELETE FROM layer_versions WHERE account_id = ? AND name = ? AND version = ?",
                (account_id, name, version),
            )


class MemoryLayerStore(LayerStore):
    """The shipped fake: same contract, nothing durable."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._versions: dict[tuple[str, str, int], dict[str, Any]] = {}
        self._counters: dict[LayerKey, int] = {}

    def load_versions(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(self._versions[key]) for key in sorted(self._versions)]

    def load_counters(self) -> dict[LayerKey, int]:
        with self._lock:
            return dict(self._counters)

    def put_version(self, account_id: str, name: str, version: int, record: dict[str, Any]) -> None:
        with self._lock:
            self._versions[(account_id, name, version)] = dict(record)
            key = (account_id, name)
            self._counters[key] = max(self._counters.get(key, 0), version)

    def purge_version(self, account_id: str, name: str, version: int) -> None:
        with self._lock:
            self._versions.pop((account_id, name, version), None)


# -- the combined /opt trees ------------------------------------------------------------------

_MANIFEST = "layers"  # beside the tree: the blob keys it was built from, one a line, in order
_TREE = "opt"
_DIR_MODE = 0o755


@dataclass(frozen=True)
class OptCacheStatistics:
    built: int  # trees this process built
    reused: int  # requests answered with a tree that was already there
    pending: int  # combinations being looked up or built now


class OptCache:
    """Combined layer trees: ``root/<combination>/opt``, one per sequence of layer contents.

    The layers' packages are unpacked once each by ``code`` (a ``CodeCache``); a combination
    is assembled from those directories (hard links where the filesystem allows, else copies)
    and then never changes. Safe for concurrent use by threads (one build per combination at a
    time) and by processes sharing ``root`` (the first rename wins).
    """

    def __init__(self, root: Path, code: CodeCache) -> None:
        self._root = root
        self._code = code
        self._lock = threading.Lock()
        # combination key -> lock held while that combination is being built
        self._building: dict[str, threading.Lock] = {}
        self._built = 0
        self._reused = 0

    @property
    def root(self) -> Path:
        return self._root

    @staticmethod
    def combination(keys: Sequence[str]) -> str:
        """The name of the tree built from the packages `keys`, in this order."""
        text = "\n".join(validate_key(key) for key in keys)
        return hashlib.sha256(text.encode("ascii")).hexdigest()

    def path_for(self, keys: Sequence[str]) -> Path:
        """Where the tree for `keys` is (or would be)."""
        return self._root / self.combination(keys) / _TREE

    def ensure(self, keys: Sequence[str]) -> Path:
        """The tree holding the packages `keys` unpacked in order, built if needed.

        ``KeyError`` if a package's blob is not stored; the package errors of ``extract_zip``
        if one is not a valid package. `keys` must not be empty.
        """
        if not keys:
            raise ValueError("a combination needs at least one layer")
        name = self.combination(keys)
        tree = self._root / name / _TREE
        with self._lock:
            building = self._building.setdefault(name, threading.Lock())
        try:
            with building:
                if tree.is_dir():
                    with self._lock:
                        self._reused += 1
                    return tree
                sources = [self._code.ensure(key) for key in keys]
                self._build(name, keys, sources)
                with self._lock:
                    self._built += 1
                return tree
        finally:
            # Dropping the lock early is harmless: the atomic rename keeps a late second
            # builder from replacing the tree; it only wastes that builder's work.
            with self._lock:
                if self._building.get(name) is building and not building.locked():
                    del self._building[name]

    def _build(self, name: str, keys: Sequence[str], sources: Sequence[Path]) -> None:
        self._root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=self._root))
        try:
            tree = staging / _TREE
            tree.mkdir(mode=_DIR_MODE)
            for source in sources:
                overlay(source, tree)
            (staging / _MANIFEST).write_text("".join(f"{key}\n" for key in keys))
            staging.chmod(_DIR_MODE)
            tree.chmod(_DIR_MODE)
            _publish(staging, self._root / name)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    def combinations(self) -> dict[str, tuple[str, ...]]:
        """Every complete tree on disk: combination name -> the package keys it holds."""
        found: dict[str, tuple[str, ...]] = {}
        if not self._root.is_dir():
            return found
        for entry in self._root.iterdir():
            if entry.name.startswith("."):
                continue
            try:
                found[entry.name] = tuple((entry / _MANIFEST).read_text().split())
            except OSError:
                continue
        return found

    def remove_unless(self, keep: Collection[str]) -> int:
        """Delete the trees holding any package not in `keep`; return how many went.

        A tree is renamed away before it is deleted, so ``ensure`` never sees it half gone.
        The caller guarantees no environment still uses a tree it lets go.
        """
        removed = 0
        for name, keys in self.combinations().items():
            if all(key in keep for key in keys):
                continue
            trash = self._root / f".{name}.{uuid.uuid4().hex}.trash"
            try:
                os.rename(self._root / name, trash)
            except FileNotFoundError:
                continue
            shutil.rmtree(trash, ignore_errors=True)
            removed += 1
        return removed

    def statistics(self) -> OptCacheStatistics:
        with self._lock:
            return OptCacheStatistics(self._built, self._reused, len(self._building))


def overlay(source: Path, dest: Path) -> None:
    """Lay the tree `source` over the directory `dest`: AWS's unpacking of layers into /opt.

    Files (and symlinks) of `source` replace whatever `dest` has at their path; directories
    merge. Nothing is ever written through a symlink of `dest`: an entry that is in the way
    of a directory (a file or a symlink) is replaced by the directory.
    """
    pending = [(source, dest)]
    while pending:
        src_dir, dst_dir = pending.pop()
        with os.scandir(src_dir) as entries:
            for entry in entries:
                target = dst_dir / entry.name
                if entry.is_dir(follow_symlinks=False):
                    if not _is_real_dir(target):
                        _remove(target)
                        target.mkdir(mode=_DIR_MODE)
                        target.chmod(_DIR_MODE)
                    pending.append((Path(entry.path), target))
                    continue
                _remove(target)
                if entry.is_symlink():
                    os.symlink(os.readlink(entry.path), target)
                else:
                    _link_or_copy(Path(entry.path), target)


def _is_real_dir(path: Path) -> bool:
    try:
        return path.lstat().st_mode & 0o170000 == 0o040000
    except FileNotFoundError:
        return False


def _remove(path: Path) -> None:
    if _is_real_dir(path):
        shutil.rmtree(path)
        return
    try:
        path.unlink()
    except FileNotFoundError:
        return


def _link_or_copy(source: Path, target: Path) -> None:
    """Hard-link `source` at `target` (packages never change), or copy it across filesystems."""
    try:
        os.link(source, target, follow_symlinks=False)
    except OSError as err:
        if err.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
            raise
        shutil.copy2(source, target, follow_symlinks=False)


def _publish(staging: Path, dest: Path) -> None:
    """Rename the finished combination into place; when another builder won, drop ours."""
    try:
        os.rename(staging, dest)
    except OSError as err:
        if err.errno not in (errno.EEXIST, errno.ENOTEMPTY) or not (dest / _TREE).is_dir():
            raise
        shutil.rmtree(staging, ignore_errors=True)
