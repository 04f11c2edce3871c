"""A lean HTTP/1.1 server for the API: httptools parsing on asyncio (uvloop) transports.

The Invoke hot path is dominated by per-request overhead, not by the work: building ASGI
scopes and messages and writing head and body separately cost more than routing and invoking.
This server hands a complete request (method, raw path, query, lower-cased headers, body) to
one async handler and writes each response with a single `write`. Keep-alive, pipelined
requests (answered in order), `Expect: 100-continue` and a request size limit are supported.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import socket
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import NamedTuple, cast

import httptools

log = logging.getLogger(__name__)


# Records made per request are named tuples: immutable like frozen dataclasses, built in a
# third of the time.


class HttpRequest(NamedTuple):
    method: str
    raw_path: str  # still percent-encoded
    query_string: str
    headers: dict[str, str]  # names lower-cased; repeated headers joined with ","
    body: bytes
    raw_headers: tuple[tuple[bytes, bytes], ...] = ()  # as received, in order (for SigV4)
    client: str = ""


class HttpResponse(NamedTuple):
    status: int
    headers: list[tuple[str, str]]
    body: bytes


Handler = Callable[[HttpRequest], Awaitable[HttpResponse]]
TooLarge = Callable[[], HttpResponse]


# status -> its status line
_STATUS_LINES = {s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode()) for s in HTTPStatus}


def _status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    return line if line is not None else b"HTTP/1.1 %d Status\r\n" % status


def encode_response(response: HttpResponse, keep_alive: bool) -> bytes:
    fields = "".join([f"{name}: {value}\r\n" for name, value in response.headers])
    return b"%s%sContent-Length: %d\r\n%s\r\n%s" % (
        _status_line(response.status),
        fields.encode("latin-1"),
        len(response.body),
        b"" if keep_alive else b"Connection: close\r\n",
        response.body,
    )


class _Connection(asyncio.Protocol):
    def __init__(self, handler: Handler, max_body: int, too_large: TooLarge) -> None:
        self._handler = handler
        self._max_body = max_body
        self._too_large = too_large
        self._parser = httptools.HttpRequestParser(self)
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._client = ""
        self._url = b""
        self._headers: dict[str, str] = {}
        self._raw_headers: list[tuple[bytes, bytes]] = []
        self._decoded = 0
        self._body: list[bytes] = []
        self._size = 0
        self._oversized = False
        # complete requests waiting for their turn (answered strictly in order)
        self._queue: collections.deque[tuple[HttpRequest, bool]] = collections.deque()
        # One task answers the connection's requests, started by the first; between requests
        # it waits for this future (cheaper than a task per request).
        self._task: asyncio.Task[None] | None = None
        self._idle: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self._client = str(peer[0]) if peer else ""
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._wake()  # the task ends once it has answered what was queued

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(400)
        except httptools.HttpParserError:
            self._fail(400)

    def _fail(self, status: int) -> None:
        if self._transport is not None:
            self._transport.write(encode_response(HttpResponse(status, [], b""), False))
            self._transport.close()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = {}
        self._raw_headers = []
        self._decoded = 0  # raw headers already in the map
        self._body = []
        self._size = 0
        self._oversized = False

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._decode_headers()
        if self._headers.get("expect", "").lower() == "100-continue" and self._transport:
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > self._max_body:
            self._oversized = True
            self._body = []
        elif not self._oversized:
            self._body.append(body)

    def _decode_headers(self) -> None:
        """Add the headers received since the last call to the map (trailers come late)."""
        headers = self._headers
        for name, value in self._raw_headers[self._decoded :]:
            key = name.decode("latin-1").lower()
            text = value.decode("latin-1")
            previous = headers.get(key)
            headers[key] = text if previous is None else f"{previous},{text}"
        self._decoded = len(self._raw_headers)

    def on_message_complete(self) -> None:
        if self._decoded < len(self._raw_headers):
            self._decode_headers()
        url = self._url.decode("latin-1")
        path, _, query = url.partition("?")
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        request = HttpRequest(
            self._parser.get_method().decode("latin-1"),
            path,
            query,
            self._headers,
            body,
            tuple(self._raw_headers),
            self._client,
        )
        keep_alive = self._parser.should_keep_alive()
        if self._oversized:
            self._send(self._too_large(), keep_alive=False)
            return
        self._queue.append((request, keep_alive))
        if self._task is None:
            self._task = self._loop.create_task(self._serve())
        else:
            self._wake()

    def _wake(self) -> None:
        idle, self._idle = self._idle, None
        if idle is not None and not idle.done():
            idle.set_result(None)

    async def _serve(self) -> None:
        queue = self._queue
        try:
            while True:
                while queue:
                    request, keep_alive = queue.popleft()
                    try:
                        response = await self._handler(request)
                    except Exception:  # the connection boundary: answer 500, keep the trace
                        log.exception(
                            "unhandled error serving %s %s", request.method, request.raw_path
                        )
                        response = HttpResponse(500, [], b"")
                    self._send(response, keep_alive)
                if self._transport is None:
                    return
                self._idle = self._loop.create_future()
                await self._idle
        finally:  # also when cancelled: the next request starts another task
            self._task = self._idle = None

    def _send(self, response: HttpResponse, keep_alive: bool) -> None:
        if self._transport is None or self._transport.is_closing():
            return
        self._transport.write(encode_response(response, keep_alive))
        if not keep_alive:
            self._transport.close()


async def serve(
    handler: Handler,
    host: str,
    port: int,
    max_body: int,
    too_large: TooLarge,
    backlog: int = 1024,
) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: _Connection(handler, max_body, too_large),
        host=host,
        port=port,
        reuse_address=True,
        backlog=backlog,
    )
