"""Function logs as CloudWatch Logs would hold them: groups, streams, timestamped events.

Each execution environment writes one stream (AWS: ``YYYY/MM/DD/[$LATEST]<32 hex>``). Events are
appended to a file per stream (one JSON array ``[timestamp_ms, message]`` per line) through a
buffered writer that is flushed at the end of every invocation, so the hot path never waits for
the disk beyond a buffered write.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote, unquote

import orjson


def new_stream_name(version: str, now: float | None = None) -> str:
    """AWS's shape: the UTC day, the version, 32 random hex digits (made for every environment
    started: no datetime or UUID objects, which cost ~40 us there)."""
    day = time.strftime("%Y/%m/%d", time.gmtime(time.time() if now is None else now))
    return f"{day}/[{version}]{os.urandom(16).hex()}"


# Writers batch invocations' log lines into one write per this many seconds at most.
FLUSH_DELAY = 0.05


@dataclass(frozen=True)
class LogEvent:
    timestamp: int  # ms since the epoch
    message: str
    ingestion_time: int


@dataclass(frozen=True)
class StreamInfo:
    name: str
    first_event: int
    last_event: int
    stored_bytes: int


class LogStream:
    """The writer of one stream. Not thread-safe: used from the event loop only.

    Its file is created at the first flush, not when the stream is opened, and by the store's
    file thread, not the event loop: creating a file costs ~0.6 ms of CPU on this VM's ext4
    (the inode allocator), which would otherwise hold the loop — once per environment, ~12%
    of the loop's time in a burst. Events written meanwhile wait in memory; a reader's flush
    waits for the file."""

    def __init__(
        self,
        path: Path,
        group: str,
        name: str,
        forget: Callable[[LogStream], None],
        files: Executor,
    ) -> None:
        self.path = path
        self.group = group
        self.name = name
        self._store_forget = forget
        self._files = files
        self._flush_handle: asyncio.TimerHandle | None = None
        self._file: BinaryIO | None = None
        self._creating: Future[BinaryIO] | None = None
        self._pending: bytearray | None = bytearray()  # before the file exists; None once closed
        self._head = b""  # what the file is being created with

    def write(self, message: str, timestamp_ms: int | None = None) -> None:
        ts = timestamp_ms if timestamp_ms is not None else int(time.time() * 1000)
        line = orjson.dumps([ts, message], option=orjson.OPT_APPEND_NEWLINE)
        if self._file is not None:
            self._file.write(line)
        elif self._pending is not None:
            self._pending += line

    def _adopt_file(self, wait: bool) -> bool:
        """Whether the file exists now: its creation starts here (with what is pending); with
        `wait`, this waits for it."""
        if self._pending is None:
            return False  # closed
        if self._creating is None and not self._pending:
            return False  # nothing written yet: a stream exists from its first event (as AWS's)
        if self._creating is None:
            self._head = bytes(self._pending)
            self._pending.clear()
            self._creating = self._files.submit(_create_file, self.path, self._head)
        if not wait and not self._creating.done():
            return False
        if self._creating.cancel():
            # A reader waits and the file thread (see LogStore) has not begun this one: the
            # caller makes it, rather than wait behind the thread's backlog at its priority.
            self._file = _create_file(self.path, self._head)
        else:
            self._file = self._creating.result()
        self._head = b""
        self._creating = None
        self._file.write(self._pending)
        self._pending = None
        return True

    def flush(self, wait: bool = True) -> None:
        """Write what is buffered; without `wait` (the timer), a file still being created
        leaves it for the next flush."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if self._file is None and not self._adopt_file(wait):
            if not wait and (self._creating is not None or self._pending):
                self.flush_soon()
            return
        assert self._file is not None
        self._file.flush()

    def flush_soon(self) -> None:
        """Flush within FLUSH_DELAY seconds (one write for a burst of invocations).

        Readers through the LogStore flush first, so they never miss an event."""
        if self._flush_handle is None and (self._file is not None or self._pending is not None):
            loop = asyncio.get_running_loop()
            self._flush_handle = loop.call_later(FLUSH_DELAY, self.flush, False)

    def close(self) -> None:
        self.flush()
        self._store_forget(self)
        self._pending = None
        if self._file is not None:
            self._file.close()
            self._file = None


def _create_file(path: Path, head: bytes) -> BinaryIO:
    path.parent.mkdir(parents=True, exist_ok=True)
    file = open(path, "ab")  # noqa: SIM115 - lives as long as the stream
    file.write(head)
    return file


class LogStore:
    """All groups and streams of all accounts, under one directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        # path -> writer still open (environments alive); readers flush these first
        self._open: dict[Path, LogStream] = {}
        # Creates the streams' files (see LogStream); one thread keeps them in order. It runs
        # at the lowest priority: in a burst, creating a file per new environment took ~5% of
        # the machine's CPU (ext4's inode allocator), which cold starts are waiting for, and
        # the events wait in memory meanwhile (a reader makes the file itself).
        self._files = ThreadPoolExecutor(
            1, thread_name_prefix="lambdad-logs", initializer=_lowest_priority
        )

    def _forget(self, stream: LogStream) -> None:
        self._open.pop(stream.path, None)

    def _flush_open(self, directory: Path) -> None:
        for path, stream in list(self._open.items()):
            if path.parent == directory:
                stream.flush()

    def _group_dir(self, account_id: str, group: str) -> Path:
        return self.root / account_id / quote(group, safe="")

    def open_stream(self, account_id: str, group: str, name: str) -> LogStream:
        path = self._group_dir(account_id, group) / (quote(name, safe="") + ".jsonl")
        stream = LogStream(path, group, name, self._forget, self._files)
        self._open[path] = stream
        return stream

    def groups(self, account_id: str) -> list[str]:
        for stream in list(self._open.values()):  # their files (and groups) may not exist yet
            stream.flush()
        base = self.root / account_id
        if not base.is_dir():
            return []
        return sorted(unquote(p.name) for p in base.iterdir() if p.is_dir())

    def streams(self, account_id: str, group: str) -> list[StreamInfo]:
        directory = self._group_dir(account_id, group)
        self._flush_open(directory)
        if not directory.is_dir():
            return []
        infos = []
        for path in directory.glob("*.jsonl"):
            stat = path.stat()
            first = last = int(stat.st_mtime * 1000)
            events = list(_read(path))
            if events:
                first, last = events[0].timestamp, events[-1].timestamp
            infos.append(StreamInfo(unquote(path.stem), first, last, stat.st_size))
        return sorted(infos, key=lambda s: s.last_event)

    def events(self, account_id: str, group: str, stream: str) -> list[LogEvent]:
        path = self._group_dir(account_id, group) / (quote(stream, safe="") + ".jsonl")
        writer = self._open.get(path)
        if writer is not None:
            writer.flush()
        return list(_read(path)) if path.exists() else []

    def close(self) -> None:
        """At shutdown: close the streams still open (what they buffered is written), then end
        the file thread."""
        for stream in list(self._open.values()):
            stream.close()
        self._files.shutdown(wait=True)

    def delete_group(self, account_id: str, group: str) -> None:
        directory = self._group_dir(account_id, group)
        if directory.is_dir():
            for path in directory.iterdir():
                path.unlink(missing_ok=True)
            os.rmdir(directory)


def _lowest_priority() -> None:
    """This thread yields the CPU to any other of nice 0 (Linux: a thread's own nice value)."""
    os.setpriority(os.PRIO_PROCESS, 0, 19)


def _read(path: Path) -> Iterator[LogEvent]:
    ingestion = int(path.stat().st_mtime * 1000)
    with open(path, "rb") as handle:
        for line in handle:
            if not line.endswith(b"\n"):
                break  # a write in progress
            ts, message = orjson.loads(line)
            yield LogEvent(ts, message, max(ts, ingestion))
