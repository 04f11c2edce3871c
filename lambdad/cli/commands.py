"""The client subcommands of `lambdad` (deploy, invoke, logs, ls, doctor).

They reach the server only through its HTTP API, like any AWS client. Every failure ends as
one red line on stderr and exit status 1: AWS errors as `Code: message`, the rest as what the
user can do about it.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from lambdad.cli import deploy, doctor, invoke, logs, ls
from lambdad.cli.client import (
    CliError,
    StatusRefused,
    Target,
    add_target_arguments,
    resolve_target,
)
from lambdad.cli.output import error

Command = Callable[[argparse.Namespace, Target], int]

# name -> (module with add_arguments(parser) and run(args, target), one-line help)
COMMANDS: dict[str, tuple[ModuleType, str]] = {
    "deploy": (deploy, "create or update a function from a directory or a .zip"),
    "invoke": (invoke, "invoke a function and print its response"),
    "logs": (logs, "print a function's log events"),
    "ls": (ls, "list functions"),
    "doctor": (doctor, "check the server: reachability, credentials, isolation, runtimes"),
}


def register(subparsers: Any) -> None:
    """Add the client subcommands to `lambdad`'s subparsers."""
    for name, (module, help_text) in COMMANDS.items():
        parser = subparsers.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(parser)
        add_target_arguments(parser)
        parser.set_defaults(func=_entry(module.run))


def _entry(command: Command) -> Callable[[argparse.Namespace], int]:
    def entry(args: argparse.Namespace) -> int:
        return run_guarded(command, args)

    return entry


def run_guarded(command: Command, args: argparse.Namespace) -> int:
    """Run `command`, turning every expected failure into a red message and exit status 1."""
    try:
        target = resolve_target(args, os.environ)
        return command(args, target)
    except ClientError as exc:
        details = exc.response.get("Error", {})
        error(str(details.get("Code") or "Error"), str(details.get("Message") or exc))
    except (EndpointConnectionError, ConnectTimeoutError) as exc:
        error("ServerUnreachable", f"lambdad is not reachable: {exc}")
    except ReadTimeoutError as exc:
        error("ReadTimeout", str(exc))
    except BotoCoreError as exc:
        error(type(exc).__name__, str(exc))
    except StatusRefused as exc:
        error(exc.code, exc.message)
    except CliError as exc:
        error("Error" if type(exc) is CliError else type(exc).__name__, str(exc))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly, like Unix tools
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 1
