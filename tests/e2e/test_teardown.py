"""Stopping lambdad leaves nothing of its sandboxes behind: processes, cgroups, network
namespaces, veths, nftables rules (mounts go with the mount namespaces)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import create_function, start_server


def cgroup_dirs(tag: str) -> list[Path]:
    """The cgroup directories named `tag`, under every controller. Other servers (tests running
    beside this one) make and remove cgroups meanwhile: os.walk skips one that vanished (a
    glob raised), and nothing inside a server's own tree is searched."""
    found = []
    for root, dirs, _ in os.walk("/sys/fs/cgroup"):
        if tag in dirs:
            found.append(Path(root) / tag)
        dirs[:] = [d for d in dirs if not d.startswith("lambdad-")]
    return found


def output(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=False).stdout


def test_stopping_the_server_removes_every_sandbox_resource(tmp_path: Path) -> None:
    server = start_server(tmp_path / "data")
    try:
        status = server.status()
        if status["isolation"]["backend"] != "namespaces":
            pytest.skip("namespace sandbox unavailable: " + "; ".join(status["isolation"]["notes"]))
        lam: Any = server.client()
        name = create_function(
            lam, {"app.py": "import os\ndef handler(e, c):\n    return os.getpid()\n"}
        )
        assert json.loads(lam.invoke(FunctionName=name)["Payload"].read()) == 2
        tag = f"lambdad-{server.process.pid}"
        assert cgroup_dirs(tag), "the server's cgroups should exist while it runs"
        networked = "network" in status
        if networked:  # a slot's namespace is held by lambdad (not bound): its veth shows
            assert f"lbd{server.process.pid}-" in output("ip", "link")
    finally:
        server.stop()
    assert server.process.returncode == 0
    assert cgroup_dirs(tag) == []
    assert tag not in output("ip", "netns", "list")
    assert f"lbd{server.process.pid}-" not in output("ip", "link")
    if networked:
        assert f"lambdad_{server.process.pid}" not in output("nft", "list", "tables")
    leftovers = output("pgrep", "-f", str(tmp_path))
    assert leftovers == ""
