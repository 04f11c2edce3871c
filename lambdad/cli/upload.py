"""Progress bars that track real work: bytes compressed, and request bytes handed to the socket.

For uploads, botocore signs the request as usual; just before it is sent (the ``before-send``
event) its body is swapped for a `ProgressBody` holding the same bytes. The HTTP layer
(urllib3) then reads the body block by block and writes each block to the socket, so every read
moves the bar by exactly the bytes about to be sent.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from lambdad.cli.output import err


class ProgressBody:
    """A seekable request body that reports its read position after every read."""

    def __init__(self, data: bytes, on_position: Callable[[int], None]) -> None:
        self._stream = io.BytesIO(data)
        self._on_position = on_position
        self.size = len(data)

    def read(self, size: int = -1) -> bytes:
        block = self._stream.read(size)
        self._on_position(self._stream.tell())
        return block

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        position = self._stream.seek(offset, whence)
        self._on_position(position)  # a retry rewinds: so does the bar
        return position

    def tell(self) -> int:
        return self._stream.tell()


def bytes_progress() -> Progress:
    return Progress(
        TextColumn("{task.description:<10}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err,
    )


@contextmanager
def upload_progress(client: Any, operations: tuple[str, ...]) -> Iterator[None]:
    """Show a bar for the request bodies of `operations` sent by `client` inside the block."""
    with bytes_progress() as progress:
        handler = _BodySwapper(progress)
        events = [f"before-send.lambda.{operation}" for operation in operations]
        for event in events:
            client.meta.events.register(event, handler)
        try:
            yield
        finally:
            for event in events:
                client.meta.events.unregister(event, handler)


class _BodySwapper:
    def __init__(self, progress: Progress) -> None:
        self._progress = progress

    def __call__(self, request: Any, **_: Any) -> None:
        body = request.body
        if isinstance(body, ProgressBody) or not isinstance(body, bytes | bytearray) or not body:
            return  # already swapped (a retry, rewound by botocore) or nothing to show
        task = self._progress.add_task("uploading", total=len(body))
        request.body = ProgressBody(bytes(body), self._mover(task))

    def _mover(self, task: TaskID) -> Callable[[int], None]:
        def move(position: int) -> None:
            self._progress.update(task, completed=position)

        return move
