"""Sandbox networking through the API: a function reaches outside hosts (through NAT) and nothing
of the host it runs on.

Skipped unless the server runs the network pool (its status document has a "network" key).
The "outside host" is a test-owned namespace behind its own veth; all traffic stays on this
machine.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import Server, create_function
from tests.unit.test_network import (
    OutsideHost,
    host_addresses,
    listen,
    outside_host,
    serving,
    socket_in,
)

FUNCTION = r"""
import socket
import struct


def default_gateway():
    with open("/proc/net/route") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            if fields[1] == "00000000":
                return socket.inet_ntoa(struct.pack("<L", int(fields[2], 16)))
    return None


def talk(host, port, timeout):
    try:
        with socket.create_connection((host, port), timeout=timeout) as conn:
            chunks = []
            while True:
                chunk = conn.recv(4096)
                if not chunk:
                    return {"ok": True, "reply": b"".join(chunks).decode()}
                chunks.append(chunk)
    except OSError as exc:
        return {"ok": False, "error": type(exc).__name__}


def handler(event, context):
    results = []
    for host, port in event["targets"]:
        host = default_gateway() if host == "gateway" else host
        results.append(dict(talk(host, port, event.get("timeout", 1.5)), host=host, port=port))
    return results
"""


@pytest.fixture(scope="module")
def wired(server: Server) -> Server:
    if "network" not in server.status():
        pytest.skip("network pool not wired")
    return server


@pytest.fixture(scope="module")
def outside(wired: Server) -> Iterator[OutsideHost]:
    with outside_host() as host:
        yield host


@pytest.fixture(scope="module")
def caller(wired: Server, lam: Any) -> str:
    return create_function(lam, {"app.py": FUNCTION}, Timeout=30)


def connect(
    lam: Any, name: str, targets: list[tuple[str, int]], timeout: float = 1.5
) -> list[dict[str, Any]]:
    """Each target's outcome; `timeout` bounds each connect (short where it must fail)."""
    event = {"targets": targets, "timeout": timeout}
    response = lam.invoke(FunctionName=name, Payload=json.dumps(event).encode())
    body = json.loads(response["Payload"].read())
    assert response.get("FunctionError") is None, body
    return list(body)


def test_function_reaches_an_outside_host_through_nat(
    lam: Any, caller: str, outside: OutsideHost
) -> None:
    # A generous timeout where the connection must succeed: a freshly made veth can drop the
    # first SYN, and TCP sends the next one only after a second.
    with serving(listen(socket_in(outside.path))) as server:
        (result,) = connect(lam, caller, [(outside.address, server.port)], timeout=10)
    assert result["ok"] is True, result
    assert result["reply"] == f"hello {outside.host_address}"  # the host's address: NAT
    assert server.peers == [outside.host_address]


def test_function_cannot_reach_the_hosts_loopback(lam: Any, caller: str) -> None:
    with serving(listen(socket.socket(), "127.0.0.1")) as server:
        (result,) = connect(lam, caller, [("127.0.0.1", server.port)])
    assert result["ok"] is False, result
    assert server.peers == []


def test_function_cannot_reach_any_host_address(
    lam: Any, caller: str, outside: OutsideHost
) -> None:
    with serving(listen(socket.socket())) as server:
        addresses = ["gateway", outside.host_address, *host_addresses()]
        results = connect(lam, caller, [(address, server.port) for address in addresses])
    assert [r for r in results if r["ok"]] == []
    assert results[0]["host"] is not None  # the environment has a default gateway
    assert server.peers == []
