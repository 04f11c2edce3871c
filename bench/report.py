"""Turn the measurements into verdicts, a printed table and a JSON document."""

from __future__ import annotations

import dataclasses
import mmap
import os
import platform
import statistics
import subprocess
import time
from dataclasses import dataclass
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

import lambdad
from bench import languages as per_language
from bench.figures import COLD_SETTLE_S, ColdStarts, IdleMemory, RoundTrips, Throughput
from bench.loadgen import LoadResult
from bench.procfs import TreeCpu
from bench.snapstart import SETTLE_S, SnapStartResults
from bench.snapstart import TARGET_MS as SNAPSTART_TARGET_MS
from bench.stats import Summary

WARM_RATIO_TARGET = 3.0  # warm invoke p50 <= 3x the echo round trip p50
THROUGHPUT_TARGET = 5000.0  # no-op invokes/s with 8 concurrent keep-alive clients
COLD_P50_TARGET_MS = 5.0  # cold start (stdlib handler, fully isolated) p50
COLD_P99_TARGET_MS = 20.0  # ... p99
COLD_RATIO_TARGET = 0.3  # ... p50 <= 0.3x a bare interpreter spawn p50
MIB = 1024 * 1024
IDLE_USS_TARGET = 1.5 * MIB  # bytes: an idle environment's USS ("1.5 MB", read as MiB)
MEMORY_BUDGET = 4 * 1024**3  # bytes: how many idle environments fit, by USS
BUSY_LOAD_PER_CORE = 0.5  # warn when the 1-minute load average exceeds this per usable core


@dataclass(frozen=True)
class Results:
    round_trips: RoundTrips
    throughput: Throughput
    memory: IdleMemory
    cold: ColdStarts
    languages: per_language.LanguageResults | None = None  # the per-language figures, if taken
    snapstart: SnapStartResults | None = None  # figure 7, if taken


@dataclass(frozen=True)
class Check:
    """One figure against its target, beside its same-run baseline where it has one."""

    name: str
    value: float
    unit: str  # of value and baseline: "ms", "/s" or "MiB"
    baseline: float | None  # None: the target is absolute and the figure has no baseline
    target: str
    passed: bool

    @property
    def ratio(self) -> float | None:
        """value / baseline."""
        return None if self.baseline is None else self.value / self.baseline

    @property
    def verdict(self) -> str:
        return "PASS" if self.passed else "MISS"


def _warm_check(rt: RoundTrips) -> Check:
    ratio = rt.invoke.p50 / rt.echo.p50
    target = f"<= {WARM_RATIO_TARGET:g}x echo p50"
    return Check(
        "warm invoke p50", rt.invoke.p50, "ms", rt.echo.p50, target, ratio <= WARM_RATIO_TARGET
    )


def _throughput_check(tp: Throughput) -> Check:
    rate = tp.invoke.per_second
    target = f">= {THROUGHPUT_TARGET:,.0f}/s"
    return Check(
        "throughput, 8 clients", rate, "/s", tp.echo.per_second, target, rate >= THROUGHPUT_TARGET
    )


def _cold_checks(cold: ColdStarts) -> tuple[Check, Check, Check]:
    """p50 and p99 against absolute targets, p50 against the spawn: each judged on its own."""
    p50, p99, spawn = cold.client.p50, cold.client.p99, cold.spawn
    return (
        Check(
            "cold start p50",
            p50,
            "ms",
            spawn.p50,
            f"p50 <= {COLD_P50_TARGET_MS:g} ms",
            p50 <= COLD_P50_TARGET_MS,
        ),
        Check(
            "cold start p99",
            p99,
            "ms",
            spawn.p99,
            f"p99 <= {COLD_P99_TARGET_MS:g} ms",
            p99 <= COLD_P99_TARGET_MS,
        ),
        Check(
            "cold start p50 vs spawn",
            p50,
            "ms",
            spawn.p50,
            f"<= {COLD_RATIO_TARGET:g}x B p50",
            p50 <= COLD_RATIO_TARGET * spawn.p50,
        ),
    )


def _median_uss(memory: IdleMemory) -> float:
    return statistics.median(m.uss for m in memory.environments)


def _memory_check(memory: IdleMemory) -> Check:
    uss = _median_uss(memory)
    target = f"USS <= {IDLE_USS_TARGET / MIB:g} MiB"
    return Check("idle environment USS", uss / MIB, "MiB", None, target, uss <= IDLE_USS_TARGET)


def _snapstart_check(snap: SnapStartResults) -> Check:
    p50 = snap.first_invoke.p50
    return Check(
        "SnapStart first invoke p50",
        p50,
        "ms",
        snap.on_demand.p50,
        f"p50 <= {SNAPSTART_TARGET_MS:g} ms",
        p50 <= SNAPSTART_TARGET_MS,
    )


def checks(results: Results) -> list[Check]:
    found = [
        _warm_check(results.round_trips),
        _throughput_check(results.throughput),
        *_cold_checks(results.cold),
        _memory_check(results.memory),
    ]
    if results.snapstart is not None:
        found.append(_snapstart_check(results.snapstart))
    return found


# --- machine -----------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _wrk_version() -> str | None:
    try:
        done = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    except OSError:
        return None
    return (done.stdout or done.stderr).split("[")[0].strip() or None


def host_phase() -> dict[str, float]:
    """How fast this host runs right now, measured in under a second: a Python loop of 5 M
    additions (s) and the first touch of a fresh page of memory (µs; a VM whose host reclaims
    free guest memory pays a host fault there too). This VM's speed varies by the hour (its
    CPU by up to 1.5x, a fresh page 2-8 µs): figures compare within a run, and across runs
    only in the same phase."""
    started = time.perf_counter()
    total = 0
    for i in range(5_000_000):
        total += i
    loop_s = time.perf_counter() - started
    pages = 16_384  # 64 MiB
    with mmap.mmap(-1, pages * mmap.PAGESIZE) as memory:
        started = time.perf_counter()
        for offset in range(0, pages * mmap.PAGESIZE, mmap.PAGESIZE):
            memory[offset] = 1
        page_us = (time.perf_counter() - started) / pages * 1e6
    return {"python_loop_5m_s": loop_s, "fresh_page_us": page_us}


def machine_info(
    load_before: tuple[float, float, float], phase: dict[str, float] | None = None
) -> dict[str, Any]:
    """The machine, and how busy it was (1/5/15-minute load averages) before and after the run."""
    return {
        "host_phase": phase,
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "cpu_model": _cpu_model(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "lambdad": lambdad.__version__,
        "wrk": _wrk_version(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
    }


# --- JSON --------------------------------------------------------------------------------------


def _memory_json(memory: IdleMemory) -> dict[str, Any]:
    median_uss = _median_uss(memory)
    return {
        **dataclasses.asdict(memory),
        "median_uss_bytes": median_uss,
        "median_pss_bytes": statistics.median(m.pss for m in memory.environments),
        "median_rss_bytes": statistics.median(m.rss for m in memory.environments),
        "fit_in_4GiB_by_uss": int(MEMORY_BUDGET // median_uss),
    }


def _load_json(result: LoadResult) -> dict[str, Any]:
    return {
        **dataclasses.asdict(result),
        "per_second": result.per_second,
        "generator_cores": result.generator_cores,
    }


def _throughput_json(tp: Throughput) -> dict[str, Any]:
    return {
        "echo": _load_json(tp.echo),
        "echo_cpu": dataclasses.asdict(tp.echo_cpu),
        "invoke": _load_json(tp.invoke),
        "lambdad_cpu": dataclasses.asdict(tp.lambdad_cpu),
        "invocations_counted": tp.invocations_counted,
        "warmup_s": tp.warmup_s,
    }


def to_json(results: Results, machine: dict[str, Any], plan: dict[str, Any]) -> dict[str, Any]:
    return {
        "machine": machine,
        "plan": plan,
        "checks": [
            {**dataclasses.asdict(c), "ratio": c.ratio, "verdict": c.verdict}
            for c in checks(results)
        ],
        "round_trips_ms": dataclasses.asdict(results.round_trips),
        "throughput": _throughput_json(results.throughput),
        "cold_start_ms": dataclasses.asdict(results.cold),
        "idle_memory": _memory_json(results.memory),
        "languages": per_language.to_json(results.languages) if results.languages else None,
        "snapstart": _snapstart_json(results.snapstart) if results.snapstart else None,
    }


def _snapstart_json(snap: SnapStartResults) -> dict[str, Any]:
    init = snap.on_demand_init
    return {
        **dataclasses.asdict(snap),
        "first_invoke_p50_to_on_demand_p50": snap.first_invoke.p50 / snap.on_demand.p50,
        "restore_p50_to_init_p50": snap.restore.p50 / init.p50 if snap.restore and init else None,
    }


# --- table -------------------------------------------------------------------------------------


def _ms(value: float) -> str:
    return f"{value:.3f} ms" if value < 10 else f"{value:.1f} ms"


def _latency_row(table: Table, name: str, s: Summary, ratio: str = "", *rest: str) -> None:
    table.add_row(name, f"{s.count:,}", _ms(s.p50), _ms(s.p99), "", ratio, *rest)


def _rate_row(table: Table, name: str, r: LoadResult, ratio: str = "", *rest: str) -> None:
    rate = f"{r.per_second:,.0f}/s"
    table.add_row(name, f"{r.requests:,}", _ms(r.p50_ms), _ms(r.p99_ms), rate, ratio, *rest)


def _ratio(value: float, baseline: float) -> str:
    return f"{value / baseline:.2f}x"


def _verdict_cells(check: Check) -> tuple[str, str, str]:
    style = "green" if check.passed else "bold red"
    ratio = "" if check.ratio is None else f"{check.ratio:.2f}x"
    return ratio, check.target, f"[{style}]{check.verdict}[/{style}]"


def _check_row(table: Table, name: str, check: Check) -> None:
    """A further target of the figure in the row above, with its own verdict."""
    table.add_row(name, "", "", "", "", *_verdict_cells(check))


def _add_cold_rows(table: Table, cold: ColdStarts) -> None:
    p50, p99, to_spawn = _cold_checks(cold)
    _latency_row(table, "[B] spawn python -I -S", cold.spawn)
    _latency_row(table, "cold start (client)", cold.client, *_verdict_cells(p50))
    _check_row(table, "  cold start p99 (ratio: to B's)", p99)
    _check_row(table, "  cold start p50 vs B", to_spawn)
    if cold.init is not None:
        init_ratio = _ratio(cold.init.p50, cold.spawn.p50)
        _latency_row(table, "cold Init Duration (REPORT)", cold.init, init_ratio)
    if cold.unstaged is not None:
        ratio = _ratio(cold.unstaged.p50, cold.spawn.p50)
        _latency_row(table, "  none staged (client)", cold.unstaged, ratio)
    if cold.unstaged_init is not None:
        ratio = _ratio(cold.unstaged_init.p50, cold.spawn.p50)
        _latency_row(table, "  none staged: Init Duration", cold.unstaged_init, ratio)


def _add_memory_rows(table: Table, memory: IdleMemory) -> None:
    envs = memory.environments
    per_env = statistics.median(len(e.processes) for e in envs)
    uss = _median_uss(memory)
    pss = statistics.median(m.pss for m in envs)
    rss = statistics.median(m.rss for m in envs)
    sizes = f"{uss / MIB:.2f}/{pss / MIB:.2f}/{rss / MIB:.2f} MiB"
    name = f"idle env USS/PSS/RSS ({per_env:g} proc)"
    table.add_row(name, f"{len(envs)}", "", "", sizes, *_verdict_cells(_memory_check(memory)))
    table.add_row("  fit in 4 GiB by USS", "", "", "", f"{int(MEMORY_BUDGET // uss):,}")
    if memory.merging is not None:
        early = memory.merging.unmerged
        before = statistics.median(m.uss for m in early)
        table.add_row("  USS 0.3 s idle (before merging)", f"{len(early)}", "", "", _mib(before))


def _add_snapstart_rows(table: Table, snap: SnapStartResults) -> None:
    _latency_row(table, f"[C] on-demand cold, init {snap.init_floor_ms:.0f} ms", snap.on_demand)
    if snap.on_demand_init is not None:
        _latency_row(table, "  Init Duration (REPORT)", snap.on_demand_init)
    check = _snapstart_check(snap)
    _latency_row(
        table, "SnapStart first invoke (client)", snap.first_invoke, *_verdict_cells(check)
    )
    if snap.restore is not None:
        ratio = _ratio(snap.restore.p50, snap.on_demand_init.p50) if snap.on_demand_init else ""
        _latency_row(table, "  Restore Duration (REPORT)", snap.restore, ratio)


def build_table(results: Results) -> Table:
    rt, tp = results.round_trips, results.throughput
    table = Table(box=box.SIMPLE_HEAD, title="lambdad benchmark: each figure beside its baseline")
    for column in ("figure", "n", "p50", "p99", "rate / size", "ratio", "target", "verdict"):
        table.add_column(column, justify="left" if column == "figure" else "right", no_wrap=True)
    _latency_row(table, "[A] echo round trip", rt.echo)
    _latency_row(table, "warm invoke", rt.invoke, *_verdict_cells(_warm_check(rt)))
    table.add_section()
    _rate_row(table, "echo throughput", tp.echo)
    _rate_row(table, "invoke throughput", tp.invoke, *_verdict_cells(_throughput_check(tp)))
    table.add_section()
    _add_cold_rows(table, results.cold)
    table.add_section()
    _add_memory_rows(table, results.memory)
    if results.snapstart is not None:
        table.add_section()
        _add_snapstart_rows(table, results.snapstart)
    return table


def _per_request_us(cpu: TreeCpu, requests: int) -> str:
    own = cpu.own_s / max(requests, 1) * 1e6
    children = cpu.descendants_s / max(requests, 1) * 1e6
    return f"{own:.0f} us server + {children:.0f} us children"


def _cpu_note(name: str, result: LoadResult, cpu: TreeCpu) -> str:
    return (
        f"  {name}: {cpu.own_s:.2f} s server + {cpu.descendants_s:.2f} s children CPU over "
        f"{result.duration_s:.1f} s = {_per_request_us(cpu, result.requests)} per request"
    )


def _round_trip_notes(rt: RoundTrips) -> list[str]:
    notes = [
        f"round trips: same http.client connection and request bytes for both, {rt.blocks} "
        "alternating blocks each; CPU per request (from /proc/PID/stat, 10 ms ticks):",
        f"  echo {_per_request_us(rt.echo_cpu, rt.echo.count)}; "
        f"lambdad {_per_request_us(rt.lambdad_cpu, rt.invoke.count)} (environments)",
    ]
    throttling = rt.throttling
    if throttling is not None and throttling.periods:
        notes.append(
            f"  the environment's CPU quota (128 MB: 0.072 vCPU, AWS's proportion) ran out in "
            f"{throttling.throttled:,} of its {throttling.periods:,} CFS periods "
            f"({100 * throttling.throttled / throttling.periods:.0f}%), "
            f"{throttling.throttled_s * 1000 / rt.invoke.count:.3f} ms waited per invocation: "
            "where that is not ~0, the warm figure measures the quota, not lambdad (the "
            "per-language table's functions have 1,024 MB)"
        )
    return notes


def _load(average: tuple[float, ...]) -> str:
    return " ".join(f"{x:.2f}" for x in average)


def _machine_notes(machine: dict[str, Any]) -> list[str]:
    lines = [
        f"machine: {machine['cores']} cores ({machine['cores_usable']} usable), "
        f"{machine['cpu_model']}, Linux {machine['kernel']}, Python {machine['python']}",
        f"  load average (1/5/15 min) before {_load(machine['load_average_before'])}, "
        f"after {_load(machine['load_average_after'])}",
    ]
    phase = machine.get("host_phase")
    if phase:
        lines.append(f"  {phase_line(phase)}")
    busiest = max(machine["load_average_before"][0], machine["load_average_after"][0])
    if busiest > BUSY_LOAD_PER_CORE * machine["cores_usable"]:
        lines.append(
            f"  WARNING: the machine was busy (1-minute load {busiest:.1f} on "
            f"{machine['cores_usable']} cores): other work competes with both the figures and "
            "their baselines, the multi-process invoke path more than the echo; rerun when idle"
        )
    return lines


def phase_line(phase: dict[str, float]) -> str:
    return (
        f"host phase before the run: a 5 M-addition Python loop {phase['python_loop_5m_s']:.2f} s, "
        f"a fresh page {phase['fresh_page_us']:.1f} us to touch (this VM's speed varies by the "
        "hour: compare runs of the same phase)"
    )


def _throughput_notes(tp: Throughput) -> list[str]:
    gen = tp.invoke
    return [
        f"throughput: {gen.generator}, 8 keep-alive connections, {gen.duration_s:.1f} s per run "
        f"after {tp.warmup_s:.0f} s warm-up; p50/p99 there are latencies under load",
        f"  load generator CPU (getrusage of the child): echo run {tp.echo.generator_cpu_s:.2f} s "
        f"= {tp.echo.generator_cores:.2f} cores, invoke run {gen.generator_cpu_s:.2f} s "
        f"= {gen.generator_cores:.2f} cores; it shares the machine with the server under test",
        _cpu_note("echo", tp.echo, tp.echo_cpu),
        _cpu_note("lambdad", gen, tp.lambdad_cpu),
        f"  errors: echo {tp.echo.errors + tp.echo.status_errors}, invoke "
        f"{gen.errors + gen.status_errors}; lambdad counted {tp.invocations_counted:,} invocations "
        f"for {gen.requests:,} completed requests",
    ]


def _cold_notes(cold: ColdStarts) -> list[str]:
    notes = [
        f"cold start: {cold.interpreter} (the python3.11 runtime's interpreter); "
        f"{2 * cold.client.count + 1} fresh functions created in {cold.create_s:.1f} s "
        "(both sets, one warm-up); "
        f"{cold.not_cold} first invocations lacked Init Duration; every spawn and every cold "
        f"invoke starts {COLD_SETTLE_S * 1000:.0f} ms after the previous sample (one cold start "
        "at a time, not back to back with the previous one's background work)",
    ]
    if cold.unstaged is not None:
        notes.append(
            f"  the first Invoke of a freshly deployed function: {cold.staged} of "
            f"{cold.client.count} took the environment lambdad staged for it at deploy (as it "
            "does by default: sandbox, code and variables ready, the handler's .pyc read; the "
            "function's init still runs for the invocation, Init Duration from its arrival); "
            "'none staged': the same first Invoke, alternating with it, of functions deployed "
            "before whose staged environment was dropped (the server runs with --staged "
            f"{cold.client.count + 1}, the oldest make room), as when a function scales out "
            "faster than its next is staged; "
            f"{cold.unstaged_took_staged} of them found one"
        )
    return notes


def _mib(size: float) -> str:
    return f"{size / MIB:.2f} MiB"


def _memory_notes(memory: IdleMemory) -> list[str]:
    lines = [
        f"idle memory: {len(memory.environments)} environments found by {memory.method}; "
        f"status reports {memory.idle_reported} idle; an environment's figure sums all its "
        "processes (smaps_rollup; USS = Private_Clean + Private_Dirty)",
    ]
    merging = memory.merging
    if merging is None:
        lines.append("  memory merging (KSM) is off in lambdad: pages are shared only by fork")
    else:
        share = merging.ksmd_cpu_s / merging.ksmd_wall_s if merging.ksmd_wall_s else 0.0
        lines.append(
            f"  memory merging ({merging.detail}): read after {merging.settled_after_s:.1f} s "
            f"idle, once ksmd stopped finding pages to share ({merging.pages_sharing:,} pages "
            f"shared host-wide); a merged page is shared, so USS leaves it out and PSS splits "
            f"it; ksmd used {merging.ksmd_cpu_s:.2f} s CPU over the {merging.ksmd_wall_s:.0f} s "
            f"to then ({share:.1%} of a core)"
        )
    if memory.zygote is not None:
        z = memory.zygote
        lines.append(
            f"  zygote pid {z.pid}: USS {z.uss / MIB:.2f} MiB, PSS {z.pss / MIB:.2f} MiB, "
            f"RSS {z.rss / MIB:.2f} MiB (shared with every environment it forked)"
        )
    return lines


def _snapstart_notes(snap: SnapStartResults) -> list[str]:
    return [
        f"snapstart: {snap.runtime}, {snap.memory_mb} MB; the init imports heavy stdlib modules "
        f"and builds a few MB of module state (real work p50 {snap.init_work.p50:.0f} ms, "
        f"n={snap.init_work.count}: in the snapshots and in C's environments), then sleeps until "
        f"{snap.init_floor_ms:.0f} ms have passed — a stand-in for creating a boto3 client, which "
        "the sandbox does not have",
        f"  each sample: a new version (PublishVersion until Active, i.e. init + snapshot: p50 "
        f"{snap.snapshot.p50:.0f} ms), {SETTLE_S:g} s for the pre-forked restores to settle, one "
        "timed Invoke of it (keep-alive client, Tail log), then the version is deleted; "
        f"C: the first Invoke of {snap.on_demand.count} fresh copies without SnapStart, spread "
        f"among them; {snap.not_restored} first invokes lacked Restore Duration; "
        f"phase took {snap.elapsed_s:.0f} s",
    ]


def notes(results: Results, machine: dict[str, Any]) -> list[str]:
    return [
        *_machine_notes(machine),
        *_round_trip_notes(results.round_trips),
        *_throughput_notes(results.throughput),
        *_cold_notes(results.cold),
        *_memory_notes(results.memory),
        *(_snapstart_notes(results.snapstart) if results.snapstart else []),
    ]


def render(results: Results, machine: dict[str, Any], console: Console | None = None) -> None:
    out = console or Console()
    out.print(build_table(results))
    for line in notes(results, machine):
        out.print(line, highlight=False, markup=False)
    if results.languages is not None:
        out.print(per_language.build_table(results.languages))
        deployed = per_language.build_deployed_table(results.languages)
        if deployed is not None:
            out.print(deployed)
        for line in per_language.notes(results.languages):
            out.print(line, highlight=False, markup=False)
