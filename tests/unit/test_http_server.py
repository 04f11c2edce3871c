"""The lean HTTP server: requests handed over whole, answered in order, one write each."""

from __future__ import annotations

import asyncio
from typing import Any

from lambdad.api.http_server import HttpRequest, HttpResponse, _Connection, encode_response
from tests.unit.fake_transport import RecordingTransport


def post(path: str, body: bytes = b"", extra: bytes = b"") -> bytes:
    return b"POST %s HTTP/1.1\r\nHost: h\r\n%sContent-Length: %d\r\n\r\n%s" % (
        path.encode(),
        extra,
        len(body),
        body,
    )


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def connection(handler: Any) -> tuple[_Connection, RecordingTransport]:
    conn = _Connection(handler, 1 << 20, lambda: HttpResponse(413, [], b""))
    transport = RecordingTransport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    return conn, transport


def test_a_response_is_one_write_with_its_length() -> None:
    response = HttpResponse(202, [("x-a", "1"), ("Content-Type", "text/plain")], b"body")
    assert encode_response(response, keep_alive=True) == (
        b"HTTP/1.1 202 Accepted\r\nx-a: 1\r\nContent-Type: text/plain\r\n"
        b"Content-Length: 4\r\n\r\nbody"
    )
    assert encode_response(HttpResponse(599, [], b""), keep_alive=False) == (
        b"HTTP/1.1 599 Status\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )


async def test_pipelined_requests_are_answered_in_order_by_one_task() -> None:
    seen: list[HttpRequest] = []
    release = asyncio.Event()

    async def handler(request: HttpRequest) -> HttpResponse:
        seen.append(request)
        if request.raw_path == "/slow":
            await release.wait()
        return HttpResponse(200, [], request.raw_path.encode())

    conn, transport = connection(handler)
    conn.data_received(post("/slow", b"1") + post("/fast?q=1", b"2"))
    await settle()
    assert [r.raw_path for r in seen] == ["/slow"] and transport.writes == []
    release.set()
    await settle()
    assert [w.rsplit(b"\r\n\r\n", 1)[1] for w in transport.writes] == [b"/slow", b"/fast"]
    assert (seen[1].query_string, seen[1].body) == ("q=1", b"2")
    conn.data_received(post("/later"))
    await settle()
    assert len(transport.writes) == 3


def recording() -> tuple[list[HttpRequest], Any]:
    """A handler that answers 200 and the list of requests it got."""
    seen: list[HttpRequest] = []

    async def handler(request: HttpRequest) -> HttpResponse:
        seen.append(request)
        return HttpResponse(200, [], b"")

    return seen, handler


async def test_headers_are_lower_cased_and_repeats_joined() -> None:
    seen, handler = recording()
    conn, _ = connection(handler)
    conn.data_received(post("/", extra=b"X-Thing: a\r\nx-thing: b\r\nOther: c\r\n"))
    await settle()
    (request,) = seen
    assert request.headers == {"host": "h", "x-thing": "a,b", "other": "c", "content-length": "0"}
    assert request.raw_headers[1:3] == ((b"X-Thing", b"a"), (b"x-thing", b"b"))


async def test_chunked_trailers_join_the_headers() -> None:
    seen, handler = recording()
    conn, _ = connection(handler)
    conn.data_received(
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n"
        b"3\r\nabc\r\n0\r\nX-Sum: 42\r\n\r\n"
    )
    await settle()
    (request,) = seen
    assert request.body == b"abc" and request.headers["x-sum"] == "42"


async def test_failing_or_cancelled_handlers_leave_the_connection_usable() -> None:
    async def handler(request: HttpRequest) -> HttpResponse:
        if request.raw_path == "/boom":
            raise RuntimeError("boom")
        if request.raw_path == "/cancelled":
            raise asyncio.CancelledError
        return HttpResponse(200, [], b"ok")

    conn, transport = connection(handler)
    conn.data_received(post("/boom"))
    await settle()
    assert transport.writes[-1].startswith(b"HTTP/1.1 500 ")
    conn.data_received(post("/cancelled"))
    await settle()
    conn.data_received(post("/fine"))
    await settle()
    assert transport.writes[-1].endswith(b"\r\n\r\nok") and len(transport.writes) == 2


async def test_the_task_ends_with_the_connection() -> None:
    _, handler = recording()
    conn, _ = connection(handler)
    conn.data_received(post("/"))
    await settle()
    task = conn._task
    assert task is not None and not task.done()
    conn.connection_lost(None)
    await settle()
    assert task.done() and conn._task is None
