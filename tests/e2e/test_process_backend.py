"""The fallback backend (no namespaces: what a host without root gets) still runs functions,
and says loudly that it does not isolate them."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Server, create_function, module_server, start_server

plain = module_server("plain", "--isolation", "process")


def test_weaker_isolation_is_announced(plain: Server) -> None:
    status = plain.status()
    assert status["isolation"]["backend"] == "process"
    assert not any(status["isolation"]["features"].values())
    assert any("no isolation" in note for note in status["isolation"]["notes"])
    assert "WARNING" in plain.output()


def test_python_and_node_functions_run(plain: Server) -> None:
    lam: Any = plain.client()
    py = create_function(lam, {"app.py": "def handler(e, c):\n    return {'py': e}\n"})
    reply = lam.invoke(FunctionName=py, Payload=b'{"x": 1}')
    assert json.loads(reply["Payload"].read()) == {"py": {"x": 1}}
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    js = create_function(
        lam,
        {"index.js": "exports.handler = async (e) => ({node: e});\n"},
        runtime="nodejs20.x",
        handler="index.handler",
    )
    reply = lam.invoke(FunctionName=js, Payload=b'{"y": 2}')
    assert json.loads(reply["Payload"].read()) == {"node": {"y": 2}}


def test_environments_die_with_the_server(tmp_path: Path) -> None:
    server = start_server(tmp_path / "data", "--isolation", "process")
    lam: Any = server.client()
    name = create_function(
        lam, {"app.py": "import os\ndef handler(e, c):\n    return os.getpid()\n"}
    )
    pid = json.loads(lam.invoke(FunctionName=name)["Payload"].read())
    assert Path(f"/proc/{pid}").exists()
    server.process.kill()
    server.process.wait()
    for _ in range(100):
        if not Path(f"/proc/{pid}").exists():
            break
        time.sleep(0.05)
    assert not Path(f"/proc/{pid}").exists()
