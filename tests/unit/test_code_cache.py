from __future__ import annotations

import io
import stat
import sys
import threading
import zipfile
from pathlib import Path

import pytest

from lambdad.control import package
from lambdad.errors import InvalidParameterValueException
from lambdad.store import code_cache
from lambdad.store.blobs import MemoryBlobStore, blob_key
from lambdad.store.code_cache import CodeCache


def make_zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            archive.writestr(info, data)
    return buffer.getvalue()


class RacingBlobStore(MemoryBlobStore):
    """Holds every ``get`` until ``parties`` callers are inside it."""

    def __init__(self, parties: int) -> None:
        super().__init__()
        self._barrier = threading.Barrier(parties, timeout=10)

    def get(self, key: str) -> bytes:
        self._barrier.wait()
        return super().get(key)


def hidden_entries(root: Path) -> list[str]:
    return [p.name for p in root.iterdir() if p.name.startswith(".")]


def test_ensure_extracts_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blobs = MemoryBlobStore()
    key = blobs.put(make_zip({"index.py": b"X = 1\n"}))
    cache = CodeCache(tmp_path / "code", blobs)
    calls: list[Path] = []
    real_extract = package.extract_zip

    def counting_extract(data: bytes, dest: Path, *, max_unzipped: int) -> int:
        calls.append(dest)
        return real_extract(data, dest, max_unzipped=max_unzipped)

    monkeypatch.setattr(code_cache, "extract_zip", counting_extract)
    first = cache.ensure(key)
    second = cache.ensure(key)
    assert first == second == tmp_path / "code" / key == cache.path_for(key)
    assert (first / "index.py").read_bytes() == b"X = 1\n"
    assert calls == [first]


def test_concurrent_ensure_from_two_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outcomes: list[str] = []
    real_extract = package.extract_zip

    def recording_extract(data: bytes, dest: Path, *, max_unzipped: int) -> int:
        try:
            written = real_extract(data, dest, max_unzipped=max_unzipped)
        except FileExistsError:
            outcomes.append("lost")
            raise
        outcomes.append("won")
        return written

    monkeypatch.setattr(code_cache, "extract_zip", recording_extract)
    blobs = RacingBlobStore(parties=2)
    key = blobs.put(make_zip({"a.txt": b"a", "lib/b.txt": b"b"}))
    cache = CodeCache(tmp_path, blobs)
    results: list[Path] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(cache.ensure(key))
        except BaseException as err:  # reported to the test thread below
            errors.append(err)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert results == [tmp_path / key] * 2
    assert (tmp_path / key / "lib" / "b.txt").read_bytes() == b"b"
    assert sorted(outcomes) == ["lost", "won"]  # both extracted, one rename won
    assert hidden_entries(tmp_path) == []  # the loser discarded its copy


def test_ensure_missing_blob(tmp_path: Path) -> None:
    cache = CodeCache(tmp_path, MemoryBlobStore())
    with pytest.raises(KeyError):
        cache.ensure(blob_key(b"absent"))


def test_ensure_invalid_package_leaves_nothing(tmp_path: Path) -> None:
    blobs = MemoryBlobStore()
    key = blobs.put(b"not a zip")
    cache = CodeCache(tmp_path / "code", blobs)
    with pytest.raises(InvalidParameterValueException):
        cache.ensure(key)
    assert not (tmp_path / "code").exists() or list((tmp_path / "code").iterdir()) == []


def test_ensure_applies_unzipped_limit(tmp_path: Path) -> None:
    blobs = MemoryBlobStore()
    key = blobs.put(make_zip({"big": bytes(10_000)}))
    cache = CodeCache(tmp_path, blobs)
    with pytest.raises(InvalidParameterValueException) as caught:
        cache.ensure(key, max_unzipped=9_999)
    assert caught.value.message == "Unzipped size must be smaller than 9999 bytes"
    assert not cache.path_for(key).exists()


def test_malformed_key_is_refused(tmp_path: Path) -> None:
    cache = CodeCache(tmp_path, MemoryBlobStore())
    for call in (cache.ensure, cache.remove, cache.path_for):
        with pytest.raises(ValueError):
            call("../../etc")


def test_remove_then_ensure_again(tmp_path: Path) -> None:
    blobs = MemoryBlobStore()
    key = blobs.put(make_zip({"a": b"1"}))
    cache = CodeCache(tmp_path, blobs)
    directory = cache.ensure(key)
    cache.remove(key)
    assert not directory.exists()
    assert list(tmp_path.iterdir()) == []
    cache.remove(key)  # idempotent
    assert (cache.ensure(key) / "a").read_bytes() == b"1"


def test_compile_python_writes_bytecode(tmp_path: Path) -> None:
    (tmp_path / "handler.py").write_text("def handler(event, context):\n    return 1\n")
    (tmp_path / "broken.py").write_text("def broken(:\n")
    CodeCache(tmp_path, MemoryBlobStore()).compile_python(tmp_path)
    tag = sys.implementation.cache_tag
    assert (tmp_path / "__pycache__" / f"handler.{tag}.pyc").is_file()
    assert not (tmp_path / "__pycache__" / f"broken.{tag}.pyc").exists()


def test_compile_python_ignores_missing_interpreter(tmp_path: Path) -> None:
    (tmp_path / "handler.py").write_text("X = 1\n")
    cache = CodeCache(tmp_path, MemoryBlobStore())
    cache.compile_python(tmp_path, interpreter=str(tmp_path / "no-such-python"))
    assert not (tmp_path / "__pycache__").exists()
