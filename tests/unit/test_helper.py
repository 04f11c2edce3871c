"""HelperProcess: requests answered in order by a process of its own; refusals and exits."""

from __future__ import annotations

import asyncio
import os

import pytest

from lambdad.sandbox.helper import HelperError, HelperProcess

ENTRY = "tests.unit.helper_requests:serve_test_requests"


async def test_requests_are_answered_in_order_by_another_process() -> None:
    helper = HelperProcess(ENTRY)
    helper.start()
    try:
        replies = await asyncio.gather(*(helper.request({"value": n}) for n in range(20)))
        assert [reply["echo"] for reply in replies] == list(range(20))
        assert {reply["pid"] for reply in replies} != {os.getpid()}
    finally:
        await helper.close()
    assert not helper.alive


async def test_a_refusal_is_an_error_of_that_request_only() -> None:
    helper = HelperProcess(ENTRY)
    helper.start()
    try:
        with pytest.raises(HelperError, match="File exists"):
            await helper.request({"refuse": "/sys/fs/cgroup/x"})
        assert (await helper.request({"value": 1}))["echo"] == 1
    finally:
        await helper.close()


async def test_an_exit_fails_pending_requests_and_a_restart_serves_again() -> None:
    helper = HelperProcess(ENTRY)
    helper.start()
    try:
        waiting = asyncio.ensure_future(helper.request({"value": 1, "exit": True}))
        with pytest.raises(HelperError, match="exited"):
            await waiting
        assert not helper.alive
        with pytest.raises(HelperError, match="not running"):
            await helper.request({"value": 2})
        helper.start()
        assert (await helper.request({"value": 3}))["echo"] == 3
    finally:
        await helper.close()
