"""The Runtime API server's HTTP side: when answers are written (one write per read)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from lambdad.runtime.api_server import ACCEPTED, NextReply, RuntimeApiServer, _Connection
from tests.unit.fake_transport import RecordingTransport

NEXT = b"GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: rt\r\n\r\n"


def response(request_id: str, body: bytes = b"null") -> bytes:
    return (
        b"POST /2018-06-01/runtime/invocation/%s/response HTTP/1.1\r\nHost: rt\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (request_id.encode(), len(body), body)
    )


class Handler:
    def __init__(self) -> None:
        self.parked: list[NextReply] = []
        self.responses: list[tuple[str, bytes]] = []
        self.pushed_asked: list[float | None] = []
        self.waiting: list[NextReply] = []

    def runtime_next(self, reply: NextReply) -> None:
        self.parked.append(reply)

    def runtime_next_pushed(self, asked_at: float | None) -> None:
        self.pushed_asked.append(asked_at)

    def runtime_response(self, request_id: str, body: bytes, too_large: bool) -> tuple[int, bytes]:
        self.responses.append((request_id, body))
        return ACCEPTED

    def runtime_staged_wait(self, reply: NextReply) -> None:
        self.waiting.append(reply)

    def runtime_connection_lost(self) -> None:
        self.parked.clear()


def connection() -> tuple[_Connection, RecordingTransport, Handler]:
    handler = Handler()
    conn = _Connection(handler)  # type: ignore[arg-type]  # only what these tests call
    transport = RecordingTransport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    return conn, transport, handler


def test_a_response_alone_is_answered_at_once() -> None:
    conn, transport, handler = connection()
    conn.data_received(response("r1"))
    assert handler.responses == [("r1", b"null")]
    assert len(transport.writes) == 1
    assert transport.writes[0].startswith(b"HTTP/1.1 202 Accepted\r\n")


def test_a_pipelined_response_is_answered_with_the_next_event() -> None:
    conn, transport, handler = connection()
    conn.data_received(response("r1") + NEXT)
    assert handler.responses == [("r1", b"null")] and len(handler.parked) == 1
    assert transport.writes == []  # the runtime reads the 202 only once it has the event
    assert handler.parked[0].send([(b"Lambda-Runtime-Aws-Request-Id", b"r2")], b"{}")
    (written,) = transport.writes
    accepted, _, event = written.partition(b'{"status":"OK"}')
    assert accepted.startswith(b"HTTP/1.1 202 Accepted\r\n")
    assert event.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Lambda-Runtime-Aws-Request-Id: r2\r\n" in event
    assert event.endswith(b"\r\n\r\n{}")


def test_held_answers_are_dropped_with_the_connection() -> None:
    conn, transport, handler = connection()
    conn.data_received(response("r1") + NEXT)
    reply = handler.parked[0]
    conn.connection_lost(None)
    assert handler.parked == [] and not reply.send([], b"{}")
    assert transport.writes == []


WAIT = b"GET /2018-06-01/runtime/lambdad/wait HTTP/1.1\r\nHost: rt\r\n\r\n"


def test_a_staged_runtime_waits_until_its_handler_answers() -> None:
    conn, transport, handler = connection()
    conn.data_received(WAIT)
    assert len(handler.waiting) == 1 and transport.writes == []  # held: nothing written
    assert handler.waiting[0].send([], b"{}")
    (written,) = transport.writes
    assert written.startswith(b"HTTP/1.1 200 OK\r\n") and written.endswith(b"\r\n\r\n{}")
    conn.data_received(WAIT.replace(b"GET", b"POST"))
    assert transport.writes[-1].startswith(b"HTTP/1.1 405 ")


def test_a_pushed_event_answers_the_first_next_and_only_that_one() -> None:
    conn, transport, handler = connection()
    assert conn.push([(b"Lambda-Runtime-Aws-Request-Id", b"r1")], b'{"a":1}')
    (event,) = transport.writes  # written before the runtime asked
    assert event.startswith(b"HTTP/1.1 200 OK\r\n") and event.endswith(b'\r\n\r\n{"a":1}')
    conn.data_received(NEXT.replace(b"\r\n\r\n", b"\r\nLambdad-Asked-At: 1500000000\r\n\r\n"))
    assert handler.pushed_asked == [1.5] and handler.parked == []
    assert len(transport.writes) == 1  # that /next is not answered again
    conn.data_received(response("r1") + NEXT)  # from then on, as usual
    assert handler.responses == [("r1", b"null")] and len(handler.parked) == 1
    assert handler.pushed_asked == [1.5]


def test_nothing_is_pushed_to_a_runtime_waiting_on_next_or_gone() -> None:
    conn, transport, _ = connection()
    conn.data_received(NEXT)  # parked: that /next gets the event the usual way
    assert not conn.push([], b"{}")
    assert transport.writes == []
    conn.connection_lost(None)
    assert not conn.push([], b"{}")


async def test_a_server_made_ahead_serves_its_environment_once_bound() -> None:
    server = RuntimeApiServer()  # a prepared sandbox's: no environment yet
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    try:
        channel = await server.adopt(ours)
        assert server.connection is channel
        await asyncio.get_running_loop().sock_sendall(theirs, NEXT)
        early = await asyncio.get_running_loop().sock_recv(theirs, 4096)
        assert early.startswith(b"HTTP/1.1 503 ")  # nothing runs in a sandbox before that
        handler = Handler()
        server.bind(handler)  # type: ignore[arg-type]  # only what this test calls
        await asyncio.get_running_loop().sock_sendall(theirs, response("r1"))
        answer = await asyncio.get_running_loop().sock_recv(theirs, 4096)
        assert answer.startswith(b"HTTP/1.1 202 Accepted\r\n")
        assert handler.responses == [("r1", b"null")]
        with pytest.raises(RuntimeError):
            server.bind(Handler())  # type: ignore[arg-type]
    finally:
        server.close()
        theirs.close()
