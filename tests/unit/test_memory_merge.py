"""sandbox/memory_merge.configure against a sysfs-shaped directory (the real one is global)."""

from __future__ import annotations

import asyncio
import contextlib
import re
from pathlib import Path

import pytest

from lambdad.sandbox import memory_merge
from lambdad.sandbox.memory_merge import (
    MemoryMergeUnavailable,
    configure,
    pace_with_load,
    statistics,
)


@pytest.fixture
def ksm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    values = {"run": 0, "pages_to_scan": 100, "sleep_millisecs": 20, "pages_sharing": 7}
    for name, value in values.items():
        (tmp_path / name).write_text(f"{value}\n")
    # the lambdads sharing this fake host's ksmd: never the real host's record
    monkeypatch.setattr(memory_merge, "SHARERS_DIR", tmp_path / "sharers")
    return tmp_path


def test_the_last_of_two_lambdads_to_stop_puts_the_hosts_pace_back(ksm: Path) -> None:
    first = configure("auto", ksm, pages_to_scan=1000, privileged=True)
    second = configure("auto", ksm, pages_to_scan=1000, privileged=True)  # starts at 1000
    assert first.pace is not None and second.pace is not None
    assert second.pace.hosts == 100 and second.pace.busy == 100  # the host's, not the first's
    first.pace.restore()
    assert (ksm / "pages_to_scan").read_text() == "1000\n"  # the second still paces it
    second.pace.restore()
    assert (ksm / "pages_to_scan").read_text() == "100\n"
    second.pace.restore()  # once only
    third = configure("auto", ksm, pages_to_scan=1000, privileged=True)
    assert third.pace is not None and third.pace.hosts == 100


def test_lambdads_that_died_without_stopping_are_dropped_and_the_hosts_pace_kept(
    ksm: Path,
) -> None:
    sharers = ksm / "sharers"
    sharers.mkdir()
    (sharers / "original").write_text("100\n")  # recorded by the first of them
    (sharers / "member-999999999-12345-0").touch()  # no such process
    (ksm / "pages_to_scan").write_text("1000\n")  # the pace they left
    merge = configure("auto", ksm, pages_to_scan=1000, privileged=True)
    assert merge.pace is not None and merge.pace.hosts == 100
    assert [p.name for p in sharers.glob("member-*")] != ["member-999999999-12345-0"]
    merge.pace.restore()
    assert (ksm / "pages_to_scan").read_text() == "100\n"
    assert not list(sharers.glob("member-*")) and not (sharers / "original").exists()


def test_auto_switches_ksmd_on_and_raises_its_scan_rate(ksm: Path) -> None:
    merge = configure("auto", ksm, pages_to_scan=1000, privileged=True)
    assert merge.enabled
    assert merge.detail == (
        "KSM, ksmd scans 1000 pages every 20 ms while environments are quiet "
        "(100 while invocations flow, and once it stops finding pages to share)"
    )
    assert (ksm / "run").read_text() == "1\n"
    assert (ksm / "pages_to_scan").read_text() == "1000\n"


def test_the_pace_is_the_hosts_while_busy_and_when_lambdad_stops(ksm: Path) -> None:
    merge = configure("auto", ksm, pages_to_scan=1000, privileged=True)
    assert merge.pace is not None
    merge.pace.set_busy(True)
    assert (ksm / "pages_to_scan").read_text() == "100\n"
    merge.pace.set_busy(False)
    assert (ksm / "pages_to_scan").read_text() == "1000\n"
    (ksm / "pages_to_scan").write_text("7\n")  # another lambdad's: the next look rewrites it
    merge.pace.set_busy(False)
    assert (ksm / "pages_to_scan").read_text() == "1000\n"
    merge.pace.restore()
    assert (ksm / "pages_to_scan").read_text() == "100\n"


def test_a_pace_left_by_an_earlier_lambdad_is_not_taken_for_the_hosts_busy_one(ksm: Path) -> None:
    (ksm / "pages_to_scan").write_text("1000\n")  # what lambdad raises it to, never restored
    merge = configure("auto", ksm, pages_to_scan=1000, privileged=True)
    assert merge.pace is not None
    merge.pace.set_busy(True)
    assert (ksm / "pages_to_scan").read_text() == "100\n"
    merge.pace.restore()
    assert (ksm / "pages_to_scan").read_text() == "1000\n"


async def test_the_pace_follows_the_invocation_rate(ksm: Path) -> None:
    merge = configure("auto", ksm, pages_to_scan=1000, privileged=True)
    assert merge.pace is not None
    count, working = [0], [0]
    pacing = asyncio.ensure_future(
        pace_with_load(
            merge.pace,
            lambda: count[0],
            lambda: working[0],
            interval=0.05,
            busy_per_s=100,
            busy_environments=3,
        )
    )
    try:
        await asyncio.sleep(0.12)
        assert not merge.pace.is_busy  # nothing ran
        for _ in range(6):  # 10 a look: 200 a second
            count[0] += 10
            await asyncio.sleep(0.05)
        assert merge.pace.is_busy
        assert (ksm / "pages_to_scan").read_text() == "100\n"
        await asyncio.sleep(0.12)  # quiet again
        assert not merge.pace.is_busy
        assert (ksm / "pages_to_scan").read_text() == "1000\n"
        working[0] = 3  # a burst: few new invocations, many environments starting
        await asyncio.sleep(0.12)
        assert merge.pace.is_busy
        working[0] = 0
        await asyncio.sleep(0.12)
        assert not merge.pace.is_busy
    finally:
        pacing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pacing
    assert (ksm / "pages_to_scan").read_text() == "100\n"  # the host's pace, back at the end


def test_a_faster_scan_rate_the_host_chose_is_kept(ksm: Path) -> None:
    (ksm / "pages_to_scan").write_text("5000\n")
    merge = configure("on", ksm, pages_to_scan=1000, privileged=True)
    assert merge.enabled and merge.detail == "KSM, ksmd scans 5000 pages every 20 ms"
    assert (ksm / "pages_to_scan").read_text() == "5000\n"
    assert merge.pace is not None
    merge.pace.set_busy(True)  # the host's pace is the faster one: kept either way
    assert (ksm / "pages_to_scan").read_text() == "5000\n"


def test_off_touches_nothing(ksm: Path) -> None:
    merge = configure("off", ksm, privileged=True)
    assert not merge.enabled
    assert merge.statistics == {}
    assert (ksm / "run").read_text() == "0\n"


@pytest.mark.parametrize(
    ("present", "privileged", "reason"),
    [
        (False, True, "this kernel has no samepage merging (KSM)"),
        (True, False, "not running as root: switching KSM on and opting in need root"),
    ],
)
def test_auto_reports_why_not_and_on_refuses(
    ksm: Path, present: bool, privileged: bool, reason: str
) -> None:
    if not present:
        (ksm / "run").unlink()
    merge = configure("auto", ksm, privileged=privileged)
    assert (merge.enabled, merge.detail) == (False, reason)
    with pytest.raises(MemoryMergeUnavailable, match=re.escape(f"--memory-merge on, but {reason}")):
        configure("on", ksm, privileged=privileged)


def test_an_unwritable_switch_is_a_reason(ksm: Path) -> None:
    (ksm / "run").unlink()
    (ksm / "run").mkdir()  # writing it fails as a read-only sysfs file would
    merge = configure("auto", ksm, privileged=True)
    assert not merge.enabled
    assert merge.detail.startswith("cannot switch KSM on (")


def test_statistics_reads_what_the_kernel_counts(ksm: Path) -> None:
    assert statistics(ksm) == {"pages_sharing": 7}


async def test_the_pace_settles_once_ksmd_stopped_finding_pages_since_the_last_work(
    ksm: Path,
) -> None:
    merge = configure("auto", ksm, pages_to_scan=1000, privileged=True)
    assert merge.pace is not None
    count, scans, sharing = [0], [40], [500]
    pacing = asyncio.ensure_future(
        pace_with_load(
            merge.pace,
            lambda: count[0],
            lambda: 0,
            interval=0.05,
            busy_per_s=100,
            counters=lambda: (scans[0], sharing[0]),
        )
    )

    async def full_scan(shared_more: int = 0) -> None:
        scans[0] += 1
        sharing[0] += shared_more
        await asyncio.sleep(0.08)

    try:
        await asyncio.sleep(0.12)
        assert (ksm / "pages_to_scan").read_text() == "1000\n"  # quiet: fast, to merge
        await full_scan(shared_more=30)
        await full_scan(shared_more=20)  # two scans since, but still finding pages
        assert not merge.pace.settled
        await full_scan()  # found none: settled
        assert merge.pace.settled and not merge.pace.is_busy
        assert (ksm / "pages_to_scan").read_text() == "100\n"
        count[0] += 1  # one invocation: new pages to merge, fast again
        await asyncio.sleep(0.07)
        assert not merge.pace.settled
        assert (ksm / "pages_to_scan").read_text() == "1000\n"
        await full_scan()  # one scan since: not yet, though it found nothing
        assert not merge.pace.settled
        await full_scan()
        assert merge.pace.settled
    finally:
        pacing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pacing
