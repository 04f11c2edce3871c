"""`lambdad deploy`: create a function from a directory or a .zip, or update its code.

On update only the configuration flags given on the command line are changed (one
UpdateFunctionConfiguration call, after the code update has finished); `--env` replaces the
function's environment variables as a whole, as UpdateFunctionConfiguration does.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError, WaiterError
from rich.table import Table
from rich.text import Text

from lambdad.cli.client import CliError, Target, account_id, make_client
from lambdad.cli.output import err, human_bytes, out
from lambdad.cli.packaging import build_zip, collect, is_zip_file, read_zip
from lambdad.cli.upload import bytes_progress, upload_progress

DEFAULT_RUNTIME = "python3.12"
DEFAULT_HANDLER = "app.handler"
DEFAULT_ROLE_NAME = "lambdad-default"


@dataclass(frozen=True)
class DeployRequest:
    name: str
    source: Path
    runtime: str | None
    handler: str | None
    memory: int | None
    timeout: int | None
    environment: dict[str, str] | None
    role: str | None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> DeployRequest:
        return cls(
            name=args.name,
            source=Path(args.source),
            runtime=args.runtime,
            handler=args.handler,
            memory=args.memory,
            timeout=args.timeout,
            environment=dict(args.env) if args.env is not None else None,
            role=args.role,
        )

    def configuration(self) -> dict[str, Any]:
        """The configuration given on the command line, as UpdateFunctionConfiguration takes it."""
        values: dict[str, Any] = {
            "Runtime": self.runtime,
            "Handler": self.handler,
            "MemorySize": self.memory,
            "Timeout": self.timeout,
            "Role": self.role,
        }
        if self.environment is not None:
            values["Environment"] = {"Variables": self.environment}
        return {key: value for key, value in values.items() if value is not None}


def environment_variable(text: str) -> tuple[str, str]:
    """argparse type for `--env K=V`."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="DIR_OR_ZIP", help="a directory to zip, or a .zip")
    parser.add_argument("--name", required=True, help="function name")
    parser.add_argument("--runtime", help=f"on create default {DEFAULT_RUNTIME}")
    parser.add_argument("--handler", help=f"on create default {DEFAULT_HANDLER}")
    parser.add_argument("--memory", type=int, help="memory size in MB")
    parser.add_argument("--timeout", type=int, help="timeout in seconds")
    parser.add_argument(
        "--env",
        type=environment_variable,
        action="append",
        metavar="K=V",
        help="environment variable (repeat); replaces all of the function's variables",
    )
    parser.add_argument(
        "--role",
        help=f"execution role (on create default arn:aws:iam::<account>:role/{DEFAULT_ROLE_NAME})",
    )


def run(args: argparse.Namespace, target: Target) -> int:
    request = DeployRequest.from_args(args)
    package = load_package(request.source)
    lam = make_client(target, "lambda")
    existing = find_function(lam, request.name)
    if existing is None:
        create(lam, request, package, target)
        verb = "created"
    else:
        update(lam, request, package, existing)
        verb = "updated"
    show(verb, lam.get_function_configuration(FunctionName=request.name))
    return 0


def load_package(source: Path) -> bytes:
    if is_zip_file(source):
        return read_zip(source)
    files = collect(source)
    with bytes_progress() as progress:
        task = progress.add_task("zipping", total=sum(f.size for f in files))
        return build_zip(files, lambda n: progress.advance(task, n))


def find_function(lam: Any, name: str) -> dict[str, Any] | None:
    """The function's configuration, or None when it does not exist."""
    try:
        configuration: dict[str, Any] = lam.get_function(FunctionName=name)["Configuration"]
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
            return None
        raise
    return configuration


def create(lam: Any, request: DeployRequest, package: bytes, target: Target) -> None:
    parameters = request.configuration()
    parameters.setdefault("Runtime", DEFAULT_RUNTIME)
    parameters.setdefault("Handler", DEFAULT_HANDLER)
    parameters.setdefault("Role", f"arn:aws:iam::{account_id(target)}:role/{DEFAULT_ROLE_NAME}")
    with upload_progress(lam, ("CreateFunction",)):
        lam.create_function(FunctionName=request.name, Code={"ZipFile": package}, **parameters)
    wait(lam, "function_active_v2", request.name, "waiting for the function to become Active")


def update(lam: Any, request: DeployRequest, package: bytes, existing: dict[str, Any]) -> None:
    if existing.get("LastUpdateStatus") == "InProgress":
        wait(lam, "function_updated_v2", request.name, "waiting for an earlier update to finish")
    with upload_progress(lam, ("UpdateFunctionCode",)):
        lam.update_function_code(FunctionName=request.name, ZipFile=package)
    wait(lam, "function_updated_v2", request.name, "waiting for the code update")
    changes = request.configuration()
    if changes:
        lam.update_function_configuration(FunctionName=request.name, **changes)
        wait(lam, "function_updated_v2", request.name, "waiting for the configuration update")


# waiter -> the configuration fields holding the state it waits on, and the reason for it
WAITED_STATES = {
    "function_active_v2": ("State", "StateReason"),
    "function_updated_v2": ("LastUpdateStatus", "LastUpdateStatusReason"),
}


def wait(lam: Any, waiter: str, name: str, message: str) -> None:
    with err.status(message):
        try:
            lam.get_waiter(waiter).wait(FunctionName=name)
        except WaiterError as error:
            raise CliError(f"{name}: {_waiter_failure(waiter, error)}") from None


def _waiter_failure(waiter: str, error: WaiterError) -> str:
    state_field, reason_field = WAITED_STATES[waiter]
    configuration = (error.last_response or {}).get("Configuration", {})
    state, reason = configuration.get(state_field), configuration.get(reason_field)
    if state:
        return f"{state_field} {state}: {reason}" if reason else f"{state_field} {state}"
    return str(error)


def show(verb: str, configuration: dict[str, Any]) -> None:
    size = int(configuration.get("CodeSize", 0))
    rows = {
        "FunctionArn": configuration.get("FunctionArn", ""),
        "CodeSha256": configuration.get("CodeSha256", ""),
        "CodeSize": f"{size} bytes ({human_bytes(size)})",
        "Runtime": f"{configuration.get('Runtime')} (handler {configuration.get('Handler')})",
        "Memory": f"{configuration.get('MemorySize')} MB",
        "Timeout": f"{configuration.get('Timeout')} s",
        "State": f"{configuration.get('State')} ({configuration.get('LastUpdateStatus')})",
    }
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for label, value in rows.items():
        grid.add_row(label, Text(str(value)))
    out.print(Text.assemble((verb, "green"), " ", str(configuration.get("FunctionName"))))
    out.print(grid)
