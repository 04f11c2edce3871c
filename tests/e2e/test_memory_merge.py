"""Memory merging (KSM): environments opt in to samepage merging, identical pages of two idle
environments of one function end up shared, and --memory-merge off leaves them out."""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import (
    Server,
    create_function,
    live_processes,
    module_server,
    wait_for,
)

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not Path("/sys/kernel/mm/ksm/run").exists(),
    reason="samepage merging needs root and a kernel with KSM",
)

# Names itself (to be found in the host's /proc), allocates a few pages with the same bytes in
# every environment, and waits until both environments exist.
HANDLER = """
import ctypes, os, time, uuid
TAG = "ksm" + uuid.uuid4().hex[:12]
ctypes.CDLL(None).prctl(15, TAG.encode(), 0, 0, 0)
SAME = [bytes([n]) * 4096 for n in range(1, 65)]

def handler(event, context):
    time.sleep(event.get("sleep", 0))
    return {"tag": TAG}
"""


def ksm_stat(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/ksm_stat").read_text().splitlines()
    return dict(line.replace(":", "").split(None, 1) for line in lines)


def two_environments(server: Server) -> list[int]:
    """Host pids of the function processes of two environments of a new function."""
    lam = server.client()
    name = create_function(lam, {"app.py": HANDLER}, MemorySize=128)
    with ThreadPoolExecutor(2) as pool:
        replies = list(
            pool.map(
                lambda _: lam.invoke(FunctionName=name, Payload=json.dumps({"sleep": 0.5})),
                range(2),
            )
        )
    tags = {json.loads(r["Payload"].read())["tag"] for r in replies}
    assert len(tags) == 2
    pids = [pid for tag in tags for pid in live_processes(tag)]
    assert len(pids) == 2
    return pids


unmerged = module_server("unmerged", "--memory-merge", "off")


def test_idle_environments_of_a_function_share_their_identical_pages(server: Server) -> None:
    merge = server.status()["memoryMerge"]
    assert merge["enabled"] is True, merge
    assert "ksmd scans" in merge["detail"]
    pids = two_environments(server)
    for pid in pids:
        assert ksm_stat(pid)["ksm_merge_any"] == "yes"
    # the 64 pages with the same bytes (and more) are merged within a few ksmd scans
    assert wait_for(lambda: all(int(ksm_stat(p)["ksm_merging_pages"]) >= 64 for p in pids), 30)
    assert server.status()["memoryMerge"]["pages_sharing"] > 0
    notes = server.status()["isolation"]["notes"]
    assert any("memory merging (KSM) is on" in note for note in notes)


def test_memory_merge_off_leaves_environments_out(unmerged: Server) -> None:
    merge = unmerged.status()["memoryMerge"]
    assert merge == {"enabled": False, "detail": "off (--memory-merge off)"}
    for pid in two_environments(unmerged):
        stat = ksm_stat(pid)
        assert stat["ksm_merge_any"] == "no"
        assert stat["ksm_merging_pages"] == "0"
    assert not any("KSM" in note for note in unmerged.status()["isolation"]["notes"])


settling = module_server("settling")


def test_ksmd_slows_down_once_it_stopped_finding_pages_and_speeds_up_for_new_work(
    settling: Server,
) -> None:
    """Quiet after start: ksmd first scans fast (to merge what is new), then, once it has
    stopped finding pages to share, at the pace it runs while busy (it used to rescan the
    zygotes at the fast pace for ever: ~10% of a core with nothing running)."""
    merge = settling.status()["memoryMerge"]
    if not merge["enabled"]:
        pytest.skip(f"memory merging is off here: {merge['detail']}")
    assert wait_for(lambda: settling.status()["memoryMerge"]["pace"] == "settled", 60)
    lam = settling.client()
    name = create_function(lam, {"app.py": "def handler(event, context):\n    return 1\n"})
    assert lam.invoke(FunctionName=name)["StatusCode"] == 200
    assert wait_for(lambda: settling.status()["memoryMerge"]["pace"] != "settled", 5)
    assert wait_for(lambda: settling.status()["memoryMerge"]["pace"] == "settled", 60)
