"""A CloudWatch Logs subset (JSON 1.1, X-Amz-Target Logs_20140328.*) over the LogStore.

Enough for `aws logs tail`, `aws logs get-log-events`, boto3's logs client and `lambdad logs`:
DescribeLogGroups, DescribeLogStreams, GetLogEvents, FilterLogEvents, DeleteLogGroup.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

import orjson

from lambdad.observability.logs import LogEvent, LogStore

TARGET_PREFIX = "Logs_20140328."
Document = dict[str, Any]


class LogsApiError(Exception):
    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status

    def body(self) -> bytes:
        return orjson.dumps({"__type": self.code, "message": self.message})


class LogsApi:
    def __init__(self, store: LogStore, region: str) -> None:
        self._store = store
        self._region = region
        self._operations: dict[str, Callable[[str, Document], Document]] = {
            "DescribeLogGroups": self.describe_log_groups,
            "DescribeLogStreams": self.describe_log_streams,
            "GetLogEvents": self.get_log_events,
            "FilterLogEvents": self.filter_log_events,
            "DeleteLogGroup": self.delete_log_group,
        }

    def handle(self, account_id: str, target: str, body: bytes) -> tuple[int, bytes]:
        operation = target.removeprefix(TARGET_PREFIX)
        handler = self._operations.get(operation)
        try:
            if handler is None:
                raise LogsApiError("UnknownOperationException", f"Unknown operation {operation}")
            try:
                params = orjson.loads(body) if body else {}
            except orjson.JSONDecodeError:
                raise LogsApiError("SerializationException", "Invalid JSON body") from None
            return 200, orjson.dumps(handler(account_id, params))
        except LogsApiError as error:
            return error.status, error.body()

    def _require_group(self, account_id: str, params: Document) -> str:
        group = params.get("logGroupName") or _group_from_identifier(params)
        if not group:
            raise LogsApiError("InvalidParameterException", "logGroupName is required")
        if group not in self._store.groups(account_id):
            raise LogsApiError(
                "ResourceNotFoundException", "The specified log group does not exist."
            )
        return str(group)

    def describe_log_groups(self, account_id: str, params: Document) -> Document:
        prefix = params.get("logGroupNamePrefix", "")
        groups = [g for g in self._store.groups(account_id) if g.startswith(prefix)]
        return {
            "logGroups": [
                {
                    "logGroupName": g,
                    "arn": f"arn:aws:logs:{self._region}:{account_id}:log-group:{g}:*",
                    "storedBytes": 0,
                }
                for g in groups
            ]
        }

    def describe_log_streams(self, account_id: str, params: Document) -> Document:
        group = self._require_group(account_id, params)
        streams = self._store.streams(account_id, group)
        prefix = params.get("logStreamNamePrefix")
        if prefix:
            streams = [s for s in streams if s.name.startswith(prefix)]
        if params.get("orderBy") != "LastEventTime":
            streams.sort(key=lambda s: s.name)
        if params.get("descending"):
            streams.reverse()
        limit = int(params.get("limit") or 50)
        return {
            "logStreams": [
                {
                    "logStreamName": s.name,
                    "creationTime": s.first_event,
                    "firstEventTimestamp": s.first_event,
                    "lastEventTimestamp": s.last_event,
                    "lastIngestionTime": s.last_event,
                    "storedBytes": s.stored_bytes,
                }
                for s in streams[:limit]
            ]
        }

    def get_log_events(self, account_id: str, params: Document) -> Document:
        group = self._require_group(account_id, params)
        stream = params.get("logStreamName")
        if not stream:
            raise LogsApiError("InvalidParameterException", "logStreamName is required")
        events = _window(self._store.events(account_id, group, stream), params)
        limit = int(params.get("limit") or 10000)
        token = params.get("nextToken")
        if token:
            start = int(str(token).split("/")[-1] or 0)
        elif params.get("startFromHead"):
            start = 0
        else:  # AWS's default: the newest events that fit in the limit
            start = max(0, len(events) - limit)
        if str(token or "").startswith("b/"):
            start = max(0, start - limit)
        page = events[start : start + limit]
        return {
            "events": [_event(e) for e in page],
            "nextForwardToken": f"f/{start + len(page)}",
            "nextBackwardToken": f"b/{start}",
        }

    def filter_log_events(self, account_id: str, params: Document) -> Document:
        group = self._require_group(account_id, params)
        names = params.get("logStreamNames") or [
            s.name for s in self._store.streams(account_id, group)
        ]
        prefix = params.get("logStreamNamePrefix")
        if prefix:
            names = [n for n in names if n.startswith(prefix)]
        pattern = params.get("filterPattern") or ""
        found = []
        for name in names:
            stream_number = zlib.crc32(name.encode())
            events = self._store.events(account_id, group, name)
            for position, event in enumerate(events):
                if not _in_window(event, params):
                    continue
                if not pattern or pattern.strip('"') in event.message:
                    event_id = f"{event.timestamp:020d}{stream_number:010d}{position:010d}"
                    found.append((event, name, event_id))
        found.sort(key=lambda item: (item[0].timestamp, item[2]))
        start = int(params.get("nextToken") or 0)
        limit = int(params.get("limit") or 10000)
        page = found[start : start + limit]
        output: Document = {
            "events": [
                {**_event(e), "logStreamName": name, "eventId": event_id}
                for e, name, event_id in page
            ],
            "searchedLogStreams": [{"logStreamName": n, "searchedCompletely": True} for n in names],
        }
        if start + limit < len(found):
            output["nextToken"] = str(start + limit)
        return output

    def delete_log_group(self, account_id: str, params: Document) -> Document:
        self._store.delete_group(account_id, self._require_group(account_id, params))
        return {}


def _group_from_identifier(params: Document) -> str | None:
    identifier = params.get("logGroupIdentifier")
    if not identifier:
        return None
    text = str(identifier)
    if text.startswith("arn:"):
        text = text.split(":log-group:", 1)[-1].removesuffix(":*")
    return text


def _in_window(event: LogEvent, params: Document) -> bool:
    start, end = params.get("startTime"), params.get("endTime")
    return (start is None or event.timestamp >= int(start)) and (
        end is None or event.timestamp < int(end)
    )


def _window(events: list[LogEvent], params: Document) -> list[LogEvent]:
    return [e for e in events if _in_window(e, params)]


def _event(event: LogEvent) -> Document:
    return {
        "timestamp": event.timestamp,
        "message": event.message,
        "ingestionTime": event.ingestion_time,
    }
