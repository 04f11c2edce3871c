"""Test helper: an asyncio transport that records what a protocol writes."""

from __future__ import annotations

from typing import Any


class RecordingTransport:
    """Collects every write; ``close`` only marks it closing."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str) -> Any:
        return None
