"""The `lambdad` command."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from lambdad.cli.accounts import register as register_accounts
from lambdad.settings import DEFAULT_PORT, DEFAULT_REGION, Settings, default_data_dir


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"cannot be negative: {value}")
    return value


def _reserve_mb(text: str) -> int | None:
    return None if text == "auto" else _non_negative_int(text)


def _serve(args: argparse.Namespace) -> int:
    from lambdad.server import serve

    settings = Settings(
        data_dir=Path(args.data_dir) if args.data_dir else default_data_dir(dict(os.environ)),
        host=args.host,
        port=args.port,
        region=args.region,
        account_id=args.account_id,
        keep_alive_seconds=args.keep_alive,
        max_idle_environments=args.max_idle,
        staged_environments=args.staged,
        staged_memory_mb=args.staged_memory,
        min_free_memory_mb=args.min_free_memory,
        allow_any_credentials=args.allow_any_credentials,
        isolation=args.isolation,
        memory_merge=args.memory_merge,
        memory_reserve_mb=args.memory_reserve,
        async_retry_delays=tuple(float(x) for x in args.async_retry_delays.split(",") if x),
        account_concurrency=args.account_concurrency,
        min_unreserved_concurrency=args.min_unreserved,
        burst=args.burst,
        burst_window_seconds=args.burst_window,
        answer_polling_us=args.answer_polling,
    )
    serve(settings)
    return 0


def _build_runtimes(args: argparse.Namespace) -> int:
    from lambdad.runtime.toolchains import build_all

    for language, outcome in build_all().items():
        print(f"{language}: {outcome}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lambdad", description="AWS Lambda, self-hosted.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the API and the execution engine")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT)
    serve.add_argument(
        "--data-dir", default=None, help="default: $LAMBDAD_DATA_DIR or ~/.local/share/lambdad"
    )
    serve.add_argument("--region", default=DEFAULT_REGION)
    serve.add_argument(
        "--isolation",
        choices=("auto", "namespaces", "process"),
        default="auto",
        help="sandbox backend (auto: namespaces where the host allows them)",
    )
    serve.add_argument(
        "--memory-merge",
        choices=("auto", "on", "off"),
        default="auto",
        help="share identical memory pages between environments with the kernel's KSM "
        "(auto: where the host has it and lambdad is root; a timing side channel, see "
        "docs/security.md)",
    )
    serve.add_argument(
        "--memory-reserve",
        type=_reserve_mb,
        default=None,
        metavar="MB|auto",
        help="memory lambdad keeps written, and hands to environments as they start (auto: "
        "where the host reports free memory to a hypervisor, whose faults it saves them; "
        "sized for a --burst of environments, at most a sixth of the host's memory)",
    )
    serve.add_argument("--account-id", default="000000000000")
    serve.add_argument(
        "--allow-any-credentials",
        action="store_true",
        help="DEVELOPMENT ONLY: accept any well-formed signature by any access key",
    )
    serve.add_argument(
        "--keep-alive",
        type=float,
        default=300.0,
        help="seconds an idle execution environment is kept warm",
    )
    serve.add_argument(
        "--max-idle",
        type=int,
        default=1000,
        help="idle execution environments kept at most (least recently used stop first)",
    )
    serve.add_argument(
        "--staged",
        type=_non_negative_int,
        default=64,
        help="environments built ahead of functions' next cold starts, at most (0: none); "
        "their init still runs when the invocation arrives",
    )
    serve.add_argument(
        "--staged-memory",
        type=_non_negative_int,
        default=512,
        help="MB the staged environments may use together (the oldest make room)",
    )
    serve.add_argument(
        "--answer-polling",
        type=_non_negative_int,
        default=200,
        metavar="MICROSECONDS",
        help="how long lambdad may busy-poll a warm environment for its answer while that is "
        "the only invocation running, instead of sleeping until woken (0: never)",
    )
    serve.add_argument(
        "--min-free-memory",
        type=int,
        default=256,
        help="MB of available host memory under which idle environments are evicted (LRU)",
    )
    serve.add_argument(
        "--async-retry-delays",
        default="60,120",
        help="seconds before each retry of a failed Event invocation",
    )
    serve.add_argument(
        "--account-concurrency",
        type=int,
        default=1000,
        help="invocations running at once per account (AWS's ConcurrentExecutions)",
    )
    serve.add_argument(
        "--min-unreserved",
        type=int,
        default=100,
        help="concurrency that reservations must leave unreserved, per account",
    )
    serve.add_argument(
        "--burst",
        type=int,
        default=1000,
        help="new execution environments a function may start per --burst-window",
    )
    serve.add_argument(
        "--burst-window",
        type=float,
        default=10.0,
        help="seconds over which --burst new environments are allowed",
    )
    serve.set_defaults(func=_serve)
    build = commands.add_parser(
        "build-runtimes", help="build the Java and .NET runtimes (where their toolchains exist)"
    )
    build.set_defaults(func=_build_runtimes)
    register_accounts(commands)
    try:
        from lambdad.cli.commands import register
    except ImportError:
        pass
    else:
        register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
