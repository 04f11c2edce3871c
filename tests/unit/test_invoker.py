"""Invoker helpers: the ids every invocation gets."""

from __future__ import annotations

import re
import uuid
from unittest import mock

from lambdad.invoke import invoker


def test_request_ids_are_version_4_uuids_and_trace_ids_xray_headers() -> None:
    for seed in range(256):
        random = bytes((seed + i * 37) % 256 for i in range(36))
        with mock.patch.object(invoker.os, "urandom", return_value=random) as urandom:
            request_id, trace_id = invoker.new_ids()
        urandom.assert_called_once_with(36)
        assert request_id == str(uuid.UUID(bytes=random[:16], version=4))
        assert re.fullmatch(
            rb"Root=1-[0-9a-f]{8}-%s;Parent=%s;Sampled=0"
            % (random[16:28].hex().encode(), random[28:].hex().encode()),
            trace_id,
        )


def test_ids_differ_between_invocations() -> None:
    assert len({invoker.new_ids() for _ in range(100)}) == 100
