"""Execution environments seen from outside: warm reuse, cold starts, REPORT lines, timeouts,
crashes, scale-out, keep-alive reaping and retirement on update."""

from __future__ import annotations

import base64
import json
import math
import os
import re
import resource
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from lambdad.sandbox import memory_reserve
from tests.conftest import (
    Server,
    create_function,
    gone,
    live_processes,
    make_zip,
    module_server,
    start_server,
    wait_for,
)

REQUEST_ID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
REPORT = re.compile(
    rf"^REPORT RequestId: (?P<id>{REQUEST_ID})\tDuration: (?P<duration>\d+\.\d\d) ms\t"
    r"Billed Duration: (?P<billed>\d+) ms\tMemory Size: (?P<memory>\d+) MB\t"
    r"Max Memory Used: (?P<used>\d+) MB\t(?:Init Duration: (?P<init>\d+\.\d\d) ms\t)?"
    r"(?:Status: (?P<status>\w+)\t)?$",
    re.M,
)

# Every environment gets a fresh ENV_ID; COUNT says how many invocations it has served. The
# process names itself after ENV_ID (PR_SET_NAME) so the test can find it in the host's /proc
# whatever the sandbox (a PID namespace hides the host pid from the function).
STATEFUL = """
import ctypes, os, time, uuid
ENV_ID = uuid.uuid4().hex
TAG = "lbd" + ENV_ID[:12]
ctypes.CDLL(None).prctl(15, TAG.encode(), 0, 0, 0)
COUNT = 0

def handler(event, context):
    global COUNT
    COUNT += 1
    action = event.get("action")
    if action == "sleep":
        time.sleep(event["seconds"])
    elif action == "exit":
        os._exit(event["code"])
    elif action == "sys.exit":
        raise SystemExit(0)
    elif action == "kill":
        os.kill(os.getpid(), 9)
    elif action == "allocate":
        blob = b"x" * (event["mb"] * 1048576)
        assert len(blob)
    elif action == "exhaust":
        hoard = []
        while True:
            hoard.append(b"x" * 1048576)
    return {"env_id": ENV_ID, "count": COUNT, "pid": os.getpid(), "tag": TAG,
            "request_id": context.aws_request_id, "greeting": os.environ.get("GREETING")}
"""


def invoke(lam: Any, name: str, event: dict[str, Any] | None = None) -> dict[str, Any]:
    """Invoke with a log tail; returns the response with Body (decoded JSON) and Log (text)."""
    response = lam.invoke(FunctionName=name, Payload=json.dumps(event or {}), LogType="Tail")
    response["Body"] = json.loads(response["Payload"].read())
    response["Log"] = base64.b64decode(response["LogResult"]).decode()
    return response


def report(log: str) -> re.Match[str]:
    matches = list(REPORT.finditer(log))
    assert len(matches) == 1, f"expected one REPORT line in:\n{log}"
    return matches[0]


def start_request_id(log: str) -> str:
    match = re.search(rf"^START RequestId: ({REQUEST_ID}) Version: \$LATEST$", log, re.M)
    assert match, log
    return match.group(1)


def isolation(server: Server) -> dict[str, Any]:
    request = AWSRequest("GET", f"{server.endpoint}/_lambdad/status")
    credentials = Credentials(
        server.env["LAMBDAD_ROOT_ACCESS_KEY_ID"], server.env["LAMBDAD_ROOT_SECRET_ACCESS_KEY"]
    )
    SigV4Auth(credentials, "lambda", "us-east-1").add_auth(request)
    prepared = urllib.request.Request(request.url, headers=dict(request.headers.items()))
    with urllib.request.urlopen(prepared, timeout=10) as response:
        return dict(json.loads(response.read())["isolation"])


# -- warm reuse and REPORT ----------------------------------------------------------------------


def test_warm_environment_is_reused(lam: Any) -> None:
    name = create_function(lam, {"app.py": STATEFUL})
    bodies = [invoke(lam, name)["Body"] for _ in range(4)]
    assert [b["count"] for b in bodies] == [1, 2, 3, 4]
    assert len({b["env_id"] for b in bodies}) == 1
    assert len({b["pid"] for b in bodies}) == 1


def test_report_line_and_init_duration_only_on_cold_start(lam: Any) -> None:
    name = create_function(lam, {"app.py": STATEFUL}, MemorySize=256)
    cold, warm = invoke(lam, name), invoke(lam, name)
    for response in (cold, warm):
        line = report(response["Log"])
        assert line.group("id") == response["Body"]["request_id"]
        assert line.group("id") == start_request_id(response["Log"])
        assert int(line.group("billed")) == max(1, math.ceil(float(line.group("duration"))))
        assert line.group("memory") == "256"
        assert 0 < int(line.group("used")) < 256
        assert line.group("status") is None
        assert response["Log"].rstrip("\n").endswith(line.group(0))
    assert float(report(cold["Log"]).group("init")) > 0
    assert report(warm["Log"]).group("init") is None
    assert warm["Body"]["env_id"] == cold["Body"]["env_id"]


SLOW_INIT = """
import time
time.sleep(1.0)

def handler(event, context):
    return {"remaining": context.get_remaining_time_in_millis(), "event": event}
"""


def test_a_cold_starts_deadline_counts_from_the_end_of_init(lam: Any) -> None:
    # The first event reaches lambdad's bootstrap while its init runs (a round trip less):
    # the invocation's time still starts when init ends, not when the event was sent.
    name = create_function(lam, {"app.py": SLOW_INIT}, Timeout=3)
    response = invoke(lam, name, {"n": 1})
    assert response["Body"]["event"] == {"n": 1}
    assert 2_500 < response["Body"]["remaining"] <= 3_000
    line = report(response["Log"])
    assert float(line.group("init")) >= 1_000
    assert float(line.group("duration")) < 500
    assert invoke(lam, name, {"n": 2})["Body"]["event"] == {"n": 2}


def test_max_memory_used_is_measured(lam: Any) -> None:
    name = create_function(lam, {"app.py": STATEFUL}, MemorySize=512)
    idle = int(report(invoke(lam, name)["Log"]).group("used"))
    big = int(report(invoke(lam, name, {"action": "allocate", "mb": 60})["Log"]).group("used"))
    assert idle < 512 and big < 512
    assert big >= idle + 40, (idle, big)


def test_billed_duration_follows_the_handlers_time(lam: Any) -> None:
    name = create_function(lam, {"app.py": STATEFUL})
    line = report(invoke(lam, name, {"action": "sleep", "seconds": 0.3})["Log"])
    duration = float(line.group("duration"))
    assert duration >= 300
    assert int(line.group("billed")) == math.ceil(duration)


# -- timeouts and crashes -----------------------------------------------------------------------


def test_timeout_kills_the_environment(lam: Any) -> None:
    name = create_function(lam, {"app.py": STATEFUL}, Timeout=1)
    first = invoke(lam, name)
    assert live_processes(first["Body"]["tag"])
    timed_out = invoke(lam, name, {"action": "sleep", "seconds": 5})
    request_id = start_request_id(timed_out["Log"])
    assert timed_out["StatusCode"] == 200
    assert timed_out["FunctionError"] == "Unhandled"
    assert timed_out["Body"] == {
        "errorType": "Sandbox.Timedout",
        "errorMessage": f"RequestId: {request_id} Error: Task timed out after 1.00 seconds",
    }
    assert re.search(
        rf"^\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{{3}}Z {request_id} "
        r"Task timed out after 1\.00 seconds$",
        timed_out["Log"],
        re.M,
    )
    line = report(timed_out["Log"])
    assert line.group("status") == "timeout"
    assert float(line.group("duration")) >= 1000
    assert wait_for(lambda: gone(first["Body"]["tag"])), "the timed-out environment lives on"

    fresh = invoke(lam, name)
    assert fresh["Body"]["count"] == 1
    assert fresh["Body"]["env_id"] != first["Body"]["env_id"]
    assert report(fresh["Log"]).group("init") is not None


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        ({"action": "exit", "code": 3}, "Runtime exited with error: exit status 3"),
        ({"action": "kill"}, "Runtime exited with error: signal: killed"),
        ({"action": "sys.exit"}, "Runtime exited without providing a reason"),
    ],
    ids=["exit-3", "sigkill", "sys-exit-0"],
)
def test_crash_is_a_runtime_exit_error(lam: Any, event: dict[str, Any], reason: str) -> None:
    name = create_function(lam, {"app.py": STATEFUL})
    before = invoke(lam, name)["Body"]
    assert live_processes(before["tag"])
    crashed = invoke(lam, name, event)
    request_id = start_request_id(crashed["Log"])
    assert crashed["StatusCode"] == 200
    assert crashed["FunctionError"] == "Unhandled"
    assert crashed["Body"] == {
        "errorType": "Runtime.ExitError",
        "errorMessage": f"RequestId: {request_id} Error: {reason}",
    }
    assert f"END RequestId: {request_id}" in crashed["Log"]
    line = report(crashed["Log"])
    assert line.group("status") == "error"
    assert int(line.group("used")) > 0
    assert wait_for(lambda: gone(before["tag"]))

    after = invoke(lam, name)
    assert "FunctionError" not in after
    assert after["Body"]["count"] == 1
    assert after["Body"]["env_id"] != before["env_id"]
    assert report(after["Log"]).group("init") is not None


def test_crash_during_init(lam: Any) -> None:
    name = create_function(lam, {"app.py": "import os\nos._exit(4)\n"})
    for _ in range(2):  # each invocation gets a new environment that crashes the same way
        crashed = invoke(lam, name)
        request_id = start_request_id(crashed["Log"])
        assert crashed["FunctionError"] == "Unhandled"
        assert crashed["Body"] == {
            "errorType": "Runtime.ExitError",
            "errorMessage": f"RequestId: {request_id} Error: Runtime exited with error: "
            "exit status 4",
        }
        assert re.search(
            r"^INIT_REPORT Init Duration: \d+\.\d\d ms\tPhase: init\tStatus: error\t"
            r"Error Type: Runtime.ExitError$",
            crashed["Log"],
            re.M,
        )
        assert report(crashed["Log"]).group("status") == "error"


def test_exceeding_memory_is_out_of_memory(server: Server, lam: Any) -> None:
    if not isolation(server)["features"].get("cgroup_limits"):
        pytest.skip("this host's sandbox does not enforce memory limits")
    name = create_function(lam, {"app.py": STATEFUL}, MemorySize=128, Timeout=30)
    before = invoke(lam, name)["Body"]
    crashed = invoke(lam, name, {"action": "exhaust"})
    request_id = start_request_id(crashed["Log"])
    assert crashed["FunctionError"] == "Unhandled"
    assert crashed["Body"] == {
        "errorType": "Runtime.OutOfMemory",
        "errorMessage": f"RequestId: {request_id} Error: Runtime exited with error: signal: killed",
    }
    line = report(crashed["Log"])
    assert line.group("status") == "error"
    assert int(line.group("used")) >= 120
    assert wait_for(lambda: gone(before["tag"]))
    assert invoke(lam, name)["Body"]["count"] == 1


# -- scale-out ----------------------------------------------------------------------------------


def test_parallel_invocations_scale_out_then_reuse(server: Server, lam: Any) -> None:
    name = create_function(lam, {"app.py": STATEFUL}, Timeout=30)
    clients = [server.client(max_pool_connections=2) for _ in range(8)]

    def call(client: Any) -> dict[str, Any]:
        return invoke(client, name, {"action": "sleep", "seconds": 1})["Body"]

    built_on_demand = server.status().get("sandboxPool", {}).get("built_on_demand")
    with ThreadPoolExecutor(max_workers=8) as pool:
        bodies = list(pool.map(call, clients))
    env_ids = {b["env_id"] for b in bodies}
    assert len(env_ids) == 8, "parallel invocations queued behind each other"
    if built_on_demand is not None:  # more than the pool held: built while requests waited
        assert server.status()["sandboxPool"]["built_on_demand"] > built_on_demand
    assert all(live_processes(b["tag"]) for b in bodies)
    assert all(b["count"] == 1 for b in bodies)

    again = [invoke(lam, name)["Body"] for _ in range(8)]
    assert {b["env_id"] for b in again} <= env_ids
    assert all(b["count"] >= 2 for b in again)


# -- environment lifetime -----------------------------------------------------------------------


short_keep_alive = module_server("keepalive", "--keep-alive", "1")


def test_idle_environment_is_reaped_after_keep_alive(short_keep_alive: Server) -> None:
    lam = short_keep_alive.client()
    name = create_function(lam, {"app.py": STATEFUL})
    first = invoke(lam, name)["Body"]
    assert live_processes(first["tag"])
    assert wait_for(lambda: gone(first["tag"]), timeout=10), "idle env was not reaped"
    time.sleep(0.5)
    second = invoke(lam, name)
    assert second["Body"]["env_id"] != first["env_id"]
    assert second["Body"]["count"] == 1
    assert report(second["Log"]).group("init") is not None


def test_busy_environment_is_not_reaped(short_keep_alive: Server) -> None:
    lam = short_keep_alive.client()
    name = create_function(lam, {"app.py": STATEFUL}, Timeout=10)
    response = invoke(lam, name, {"action": "sleep", "seconds": 3})
    assert "FunctionError" not in response
    assert response["Body"]["count"] == 1


def test_update_code_retires_environments(lam: Any) -> None:
    name = create_function(lam, {"app.py": STATEFUL})
    old = invoke(lam, name)["Body"]
    assert live_processes(old["tag"])
    new_code = STATEFUL.replace('"greeting": os.environ.get("GREETING")', '"greeting": "v2"')
    lam.update_function_code(FunctionName=name, ZipFile=make_zip({"app.py": new_code}))
    lam.get_waiter("function_updated_v2").wait(FunctionName=name)
    new = invoke(lam, name)
    assert new["Body"]["greeting"] == "v2"
    assert new["Body"]["env_id"] != old["env_id"]
    assert report(new["Log"]).group("init") is not None
    assert wait_for(lambda: gone(old["tag"])), "the old environment is still running"


def test_update_configuration_retires_environments(lam: Any) -> None:
    name = create_function(lam, {"app.py": STATEFUL}, Environment={"Variables": {"GREETING": "a"}})
    old = invoke(lam, name)["Body"]
    assert live_processes(old["tag"])
    assert old["greeting"] == "a"
    lam.update_function_configuration(
        FunctionName=name, Environment={"Variables": {"GREETING": "b"}}, MemorySize=256
    )
    lam.get_waiter("function_updated_v2").wait(FunctionName=name)
    new = invoke(lam, name)
    assert new["Body"]["greeting"] == "b"
    assert new["Body"]["env_id"] != old["env_id"]
    assert report(new["Log"]).group("memory") == "256"
    assert wait_for(lambda: gone(old["tag"])), "the old environment is still running"


def test_update_while_busy_retires_after_the_invocation(server: Server, lam: Any) -> None:
    name = create_function(lam, {"app.py": STATEFUL}, Timeout=10)
    other = server.client()
    with ThreadPoolExecutor(max_workers=1) as pool:
        running = pool.submit(invoke, other, name, {"action": "sleep", "seconds": 1.5})
        time.sleep(0.5)
        lam.update_function_configuration(
            FunctionName=name, Environment={"Variables": {"GREETING": "later"}}
        )
        lam.get_waiter("function_updated_v2").wait(FunctionName=name)
        busy = running.result()
    assert "FunctionError" not in busy, "the running invocation was disturbed by the update"
    assert busy["Body"]["greeting"] is None
    assert wait_for(lambda: gone(busy["Body"]["tag"])), "retired env kept running"
    assert invoke(lam, name)["Body"]["greeting"] == "later"


def test_deleted_function_environments_stop(lam: Any) -> None:
    name = create_function(lam, {"app.py": STATEFUL})
    tag = invoke(lam, name)["Body"]["tag"]
    assert live_processes(tag)
    lam.delete_function(FunctionName=name)
    assert wait_for(lambda: gone(tag)), "environment of a deleted function kept running"


def test_server_stop_leaves_no_environment_behind(tmp_path: Path) -> None:
    srv = start_server(tmp_path / "data")
    try:
        lam = srv.client()
        name = create_function(lam, {"app.py": STATEFUL}, Timeout=30)
        reply = invoke(lam, name)
        tag = reply["Body"].get("tag") if isinstance(reply["Body"], dict) else None
        assert tag, reply["Body"]
        assert live_processes(tag)
    finally:
        srv.stop()
    assert wait_for(lambda: gone(tag)), "environment outlived the server"


def test_the_descriptor_table_is_grown_before_any_thread(server: Server) -> None:
    # Growing it later waits for an RCU grace period on whichever open crosses a power of two:
    # the event loop stalled 10-25 ms in a cold start's open_tree (every doubling).
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    size = int(next(line.split()[1] for line in status.splitlines() if line.startswith("FDSize")))
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[1]  # lambdad raises its soft to the hard
    # 8 per environment: 1,000 busy (the account's concurrency) and 1,000 idle, by default
    assert size >= min(8 * 2_000, soft)


def test_the_server_collects_its_garbage_seldom_and_not_its_startup_objects(
    server: Server, lam: Any
) -> None:
    """lambdad freezes what start-up made (out of every collection) and raises the collector's
    thresholds, so a burst of cold starts is not stopped by full collections; the status
    document says so and counts the collections."""
    collector = server.status()["garbageCollector"]
    assert collector["thresholds"] == [10_000, 20, 20]
    assert collector["frozen"] > 10_000  # botocore's model, the routes, the registries
    name = create_function(lam, {"app.py": "def handler(event, context):\n    return 1\n"})
    for _ in range(50):
        assert lam.invoke(FunctionName=name)["StatusCode"] == 200
    after = server.status()["garbageCollector"]
    assert len(after["collections"]) == 3
    assert after["collections"][0] >= collector["collections"][0]
    lam.delete_function(FunctionName=name)


# -- the memory reserve (sandbox/memory_reserve.py) ----------------------------------------------

with_reserve = module_server("reserve", "--memory-reserve", "64")
SLEEPER = "import time\ndef handler(event, context):\n    time.sleep(0.5)\n    return 1\n"


def _reserve(server: Server) -> dict[str, Any]:
    reserve: dict[str, Any] = server.status()["memoryReserve"]
    return reserve


def _maps_exactly(pid: int, size: int) -> bool:
    """Whether process `pid` has a mapping of exactly `size` bytes."""
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        low, _, high = line.split(" ", 1)[0].partition("-")
        if int(high, 16) - int(low, 16) == size:
            return True
    return False


def _reserve_helper(server_pid: int) -> int:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == server_pid and b"serve_reserve" in command:
            return int(entry.name)
    raise AssertionError("lambdad has no memory reserve helper")


def test_environments_scaling_out_draw_on_the_memory_reserve_and_it_fills_again(
    with_reserve: Server,
) -> None:
    """lambdad holds 64 MB written ahead (in a helper process); cold starts several at once
    give it back to the kernel as they start (for the next ones' first pages), and it is
    written again once they stop starting."""
    size = 64 << 20
    assert "memory reserve: 64 MB (--memory-reserve)" in with_reserve.output()
    assert wait_for(lambda: _reserve(with_reserve)["held_bytes"] == size, timeout=30)
    assert _reserve(with_reserve)["size_bytes"] == size
    helper = _reserve_helper(with_reserve.process.pid)  # held by a helper, not by lambdad
    assert _maps_exactly(helper, size) and not _maps_exactly(with_reserve.process.pid, size)
    lam = with_reserve.client(max_pool_connections=12)
    name = create_function(lam, {"app.py": SLEEPER}, Timeout=30)
    with ThreadPoolExecutor(max_workers=12) as pool:
        replies = list(pool.map(lambda _: lam.invoke(FunctionName=name), range(12)))
    assert all(reply["StatusCode"] == 200 for reply in replies)
    drawn = _reserve(with_reserve)
    assert drawn["drawn_bytes"] >= 4 << 20, drawn  # 4 MiB for each that started among others
    assert wait_for(lambda: _reserve(with_reserve)["refilled_bytes"] > 0, timeout=30)
    assert wait_for(lambda: _reserve(with_reserve)["held_bytes"] == size, timeout=30)


def test_a_lone_cold_start_draws_nothing(with_reserve: Server) -> None:
    assert wait_for(lambda: _reserve(with_reserve)["held_bytes"] == 64 << 20, timeout=30)
    before = _reserve(with_reserve)["drawn_bytes"]
    lam = with_reserve.client()
    name = create_function(lam, {"app.py": "def handler(event, context):\n    return 1\n"})
    assert lam.invoke(FunctionName=name)["StatusCode"] == 200
    assert _reserve(with_reserve)["drawn_bytes"] == before


def test_the_memory_reserve_can_be_off_and_auto_follows_the_host(tmp_path: Path) -> None:
    # (the suite's other servers run with --memory-reserve 0: see conftest)
    srv = start_server(tmp_path / "auto", "--memory-reserve", "auto")
    try:
        reserve = srv.status()["memoryReserve"]
    finally:
        srv.stop()
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    reporting = memory_reserve.free_page_reporting()
    size, detail = memory_reserve.auto_size(1000, total, reporting)
    assert (reserve["size_bytes"], reserve["detail"]) == (size, detail)
    off = start_server(tmp_path / "off", "--memory-reserve", "0")
    try:
        assert off.status()["memoryReserve"]["size_bytes"] == 0
        assert "memory reserve: off" in off.output()
    finally:
        off.stop()
