"""The memory reserve: host-backed memory kept for the pages new environments write first.

Where the machine is a virtual machine whose balloon device reports free memory to the
hypervisor (virtio-balloon's free page reporting), the guest's free pages are handed back to
the host a few seconds after they are freed, and the next write to each one faults in the host
as well: ~3-6 µs a page here, against ~1 µs for a page the host still backs. A new environment
writes ~800 fresh pages (the zygote's pages it copies, its page tables and kernel objects), so
from memory long free its start cost ~4 ms more of CPU: in a burst of 1,000 on this 2-core VM,
about as much as everything else an environment costs.

The reserve is memory written once, while the host is quiet, and held. While
environments start several at once (a function scaling out), each one that starts *draws* on
it: a thread of the reserve gives 4 MiB back to the kernel (MADV_DONTNEED), whose free lists
then hold pages the host still backs, and the next environments' first writes take those.
Once nothing has been drawn for `REFILL_QUIET_S`, another thread takes memory back, a chunk
at a time, while the host has memory to spare: the host's faults happen then, at the lowest
CPU priority, not during the next burst. While the host is short of memory the whole reserve
is given back first, before any idle environment is evicted (`PoolManager.evict`).

It is held by a helper process of lambdad's (`serve_reserve`; its RSS shows it), excluded from
huge pages (a freed huge page is reported at once), from core dumps and from any process that
helper might fork; the kernel's OOM killer takes that helper first (oom_score_adj 1000), and
lambdad does not start it again.

`--memory-reserve auto` (the default) keeps one only where free page reporting is on: enough
for a function's burst of new environments (`--burst`, 4 MiB each), at most a sixth of the
host's memory or of lambdad's cgroup limit, which its environments are charged under too.
Elsewhere a fresh page costs what a reused one does, and it is 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from lambdad.sandbox.helper import HelperError, HelperProcess, serve

log = logging.getLogger(__name__)

MIB = 1 << 20
# The unit of filling and giving back (a chunk's page faults take ~0.3-1 ms, the helper's
# mmap lock held, its other thread's madvise waiting).
CHUNK_BYTES = MIB
# What one environment draws as it starts: a forked Python environment writes ~3.3 MB of
# fresh memory (2.6 of copied pages, 0.6 of kernel objects, 0.1 of page tables; measured).
PER_ENVIRONMENT_BYTES = 4 * MIB
# Environments draw while this many or more are starting at once (a function scaling out).
SCALE_OUT_STARTING = 4
REFILL_QUIET_S = 2.0  # nothing drawn for this long: the reserve fills again
MAX_SHARE_OF_MEMORY = 6  # auto: at most MemTotal / 6
VIRTIO_DEVICES = Path("/sys/bus/virtio/devices")
VIRTIO_ID_BALLOON = 0x0005
VIRTIO_BALLOON_F_REPORTING = 5  # the feature bit of free page reporting

PROT_READ, PROT_WRITE = 0x1, 0x2
MAP_PRIVATE, MAP_ANONYMOUS, MAP_NORESERVE = 0x02, 0x20, 0x4000
MADV_DONTNEED, MADV_DONTFORK, MADV_DONTDUMP, MADV_NOHUGEPAGE = 4, 10, 16, 15
MAP_FAILED = ctypes.c_void_p(-1).value


class Region(Protocol):
    """Anonymous memory the reserve fills and gives back, by byte range."""

    size: int

    def fill(self, offset: int, length: int) -> None: ...

    def release(self, offset: int, length: int) -> None: ...

    def close(self) -> None: ...


class AnonymousRegion:
    """A private anonymous mapping, written and given back through libc (ctypes releases the
    GIL for each call: the helper's other thread and its request loop run on meanwhile)."""

    def __init__(self, size: int) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._libc.mmap.restype = ctypes.c_void_p
        self._libc.mmap.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
            ctypes.c_long,
        ]  # fmt: skip
        self._libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        self._libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        self._libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
        flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE
        address = self._libc.mmap(None, size, PROT_READ | PROT_WRITE, flags, -1, 0)
        if address in (None, MAP_FAILED):
            code = ctypes.get_errno()
            raise OSError(code, f"mmap of the memory reserve: {os.strerror(code)}")
        self.address: int = address
        self.size = size
        for advice in (MADV_DONTFORK, MADV_NOHUGEPAGE, MADV_DONTDUMP):
            self._libc.madvise(address, size, advice)  # (best effort: each is a hint)

    def fill(self, offset: int, length: int) -> None:
        """Write the pages from user space rather than with MADV_POPULATE_WRITE: each page's
        fault then returns to user space, where a task that woke may take the CPU, instead of
        the kernel faulting in the whole chunk in one go."""
        self._libc.memset(self.address + offset, 1, length)

    def release(self, offset: int, length: int) -> None:
        self._libc.madvise(self.address + offset, length, MADV_DONTNEED)

    def close(self) -> None:
        if self.size:
            self._libc.munmap(self.address, self.size)
            self.size = 0


@dataclass(frozen=True)
class ReserveStatistics:
    size_bytes: int  # what it holds when full (0: no reserve)
    held_bytes: int  # what it holds now
    drawn_bytes: int  # given back for environments that started, in all
    refilled_bytes: int  # taken back after draws, in all
    given_up_bytes: int  # given back because the host was short of memory, in all


class MemoryReserve:
    """The reserve itself, run in its helper process (`serve_reserve`): `draw` and `give_up`
    only note what to give back; its own threads do the work."""

    def __init__(
        self,
        size_bytes: int,
        *,
        region: Callable[[int], Region] = AnonymousRegion,
        available: Callable[[], int] | None = None,
        floor_bytes: int = 512 * MIB,
        quiet_s: float = REFILL_QUIET_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`available`: the host's available memory (MemAvailable); the reserve only fills
        while that stays above `floor_bytes` after the chunk."""
        self._chunks = max(0, size_bytes // CHUNK_BYTES)
        self._make_region = region
        self._available = available or available_memory_bytes
        self._floor = floor_bytes
        self._quiet = quiet_s
        self._clock = clock
        self._region: Region | None = None
        # Chunks 0 .. _held - 1 are filled: fills add the next one, releases take the last,
        # one at a time (`_work`), so what is held stays that prefix.
        self._held = 0
        self._to_release = 0  # bytes drawn and not yet given back
        self._last_draw = float("-inf")
        self._drawn = self._refilled = self._given_up = 0
        self._lock = threading.Lock()  # the counters
        self._work = threading.Lock()  # one fill or release of the region at a time
        self._drawn_event = threading.Event()  # set by draws: the releasing thread wakes
        self._fill_event = threading.Event()  # set only to stop the filling thread
        self._closed = False
        self._threads: list[threading.Thread] = []

    @property
    def size_bytes(self) -> int:
        return self._chunks * CHUNK_BYTES

    def start(self) -> None:
        """Map the reserve and start its threads: one gives back what is drawn (at once: it
        is cheap, ~0.3 µs a page, and the environments starting want it now), one fills at
        the lowest CPU priority."""
        if self._chunks == 0 or self._threads:
            return
        self._region = self._make_region(self.size_bytes)
        for name, target in (("release", self._release_drawn), ("fill", self._fill_when_quiet)):
            thread = threading.Thread(target=target, name=f"lambdad-reserve-{name}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def draw(self, nbytes: int = PER_ENVIRONMENT_BYTES) -> None:
        """Give `nbytes` of the reserve back to the kernel (environments are starting: their
        first writes take those pages). Beyond what it holds, nothing is owed."""
        if self._chunks == 0:
            return
        with self._lock:
            self._to_release += nbytes
            self._drawn += nbytes
            self._last_draw = self._clock()
        self._drawn_event.set()

    def give_up(self) -> int:
        """The host is short of memory: give all of it back (refilled once memory is above the
        floor again and no environment started for a while). The bytes it held."""
        with self._lock:
            held = self._held * CHUNK_BYTES
            self._to_release = max(self._to_release, held)
            self._given_up += held
            self._last_draw = self._clock()
        if held:
            self._drawn_event.set()
        return held

    def statistics(self) -> ReserveStatistics:
        with self._lock:
            return ReserveStatistics(
                self.size_bytes,
                self._held * CHUNK_BYTES,
                self._drawn,
                self._refilled,
                self._given_up,
            )

    def close(self) -> None:
        self._closed = True
        self._drawn_event.set()
        self._fill_event.set()
        for thread in self._threads:
            thread.join()
        self._threads.clear()
        if self._region is not None:
            self._region.close()
            self._region = None

    # the reserve's threads ---------------------------------------------------------------------
    def _release_drawn(self) -> None:
        while not self._closed:
            if not self.release_step():
                self._drawn_event.wait()
                self._drawn_event.clear()

    def _fill_when_quiet(self) -> None:
        os.setpriority(os.PRIO_PROCESS, 0, 19)  # (Linux: this thread's own nice value)
        while not self._closed:
            wait = self.fill_step()
            if wait > 0:
                self._fill_event.wait(wait)

    def release_step(self) -> bool:
        """Give back one chunk of what was drawn; whether there was one."""
        with self._work:
            with self._lock:
                region = self._region
                if region is None or self._to_release <= 0 or not self._held:
                    self._to_release = 0  # (drawn beyond what it holds: nothing more to give)
                    return False
                chunk = self._held - 1
            region.release(chunk * CHUNK_BYTES, CHUNK_BYTES)
            with self._lock:
                self._held = chunk
                self._to_release = max(0, self._to_release - CHUNK_BYTES)
        return True

    def fill_step(self) -> float:
        """Fill one chunk if the reserve is not full, nothing was drawn for `quiet_s` and the
        host has memory to spare; how long to wait before the next step (0: at once)."""
        with self._lock:
            if self._region is None or self._held == self._chunks:
                return 1.0  # full
            quiet_for = self._clock() - self._last_draw
            if quiet_for < self._quiet or self._to_release > 0:
                return max(self._quiet - quiet_for, 0.1)
        if self._available() - CHUNK_BYTES < self._floor:
            return 1.0  # the host has no memory to spare for it now
        with self._work:
            with self._lock:
                region, chunk = self._region, self._held
            if region is None or chunk == self._chunks:
                return 1.0
            try:
                region.fill(chunk * CHUNK_BYTES, CHUNK_BYTES)
            except OSError:
                return 1.0
            with self._lock:
                self._held = chunk + 1  # (drawn meanwhile: the releasing thread gives it back)
                if self._drawn or self._given_up:
                    self._refilled += CHUNK_BYTES
                drawn = self._to_release > 0
        if drawn:
            self._drawn_event.set()
        return 0.0


class ReserveClient:
    """lambdad's side: the reserve lives in a helper process of its own (`serve_reserve`),
    so that neither its threads (the GIL: in a burst, lambdad's event loop waited ~0.2 s more
    for it while they ran in lambdad) nor its page faults (lambdad's mmap lock) hold up
    lambdad. Draws are sent once per turn of the event loop; the statistics are the helper's
    last reply (each reply carries them), refreshed whenever they are read."""

    def __init__(
        self,
        size_bytes: int,
        *,
        floor_bytes: int,
        quiet_s: float = REFILL_QUIET_S,
        detail: str = "",
    ) -> None:
        """`detail`: how its size was chosen, in words (the banner and status show it)."""
        self.size_bytes = size_bytes - size_bytes % CHUNK_BYTES
        self.detail = detail
        self._settings = {"size": self.size_bytes, "floor": floor_bytes, "quiet": quiet_s}
        self._helper = HelperProcess("lambdad.sandbox.memory_reserve:serve_reserve")
        self._stats = ReserveStatistics(self.size_bytes, 0, 0, 0, 0)
        self._to_draw = 0  # bytes drawn since the last message
        self._sending = False
        self._refreshing = False
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        """Start the helper, which maps the reserve and starts filling it."""
        if self.size_bytes == 0:
            return
        self._helper.start()
        if not await self._ask({"op": "start", **self._settings}):
            await self._helper.close()  # (e.g. no room to map it: no reserve, no draws sent)

    def draw(self, starting: int) -> None:
        """An environment's sandbox started, `starting` in all are starting now: while that is
        `SCALE_OUT_STARTING` or more (a function scaling out), it draws `PER_ENVIRONMENT_BYTES`
        for the environments starting next. Not for cold starts one at a time: giving back and
        filling again costs ~1.5 ms of CPU for 4 MiB, and in the bench, while each drew, such
        cold starts took 0.3-0.5 ms longer."""
        if self.size_bytes == 0 or starting < SCALE_OUT_STARTING or not self._helper.alive:
            return
        self._to_draw += PER_ENVIRONMENT_BYTES
        if not self._sending:
            self._sending = True
            asyncio.get_running_loop().call_soon(self._send_draws)

    def give_up(self) -> int:
        """The host is short of memory: the helper gives all of the reserve back (filled again
        once memory is above the floor and nothing was drawn for a while). What it held, as
        last reported."""
        if not (self.size_bytes and self._helper.alive):
            return 0
        held = self._stats.held_bytes
        self._spawn({"op": "give_up"})  # (whatever the last report said it held)
        self._stats = dataclasses.replace(self._stats, held_bytes=0)
        return held

    def statistics(self) -> ReserveStatistics:
        """As of the helper's last reply (a newer one is asked for); nothing held once the
        helper is gone (it is not started again: the kernel's OOM killer takes it first)."""
        if self.size_bytes and not self._helper.alive:
            self._stats = dataclasses.replace(self._stats, held_bytes=0)
        elif self.size_bytes and not self._refreshing:
            self._refreshing = True
            self._spawn({"op": "stats"})
        return self._stats

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self._helper.close()  # (the helper exits: the kernel takes the reserve back)

    def _send_draws(self) -> None:
        self._sending = False
        nbytes, self._to_draw = self._to_draw, 0
        if nbytes:
            self._spawn({"op": "draw", "bytes": nbytes})

    def _spawn(self, message: dict[str, Any]) -> None:
        task: asyncio.Task[Any] = asyncio.ensure_future(self._ask(message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _ask(self, message: dict[str, Any]) -> bool:
        """Send `message`, keep the statistics its reply carries; whether it was answered."""
        try:
            reply = await self._helper.request(message)
        except HelperError as exc:
            log.warning("memory reserve: %s", exc)
            return False
        finally:
            if message["op"] == "stats":
                self._refreshing = False
        self._stats = ReserveStatistics(**reply["statistics"])
        return True


def serve_reserve(fd: int) -> None:
    """The reserve's helper process (see sandbox/helper.py): {"op": "start", "size", "floor",
    "quiet"} first, then "draw" ("bytes"), "give_up" and "stats"; every reply carries the
    statistics."""
    reserve: MemoryReserve | None = None
    with contextlib.suppress(OSError):  # the first to go if the kernel runs out of memory
        Path("/proc/self/oom_score_adj").write_text("1000")

    def handle(request: dict[str, Any]) -> dict[str, Any]:
        nonlocal reserve
        op = request["op"]
        if op == "start" and reserve is None:
            reserve = MemoryReserve(
                int(request["size"]),
                floor_bytes=int(request["floor"]),
                quiet_s=float(request["quiet"]),
            )
            reserve.start()
        elif reserve is None:
            raise OSError(f"{op} before start")
        elif op == "draw":
            reserve.draw(int(request["bytes"]))
        elif op == "give_up":
            reserve.give_up()
        elif op != "stats":
            raise OSError(f"unknown request {op!r}")
        return {"statistics": dataclasses.asdict(reserve.statistics())}

    serve(fd, handle)


def free_page_reporting(devices: Path = VIRTIO_DEVICES) -> bool:
    """Whether a virtio balloon reports this machine's free memory to its hypervisor (the
    feature VIRTIO_BALLOON_F_REPORTING negotiated: its bit in the device's `features`)."""
    try:
        entries = list(devices.iterdir())
    except OSError:
        return False
    for device in entries:
        try:
            kind = int((device / "device").read_text().strip(), 16)
            features = (device / "features").read_text().strip()
        except (OSError, ValueError):
            continue
        if (
            kind == VIRTIO_ID_BALLOON
            and features[VIRTIO_BALLOON_F_REPORTING : VIRTIO_BALLOON_F_REPORTING + 1] == "1"
        ):
            return True
    return False


def auto_size(burst: int, total_memory: int, reporting: bool) -> tuple[int, str]:
    """`--memory-reserve auto`: the bytes to keep, and why. `total_memory`: the host's, or
    lambdad's cgroup limit where that is less."""
    if not reporting:
        return 0, "off: the host does not report free memory to a hypervisor"
    size = min(burst * PER_ENVIRONMENT_BYTES, total_memory // MAX_SHARE_OF_MEMORY)
    size -= size % CHUNK_BYTES
    return size, (
        f"{size // MIB:,} MB: free page reporting is on, so memory long free faults in the "
        "hypervisor as well when written"
    )


def total_memory_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def available_memory_bytes() -> int:
    """MemAvailable from /proc/meminfo (0 if unknown)."""
    try:
        with open("/proc/meminfo", "rb") as meminfo:
            for line in meminfo:
                if line.startswith(b"MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0
