"""`lambdad ls`: the functions, as a table."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from typing import Any

from rich.table import Table

from lambdad.cli.client import Target, make_client
from lambdad.cli.output import human_bytes, note, print_table

COLUMNS = ("Name", "Runtime", "Memory", "Timeout", "Code size", "Last modified")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser  # no options of its own


def run(args: argparse.Namespace, target: Target) -> int:
    functions = sorted(
        list_functions(make_client(target, "lambda")), key=lambda f: f["FunctionName"]
    )
    if not functions:
        note("no functions")
        return 0
    print_table(function_table(functions))
    return 0


def list_functions(lam: Any) -> Iterator[dict[str, Any]]:
    for page in lam.get_paginator("list_functions").paginate():
        yield from page.get("Functions", [])


def function_table(functions: list[dict[str, Any]]) -> Table:
    table = Table(*COLUMNS, header_style="bold")
    for column in table.columns[2:5]:
        column.justify = "right"
    for function in functions:
        table.add_row(*row(function))
    return table


def row(function: dict[str, Any]) -> tuple[str, ...]:
    return (
        str(function.get("FunctionName", "")),
        str(function.get("Runtime") or function.get("PackageType", "")),
        f"{function.get('MemorySize', '')} MB",
        f"{function.get('Timeout', '')} s",
        human_bytes(int(function.get("CodeSize", 0))),
        str(function.get("LastModified", "")),
    )
