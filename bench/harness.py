"""Processes under test and the keep-alive client every sequential figure is timed with.

`start_lambdad` and `start_echo` launch the two servers on free loopback ports; `signed_request`
prepares an Invoke request whose SigV4 headers botocore computes once (they stay valid 15 min);
`KeepAliveClient` replays prepared requests over one HTTP/1.1 connection.
"""

from __future__ import annotations

import gc
import http.client
import io
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import botocore.session
import orjson
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
REGION = "us-east-1"
ACCESS_KEY_ID = "AKIABENCHBENCHBENCH0"
SECRET_ACCESS_KEY = "benchsecretbenchsecretbenchsecretbenchse"
ROLE = "arn:aws:iam::000000000000:role/lambdad-bench"
STATUS_PATH = "/_lambdad/status"
NOOP_HANDLER = "def handler(event, context):\n    return None\n"
# The same, marking its init: an environment whose init ran holds INITIALISED_MARK (setenv's
# "KEY=VALUE" in the C heap), one staged ahead of a cold start does not (the memory figure).
MARKED_NOOP_HANDLER = "import os\nos.environ['BENCH_INITIALISED'] = '1'\n" + NOOP_HANDLER
INITIALISED_MARK = b"BENCH_INITIALISED=1\0"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@dataclass
class ManagedProcess:
    """A server process this benchmark started, with its combined output in a file."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def wait_listening(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.output()}")
            try:
                with socket.create_connection((HOST, self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} did not start listening:\n{self.output()}")


def _spawn(name: str, argv: list[str], work_dir: Path, env: Mapping[str, str]) -> ManagedProcess:
    port = free_port()
    log_path = work_dir / f"{name}-{port}.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [*argv, "--port", str(port)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env),
            cwd=ROOT,
        )
    managed = ManagedProcess(name, process, port, log_path)
    managed.wait_listening()
    return managed


def start_echo(work_dir: Path) -> ManagedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return _spawn("echo", [sys.executable, "-m", "bench.echo_server"], work_dir, env)


def start_lambdad(work_dir: Path, *extra: str) -> ManagedProcess:
    """`extra`: further `serve` arguments."""
    env = dict(
        os.environ,
        LAMBDAD_ROOT_ACCESS_KEY_ID=ACCESS_KEY_ID,
        LAMBDAD_ROOT_SECRET_ACCESS_KEY=SECRET_ACCESS_KEY,
    )
    data_dir = work_dir / "data"
    argv = [sys.executable, "-m", "lambdad.cli.main", "serve", "--data-dir", str(data_dir)]
    # Keep idle environments for the whole run: the memory figure measures them.
    return _spawn("lambdad", [*argv, "--keep-alive", "900", *extra], work_dir, env)


def wait_for_memory_reserve(server: ManagedProcess, timeout: float = 120.0) -> tuple[int, float]:
    """Wait until lambdad's memory reserve (lambdad/sandbox/memory_reserve.py) is full: it fills
    in the background after start, at the lowest CPU priority, and the figures are meant for a
    server that has been up a while. Its size (0: none) and the seconds waited."""
    started = time.monotonic()
    while True:
        reserve = server_status(server).get("memoryReserve", {})
        size = int(reserve.get("size_bytes", 0))
        if int(reserve.get("held_bytes", 0)) >= size:
            return size, time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"lambdad's memory reserve did not fill: {reserve}")
        time.sleep(0.2)


def lambda_client(server: ManagedProcess) -> Any:
    """A botocore Lambda client for the server (what boto3.client("lambda") returns)."""
    return botocore.session.get_session().create_client(
        "lambda",
        endpoint_url=server.url,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
        config=Config(retries={"max_attempts": 1}, read_timeout=120),
    )


def function_zip(source: str = NOOP_HANDLER) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("app.py", source)
    return buffer.getvalue()


def create_function(
    lam: Any, name: str, code: bytes, runtime: str = "python3.11", **settings: Any
) -> None:
    """CreateFunction (app.handler; `settings`: further CreateFunction parameters) and wait
    until the function is Active."""
    lam.create_function(
        FunctionName=name,
        Runtime=runtime,
        Role=ROLE,
        Handler="app.handler",
        Code={"ZipFile": code},
        **settings,
    )
    lam.get_waiter("function_active_v2").wait(FunctionName=name)


def server_status(server: ManagedProcess) -> dict[str, Any]:
    """lambdad's own status document (pools, runtimes), fetched with a SigV4-signed GET."""
    headers = sigv4_headers("GET", server.url + STATUS_PATH, b"", {})
    request = urllib.request.Request(server.url + STATUS_PATH, headers=dict(headers))
    with urllib.request.urlopen(request, timeout=10) as response:
        status: dict[str, Any] = orjson.loads(response.read())
    return status


def runtime_executable(status: Mapping[str, Any], runtime: str) -> str:
    for entry in status.get("runtimes", []):
        if entry.get("runtime") == runtime and entry.get("executable"):
            return str(entry["executable"])
    raise RuntimeError(f"lambdad reports no executable for {runtime}")


def invoke_path(function_name: str, qualifier: str | None = None) -> str:
    """Invoke's path; a qualifier (version or alias) goes in the query, which SigV4 signs too."""
    path = f"/2015-03-31/functions/{function_name}/invocations"
    return path if qualifier is None else f"{path}?Qualifier={qualifier}"


@dataclass(frozen=True)
class PreparedRequest:
    """One POST, ready to replay byte-for-byte."""

    path: str
    body: bytes
    headers: Mapping[str, str]


def sigv4_headers(
    method: str, url: str, body: bytes, headers: Mapping[str, str]
) -> Mapping[str, str]:
    """`headers` plus the SigV4 ones (X-Amz-Date, Authorization), computed by botocore."""
    request = AWSRequest(method=method, url=url, data=body, headers=dict(headers))
    SigV4Auth(Credentials(ACCESS_KEY_ID, SECRET_ACCESS_KEY), "lambda", REGION).add_auth(request)
    return dict(request.headers.items())


def signed_request(
    url: str, path: str, body: bytes, extra_headers: Mapping[str, str] | None = None
) -> PreparedRequest:
    """A POST whose SigV4 `Authorization` botocore computed once, as a boto3 client would."""
    headers = {"Content-Type": "application/json", **(extra_headers or {})}
    return PreparedRequest(path, body, sigv4_headers("POST", url + path, body, headers))


@dataclass(frozen=True)
class Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes


class KeepAliveClient:
    """Sequential POSTs over one reused HTTP/1.1 connection (`http.client`)."""

    def __init__(self, port: int) -> None:
        self._connection = http.client.HTTPConnection(HOST, port, timeout=120)

    def post(self, request: PreparedRequest) -> Reply:
        self._connection.request("POST", request.path, request.body, dict(request.headers))
        response = self._connection.getresponse()
        body = response.read()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, body)

    def timed_post(self, request: PreparedRequest) -> tuple[float, Reply]:
        """One POST and its round trip in milliseconds."""
        start = time.perf_counter_ns()
        reply = self.post(request)
        return (time.perf_counter_ns() - start) / 1e6, reply

    def timed_posts(self, request: PreparedRequest, count: int) -> list[float]:
        """`count` round trips in milliseconds; the client's GC is paused while timing."""
        samples: list[float] = []
        gc.collect()
        gc.disable()
        try:
            for _ in range(count):
                elapsed, reply = self.timed_post(request)
                check_ok(reply)
                samples.append(elapsed)
        finally:
            gc.enable()
        return samples

    def close(self) -> None:
        self._connection.close()


def check_ok(reply: Reply) -> None:
    if reply.status != 200 or "x-amz-function-error" in reply.headers:
        raise RuntimeError(f"unexpected reply {reply.status}: {reply.body[:300]!r}")
