"""sandbox/etc.EtcMirror: the copies of the allowed /etc files that sandboxes see."""

from __future__ import annotations

import os
from pathlib import Path

from lambdad.sandbox.etc import EtcMirror


def mirror(tmp_path: Path) -> tuple[Path, Path, EtcMirror]:
    source, target = tmp_path / "etc", tmp_path / "copies"
    (source / "ssl").mkdir(parents=True)
    (source / "java-17-openjdk").mkdir()
    (source / "hosts").write_text("127.0.0.1 localhost\n")
    (source / "secret").write_text("not allowed\n")
    (tmp_path / "zone").write_text("UTC\n")
    (source / "localtime").symlink_to(tmp_path / "zone")
    return source, target, EtcMirror(source, target, ("hosts", "resolv.conf", "localtime", "ssl"))


def test_allowed_files_are_copied_and_directories_get_mount_points(tmp_path: Path) -> None:
    _, target, etc = mirror(tmp_path)
    etc.refresh(force=True)
    assert sorted(os.listdir(target)) == ["hosts", "java-17-openjdk", "localtime", "ssl"]
    assert (target / "hosts").read_text() == "127.0.0.1 localhost\n"
    assert (target / "localtime").read_text() == "UTC\n"  # the file a symlink names
    assert not (target / "localtime").is_symlink()
    assert (target / "ssl").is_dir() and not os.listdir(target / "ssl")
    assert etc.directories() == ["ssl", "java-17-openjdk"]


def test_changes_reach_the_copies_by_replacing_them(tmp_path: Path) -> None:
    source, target, etc = mirror(tmp_path)
    etc.refresh(force=True)
    before = (target / "hosts").stat().st_ino
    (source / "hosts").write_text("10.0.0.1 changed\n")
    (source / "resolv.conf").write_text("nameserver 10.0.0.53\n")
    etc.refresh()  # within REFRESH_S of the last look: nothing yet
    assert (target / "hosts").read_text() == "127.0.0.1 localhost\n"
    etc.refresh(force=True)
    assert (target / "hosts").read_text() == "10.0.0.1 changed\n"
    assert (target / "hosts").stat().st_ino != before  # a new entry, as a directory bind needs
    assert (target / "resolv.conf").read_text() == "nameserver 10.0.0.53\n"
    (source / "resolv.conf").unlink()
    etc.refresh(force=True)
    assert not (target / "resolv.conf").exists()
