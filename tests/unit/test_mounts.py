"""Detached read-only trees made ahead (sandbox/mounts.SpareTrees): root and open_tree."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lambdad.sandbox import mounts


def _can_clone(directory: Path) -> bool:
    if not mounts.supported() or os.geteuid() != 0:
        return False
    try:
        os.close(mounts.read_only_tree(str(directory)))
    except OSError:
        return False
    return True


@pytest.fixture
def trees(tmp_path: Path) -> mounts.SpareTrees:
    if not _can_clone(tmp_path):
        pytest.skip("open_tree needs root and Linux 5.12+")
    return mounts.SpareTrees(limit=2)


def _identity(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def _dir_identity(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def test_a_spare_is_taken_once_and_made_again_by_refill(
    trees: mounts.SpareTrees, tmp_path: Path
) -> None:
    code = tmp_path / "code"
    code.mkdir()
    first = trees.take(str(code))  # none yet: cloned now
    assert _identity(first) == _dir_identity(code) and len(trees) == 0
    os.close(first)
    trees.refill(str(code))
    trees.refill(str(code))  # one spare per directory
    assert len(trees) == 1
    spare = trees.take(str(code))
    assert _identity(spare) == _dir_identity(code) and len(trees) == 0
    os.close(spare)
    trees.close()


def test_a_spare_of_a_directory_made_again_is_not_handed_out(
    trees: mounts.SpareTrees, tmp_path: Path
) -> None:
    code = tmp_path / "code"
    code.mkdir()
    trees.refill(str(code))
    code.rename(tmp_path / "trash")  # the package was removed...
    code.mkdir()  # ...and extracted again: another directory under the same name
    (code / "app.py").write_text("new\n")
    fd = trees.take(str(code))
    assert _identity(fd) == _dir_identity(code) != _dir_identity(tmp_path / "trash")
    os.close(fd)
    trees.refill(str(tmp_path / "gone"))  # a directory that is not there: no spare, no error
    assert len(trees) == 0
    trees.close()


def test_only_the_directories_used_last_keep_a_spare(
    trees: mounts.SpareTrees, tmp_path: Path
) -> None:
    names = ["a", "b", "c"]
    for name in names:
        (tmp_path / name).mkdir()
        trees.refill(str(tmp_path / name))
    assert len(trees) == 2  # limit=2: a's spare was closed
    kept = {name: trees._spares.get(str(tmp_path / name)) for name in names}
    assert kept["a"] is None and kept["b"] is not None and kept["c"] is not None
    trees.close()
    assert len(trees) == 0
