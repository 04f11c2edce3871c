"""Where the CLI writes: results on stdout, progress, logs and errors on stderr."""

from __future__ import annotations

import sys
from typing import Any

import orjson
from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table

UNBOUNDED = 10_000  # columns: "as wide as it needs" for piped output

# Results (tables, payloads). soft_wrap: a long line stays one line when piped.
out = Console(soft_wrap=True)
# Progress bars, notes and errors, so that stdout stays parseable.
err = Console(stderr=True, soft_wrap=True)


def error(code: str, message: str) -> None:
    """An error as `Code: message`, code in bold red."""
    err.print(f"[bold red]{escape(code)}[/]: [red]{escape(message)}[/]", highlight=False)


def warning(message: str) -> None:
    err.print(f"[yellow]{escape(message)}[/]", highlight=False)


def note(message: str) -> None:
    err.print(f"[dim]{escape(message)}[/]", highlight=False)


def write_stdout(text: str) -> None:
    """Text exactly as given (no markup, no wrapping) on stdout."""
    sys.stdout.write(text)
    sys.stdout.flush()


def write_stderr(text: str) -> None:
    sys.stderr.write(text)
    sys.stderr.flush()


def print_payload(payload: bytes) -> None:
    """A response payload: pretty JSON when it is JSON, the bytes as they are otherwise."""
    try:
        document: Any = orjson.loads(payload)
    except orjson.JSONDecodeError:
        sys.stdout.buffer.write(payload)
        sys.stdout.buffer.flush()
        return
    pretty = orjson.dumps(document, option=orjson.OPT_INDENT_2).decode()
    if out.is_terminal:
        out.print_json(pretty)
    else:
        write_stdout(pretty + "\n")


def human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def print_table(table: Table) -> None:
    """On a terminal, fitted to its width; piped, at its natural width, so no cell is cut."""
    if out.is_terminal:
        out.print(table)
        return
    natural = Measurement.get(out, out.options.update_width(UNBOUNDED), table).maximum
    Console(width=max(natural, out.width)).print(table)
