"""Sandbox zygotes without the compiled fork loop (no C compiler: LAMBDAD_COMPILED_FORK_LOOP=off
stands in): the zygote's Python loop forks the same sandboxes."""

from __future__ import annotations

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
    zygotes_forking_in_c,
)

sandboxed = sandboxed_server("pyloop", {"LAMBDAD_COMPILED_FORK_LOOP": "off"})


@pytest.fixture(scope="module")
def lam(sandboxed: Server) -> Any:
    return sandboxed.client()


def test_sandboxes_are_forked_by_the_python_loop(sandboxed: Server, lam: Any) -> None:
    name = create_function(lam, {"app.py": PROBE})
    body, error, _ = run(lam, name, {"attack": "init"})
    assert error is None
    assert body == {"pid": 2, "init": "lambdad-init"}
    zygotes = zygotes_forking_in_c(sandboxed)
    assert zygotes and not any(zygotes.values()), zygotes


def test_init_mounts_the_assignment(lam: Any) -> None:
    check_init_mounts_the_assignment(lam)


def test_processes_end_with_the_environment(lam: Any) -> None:
    check_processes_end_with_the_environment(lam, create_function(lam, {"app.py": PROBE}))


def test_no_descriptor_of_the_zygote_reaches_the_sandbox(lam: Any) -> None:
    check_no_descriptor_reaches_outside(lam, create_function(lam, {"app.py": PROBE}))
