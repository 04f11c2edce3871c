"""Baseline A's server: an echo handler on lambdad's own HTTP stack (lambdad.api.http_server:
httptools on uvloop, one write per response), so the ratio measures lambdad's work, not a
difference of HTTP servers.

Run as a separate process: `python -m bench.echo_server --port PORT`.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence

import uvloop

from lambdad.api.http_server import HttpRequest, HttpResponse, serve

HEADERS = [("content-type", "application/json")]


async def echo(request: HttpRequest) -> HttpResponse:
    """Answer every HTTP request with its own body as JSON."""
    return HttpResponse(200, HEADERS, request.body)


def too_large() -> HttpResponse:
    return HttpResponse(413, HEADERS, b"{}")


async def _main(port: int) -> None:
    await serve(echo, "127.0.0.1", port, 70_167_211, too_large)
    await asyncio.Event().wait()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="loopback HTTP echo server (benchmark baseline)")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    uvloop.run(_main(args.port))


if __name__ == "__main__":
    main()
