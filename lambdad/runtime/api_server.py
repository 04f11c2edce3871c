"""The Lambda Runtime API (2018-06-01), served to one execution environment.

Every environment gets its own listening socket, so the connection itself says which
environment is talking: no lookup on the hot path, and later a socket created inside the
environment's network namespace serves it there unchanged.

The HTTP side is a lean asyncio protocol over httptools (one keep-alive connection per
runtime client in practice); everything Lambda-specific is delegated to a ``RuntimeApiHandler``.
"""

from __future__ import annotations

import asyncio
import select
import socket
import time
from typing import Protocol, cast

import httptools
import orjson

PREFIX = b"/2018-06-01"
# lambdad's own: where a staged environment's bootstrap waits before init (RuntimeApiHandler)
STAGED_WAIT_PATH = b"/runtime/lambdad/wait"
ERROR_TYPE_HEADER = b"lambda-runtime-function-error-type"
# lambdad's bootstrap: when it sent its first /next (CLOCK_MONOTONIC, ns), see push
ASKED_AT_HEADER = b"lambdad-asked-at"
# The Runtime API accepts response bodies up to this size (AWS: 6 MB + 100 bytes of framing).
MAX_RESPONSE_BYTES = 6_291_556

_REASONS = {
    200: b"OK",
    202: b"Accepted",
    400: b"Bad Request",
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed",
    413: b"Payload Too Large",
    500: b"Internal Server Error",
}


class NextReply(Protocol):
    def send(self, headers: list[tuple[bytes, bytes]], body: bytes) -> bool:
        """Answer a parked /next; False if the runtime's connection is gone."""

    def poll_for_answer(self, budget_ns: int) -> bool:
        """Busy-poll the connection, without yielding the event loop, until the runtime has
        sent something or `budget_ns` has passed; True if it has (the loop reads it next)."""


class PushChannel(Protocol):
    def push(self, headers: list[tuple[bytes, bytes]], body: bytes) -> bool:
        """Answer the runtime's first /next before it asks (see _Connection.push)."""


class RuntimeApiHandler(Protocol):
    def runtime_next(self, reply: NextReply) -> None: ...

    def runtime_next_pushed(self, asked_at: float | None) -> None:
        """The runtime asked for the event that was pushed to it: it is initialised (at
        `asked_at`, if it said when: CLOCK_MONOTONIC seconds, which time.perf_counter and
        time.monotonic read on Linux)."""
        ...

    def runtime_response(
        self, request_id: str, body: bytes, too_large: bool
    ) -> tuple[int, bytes]: ...

    def runtime_error(
        self, request_id: str, error_type: str | None, body: bytes
    ) -> tuple[int, bytes]: ...

    def runtime_init_error(self, error_type: str | None, body: bytes) -> tuple[int, bytes]: ...

    def runtime_restore_next(self) -> tuple[int, bytes]:
        """SnapStart: the runtime initialised (snapshot) or resumed (restored environment)."""
        ...

    def runtime_restore_error(self, error_type: str | None, body: bytes) -> tuple[int, bytes]:
        """SnapStart: an after-restore hook failed."""
        ...

    def runtime_staged_wait(self, reply: NextReply) -> None:
        """lambdad's bootstraps in a staged environment (LAMBDAD_STAGED) ask here before their
        init, which may run once `reply` is sent (empty): when its first invocation arrives."""
        ...

    def runtime_connection_lost(self) -> None: ...


def error_body(error_type: str, message: str) -> bytes:
    return orjson.dumps({"errorMessage": message, "errorType": error_type})


ACCEPTED = (202, b'{"status":"OK"}')


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection from the runtime client."""

    def __init__(self, handler: RuntimeApiHandler | None) -> None:
        self._handler = handler  # None until the server is bound to its environment
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._error_type_header: bytes | None = None  # the one header the Runtime API reads
        self._asked_at_header: bytes | None = None
        self._body: list[bytes] = []
        self._body_size = 0
        self._parked = False
        # answers not written yet: those to one read's requests go out in one write, and when
        # that read ended with a parked /next (a pipelining runtime), with the event it gets
        self._unsent: list[bytes] = []
        self._pushed = False  # the next /next was answered ahead (push)
        self._poller: select.poll | None = None  # made for the first poll_for_answer

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self._write(400, error_body("InvalidRequest", "malformed HTTP request"), close=True)
            return
        if self._unsent and not self._parked and self._transport is not None:
            # The runtime waits for these answers (it sent no /next after them): send them now.
            self._transport.write(b"".join(self._unsent))
            self._unsent.clear()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._unsent.clear()
        if self._parked:
            self._parked = False
            if self._handler is not None:
                self._handler.runtime_connection_lost()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._url = b""
        self._error_type_header = None
        self._asked_at_header = None
        self._body = []
        self._body_size = 0

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) == len(ERROR_TYPE_HEADER) and name.lower() == ERROR_TYPE_HEADER:
            self._error_type_header = value
        elif len(name) == len(ASKED_AT_HEADER) and name.lower() == ASKED_AT_HEADER:
            self._asked_at_header = value

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size <= MAX_RESPONSE_BYTES:
            self._body.append(body)

    def on_message_complete(self) -> None:
        method = self._parser.get_method()
        path = self._url.split(b"?", 1)[0]
        if not path.startswith(PREFIX):
            self._write(404, error_body("InvalidRequest", "not found"))
            return
        if self._handler is None:  # (nothing runs in a sandbox before its assignment)
            self._write(503, error_body("ServiceException", "no function is assigned yet"))
            return
        self._route(method, path[len(PREFIX) :])

    # routing
    def _route(self, method: bytes, path: bytes) -> None:
        assert self._handler is not None
        if path == b"/runtime/invocation/next":
            if method != b"GET":
                self._write(405, error_body("InvalidRequest", "method not allowed"))
                return
            if self._pushed:  # answered already: the runtime has read (or will read) it
                self._pushed = False
                asked = self._asked_at_header
                asked_at = int(asked) / 1e9 if asked and asked.isdigit() else None
                self._handler.runtime_next_pushed(asked_at)
                return
            self._parked = True
            self._handler.runtime_next(self)
            return
        if path == b"/runtime/restore/next":
            if method != b"GET":
                self._write(405, error_body("InvalidRequest", "method not allowed"))
                return
            self._write(*self._handler.runtime_restore_next())
            return
        if path == STAGED_WAIT_PATH:
            if method != b"GET":
                self._write(405, error_body("InvalidRequest", "method not allowed"))
                return
            self._parked = True
            self._handler.runtime_staged_wait(self)
            return
        if method != b"POST":
            self._write(
                405 if path.startswith(b"/runtime/") else 404,
                error_body("InvalidRequest", "method not allowed"),
            )
            return
        if path == b"/runtime/init/error":
            self._write(*self._handler.runtime_init_error(self._error_type(), self._joined()))
            return
        if path == b"/runtime/restore/error":
            self._write(*self._handler.runtime_restore_error(self._error_type(), self._joined()))
            return
        parts = path.split(b"/")
        # b"", b"runtime", b"invocation", id, kind
        if len(parts) == 5 and parts[1] == b"runtime" and parts[2] == b"invocation":
            request_id = parts[3].decode("latin-1")
            if parts[4] == b"response":
                too_large = self._body_size > MAX_RESPONSE_BYTES
                self._write(*self._handler.runtime_response(request_id, self._joined(), too_large))
                return
            if parts[4] == b"error":
                self._write(
                    *self._handler.runtime_error(request_id, self._error_type(), self._joined())
                )
                return
        self._write(404, error_body("InvalidRequest", "not found"))

    def _error_type(self) -> str | None:
        value = self._error_type_header
        return value.decode("utf-8", "replace") if value else None

    def _joined(self) -> bytes:
        body = self._body
        if len(body) == 1:
            return body[0]
        return b"".join(body)

    # NextReply
    def send(self, headers: list[tuple[bytes, bytes]], body: bytes) -> bool:
        if self._transport is None or self._transport.is_closing():
            self._parked = False
            return False
        self._parked = False
        self._write_event(headers, body)
        return True

    def poll_for_answer(self, budget_ns: int) -> bool:
        if self._transport is None:
            return False
        poller = self._poller
        if poller is None:
            sock = self._transport.get_extra_info("socket")
            if sock is None:  # (a transport without one: nothing to poll)
                return False
            poller = self._poller = select.poll()
            poller.register(sock.fileno(), select.POLLIN)
        poll, clock = poller.poll, time.perf_counter_ns
        end = clock() + budget_ns
        while not poll(0):
            if clock() >= end:
                return False
        return True

    # PushChannel
    def push(self, headers: list[tuple[bytes, bytes]], body: bytes) -> bool:
        """Write the answer to the runtime's first /next now, before the runtime asks: only on a
        connection lambdad made for its own bootstrap, whose first request is that /next. The
        event then waits in the socket while the runtime initialises, and its /next returns at
        once (a round trip less on a cold start); the /next still tells lambdad init is done."""
        if self._transport is None or self._transport.is_closing() or self._parked:
            return False
        self._pushed = True
        self._write_event(headers, body)
        return True

    def _write_event(self, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        # Answers held back since the runtime asked for this event go first, in one write.
        assert self._transport is not None
        head = self._unsent
        head += [
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: ",
            str(len(body)).encode(),
            b"\r\n",
        ]
        for name, value in headers:
            head += [name, b": ", value, b"\r\n"]
        head.append(b"\r\n")
        head.append(body)
        self._transport.write(b"".join(head))
        head.clear()

    def _write(self, status: int, body: bytes, close: bool = False) -> None:
        """Queue an answer; `data_received` writes it once the read's requests are handled,
        unless they ended with a parked /next (then it leaves with the next event)."""
        if self._transport is None:
            return
        self._unsent.append(
            b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (status, _REASONS.get(status, b"Error"), len(body), body)
        )
        if close:
            self._transport.write(b"".join(self._unsent))
            self._unsent.clear()
            self._transport.close()


class RuntimeApiServer:
    """The Runtime API listener of one environment.

    Made without a handler, it serves ahead of the environment: a prepared sandbox's listeners
    and connection are served while the sandbox waits (~0.17 ms of a cold start's path), and
    `bind` gives them the environment once the sandbox is assigned. Until then a request is
    answered 503 (nothing runs in a sandbox before its assignment)."""

    def __init__(self, handler: RuntimeApiHandler | None = None) -> None:
        self._handler = handler
        self._servers: list[asyncio.Server] = []
        self._adopted: list[asyncio.BaseTransport] = []
        self._unbound: list[_Connection] = []  # connections made before bind
        self.address = ""
        self.connection: PushChannel | None = None  # the last adopted connection

    def bind(self, handler: RuntimeApiHandler) -> None:
        """Serve `handler`'s environment from now on (once)."""
        if self._handler is not None:
            raise RuntimeError("this Runtime API server has its environment already")
        self._handler = handler
        for connection in self._unbound:
            connection._handler = handler
        self._unbound.clear()

    def _connection(self) -> _Connection:
        connection = _Connection(self._handler)
        if self._handler is None:
            self._unbound.append(connection)
        return connection

    async def start(self, host: str = "127.0.0.1") -> str:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, 0))
        sock.listen(16)
        port = sock.getsockname()[1]
        await self.serve(sock)
        self.address = f"{host}:{port}"
        return self.address

    async def serve(self, sock: socket.socket) -> None:
        """Also serve on a listening socket made elsewhere (e.g. inside a network namespace);
        TCP and Unix sockets alike."""
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        if sock.family == socket.AF_UNIX:
            server = await loop.create_unix_server(self._connection, sock=sock)
        else:
            server = await loop.create_server(self._connection, sock=sock)
        self._servers.append(server)

    async def adopt(self, sock: socket.socket) -> PushChannel:
        """Serve one connection made elsewhere: the sandbox hands lambdad one end of a
        connected pair and its runtime starts on the other, with no connect or accept."""
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        transport, connection = await loop.connect_accepted_socket(self._connection, sock=sock)
        self._adopted.append(transport)
        self.connection = connection
        return connection

    def close(self) -> None:
        for server in self._servers:
            server.close()
        self._servers = []
        for transport in self._adopted:
            transport.close()
        self._adopted = []
        self._unbound.clear()
        self.connection = None
