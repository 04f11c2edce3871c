"""Memory merging: the kernel's samepage merging (KSM) for execution environments.

Environments of one runtime are forks of one zygote, and environments of one function run the
same init: most pages they dirty after the fork hold the same bytes (reference counts bumped the
same way, the same handler module, the same buffers). With KSM, the kernel's ksmd thread finds
such pages and keeps one write-protected copy; a write copies it again. An idle environment then
costs what is really its own (~1.2 MB for a Python one, against ~4.5 MB without).

Two halves: `configure` switches ksmd on for the host (root only; processes that did not opt in
are never scanned), and each zygote opts itself and everything it forks in with
prctl(PR_SET_MEMORY_MERGE) — see guest/lambdad_zygote.py (`LAMBDAD_MEMORY_MERGE`).

ksmd's pace follows the load (`MergePace`, `pace_with_load`): fast while lambdad's environments
are quiet, so idle ones settle within seconds; the kernel's default pace while invocations flow,
when busy environments would copy merged pages again on their next write anyway (at the fast
pace ksmd took 13% of this 2-core machine's CPU under the bench's throughput load), and again
once nothing has run for two of ksmd's full scans and it stopped finding pages to share (at the
fast pace ksmd rescanned the zygotes for ever: ~10% of a core with lambdad idle and no
environment; ~3.5% at the kernel's default).

The price is a timing side channel between environments that share the machine: a write to a
merged page takes longer, so code can learn whether another environment holds a page with the
same bytes. `--memory-merge off` closes it (see docs/security.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from lambdad.sandbox.host_lock import locked_directory

KSM_DIR = Path("/sys/kernel/mm/ksm")
# Pages ksmd looks at per wake-up (every sleep_millisecs, 20 ms by default): 1,000 is 200 MB/s,
# so a hundred idle environments settle within about two seconds. The kernel's default (100)
# would take twenty. It is raised only, never lowered below what the host chose; while
# invocations flow it is the kernel's default (unless the host chose a faster pace: kept).
PAGES_TO_SCAN = 1000
KERNEL_PAGES_TO_SCAN = 100
STATISTICS = ("pages_shared", "pages_sharing", "pages_unshared", "full_scans")
# The load is looked at this often; at this many invocations a second or more, or this many
# environments starting or running an invocation, it is "busy".
PACE_INTERVAL_S = 0.5
BUSY_INVOCATIONS_PER_S = 200
BUSY_ENVIRONMENTS = 32
# Quiet for this many of ksmd's full scans (every page looked at since), the last of which
# shared no page more or fewer: the pace settles.
SETTLE_SCANS = 2

# Where the lambdads running on this host note that they pace ksmd, and the pace the host had
# before the first of them (see Sharers).
SHARERS_DIR = Path("/run/lambdad-ksm")

MERGE_NOTE = (
    "memory merging (KSM) is on: identical memory pages are shared between environments, "
    "a timing side channel between functions (--memory-merge off closes it)"
)

Mode = Literal["auto", "on", "off"]
MODES: tuple[Mode, ...] = ("auto", "on", "off")


class MemoryMergeUnavailable(RuntimeError):
    """`--memory-merge on`, but this host cannot merge (no KSM, or not root)."""


class Sharers:
    """The lambdads on this host that pace ksmd, and the pace the host had before the first.

    Each running lambdad holds a file in `directory` named by its pid, its start time and a
    serial number; the first to join (no live member left) records the host's pages_to_scan,
    and the last to leave gets it back to restore (if they all died, the next first one keeps
    that record rather than the pace they left). Without this, a lambdad started while
    another had raised the pace took the raised pace for the host's and left it raised. A
    member that died without leaving is dropped by the next one to join or leave. All of it
    under an exclusive lock on `directory`."""

    _serial = itertools.count()

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._member = f"{os.getpid()}-{_start_time(os.getpid())}-{next(self._serial)}"

    def join(self, current: int) -> int:
        """Register this lambdad; the host's own pace (`current` when it is the first)."""
        with locked_directory(self._directory, 0o700):
            original = self._directory / "original"
            self._live_members()  # drops the dead
            if not original.exists():  # (left by members that all died: still the host's)
                original.write_text(f"{current}\n")
            (self._directory / f"member-{self._member}").touch()
            return _read_int(original)

    def leave(self) -> int | None:
        """Unregister: the host's own pace when this was the last lambdad, else None."""
        with locked_directory(self._directory, 0o700):
            with contextlib.suppress(FileNotFoundError):
                (self._directory / f"member-{self._member}").unlink()
            if self._live_members():
                return None
            original = self._directory / "original"
            try:
                return _read_int(original)
            except (OSError, ValueError):
                return None
            finally:
                with contextlib.suppress(FileNotFoundError):
                    original.unlink()

    def _live_members(self) -> list[Path]:
        live = []
        for path in self._directory.glob("member-*"):
            pid, start, _ = path.name.removeprefix("member-").split("-")
            if _start_time(int(pid)) == start:
                live.append(path)
            else:  # that lambdad died without leaving
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        return live


def _start_time(pid: int) -> str:
    """The process's start time (clock ticks since boot), "" when there is no such process:
    with the pid, it names one process even after the pid is reused."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        return ""


class MergePace:
    """Sets ksmd's pages_to_scan for lambdad's load: `quiet` pages per wake-up while the
    environments are quiet, `busy` while invocations flow. Writes on every call (another
    lambdad on the host may have set its own); `restore` writes back what the host had before
    lambdad — the first of those running — started, when it is the last to stop."""

    def __init__(
        self, pages_to_scan: Path, quiet: int, busy: int, hosts: int, sharers: Sharers
    ) -> None:
        self._path = pages_to_scan
        self.quiet = quiet
        self.busy = busy
        self.hosts = hosts
        self.is_busy = False
        self.settled = False
        self._sharers: Sharers | None = sharers

    @property
    def state(self) -> str:
        """ "busy", "quiet" (fast, to merge what is new) or "settled"."""
        return "busy" if self.is_busy else "settled" if self.settled else "quiet"

    def set_busy(self, busy: bool) -> None:
        self.is_busy, self.settled = busy, False
        self._write(self.busy if busy else self.quiet)

    def set_settled(self) -> None:
        """Quiet, and ksmd has looked at every page since: nothing new to merge, so the pace
        drops to the busy one (the kernel's default) instead of rescanning at the fast pace
        for ever (with only the zygotes to scan, that was ~10% of a core on an idle host)."""
        self.is_busy, self.settled = False, True
        self._write(self.busy)

    def restore(self) -> None:
        sharers, self._sharers = self._sharers, None
        if sharers is None:
            return  # restored already
        try:
            hosts = sharers.leave()
        except OSError:
            hosts = self.hosts
        if hosts is not None:
            self._write(hosts)

    def _write(self, pages: int) -> None:
        with contextlib.suppress(OSError):
            self._path.write_text(f"{pages}\n")


async def pace_with_load(
    pace: MergePace,
    invocations: Callable[[], int],
    working: Callable[[], int],
    interval: float = PACE_INTERVAL_S,
    busy_per_s: float = BUSY_INVOCATIONS_PER_S,
    busy_environments: int = BUSY_ENVIRONMENTS,
    counters: Callable[[], tuple[int, int] | None] | None = None,
) -> None:
    """Every `interval`, set ksmd's pace from the invocations asked for since the last look
    (`invocations` counts them all so far) and the environments `working` (starting or
    running an invocation) now. Once nothing has run for `SETTLE_SCANS` of ksmd's full scans
    and its last full scan shared no page more or fewer (`counters`: ksmd's full scans and
    pages_sharing, None if unknown), the pace is settled (`MergePace.set_settled`) until
    something runs again. Runs until cancelled, then puts the host's pace back."""
    read = counters or (lambda: _scan_counters(KSM_DIR))
    seen = invocations()
    last = read()  # ksmd's counters when a full scan was last seen to end
    quiet_from = last[0] if last else None  # its full scans when lambdad last ran something
    try:
        while True:
            await asyncio.sleep(interval)
            now, busy_now, found = invocations(), working(), read()
            scan_ended = found is not None and last is not None and found[0] != last[0]
            if now != seen or busy_now:
                rate_busy = now - seen >= busy_per_s * interval
                pace.set_busy(rate_busy or busy_now >= busy_environments)
                quiet_from = found[0] if found else None
            elif pace.settled or (scan_ended and _stopped_sharing(found, last, quiet_from)):
                pace.set_settled()
            else:
                pace.set_busy(False)
            if scan_ended or last is None:
                last = found
            seen = now
    finally:
        pace.restore()


def _stopped_sharing(
    found: tuple[int, int] | None, last: tuple[int, int] | None, quiet_from: int | None
) -> bool:
    """A full scan just ended (`found` against `last`) sharing no page more or fewer, at least
    SETTLE_SCANS full scans after lambdad last ran something."""
    if found is None or last is None or quiet_from is None:
        return False
    return found[1] == last[1] and found[0] - quiet_from >= SETTLE_SCANS


def _scan_counters(ksm_dir: Path) -> tuple[int, int] | None:
    """ksmd's full scans so far and the pages it now shares (pages_sharing)."""
    try:
        return _read_int(ksm_dir / "full_scans"), _read_int(ksm_dir / "pages_sharing")
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class MemoryMerge:
    enabled: bool
    detail: str  # how it runs, or why it does not
    pace: MergePace | None = None  # while enabled

    @property
    def statistics(self) -> dict[str, int | str]:
        """KSM's counters, and the pace lambdad keeps (MergePace.state)."""
        if not self.enabled:
            return {}
        pace = {"pace": self.pace.state} if self.pace is not None else {}
        return {**statistics(), **pace}


def configure(
    mode: Mode,
    ksm_dir: Path = KSM_DIR,
    pages_to_scan: int = PAGES_TO_SCAN,
    privileged: bool | None = None,
    sharers_dir: Path | None = None,
) -> MemoryMerge:
    """Switch ksmd on for lambdad's environments, as `mode` asks and the host allows."""
    if mode == "off":
        return MemoryMerge(False, "off (--memory-merge off)")
    reason = _unavailable(ksm_dir, os.geteuid() == 0 if privileged is None else privileged)
    hosts = 0
    sharers = Sharers(SHARERS_DIR if sharers_dir is None else sharers_dir)
    if reason is None:
        joined = False
        try:
            hosts = sharers.join(_read_int(ksm_dir / "pages_to_scan"))
            joined = True
            _raise_to(ksm_dir / "pages_to_scan", pages_to_scan)
            (ksm_dir / "run").write_text("1\n")
        except OSError as exc:
            reason = f"cannot switch KSM on ({exc.strerror or exc})"
            if joined:
                with contextlib.suppress(OSError):
                    sharers.leave()
    if reason is not None:
        if mode == "on":
            raise MemoryMergeUnavailable(f"--memory-merge on, but {reason}")
        return MemoryMerge(False, reason)
    scan = _read_int(ksm_dir / "pages_to_scan")
    sleep = _read_int(ksm_dir / "sleep_millisecs")
    # A host value between the kernel's default and ours may be an earlier lambdad's, left by
    # a crash: while busy, the kernel's default is used whatever it was.
    busy = scan if hosts > pages_to_scan else min(hosts, KERNEL_PAGES_TO_SCAN)
    pace = MergePace(ksm_dir / "pages_to_scan", scan, busy, hosts, sharers)
    detail = f"KSM, ksmd scans {scan} pages every {sleep} ms"
    if busy < scan:
        detail += (
            f" while environments are quiet ({busy} while invocations flow, and once it "
            "stops finding pages to share)"
        )
    return MemoryMerge(True, detail, pace)


def statistics(ksm_dir: Path = KSM_DIR) -> dict[str, int]:
    """The host's KSM counters (pages_sharing: pages that are saved by merging)."""
    found: dict[str, int] = {}
    for name in STATISTICS:
        with contextlib.suppress(OSError, ValueError):
            found[name] = _read_int(ksm_dir / name)
    return found


def _unavailable(ksm_dir: Path, privileged: bool) -> str | None:
    if not (ksm_dir / "run").exists():
        return "this kernel has no samepage merging (KSM)"
    if not privileged:
        return "not running as root: switching KSM on and opting in need root"
    return None


def _raise_to(path: Path, value: int) -> None:
    if _read_int(path) < value:
        path.write_text(f"{value}\n")


def _read_int(path: Path) -> int:
    return int(path.read_text().split()[0])
