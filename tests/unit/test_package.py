from __future__ import annotations

import base64
import hashlib
import io
import os
import stat
import struct
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from lambdad.control import package
from lambdad.control.package import (
    MAX_UNZIPPED_BYTES,
    MAX_ZIPPED_BYTES,
    UNZIP_FAILED_MESSAGE,
    CodePackage,
    extract_zip,
    inspect_zip,
)
from lambdad.errors import InvalidParameterValueException, RequestEntityTooLargeException

# -- building archives --------------------------------------------------------


@dataclass(frozen=True)
class Member:
    name: str
    data: bytes = b""
    mode: int = 0  # full unix mode (type + permissions); 0 = none, as on Windows
    compress: int = zipfile.ZIP_DEFLATED


def file(name: str, data: bytes = b"x", perms: int = 0o644) -> Member:
    return Member(name, data, stat.S_IFREG | perms)


def link(name: str, target: str) -> Member:
    return Member(name, target.encode(), stat.S_IFLNK | 0o777, zipfile.ZIP_STORED)


def directory(name: str) -> Member:
    return Member(name.rstrip("/") + "/", b"", stat.S_IFDIR | 0o755, zipfile.ZIP_STORED)


def build(*members: Member) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Duplicate name" is deliberate in some tests
        with zipfile.ZipFile(buffer, "w") as archive:
            for member in members:
                info = zipfile.ZipInfo(member.name, date_time=(2020, 1, 1, 0, 0, 0))
                info.create_system = 3
                info.external_attr = member.mode << 16
                info.compress_type = member.compress
                archive.writestr(info, member.data)
    return buffer.getvalue()


def patch_u32(data: bytes, signature: bytes, field_offset: int, value: int) -> bytes:
    """Set a 32-bit field in every header starting with ``signature``."""
    out = bytearray(data)
    start = out.find(signature)
    while start >= 0:
        struct.pack_into("<I", out, start + field_offset, value)
        start = out.find(signature, start + 4)
    return bytes(out)


def patch_flags(data: bytes, bits: int) -> bytes:
    out = bytearray(data)
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        start = out.find(signature)
        (flags,) = struct.unpack_from("<H", out, start + offset)
        struct.pack_into("<H", out, start + offset, flags | bits)
    return bytes(out)


def listing(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def assert_cannot_unzip(data: bytes, tmp_path: Path) -> None:
    with pytest.raises(InvalidParameterValueException) as inspected:
        inspect_zip(data)
    assert inspected.value.message == UNZIP_FAILED_MESSAGE
    dest = tmp_path / "pkg"
    with pytest.raises(InvalidParameterValueException) as extracted:
        extract_zip(data, dest)
    assert extracted.value.message == UNZIP_FAILED_MESSAGE
    assert list(tmp_path.iterdir()) == []


# -- inspect ------------------------------------------------------------------


def test_inspect_describes_package() -> None:
    data = build(file("index.py", b"print(1)\n"), file("lib/a.txt", b"hello"), directory("d"))
    described = inspect_zip(data)
    digest = hashlib.sha256(data).digest()
    assert described == CodePackage(
        sha256_hex=hashlib.sha256(data).hexdigest(),
        code_sha256=base64.b64encode(digest).decode(),
        code_size=len(data),
        unzipped_size=len(b"print(1)\n") + len(b"hello"),
    )


def test_inspect_accepts_empty_archive() -> None:
    assert inspect_zip(build()).unzipped_size == 0


def test_zipped_size_limit_is_checked_before_parsing(tmp_path: Path) -> None:
    too_big = b"PK" + bytes(MAX_ZIPPED_BYTES - 1)
    for call in (lambda: inspect_zip(too_big), lambda: extract_zip(too_big, tmp_path / "p")):
        with pytest.raises(RequestEntityTooLargeException) as caught:
            call()
        assert caught.value.message == "Zipped size must be smaller than 52428800 bytes"
    assert list(tmp_path.iterdir()) == []


def test_zipped_size_exactly_at_limit_is_parsed() -> None:
    with pytest.raises(InvalidParameterValueException):
        inspect_zip(b"PK" + bytes(MAX_ZIPPED_BYTES - 2))


@pytest.mark.parametrize(
    "data",
    [b"", b"not a zip at all", b"PK\x03\x04" + bytes(100)],
    ids=["empty", "garbage", "bad-header"],
)
def test_garbage_is_rejected(data: bytes, tmp_path: Path) -> None:
    assert_cannot_unzip(data, tmp_path)


def test_truncated_archive_is_rejected(tmp_path: Path) -> None:
    data = build(file("a.txt", os.urandom(4096)))
    assert_cannot_unzip(data[: len(data) // 2], tmp_path)


def test_unsupported_compression_is_rejected(tmp_path: Path) -> None:
    member = Member("a.txt", b"data" * 100, stat.S_IFREG | 0o644, zipfile.ZIP_BZIP2)
    assert_cannot_unzip(build(member), tmp_path)


def test_encrypted_entry_is_rejected(tmp_path: Path) -> None:
    assert_cannot_unzip(patch_flags(build(file("a.txt", b"secret")), 0x1), tmp_path)


def test_declared_unzipped_size_over_limit_is_rejected(tmp_path: Path) -> None:
    data = build(file("big", bytes(5000)))
    with pytest.raises(InvalidParameterValueException) as caught:
        inspect_zip(data, max_unzipped=4999)
    assert caught.value.message == "Unzipped size must be smaller than 4999 bytes"
    with pytest.raises(InvalidParameterValueException) as caught:
        extract_zip(data, tmp_path / "pkg", max_unzipped=4999)
    assert caught.value.message == "Unzipped size must be smaller than 4999 bytes"
    assert list(tmp_path.iterdir()) == []
    assert inspect_zip(data, max_unzipped=5000).unzipped_size == 5000


def test_default_unzipped_limit_message() -> None:
    assert MAX_UNZIPPED_BYTES == 262_144_000
    error = package._unzipped_too_large(MAX_UNZIPPED_BYTES)
    assert error.message == "Unzipped size must be smaller than 262144000 bytes"


# -- entry names --------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["../evil", "/abs", "/etc/cron.d/x", "a/../../evil", "a/../b", "..", "a\\..\\evil", "x\\y"],
)
def test_unsafe_names_are_rejected(name: str, tmp_path: Path) -> None:
    assert_cannot_unzip(build(file("ok.txt"), file(name, b"pwned")), tmp_path)


def test_nul_in_name_is_rejected(tmp_path: Path) -> None:
    data = build(file("aQb", b"x")).replace(b"aQb", b"a\x00b")
    assert_cannot_unzip(data, tmp_path)


def test_overlong_component_is_rejected(tmp_path: Path) -> None:
    assert_cannot_unzip(build(file("a" * 256)), tmp_path)


def test_file_below_a_file_is_rejected(tmp_path: Path) -> None:
    assert_cannot_unzip(build(file("a"), file("a/b")), tmp_path)


def test_file_and_directory_with_same_name_are_rejected(tmp_path: Path) -> None:
    assert_cannot_unzip(build(directory("a"), file("a")), tmp_path)


def test_dot_components_are_normalized(tmp_path: Path) -> None:
    dest = tmp_path / "pkg"
    extract_zip(build(directory("./"), file("./a//b.txt", b"hi")), dest)
    assert (dest / "a" / "b.txt").read_bytes() == b"hi"


# -- symlinks -----------------------------------------------------------------


def test_symlinks_inside_package_are_created(tmp_path: Path) -> None:
    data = build(
        file("lib/v1/mod.py", b"X = 1\n"),
        link("lib/current", "v1"),
        link("lib/v1/up", "../current/mod.py"),
        link("top", "lib/current"),
        link("self", "."),
        directory("x/y"),
        link("d", "x/y"),
        link("e", "d/../.."),  # lexically the parent; really x/y/../.. = the package
    )
    dest = tmp_path / "pkg"
    extract_zip(data, dest)
    assert os.readlink(dest / "lib" / "current") == "v1"
    assert (dest / "top" / "mod.py").read_bytes() == b"X = 1\n"
    assert (dest / "lib" / "v1" / "up").read_bytes() == b"X = 1\n"
    assert (dest / "self").resolve() == dest.resolve()
    assert (dest / "e").resolve() == dest.resolve()


@pytest.mark.parametrize(
    "members",
    [
        [link("passwd", "/etc/passwd")],
        [link("a/link", "../../x")],
        [link("up", "..")],
        [link("d", "."), link("e", "d/..")],  # lexically inside, really the parent
        [link("d", "x/y"), link("e", "d/../../..")],
        [link("a", "b"), link("b", "a")],  # a loop
        [link("c", "sub\\..\\..")],
        [link("empty", "")],
    ],
    ids=["absolute", "dotdot", "parent", "via-dot-link", "via-deep-link", "loop", "bs", "empty"],
)
def test_escaping_symlinks_are_rejected(members: list[Member], tmp_path: Path) -> None:
    assert_cannot_unzip(build(file("index.py"), *members), tmp_path)


@pytest.mark.parametrize("link_first", [True, False])
def test_paths_through_a_symlink_are_rejected(link_first: bool, tmp_path: Path) -> None:
    evil = file("lib/evil.txt", b"pwned")
    members = [link("lib", "real"), evil] if link_first else [evil, link("lib", "real")]
    assert_cannot_unzip(build(directory("real"), *members), tmp_path)


def test_file_replacing_a_symlink_is_rejected(tmp_path: Path) -> None:
    assert_cannot_unzip(build(link("a", "b"), file("a", b"x")), tmp_path)


def test_symlink_target_is_never_followed_when_writing(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "area" / "pkg"
    data = build(link("escape", "../../outside"), file("escape/x", b"pwned"))
    with pytest.raises(InvalidParameterValueException):
        extract_zip(data, dest)
    assert list(outside.iterdir()) == []
    assert not dest.exists()


# -- extraction ---------------------------------------------------------------


def test_extract_writes_tree_with_modes(tmp_path: Path) -> None:
    data = build(
        file("bootstrap", b"#!/bin/sh\n", 0o700),
        file("handler.py", b"def h(e, c): return 1\n", 0o600),
        file("lib/deep/x.txt", b"deep"),
        Member("windows.txt", b"w"),
        directory("empty"),
    )
    dest = tmp_path / "pkg"
    written = extract_zip(data, dest)
    assert written == len(b"#!/bin/sh\n") + len(b"def h(e, c): return 1\n") + 4 + 1
    assert listing(dest) == {
        "bootstrap", "handler.py", "lib", "lib/deep", "lib/deep/x.txt", "windows.txt", "empty",
    }  # fmt: skip

    def mode(relative: str) -> int:
        return stat.S_IMODE(os.lstat(dest / relative).st_mode)

    assert mode("bootstrap") == 0o755
    assert mode("handler.py") == 0o644
    assert mode("windows.txt") == 0o644
    assert mode(".") == mode("lib") == mode("lib/deep") == mode("empty") == 0o755
    assert (dest / "lib" / "deep" / "x.txt").read_bytes() == b"deep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pkg"]


def test_extract_size_equals_inspected_size(tmp_path: Path) -> None:
    data = build(file("a", os.urandom(200_000)), file("b/c", bytes(300_000)))
    assert extract_zip(data, tmp_path / "pkg") == inspect_zip(data).unzipped_size == 500_000


def test_duplicate_file_last_entry_wins(tmp_path: Path) -> None:
    data = build(file("a.txt", b"first-and-longer"), file("a.txt", b"second"))
    dest = tmp_path / "pkg"
    assert inspect_zip(data).unzipped_size == len(b"second")
    assert extract_zip(data, dest) == len(b"second")
    assert (dest / "a.txt").read_bytes() == b"second"


def test_extract_creates_missing_parent(tmp_path: Path) -> None:
    dest = tmp_path / "a" / "b" / "pkg"
    extract_zip(build(file("x")), dest)
    assert (dest / "x").is_file()


def test_existing_destination_is_untouched(tmp_path: Path) -> None:
    dest = tmp_path / "pkg"
    dest.mkdir()
    (dest / "keep").write_bytes(b"old")
    with pytest.raises(FileExistsError):
        extract_zip(build(file("new")), dest)
    assert listing(dest) == {"keep"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pkg"]


def test_bad_crc_is_rejected_and_cleaned_up(tmp_path: Path) -> None:
    content = b"A" * 1000
    data = build(Member("a.txt", content, stat.S_IFREG | 0o644, zipfile.ZIP_STORED))
    corrupted = data.replace(content, b"B" + content[1:])
    inspect_zip(corrupted)  # contents are only read when extracting
    with pytest.raises(InvalidParameterValueException) as caught:
        extract_zip(corrupted, tmp_path / "pkg")
    assert caught.value.message == UNZIP_FAILED_MESSAGE
    assert list(tmp_path.iterdir()) == []


def test_bomb_lying_about_sizes_is_stopped(tmp_path: Path) -> None:
    data = build(file("zeros", bytes(20_000_000)))
    assert len(data) < 100_000
    lying = patch_u32(data, b"PK\x03\x04", 22, 100)  # local header: uncompressed size
    lying = patch_u32(lying, b"PK\x01\x02", 24, 100)  # central directory: same
    assert inspect_zip(lying).unzipped_size == 100
    with pytest.raises(InvalidParameterValueException):
        extract_zip(lying, tmp_path / "pkg", max_unzipped=1000)
    assert list(tmp_path.iterdir()) == []


def test_decompressed_bytes_are_counted_while_extracting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Disable the check of the declared sizes: only the streaming count is left.
    real_plan = package._plan
    monkeypatch.setattr(package, "_plan", lambda archive, limit: real_plan(archive, 2**62))
    data = build(file("a", bytes(300_000)), file("b", bytes(300_000)))
    with pytest.raises(InvalidParameterValueException) as caught:
        extract_zip(data, tmp_path / "pkg", max_unzipped=500_000)
    assert caught.value.message == "Unzipped size must be smaller than 500000 bytes"
    assert list(tmp_path.iterdir()) == []


def test_copy_capped_stops_at_budget() -> None:
    source = io.BytesIO(bytes(1_000_000))
    sink = io.BytesIO()
    with pytest.raises(InvalidParameterValueException) as caught:
        package._copy_capped(source, sink, 100_000, 123)
    assert caught.value.message == "Unzipped size must be smaller than 123 bytes"
    assert len(sink.getvalue()) <= 100_000
    assert source.tell() <= 100_000 + 64 * 1024


def test_copy_capped_copies_within_budget() -> None:
    sink = io.BytesIO()
    assert package._copy_capped(io.BytesIO(b"abc" * 50_000), sink, 150_000, 150_000) == 150_000
    assert sink.getvalue() == b"abc" * 50_000
