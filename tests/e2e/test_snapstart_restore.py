"""SnapStart end to end: boto3 against a real `lambdad serve`, sandboxed environments.

A published version of a SnapStart function is initialised once (its module-level code and its
before-snapshot hooks run at PublishVersion); every environment of the version is then restored
from that initialised process: module state is inherited, the after-restore hooks run, and each
restored environment still gets its own identity (random state, /tmp, credentials).
"""

from __future__ import annotations

import base64
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.conftest import Server, create_function, module_server, settle, start_server
from tests.e2e.test_isolation import PROBE

RUNTIME = "python3.12"

# Init records what happened before the snapshot; the hooks record their order.
APP = """
import os
import random
import time
import uuid

from snapshot_restore_py import register_after_restore, register_before_snapshot

EVENTS = []
INIT_ID = uuid.uuid4().hex
INIT_PID = os.getpid()
INIT_TYPE = os.environ.get("AWS_LAMBDA_INITIALIZATION_TYPE")
INIT_KEY = os.environ.get("AWS_ACCESS_KEY_ID")
with open("/tmp/from-init.txt", "w") as f:
    f.write("written at init")
time.sleep(float(os.environ.get("INIT_SLEEP", "0")))

@register_before_snapshot
def first_registered():
    EVENTS.append("before-1")

@register_before_snapshot
def second_registered():
    EVENTS.append("before-2")

@register_after_restore
def after_first():
    EVENTS.append("after-1")

def after(tag):
    EVENTS.append("after-" + tag)
    if os.environ.get("FAIL_AFTER_RESTORE"):
        raise ValueError("cannot reconnect")

register_after_restore(after, "2")

def handler(event, context):
    if event.get("write"):
        with open("/tmp/mine.txt", "w") as f:
            f.write(event["write"])
    mine = open("/tmp/mine.txt").read() if os.path.exists("/tmp/mine.txt") else None
    time.sleep(event.get("sleep", 0))
    return {
        "events": EVENTS,
        "init_id": INIT_ID,
        "random": random.random(),
        "uuid": uuid.uuid4().hex,
        "init_type": INIT_TYPE,
        "env_type": os.environ.get("AWS_LAMBDA_INITIALIZATION_TYPE"),
        "init_key": INIT_KEY,
        "key": os.environ.get("AWS_ACCESS_KEY_ID"),
        "from_init": open("/tmp/from-init.txt").read(),
        "mine": mine,
        "uid": os.getuid(),
        "pid1": open("/proc/1/cmdline", "rb").read().split(b"\\0")[0].decode(),
        "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
        "log_group": os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME"),
        "version": context.function_version,
    }
"""


server = module_server("snapstart", "--keep-alive", "30")


@pytest.fixture(scope="module")
def lam(server: Server) -> Any:
    return server.client()


def publish(lam: Any, environment: dict[str, str] | None = None) -> tuple[str, str]:
    name = create_function(
        lam,
        {"app.py": APP},
        runtime=RUNTIME,
        MemorySize=256,
        SnapStart={"ApplyOn": "PublishedVersions"},
        Environment={"Variables": environment or {}},
    )
    version = lam.publish_version(FunctionName=name)
    assert version["State"] == "Pending"
    assert version["SnapStart"] == {"ApplyOn": "PublishedVersions", "OptimizationStatus": "On"}
    lam.get_waiter("function_active_v2").wait(FunctionName=name, Qualifier=version["Version"])
    return name, version["Version"]


def settled(lam: Any, name: str, version: str, timeout: float = 30) -> dict[str, Any]:
    """The version's configuration once it is no longer Pending (its snapshot settled)."""
    return settle(
        lambda: lam.get_function_configuration(FunctionName=name, Qualifier=version),
        lambda config: config["State"] != "Pending",
        timeout,
    )


def call(lam: Any, name: str, version: str, **event: Any) -> tuple[dict[str, Any], str]:
    answer, log = call_with_log(lam, name, version, **event)
    return answer, next(line for line in log if line.startswith("REPORT "))


def call_with_log(
    lam: Any, name: str, version: str, **event: Any
) -> tuple[dict[str, Any], list[str]]:
    """The answer and the lines of its log tail."""
    response = lam.invoke(
        FunctionName=name, Qualifier=version, Payload=json.dumps(event), LogType="Tail"
    )
    assert "FunctionError" not in response, response["Payload"].read()
    log = base64.b64decode(response["LogResult"]).decode()
    return json.loads(response["Payload"].read()), log.splitlines()


def test_restored_environment_inherits_init_and_runs_hooks(lam: Any) -> None:
    name, version = publish(lam)
    answer, log = call_with_log(lam, name, version)
    # AWS's first line of a restored environment: RESTORE_START with the runtime version
    arn = lam.get_function_configuration(FunctionName=name, Qualifier=version)[
        "RuntimeVersionConfig"
    ]["RuntimeVersionArn"]
    assert log[0] == f"RESTORE_START Runtime Version: python:3.12.v1\tRuntime Version ARN: {arn}"
    assert not any(line.startswith("INIT_START") for line in log)
    report = next(line for line in log if line.startswith("REPORT "))
    # before-snapshot hooks in reverse registration order, after-restore in order
    assert answer["events"] == ["before-2", "before-1", "after-1", "after-2"]
    assert answer["init_type"] == "snap-start" and answer["env_type"] == "snap-start"
    assert answer["from_init"] == "written at init"
    assert answer["uid"] == 993
    assert answer["log_group"] is None  # AWS: not available in SnapStart functions
    assert answer["version"] == version
    assert "Restore Duration: " in report and "Billed Restore Duration: " in report
    assert "Init Duration" not in report
    # the next invocation is warm: no restore reported
    again, report = call(lam, name, version)
    assert again["init_id"] == answer["init_id"]
    assert "Restore Duration" not in report


def test_restored_environments_have_their_own_identity(lam: Any) -> None:
    name, version = publish(lam)
    with ThreadPoolExecutor(2) as pool:
        first, second = pool.map(
            lambda tag: call(lam, name, version, write=tag, sleep=1.0)[0], ["one", "two"]
        )
    # both come from the same snapshot ...
    assert first["init_id"] == second["init_id"]
    assert first["init_key"] == second["init_key"]
    # ... yet random state, /tmp, credentials and processes are their own
    assert first["random"] != second["random"]
    assert first["uuid"] != second["uuid"]
    assert {first["mine"], second["mine"]} == {"one", "two"}
    assert first["key"] != second["key"] and first["key"] != first["init_key"]
    assert first["pids"] == second["pids"]  # each sees only its own PID namespace
    assert len(first["pids"]) <= 3


def test_a_burst_of_restores_all_run_and_the_snapshot_survives(server: Server) -> None:
    # Each restored child used to be charged its first ~0.5-1 MB to the snapshot's 128 MB
    # memory cgroup until lambdad moved it: 200 at once got the snapshot killed (out of
    # memory) and nearly every invocation failed. Children are now born in their own cgroups.
    lam = server.client(max_pool_connections=BURST + 50)
    name = create_function(
        lam, {"app.py": APP}, runtime=RUNTIME, SnapStart={"ApplyOn": "PublishedVersions"}
    )
    version = lam.publish_version(FunctionName=name)["Version"]
    lam.get_waiter("function_active_v2").wait(FunctionName=name, Qualifier=version)

    def invoke(_: int) -> int:
        answer = lam.invoke(FunctionName=name, Qualifier=version, Payload=b'{"sleep": 1}')
        assert "FunctionError" not in answer, answer["Payload"].read()
        return answer["StatusCode"]

    for count in (BURST, BURST + 50):  # the second's last 50 need the snapshot alive
        with ThreadPoolExecutor(count) as pool:
            assert list(pool.map(invoke, range(count))) == [200] * count


BURST = 200


# Init records the snapshot's memory cgroup; an after-fork hook of the function's own, run in
# each restored child, writes "0" to every cgroup `tasks` file it holds open (which would move
# it there).
ESCAPE_APP = """
import os

def memory_cgroup():
    return next(l for l in open("/proc/self/cgroup").read().splitlines() if ":memory:" in l)

SNAPSHOT_CGROUP = memory_cgroup()
SEEN = []

def escape():
    for fd in range(3, 256):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").endswith("/tasks"):
                SEEN.append(fd)
                os.write(fd, b"0")
        except OSError:
            pass

os.register_at_fork(after_in_child=escape)

def handler(event, context):
    return {"snapshot": SNAPSHOT_CGROUP, "mine": memory_cgroup(), "seen": SEEN}
"""


def test_a_restored_child_holds_no_cgroup_file_for_its_own_fork_hooks(lam: Any) -> None:
    name = create_function(
        lam, {"app.py": ESCAPE_APP}, runtime=RUNTIME, SnapStart={"ApplyOn": "PublishedVersions"}
    )
    version = lam.publish_version(FunctionName=name)["Version"]
    lam.get_waiter("function_active_v2").wait(FunctionName=name, Qualifier=version)
    answer = json.loads(lam.invoke(FunctionName=name, Qualifier=version)["Payload"].read())
    assert answer["seen"] == []  # closed before the function's first hook ran
    assert answer["mine"] != answer["snapshot"]  # still in the cgroups it was born in


def test_latest_of_a_snapstart_function_is_not_restored(lam: Any) -> None:
    name, _ = publish(lam)
    answer, report = call(lam, name, "$LATEST")
    assert answer["init_type"] == "on-demand"
    assert answer["events"] == []  # no hooks run outside SnapStart
    assert "Init Duration" in report


def test_init_error_fails_the_version(lam: Any) -> None:
    name = create_function(
        lam,
        {"app.py": "raise RuntimeError('no database')\n\ndef handler(e, c):\n    return 1\n"},
        runtime=RUNTIME,
        SnapStart={"ApplyOn": "PublishedVersions"},
    )
    version = lam.publish_version(FunctionName=name)["Version"]
    config = settled(lam, name, version)
    assert config["State"] == "Failed"
    assert config["StateReasonCode"] == "FunctionError"
    assert (
        "Runtime.UserCodeSyntaxError" in config["StateReason"]
        or "no database" in config["StateReason"]
    )
    with pytest.raises(ClientError) as info:
        lam.invoke(FunctionName=name, Qualifier=version, Payload=b"{}")
    assert info.value.response["Error"]["Code"] == "ResourceConflictException"


def test_after_restore_hook_failure_is_a_snapstart_exception(lam: Any) -> None:
    name, version = publish(lam, {"FAIL_AFTER_RESTORE": "1"})
    with pytest.raises(ClientError) as info:
        lam.invoke(FunctionName=name, Qualifier=version, Payload=b"{}")
    response = info.value.response
    assert response["Error"]["Code"] == "SnapStartException"
    assert "Runtime.AfterRestoreError" in response["Error"]["Message"]


def test_snapshot_is_dropped_with_its_version(lam: Any, server: Server) -> None:
    name, version = publish(lam)
    call(lam, name, version)
    before = server.status()["snapStart"]["snapshots"]
    lam.delete_function(FunctionName=name, Qualifier=version)
    deadline = time.monotonic() + 10
    while server.status()["snapStart"]["snapshots"] >= before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server.status()["snapStart"]["snapshots"] == before - 1


def test_process_backend_restores_too(tmp_path: Path) -> None:
    srv = start_server(tmp_path / "data", "--isolation", "process")
    try:
        lam = srv.client()
        name, version = publish(lam)
        answer, report = call(lam, name, version)
        assert answer["events"] == ["before-2", "before-1", "after-1", "after-2"]
        assert "Restore Duration" in report
    finally:
        srv.stop()


# A snapshot's process keeps capabilities over namespaces it creates itself (each restore needs
# them); these are what its init code may and may not do with that, and what a restored
# environment may do (nothing privileged).
SNAPSHOT_PROBE = (
    PROBE
    + r"""
def at_init():
    found = {}
    found["mount_tmp"] = attempt(lambda: call(libc.mount(b"none", b"/tmp", b"tmpfs", 0, None)))
    found["new_user_ns"] = attempt(lambda: call(libc.unshare(0x10000000)))
    found["new_cgroup_ns"] = attempt(lambda: call(libc.unshare(0x02000000)))
    found["setns"] = attempt(
        lambda: call(libc.setns(os.open("/proc/self/ns/net", os.O_RDONLY), 0))
    )
    found["read_shadow"] = attempt(lambda: open("/etc/shadow").read())
    return found


AT_INIT = at_init()
_attack_handler = handler


def handler(event, context):
    if event["attack"] == "at_init":
        return AT_INIT
    if event["attack"] == "caps":
        status = open("/proc/self/status").read().splitlines()
        return {line.split(":")[0]: line.split(":")[1].strip() for line in status
                if line.startswith("Cap") or line.startswith("Seccomp")}
    return _attack_handler(event, context)
"""
)


@pytest.fixture(scope="module")
def restored_probe(lam: Any, server: Server) -> tuple[str, str]:
    if server.status()["isolation"]["backend"] != "namespaces":
        pytest.skip("namespace sandbox unavailable here")
    name = create_function(
        lam,
        {"app.py": SNAPSHOT_PROBE},
        runtime=RUNTIME,
        MemorySize=512,
        Timeout=10,
        SnapStart={"ApplyOn": "PublishedVersions"},
    )
    version = lam.publish_version(FunctionName=name)["Version"]
    lam.get_waiter("function_active_v2").wait(FunctionName=name, Qualifier=version)
    return name, version


def probe(lam: Any, target: tuple[str, str], attack: str, **extra: Any) -> Any:
    name, version = target
    response = lam.invoke(
        FunctionName=name, Qualifier=version, Payload=json.dumps({"attack": attack, **extra})
    )
    assert "FunctionError" not in response
    return json.loads(response["Payload"].read())


def test_snapshot_init_gets_no_privilege_over_the_sandbox(
    lam: Any, restored_probe: tuple[str, str]
) -> None:
    found = probe(lam, restored_probe, "at_init")
    for attack in ("mount_tmp", "new_user_ns", "new_cgroup_ns", "setns", "read_shadow"):
        assert found[attack]["ok"] is False, (attack, found[attack])
    assert found["read_shadow"]["errno"] in (2, 13)


@pytest.mark.parametrize("attack", ["mount", "unshare", "setns"])
def test_restored_environment_is_unprivileged(
    lam: Any, restored_probe: tuple[str, str], attack: str
) -> None:
    found = probe(lam, restored_probe, attack)
    assert found["ok"] is False and found["errno"] == 1  # EPERM


def test_restored_environment_has_no_capabilities_and_full_seccomp(
    lam: Any, restored_probe: tuple[str, str]
) -> None:
    status = probe(lam, restored_probe, "caps")
    for field in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(status[field], 16) == 0, (field, status[field])
    assert status["Seccomp"] == "2"
    assert int(status["Seccomp_filters"]) >= 2  # the snapshot's, then the environment's


def test_restored_environment_cannot_reach_the_host(
    lam: Any, restored_probe: tuple[str, str], server: Server
) -> None:
    port = int(server.endpoint.rsplit(":", 1)[1])
    found = probe(lam, restored_probe, "connect", host="127.0.0.1", port=port)
    assert found["ok"] is False


def test_a_version_lambdad_cannot_fork_fails_with_the_reason(lam: Any) -> None:
    name = create_function(
        lam,
        {"app.py": APP},
        runtime=RUNTIME,
        SnapStart={"ApplyOn": "PublishedVersions"},
        Environment={"Variables": {"AWS_LAMBDA_EXEC_WRAPPER": "/var/task/wrapper"}},
    )
    version = lam.publish_version(FunctionName=name)["Version"]
    config = settled(lam, name, version)
    assert (config["State"], config["StateReasonCode"]) == ("Failed", "InvalidRuntime")
    assert "AWS_LAMBDA_EXEC_WRAPPER" in config["StateReason"]


def test_before_snapshot_hook_failure_fails_the_version(lam: Any) -> None:
    code = (
        "from snapshot_restore_py import register_before_snapshot\n\n"
        "@register_before_snapshot\n"
        "def close_pool():\n"
        "    raise ConnectionError('pool busy')\n\n"
        "def handler(event, context):\n"
        "    return 1\n"
    )
    name = create_function(
        lam, {"app.py": code}, runtime=RUNTIME, SnapStart={"ApplyOn": "PublishedVersions"}
    )
    version = lam.publish_version(FunctionName=name)["Version"]
    config = settled(lam, name, version)
    assert (config["State"], config["StateReasonCode"]) == ("Failed", "FunctionError")
    assert config["StateReason"] == "Runtime.BeforeSnapshotError: pool busy"
