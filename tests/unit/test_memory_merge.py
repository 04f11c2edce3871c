"""sandbox/memory_merge.configure against a sysfs-shaped directory (the real one is global)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lambdad.sandbox.memory_merge import MemoryMergeUnavailable, configure, statistics


@pytest.fixture
def ksm(tmp_path: Path) -> Path:
    values = {"run": 0, "pages_to_scan": 100, "sleep_millisecs": 20, "pages_sharing": 7}
    for name, value in values.items():
        (tmp_path / name).write_text(f"{value}\n")
    return tmp_path


def test_auto_switches_ksmd_on_and_raises_its_scan_rate(ksm: Path) -> None:
    merge = configure("auto", ksm, pages_to_scan=1000, privileged=True)
    assert merge.enabled
    assert merge.detail == "KSM, ksmd scans 1000 pages every 20 ms"
    assert (ksm / "run").read_text() == "1\n"
    assert (ksm / "pages_to_scan").read_text() == "1000\n"


def test_a_faster_scan_rate_the_host_chose_is_kept(ksm: Path) -> None:
    (ksm / "pages_to_scan").write_text("5000\n")
    assert configure("on", ksm, pages_to_scan=1000, privileged=True).enabled
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
