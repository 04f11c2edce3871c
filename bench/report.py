"""Turn the measurements into verdicts, a printed table and a JSON document."""

from __future__ import annotations

import dataclasses
import os
import platform
import statistics
import subprocess
from dataclasses import dataclass
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

import lambdad
from bench import languages as per_language
from bench.figures import ColdStarts, IdleMemory, RoundTrips, Throughput
from bench.loadgen import LoadResult
from bench.procfs import TreeCpu
from bench.stats import Summary

WARM_RATIO_TARGET = 3.0  # warm invoke p50 <= 3x the echo round trip p50
THROUGHPUT_TARGET = 1500.0  # invokes/s with 8 concurrent keep-alive clients
COLD_RATIO_TARGET = 1.5  # cold start p50 <= 1.5x a bare interpreter spawn p50
MEMORY_BUDGET = 4 * 1024**3  # bytes: how many idle environments fit, by USS
MIB = 1024 * 1024
BUSY_LOAD_PER_CORE = 0.5  # warn when the 1-minute load average exceeds this per usable core


@dataclass(frozen=True)
class Results:
    round_trips: RoundTrips
    throughput: Throughput
    memory: IdleMemory
    cold: ColdStarts
    languages: per_language.LanguageResults | None = None  # the per-language figures, if taken


@dataclass(frozen=True)
class Check:
    """One figure against its target."""

    name: str
    value: float
    baseline: float
    ratio: float  # value / baseline
    target: str
    passed: bool

    @property
    def verdict(self) -> str:
        return "PASS" if self.passed else "MISS"


def _warm_check(rt: RoundTrips) -> Check:
    ratio = rt.invoke.p50 / rt.echo.p50
    target = f"<= {WARM_RATIO_TARGET:g}x echo p50"
    return Check(
        "warm invoke p50", rt.invoke.p50, rt.echo.p50, ratio, target, ratio <= WARM_RATIO_TARGET
    )


def _throughput_check(tp: Throughput) -> Check:
    rate, echo_rate = tp.invoke.per_second, tp.echo.per_second
    target = f">= {THROUGHPUT_TARGET:,.0f}/s"
    return Check(
        "throughput, 8 clients",
        rate,
        echo_rate,
        rate / echo_rate,
        target,
        rate >= THROUGHPUT_TARGET,
    )


def _cold_check(cold: ColdStarts) -> Check:
    ratio = cold.client.p50 / cold.spawn.p50
    target = f"<= {COLD_RATIO_TARGET:g}x spawn p50"
    return Check(
        "cold start p50", cold.client.p50, cold.spawn.p50, ratio, target, ratio <= COLD_RATIO_TARGET
    )


def checks(results: Results) -> list[Check]:
    return [
        _warm_check(results.round_trips),
        _throughput_check(results.throughput),
        _cold_check(results.cold),
    ]


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


def machine_info(load_before: tuple[float, float, float]) -> dict[str, Any]:
    """The machine, and how busy it was (1/5/15-minute load averages) before and after the run."""
    return {
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
    uss = [m.uss for m in memory.environments]
    median_uss = statistics.median(uss)
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
        "checks": [{**dataclasses.asdict(c), "verdict": c.verdict} for c in checks(results)],
        "round_trips_ms": dataclasses.asdict(results.round_trips),
        "throughput": _throughput_json(results.throughput),
        "cold_start_ms": dataclasses.asdict(results.cold),
        "idle_memory": _memory_json(results.memory),
        "languages": per_language.to_json(results.languages) if results.languages else None,
    }


# --- table -------------------------------------------------------------------------------------


def _ms(value: float) -> str:
    return f"{value:.3f} ms" if value < 10 else f"{value:.1f} ms"


def _latency_row(table: Table, name: str, s: Summary, ratio: str = "", *rest: str) -> None:
    table.add_row(name, f"{s.count:,}", _ms(s.p50), _ms(s.p99), "", ratio, *rest)


def _rate_row(table: Table, name: str, r: LoadResult, ratio: str = "", *rest: str) -> None:
    rate = f"{r.per_second:,.0f}/s"
    table.add_row(name, f"{r.requests:,}", _ms(r.p50_ms), _ms(r.p99_ms), rate, ratio, *rest)


def _verdict_cells(check: Check) -> tuple[str, str, str]:
    style = "green" if check.passed else "bold red"
    return f"{check.ratio:.2f}x", check.target, f"[{style}]{check.verdict}[/{style}]"


def _add_memory_rows(table: Table, memory: IdleMemory) -> None:
    envs = memory.environments
    per_env = statistics.median(len(e.processes) for e in envs)
    uss = statistics.median(m.uss for m in envs)
    pss = statistics.median(m.pss for m in envs)
    rss = statistics.median(m.rss for m in envs)
    sizes = f"{uss / MIB:.2f}/{pss / MIB:.2f}/{rss / MIB:.2f} MiB"
    fit = f"{int(MEMORY_BUDGET // uss):,} in 4 GiB"
    name = f"idle env USS/PSS/RSS ({per_env:g} proc)"
    table.add_row(name, f"{len(envs)}", "", "", sizes, "", fit, "")


def build_table(results: Results) -> Table:
    rt, tp, cold = results.round_trips, results.throughput, results.cold
    warm, rate, cold_check = checks(results)
    table = Table(box=box.SIMPLE_HEAD, title="lambdad benchmark: each figure beside its baseline")
    for column in ("figure", "n", "p50", "p99", "rate / size", "ratio", "target", "verdict"):
        table.add_column(column, justify="left" if column == "figure" else "right", no_wrap=True)
    _latency_row(table, "[A] echo round trip", rt.echo)
    _latency_row(table, "warm invoke", rt.invoke, *_verdict_cells(warm))
    table.add_section()
    _rate_row(table, "echo throughput", tp.echo)
    _rate_row(table, "invoke throughput", tp.invoke, *_verdict_cells(rate))
    table.add_section()
    _latency_row(table, "[B] spawn python -I -S", cold.spawn)
    _latency_row(table, "cold start (client)", cold.client, *_verdict_cells(cold_check))
    if cold.init is not None:
        init_ratio = f"{cold.init.p50 / cold.spawn.p50:.2f}x"
        _latency_row(table, "cold Init Duration (REPORT)", cold.init, init_ratio)
    table.add_section()
    _add_memory_rows(table, results.memory)
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
    return [
        f"round trips: same http.client connection and request bytes for both, {rt.blocks} "
        "alternating blocks each; CPU per request (from /proc/PID/stat, 10 ms ticks):",
        f"  echo {_per_request_us(rt.echo_cpu, rt.echo.count)}; "
        f"lambdad {_per_request_us(rt.lambdad_cpu, rt.invoke.count)} (environments)",
    ]


def _load(average: tuple[float, ...]) -> str:
    return " ".join(f"{x:.2f}" for x in average)


def _machine_notes(machine: dict[str, Any]) -> list[str]:
    lines = [
        f"machine: {machine['cores']} cores ({machine['cores_usable']} usable), "
        f"{machine['cpu_model']}, Linux {machine['kernel']}, Python {machine['python']}",
        f"  load average (1/5/15 min) before {_load(machine['load_average_before'])}, "
        f"after {_load(machine['load_average_after'])}",
    ]
    busiest = max(machine["load_average_before"][0], machine["load_average_after"][0])
    if busiest > BUSY_LOAD_PER_CORE * machine["cores_usable"]:
        lines.append(
            f"  WARNING: the machine was busy (1-minute load {busiest:.1f} on "
            f"{machine['cores_usable']} cores): other work competes with both the figures and "
            "their baselines, the multi-process invoke path more than the echo; rerun when idle"
        )
    return lines


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
    return [
        f"cold start: {cold.interpreter} (the python3.11 runtime's interpreter); "
        f"{cold.client.count} fresh functions created in {cold.create_s:.1f} s; "
        f"{cold.not_cold} first invocations lacked Init Duration",
    ]


def _memory_notes(memory: IdleMemory) -> list[str]:
    lines = [
        f"idle memory: {len(memory.environments)} environments found by {memory.method}; "
        f"status reports {memory.idle_reported} idle; an environment's figure sums all its "
        "processes (smaps_rollup; USS = Private_Clean + Private_Dirty)",
    ]
    if memory.zygote is not None:
        z = memory.zygote
        lines.append(
            f"  zygote pid {z.pid}: USS {z.uss / MIB:.2f} MiB, PSS {z.pss / MIB:.2f} MiB, "
            f"RSS {z.rss / MIB:.2f} MiB (shared with every environment it forked)"
        )
    return lines


def notes(results: Results, machine: dict[str, Any]) -> list[str]:
    return [
        *_machine_notes(machine),
        *_round_trip_notes(results.round_trips),
        *_throughput_notes(results.throughput),
        *_cold_notes(results.cold),
        *_memory_notes(results.memory),
    ]


def render(results: Results, machine: dict[str, Any], console: Console | None = None) -> None:
    out = console or Console()
    out.print(build_table(results))
    for line in notes(results, machine):
        out.print(line, highlight=False, markup=False)
    if results.languages is not None:
        out.print(per_language.build_table(results.languages))
        for line in per_language.notes(results.languages):
            out.print(line, highlight=False, markup=False)
