"""The burst figure: N concurrent invocations of a function that sleeps 1 s, from zero
environments. Every one must succeed with N environments at the peak; reported is the time
until the last one started (its latency minus the sleep). AWS needs about 10 s for 1,000.

Run: `.venv/bin/python -m bench.burst [N]` (default 300; 1,000 needs ~5 GB of memory).
"""

from __future__ import annotations

import argparse
import http.client
import shutil
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench import harness

SLEEPER = "import time\ndef handler(event, context):\n    time.sleep(1)\n    return None\n"


@dataclass(frozen=True)
class BurstResult:
    requested: int
    succeeded: int
    environments: int
    last_started_s: float  # slowest latency minus the 1 s sleep
    median_s: float
    wall_s: float


def run_burst(count: int, work_dir: Path) -> BurstResult:
    server = harness.start_lambdad(work_dir)
    try:
        server.wait_listening()
        lam = harness.lambda_client(server)
        harness.create_function(lam, "sleeper", harness.function_zip(SLEEPER))
        path = harness.invoke_path("sleeper")
        request = harness.signed_request(server.url, path, b"{}")
        port = int(server.url.rsplit(":", 1)[1])
        latencies: list[float] = []
        succeeded: list[bool] = []
        barrier = threading.Barrier(count)

        def one() -> None:
            connection = http.client.HTTPConnection(harness.HOST, port, timeout=300)
            barrier.wait()
            started = time.perf_counter()
            connection.request("POST", request.path, body=request.body, headers=request.headers)
            reply = connection.getresponse()
            reply.read()
            latencies.append(time.perf_counter() - started)
            succeeded.append(reply.status == 200 and not reply.getheader("X-Amz-Function-Error"))

        threads = [threading.Thread(target=one) for _ in range(count)]
        began = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - began
        pools = harness.server_status(server).get("pools", {})
        environments = sum(p["idle"] + p["busy"] for p in pools.values())
    finally:
        server.stop()
    latencies.sort()
    return BurstResult(
        requested=count,
        succeeded=sum(succeeded),
        environments=environments,
        last_started_s=latencies[-1] - 1.0,
        median_s=latencies[len(latencies) // 2],
        wall_s=wall,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("count", type=int, nargs="?", default=300)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="lambdad-burst-"))
    try:
        result = run_burst(args.count, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    verdict = "PASS" if result.succeeded == result.requested else "MISS"
    print(
        f"burst {result.requested} x 1 s sleeps from zero: {result.succeeded} succeeded "
        f"({verdict}), {result.environments} environments, last one started after "
        f"{result.last_started_s:.2f} s (goal <= 5 s for 1,000; AWS ~10 s), median latency "
        f"{result.median_s:.2f} s, wall {result.wall_s:.2f} s"
    )
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    raise SystemExit(main())
