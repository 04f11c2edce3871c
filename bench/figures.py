"""The measurements: each figure and its same-run baseline, taken side by side.

Sequential figures interleave the measured thing and its baseline (blocks of requests, or
alternating samples) so that drift in machine speed during the run touches both alike.
"""

from __future__ import annotations

import base64
import gc
import re
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bench import procfs
from bench.harness import (
    INITIALISED_MARK,
    KeepAliveClient,
    ManagedProcess,
    PreparedRequest,
    Reply,
    check_ok,
    create_function,
    invoke_path,
    server_status,
    signed_request,
)
from bench.loadgen import LoadResult, LoadSpec, run_load
from bench.stats import Summary

INIT_DURATION = re.compile(r"Init Duration: ([0-9.]+) ms")


# --- 1 and 2: sequential round trips -----------------------------------------------------------


@dataclass(frozen=True)
class RoundTrips:
    echo: Summary  # baseline A: loopback HTTP echo round trip, ms
    invoke: Summary  # warm Invoke round trip, ms
    blocks: int
    echo_cpu: procfs.TreeCpu  # CPU the echo server used during its blocks
    lambdad_cpu: procfs.TreeCpu  # CPU lambdad and its environments used during the invoke blocks
    # The environments' CPU quota at work over the whole phase (None: no cgroups): a 128 MB
    # function gets 0.072 vCPU, which back-to-back invocations can use up on a slow host.
    throttling: procfs.Throttling | None


@dataclass(frozen=True)
class Target:
    """A server and the keep-alive client that talks to it."""

    server: ManagedProcess
    client: KeepAliveClient


def measure_round_trips(
    echo: Target,
    lambdad: Target,
    request: PreparedRequest,
    blocks: int,
    per_block: int,
    warmup: int,
) -> RoundTrips:
    """Alternate blocks of echo and Invoke requests, the same bytes over the same client."""
    echo.client.timed_posts(request, warmup)
    lambdad.client.timed_posts(request, warmup)
    echo_samples: list[float] = []
    invoke_samples: list[float] = []
    # Both servers idle while the other is measured, so each meter sees its own blocks' work.
    echo_meter, lambdad_meter = (
        procfs.CpuMeter(echo.server.pid),
        procfs.CpuMeter(lambdad.server.pid),
    )
    throttling = procfs.environment_throttling(lambdad.server.pid)
    for _ in range(blocks):
        echo_samples += echo.client.timed_posts(request, per_block)
        invoke_samples += lambdad.client.timed_posts(request, per_block)
    after = procfs.environment_throttling(lambdad.server.pid)
    return RoundTrips(
        Summary.of(echo_samples),
        Summary.of(invoke_samples),
        blocks,
        echo_meter.read(),
        lambdad_meter.read(),
        after.since(throttling) if after is not None and throttling is not None else None,
    )


# --- 3: throughput -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Throughput:
    echo: LoadResult  # baseline: the echo server under the same generator
    echo_cpu: procfs.TreeCpu
    invoke: LoadResult
    lambdad_cpu: procfs.TreeCpu
    invocations_counted: int  # the pool's own count of invocations started during the run
    warmup_s: float


def _pool_invocations(server: ManagedProcess, function_name: str) -> int:
    for key, pool in server_status(server).get("pools", {}).items():
        if key.endswith(f":{function_name}:$LATEST"):
            return int(pool["cold_starts"]) + int(pool["warm_starts"])
    return 0


def _with_cpu(
    server: ManagedProcess, run: Callable[[], LoadResult]
) -> tuple[LoadResult, procfs.TreeCpu]:
    """Run the load and measure the CPU the server and its live descendants used meanwhile."""
    meter = procfs.CpuMeter(server.pid)
    result = run()
    return result, meter.read()


def measure_throughput(
    echo_server: ManagedProcess,
    lambdad: ManagedProcess,
    request: PreparedRequest,
    function_name: str,
    seconds: float,
    warmup_s: float,
    prefer_wrk: bool = True,
) -> Throughput:
    def load(url: str, duration: float) -> LoadResult:
        spec = LoadSpec(url + request.path, request.body, request.headers, seconds=duration)
        return run_load(spec, prefer_wrk)

    load(lambdad.url, warmup_s)  # start one environment per connection
    echo_result, echo_cpu = _with_cpu(echo_server, lambda: load(echo_server.url, seconds))
    counted = _pool_invocations(lambdad, function_name)
    invoke_result, lambdad_cpu = _with_cpu(lambdad, lambda: load(lambdad.url, seconds))
    counted = _pool_invocations(lambdad, function_name) - counted
    return Throughput(echo_result, echo_cpu, invoke_result, lambdad_cpu, counted, warmup_s)


# --- 4: cold start -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ColdStarts:
    spawn: Summary  # baseline B: spawn + wait of `python -I -S -c pass`, ms
    client: Summary  # first Invoke of a freshly deployed function, client-side round trip, ms
    init: Summary | None  # the REPORT line's Init Duration of those invocations, ms
    not_cold: int  # first invocations whose REPORT had no Init Duration
    interpreter: str
    create_s: float  # wall time to create (and wait Active for) all the functions
    # How many of `client`'s cold starts took the environment staged for them at deploy
    staged: int = 0
    # The same first Invoke of functions whose staged environment was dropped (the oldest
    # make room: see measure_cold_starts): a cold start with none staged, as when a function
    # scales out faster than its next is staged, or after --staged's cap dropped it
    unstaged: Summary | None = None
    unstaged_init: Summary | None = None
    unstaged_took_staged: int = 0  # (should be 0)


# Each cold-start sample (and each spawn) starts this long after the previous one: a sample
# measures one cold start, not back-to-back ones competing with the previous sample's
# background work (the spawned interpreter's exit, the replacement sandbox lambdad builds).
COLD_SETTLE_S = 0.05


def spawn_once(interpreter: str) -> float:
    start = time.perf_counter_ns()
    subprocess.run([interpreter, "-I", "-S", "-c", "pass"], check=True)
    return (time.perf_counter_ns() - start) / 1e6


def tail_log(reply: Reply) -> str:
    """The log tail of an Invoke with `X-Amz-Log-Type: Tail` (empty without one)."""
    return base64.b64decode(reply.headers.get("x-amz-log-result", "")).decode(errors="replace")


def init_duration(reply: Reply) -> float | None:
    match = INIT_DURATION.search(tail_log(reply))
    return float(match.group(1)) if match else None


def _create_all(lam: Any, names: Sequence[str], code: bytes) -> float:
    start = time.perf_counter()
    for name in names:
        create_function(lam, name, code)
    return time.perf_counter() - start


def _cold_requests(server: ManagedProcess, names: Sequence[str]) -> list[PreparedRequest]:
    tail = {"X-Amz-Log-Type": "Tail"}
    return [signed_request(server.url, invoke_path(n), b'{"cold":true}', tail) for n in names]


def staged_cap(count: int) -> int:
    """The server's --staged for a run of `count` cold-start samples (see measure_cold_starts)."""
    return count + 1


def measure_cold_starts(
    lambdad: ManagedProcess,
    lam: Any,
    client: KeepAliveClient,
    code: bytes,
    count: int,
    interpreter: str,
) -> ColdStarts:
    """Alternate one spawn of the bare interpreter with one first Invoke of a freshly deployed
    function (lambdad staged its environment at deploy, as it does by default) and one of a
    function deployed earlier whose staged environment was dropped since. The server runs
    with --staged staged_cap(count): creating the second set (count + 1 functions) makes the
    first set's staged environments, the oldest, make room."""
    unstaged = [f"bench-cold-u{i:03d}" for i in range(count)]
    names = [f"bench-cold-{i:03d}" for i in range(count + 1)]
    create_s = _create_all(lam, unstaged, code)
    create_s += _create_all(lam, names, code)
    wait_staged(lambdad, names)
    requests = _cold_requests(lambdad, names)
    others = _cold_requests(lambdad, unstaged)
    for _ in range(3):
        spawn_once(interpreter)
    check_ok(client.post(requests[0]))  # warm-up: one cold start, not counted
    spawns: list[float] = []
    rounds: list[float] = []
    inits: list[float] = []
    other_rounds: list[float] = []
    other_inits: list[float] = []
    gc.collect()
    gc.disable()
    try:
        for request, other in zip(requests[1:], others, strict=True):
            time.sleep(COLD_SETTLE_S)
            spawns.append(spawn_once(interpreter))
            for sample, times, init_times in (
                (request, rounds, inits),
                (other, other_rounds, other_inits),
            ):
                time.sleep(COLD_SETTLE_S)
                elapsed, reply = client.timed_post(sample)
                check_ok(reply)
                times.append(elapsed)
                init = init_duration(reply)
                if init is not None:
                    init_times.append(init)
    finally:
        gc.enable()
    pools = server_status(lambdad)["pools"]
    return ColdStarts(
        Summary.of(spawns),
        Summary.of(rounds),
        Summary.of(inits) if inits else None,
        count - len(inits),
        interpreter,
        create_s,
        staged=staged_starts(pools, names[1:]),
        unstaged=Summary.of(other_rounds),
        unstaged_init=Summary.of(other_inits) if other_inits else None,
        unstaged_took_staged=staged_starts(pools, unstaged),
    )


def staged_starts(pools: Mapping[str, Any], names: Sequence[str]) -> int:
    wanted = set(names)
    return sum(
        stats.get("staged_starts", 0) for key, stats in pools.items() if key.split(":")[1] in wanted
    )


def wait_staged(lambdad: ManagedProcess, names: Sequence[str], timeout: float = 30.0) -> None:
    """Until every function of `names` has its environment staged (built in the background)."""
    wanted = set(names)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pools = server_status(lambdad)["pools"]
        ready = {k.split(":")[1] for k, stats in pools.items() if stats.get("staged")}
        if wanted <= ready:
            return
        time.sleep(0.1)


# --- 5: idle environment memory ----------------------------------------------------------------


@dataclass(frozen=True)
class EnvironmentMemory:
    """One environment: every process of it (PID 1 of its namespace and the runtime), summed.
    Its root is the process the zygote forked; init, spawned beside it, is counted with it."""

    root: int  # the environment's top process (its parent is a zygote or lambdad)
    uss: int
    pss: int
    rss: int
    processes: tuple[procfs.ProcessMemory, ...]

    @classmethod
    def of(cls, root: int) -> EnvironmentMemory:
        pids = [root, *procfs.descendants(root), *procfs.pid_namespace_peers(root)]
        processes = tuple(procfs.memory_of(pid) for pid in pids)
        return cls(
            root,
            sum(p.uss for p in processes),
            sum(p.pss for p in processes),
            sum(p.rss for p in processes),
            processes,
        )


@dataclass(frozen=True)
class MemoryMerging:
    """Samepage merging (KSM) while the environments were idle: the figure is read once ksmd
    has stopped finding new pages to share (or after MERGE_SETTLE_MAX_S)."""

    detail: str  # lambdad's status: how ksmd runs
    settled_after_s: float  # idle seconds before the figure was read
    unmerged: tuple[EnvironmentMemory, ...]  # the same environments 0.3 s into idleness
    pages_sharing: int  # host-wide: pages saved by merging, when the figure was read
    ksmd_cpu_s: float  # CPU the kernel's ksmd thread used from the bench's start to the figure
    ksmd_wall_s: float  # ... over this many seconds


@dataclass(frozen=True)
class IdleMemory:
    method: str  # how the environment processes were found
    environments: tuple[EnvironmentMemory, ...]
    zygote: procfs.ProcessMemory | None  # the parent the environments were forked from
    idle_reported: int  # idle environments of the function according to /_lambdad/status
    merging: MemoryMerging | None  # None: lambdad does not merge memory here


def _idle_reported(status: Mapping[str, Any], function_name: str) -> int:
    for key, pool in status.get("pools", {}).items():
        if key.endswith(f":{function_name}:$LATEST"):
            return int(pool["idle"])
    return 0


def _zygotes(server_pid: int) -> set[int]:
    children = [p for p in procfs.descendants(server_pid) if procfs.parent_of(p) == server_pid]
    return {p for p in children if "zygote" in procfs.command_line(p)}


def _zygote_of(roots: Sequence[int], zygotes: set[int]) -> procfs.ProcessMemory | None:
    parents = {procfs.parent_of(root) for root in roots}
    if len(parents) != 1 or not parents <= zygotes:
        return None
    return procfs.memory_of(parents.pop())


MERGE_POLL_S = 0.5
MERGE_SETTLE_MAX_S = 20.0


@dataclass(frozen=True)
class KsmdClock:
    """ksmd's CPU time from a starting point (the bench's start)."""

    pid: int | None
    cpu_s: float
    wall_s: float

    @classmethod
    def start(cls) -> KsmdClock:
        pid = procfs.kernel_thread("ksmd")
        return cls(pid, procfs.cpu_seconds(pid) if pid else 0.0, time.monotonic())

    def elapsed(self) -> tuple[float, float]:
        cpu = procfs.cpu_seconds(self.pid) - self.cpu_s if self.pid else 0.0
        return cpu, time.monotonic() - self.wall_s


def _merge_counters(lambdad: ManagedProcess) -> tuple[int, int, bool]:
    """KSM's (pages_sharing, full_scans), as lambdad's status reports them, and whether lambdad
    has settled ksmd's pace (it stopped finding pages to share: the same test as below)."""
    merge = server_status(lambdad)["memoryMerge"]
    settled = merge.get("pace") == "settled"
    return int(merge.get("pages_sharing", 0)), int(merge.get("full_scans", 0)), settled


def _pages_sharing(lambdad: ManagedProcess) -> int:
    return _merge_counters(lambdad)[0]


def _wait_for_merging(lambdad: ManagedProcess) -> None:
    """Until ksmd stops finding pages to share: it has scanned everything twice since the
    environments went idle (a page is merged on the second scan that finds it unchanged) and
    the last full scan shared no more pages than the one before — or lambdad says so (it
    then lowers ksmd's pace, and the next full scan takes long)."""
    deadline = time.monotonic() + MERGE_SETTLE_MAX_S
    sharing, scans, _ = _merge_counters(lambdad)
    start, at_scan = scans, sharing
    while time.monotonic() < deadline:
        time.sleep(MERGE_POLL_S)
        now, now_scans, settled = _merge_counters(lambdad)
        if settled and now_scans >= start + 2:  # (then ksmd scans at the kernel's pace)
            return
        if now_scans != scans:  # a full scan ended
            if now_scans >= start + 3 and now == at_scan:
                return
            scans, at_scan = now_scans, now


def measure_idle_memory(
    lambdad: ManagedProcess, function_name: str, ksmd: KsmdClock, idle_since: float
) -> IdleMemory:
    """Find the function's environments (all their processes) and read their memory; where
    lambdad merges memory, again once merging settled (that reading is the figure)."""
    pids, method = procfs.find_environments(function_name, lambdad.pid, INITIALISED_MARK)
    if not pids:
        raise RuntimeError(f"found no environment process of {function_name}")
    zygotes = _zygotes(lambdad.pid)
    roots = sorted({procfs.top_below(pid, zygotes | {lambdad.pid}) for pid in pids})
    environments = tuple(EnvironmentMemory.of(root) for root in roots)
    status = server_status(lambdad)
    merging = None
    if status.get("memoryMerge", {}).get("enabled"):
        unmerged = environments
        _wait_for_merging(lambdad)
        environments = tuple(EnvironmentMemory.of(root) for root in roots)
        cpu, wall = ksmd.elapsed()
        merging = MemoryMerging(
            status["memoryMerge"]["detail"],
            time.monotonic() - idle_since,
            unmerged,
            _pages_sharing(lambdad),
            cpu,
            wall,
        )
    idle = _idle_reported(server_status(lambdad), function_name)
    return IdleMemory(method, environments, _zygote_of(roots, zygotes), idle, merging)
