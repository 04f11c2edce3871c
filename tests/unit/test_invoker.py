"""Invoker helpers: the ids every invocation gets."""

from __future__ import annotations

import re
import uuid
from unittest import mock

from lambdad.invoke import invoker


def test_request_ids_are_version_4_uuids_and_trace_ids_xray_headers() -> None:
    random = bytes((i * 37 + i // 256) % 256 for i in range(36 * 256))
    with mock.patch.object(invoker.os, "urandom", return_value=random) as urandom:
        invoker._RANDOM.discard()
        ids = [invoker.new_ids() for _ in range(256)]
        invoker._RANDOM.discard()
    urandom.assert_called_once_with(invoker._RandomDigits.BATCH_BYTES)
    for n, (request_id, trace_id) in enumerate(ids):
        chunk = random[36 * n : 36 * (n + 1)]
        assert request_id == str(uuid.UUID(bytes=chunk[:16], version=4))
        assert re.fullmatch(
            rb"Root=1-[0-9a-f]{8}-%s;Parent=%s;Sampled=0"
            % (chunk[16:28].hex().encode(), chunk[28:].hex().encode()),
            trace_id,
        )


def test_random_digits_are_read_in_batches_and_never_reused() -> None:
    digits = invoker._RandomDigits()
    with mock.patch.object(invoker.os, "urandom", side_effect=[b"\x01" * 4096, b"\x02" * 4096]):
        taken = [digits.take(72) for _ in range(114)]
    assert taken[:113] == ["01" * 36] * 113  # 8,192 digits give 113 whole ids
    assert taken[113] == "02" * 36


def test_ids_differ_between_invocations() -> None:
    assert len({invoker.new_ids() for _ in range(100)}) == 100
