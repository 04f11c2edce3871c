"""Test helpers: a small threaded Lambda Runtime API server and a log-capturing process.

``FakeRuntimeAPI`` speaks the server side of the Runtime API (2018-06-01) over HTTP/1.1
keep-alive. Tests queue events with :meth:`FakeRuntimeAPI.enqueue` and wait for what the
runtime posted back with :meth:`FakeRuntimeAPI.wait_result` / :meth:`wait_init_error`.

``CapturedProcess`` runs a bootstrap with stdout and stderr on one pipe, like the platform
does, and drains that pipe on demand. Passing its :meth:`CapturedProcess.output` as the
server's ``log_snapshot`` records, with every posted result, the log as it stood when the
result arrived, so a test can check that output was flushed before the response.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import select
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

API = "/2018-06-01/runtime"


@dataclass
class Invocation:
    request_id: str
    body: bytes
    headers: dict[str, str]


@dataclass
class Result:
    """One thing the runtime posted: a response, an invocation error or an init error."""

    kind: str  # "response" | "error" | "init_error"
    request_id: str | None
    body: bytes
    headers: dict[str, str]  # lower-cased names
    log: str | None  # the captured log at the moment the post arrived
    received_at: float = field(default_factory=time.monotonic)

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def error_type(self) -> str | None:
        return self.headers.get("lambda-runtime-function-error-type")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    api: FakeRuntimeAPI

    def handle_error(self, request: Any, client_address: Any) -> None:
        # a runtime killed at the end of a test resets its connection: not worth a traceback
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(self, status: int, reason: str, body: bytes, headers: Sequence[str] = ()) -> None:
        api = self.server.api
        lines = [f"HTTP/1.1 {status} {reason}", "Content-Type: application/json", *headers]
        if api.chunked and body:
            lines.append("Transfer-Encoding: chunked")
            half = len(body) // 2 or 1
            payload = b"".join(
                b"%x;ext=1\r\n%s\r\n" % (len(part), part)
                for part in (body[:half], body[half:])
                if part
            )
            payload += b"0\r\nX-Trailer: 1\r\n\r\n"
        else:
            lines.append(f"Content-Length: {len(body)}")
            payload = body
        if api.close_connections:
            lines.append("Connection: close")
            self.close_connection = True
        self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload)

    def do_GET(self) -> None:
        api = self.server.api
        if self.path != f"{API}/invocation/next":
            self._reply(404, "Not Found", b'{"errorMessage":"not found"}')
            return
        with api._cond:
            api.next_calls += 1
            api._cond.notify_all()
        while True:
            try:
                inv = api._events.get(timeout=0.05)
                break
            except queue.Empty:
                if api._stopping.is_set():
                    self.close_connection = True
                    return
        headers = [f"{k}: {v}" for k, v in inv.headers.items()]
        self._reply(200, "OK", inv.body, headers)

    def do_POST(self) -> None:
        api = self.server.api
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        path = self.path
        kind: str | None = None
        request_id: str | None = None
        if path == f"{API}/init/error":
            kind = "init_error"
        elif path.startswith(f"{API}/invocation/"):
            rest = path[len(f"{API}/invocation/") :]
            rid, _, tail = rest.rpartition("/")
            if tail in ("response", "error") and rid:
                kind, request_id = tail, rid
        if kind is None:
            self._reply(404, "Not Found", b'{"errorMessage":"not found"}')
            return
        log = api.log_snapshot() if api.log_snapshot is not None else None
        result = Result(kind, request_id, body, headers, log)
        with api._cond:
            if kind == "init_error":
                api.init_errors.append(result)
            else:
                api.results[request_id or ""] = result
            api.posted.append(result)
            api._cond.notify_all()
        self._reply(202, "Accepted", b'{"status":"OK"}')


class FakeRuntimeAPI:
    """A threaded Runtime API server for tests (``with FakeRuntimeAPI() as api: ...``).

    ``chunked`` makes every non-empty response body use chunked transfer encoding;
    ``close_connections`` makes the server close the connection after every response,
    so the client has to reconnect.
    """

    def __init__(
        self,
        log_snapshot: Callable[[], str] | None = None,
        *,
        chunked: bool = False,
        close_connections: bool = False,
    ) -> None:
        self.log_snapshot = log_snapshot
        self.chunked = chunked
        self.close_connections = close_connections
        self.results: dict[str, Result] = {}
        self.init_errors: list[Result] = []
        self.posted: list[Result] = []
        self.next_calls = 0
        self._events: queue.Queue[Invocation] = queue.Queue()
        self._cond = threading.Condition()
        self._stopping = threading.Event()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.api = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self._thread.start()

    @property
    def address(self) -> str:
        host, port = self._server.server_address[:2]
        assert isinstance(host, str)  # an AF_INET server's
        return f"{host}:{port}"

    def close(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def __enter__(self) -> FakeRuntimeAPI:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def enqueue(
        self,
        event: Any = None,
        *,
        request_id: str | None = None,
        raw_body: bytes | None = None,
        deadline_ms: int | None = None,
        timeout_s: float = 30.0,
        function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:fn",
        trace_id: str | None = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;"
        "Sampled=1",
        client_context: Mapping[str, Any] | str | None = None,
        identity: Mapping[str, Any] | str | None = None,
        extra_headers: Mapping[str, str] | None = None,
    ) -> str:
        """Queue one invocation; returns its request id."""
        request_id = request_id or str(uuid.uuid4())
        if deadline_ms is None:
            deadline_ms = int(time.time() * 1000 + timeout_s * 1000)
        headers = {
            "Lambda-Runtime-Aws-Request-Id": request_id,
            "Lambda-Runtime-Deadline-Ms": str(deadline_ms),
            "Lambda-Runtime-Invoked-Function-Arn": function_arn,
        }
        if trace_id is not None:
            headers["Lambda-Runtime-Trace-Id"] = trace_id
        if client_context is not None:
            headers["Lambda-Runtime-Client-Context"] = (
                client_context if isinstance(client_context, str) else json.dumps(client_context)
            )
        if identity is not None:
            headers["Lambda-Runtime-Cognito-Identity"] = (
                identity if isinstance(identity, str) else json.dumps(identity)
            )
        headers.update(extra_headers or {})
        body = raw_body if raw_body is not None else json.dumps(event).encode()
        self._events.put(Invocation(request_id, body, headers))
        return request_id

    def _wait(self, predicate: Callable[[], Any], timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                value = predicate()
                if value:
                    return value
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"timed out waiting for {what}")
                self._cond.wait(remaining)

    def wait_result(self, request_id: str, timeout: float = 10.0) -> Result:
        result: Result = self._wait(
            lambda: self.results.get(request_id), timeout, f"result of {request_id}"
        )
        return result

    def wait_init_error(self, timeout: float = 10.0) -> Result:
        result: Result = self._wait(
            lambda: self.init_errors[0] if self.init_errors else None, timeout, "an init error"
        )
        return result

    def wait_next_calls(self, n: int, timeout: float = 10.0) -> None:
        self._wait(lambda: self.next_calls >= n, timeout, f"{n} calls to /invocation/next")

    def invoke(self, event: Any = None, timeout: float = 10.0, **kwargs: Any) -> Result:
        """Queue an event and wait for what the runtime posts for it."""
        return self.wait_result(self.enqueue(event, **kwargs), timeout)


class CapturedProcess:
    """A child process whose stdout+stderr go to one pipe that is drained on demand."""

    def __init__(
        self, argv: Sequence[str], env: Mapping[str, str], cwd: str | os.PathLike[str]
    ) -> None:
        read_fd, write_fd = os.pipe()
        try:
            self.proc = subprocess.Popen(
                list(argv),
                env=dict(env),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=write_fd,
                stderr=write_fd,
                close_fds=True,
            )
        finally:
            os.close(write_fd)
        os.set_blocking(read_fd, False)
        self._fd = read_fd
        self._eof = False
        self._data = bytearray()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._pump = threading.Thread(target=self._run_pump, daemon=True)
        self._pump.start()

    def _drain_locked(self) -> None:
        while not self._eof:
            try:
                chunk = os.read(self._fd, 65536)
            except BlockingIOError:
                return
            if not chunk:
                self._eof = True
                return
            self._data += chunk

    def _run_pump(self) -> None:
        while not self._stop.is_set() and not self._eof:
            select.select([self._fd], [], [], 0.05)
            with self._lock:
                self._drain_locked()

    def output(self) -> str:
        """Everything the process has written so far (drains the pipe first)."""
        with self._lock:
            self._drain_locked()
            return self._data.decode("utf-8", "replace")

    def wait(self, timeout: float = 10.0) -> int:
        code = self.proc.wait(timeout)
        deadline = time.monotonic() + timeout
        while not self._eof and time.monotonic() < deadline:
            with self._lock:
                self._drain_locked()
            if not self._eof:
                time.sleep(0.01)
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._stop.set()
        self._pump.join()
        with contextlib.suppress(OSError):
            os.close(self._fd)

    def __enter__(self) -> CapturedProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_check(argv: list[str], cwd: Path) -> None:
    """Run a check script (a runtime's own language) that prints "ok" when it holds."""
    out = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "ok\n"


def reserved_env(
    api: FakeRuntimeAPI, handler: str, task_root: Path, **overrides: str
) -> dict[str, str]:
    """The reserved variables lambdad gives an environment (overrides win)."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "AWS_LAMBDA_RUNTIME_API": api.address,
        "_HANDLER": handler,
        "LAMBDA_TASK_ROOT": str(task_root),
        "LAMBDA_RUNTIME_DIR": "/var/runtime",
        "AWS_LAMBDA_FUNCTION_NAME": "fn",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512",
        "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/fn",
        "AWS_LAMBDA_LOG_STREAM_NAME": "2024/01/01/[$LATEST]abcdef",
        "AWS_REGION": "us-east-1",
        "TZ": ":UTC",
    }
    env.update(overrides)
    return env


class BootstrapHarness:
    """Starts bootstrap processes, each against a fresh FakeRuntimeAPI; `close` ends them all."""

    def __init__(self) -> None:
        self.procs: list[CapturedProcess] = []
        self.apis: list[FakeRuntimeAPI] = []

    def launch(
        self,
        argv: list[str],
        env_for: Callable[[FakeRuntimeAPI], dict[str, str]],
        cwd: Path,
        api_options: dict[str, bool] | None = None,
    ) -> tuple[FakeRuntimeAPI, CapturedProcess]:
        """Start `argv` with the environment `env_for(api)` built for its new Runtime API."""
        holder: list[CapturedProcess] = []
        api = FakeRuntimeAPI(lambda: holder[0].output() if holder else "", **(api_options or {}))
        self.apis.append(api)
        proc = CapturedProcess(argv, env_for(api), cwd)
        holder.append(proc)
        self.procs.append(proc)
        return api, proc

    def close(self) -> None:
        for proc in self.procs:
            proc.close()
        for api in self.apis:
            api.close()
