"""`lambdad doctor`: is the server there, who are we, how well are functions isolated."""

from __future__ import annotations

import argparse
from typing import Any

from rich.table import Table
from rich.text import Text

from lambdad.cli.client import StatusRefused, Target, fetch_status
from lambdad.cli.output import out, print_table

OK = Text("✓ ", style="bold green")
BAD = Text("✗ ", style="bold red")
WARN = Text("! ", style="bold yellow")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser  # no options of its own


def run(args: argparse.Namespace, target: Target) -> int:
    try:
        status = fetch_status(target)  # unreachable: ServerUnreachable, exit 1
    except StatusRefused as refusal:
        line(OK, f"server reachable at {target.endpoint}")
        line(BAD, f"{_who(target)}: refused: {refusal.code}: {refusal.message}", "red")
        return 1
    line(OK, f"server reachable at {target.endpoint} (lambdad {status.get('version', '?')})")
    line(OK, f"{_who(target)}: accepted, account {status.get('accountId')}")
    line(OK, f"region {status.get('region')}")
    show_isolation(status.get("isolation") or {})
    show_runtimes(status.get("runtimes") or [])
    show_pools(status.get("pools") or {}, status.get("asyncQueue"))
    return 0


def line(mark: Text, message: str, style: str = "") -> None:
    out.print(Text.assemble(mark, (message, style)))


def _who(target: Target) -> str:
    credentials = target.credentials
    if credentials is None:
        return "no credentials (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or --data-dir)"
    return f"credentials {credentials.access_key_id} from {credentials.source}"


def show_isolation(isolation: dict[str, Any]) -> None:
    features: dict[str, bool] = isolation.get("features") or {}
    out.print(Text.assemble("\n", ("isolation: ", "bold"), str(isolation.get("backend"))))
    table = Table("feature", "state", header_style="bold")
    for name, enabled in features.items():
        state = Text("on", style="green") if enabled else Text("off", style="yellow")
        table.add_row(name.replace("_", " "), state)
    if features:
        print_table(table)
    missing = [name.replace("_", " ") for name, enabled in features.items() if not enabled]
    if missing or not features:
        line(
            WARN,
            "weaker isolation than AWS: " + (", ".join(missing) or "nothing enforced"),
            "yellow",
        )
    for note in isolation.get("notes") or []:
        line(WARN, str(note), "yellow")


def show_runtimes(runtimes: list[dict[str, Any]]) -> None:
    out.print(Text("\nruntimes", style="bold"))
    if not runtimes:
        line(WARN, "no runtime available: install an interpreter (python3, node)", "yellow")
        return
    table = Table("runtime", "family", "executable", header_style="bold")
    for runtime in runtimes:
        executable = runtime.get("executable")
        table.add_row(
            str(runtime.get("runtime")),
            str(runtime.get("family", "")),
            Text(str(executable))
            if executable
            else Text("the function's own bootstrap", style="dim"),
        )
    print_table(table)


def show_pools(pools: dict[str, dict[str, Any]], queue: dict[str, Any] | None) -> None:
    out.print(Text("\nenvironment pools", style="bold"))
    if not pools:
        out.print(Text("no environments yet", style="dim"))
    else:
        print_table(pool_table(pools))
    if queue:
        counts = ", ".join(f"{key} {value}" for key, value in queue.items())
        out.print(Text.assemble(("\nasync queue: ", "bold"), counts))


def pool_table(pools: dict[str, dict[str, Any]]) -> Table:
    columns = sorted({key for stats in pools.values() for key in stats}, key=_column_order)
    table = Table("function", *(c.replace("_", " ") for c in columns), header_style="bold")
    for key in list(table.columns)[1:]:
        key.justify = "right"
    for name, stats in sorted(pools.items()):
        table.add_row(Text(name), *(str(stats.get(c, "")) for c in columns))
    return table


def _column_order(column: str) -> tuple[int, str]:
    known = ("idle", "busy", "starting", "cold_starts", "warm_starts")
    return (known.index(column), column) if column in known else (len(known), column)
