"""`lambdad logs`: a function's log events (its LoggingConfig's LogGroup, by default
/aws/lambda/NAME), oldest first.

Without `--follow`, one FilterLogEvents query across all streams. With `--follow`, each stream
is read with its own GetLogEvents forward token. A stream only ever grows at its end, so a
token never skips nor repeats an event, even when an environment flushes a long invocation's
lines late, after other streams have moved past their timestamps.
"""

from __future__ import annotations

import argparse
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError
from rich.text import Text

from lambdad.cli.client import Target, make_client
from lambdad.cli.output import note, out, write_stdout

POLL_SECONDS = 0.5
DEFAULT_SINCE = "10m"
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
STREAMS_PER_POLL = 50  # DescribeLogStreams' maximum page; the most recently active streams


def since(text: str) -> int:
    """argparse type: `10m`, `2h`, `1d` ago, or an ISO 8601 time; epoch milliseconds."""
    match = re.fullmatch(r"(\d+)([smhdw])", text.strip())
    if match:
        seconds = int(match.group(1)) * UNIT_SECONDS[match.group(2)]
        return int((time.time() - seconds) * 1000)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a duration like 30s, 10m, 2h, 1d or an ISO 8601 time, got {text!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME", help="function name")
    parser.add_argument(
        "--follow", "-f", action="store_true", help="keep printing new events until Ctrl-C"
    )
    parser.add_argument(
        "--since",
        type=since,
        default=DEFAULT_SINCE,
        help=f"how far back to start: 30s, 10m, 2h, 1d or an ISO time (default {DEFAULT_SINCE})",
    )


def run(args: argparse.Namespace, target: Target) -> int:
    logs = make_client(target, "logs")
    group = log_group(make_client(target, "lambda"), args.name)
    if args.follow:
        return follow(StreamFollower(logs, group, args.since))
    try:
        for event in filter_events(logs, group, args.since):
            print_event(event)
    except ClientError as error:
        if not _is_not_found(error):
            raise
        make_client(target, "lambda").get_function(FunctionName=args.name)  # unknown: raises
        note(f"no log events for {args.name} yet (no log group {group})")
    return 0


def log_group(lam: Any, name: str) -> str:
    """The function's log group; a deleted function's logs stay in the default one's."""
    try:
        group: str = lam.get_function_configuration(FunctionName=name)["LoggingConfig"]["LogGroup"]
    except ClientError as error:
        if not _is_not_found(error):
            raise
        return f"/aws/lambda/{name}"
    return group


def filter_events(logs: Any, group: str, start_ms: int) -> Iterator[dict[str, Any]]:
    pages = logs.get_paginator("filter_log_events").paginate(logGroupName=group, startTime=start_ms)
    for page in pages:
        yield from page.get("events", [])


def follow(follower: StreamFollower) -> int:
    try:
        while True:
            for event in follower.poll():
                print_event(event)
            time.sleep(POLL_SECONDS)
    except KeyboardInterrupt:
        return 0


@dataclass
class StreamCursor:
    token: str | None = None  # GetLogEvents' nextForwardToken after the last event read
    signature: tuple[Any, ...] = ()  # what DescribeLogStreams said when last read


@dataclass
class StreamFollower:
    """New events of a log group since the last `poll`, across streams, oldest first."""

    logs: Any
    group: str
    start_ms: int
    # stream name -> where reading it stopped
    cursors: dict[str, StreamCursor] = field(default_factory=dict)

    def poll(self) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        for stream in self._active_streams():
            cursor = self.cursors.setdefault(stream["logStreamName"], StreamCursor())
            signature = _signature(stream)
            if signature != cursor.signature:
                events += self._read(stream["logStreamName"], cursor)
                cursor.signature = signature
        return sorted(events, key=lambda e: int(e["timestamp"]))

    def _active_streams(self) -> list[dict[str, Any]]:
        try:
            response = self.logs.describe_log_streams(
                logGroupName=self.group,
                orderBy="LastEventTime",
                descending=True,
                limit=STREAMS_PER_POLL,
            )
        except ClientError as error:
            if _is_not_found(error):
                return []  # not invoked yet: the group appears with the first log line
            raise
        streams: list[dict[str, Any]] = response.get("logStreams", [])
        return [s for s in streams if int(s.get("lastEventTimestamp", 0)) >= self.start_ms]

    def _read(self, stream: str, cursor: StreamCursor) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        while True:
            parameters: dict[str, Any] = {
                "logGroupName": self.group,
                "logStreamName": stream,
                "startTime": self.start_ms,
                "startFromHead": True,
            }
            if cursor.token is not None:
                parameters["nextToken"] = cursor.token
            response = self.logs.get_log_events(**parameters)
            page = response.get("events", [])
            events += [{**event, "logStreamName": stream} for event in page]
            token = response.get("nextForwardToken")
            done = not page or token == cursor.token
            cursor.token = token
            if done:
                return events


def _signature(stream: dict[str, Any]) -> tuple[Any, ...]:
    return (
        stream.get("lastEventTimestamp"),
        stream.get("lastIngestionTime"),
        stream.get("storedBytes"),
    )


def _is_not_found(error: ClientError) -> bool:
    return bool(error.response.get("Error", {}).get("Code") == "ResourceNotFoundException")


def print_event(event: dict[str, Any]) -> None:
    moment = datetime.fromtimestamp(int(event["timestamp"]) / 1000, UTC)
    stamp = moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    environment = _environment_id(str(event.get("logStreamName", "")))
    message = str(event.get("message", "")).rstrip("\n")
    if out.is_terminal:
        out.print(Text.assemble((stamp, "dim"), " ", (environment, "cyan"), " ", message))
    else:
        write_stdout(f"{stamp} {environment} {message}\n")


def _environment_id(stream: str) -> str:
    """`2024/05/01/[$LATEST]0f3c…` -> `0f3c1a2b`: enough to tell environments apart."""
    return stream.rsplit("]", 1)[-1][:8] or "-"
