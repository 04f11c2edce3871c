"""Sandboxes without the compiled init (no C compiler: LAMBDAD_COMPILED_INIT=off stands in):
the process the zygote forks stays PID 1 as a Python init, mounts the assignment and reaps,
and the environment behaves as with lambdad-init."""

from __future__ import annotations

import os
from typing import Any

import pytest

from tests.conftest import Server, create_function
from tests.e2e.test_isolation import (
    PROBE,
    check_init_mounts_the_assignment,
    check_no_descriptor_reaches_outside,
    check_processes_end_with_the_environment,
    run,
    sandboxed_server,
)

sandboxed = sandboxed_server("pyinit", {"LAMBDAD_COMPILED_INIT": "off"})


@pytest.fixture(scope="module")
def lam(sandboxed: Server) -> Any:
    return sandboxed.client()


def test_the_status_says_so(sandboxed: Server) -> None:
    notes = sandboxed.status()["isolation"]["notes"]
    assert any(note.startswith("lambdad-init is not compiled") for note in notes), notes


def test_pid_1_is_the_forked_interpreter(lam: Any) -> None:
    name = create_function(lam, {"app.py": PROBE})
    body, error, _ = run(lam, name, {"attack": "init"})
    assert error is None
    assert body["pid"] == 2 and os.path.basename(body["init"]).startswith("python")


def test_init_mounts_the_assignment(lam: Any) -> None:
    check_init_mounts_the_assignment(lam)


def test_processes_end_with_the_environment(lam: Any) -> None:
    check_processes_end_with_the_environment(lam, create_function(lam, {"app.py": PROBE}))


def test_no_descriptor_reaches_outside_the_sandbox(lam: Any) -> None:
    check_no_descriptor_reaches_outside(lam, create_function(lam, {"app.py": PROBE}))
