"""Shared fixtures: a real `lambdad serve` process on a free port, and boto3 clients for it."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

ROOT = Path(__file__).resolve().parent.parent
ROLE = "arn:aws:iam::000000000000:role/lambda-role"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """A running `lambdad serve` and how to reach it."""

    endpoint: str
    data_dir: Path
    process: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    # clients made by `client`, closed by `stop` (a pooled connection to a stopped server that
    # is only garbage-collected later warns about an unclosed socket in whatever test runs then)
    clients: list[Any] = field(default_factory=list)

    def client(self, service: str = "lambda", **config: Any) -> Any:
        client = boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=self.env["LAMBDAD_ROOT_ACCESS_KEY_ID"],
            aws_secret_access_key=self.env["LAMBDAD_ROOT_SECRET_ACCESS_KEY"],
            config=Config(retries={"max_attempts": 1}, read_timeout=120, **config),
        )
        self.clients.append(client)
        return client

    def cli_env(self) -> dict[str, str]:
        """Environment for the AWS CLI and `lambdad` subcommands talking to this server."""
        env = dict(os.environ)
        env.update(
            AWS_ACCESS_KEY_ID=self.env["LAMBDAD_ROOT_ACCESS_KEY_ID"],
            AWS_SECRET_ACCESS_KEY=self.env["LAMBDAD_ROOT_SECRET_ACCESS_KEY"],
            AWS_DEFAULT_REGION="us-east-1",
            LAMBDAD_ENDPOINT_URL=self.endpoint,
            LAMBDAD_DATA_DIR=str(self.data_dir),
        )
        return env

    def status(self) -> dict[str, Any]:
        """GET /_lambdad/status, signed with the root credentials (what `lambdad doctor` reads)."""
        request = AWSRequest("GET", f"{self.endpoint}/_lambdad/status")
        credentials = Credentials(
            self.env["LAMBDAD_ROOT_ACCESS_KEY_ID"], self.env["LAMBDAD_ROOT_SECRET_ACCESS_KEY"]
        )
        SigV4Auth(credentials, "lambda", "us-east-1").add_auth(request)
        prepared = urllib.request.Request(request.url, headers=dict(request.headers.items()))
        with urllib.request.urlopen(prepared, timeout=10) as response:
            document: dict[str, Any] = json.loads(response.read())
        return document

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        for client in self.clients:
            client.close()
        self.clients.clear()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_server(data_dir: Path, *extra: str, env: Mapping[str, str] | None = None) -> Server:
    port = free_port()
    if not any(arg.startswith("--memory-reserve") for arg in extra):
        # Where the host reports free memory to a hypervisor (CI's machines do), lambdad keeps
        # a memory reserve of up to 4 GB by default; the suite runs dozens of servers, a few
        # at once. Tests of the reserve ask for one.
        extra = (*extra, "--memory-reserve", "0")
    server_env = dict(os.environ)
    server_env.update(
        LAMBDAD_ROOT_ACCESS_KEY_ID="AKIATESTTESTTESTTEST",
        LAMBDAD_ROOT_SECRET_ACCESS_KEY="testsecrettestsecrettestsecrettestsecret",
    )
    server_env.update(env or {})
    log_path = data_dir.parent / f"{data_dir.name}-server-{port}.log"
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "lambdad.cli.main",
                "serve",
                "--port",
                str(port),
                "--data-dir",
                str(data_dir),
                *extra,
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=server_env,
            cwd=ROOT,
        )
    server = Server(f"http://127.0.0.1:{port}", data_dir, process, log_path, server_env)
    deadline = time.monotonic() + 90  # generous: a loaded CI machine starts slowly
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"lambdad serve exited:\n{server.output()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return server
        except OSError:
            time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"lambdad serve did not start:\n{server.output()}")


def module_server(name: str, *extra: str, env: Mapping[str, str] | None = None) -> Any:
    """A module-scoped fixture: a server of its own started with `extra` serve arguments."""

    @pytest.fixture(scope="module")
    def fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
        srv = start_server(tmp_path_factory.mktemp(name) / "data", *extra, env=env)
        yield srv
        srv.stop()

    return fixture


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(
        tmp_path_factory.mktemp("lambdad") / "data",
        "--keep-alive",
        "30",
        "--async-retry-delays",
        "0.2,0.2",
    )
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def lam(server: Server) -> Any:
    return server.client()


def make_zip(files: Mapping[str, str | bytes], modes: Mapping[str, int] | None = None) -> bytes:
    """A ZIP of the given files; `modes` sets unix permissions (e.g. 0o755 for bootstrap)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = ((modes or {}).get(name, 0o644) | 0o100000) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, content)
    return buffer.getvalue()


_counter = iter(range(1_000_000))


def unique_name(prefix: str = "fn") -> str:
    return f"{prefix}-{os.getpid()}-{next(_counter)}-{int(time.time() * 1000) % 100000}"


def create_function(
    lam: Any,
    files: Mapping[str, str | bytes],
    *,
    runtime: str = "python3.11",
    handler: str = "app.handler",
    name: str | None = None,
    modes: Mapping[str, int] | None = None,
    **kwargs: Any,
) -> str:
    """Create a function through the API, wait until it is Active, return its name."""
    function_name = name or unique_name()
    lam.create_function(
        FunctionName=function_name,
        Runtime=runtime,
        Role=ROLE,
        Handler=handler,
        Code={"ZipFile": make_zip(files, modes)},
        **kwargs,
    )
    lam.get_waiter("function_active_v2").wait(FunctionName=function_name)
    return function_name


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> bool:
    """Poll `condition` every 50 ms until it holds or `timeout` seconds passed; its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def settle(
    fetch: Callable[[], dict[str, Any]],
    done: Callable[[dict[str, Any]], bool],
    timeout: float,
    interval: float = 0.05,
) -> dict[str, Any]:
    """Fetch a document every `interval` seconds until `done(document)` or `timeout` seconds
    passed; the last one fetched (the caller asserts on it)."""
    deadline = time.monotonic() + timeout
    while True:
        document = fetch()
        if done(document) or time.monotonic() > deadline:
            return document
        time.sleep(interval)


def logged(logs: Any, name: str, pattern: str) -> list[str]:
    """Messages (trailing whitespace stripped) of the function's log events containing
    `pattern`; none while its log group does not exist yet."""
    try:
        events = logs.filter_log_events(logGroupName=f"/aws/lambda/{name}", filterPattern=pattern)
    except logs.exceptions.ResourceNotFoundException:
        return []
    return [e["message"].rstrip() for e in events["events"]]


def live_processes(tag: str) -> list[int]:
    """Host pids of live processes named `tag` (a function names itself, e.g. with
    prctl(PR_SET_NAME) or process.title; zombies awaiting their reaper do not count)."""
    return live_pids(lambda fields: True, name=tag)


def live_pids(keep: Callable[[list[str]], bool], name: str | None = None) -> list[int]:
    """Host pids of live processes (zombies awaiting their reaper do not count) named `name`,
    if given, whose /proc/PID/stat fields after the name (state, ppid, ...) `keep` accepts."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm, _, rest = stat.partition(" (")[2].rpartition(")")
        fields = rest.split()
        if (name is None or comm == name) and fields[0] not in ("Z", "X") and keep(fields):
            found.append(int(entry.name))
    return found


def gone(tag: str) -> bool:
    return not live_processes(tag)
