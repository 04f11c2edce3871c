"""AWS_LAMBDA_EXEC_WRAPPER: managed runtimes start through the function's wrapper script."""

from __future__ import annotations

import json
import shutil
from typing import Any

import pytest

from tests.conftest import create_function

WRAPPER = '#!/bin/sh\nexport WRAPPED_BY="wrapper:$1"\nexec "$@"\n'


def invoke(lam: Any, name: str) -> tuple[Any, str | None]:
    reply = lam.invoke(FunctionName=name, Payload=b"{}")
    return json.loads(reply["Payload"].read()), reply.get("FunctionError")


def test_python_runs_through_the_wrapper(lam: Any) -> None:
    name = create_function(
        lam,
        {
            "wrapper": WRAPPER,
            "app.py": "import os\ndef handler(e, c):\n    return os.environ.get('WRAPPED_BY')\n",
        },
        modes={"wrapper": 0o755},
        Environment={"Variables": {"AWS_LAMBDA_EXEC_WRAPPER": "/var/task/wrapper"}},
    )
    body, error = invoke(lam, name)
    assert error is None
    assert body.startswith("wrapper:") and "python3" in body


def test_node_runs_through_the_wrapper(lam: Any) -> None:
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    name = create_function(
        lam,
        {
            "wrapper": WRAPPER,
            "index.js": "exports.handler = async () => process.env.WRAPPED_BY;\n",
        },
        modes={"wrapper": 0o755},
        runtime="nodejs20.x",
        handler="index.handler",
        Environment={"Variables": {"AWS_LAMBDA_EXEC_WRAPPER": "/var/task/wrapper"}},
    )
    body, error = invoke(lam, name)
    assert error is None and body.startswith("wrapper:") and "node" in body


def test_a_missing_wrapper_is_exit_status_127(lam: Any) -> None:
    name = create_function(
        lam,
        {"app.py": "def handler(e, c):\n    return 1\n"},
        Environment={"Variables": {"AWS_LAMBDA_EXEC_WRAPPER": "/var/task/nope"}},
    )
    body, error = invoke(lam, name)
    assert error == "Unhandled"
    assert body["errorType"] == "Runtime.ExitError"
    assert body["errorMessage"].endswith("Runtime exited with error: exit status 127")
