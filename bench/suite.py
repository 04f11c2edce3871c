"""The benchmark run: start the servers, take every figure, stop everything, report."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console

from bench import figures, snapstart
from bench.harness import (
    MARKED_NOOP_HANDLER,
    KeepAliveClient,
    ManagedProcess,
    check_ok,
    create_function,
    function_zip,
    invoke_path,
    lambda_client,
    runtime_executable,
    server_status,
    signed_request,
    start_echo,
    start_lambdad,
    wait_for_memory_reserve,
)
from bench.languages import MEMORY_MB, LanguagePlan, measure_languages, prepare_languages
from bench.report import Results, host_phase, machine_info, render, to_json

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "latest.json"
NOOP_FUNCTION = "bench-noop"
PAYLOAD = b'{"bench":"lambdad","n":1}'


@dataclass(frozen=True)
class Plan:
    """How many samples each figure takes."""

    blocks: int  # interleaved echo/invoke blocks
    per_block: int  # sequential requests per block
    warmup: int  # untimed requests to each server first
    load_seconds: float  # each throughput run
    load_warmup_seconds: float
    cold_functions: int  # cold starts (and as many spawns of the bare interpreter)
    prefer_wrk: bool = True  # False: the Python load generator even where wrk is installed
    languages: LanguagePlan | None = None  # the per-language figures (None: skipped)
    snapstart: snapstart.SnapStartPlan | None = None  # the SnapStart figure (None: skipped)

    @classmethod
    def for_mode(
        cls,
        quick: bool,
        prefer_wrk: bool = True,
        languages: bool | None = None,
        with_snapstart: bool = True,
    ) -> Plan:
        """`languages`: None means the mode's default (in the full run, not with --quick)."""
        with_languages = not quick if languages is None else languages
        language_plan = LanguagePlan.for_mode(quick) if with_languages else None
        snapstart_plan = snapstart.SnapStartPlan.for_mode(quick) if with_snapstart else None
        if quick:
            return cls(
                blocks=4,
                per_block=500,
                warmup=200,
                load_seconds=4,
                load_warmup_seconds=1,
                cold_functions=20,
                prefer_wrk=prefer_wrk,
                languages=language_plan,
                snapstart=snapstart_plan,
            )
        return cls(
            blocks=8,
            per_block=500,
            warmup=300,
            load_seconds=10,
            load_warmup_seconds=2,
            cold_functions=50,
            prefer_wrk=prefer_wrk,
            languages=language_plan,
            snapstart=snapstart_plan,
        )


@contextlib.contextmanager
def _servers(work_dir: Path, plan: Plan) -> Iterator[tuple[ManagedProcess, ManagedProcess]]:
    with contextlib.ExitStack() as stack:
        staged = figures.staged_cap(plan.cold_functions)
        lambdad = start_lambdad(work_dir, "--staged", str(staged))
        stack.callback(lambdad.stop)
        echo = start_echo(work_dir)
        stack.callback(echo.stop)
        yield lambdad, echo


def _step(console: Console, message: str) -> None:
    console.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {message}", highlight=False)


def measure(plan: Plan, work_dir: Path, console: Console) -> Results:
    ksmd = figures.KsmdClock.start()
    with _servers(work_dir, plan) as (lambdad, echo):
        lam = lambda_client(lambdad)
        code = function_zip()
        create_function(lam, NOOP_FUNCTION, function_zip(MARKED_NOOP_HANDLER))
        reserve, waited = wait_for_memory_reserve(lambdad)  # (it fills after start)
        if reserve:
            full = f"{reserve >> 20:,} MB, full after {waited:.1f} s"
            _step(console, f"lambdad's memory reserve (drawn on by cold starts in numbers): {full}")
        request = signed_request(lambdad.url, invoke_path(NOOP_FUNCTION), PAYLOAD)
        invoke_client, echo_client = KeepAliveClient(lambdad.port), KeepAliveClient(echo.port)
        check_ok(invoke_client.post(request))
        _step(console, "sequential round trips: echo vs warm invoke")
        round_trips = figures.measure_round_trips(
            figures.Target(echo, echo_client),
            figures.Target(lambdad, invoke_client),
            request,
            plan.blocks,
            plan.per_block,
            plan.warmup,
        )
        _step(console, "throughput: echo vs invoke, 8 keep-alive connections")
        throughput = figures.measure_throughput(
            echo,
            lambdad,
            request,
            NOOP_FUNCTION,
            plan.load_seconds,
            plan.load_warmup_seconds,
            plan.prefer_wrk,
        )
        idle_since = time.monotonic()
        time.sleep(0.3)
        _step(console, "idle environment memory")
        memory = figures.measure_idle_memory(lambdad, NOOP_FUNCTION, ksmd, idle_since)
        prepared = None
        if plan.languages is not None:  # (created now: see prepare_languages)
            _step(console, f"per language: echo handlers at {MEMORY_MB} MB, build and create")
            prepared = prepare_languages(
                lambdad,
                lam,
                plan.languages,
                work_dir / "languages",
                PAYLOAD,
                lambda message: _step(console, message),
            )
        _step(console, f"cold starts: {plan.cold_functions} fresh functions vs bare spawns")
        status = server_status(lambdad)
        interpreter = runtime_executable(status, "python3.11")
        cold = figures.measure_cold_starts(
            lambdad, lam, invoke_client, code, plan.cold_functions, interpreter
        )
        snap = _measure_snapstart(plan, lambdad, lam, invoke_client, status, console)
        languages = None
        if plan.languages is not None and prepared is not None:
            _step(console, f"per language: echo handlers at {MEMORY_MB} MB, warm then cold")
            languages = measure_languages(
                lambdad,
                prepared,
                invoke_client,
                echo_client,
                plan.languages,
                PAYLOAD,
                lambda message: _step(console, message),
            )
        echo_client.close()
        invoke_client.close()
    return Results(round_trips, throughput, memory, cold, languages, snap)


def _measure_snapstart(
    plan: Plan,
    lambdad: ManagedProcess,
    lam: Any,
    client: KeepAliveClient,
    status: dict[str, Any],
    console: Console,
) -> snapstart.SnapStartResults | None:
    if plan.snapstart is None:
        return None
    listed = {entry.get("runtime") for entry in status.get("runtimes", [])}
    if snapstart.RUNTIME not in listed:
        _step(console, f"snapstart: skipped, lambdad does not list {snapstart.RUNTIME}")
        return None
    _step(
        console,
        f"snapstart: {plan.snapstart.restores} restores of fresh versions vs "
        f"{plan.snapstart.on_demand} on-demand cold starts, init >= 500 ms",
    )
    return snapstart.measure_snapstart(lambdad, lam, client, plan.snapstart)


def _write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))


def _console() -> Console:
    """Rich's console; wide enough for the table when output goes to a file or pipe."""
    console = Console()
    return console if console.is_terminal else Console(width=132)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="lambdad benchmark: figures beside baselines")
    parser.add_argument("--quick", action="store_true", help="fewer samples (under a minute)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write results")
    parser.add_argument(
        "--python-loadgen",
        action="store_true",
        help="generate throughput load with Python (asyncio) even if wrk is installed",
    )
    parser.add_argument(
        "--languages",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="cold and warm invoke per language beside Python (default: on in the full run, "
        "off with --quick; --quick --languages takes few samples)",
    )
    parser.add_argument(
        "--snapstart",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="SnapStart: first invoke of a restored environment beside an on-demand cold start",
    )
    args = parser.parse_args(argv)
    console = _console()
    plan = Plan.for_mode(
        args.quick,
        prefer_wrk=not args.python_loadgen,
        languages=args.languages,
        with_snapstart=args.snapstart,
    )
    started = time.monotonic()
    load_before = os.getloadavg()
    phase = host_phase()
    with tempfile.TemporaryDirectory(prefix="lambdad-bench-") as tmp:
        results = measure(plan, Path(tmp), console)
    machine = machine_info(load_before, phase)
    render(results, machine, console)
    document = to_json(results, machine, {"quick": args.quick, **dataclasses.asdict(plan)})
    document["elapsed_s"] = time.monotonic() - started
    _write_json(args.json, document)
    console.print(f"wrote {args.json} ({document['elapsed_s']:.0f} s)", highlight=False)
    return 0
