"""The memory reserve (sandbox/memory_reserve.py): what it gives back and fills, on a fake
region and clock; its real region's pages and flags; when `auto` keeps one."""

from __future__ import annotations

import asyncio
import ctypes
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from lambdad.sandbox import cgroups, memory_reserve
from lambdad.sandbox.memory_reserve import (
    CHUNK_BYTES,
    MIB,
    PER_ENVIRONMENT_BYTES,
    SCALE_OUT_STARTING,
    AnonymousRegion,
    MemoryReserve,
    ReserveClient,
)


class FakeRegion:
    def __init__(self, size: int) -> None:
        self.size = size
        self.resident: set[int] = set()  # chunk numbers written
        self.closed = False

    def fill(self, offset: int, length: int) -> None:
        assert length == CHUNK_BYTES and offset % CHUNK_BYTES == 0
        self.resident.add(offset // CHUNK_BYTES)

    def release(self, offset: int, length: int) -> None:
        assert offset // CHUNK_BYTES in self.resident
        self.resident.discard(offset // CHUNK_BYTES)

    def close(self) -> None:
        self.closed = True


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def reserve(size: int, available: int = 1 << 40) -> tuple[MemoryReserve, list[FakeRegion], Clock]:
    regions: list[FakeRegion] = []
    clock = Clock()

    def region(size: int) -> FakeRegion:
        regions.append(FakeRegion(size))
        return regions[-1]

    made = MemoryReserve(
        size, region=region, available=lambda: available, floor_bytes=1 << 30, clock=clock
    )
    made._region = region(made.size_bytes)  # (as start() does, without its threads)
    return made, regions, clock


def fill_all(made: MemoryReserve) -> int:
    steps = 0
    while made.fill_step() == 0:
        steps += 1
    return steps


def test_fills_chunk_by_chunk_until_full() -> None:
    made, (region,), _ = reserve(8 * MIB + 123)
    assert made.size_bytes == 8 * MIB  # whole chunks
    assert fill_all(made) == 8 // (CHUNK_BYTES // MIB)
    assert len(region.resident) * CHUNK_BYTES == made.statistics().held_bytes == 8 * MIB
    assert made.fill_step() > 0  # full: waits


def test_what_is_drawn_is_given_back_and_it_fills_again_when_quiet() -> None:
    made, (region,), clock = reserve(16 * MIB)
    fill_all(made)
    made.draw()
    made.draw()
    released = 0
    while made.release_step():
        released += CHUNK_BYTES
    assert released == 2 * PER_ENVIRONMENT_BYTES
    stats = made.statistics()
    assert stats.held_bytes == 16 * MIB - released and stats.drawn_bytes == released
    assert len(region.resident) * CHUNK_BYTES == stats.held_bytes
    assert made.fill_step() > 0  # drawn a moment ago: not yet
    clock.now += memory_reserve.REFILL_QUIET_S
    fill_all(made)
    stats = made.statistics()
    assert stats.held_bytes == 16 * MIB and stats.refilled_bytes == released


def test_a_draw_beyond_what_it_holds_is_not_owed() -> None:
    made, _, clock = reserve(4 * MIB)
    fill_all(made)
    for _ in range(3):
        made.draw()
    while made.release_step():
        pass
    assert made.statistics().held_bytes == 0
    clock.now += memory_reserve.REFILL_QUIET_S
    fill_all(made)
    assert not made.release_step()  # the 8 MiB drawn beyond it were not kept as a debt
    assert made.statistics().held_bytes == 4 * MIB


def test_it_fills_only_while_the_host_has_memory_to_spare() -> None:
    made, (region,), _ = reserve(8 * MIB, available=(1 << 30) + CHUNK_BYTES - 1)
    assert made.fill_step() > 0
    assert region.resident == set()


def test_memory_short_gives_all_of_it_back() -> None:
    made, (region,), clock = reserve(8 * MIB)
    fill_all(made)
    assert made.give_up() == 8 * MIB
    while made.release_step():
        pass
    assert region.resident == set()
    assert made.statistics().given_up_bytes == 8 * MIB
    assert made.give_up() == 0  # nothing left to give
    assert made.fill_step() > 0  # and not taken back at once
    clock.now += memory_reserve.REFILL_QUIET_S
    fill_all(made)
    assert made.statistics().held_bytes == 8 * MIB


def test_no_reserve_does_nothing() -> None:
    made = MemoryReserve(0)
    made.start()
    made.draw()
    assert made.give_up() == 0
    assert made.statistics() == memory_reserve.ReserveStatistics(0, 0, 0, 0, 0)
    made.close()


def test_its_threads_fill_it_and_give_back_what_is_drawn() -> None:
    made = MemoryReserve(4 * MIB, floor_bytes=0, quiet_s=0.05)
    made.start()
    try:
        deadline = time.monotonic() + 10
        while made.statistics().held_bytes < 4 * MIB:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        made.draw()
        while made.statistics().refilled_bytes < PER_ENVIRONMENT_BYTES:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert made.statistics().drawn_bytes == PER_ENVIRONMENT_BYTES
    finally:
        made.close()


def _resident_pages(region: AnonymousRegion) -> int:
    pages = region.size // os.sysconf("SC_PAGE_SIZE")
    vector = (ctypes.c_ubyte * pages)()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    assert libc.mincore(region.address, region.size, vector) == 0
    return sum(byte & 1 for byte in vector)


def _vm_flags(address: int) -> list[str]:
    lines = Path("/proc/self/smaps").read_text().splitlines()
    for index, line in enumerate(lines):
        if line.split("-", 1)[0] == f"{address:08x}":
            for following in lines[index + 1 :]:
                if following.startswith("VmFlags:"):
                    return following.split()[1:]
    raise AssertionError(f"no mapping at {address:x}")


def test_the_real_region_is_written_and_given_back_and_never_inherited() -> None:
    region = AnonymousRegion(4 * MIB)
    try:
        assert _resident_pages(region) == 0
        region.fill(0, 2 * MIB)
        pages = 2 * MIB // os.sysconf("SC_PAGE_SIZE")
        assert _resident_pages(region) == pages
        region.release(0, MIB)
        assert _resident_pages(region) == pages // 2
        flags = _vm_flags(region.address)
        assert "dc" in flags  # MADV_DONTFORK: no process lambdad forks copies it
        assert "nh" in flags  # no huge pages
        assert "dd" in flags  # not in core dumps
    finally:
        region.close()


def test_free_page_reporting_is_read_from_the_balloon_device(tmp_path: Path) -> None:
    def device(name: str, kind: str, features: str) -> None:
        (tmp_path / name).mkdir()
        (tmp_path / name / "device").write_text(kind + "\n")
        (tmp_path / name / "features").write_text(features + "\n")

    assert not memory_reserve.free_page_reporting(tmp_path / "missing")
    device("virtio1", "0x0002", "0" * 5 + "1" + "0" * 58)  # a block device with bit 5
    device("virtio0", "0x0005", "0110000100" + "0" * 54)  # a balloon without reporting
    assert not memory_reserve.free_page_reporting(tmp_path)
    (tmp_path / "virtio0" / "features").write_text("0110010100" + "0" * 54)  # this VM's
    assert memory_reserve.free_page_reporting(tmp_path)


@pytest.mark.parametrize(
    ("burst", "total", "reporting", "expected"),
    [
        (1000, 24 << 30, True, 4000 * MIB),  # a burst's environments, 4 MiB each
        (1000, 6 << 30, True, 1024 * MIB),  # at most a sixth of the host's memory
        (1000, 24 << 30, False, 0),  # fresh pages cost no more: none
    ],
)
def test_auto_size(burst: int, total: int, reporting: bool, expected: int) -> None:
    size, detail = memory_reserve.auto_size(burst, total, reporting)
    assert size == expected
    assert size % CHUNK_BYTES == 0
    assert ("off" in detail) == (not reporting)


def test_a_cgroup_limit_on_lambdad_or_above_it_is_found() -> None:
    try:
        own = cgroups.process_cgroups()["memory"]
    except (OSError, KeyError):
        pytest.skip("no cgroup v1 memory controller here")
    if os.geteuid() != 0:
        pytest.skip("making cgroups needs root")
    outer = own / f"reserve-test-{os.getpid()}"
    inner = outer / "inner"
    inner.mkdir(parents=True)
    child = None
    try:
        (outer / "memory.limit_in_bytes").write_text(str(1 << 30))
        child = subprocess.Popen(["sleep", "30"])
        (inner / "cgroup.procs").write_text(str(child.pid))
        assert cgroups.memory_limit_bytes(child.pid) == 1 << 30  # the parent's, inherited
        (inner / "memory.limit_in_bytes").write_text(str(512 << 20))
        assert cgroups.memory_limit_bytes(child.pid) == 512 << 20  # the tighter
        (own / "cgroup.procs").write_text(str(child.pid))
        assert cgroups.memory_limit_bytes(child.pid) == cgroups.memory_limit_bytes()
    finally:
        if child is not None:
            child.kill()
            child.wait()
        for directory in (inner, outer):
            for _ in range(50):
                try:
                    directory.rmdir()
                    break
                except OSError:
                    time.sleep(0.02)


async def _until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_the_client_runs_the_reserve_in_a_helper_and_draws_only_for_scale_out() -> None:
    client = ReserveClient(8 * MIB, floor_bytes=0, quiet_s=0.2)
    await client.start()
    try:
        await _until(lambda: client.statistics().held_bytes == 8 * MIB)
        helper = client._helper._proc
        assert helper is not None  # the reserve is the helper's memory, not lambdad's
        rss_kb = next(
            int(line.split()[1])
            for line in Path(f"/proc/{helper.pid}/status").read_text().splitlines()
            if line.startswith("VmRSS:")
        )
        assert rss_kb >= 8 * 1024
        assert Path(f"/proc/{helper.pid}/oom_score_adj").read_text().strip() == "1000"
        for starting in range(1, SCALE_OUT_STARTING):  # cold starts one at a time
            client.draw(starting)
        await asyncio.sleep(0.1)  # (a draw would have been sent and answered by now)
        client.statistics()  # asks for fresh ones
        await asyncio.sleep(0.1)
        assert client.statistics().drawn_bytes == 0
        client.draw(SCALE_OUT_STARTING)
        client.draw(SCALE_OUT_STARTING + 1)  # (both sent in one message)
        await _until(lambda: client.statistics().drawn_bytes == 2 * PER_ENVIRONMENT_BYTES)
        await _until(lambda: client.statistics().refilled_bytes == 2 * PER_ENVIRONMENT_BYTES)
        assert client.give_up() == 8 * MIB
        await _until(lambda: client.statistics().given_up_bytes == 8 * MIB)
    finally:
        await client.close()
    assert client._helper._proc is None  # exited, and the reserve with it


async def test_no_reserve_starts_no_helper() -> None:
    client = ReserveClient(0, floor_bytes=0)
    await client.start()
    client.draw(1000)
    assert client.give_up() == 0
    assert client.statistics() == memory_reserve.ReserveStatistics(0, 0, 0, 0, 0)
    assert not client._helper.alive
    await client.close()


async def test_a_reserve_whose_helper_died_holds_nothing() -> None:
    client = ReserveClient(4 * MIB, floor_bytes=0)
    await client.start()
    try:
        await _until(lambda: client.statistics().held_bytes == 4 * MIB)
        helper = client._helper._proc
        assert helper is not None
        helper.kill()  # as the OOM killer would
        await _until(lambda: not client._helper.alive)
        assert client.statistics().held_bytes == 0
        client.draw(SCALE_OUT_STARTING)  # nothing to send it to: ignored
        assert client.give_up() == 0
    finally:
        await client.close()


def test_serve_takes_a_reserve_in_mb_or_auto(capsys: pytest.CaptureFixture[str]) -> None:
    from lambdad.cli.main import build_parser

    parser = build_parser()
    assert parser.parse_args(["serve"]).memory_reserve is None  # auto
    assert parser.parse_args(["serve", "--memory-reserve", "auto"]).memory_reserve is None
    assert parser.parse_args(["serve", "--memory-reserve", "0"]).memory_reserve == 0
    assert parser.parse_args(["serve", "--memory-reserve", "512"]).memory_reserve == 512
    for bad in ("-1", "lots"):
        with pytest.raises(SystemExit):
            parser.parse_args(["serve", "--memory-reserve", bad])
    assert "--memory-reserve: cannot be negative: -1" in capsys.readouterr().err


async def test_a_reserve_that_cannot_be_mapped_stops_its_helper(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = ReserveClient(1 << 50, floor_bytes=0)  # 1 PiB: beyond any address space
    await client.start()
    try:
        assert not client._helper.alive
        assert "mmap of the memory reserve" in caplog.text
        client.draw(SCALE_OUT_STARTING)  # nothing is sent (it would only fail again)
        assert client.give_up() == 0
        assert client.statistics().held_bytes == 0
    finally:
        await client.close()


def test_serve_refuses_a_reserve_beyond_the_hosts_memory(tmp_path: Path) -> None:
    from lambdad.server import make_memory_reserve
    from lambdad.settings import Settings

    total_mb = memory_reserve.total_memory_bytes() >> 20
    with pytest.raises(SystemExit, match=r"--memory-reserve .* is not less than"):
        make_memory_reserve(Settings(tmp_path, memory_reserve_mb=total_mb + 1))
    assert make_memory_reserve(Settings(tmp_path, memory_reserve_mb=64)).size_bytes == 64 * MIB
    assert make_memory_reserve(Settings(tmp_path, memory_reserve_mb=0)).detail == "off"
