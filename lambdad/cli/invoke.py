"""`lambdad invoke`: call a function, print its response payload."""

from __future__ import annotations

import argparse
import base64
import sys
from pathlib import Path
from typing import Any

import orjson

from lambdad.cli.client import INVOKE_READ_TIMEOUT, CliError, Target, make_client
from lambdad.cli.output import error, note, print_payload, write_stderr

INVOCATION_TYPES = ("RequestResponse", "Event", "DryRun")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME", help="function name or ARN")
    parser.add_argument(
        "--payload", help="the event as JSON, or @FILE to read it from a file (@- for stdin)"
    )
    parser.add_argument("--qualifier", help="version or alias")
    parser.add_argument(
        "--type", dest="invocation_type", choices=INVOCATION_TYPES, default="RequestResponse"
    )
    parser.add_argument(
        "--log", action="store_true", help="print the end of the invocation's log to stderr"
    )


def run(args: argparse.Namespace, target: Target) -> int:
    # One attempt: a retried Invoke would run the function twice.
    lam = make_client(target, "lambda", read_timeout=INVOKE_READ_TIMEOUT, attempts=1)
    response = lam.invoke(**invoke_parameters(args))
    if args.log:
        print_log(response.get("LogResult"))
    body: bytes = response["Payload"].read()
    if response["StatusCode"] != 200:
        note(f"{args.invocation_type}: HTTP {response['StatusCode']}")
    if body:
        print_payload(body)
    function_error = response.get("FunctionError")
    if function_error:
        error(f"FunctionError ({function_error})", error_summary(body))
        return 1
    return 0


def invoke_parameters(args: argparse.Namespace) -> dict[str, Any]:
    parameters: dict[str, Any] = {
        "FunctionName": args.name,
        "InvocationType": args.invocation_type,
    }
    payload = read_payload(args.payload)
    if payload is not None:
        parameters["Payload"] = payload
    if args.qualifier:
        parameters["Qualifier"] = args.qualifier
    if args.log:
        parameters["LogType"] = "Tail"
    return parameters


def read_payload(value: str | None) -> bytes | None:
    if value is None:
        return None
    if not value.startswith("@"):
        return value.encode()
    location = value[1:]
    if location == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(location).read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read the payload file {location}: {exc.strerror}") from None


def print_log(log_result: str | None) -> None:
    if not log_result:
        note("no log returned (only RequestResponse invocations return one)")
        return
    text = base64.b64decode(log_result).decode(errors="replace")
    write_stderr(text if text.endswith("\n") else text + "\n")


def error_summary(body: bytes) -> str:
    """`errorType: errorMessage` from the runtime's error document, else the raw body."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode(errors="replace")[:500]
    if not isinstance(document, dict):
        return str(document)[:500]
    kind, message = document.get("errorType"), document.get("errorMessage")
    if kind and message:
        return f"{kind}: {message}"
    return str(message or kind or document)
