"""The fork-server protocol: lambdad's header line, a real zygote forking from it, and both
fork loops (Python's and the compiled one) serving it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from lambdad.sandbox import init_binary
from lambdad.sandbox import zygote as zygote_module
from lambdad.sandbox.zygote import (
    GUEST_DIR,
    INIT_GO,
    INIT_MOUNTS,
    INIT_NONE,
    Zygote,
    ZygoteError,
    fork_header,
)
from tests.conftest import live_pids


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


# A fork server of either loop, without sandboxes: its children exec the request's argv with
# their output on the request's one descriptor.
SERVER = """
import os, socket, sys
sys.path.insert(0, sys.argv[1])
import lambdad_forkserver as forkserver
compiled = None
if sys.argv[3]:
    entry = forkserver.load_compiled_loop(sys.argv[3])
    assert entry is not None
    compiled = (entry, -1, "")
def child(request, fds):
    os.dup2(fds[0], 1)
    os.close(fds[0])
    os.execve(request["argv"][0], request["argv"], request["env"])
forkserver.serve(socket.socket(fileno=int(sys.argv[2])), child, (1,), None, compiled)
"""


def start_server(fork_loop: str, **popen: Any) -> tuple[socket.socket, subprocess.Popen[bytes]]:
    """A SERVER on a socket pair: lambdad's end and the process."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    argv = [sys.executable, "-c", SERVER, str(GUEST_DIR), str(theirs.fileno()), fork_loop]
    server = subprocess.Popen(argv, pass_fds=[theirs.fileno()], **popen)
    theirs.close()
    return ours, server


@pytest.fixture(params=["python", "compiled"])
def fork_loop(request: pytest.FixtureRequest) -> str:
    if request.param == "python":
        return ""
    built = init_binary.ensure_fork_loop_built()
    if built is None:
        pytest.skip("no C compiler")
    return str(built)


async def test_either_fork_loop_serves_the_protocol(fork_loop: str, tmp_path: Path) -> None:
    ours, server = start_server(fork_loop)
    zygote = Zygote.adopt(ours, "test")
    try:
        await asyncio.wait_for(zygote.wait_ready(), 10)

        async def run(argv: list[str], output: Path) -> tuple[int | None, str]:
            fd = os.open(output, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                _, exited = await zygote.fork({"env": {"V": output.name}, "argv": argv}, [fd])
            finally:
                os.close(fd)
            status = await asyncio.wait_for(exited, 10)
            return status.code, output.read_text()

        echo = ["/bin/sh", "-c", 'printf "%s" "$V"; exit 3']
        assert await run(echo, tmp_path / "one") == (3, "one")
        # More forks at once than the compiled loop records between two returns to Python
        # (64): every exit is still reported, with its own status.
        outcomes = await asyncio.gather(*(run(echo, tmp_path / f"n{i}") for i in range(150)))
        assert outcomes == [(3, f"n{i}") for i in range(150)]
        # Refused by its id (two descriptors where one is allowed); the server goes on.
        pair = [os.open(os.devnull, os.O_RDONLY) for _ in range(2)]
        try:
            with pytest.raises(ZygoteError):
                await zygote.fork({"env": {}, "argv": ["/bin/true"]}, pair)
        finally:
            for fd in pair:
                os.close(fd)
        assert await run(["/bin/sh", "-c", "printf ok"], tmp_path / "last") == (0, "ok")
    finally:
        await zygote.close()
        assert server.wait(timeout=10) == 0  # it ends once lambdad's end is closed


def test_no_answer_is_lost_while_lambdad_reads_late(fork_loop: str) -> None:
    # While lambdad leaves answers and exit reports unread, the server's send buffer fills and
    # its next send() waits; its children exit meanwhile, and their SIGCHLD interrupts that
    # send (the interpreter's handlers are not SA_RESTART). Every request must still get its
    # answer, and every child its exit report. (The compiled loop used to drop the answer.)
    ours, server = start_server(fork_loop)
    count = 300
    try:
        assert b'"ready"' in ours.recv(4096)
        for request_id in range(1, count + 1):
            request = {"env": {}, "argv": ["/bin/true"]}
            fd = os.open(os.devnull, os.O_WRONLY)
            try:
                socket.send_fds(
                    ours, [fork_header(request_id, request) + orjson.dumps(request)], [fd]
                )
            finally:
                os.close(fd)
        time.sleep(1.0)  # not reading: the server's sends wait, its children exit
        ours.settimeout(20)
        answered: set[int] = set()
        exits = 0
        while len(answered) < count or exits < count:
            message = orjson.loads(ours.recv(4096))
            if "pid" in message:
                answered.add(message["id"])
            elif "exit" in message:
                exits += 1
        assert answered == set(range(1, count + 1))
    finally:
        ours.close()
        server.wait(timeout=10)


@contextlib.asynccontextmanager
async def stopped_server() -> AsyncIterator[tuple[Zygote, subprocess.Popen[bytes], int]]:
    """A fork server (the Python loop) adopted as a Zygote, ready and then stopped (SIGSTOP:
    it reads no request until SIGCONT), and a descriptor to give forks as their log."""
    ours, server = start_server("")
    zygote = Zygote.adopt(ours, "test")
    fd = os.open(os.devnull, os.O_WRONLY)
    try:
        await asyncio.wait_for(zygote.wait_ready(), 10)
        os.kill(server.pid, signal.SIGSTOP)
        yield zygote, server, fd
    finally:
        os.kill(server.pid, signal.SIGCONT)
        os.close(fd)
        await zygote.close()
        server.wait(timeout=10)


async def test_forks_wait_while_the_zygote_reads_late(tmp_path: Path) -> None:
    # More requests than the socket buffers while the zygote takes none (stopped): each
    # waits for room instead of failing, and all are forked once it reads again.
    async with stopped_server() as (zygote, server, fd):
        request = {"env": {"FILL": "x" * 3000}, "argv": ["/bin/true"]}
        forks = [asyncio.ensure_future(zygote.fork(request, [fd])) for _ in range(400)]
        await asyncio.sleep(0.5)
        assert not any(f.done() for f in forks)  # waiting, none failed
        os.kill(server.pid, signal.SIGCONT)
        forked = await asyncio.wait_for(asyncio.gather(*forks), 30)
        statuses = await asyncio.wait_for(asyncio.gather(*(e for _, e in forked)), 30)
        assert [s.code for s in statuses] == [0] * 400


async def test_a_fork_the_zygote_answers_too_late_fails_and_its_child_is_killed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A zygote that does not answer (stopped here) fails the fork after the timeout, not never;
    # when it answers after all, the child nobody waits for is killed.
    monkeypatch.setattr(zygote_module, "FORK_ANSWER_TIMEOUT_S", 0.3)
    async with stopped_server() as (zygote, server, fd):
        request = {"env": {}, "argv": ["/bin/sleep", "60"]}
        with pytest.raises(ZygoteError, match=r"did not answer a fork in 0\.3 s"):
            await zygote.fork(request, [fd])
        os.kill(server.pid, signal.SIGCONT)
        pid, exited = await asyncio.wait_for(zygote.fork(request, [fd]), 10)  # still serves

        def children() -> list[int]:
            return live_pids(lambda fields: fields[1] == str(server.pid))

        deadline = time.monotonic() + 10
        while children() != [pid] and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert children() == [pid]  # the late one was killed, this one lives
        os.kill(pid, signal.SIGKILL)
        assert (await asyncio.wait_for(exited, 10)).signal == signal.SIGKILL


def test_either_fork_loop_stops_at_a_request_without_its_header(fork_loop: str) -> None:
    # lambdad is the only writer: a request it could not have written ends the server (lambdad
    # then sees the socket closed), rather than being guessed at.
    ours, server = start_server(fork_loop, stderr=subprocess.PIPE)
    try:
        assert b'"ready"' in ours.recv(4096)
        fd = os.open(os.devnull, os.O_WRONLY)
        try:
            socket.send_fds(ours, [b'{"env": {}, "argv": ["/bin/true"]}'], [fd])
        finally:
            os.close(fd)
        _, errors = server.communicate(timeout=10)
        assert server.returncode != 0
        assert b"ValueError" in errors
        assert ours.recv(4096) == b""  # no answer, then the socket is closed
    finally:
        ours.close()
        if server.poll() is None:
            server.kill()


VARIABLES_CHECK = r"""
import ctypes, os, subprocess, sys
sys.path.insert(0, sys.argv[1])
import lambdad_zygote
os.environ["ZYGOTE_ONLY"] = "gone after"
wanted = {"PATH": os.environ["PATH"], "A_VAR": "one", "UNICODE": "caf\u00e9 \u2603", "EMPTY": ""}
lambdad_zygote._set_variables(wanted)
assert dict(os.environ) == wanted, dict(os.environ)
getenv = ctypes.CDLL(None).getenv
getenv.restype = ctypes.c_char_p
assert getenv(b"ZYGOTE_ONLY") is None and getenv(b"UNICODE") == wanted["UNICODE"].encode()
child = subprocess.run(["env"], capture_output=True, text=True, check=True).stdout  # C environ
assert sorted(child.splitlines()) == sorted(f"{k}={v}" for k, v in wanted.items()), child
os.environ["LATER"] = "x"  # os.environ still works as a mapping of the C environment
assert getenv(b"LATER") == b"x"
print("ok")
"""


def test_a_child_gets_exactly_its_variables(tmp_path: Path) -> None:
    """_set_variables (the zygote's child, every environment): os.environ, the C environment
    and what a spawned program inherits are exactly the request's variables."""
    out = subprocess.run(
        [sys.executable, "-c", VARIABLES_CHECK, str(GUEST_DIR)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == "ok\n"


CHILD_TABLES_CHECK = r"""
import os, socket, sys, threading
sys.path.insert(0, sys.argv[1])
import lambdad_forkserver as forkserver
# What a server has when it forks: its children's tables, a status pipe of one of them.
status_r, status_w = os.pipe()
forkserver._status_pipes[12] = status_r
forkserver._inits[10] = 11
forkserver._children_of_init[11] = 10
forkserver._ended[9] = 0
fs = forkserver
tables = (fs._status_pipes, fs._inits, fs._children_of_init, fs._ended)
before = [dict(t) for t in tables]
control, _ = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
forkserver._leave_server(control, os.pipe())
# the child keeps the tables untouched (no page of them copied) but none of the descriptors
assert [dict(t) for t in tables] == before, tables
try:
    os.fstat(status_r)
    raise AssertionError("a sibling's status pipe stayed open in the child")
except OSError:
    pass
# ...until it serves forks of its own (a SnapStart snapshot): then it starts with none
ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
seen = []
def lambdad():
    try:
        seen.append((ours.recv(4096), [dict(t) for t in tables]))
    finally:
        ours.close()
threading.Thread(target=lambdad).start()
assert forkserver.serve(theirs, lambda request, fds: None) is None
assert len(seen) == 1 and b"ready" in seen[0][0], seen
assert seen[0][1] == [{}, {}, {}, {}], seen
print("ok")
"""


def test_a_child_keeps_its_servers_tables_until_it_serves() -> None:
    """_leave_server (every forked child) closes its server's descriptors but writes nothing to
    the tables of the server's children (that would copy their pages in every child);
    `serve`, where a child becomes a fork server itself, starts with them empty."""
    out = subprocess.run(
        [sys.executable, "-c", CHILD_TABLES_CHECK, str(GUEST_DIR)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == "ok\n"


def test_the_zygote_keeps_the_c_heaps_free_chunks_so_children_allocate_side_by_side() -> None:
    """The fork server's take_free_chunks (run as its loop starts, in zygotes and SnapStart
    snapshots) leaves no free chunk below malloc's top chunk, so a forked child's
    allocations come from the top (adjacent pages) rather than from chunks all over the
    heap, each of whose pages it would copy."""
    script = """
import ctypes
import lambdad_forkserver as server
libc = server._libc
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.mallinfo2.restype = server._Mallinfo2
held = [libc.malloc(n) for n in range(40, 4000, 13)]
for pointer in held[::2]:
    libc.free(pointer)  # holes all over the heap, as an interpreter's imports leave them
def free_below_top():
    info = libc.mallinfo2()
    return info.fordblks - info.keepcost
before = free_below_top()
taken = server.take_free_chunks()
print(before, taken, free_below_top(), len(server._KEPT_CHUNKS))
"""
    before, taken, after, chunks = map(int, _guest_python(script).split())
    assert before > 100_000  # the holes
    assert taken == before and after == 0
    assert chunks >= 150


def test_taking_free_chunks_stops_at_what_was_free() -> None:
    """Where the top chunk is not where sbrk says (every allocation then looks like a free
    chunk's), take_free_chunks stops within the free bytes mallinfo2 counted (plus the
    per-thread cache's), instead of taking the top chunk piece by piece."""
    script = """
import types
import lambdad_forkserver as server
address = [1 << 20]
freed = []
def malloc(size):
    address[0] += size
    return address[0]
def free(pointer):
    freed.append(pointer)
info = types.SimpleNamespace(fordblks=300_000, keepcost=100_000)
server._libc = types.SimpleNamespace(
    mallinfo2=lambda: info, malloc=malloc, free=free, sbrk=lambda n: 1 << 60
)
print(server.take_free_chunks(), sum(1 for _ in server._KEPT_CHUNKS), len(freed))
"""
    taken, kept, freed = map(int, _guest_python(script).split())
    assert taken == 0 and freed == 1  # gave up, and gave back the one over budget
    assert kept * 16 <= 200_000 + (1 << 20)  # never more than its budget (in 16-byte steps)
    assert kept == (200_000 + (1 << 20)) // (1 << 16)  # the budget is all in 64 KiB requests


def _guest_python(script: str) -> str:
    """What `script` prints, run by this interpreter beside the guest modules."""
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=GUEST_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout
