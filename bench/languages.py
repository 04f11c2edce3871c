"""Per-language figures: cold and warm Invoke of an echo handler in every available runtime.

Each runtime is shown beside python3.11 (measured the same way, in the same phase) and beside
the same-run baselines: the loopback echo round trip (A) for warm invokes, the spawn of a bare
`python3.11 -I -S -c pass` (B) for cold starts. Every function has MemorySize 1024 MB.

A runtime is measured when `/_lambdad/status` lists it and the toolchain that builds its
handler is on this machine (javac for Java, mcs for .NET, go for Go); otherwise it is skipped
with the reason printed.
"""

from __future__ import annotations

import dataclasses
import gc
import io
import shutil
import subprocess
import time
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from rich import box
from rich.table import Table

from bench.figures import COLD_SETTLE_S, init_duration, spawn_once, staged_starts, wait_staged
from bench.harness import (
    ROLE,
    KeepAliveClient,
    ManagedProcess,
    PreparedRequest,
    Reply,
    check_ok,
    invoke_path,
    runtime_executable,
    server_status,
    signed_request,
)
from bench.stats import Summary

MEMORY_MB = 1024  # every function, every language
TIMEOUT_S = 30
REFERENCE = "python3.11"  # the Python figures every language is compared with
MB_PER_VCPU = 1769  # lambdad's CPU quota after init (AWS: 1,769 MB = one vCPU)
POOL_WAIT_S = 3.0  # longest wait for the pre-built sandbox pool to refill before a cold start


@dataclass(frozen=True)
class LanguagePlan:
    """Sample counts of the per-language phase."""

    cold_fast: int  # fresh functions per fast-starting runtime
    cold_slow: int  # ... per slow one (JVM, Mono)
    warm_blocks: int  # rounds of (echo block, one block per runtime)
    warm_per_block: int
    warm_warmup: int  # untimed invokes of each warm function first
    staged_rounds: int = 5  # rounds of one freshly deployed (staged) function per runtime

    @classmethod
    def for_mode(cls, quick: bool) -> LanguagePlan:
        if quick:
            plan = cls(cold_fast=5, cold_slow=3, warm_blocks=2, warm_per_block=100, warm_warmup=50)
            return dataclasses.replace(plan, staged_rounds=2)
        return cls(cold_fast=20, cold_slow=10, warm_blocks=4, warm_per_block=250, warm_warmup=200)


# --- the handlers ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Package:
    """A function's files (ZIP entries) and which of them are executable."""

    files: Mapping[str, bytes]
    executables: frozenset[str] = frozenset()

    def zip(self) -> bytes:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, data in sorted(self.files.items()):
                info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                mode = 0o755 if name in self.executables else 0o644
                info.external_attr = (0o100000 | mode) << 16
                archive.writestr(info, data)
        return buffer.getvalue()


PYTHON_ECHO = "def handler(event, context):\n    return event\n"
NODE_ECHO = "exports.handler = async (event) => event;\n"
RUBY_ECHO = "def handler(event:, context:)\n  event\nend\n"
JAVA_ECHO = """\
package bench;

import com.amazonaws.services.lambda.runtime.Context;
import com.amazonaws.services.lambda.runtime.RequestHandler;
import java.util.Map;

public class Echo implements RequestHandler<Map<String, Object>, Map<String, Object>> {
    @Override
    public Map<String, Object> handleRequest(Map<String, Object> event, Context context) {
        return event;
    }
}
"""
DOTNET_ECHO = """\
using System.Collections.Generic;
using Amazon.Lambda.Core;

namespace Bench
{
    public class Echo
    {
        public Dictionary<string, object> Handle(
            Dictionary<string, object> input, ILambdaContext context)
        {
            return input;
        }
    }
}
"""
# The Runtime API loop as aws-lambda-go runs it (one keep-alive client, GET next, POST the
# response), with the handler's usual typed JSON decode and encode; standard library only.
GO_ECHO = """\
package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
)

func main() {
	base := "http://" + os.Getenv("AWS_LAMBDA_RUNTIME_API") + "/2018-06-01/runtime/invocation/"
	client := &http.Client{}
	for {
		next, err := client.Get(base + "next")
		if err != nil {
			os.Exit(1)
		}
		payload, _ := io.ReadAll(next.Body)
		next.Body.Close()
		id := next.Header.Get("Lambda-Runtime-Aws-Request-Id")
		var event map[string]any
		out := []byte("null")
		if json.Unmarshal(payload, &event) == nil {
			out, _ = json.Marshal(event)
		}
		done, err := client.Post(base+id+"/response", "application/json", bytes.NewReader(out))
		if err != nil {
			os.Exit(1)
		}
		_, _ = io.Copy(io.Discard, done.Body)
		done.Body.Close()
	}
}
"""


def _python(_: Path) -> Package:
    return Package({"app.py": PYTHON_ECHO.encode()})


def _node(_: Path) -> Package:
    return Package({"index.js": NODE_ECHO.encode()})


def _ruby(_: Path) -> Package:
    return Package({"app.rb": RUBY_ECHO.encode()})


def _java(work: Path) -> Package:
    """`javac --release 17` against the runtime's API jar, classes at the ZIP root."""
    from lambdad.runtime.toolchains import build_module

    api_jar = str(build_module("java").ensure_built()[0])
    source = work / "src" / "bench" / "Echo.java"
    source.parent.mkdir(parents=True)
    source.write_text(JAVA_ECHO)
    classes = work / "classes"
    argv = ["javac", "--release", "17", "-cp", api_jar, "-d", str(classes), str(source)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"javac failed: {done.stderr.strip()}")
    files = {p.relative_to(classes).as_posix(): p.read_bytes() for p in classes.rglob("*.class")}
    return Package(files)


def _dotnet(work: Path) -> Package:
    """`mcs -target:library` against lambdad's Amazon.Lambda.* assemblies: Fn.dll (+ symbols)."""
    from lambdad.runtime.toolchains import build_module

    source = work / "Function.cs"
    source.write_text(DOTNET_ECHO)
    out = Path(build_module("dotnet").compile_function([source], work / "out" / "Fn.dll"))
    return Package({p.name: p.read_bytes() for p in out.parent.iterdir() if p.is_file()})


def _go(name: str) -> Callable[[Path], Package]:
    """A static binary (CGO_ENABLED=0), built offline as the Go tests build their fixture."""

    def build(work: Path) -> Package:
        from tests.fixtures.go.build import build_go_bootstrap

        src = work / "src"
        src.mkdir()
        (src / "go.mod").write_text("module lambdad.bench/echo\n\ngo 1.19\n")
        (src / "main.go").write_text(GO_ECHO)
        binary = build_go_bootstrap(src, work / "bin" / name)
        return Package({name: binary.read_bytes()}, frozenset({name}))

    return build


def _needs(*tools: str) -> Callable[[], str | None]:
    def missing() -> str | None:
        absent = [tool for tool in tools if shutil.which(tool) is None]
        return (
            f"{', '.join(absent)} not installed (needed to build the handler)" if absent else None
        )

    return missing


def _nothing() -> str | None:
    return None


@dataclass(frozen=True)
class Language:
    runtime: str
    label: str  # shown in the table
    handler: str
    slow: bool  # fewer cold samples
    start: str  # how lambdad starts an environment of this runtime (its design choice)
    build: Callable[[Path], Package]
    missing: Callable[[], str | None] = _nothing  # why the handler cannot be built, if so

    @property
    def stages(self) -> bool:
        """Whether lambdad stages this runtime's environments (its own bootstrap waits for the
        first invocation; a custom runtime's bootstrap is the function's code)."""
        return not self.runtime.startswith(("provided", "go"))


FORKED = "forked from the interpreter's zygote (bootstrap preloaded) into a pre-built sandbox"
EXECD = "exec'd into a pre-built sandbox"
LANGUAGES = (
    Language("python3.10", "Python", "app.handler", False, FORKED, _python),
    Language("python3.11", "Python", "app.handler", False, FORKED, _python),
    Language("python3.12", "Python", "app.handler", False, FORKED, _python),
    Language("python3.13", "Python", "app.handler", False, FORKED, _python),
    Language("nodejs20.x", "Node.js", "index.handler", False, f"node {EXECD}", _node),
    Language("ruby3.3", "Ruby", "app.handler", False, f"ruby {EXECD}", _ruby),
    Language(
        "java17",
        "Java",
        "bench.Echo::handleRequest",
        True,
        f"JVM {EXECD}: C1 only, serial GC, AppCDS archive recorded at /var/runtime",
        _java,
        _needs("javac"),
    ),
    Language(
        "dotnet8",
        ".NET on Mono",
        "Fn::Bench.Echo::Handle",
        True,
        f"mono {EXECD}",
        _dotnet,
        _needs("mcs"),
    ),
    Language(
        "provided.al2023",
        "Go",
        "bootstrap",
        False,
        f"the function's bootstrap {EXECD}",
        _go("bootstrap"),
        _needs("go"),
    ),
    Language(
        "go1.x", "Go", "echo", False, f"the handler's executable {EXECD}", _go("echo"), _needs("go")
    ),
)


# --- results -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LanguageFigures:
    runtime: str
    label: str
    start: str
    cold: Summary  # first Invoke of a fresh function, client-side round trip, ms
    init: Summary | None  # the REPORT line's Init Duration of those invocations, ms
    not_cold: int  # first invocations whose REPORT had no Init Duration
    warm: Summary  # sequential keep-alive invokes, ms
    build_s: float  # building the handler (compilers) on this machine
    create_s: float  # creating its functions (and waiting until they are Active)
    # cold starts that took an environment staged ahead (expected 0: see prepare_languages)
    staged: int = 0
    # The first Invoke of a function deployed a moment before (measure_staged): lambdad has
    # staged its environment by then, where the runtime's bootstrap can wait (not Go's)
    deployed: Summary | None = None
    deployed_init: Summary | None = None
    deployed_staged: int = 0  # how many of those took the staged environment


@dataclass(frozen=True)
class Skipped:
    runtime: str
    reason: str


@dataclass(frozen=True)
class LanguageResults:
    memory_mb: int
    plan: LanguagePlan
    backend: str  # the sandbox backend (/_lambdad/status isolation)
    echo: Summary  # baseline A, its blocks interleaved with the runtimes' warm blocks
    spawn: Summary  # baseline B, one spawn per round of cold starts
    interpreter: str
    measured: tuple[LanguageFigures, ...]
    skipped: tuple[Skipped, ...]
    also_listed: tuple[str, ...]  # listed runtimes not measured (they share a measured one's)
    sandboxes_on_demand: int  # cold starts that built their sandbox on the request path
    pool_waits: int  # cold starts before which the sandbox pool was not full yet
    elapsed_s: float
    executables: dict[str, str | None] = field(default_factory=dict)

    @property
    def reference(self) -> LanguageFigures | None:
        return next((m for m in self.measured if m.runtime == REFERENCE), None)


# --- measuring ---------------------------------------------------------------------------------


@dataclass
class _Subject:
    """One runtime being measured: its requests and samples."""

    language: Language
    warm_request: PreparedRequest
    cold_requests: list[PreparedRequest]
    build_s: float
    create_s: float
    cold_names: list[str] = field(default_factory=list)
    code: bytes = b""
    deployed: list[float] = field(default_factory=list)
    deployed_inits: list[float] = field(default_factory=list)
    deployed_names: list[str] = field(default_factory=list)
    cold: list[float] = field(default_factory=list)
    inits: list[float] = field(default_factory=list)
    warm: list[float] = field(default_factory=list)


def _slug(runtime: str) -> str:
    return runtime.replace(".", "_")


def _create(lam: Any, language: Language, name: str, code: bytes) -> None:
    lam.create_function(
        FunctionName=name,
        Runtime=language.runtime,
        Role=ROLE,
        Handler=language.handler,
        Code={"ZipFile": code},
        MemorySize=MEMORY_MB,
        Timeout=TIMEOUT_S,
    )
    lam.get_waiter("function_active_v2").wait(FunctionName=name)


def _check_echo(reply: Reply, payload: bytes) -> None:
    check_ok(reply)
    if orjson.loads(reply.body) != orjson.loads(payload):
        raise RuntimeError(f"the echo handler answered {reply.body[:300]!r}")


def _prepare(
    server: ManagedProcess,
    lam: Any,
    language: Language,
    work: Path,
    cold_count: int,
    payload: bytes,
) -> _Subject:
    """Build the handler and create the functions."""
    started = time.perf_counter()
    directory = work / _slug(language.runtime)
    directory.mkdir(parents=True)
    code = language.build(directory).zip()
    build_s = time.perf_counter() - started
    prefix = f"bench-lang-{_slug(language.runtime)}"
    names = [f"{prefix}-cold-{i:02d}" for i in range(cold_count)]
    started = time.perf_counter()
    for name in [f"{prefix}-warm", *names]:
        _create(lam, language, name, code)
    create_s = time.perf_counter() - started
    warm = signed_request(server.url, invoke_path(f"{prefix}-warm"), payload)
    tail = {"X-Amz-Log-Type": "Tail"}
    cold = [signed_request(server.url, invoke_path(n), payload, tail) for n in names]
    return _Subject(language, warm, cold, build_s, create_s, names, code)


def _sandbox_pool(server: ManagedProcess) -> Mapping[str, int] | None:
    pool = server_status(server).get("sandboxPool")
    return pool if isinstance(pool, dict) else None


def _wait_for_pool(server: ManagedProcess, target: int) -> bool:
    """Wait (bounded) until the pre-built sandbox pool holds `target` again; True if it did not
    at first."""
    deadline = time.monotonic() + POOL_WAIT_S
    waited = False
    while time.monotonic() < deadline:
        pool = _sandbox_pool(server)
        if pool is None or pool["idle"] >= target:
            return waited
        waited = True
        time.sleep(0.005)
    return waited


def _measure_warm(
    subjects: Sequence[_Subject],
    client: KeepAliveClient,
    echo_client: KeepAliveClient,
    plan: LanguagePlan,
) -> list[float]:
    """Blocks in rounds: the echo server, then each runtime; returns the echo samples."""
    echo_request = subjects[0].warm_request
    echo_client.timed_posts(echo_request, plan.warm_warmup)
    for subject in subjects:
        client.timed_posts(subject.warm_request, plan.warm_warmup)
    echo: list[float] = []
    for _ in range(plan.warm_blocks):
        echo += echo_client.timed_posts(echo_request, plan.warm_per_block)
        for subject in subjects:
            subject.warm += client.timed_posts(subject.warm_request, plan.warm_per_block)
    return echo


def _measure_cold(
    server: ManagedProcess,
    subjects: Sequence[_Subject],
    client: KeepAliveClient,
    interpreter: str,
    payload: bytes,
) -> tuple[list[float], int]:
    """Rounds of one bare spawn, then one cold start of each runtime that has samples left."""
    for _ in range(3):
        spawn_once(interpreter)
    pool = _sandbox_pool(server)
    target = pool["idle"] if pool is not None else 0
    rounds = max(len(s.cold_requests) for s in subjects)
    spawns: list[float] = []
    waits = 0
    gc.collect()
    gc.disable()
    try:
        for index in range(rounds):
            spawns.append(spawn_once(interpreter))
            for subject in subjects:
                if index >= len(subject.cold_requests):
                    continue
                waits += _wait_for_pool(server, target)
                _sample(client, subject.cold_requests[index], payload, subject.cold, subject.inits)
    finally:
        gc.enable()
    return spawns, waits


def _sample(
    client: KeepAliveClient,
    request: PreparedRequest,
    payload: bytes,
    times: list[float],
    inits: list[float],
) -> None:
    """One timed first Invoke: its round trip, and its REPORT's Init Duration if it has one."""
    elapsed, reply = client.timed_post(request)
    _check_echo(reply, payload)
    times.append(elapsed)
    init = init_duration(reply)
    if init is not None:
        inits.append(init)


# After the functions of a staged round are deployed and staged: time for their runtimes to
# start (a JVM's ~0.15 s here) before the first is invoked.
STAGED_SETTLE_S = 1.0


def _measure_deployed(
    server: ManagedProcess,
    lam: Any,
    subjects: Sequence[_Subject],
    client: KeepAliveClient,
    payload: bytes,
    rounds: int,
) -> None:
    """Rounds of: deploy one function per runtime, wait until lambdad has staged their
    environments (and their runtimes had a moment to start), then one first Invoke of each,
    50 ms apart — the first cold start after a deploy, as users meet it."""
    tail = {"X-Amz-Log-Type": "Tail"}
    for index in range(rounds):
        requests = []
        for subject in subjects:
            name = f"bench-lang-{_slug(subject.language.runtime)}-deployed-{index:02d}"
            _create(lam, subject.language, name, subject.code)
            subject.deployed_names.append(name)
            requests.append(signed_request(server.url, invoke_path(name), payload, tail))
        wait_staged(server, [s.deployed_names[-1] for s in subjects if s.language.stages])
        time.sleep(STAGED_SETTLE_S)
        gc.collect()
        gc.disable()
        try:
            for subject, request in zip(subjects, requests, strict=True):
                time.sleep(COLD_SETTLE_S)
                _sample(client, request, payload, subject.deployed, subject.deployed_inits)
        finally:
            gc.enable()


def _also_listed(listed: Mapping[str, Mapping[str, Any]], measured: set[str]) -> tuple[str, ...]:
    """Listed runtimes left out: each shares the family and executable of a measured one."""
    keys = {(listed[r].get("family"), listed[r].get("executable")) for r in measured}
    return tuple(
        runtime
        for runtime, entry in listed.items()
        if runtime not in measured and (entry.get("family"), entry.get("executable")) in keys
    )


@dataclass(frozen=True)
class PreparedLanguages:
    """What prepare_languages made: the runtimes' functions, for measure_languages."""

    subjects: tuple[_Subject, ...]
    skipped: tuple[Skipped, ...]
    listed: dict[str, dict[str, Any]]
    backend: str
    started: float  # time.monotonic() when preparing began
    lam: Any  # the Lambda client that created them (measure_languages deploys more)


def prepare_languages(
    server: ManagedProcess,
    lam: Any,
    plan: LanguagePlan,
    work: Path,
    payload: bytes,
    progress: Callable[[str], None] = lambda _: None,
) -> PreparedLanguages:
    """Build every runtime's echo handler and create its functions. Done before the main
    cold-start figure, whose functions, created later, then make the staged environments of
    these, older, make room (the server's --staged cap): each runtime's cold starts here are
    then ones with nothing staged, like every runtime's but lambdad's Python bootstrap's."""
    started = time.monotonic()
    status = server_status(server)
    listed = {str(entry["runtime"]): dict(entry) for entry in status.get("runtimes", [])}
    backend = str(status.get("isolation", {}).get("backend", "unknown"))
    subjects: list[_Subject] = []
    skipped: list[Skipped] = []
    for language in LANGUAGES:
        if language.runtime not in listed:
            reason = "not listed by /_lambdad/status (toolchain missing or not built)"
            skipped.append(Skipped(language.runtime, reason))
            continue
        missing = language.missing()
        if missing is not None:
            skipped.append(Skipped(language.runtime, missing))
            continue
        count = plan.cold_slow if language.slow else plan.cold_fast
        progress(f"  {language.runtime}: build the echo handler, create {count + 1} functions")
        try:
            subjects.append(_prepare(server, lam, language, work, count, payload))
        except Exception as exc:  # one language's toolchain must not sink the others
            skipped.append(Skipped(language.runtime, f"{type(exc).__name__}: {exc}"[:300]))
    if not any(s.language.runtime == REFERENCE for s in subjects):
        raise RuntimeError(f"the reference runtime {REFERENCE} could not be measured: {skipped}")
    subjects.sort(key=lambda s: s.language.runtime != REFERENCE)  # python3.11 first
    return PreparedLanguages(tuple(subjects), tuple(skipped), listed, backend, started, lam)


def measure_languages(
    server: ManagedProcess,
    prepared: PreparedLanguages,
    client: KeepAliveClient,
    echo_client: KeepAliveClient,
    plan: LanguagePlan,
    payload: bytes,
    progress: Callable[[str], None] = lambda _: None,
) -> LanguageResults:
    subjects, listed = prepared.subjects, prepared.listed
    status = server_status(server)
    for subject in subjects:  # each runtime's first start here: untimed
        _check_echo(client.post(subject.warm_request), payload)
    progress(f"  warm: {plan.warm_blocks} rounds of {plan.warm_per_block} per runtime + echo")
    echo = _measure_warm(subjects, client, echo_client, plan)
    interpreter = runtime_executable(status, REFERENCE)
    progress("  cold: rounds of one bare spawn + one fresh function per runtime")
    on_demand_before = (_sandbox_pool(server) or {}).get("built_on_demand", 0)
    spawns, waits = _measure_cold(server, subjects, client, interpreter, payload)
    on_demand = (_sandbox_pool(server) or {}).get("built_on_demand", 0) - on_demand_before
    progress(f"  first invokes after a deploy: {plan.staged_rounds} rounds, one per runtime")
    _measure_deployed(server, prepared.lam, subjects, client, payload, plan.staged_rounds)
    pools = server_status(server).get("pools", {})
    measured = tuple(
        LanguageFigures(
            s.language.runtime,
            s.language.label,
            s.language.start,
            Summary.of(s.cold),
            Summary.of(s.inits) if s.inits else None,
            len(s.cold) - len(s.inits),
            Summary.of(s.warm),
            s.build_s,
            s.create_s,
            staged_starts(pools, s.cold_names),
            Summary.of(s.deployed) if s.deployed else None,
            Summary.of(s.deployed_inits) if s.deployed_inits else None,
            staged_starts(pools, s.deployed_names),
        )
        for s in subjects
    )
    measured_ids = {m.runtime for m in measured}
    return LanguageResults(
        MEMORY_MB,
        plan,
        prepared.backend,
        Summary.of(echo),
        Summary.of(spawns),
        interpreter,
        measured,
        prepared.skipped,
        _also_listed(listed, measured_ids),
        on_demand,
        waits,
        time.monotonic() - prepared.started,
        {r: listed[r].get("executable") for r in sorted(measured_ids)},
    )


# --- report ------------------------------------------------------------------------------------


def _ratio(value: float, baseline: float) -> float:
    return value / baseline if baseline > 0 else float("nan")


def _ratios(figures: LanguageFigures, results: LanguageResults) -> dict[str, float | None]:
    reference = results.reference
    return {
        "cold_p50_to_python": _ratio(figures.cold.p50, reference.cold.p50) if reference else None,
        "cold_p50_to_spawn": _ratio(figures.cold.p50, results.spawn.p50),
        "init_p50_to_spawn": _ratio(figures.init.p50, results.spawn.p50) if figures.init else None,
        "warm_p50_to_python": _ratio(figures.warm.p50, reference.warm.p50) if reference else None,
        "warm_p50_to_echo": _ratio(figures.warm.p50, results.echo.p50),
    }


def to_json(results: LanguageResults) -> dict[str, Any]:
    document = dataclasses.asdict(results)
    document["reference"] = REFERENCE
    document["measured"] = [
        {**dataclasses.asdict(m), "ratios": _ratios(m, results)} for m in results.measured
    ]
    return document


def _ms(value: float) -> str:
    return f"{value:.3f} ms" if value < 10 else f"{value:.1f} ms"


def _x(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}x"


COLUMNS = (
    "language (runtime)",
    "cold n",
    "cold p50",
    "cold p99",
    "Init p50",
    "cold/py",
    "cold/B",
    "warm p50",
    "warm p99",
    "warm/py",
    "warm/A",
)


def _first_cells(m: LanguageFigures, times: Summary, inits: Summary | None) -> list[str]:
    """A runtime's row's first cells: its name, then n, p50, p99 of `times`, Init p50."""
    init = _ms(inits.p50) if inits else "-"
    return [f"{m.label} ({m.runtime})", f"{times.count}", _ms(times.p50), _ms(times.p99), init]


def build_table(results: LanguageResults) -> Table:
    table = Table(
        box=box.SIMPLE_HEAD,
        title=f"per language: echo handler, {results.memory_mb} MB, beside {REFERENCE} "
        "and the baselines",
    )
    for column in COLUMNS:
        table.add_column(column, justify="left" if column.startswith("lang") else "right")
    spawn, echo = results.spawn, results.echo
    table.add_row(
        "[A] echo round trip", "", "", "", "", "", "", _ms(echo.p50), _ms(echo.p99), "", ""
    )
    table.add_row(
        "[B] spawn python3.11 -I -S", f"{spawn.count}", _ms(spawn.p50), _ms(spawn.p99), "", "", ""
    )
    table.add_section()
    for m in results.measured:
        r = _ratios(m, results)
        table.add_row(
            *_first_cells(m, m.cold, m.init),
            _x(r["cold_p50_to_python"]),
            _x(r["cold_p50_to_spawn"]),
            _ms(m.warm.p50),
            _ms(m.warm.p99),
            _x(r["warm_p50_to_python"]),
            _x(r["warm_p50_to_echo"]),
        )
    return table


def build_deployed_table(results: LanguageResults) -> Table | None:
    """The first Invoke after a deploy, per runtime, beside its cold start with nothing
    staged (the table above)."""
    rows = [m for m in results.measured if m.deployed is not None]
    if not rows:
        return None
    table = Table(
        box=box.SIMPLE_HEAD,
        title="per language: the first Invoke of a function deployed a moment before",
    )
    columns = ("language (runtime)", "n", "p50", "p99", "Init p50", "/cold", "/B", "staged")
    for column in columns:
        table.add_column(column, justify="left" if column.startswith("lang") else "right")
    for m in rows:
        assert m.deployed is not None
        table.add_row(
            *_first_cells(m, m.deployed, m.deployed_init),
            _x(_ratio(m.deployed.p50, m.cold.p50)),
            _x(_ratio(m.deployed.p50, results.spawn.p50)),
            f"{m.deployed_staged}/{m.deployed.count}",
        )
    return table


def notes(results: LanguageResults) -> list[str]:
    plan, vcpu = results.plan, results.memory_mb / MB_PER_VCPU
    cold_total = sum(m.cold.count for m in results.measured)
    lines = [
        f"per language: every function MemorySize {results.memory_mb} MB (CPU quota {vcpu:.2f} "
        f"vCPU once init is done, every core during init; sandbox backend: {results.backend}); "
        "each handler returns its event; same keep-alive client and request body as the warm "
        "figure; /py = ratio to the python3.11 row, /A to the echo round trip, /B to the spawn "
        "(the figures above use python3.11 at the default 128 MB)",
        f"  warm: {plan.warm_warmup} untimed invokes each, then {plan.warm_blocks} rounds of "
        f"{plan.warm_per_block} (echo, then each runtime); cold: a fresh function's first Invoke "
        f"({plan.cold_fast} per runtime, {plan.cold_slow} for Java and .NET), rotating through the "
        "runtimes with one spawn per round; Init p50 is the REPORT line's Init Duration; "
        "p99 of 100 or fewer samples is their maximum",
        f"  before each cold start the pre-built sandbox pool was allowed to refill (it had not "
        f"yet {results.pool_waits} of {cold_total} times); {results.sandboxes_on_demand} cold "
        "starts built their sandbox on the request path; "
        f"{sum(m.staged for m in results.measured)} took an environment staged ahead (the "
        "functions were created before the main cold-start figure's, which took the staging "
        "cap: every runtime is measured with nothing staged)",
        f"  first Invoke after a deploy: {plan.staged_rounds} rounds of deploying one function "
        "per runtime, waiting until lambdad staged their environments (Python, Node.js, Ruby, "
        f"Java, .NET: the runtime started, waiting for the invocation before init) and "
        f"{STAGED_SETTLE_S:g} s more, then one Invoke each; /cold = ratio to the cold start "
        "with nothing staged above; 'staged' = how many took the staged environment (a custom "
        "runtime's bootstrap is the function's own code: never staged)",
        "  how each runtime starts an environment when nothing is staged:",
    ]
    for m in results.measured:
        lost = f"; {m.not_cold} first invocations lacked Init Duration" if m.not_cold else ""
        lines.append(
            f"    {m.runtime}: {m.start} ({results.executables.get(m.runtime) or 'no interpreter'}"
            f"; handler built in {m.build_s:.1f} s, functions created in {m.create_s:.1f} s{lost})"
        )
    for s in results.skipped:
        lines.append(f"  skipped {s.runtime}: {s.reason}")
    if results.also_listed:
        lines.append(
            f"  also listed, not measured (same executable as a measured runtime): "
            f"{', '.join(results.also_listed)}"
        )
    lines.append(f"  per-language phase took {results.elapsed_s:.0f} s")
    return lines
