"""The compiled lambdad-init (guest/lambdad_init.c) run alone: its arguments, its end when the
function process never comes, and the report of an assignment it cannot mount, in a PID
namespace of its own (root only: the rest of its work is covered end to end)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from lambdad.sandbox import init_binary


@pytest.fixture(scope="module")
def init() -> Path:
    built = init_binary.ensure_built()
    if built is None:
        pytest.skip("no C compiler: environments keep a Python init")
    return built


def test_it_is_built_without_a_c_library_on_x86_64(init: Path) -> None:
    if os.uname().machine != "x86_64":
        pytest.skip("the freestanding build is for x86-64")
    assert init.stat().st_size < 64 * 1024  # a static C library alone is ~750 KB
    assert b"GLIBC" not in init.read_bytes()


def test_wrong_arguments_and_no_function_process_end_it(init: Path) -> None:
    assert subprocess.run([init], check=False).returncode == 2
    assert subprocess.run([init, "3", "4"], check=False).returncode == 2
    go_read, go_write = os.pipe()
    os.close(go_write)  # the function process was never forked: end of file
    try:
        done = subprocess.run([init, str(go_read)], pass_fds=(go_read,), check=False, timeout=10)
    finally:
        os.close(go_read)
    assert done.returncode == 1


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _comms(pids: list[int]) -> list[str]:
    comms = []
    for pid in pids:
        with contextlib.suppress(OSError):  # (it ended meanwhile)
            comms.append(Path(f"/proc/{pid}/comm").read_text().strip())
    return comms


def _wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_an_assignment_without_its_code_tree_is_reported_and_nothing_mounted(init: Path) -> None:
    if os.geteuid() != 0 or not (shutil.which("unshare") and shutil.which("nsenter")):
        pytest.skip("needs root, unshare and nsenter (util-linux)")
    go_read, go_write = os.pipe()
    ready_read, ready_write = os.pipe()
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    fds = (go_read, theirs.fileno(), ready_write)
    wrapper = subprocess.Popen(
        ["unshare", "--pid", "--fork", "--kill-child", str(init), *map(str, fds), "993", "993"],
        pass_fds=fds,
    )
    function = None
    try:
        os.close(go_read)
        os.close(ready_write)
        theirs.close()
        _wait_for(lambda: bool(_children(wrapper.pid)))
        (init_pid,) = _children(wrapper.pid)  # PID 1 of the new namespace
        # PID 2, in a mount namespace of its own, stands in for the function process
        function = subprocess.Popen(
            ["nsenter", "-t", str(init_pid), "--pid", "--", "unshare", "--mount", "sleep", "60"]
        )
        _wait_for(lambda: _comms(_children(function.pid)) == ["sleep"])  # nsenter's child
        (pid_2,) = _children(function.pid)
        os.write(go_write, b"g")  # it unshared: init joins its mount namespace
        ours.send(b"512")  # no code tree passed with it
        assert os.read(ready_read, 96) == b"error 22 message"
        os.kill(pid_2, signal.SIGKILL)
        function.wait(timeout=10)
        assert wrapper.wait(timeout=10) == 0  # init ended with its function process
    finally:
        for process in (function, wrapper):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
        os.close(go_write)
        os.close(ready_read)
        ours.close()
