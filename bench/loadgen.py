"""Closed-loop load: N keep-alive connections, each sending its next request when the last ends.

`run_load` prefers `wrk` (C, epoll; far lighter than any Python client). Without wrk it runs this
module as a child process (`python -m bench.loadgen`), an asyncio raw-socket generator. Either
way the generator is a child of the benchmark, so its CPU time is measured exactly with
getrusage(RUSAGE_CHILDREN) around the run and reported beside the result.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from bench.stats import percentile

RESULT_MARK = "BENCH_JSON "

WRK_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"errors":%d,"status_errors":%d,'
    .. '"p50_us":%.1f,"p99_us":%.1f}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout,
    e.status, latency:percentile(50), latency:percentile(99)))
end
"""


@dataclass(frozen=True)
class LoadSpec:
    url: str  # full URL, path included
    body: bytes
    headers: Mapping[str, str]
    connections: int = 8
    threads: int = 2
    seconds: float = 10.0


@dataclass(frozen=True)
class LoadResult:
    generator: str  # "wrk" or "python-asyncio"
    requests: int
    duration_s: float
    errors: int  # connect/read/write/timeout errors
    status_errors: int  # responses with status >= 400
    p50_ms: float
    p99_ms: float
    generator_cpu_s: float  # user + system CPU of the load generator process

    @property
    def per_second(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    @property
    def generator_cores(self) -> float:
        """Average number of cores the generator kept busy."""
        return self.generator_cpu_s / self.duration_s if self.duration_s else 0.0


def _lua_string(value: str) -> str:
    if not value.isascii() or any(ch in value for ch in "\r\n"):
        raise ValueError(f"cannot put {value!r} in a wrk script")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def wrk_script(spec: LoadSpec) -> str:
    lines = ['wrk.method = "POST"', f"wrk.body = {_lua_string(spec.body.decode())}"]
    for name, value in spec.headers.items():
        lines.append(f"wrk.headers[{_lua_string(name)}] = {_lua_string(value)}")
    return "\n".join(lines) + "\n" + WRK_DONE


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _parse_result(stdout: str) -> dict[str, float]:
    for line in stdout.splitlines():
        if line.startswith(RESULT_MARK):
            parsed: dict[str, float] = json.loads(line[len(RESULT_MARK) :])
            return parsed
    raise RuntimeError(f"load generator printed no result:\n{stdout}")


def _run_child(argv: Sequence[str], generator: str) -> LoadResult:
    before = _children_cpu()
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    cpu = _children_cpu() - before
    if done.returncode != 0:
        raise RuntimeError(f"{generator} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    raw = _parse_result(done.stdout)
    return LoadResult(
        generator=generator,
        requests=int(raw["requests"]),
        duration_s=raw["duration_us"] / 1e6,
        errors=int(raw["errors"]),
        status_errors=int(raw["status_errors"]),
        p50_ms=raw["p50_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        generator_cpu_s=cpu,
    )


def run_wrk(spec: LoadSpec) -> LoadResult:
    with tempfile.TemporaryDirectory(prefix="lambdad-bench-wrk-") as tmp:
        script = Path(tmp) / "request.lua"
        script.write_text(wrk_script(spec))
        argv = [
            "wrk",
            f"-t{spec.threads}",
            f"-c{spec.connections}",
            f"-d{max(1, round(spec.seconds))}s",
            "--timeout",
            "30s",
            "-s",
            str(script),
            spec.url,
        ]
        return _run_child(argv, "wrk")


def run_python(spec: LoadSpec) -> LoadResult:
    argv = [
        sys.executable,
        "-m",
        "bench.loadgen",
        spec.url,
        "--connections",
        str(spec.connections),
        "--seconds",
        str(spec.seconds),
        "--body",
        spec.body.decode(),
        "--headers",
        json.dumps(dict(spec.headers)),
    ]
    return _run_child(argv, "python-asyncio")


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


def run_load(spec: LoadSpec, prefer_wrk: bool = True) -> LoadResult:
    return run_wrk(spec) if prefer_wrk and have_wrk() else run_python(spec)


# --- the fallback generator (runs in its own process) ----------------------------------------


def _raw_request(url: str, body: bytes, headers: Mapping[str, str]) -> bytes:
    parts = urlsplit(url)
    lines = [f"POST {parts.path or '/'} HTTP/1.1", f"Host: {parts.netloc}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def _read_reply(reader: asyncio.StreamReader) -> int:
    """Read one response; return its status code."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return status


async def _connection(
    url: str, request: bytes, deadline: float, out: dict[str, list[float]]
) -> None:
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            writer.write(request)
            status = await _read_reply(reader)
            out["latency"].append(time.perf_counter() - start)
            if status >= 400:
                out["status_errors"].append(1.0)
    finally:
        writer.close()


async def _generate(url: str, request: bytes, connections: int, seconds: float) -> dict[str, float]:
    out: dict[str, list[float]] = {"latency": [], "status_errors": []}
    start = time.perf_counter()
    deadline = start + seconds
    results = await asyncio.gather(
        *(_connection(url, request, deadline, out) for _ in range(connections)),
        return_exceptions=True,
    )
    duration = time.perf_counter() - start
    latency = sorted(out["latency"])
    return {
        "requests": len(latency),
        "duration_us": duration * 1e6,
        "errors": sum(1 for r in results if isinstance(r, BaseException)),
        "status_errors": len(out["status_errors"]),
        "p50_us": percentile(latency, 50) * 1e6 if latency else 0.0,
        "p99_us": percentile(latency, 99) * 1e6 if latency else 0.0,
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="closed-loop keep-alive HTTP load generator")
    parser.add_argument("url")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--body", default="{}")
    parser.add_argument("--headers", default="{}", help="JSON object of request headers")
    args = parser.parse_args(argv)
    request = _raw_request(args.url, args.body.encode(), json.loads(args.headers))
    import uvloop

    result = uvloop.run(_generate(args.url, request, args.connections, args.seconds))
    print(RESULT_MARK + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
