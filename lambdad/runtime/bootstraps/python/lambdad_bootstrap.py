"""lambdad's in-environment bootstrap for the managed Python runtimes.

It speaks the Lambda Runtime API (2018-06-01) as a client, the way AWS's own Python
runtime does: it imports the handler named by ``_HANDLER``, then loops forever fetching
the next invocation, calling ``handler(event, context)`` and posting the result or the
error. Init failures are posted to ``/runtime/init/error`` and the process exits.

Constraints it is written for:

* stdlib only, Python 3.10 to 3.13;
* importable without side effects: a zygote may import it ahead of time and fork
  children that call :func:`main`; every stdlib import happens here at the top so that
  the children do not pay for it, and the environment is only read inside :func:`main`;
* fast: one persistent keep-alive HTTP/1.1 connection over a raw TCP socket with
  TCP_NODELAY, a minimal hand-written request writer and response parser, no threads.

Run it as ``python lambdad_bootstrap.py`` or ``import lambdad_bootstrap; main()``.
"""

from __future__ import annotations

import _imp
import contextlib
import importlib
import importlib.machinery
import importlib.util
import io
import json
import logging
import marshal
import math
import os
import select
import socket
import sys
import time
import traceback
import types

import snapshot_restore_py  # type: ignore[import-not-found]  # SnapStart's hook registry: loaded before any function code

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds to import: only the type checker needs it
    from types import TracebackType
    from typing import Any, NoReturn

__all__ = ["LambdaContext", "main"]

_API_VERSION = "2018-06-01"
_ERROR_TYPE_HEADER = "Lambda-Runtime-Function-Error-Type"
_THIS_FILE = os.path.abspath(__file__)
_THIS_BASENAME = os.path.basename(_THIS_FILE)
# Characters that may appear in a request id without percent-encoding in the URL path.
_URL_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~")
_ERROR_LOG_LINE_TERMINATE = "\r"
_ERROR_LOG_IDENT = "\u00a0"  # AWS indents traceback lines in the log with NO-BREAK SPACEs
_LAMBDA_WARNING = (
    "LAMBDA_WARNING: Unhandled exception. The most likely cause is an issue in the function "
    "code. However, in rare cases, a Lambda runtime update can cause unexpected function "
    "behavior. For functions using managed runtimes, runtime updates can be triggered by a "
    "function change, or can be applied automatically. To determine if the runtime has been "
    "updated, check the runtime version in the INIT_START log entry. If this error correlates "
    "with a change in the runtime version, you may be able to mitigate this error by "
    "temporarily rolling back to the previous runtime version. For more information, see "
    "https://docs.aws.amazon.com/lambda/latest/dg/runtimes-update.html"
)

# The request id of the invocation in progress ("" during init); read by the log filter.
_current_request_id = ""
_log_json = False


# --------------------------------------------------------------------------------------
# Runtime API client
# --------------------------------------------------------------------------------------


class _ConnectionLost(Exception):
    """The server closed the connection; ``partial`` tells whether a response had begun."""

    def __init__(self, partial: bool) -> None:
        super().__init__("Runtime API connection closed by the server")
        self.partial = partial


class _RuntimeClient:
    """A minimal HTTP/1.1 client bound to one keep-alive connection to the Runtime API."""

    __slots__ = (
        "_addr",
        "_buf",
        "_host",
        "_next_request",
        "_port",
        "_post_head",
        "_sock",
        "_unix_path",
        "_wait_request",
    )

    def __init__(self, address: str, unix_path: str | None = None) -> None:
        # lambdad offers the same API on a Unix socket: cheaper than loopback TCP.
        self._unix_path = unix_path
        host, _, port = address.rpartition(":")
        self._host = host.strip("[]") or "127.0.0.1"
        self._port = int(port)
        self._addr = address
        self._sock: socket.socket | None = None
        self._buf = b""
        prefix = f"/{_API_VERSION}/runtime"
        agent = "aws-lambda-python/{}.{}.{}-lambdad".format(*sys.version_info[:3])
        self._next_request = (
            f"GET {prefix}/invocation/next HTTP/1.1\r\nHost: {address}\r\n"
            f"User-Agent: {agent}\r\n\r\n"
        ).encode("latin-1")
        self._post_head = f"POST {prefix}/%s HTTP/1.1\r\nHost: {address}\r\nUser-Agent: {agent}\r\n"
        self._wait_request = (
            f"GET {prefix}/lambdad/wait HTTP/1.1\r\nHost: {address}\r\nUser-Agent: {agent}\r\n\r\n"
        ).encode("latin-1")

    # -- connection management ---------------------------------------------------------

    def _connect(self) -> socket.socket:
        if self._unix_path:
            try:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.connect(self._unix_path)
                self._sock = sock
                self._buf = b""
                return sock
            except OSError:
                sock.close()
                self._unix_path = None  # fall back to TCP for good
        sock = socket.create_connection((self._host, self._port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        self._buf = b""
        return sock

    @classmethod
    def from_environment(cls, env: Any) -> _RuntimeClient:
        """The client for this environment: lambdad may hand over a connection already made
        (LAMBDAD_RUNTIME_API_FD) and offer its Unix socket (LAMBDAD_RUNTIME_API_SOCKET)."""
        client = cls(env["AWS_LAMBDA_RUNTIME_API"], env.pop("LAMBDAD_RUNTIME_API_SOCKET", None))
        fd = env.pop("LAMBDAD_RUNTIME_API_FD", None)
        if fd is not None and fd.isdigit():
            try:
                client._sock = socket.socket(fileno=int(fd))
            except OSError:  # not a socket (any more): connect as usual
                client._sock = None
        return client

    def close(self) -> None:
        sock, self._sock = self._sock, None
        self._buf = b""
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    # -- requests ------------------------------------------------------------------------

    def _exchange(self, head: bytes, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
        """Send one request and read its response, reconnecting once if the server had
        closed the idle keep-alive connection."""
        for attempt in (0, 1):
            sock = self._sock or self._connect()
            try:
                if len(body) < 65536:
                    sock.sendall(head + body)
                else:
                    sock.sendall(head)
                    sock.sendall(body)
                return self._read_response(sock)
            except _ConnectionLost as lost:
                self.close()
                if attempt or lost.partial:
                    raise
            except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _read_response(self, sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
        buf = self._buf
        recv = sock.recv
        readable = None
        while True:
            end = buf.find(b"\r\n\r\n")
            if end >= 0:
                break
            if readable is None:
                readable = select.poll()
                readable.register(sock, select.POLLIN)
            # Wait in poll(), which only input wakes: a thread blocked in recv() is also woken
            # when the server reads what this one sent (a wasted context switch per invocation).
            readable.poll()
            try:
                chunk = recv(65536)
            except (ConnectionResetError, ConnectionAbortedError):
                chunk = b""
            if not chunk:
                raise _ConnectionLost(bool(buf))
            buf += chunk
        lines = buf[:end].decode("latin-1").split("\r\n")
        rest = buf[end + 4 :]
        status = int(lines[0].split(" ", 2)[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if 100 <= status < 200:  # an interim response: the real one follows
            self._buf = rest
            return self._read_response(sock)
        length = headers.get("content-length")
        if length is not None:
            body, self._buf = self._read_exact(sock, rest, int(length))
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            body = self._read_chunked(sock, rest)
        elif status in (204, 304):
            body, self._buf = b"", rest
        else:  # delimited by the end of the connection
            parts = [rest]
            while chunk := recv(65536):
                parts.append(chunk)
            body = b"".join(parts)
            headers["connection"] = "close"
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, headers, body

    def _read_exact(self, sock: socket.socket, have: bytes, n: int) -> tuple[bytes, bytes]:
        if len(have) >= n:
            return have[:n], have[n:]
        out = bytearray(n)
        view = memoryview(out)
        got = len(have)
        view[:got] = have
        while got < n:
            k = sock.recv_into(view[got:], n - got)
            if not k:
                raise _ConnectionLost(True)
            got += k
        return bytes(out), b""

    def _read_chunked(self, sock: socket.socket, rest: bytes) -> bytes:
        parts: list[bytes] = []
        buf = rest
        while True:
            while (eol := buf.find(b"\r\n")) < 0:
                chunk = sock.recv(65536)
                if not chunk:
                    raise _ConnectionLost(True)
                buf += chunk
            size = int(buf[:eol].split(b";", 1)[0].strip() or b"0", 16)
            buf = buf[eol + 2 :]
            if size == 0:
                # skip trailers up to the blank line ending the message
                while True:
                    while (eol := buf.find(b"\r\n")) < 0:
                        chunk = sock.recv(65536)
                        if not chunk:
                            raise _ConnectionLost(True)
                        buf += chunk
                    line, buf = buf[:eol], buf[eol + 2 :]
                    if not line:
                        self._buf = buf
                        return b"".join(parts)
            data, buf = self._read_exact(sock, buf, size + 2)
            parts.append(data[:size])

    def wait_for_work(self) -> None:
        """A staged environment's wait (LAMBDAD_STAGED), until its first invocation arrives,
        which is when init may run: lambdad pushes that event down the connection it handed
        over, if it did (this leaves quietly if lambdad closes it instead); otherwise it
        answers GET /runtime/lambdad/wait then."""
        sock = self._sock
        if self._buf:
            return
        if sock is None:
            with contextlib.suppress(OSError, _ConnectionLost, ValueError):
                self._exchange(self._wait_request)  # (any failure: init meets it again)
            return
        try:
            pushed = sock.recv(1, socket.MSG_PEEK)
        except OSError:
            return  # init runs, and its /next meets the same error
        if not pushed:
            os._exit(0)  # lambdad discarded this environment before any work

    def next_invocation(self) -> tuple[dict[str, str], bytes]:
        """The first /next (later ones go with the previous answer: finish_and_next). It says
        when it was asked, for lambdad's Duration when the event was pushed ahead."""
        asked = b"Lambdad-Asked-At: %d\r\n\r\n" % time.monotonic_ns()
        status, headers, body = self._exchange(self._next_request[:-2] + asked)
        if status != 200:
            raise RuntimeError(f"Runtime API /invocation/next answered {status}: {body[:200]!r}")
        return headers, body

    def _post(
        self,
        path: str,
        body: bytes,
        content_type: str = "application/json",
        error_type: str | None = None,
    ) -> int:
        head = self._post_head % path
        head += f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        if error_type is not None:
            head += f"{_ERROR_TYPE_HEADER}: {_header_safe(error_type)}\r\n"
        status, _, _ = self._exchange((head + "\r\n").encode("latin-1", "replace"), body)
        return status

    def _post_head_for(
        self, path: str, body: bytes, content_type: str, error_type: str | None
    ) -> bytes:
        head = self._post_head % path
        head += f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        if error_type is not None:
            head += f"{_ERROR_TYPE_HEADER}: {_header_safe(error_type)}\r\n"
        return (head + "\r\n").encode("latin-1", "replace")

    def finish_and_next(
        self,
        request_id: str,
        body: bytes,
        content_type: str = "application/json",
        error_type: str | None = None,
    ) -> tuple[dict[str, str], bytes]:
        """Post an invocation's result and ask for the next one in a single write (HTTP/1.1
        pipelining): one system call and one wake-up of the Runtime API instead of two."""
        kind = "response" if error_type is None else "error"
        head = self._post_head_for(
            f"invocation/{_quote(request_id)}/{kind}", body, content_type, error_type
        )
        sock = self._sock
        if sock is None:
            self._post(f"invocation/{_quote(request_id)}/{kind}", body, content_type, error_type)
            return self.next_invocation()
        try:
            if len(body) < 65536:
                sock.sendall(head + body + self._next_request)
            else:
                sock.sendall(head)
                sock.sendall(body)
                sock.sendall(self._next_request)
            self._read_response(sock)
            status, headers, event = self._read_response(sock)
        except (_ConnectionLost, BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            self.close()
            return self.next_invocation()
        if status != 200:
            raise RuntimeError(f"Runtime API /invocation/next answered {status}: {event[:200]!r}")
        return headers, event

    def post_response(self, request_id: str, body: bytes, content_type: str) -> int:
        return self._post(f"invocation/{_quote(request_id)}/response", body, content_type)

    def post_error(self, request_id: str, body: bytes, error_type: str) -> int:
        return self._post(f"invocation/{_quote(request_id)}/error", body, error_type=error_type)

    def post_init_error(self, body: bytes, error_type: str) -> int:
        return self._post("init/error", body, error_type=error_type)

    def restore_next(self) -> None:
        """SnapStart: say init (and the before-snapshot hooks) are done; returns once this
        environment runs restored."""
        prefix = f"/{_API_VERSION}/runtime"
        head = f"GET {prefix}/restore/next HTTP/1.1\r\nHost: {self._addr}\r\n\r\n"
        status, _, body = self._exchange(head.encode("latin-1"))
        if status != 200:
            raise RuntimeError(f"Runtime API /restore/next answered {status}: {body[:200]!r}")

    def post_restore_error(self, body: bytes, error_type: str) -> int:
        return self._post("restore/error", body, error_type=error_type)


def _quote(value: str) -> str:
    if _URL_SAFE.issuperset(value):  # every request id lambdad makes
        return value
    return "".join(
        c if c in _URL_SAFE else "".join(f"%{b:02X}" for b in c.encode("utf-8")) for c in value
    )


def _header_safe(value: str) -> str:
    return value.replace("\r", " ").replace("\n", " ")


# --------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------


class _Fault(Exception):
    """A runtime-detected failure with an AWS ``Runtime.*`` error type."""

    def __init__(self, error_type: str, message: str, trace: list[str] | None = None) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.msg = message
        self.trace = trace


def _make_error(
    message: str, error_type: str, trace: list[str] | None, request_id: str = ""
) -> dict[str, object]:
    return {
        "errorMessage": message or "",
        "errorType": error_type or "",
        "requestId": request_id,
        "stackTrace": trace or [],
    }


def _user_frames(tb: TracebackType | None) -> list[tuple[str, int, str, str | None]]:
    """The traceback's frames as 4-tuples, without this bootstrap's own leading frames."""
    frames = [(f.filename, f.lineno or 0, f.name, f.line) for f in traceback.extract_tb(tb)]
    for i, frame in enumerate(frames):
        if frame[0] != _THIS_FILE and os.path.basename(frame[0]) != _THIS_BASENAME:
            return frames[i:]
    return frames


def _error_from_exception(exc: BaseException, request_id: str = "") -> dict[str, object]:
    try:
        message = str(exc)
    except Exception:
        message = f"<unprintable {type(exc).__name__} object>"
    return _make_error(
        message,
        type(exc).__name__,
        traceback.format_list(_user_frames(exc.__traceback__)),
        request_id,
    )


def _replace_indent(line: str) -> str:
    stripped = line.lstrip(" ")
    return _ERROR_LOG_IDENT * (len(line) - len(stripped)) + stripped


def _log_error(error: dict[str, object]) -> None:
    """Write the error to the log the way AWS's runtime does (one record)."""
    if _log_json:
        record = {
            "timestamp": _iso_now(),
            "level": "ERROR",
            **error,
        }
        text = json.dumps(record) + "\n"
    else:
        description = "[ERROR]"
        error_type = error.get("errorType")
        if error_type:
            description += f" {error_type}"
        message = error.get("errorMessage")
        if message:
            if error_type:
                description += ":"
            description += f" {message}"
        lines = [description]
        trace = error.get("stackTrace")
        if trace is not None:
            lines.append("Traceback (most recent call last):")
            for element in trace:  # type: ignore[attr-defined]
                if element == "":
                    lines.append("")
                else:
                    lines.extend(_replace_indent(x) for x in str(element).splitlines())
        text = _ERROR_LOG_LINE_TERMINATE.join(lines) + "\n"
    with contextlib.suppress(Exception):
        sys.stdout.write(text)


# --------------------------------------------------------------------------------------
# Context
# --------------------------------------------------------------------------------------


class CognitoIdentity:
    __slots__ = ("cognito_identity_id", "cognito_identity_pool_id")

    def __init__(self, data: dict[str, object] | None = None) -> None:
        data = data or {}
        self.cognito_identity_id = data.get("cognitoIdentityId")
        self.cognito_identity_pool_id = data.get("cognitoIdentityPoolId")

    def __repr__(self) -> str:
        return (
            f"CognitoIdentity([cognito_identity_id={self.cognito_identity_id},"
            f"cognito_identity_pool_id={self.cognito_identity_pool_id}])"
        )


class Client:
    __slots__ = (
        "app_package_name",
        "app_title",
        "app_version_code",
        "app_version_name",
        "installation_id",
    )

    def __init__(self, data: dict[str, object]) -> None:
        self.installation_id = data.get("installation_id")
        self.app_title = data.get("app_title")
        self.app_version_name = data.get("app_version_name")
        self.app_version_code = data.get("app_version_code")
        self.app_package_name = data.get("app_package_name")

    def __repr__(self) -> str:
        return (
            f"Client([installation_id={self.installation_id},app_title={self.app_title},"
            f"app_version_name={self.app_version_name},"
            f"app_version_code={self.app_version_code},"
            f"app_package_name={self.app_package_name}])"
        )


class ClientContext:
    __slots__ = ("client", "custom", "env")

    def __init__(self, data: dict[str, object]) -> None:
        client = data.get("client")
        self.client = Client(client) if isinstance(client, dict) else client
        self.custom = data.get("custom")
        self.env = data.get("env")

    def __repr__(self) -> str:
        return f"ClientContext([custom={self.custom},env={self.env},client={self.client}])"


class LambdaContext:
    """The ``context`` argument handed to the handler (AWS's attribute names)."""

    def __init__(
        self,
        request_id: str,
        deadline_ms: int,
        invoked_function_arn: str | None,
        client_context: ClientContext | None,
        identity: CognitoIdentity,
        tenant_id: str | None,
        static: tuple[str | None, str | None, str | None, int | None, str | None],
    ) -> None:
        self.aws_request_id = request_id
        (
            self.log_group_name,
            self.log_stream_name,
            self.function_name,
            self.memory_limit_in_mb,
            self.function_version,
        ) = static
        self.invoked_function_arn = invoked_function_arn
        self.client_context = client_context
        self.identity = identity
        self.tenant_id = tenant_id
        self._epoch_deadline_time_in_ms = deadline_ms

    def get_remaining_time_in_millis(self) -> int:
        delta = self._epoch_deadline_time_in_ms - int(time.time() * 1000)
        return delta if delta > 0 else 0

    def log(self, msg: object) -> None:
        sys.stdout.write(str(msg))

    def __repr__(self) -> str:
        return (
            f"LambdaContext([aws_request_id={self.aws_request_id},"
            f"log_group_name={self.log_group_name},"
            f"log_stream_name={self.log_stream_name},"
            f"function_name={self.function_name},"
            f"memory_limit_in_mb={self.memory_limit_in_mb},"
            f"function_version={self.function_version},"
            f"invoked_function_arn={self.invoked_function_arn},"
            f"client_context={self.client_context},"
            f"identity={self.identity},"
            f"tenant_id={self.tenant_id}])"
        )


def _parse_json_header(value: str, name: str) -> object:
    try:
        return json.loads(value)
    except Exception as e:
        raise _Fault(
            "Runtime.LambdaContextUnmarshalError", f"Unable to parse {name} JSON: {e}"
        ) from None


# --------------------------------------------------------------------------------------
# Handler loading
# --------------------------------------------------------------------------------------


class _SourceFinder:
    """A one-shot meta path finder for a top-level module that the path finder would load
    from `path` (a .py file in sys.path[0]): the same spec, without building that directory's
    FileFinder (path hooks, a directory listing, a stat per suffix) first — ~60 us of a
    ~230 us import measured alone, 0.47 -> 0.42 ms in a cold start's trace. The rest of the
    import (locks, loader, the traceback of an error raised by the module's code) is
    importlib's own."""

    def __init__(self, name: str, path: str) -> None:
        self.name = name
        self.path = path

    @classmethod
    def install(cls, name: str) -> _SourceFinder | None:
        """Put one in front of sys.meta_path when the import of `name` can only end in
        sys.path[0]/`name`.py; None (nothing done) when anything else could answer first."""
        directory = sys.path[0] if sys.path else None
        if (
            "." in name
            or "/" in name
            or name in sys.modules
            or not isinstance(directory, str)
            or not os.path.isabs(directory)
            or directory in sys.path_importer_cache
            or [type(f) for f in sys.meta_path] != _DEFAULT_META_PATH
            or _imp.is_frozen(name)
        ):
            return None
        base = os.path.join(directory, name)
        # What the directory's FileFinder would try first: a package (anything of that name
        # here), extension modules; asked with access(), which says "no" without raising.
        exists = os.access
        if exists(base, os.F_OK) or any(exists(base + s, os.F_OK) for s in _EXTENSION_SUFFIXES):
            return None
        if not os.path.isfile(base + ".py"):
            return None
        finder = cls(name, base + ".py")
        sys.meta_path.insert(0, finder)
        return finder

    def remove(self) -> None:
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self)

    def find_spec(
        self, name: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        if name != self.name:
            return None
        return importlib.util.spec_from_file_location(name, self.path)


_DEFAULT_META_PATH = [type(f) for f in sys.meta_path]
_EXTENSION_SUFFIXES = tuple(importlib.machinery.EXTENSION_SUFFIXES)


def _read_precompiled(path: str) -> tuple[types.CodeType, str] | None:
    """The code object of `path`'s unchecked-hash .pyc, and the .pyc's path: read and
    unmarshalled, nothing run. None when there is no such .pyc or the interpreter would not
    take one as is (a pycache prefix, -O, check_hash_based_pycs=always)."""
    if sys.pycache_prefix is not None or sys.flags.optimize:
        return None
    if _imp.check_hash_based_pycs == "always":
        return None
    directory, filename = os.path.split(path)
    cached = f"{directory}/__pycache__/{filename[:-3]}.{sys.implementation.cache_tag}.pyc"
    try:
        with io.open_code(cached) as file:
            data = file.read()
    except OSError:
        return None
    if data[:4] != importlib.util.MAGIC_NUMBER or data[4:8] != _UNCHECKED_HASH_FLAGS:
        return None
    try:
        code = marshal.loads(memoryview(data)[16:])
    except (EOFError, ValueError, TypeError):
        return None
    if not isinstance(code, types.CodeType):
        return None
    _imp._fix_co_filename(code, path)  # type: ignore[attr-defined]  # (what importlib calls)
    return code, cached


def _load_precompiled(
    name: str, path: str, read: tuple[types.CodeType, str] | None = None
) -> object | None:
    """Load top-level module `name` from `path`'s unchecked-hash .pyc — what lambdad's code
    cache compiles every package's .py files to — as importlib's SourceFileLoader would (the
    same module attributes and spec, the code's filename fixed to `path`, sys.modules set
    before the code runs and cleared if it raises), without the import machinery around it:
    ~90 against ~240 us in a cold start (the machinery's Python runs cache-cold in a freshly
    forked process). `read`: what _read_precompiled found ahead (a staged environment). None,
    having run nothing, when there is no usable .pyc: importlib then imports it. Unlike
    importlib's, the traceback of an error raised by the module's code has no importlib frames
    above the module's own."""
    found = read or _read_precompiled(path)
    if found is None:
        return None
    code, cached = found
    loader = importlib.machinery.SourceFileLoader(name, path)
    spec = importlib.machinery.ModuleSpec(name, loader, origin=path)
    spec.has_location = True
    spec.cached = cached
    module = types.ModuleType(name)
    module.__spec__, module.__loader__, module.__package__ = spec, loader, ""
    module.__file__ = path
    module.__cached__ = cached  # type: ignore[attr-defined]
    sys.modules[name] = module
    spec._initializing = True  # type: ignore[attr-defined]  # as importlib marks it meanwhile
    try:
        exec(code, module.__dict__)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    finally:
        spec._initializing = False  # type: ignore[attr-defined]
    return sys.modules[name]  # (a module may put something else there: importlib returns it)


# A PEP 552 .pyc's flags word: hash-based, not checked against its source.
_UNCHECKED_HASH_FLAGS = b"\x01\x00\x00\x00"


def _import_top_level(name: str) -> object:
    """importlib.import_module(name), sooner when _SourceFinder can find it (and sooner still
    from its precompiled .pyc, read ahead in a staged environment)."""
    global _staged_module
    staged, _staged_module = _staged_module, None
    if staged is not None and staged[0] == name:
        finder: _SourceFinder | None = staged[1]
        if finder is not None:
            sys.meta_path.insert(0, finder)
        read = staged[2]
    else:
        finder, read = _SourceFinder.install(name), None
    try:
        if finder is not None:
            module = _load_precompiled(name, finder.path, read)
            if module is not None:
                return module
        return importlib.import_module(name)
    finally:
        if finder is not None:
            finder.remove()


# A staged environment's handler module, found and read before its first event (_stage):
# (name, its _SourceFinder or None, its .pyc's code and path or None).
_staged_module: tuple[str, _SourceFinder | None, tuple[types.CodeType, str] | None] | None = None


def _stage(handler_spec: str) -> None:
    """What a staged environment does before its first event may run init: find the handler's
    top-level module as _import_top_level would and read its .pyc — no code of the function
    runs, and nothing either step looks at can change before init runs (the code's directory
    is read-only; sys.path and sys.meta_path are the bootstrap's)."""
    global _staged_module
    modname = handler_spec.rpartition(".")[0].replace("/", ".")
    if not modname or "." in modname or modname in sys.builtin_module_names:
        return
    finder = _SourceFinder.install(modname)
    if finder is None:
        return
    finder.remove()
    _staged_module = (modname, finder, _read_precompiled(finder.path))


def _import_module(modname: str) -> object:
    try:
        if modname.split(".")[0] in sys.builtin_module_names:
            raise _Fault(
                "Runtime.BuiltInModuleConflict",
                f"Cannot use built-in module {modname} as a handler module",
            )
        return _import_top_level(modname.replace("/", "."))
    except ImportError as e:
        raise _Fault(
            "Runtime.ImportModuleError", f"Unable to import module '{modname}': {e}"
        ) from None
    except SyntaxError as e:
        trace = [f'  File "{e.filename}" Line {e.lineno}\n    {e.text}']
        raise _Fault(
            "Runtime.UserCodeSyntaxError", f"Syntax error in module '{modname}': {e}", trace
        ) from None


def _nested_fallback(modname: str, fname: str) -> object | None:
    """Resolve ``pkg.mod.Obj.attr`` where ``pkg.mod.Obj`` is not a module: import the
    longest importable prefix and walk the rest as attributes. Only used when AWS's own
    rule (everything before the last dot is the module) cannot import the module."""
    parts = modname.replace("/", ".").split(".")
    for cut in range(len(parts) - 1, 0, -1):
        name = ".".join(parts[:cut])
        try:
            obj: object = importlib.import_module(name)
        except Exception:
            continue
        try:
            for attr in [*parts[cut:], fname]:
                obj = getattr(obj, attr)
        except AttributeError:
            return None
        return obj
    return None


def _load_handler(spec: str) -> object:
    try:
        modname, fname = spec.rsplit(".", 1)
    except ValueError as e:
        raise _Fault("Runtime.MalformedHandlerName", f"Bad handler '{spec}': {e}") from None
    try:
        module = _import_module(modname)
    except _Fault as fault:
        cause = fault.__context__
        parts = modname.replace("/", ".").split(".")
        if (
            fault.error_type == "Runtime.ImportModuleError"
            and isinstance(cause, ModuleNotFoundError)
            and cause.name in {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
        ):
            handler = _nested_fallback(modname, fname)
            if handler is not None:
                return handler
        raise
    try:
        return getattr(module, fname)
    except AttributeError:
        raise _Fault(
            "Runtime.HandlerNotFound", f"Handler '{fname}' missing on module '{modname}'"
        ) from None


# --------------------------------------------------------------------------------------
# Logging and stdio
# --------------------------------------------------------------------------------------


class _Unbuffered:
    """Fallback for streams that cannot be reconfigured: flush after every write."""

    def __init__(self, stream: object) -> None:
        self._stream = stream

    def __getattr__(self, name: str) -> object:
        return getattr(self._stream, name)

    def write(self, msg: str) -> int:
        n = self._stream.write(msg)  # type: ignore[attr-defined]
        self._stream.flush()  # type: ignore[attr-defined]
        return n  # type: ignore[no-any-return]

    def writelines(self, lines: list[str]) -> None:
        self._stream.writelines(lines)  # type: ignore[attr-defined]
        self._stream.flush()  # type: ignore[attr-defined]


def _line_flushed(stream: Any) -> Any:
    if stream is None:
        return None
    if isinstance(stream, io.TextIOWrapper):
        try:
            stream.reconfigure(line_buffering=True, write_through=True)
            return stream
        except (ValueError, io.UnsupportedOperation):
            pass
    return _Unbuffered(stream)


def _flush_stdio() -> None:
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.flush()


def _iso_now() -> str:
    now = time.time()
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(now))}.{int(now * 1000) % 1000:03d}Z"


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.aws_request_id = _current_request_id
        return True


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "message": record.getMessage(),
            "logger": record.name,
            "requestId": getattr(record, "aws_request_id", ""),
        }
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            out["errorType"] = type(exc).__name__
            out["errorMessage"] = str(exc)
            out["stackTrace"] = traceback.format_tb(exc.__traceback__)
        return json.dumps(out, default=str) + "\n"


class _LambdaLogHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stdout.write(self.format(record))
        except Exception:
            self.handleError(record)


def _log_handler(json_format: bool) -> _LambdaLogHandler:
    handler = _LambdaLogHandler()
    if json_format:
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter(
                "[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(aws_request_id)s\t%(message)s\n",
                "%Y-%m-%dT%H:%M:%S",
            )
        )
    handler.addFilter(_RequestIdFilter())
    return handler


# A text-format handler warm_up() made and kept, so that a cold start's init does not build one
# (a handler, its lock, formatter and filter: ~0.1 ms in a freshly forked process).
_spare_text_handler: _LambdaLogHandler | None = None


def _setup_logging(log_format: str, log_level: str) -> _LambdaLogHandler:
    """Attach the environment's log handler to the root logger (and return it)."""
    global _log_json, _spare_text_handler
    _log_json = log_format.upper() == "JSON"
    logging.Formatter.converter = time.gmtime
    handler, _spare_text_handler = _spare_text_handler, None
    if handler is None or _log_json:
        handler = _log_handler(_log_json)
    root = logging.getLogger()
    level = {"TRACE": "DEBUG", "FATAL": "CRITICAL"}.get(log_level.upper(), log_level.upper())
    if level in ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG", "NOTSET"):
        root.setLevel(level)
    root.addHandler(handler)
    return handler


# --------------------------------------------------------------------------------------
# Marshalling
# --------------------------------------------------------------------------------------


def _json_default(obj: object) -> object:
    # Only a program that imported decimal can hand us a Decimal: no need to import it here.
    decimal = sys.modules.get("decimal")
    if decimal is not None and isinstance(obj, decimal.Decimal):
        if obj.is_nan():
            return math.nan
        if obj == obj.to_integral_value():
            return int(obj)
        return float(obj)
    raise TypeError(f"Object of type {obj.__class__.__name__} is not JSON serializable")


# Results' JSON encoders, made once (in the zygote): AWS's python3.12+ runtimes emit UTF-8,
# older ones escape non-ASCII characters.
_ESCAPING_RUNTIMES = frozenset(f"AWS_Lambda_python3.{minor}" for minor in range(6, 12))
_ENCODERS = {
    ascii_only: json.JSONEncoder(ensure_ascii=ascii_only, default=_json_default).encode
    for ascii_only in (False, True)
}


# --------------------------------------------------------------------------------------
# Main loop
# --------------------------------------------------------------------------------------


def _setup_sys_path(task_root: str) -> None:
    version = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    front = [task_root, f"/opt/python/lib/{version}/site-packages", "/opt/python"]
    sys.path[:] = front + [p for p in sys.path if p not in front]
    # Forget only these entries' finders (a zygote may have cached a miss for them):
    # importlib.invalidate_caches() would import importlib.metadata on 3.13 (~25 ms).
    for path in front:
        sys.path_importer_cache.pop(path, None)


def _static_context(
    env: Any,
) -> tuple[str | None, str | None, str | None, int | None, str | None]:
    """The LambdaContext fields that never change in an environment."""
    memory = env.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
    return (
        env.get("AWS_LAMBDA_LOG_GROUP_NAME"),
        env.get("AWS_LAMBDA_LOG_STREAM_NAME"),
        env.get("AWS_LAMBDA_FUNCTION_NAME"),
        int(memory) if memory and memory.isdigit() else None,
        env.get("AWS_LAMBDA_FUNCTION_VERSION"),
    )


def _fail_init(
    client: _RuntimeClient, error: dict[str, object], error_type: str | None = None
) -> NoReturn:
    logging.warning(_LAMBDA_WARNING)
    if error_type is not None:
        error["errorType"] = error_type
    _log_error(error)
    _flush_stdio()
    try:
        client.post_init_error(json.dumps(error).encode("utf-8"), str(error["errorType"]))
    finally:
        sys.exit(1)


def _run_hooks(hooks: list[Any], reverse: bool) -> None:
    while hooks:
        func, args, kwargs = hooks.pop() if reverse else hooks.pop(0)
        func(*args, **kwargs)


def _snap_start(client: _RuntimeClient, snapshot_fd: str | None) -> _RuntimeClient:
    """Run the before-snapshot hooks, hand the initialised process over as the snapshot, and
    continue as a restored environment: after-restore hooks, then invocations. Returns the
    Runtime API client of the environment that goes on."""
    try:
        _run_hooks(snapshot_restore_py.get_before_snapshot(), reverse=True)
    except Exception as exc:
        _fail_init(client, _error_from_exception(exc), "Runtime.BeforeSnapshotError")
    _flush_stdio()
    client.restore_next()
    if snapshot_fd is not None:
        # lambdad forks this process once per restored environment (lambdad_forkserver, loaded
        # by the zygote): what follows runs in each of them, with its own variables.
        forkserver = sys.modules["lambdad_forkserver"]
        client.close()
        assignment = forkserver.serve_snapshot(int(snapshot_fd))
        os.environ.clear()
        os.environ.update(assignment["env"])
        with contextlib.suppress(OSError):
            os.chdir(assignment.get("cwd") or os.environ.get("LAMBDA_TASK_ROOT", "/"))
        client = _RuntimeClient.from_environment(os.environ)
        client.restore_next()
    try:
        _run_hooks(snapshot_restore_py.get_after_restore(), reverse=False)
    except Exception as exc:
        error = _error_from_exception(exc)
        error["errorType"] = "Runtime.AfterRestoreError"
        _log_error(error)
        _flush_stdio()
        try:
            client.post_restore_error(
                json.dumps(error).encode("utf-8"), "Runtime.AfterRestoreError"
            )
        finally:
            sys.exit(1)
    return client


class _Ahead:
    """What main() sets up first that no function changes, done by prepare_ahead while a
    sandbox waited for its function."""

    __slots__ = ("address", "client", "fd", "handler", "path", "task_root", "unix_path")

    def __init__(self, fd: int, address: str, unix_path: str, task_root: str) -> None:
        self.fd, self.address, self.unix_path, self.task_root = fd, address, unix_path, task_root
        self.path = sys.path[:]  # as it was before: put back if the assignment disagrees
        self.client = _RuntimeClient(address, unix_path)
        self.client._sock = socket.socket(fileno=fd)
        self.handler = _set_up_process(task_root, "", "")

    def agrees(self, env: Any) -> bool:
        """Whether the assignment's variables name what was set up."""
        return bool(
            env.get("LAMBDAD_RUNTIME_API_FD") == str(self.fd)
            and env.get("AWS_LAMBDA_RUNTIME_API") == self.address
            and env.get("LAMBDAD_RUNTIME_API_SOCKET") == self.unix_path
            and env.get("LAMBDA_TASK_ROOT") == self.task_root
        )

    def undo(self) -> None:
        """Leave nothing of it behind (the connection's descriptor is left open, unowned)."""
        sock, self.client._sock = self.client._sock, None
        if sock is not None:
            sock.detach()
        logging.getLogger().removeHandler(self.handler)
        sys.path[:] = self.path


_ahead: _Ahead | None = None
_took_ahead = False  # whether init took what prepare_ahead made (the e2e tests ask)


def prepare_ahead(runtime_api_fd: int, address: str, unix_path: str, task_root: str) -> None:
    """Called in a prepared sandbox before its function is assigned (lambdad_jail), with what
    the assignment will name: the Runtime API connection made for this process, the API's
    address and Unix socket, the task root. Makes the client, sys.path, line-buffered stdio and
    the default (text) log handler now, ~0.1 ms a cold start's init then skips; main() takes
    them if the assignment agrees, else undoes them and starts as usual."""
    global _ahead
    if _ahead is None:
        _ahead = _Ahead(runtime_api_fd, address, unix_path, task_root)


def _set_up(env: Any) -> _RuntimeClient:
    """The environment's Runtime API client (returned), sys.path, stdio and logging."""
    global _ahead, _took_ahead
    ahead, _ahead = _ahead, None
    log_format = env.get("AWS_LAMBDA_LOG_FORMAT", "")
    log_level = env.get("AWS_LAMBDA_LOG_LEVEL", "")
    if ahead is not None and ahead.agrees(env):
        del env["LAMBDAD_RUNTIME_API_FD"]  # (from_environment's pops: lambdad's, not the
        del env["LAMBDAD_RUNTIME_API_SOCKET"]  # function's; the client has taken them)
        _took_ahead = True
        if log_format.upper() == "JSON" or log_level:  # not the default logging after all
            logging.getLogger().removeHandler(ahead.handler)
            _setup_logging(log_format, log_level)
        with contextlib.suppress(OSError):
            os.chdir(ahead.task_root)
        return ahead.client
    if ahead is not None:
        ahead.undo()
    client = _RuntimeClient.from_environment(env)
    task_root = env.get("LAMBDA_TASK_ROOT") or os.getcwd()
    _set_up_process(task_root, log_format, log_level)
    with contextlib.suppress(OSError):
        os.chdir(task_root)
    return client


def _set_up_process(task_root: str, log_format: str, log_level: str) -> _LambdaLogHandler:
    """sys.path for `task_root`, line-buffered stdout and stderr, the log handler (returned)."""
    _setup_sys_path(task_root)
    sys.stdout = _line_flushed(sys.stdout)
    sys.stderr = _line_flushed(sys.stderr)
    return _setup_logging(log_format, log_level)


def main() -> None:
    env = os.environ
    snapshot_fd = env.pop("LAMBDAD_SNAPSHOT_FD", None)
    handler_spec = env.get("_HANDLER", "")
    staged = env.pop("LAMBDAD_STAGED", None) == "1"
    client = _set_up(env)
    if staged:  # built ahead of its first invocation: init runs when that arrives
        _stage(handler_spec)
        client.wait_for_work()

    static = _static_context(env)
    encode = _ENCODERS[env.get("AWS_EXECUTION_ENV", "") in _ESCAPING_RUNTIMES]

    try:
        handler = _load_handler(handler_spec)
    except _Fault as fault:
        _fail_init(client, _make_error(fault.msg, fault.error_type, fault.trace))
    except Exception as exc:
        _fail_init(client, _error_from_exception(exc))

    try:
        if env.get("AWS_LAMBDA_INITIALIZATION_TYPE") == "snap-start":
            client = _snap_start(client, snapshot_fd)
            static = _static_context(os.environ)
        _serve(client, handler, static, encode)
    except (_ConnectionLost, OSError) as exc:
        # The Runtime API went away (the environment is being shut down): leave quietly.
        sys.stderr.write(f"lambdad bootstrap: lost the Runtime API: {exc!r}\n")
        _flush_stdio()
        sys.exit(1)


def _serve(
    client: _RuntimeClient,
    handler: Any,
    static: tuple[str | None, str | None, str | None, int | None, str | None],
    encode: Any,
) -> NoReturn:
    headers, body = client.next_invocation()
    while True:
        request_id, payload, payload_type, error_type = _invoke(
            headers, body, handler, static, encode
        )
        _flush_stdio()
        headers, body = client.finish_and_next(request_id, payload, payload_type, error_type)


class _TraceIdVariable:
    """_X_AMZN_TRACE_ID, set for each invocation as AWS's runtime sets it, but not by glibc's
    setenv: that keeps every value a variable ever had (its old strings may still be pointed
    at), ~100 bytes an invocation for the life of the environment. One buffer, handed to
    putenv (the C environment then points at it), is rewritten in place instead, and
    os.environ's own mapping is updated beside it."""

    NAME = "_X_AMZN_TRACE_ID"
    SIZE = 512

    def __init__(self) -> None:
        import ctypes

        self._libc: Any = None
        self._buffer: Any = None
        self._address = 0
        environ = os.environ
        if all(hasattr(environ, a) for a in ("_data", "encodekey", "encodevalue")):
            with contextlib.suppress(OSError, AttributeError):
                libc = ctypes.CDLL(None)
                libc.getenv.restype = ctypes.c_void_p
                self._buffer = ctypes.create_string_buffer(self.SIZE)
                # where getenv answers when the variable is ours: just past "NAME="
                self._address = ctypes.addressof(self._buffer) + len(self.NAME) + 1
                self._libc = libc
        self._key = environ.encodekey(self.NAME) if self._libc is not None else b""

    def set(self, value: str | None) -> None:
        environ = os.environ
        if value is None:
            environ.pop(self.NAME, None)  # unsetenv drops the pointer, frees nothing: fine
            return
        encoded = f"{self.NAME}={value}".encode()
        if self._libc is None or len(encoded) >= self.SIZE:
            environ[self.NAME] = value
            return
        self._buffer.value = encoded
        if self._libc.getenv(self._key) != self._address:  # not ours (first time, or changed)
            self._libc.putenv(self._buffer)
        environ._data[self._key] = environ.encodevalue(value)  # type: ignore[attr-defined]


_TRACE_ID = _TraceIdVariable()


def _invoke(
    headers: dict[str, str],
    body: bytes,
    handler: Any,
    static: tuple[str | None, str | None, str | None, int | None, str | None],
    encode: Any,
) -> tuple[str, bytes, str, str | None]:
    """Run one invocation: (request id, payload, content type, error type or None)."""
    global _current_request_id
    request_id = headers.get("lambda-runtime-aws-request-id", "")
    _current_request_id = request_id
    _TRACE_ID.set(headers.get("lambda-runtime-trace-id") or None)
    try:
        try:
            after = headers.get("lambdad-deadline-after-ms")
            if after is not None:  # pushed while init ran (lambdad's api_server: push)
                deadline = int(time.time() * 1000) + int(after)
            else:
                deadline = int(headers.get("lambda-runtime-deadline-ms") or 0)
        except ValueError:
            deadline = 0
        raw = headers.get("lambda-runtime-client-context")
        client_context = None
        if raw:
            data = _parse_json_header(raw, "Client Context")
            if isinstance(data, dict):
                client_context = ClientContext(data)
        raw = headers.get("lambda-runtime-cognito-identity")
        identity = CognitoIdentity(
            _parse_json_header(raw, "Cognito Identity") if raw else None  # type: ignore[arg-type]
        )
        context = LambdaContext(
            request_id,
            deadline,
            headers.get("lambda-runtime-invoked-function-arn"),
            client_context,
            identity,
            headers.get("lambda-runtime-aws-tenant-id"),
            static,
        )
        content_type = headers.get("content-type", "application/json")
        if content_type.startswith("application/json"):
            try:
                event = json.loads(body)
            except Exception as e:
                raise _Fault("Runtime.UnmarshalError", f"Unable to unmarshal input: {e}") from None
        else:
            event = body
        result = handler(event, context)
        if isinstance(result, bytes):
            return request_id, result, "application/unknown", None
        try:
            return request_id, encode(result).encode("utf-8"), "application/json", None
        except Exception as e:
            raise _Fault("Runtime.MarshalError", f"Unable to marshal response: {e}") from None
    except _Fault as fault:
        error = _make_error(fault.msg, fault.error_type, fault.trace, request_id)
    except Exception as exc:
        error = _error_from_exception(exc, request_id)
    _log_error(error)
    return (
        request_id,
        json.dumps(error).encode("utf-8"),
        "application/json",
        str(error["errorType"]),
    )


def _warm_import() -> None:
    """Import lambdad_warm_probe as a handler module is imported (_import_top_level, its
    directory first on sys.path), then forget it: its directory is this file's, or
    /var/runtime/python inside a sandbox."""
    name = "lambdad_warm_probe"
    for directory in (os.path.dirname(_THIS_FILE), "/var/runtime/python"):
        if os.path.isfile(os.path.join(directory, name + ".py")):
            break
    else:
        return
    saved = sys.path[:]
    finder = sys.path_importer_cache.pop(directory, None)
    sys.path.insert(0, directory)
    try:
        _import_top_level(name)
    finally:
        sys.path[:] = saved
        sys.modules.pop(name, None)
        sys.path_importer_cache.pop(directory, None)
        if finder is not None:
            sys.path_importer_cache[directory] = finder


def warm_up() -> None:
    """Run this module's per-environment code once, against an in-memory Runtime API, before
    any function is assigned (lambdad calls it in zygotes and in prepared sandboxes). A forked
    process pays copy-on-write faults and the interpreter's first-run specialisation on first
    use of each code path; paid here, they stay off the cold-start path. Leaves no state but
    the log handler it set up, unattached, for init to use (_spare_text_handler)."""
    global _current_request_id, _spare_text_handler
    saved = sys.stdout, sys.stderr, os.environ.get("_X_AMZN_TRACE_ID")
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    ours, theirs = socket.socketpair()
    client = _RuntimeClient("127.0.0.1:9001")
    client._sock = ours
    made: _LambdaLogHandler | None = None
    try:
        event = b'{"warm":true,"n":[1,2.5,"x"]}'
        next_reply = (
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Lambda-Runtime-Aws-Request-Id: warm-up\r\nLambda-Runtime-Deadline-Ms: 0\r\n"
            b"Lambda-Runtime-Invoked-Function-Arn: arn:aws:lambda:warm\r\n"
            b"Lambda-Runtime-Trace-Id: Root=1-0-0\r\nContent-Length: %d\r\n\r\n%s"
        ) % (len(event), event)
        accepted = b'HTTP/1.1 202 Accepted\r\nContent-Length: 16\r\n\r\n{"status":"OK"}'
        theirs.sendall(next_reply + accepted + next_reply)
        sys.stdout = _line_flushed(sys.stdout)
        sys.stderr = _line_flushed(sys.stderr)
        made = _setup_logging("", "")
        static = _static_context({"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128"})
        encode = _ENCODERS[False]
        headers, body = client.next_invocation()
        request_id, payload, payload_type, error_type = _invoke(
            headers, body, lambda event, context: {"event": event, "left": 1}, static, encode
        )
        client.finish_and_next(request_id, payload, payload_type, error_type)
        _warm_import()
    finally:
        client._sock = None
        ours.close()
        theirs.close()
        sys.stdout, sys.stderr = saved[0], saved[1]
        if made is not None:
            _spare_text_handler = made  # text format, unattached below: kept for init
        root.handlers[:] = handlers
        root.setLevel(level)
        _current_request_id = ""
        if saved[2] is None:
            os.environ.pop("_X_AMZN_TRACE_ID", None)
        else:
            os.environ["_X_AMZN_TRACE_ID"] = saved[2]


if __name__ == "__main__":
    main()
