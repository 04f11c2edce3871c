"""The fork-server protocol: lambdad's header line, a real zygote forking from it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from lambdad.sandbox.zygote import INIT_GO, INIT_MOUNTS, INIT_NONE, Zygote, ZygoteError, fork_header


def test_the_header_says_what_the_server_needs_before_it_forks() -> None:
    plain = {"env": {"A": "1"}, "cwd": "/", "argv": ["/bin/true"]}
    assert fork_header(7, plain) == b"7 0 %d 0 0\n" % INIT_NONE
    sandbox = {"jail": {"uid": 993, "gid": 990}, "pid_namespace": True}
    assert fork_header(8, sandbox) == b"8 1 %d 993 990\n" % INIT_MOUNTS
    snapshot = {"jail": {"uid": 993, "gid": 990, "late_privileges": True}, "pid_namespace": True}
    assert fork_header(9, snapshot) == b"9 1 %d 993 990\n" % INIT_GO


async def test_a_zygote_forks_the_request_only_its_child_parses(tmp_path: Path) -> None:
    zygote = Zygote(sys.executable)
    await zygote.start()
    try:
        log = tmp_path / "log"
        fd = os.open(log, os.O_WRONLY | os.O_CREAT, 0o600)
        # Variables with what JSON escapes, and more of them than one page holds.
        env = {"PATH": "/usr/bin:/bin", "X": 'a "quoted"\n\\value', "FILL": "y" * 6000}
        argv = ["/bin/sh", "-c", 'printf "%s|%s|%s" "$X" "$(pwd)" "${#FILL}"']
        try:
            pid, exited = await zygote.fork({"env": env, "cwd": str(tmp_path), "argv": argv}, [fd])
        finally:
            os.close(fd)
        status = await exited
        assert pid > 0
        assert (status.code, status.signal) == (0, None)
        assert log.read_text() == f'a "quoted"\n\\value|{tmp_path}|6000'
        # A request with descriptors it may not carry is refused, by its id, and the
        # server goes on serving.
        descriptors = [os.open(os.devnull, os.O_RDONLY) for _ in range(7)]
        try:
            with pytest.raises(ZygoteError, match="expected"):
                await zygote.fork({"env": {}, "cwd": "/", "argv": ["/bin/true"]}, descriptors)
        finally:
            for descriptor in descriptors:
                os.close(descriptor)
        fd = os.open(os.devnull, os.O_WRONLY)
        try:
            _, exited = await zygote.fork({"env": {}, "cwd": "/", "argv": ["/bin/false"]}, [fd])
        finally:
            os.close(fd)
        assert (await exited).code == 1
    finally:
        await zygote.close()
