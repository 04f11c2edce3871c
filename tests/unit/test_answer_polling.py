"""AnswerPolling's grants and the Runtime API connection's poll for an answer."""

from __future__ import annotations

import math
import socket
from typing import Any

import pytest

from lambdad.runtime.api_server import _Connection
from lambdad.scheduler.answer_polling import AnswerPolling, typical_duration
from tests.unit.fake_transport import RecordingTransport


def test_only_the_one_running_invocation_of_a_fast_environment_is_polled_for() -> None:
    polling = AnswerPolling(budget_us=200)
    assert polling.budget_for(0.0001) == 0  # nothing running: not an invocation's delivery
    polling.started()
    assert polling.budget_for(0.0001) == 200_000
    assert polling.budget_for(0.0002) == 200_000
    assert polling.budget_for(0.0003) == 0  # typically slower than the budget: sleep
    assert polling.budget_for(math.inf) == 0  # no invocation answered yet
    polling.started()
    assert polling.budget_for(0.0001) == 0  # another invocation waits for the loop
    polling.ended()
    polling.polled(True)
    polling.polled(False)
    stats = polling.statistics()
    assert (stats.budget_microseconds, stats.polls, stats.answered) == (200, 2, 1)


def test_a_zero_budget_never_polls_and_a_negative_one_is_refused() -> None:
    polling = AnswerPolling(budget_us=0)
    polling.started()
    assert polling.budget_for(0.0) == 0
    assert polling.statistics().polls == 0
    with pytest.raises(ValueError):
        AnswerPolling(budget_us=-1)


def test_typical_duration_starts_at_the_first_and_follows_later_ones() -> None:
    assert typical_duration(math.inf, 0.5) == 0.5
    assert typical_duration(0.5, 0.1) == pytest.approx(0.4)
    typical = 1.0
    for _ in range(30):
        typical = typical_duration(typical, 0.0001)
    assert typical < 0.001


class _SocketTransport(RecordingTransport):
    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self._sock = sock

    def get_extra_info(self, name: str) -> Any:
        return self._sock if name == "socket" else None


def test_the_poll_sees_an_answer_waiting_in_the_socket_and_gives_up_without_one() -> None:
    ours, runtime = socket.socketpair()
    with ours, runtime:
        conn = _Connection(None)  # type: ignore[arg-type]  # the poll calls no handler
        conn.connection_made(_SocketTransport(ours))  # type: ignore[arg-type]
        assert not conn.poll_for_answer(1_000_000)  # 1 ms, nothing sent
        runtime.sendall(b"POST /2018-06-01/runtime/invocation/r1/response HTTP/1.1\r\n")
        assert conn.poll_for_answer(10_000_000_000)  # returns as soon as it is there
        assert ours.recv(4) == b"POST"  # the poll leaves the bytes for the loop to read
        conn.connection_lost(None)
        assert not conn.poll_for_answer(1_000_000)  # no connection, nothing to poll
    socketless = _Connection(None)  # type: ignore[arg-type]
    socketless.connection_made(RecordingTransport())  # type: ignore[arg-type]
    assert not socketless.poll_for_answer(1_000_000)


def test_serve_takes_a_polling_budget_in_microseconds_never_negative(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from lambdad.cli.main import build_parser

    parser = build_parser()
    assert parser.parse_args(["serve"]).answer_polling == 200
    assert parser.parse_args(["serve", "--answer-polling", "0"]).answer_polling == 0
    for bad in ("-5", "fast"):
        with pytest.raises(SystemExit):
            parser.parse_args(["serve", "--answer-polling", bad])
    assert "--answer-polling: cannot be negative: -5" in capsys.readouterr().err
