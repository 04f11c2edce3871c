from __future__ import annotations

import hashlib
import os
import stat
import threading
from pathlib import Path

import pytest

from lambdad.store.blobs import (
    BlobStore,
    DirectoryBlobStore,
    MemoryBlobStore,
    blob_key,
    validate_key,
)

BAD_KEYS = [
    "",
    "abc",
    "A" * 64,
    "g" * 64,
    "0" * 63,
    "0" * 65,
    "../" + "0" * 61,
    "0" * 62 + "/x",
    "0" * 63 + "\n",
]


@pytest.fixture(params=["directory", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    if request.param == "directory":
        return DirectoryBlobStore(tmp_path / "blobs")
    return MemoryBlobStore()


def test_key_is_hex_sha256() -> None:
    assert blob_key(b"abc") == hashlib.sha256(b"abc").hexdigest()


def test_put_get_exists_delete(store: BlobStore) -> None:
    key = store.put(b"hello")
    assert key == hashlib.sha256(b"hello").hexdigest()
    assert store.exists(key)
    assert store.get(key) == b"hello"
    store.delete(key)
    assert not store.exists(key)
    store.delete(key)  # idempotent


def test_get_missing_raises_key_error(store: BlobStore) -> None:
    with pytest.raises(KeyError):
        store.get(blob_key(b"never stored"))


def test_put_twice_stores_once(store: BlobStore) -> None:
    assert store.put(b"same") == store.put(b"same")
    assert store.get(blob_key(b"same")) == b"same"


def test_empty_blob(store: BlobStore) -> None:
    assert store.get(store.put(b"")) == b""


@pytest.mark.parametrize("key", BAD_KEYS)
def test_malformed_keys_are_refused(store: BlobStore, key: str) -> None:
    for call in (store.get, store.exists, store.delete, store.local_path):
        with pytest.raises(ValueError):
            call(key)
    with pytest.raises(ValueError):
        validate_key(key)


def test_concurrent_puts(store: BlobStore) -> None:
    payloads = [bytes([i]) * 10_000 for i in range(4)] * 4
    threads = [threading.Thread(target=store.put, args=(p,)) for p in payloads]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for payload in payloads:
        assert store.get(blob_key(payload)) == payload


def test_directory_layout_and_local_path(tmp_path: Path) -> None:
    store = DirectoryBlobStore(tmp_path)
    key = store.put(b"content")
    path = store.local_path(key)
    assert path == tmp_path / key[:2] / key[2:4] / key
    assert path.read_bytes() == b"content"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert sorted(p.name for p in path.parent.iterdir()) == [key]  # no temporary left


def test_directory_put_of_existing_key_is_a_no_op(tmp_path: Path) -> None:
    store = DirectoryBlobStore(tmp_path)
    key = store.put(b"content")
    before = os.stat(store.path_for(key))
    store.put(b"content")
    after = os.stat(store.path_for(key))
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)


def test_directory_store_persists(tmp_path: Path) -> None:
    key = DirectoryBlobStore(tmp_path).put(b"durable")
    assert DirectoryBlobStore(tmp_path).get(key) == b"durable"


def test_local_path_of_missing_key(tmp_path: Path) -> None:
    missing = blob_key(b"missing")
    with pytest.raises(KeyError):
        DirectoryBlobStore(tmp_path).local_path(missing)
    with pytest.raises(KeyError):
        MemoryBlobStore().local_path(missing)


def test_memory_store_has_no_local_path() -> None:
    store = MemoryBlobStore()
    assert store.local_path(store.put(b"x")) is None
