"""NetworkPool: slots reach outside hosts through NAT, and nothing of the host nor each other.

The tests that build namespaces need root, nft and network namespaces (skipped otherwise with
the reason). Traffic stays on this machine: an "outside host" is a test-owned namespace behind
its own veth. A socket created inside a namespace keeps it, so "connect from inside the slot"
means: make the socket on a throw-away thread that has setns()'d into the slot, then connect.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import errno
import ipaddress
import itertools
import json
import os
import random
import select
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from lambdad.sandbox import network
from lambdad.sandbox.network import (
    NetworkPool,
    NetworkPoolError,
    NetworkSlot,
    NetworkStatistics,
    PoolState,
)
from tests.unit.fake_runtime_api import run_check

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
_libc = ctypes.CDLL(None, use_errno=True)
_counter = itertools.count()

HOST_READY, HOST_REASON = NetworkPool.probe()
needs_host = pytest.mark.skipif(
    not HOST_READY, reason=f"needs root, nft and network namespaces: {HOST_REASON}"
)


# helpers (tests/e2e/test_sandbox_network.py uses them too) ------------------------------------
def sh(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")
    return done.stdout


def free_network(parent: str, prefixlen: int) -> str:
    """A random subnet of parent that no host route and no running pool's table overlaps."""
    routes = json.loads(sh("ip", "-j", "-4", "route", "show", "table", "all"))
    used = [
        ipaddress.ip_network(r["dst"], strict=False)
        for r in routes
        if r.get("dst", "default") not in ("default", "broadcast")
        and r.get("dst", "").count(".") == 3
    ]
    used += [subnet for _, subnet in network._claimed_subnets(exclude="")]
    candidates = list(ipaddress.ip_network(parent).subnets(new_prefix=prefixlen))
    for candidate in random.sample(candidates, min(len(candidates), 64)):
        if not any(candidate.overlaps(u) for u in used):
            return str(candidate)
    raise RuntimeError(f"no free /{prefixlen} in {parent}")


def in_namespace(netns_path: str, work: Callable[[], T]) -> T:
    """work()'s result, run on a throw-away thread inside the network namespace at netns_path
    (setns acts on the calling thread only; the thread's namespace dies with it)."""
    done: list[T | BaseException] = []

    def run() -> None:
        try:
            target = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc.setns(target, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns {netns_path}")
            finally:
                os.close(target)
            done.append(work())
        except BaseException as exc:
            done.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if isinstance(done[0], BaseException):
        raise done[0]
    return done[0]


def socket_in(netns_path: str, kind: int = socket.SOCK_STREAM) -> socket.socket:
    """An IPv4 socket created inside the network namespace at netns_path."""
    return in_namespace(netns_path, lambda: socket.socket(socket.AF_INET, kind))


def fetch(netns_path: str, host: str, port: int, timeout: float = 3.0) -> str:
    """Connect from inside a namespace and read the reply until the server closes."""
    with socket_in(netns_path) as sock:
        sock.settimeout(timeout)
        sock.connect((host, port))
        chunks = []
        while chunk := sock.recv(4096):
            chunks.append(chunk)
    return b"".join(chunks).decode()


def reachable(
    netns_path: str | None, targets: list[tuple[str, int]], wait: float = 1.0
) -> list[tuple[str, int]]:
    """Which targets accept a TCP connection from the namespace (None: the host) within wait."""
    sockets = {}
    connected = []
    for target in targets:
        sock = socket_in(netns_path) if netns_path else socket.socket()
        sock.setblocking(False)
        code = sock.connect_ex(target)
        if code == 0:
            connected.append(target)
        if code == errno.EINPROGRESS:
            sockets[sock] = target
        else:
            sock.close()
    deadline = time.monotonic() + wait
    while sockets and time.monotonic() < deadline:
        _, writable, _ = select.select([], list(sockets), [], deadline - time.monotonic())
        for sock in writable:
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                connected.append(sockets[sock])
            del sockets[sock]
            sock.close()
    for sock in sockets:
        sock.close()
    return connected


def listen(sock: socket.socket, address: str = "0.0.0.0") -> socket.socket:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((address, 0))
    sock.listen(16)
    return sock


class TcpServer:
    """Answers every connection with 'hello <peer address>' and records the peers."""

    def __init__(self, listener: socket.socket) -> None:
        self.listener = listener
        self.port: int = listener.getsockname()[1]
        self.peers: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        listener.settimeout(0.05)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, (peer, _) = self.listener.accept()
            except (TimeoutError, OSError):
                continue
            with conn:
                self.peers.append(peer)
                conn.sendall(f"hello {peer}".encode())

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.listener.close()


@contextlib.contextmanager
def serving(listener: socket.socket) -> Iterator[TcpServer]:
    server = TcpServer(listener)
    try:
        yield server
    finally:
        server.close()


@dataclass
class OutsideHost:
    """A test-owned namespace standing for a machine beyond the host, behind its own veth."""

    netns: str
    interface: str  # the host side of its veth (not lbd*: the pool treats it as the uplink)
    host_address: str  # the host's address on that link: what the outside sees after NAT
    address: str  # the outside machine's address
    path: str = field(init=False)

    def __post_init__(self) -> None:
        self.path = f"/run/netns/{self.netns}"


@contextlib.contextmanager
def outside_host() -> Iterator[OutsideHost]:
    suffix = f"{os.getpid() % 100000}x{next(_counter)}"
    # Outside the 10.200-10.239 range lambdad servers pick their pools from.
    network_ = ipaddress.ip_network(free_network("172.30.0.0/16", 30))
    host_ip, outside_ip = str(network_[1]), str(network_[2])
    outside = OutsideHost(f"lbdtest-out-{suffix}", f"lto{suffix}", host_ip, outside_ip)
    try:
        sh("ip", "netns", "add", outside.netns)
        sh("ip", "link", "add", outside.interface, "type", "veth", "peer", "name", "eth0",
           "netns", outside.netns)  # fmt: skip
        sh("ip", "addr", "add", f"{host_ip}/30", "dev", outside.interface)
        sh("ip", "link", "set", outside.interface, "up")
        sh("ip", "-n", outside.netns, "addr", "add", f"{outside_ip}/30", "dev", "eth0")
        sh("ip", "-n", outside.netns, "link", "set", "eth0", "up")
        sh("ip", "-n", outside.netns, "link", "set", "lo", "up")
        yield outside
    finally:
        subprocess.run(["ip", "link", "del", outside.interface], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", outside.netns], capture_output=True, check=False)


def host_addresses() -> list[str]:
    """Every IPv4 address of the host except loopback's and sandbox gateways (lbd*)."""
    found = []
    for link in json.loads(sh("ip", "-j", "-4", "addr")):
        if link["ifname"].startswith("lbd"):
            continue
        for info in link.get("addr_info", []):
            if not info["local"].startswith("127."):
                found.append(info["local"])
    return found


def leftovers(tag: str) -> dict[str, list[str]]:
    """What a pool with this tag left on the host (its slots' namespaces are not bound under
    /run/netns: a live one shows as its veth, and as a descriptor in `held_namespaces`)."""
    namespaces = [line.split()[0] for line in sh("ip", "netns", "list").splitlines() if line]
    links = [link["ifname"] for link in json.loads(sh("ip", "-j", "link"))]
    tables = [line.split()[-1] for line in sh("nft", "list", "tables").splitlines() if line]
    return {
        "netns": [n for n in namespaces if n.startswith(f"lambdad-{tag}-")],
        "links": [n for n in links if n.startswith(f"lbd{tag}-")],
        "tables": [t for t in tables if t == f"lambdad_{tag}"],
    }


def held_namespaces() -> list[str]:
    """Network namespaces this process holds open other than its own (pool slots)."""
    own = os.readlink("/proc/self/ns/net")
    held = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith("net:[") and target != own:
                held.append(target)
    return held


def sweep(tag: str) -> None:
    """Remove whatever a failed test left behind."""
    found = leftovers(tag)
    for link in found["links"]:
        subprocess.run(["ip", "link", "del", link], capture_output=True, check=False)
    for name in found["netns"]:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
    for table in found["tables"]:
        subprocess.run(["nft", "delete", "table", "inet", table], capture_output=True, check=False)


def new_tag() -> str:
    return f"u{os.getpid() % 1000}{next(_counter)}"[:7]


@contextlib.asynccontextmanager
async def running_pool(**options: Any) -> AsyncIterator[NetworkPool]:
    """A started pool on a free subnet; closed and swept afterwards, even on failure."""
    options.setdefault("tag", new_tag())
    # outside the 10.200-10.239 range lambdad servers (other tests') take their pools from
    options.setdefault("subnet", free_network("10.244.0.0/16", 24))
    options.setdefault("target_idle", 2)
    forward_before = IP_FORWARD.read_text()
    pool = NetworkPool(**options)
    try:
        await pool.start()
        yield pool
    finally:
        await pool.close()
        left_table = leftovers(pool.tag)["tables"]
        sweep(pool.tag)
        if left_table and not lambdad_tables():  # close() failed to restore it
            IP_FORWARD.write_text(forward_before)


def lambdad_tables() -> list[str]:
    return [t for t in sh("nft", "list", "tables").split() if t.startswith("lambdad_")]


async def wait_until(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def conntrack_sources(address: str) -> int:
    """How many of the host's conntrack entries started from address."""
    if shutil.which("conntrack"):
        done = subprocess.run(
            ["conntrack", "-L", "-s", address], capture_output=True, text=True, check=False
        )
        return sum(1 for line in done.stdout.splitlines() if f"src={address}" in line)
    from pyroute2.conntrack import Conntrack  # type: ignore[import-untyped]
    from pyroute2.netlink.nfnetlink.nfctsocket import NFCTAttrTuple  # type: ignore[import-untyped]

    def count() -> int:
        with Conntrack() as ct:
            return len(list(ct.dump_entries(tuple_orig=NFCTAttrTuple(saddr=address))))

    # pyroute2's synchronous API cannot run inside the test's event loop: use a thread.
    with concurrent.futures.ThreadPoolExecutor(1) as thread:
        return thread.submit(count).result()


@pytest.fixture(scope="module")
def outside() -> Iterator[OutsideHost]:
    if not HOST_READY:
        pytest.skip(f"needs root, nft and network namespaces: {HOST_REASON}")
    with outside_host() as host:
        yield host


def ip_of(slot: NetworkSlot) -> str:
    return slot.address.split("/")[0]


# without root --------------------------------------------------------------------------------
def test_each_slot_gets_a_30_and_names_from_the_tag() -> None:
    plan = network._AddressPlan(ipaddress.IPv4Network("10.200.0.0/16"), "4242")
    assert plan.slot(5, 9) == NetworkSlot(
        name="lambdad-4242-5",
        path=f"/proc/{os.getpid()}/fd/9",
        address="10.200.0.22/30",
        gateway="10.200.0.21",
        interface="lbd4242-5",
    )
    assert plan.capacity == 16384


def test_capacity_is_bounded_by_the_subnet_and_interface_names() -> None:
    assert network._AddressPlan(ipaddress.IPv4Network("10.0.0.0/28"), "a").capacity == 4
    long_tag = network._AddressPlan(ipaddress.IPv4Network("10.0.0.0/8"), "1234567")
    assert long_tag.capacity == 10_000
    assert len(long_tag.slot(9999).interface) == 15
    with pytest.raises(ValueError):
        long_tag.slot(10_000)


@pytest.mark.parametrize(
    "options", [{"tag": "Bad!"}, {"tag": "12345678"}, {"subnet": "10.0.0.0/31"}]
)
def test_bad_tags_and_subnets_are_refused(options: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        NetworkPool(**options)


def test_ruleset_drops_input_and_cross_traffic_and_masquerades_the_subnet() -> None:
    rules = network._ruleset("lambdad_x", "10.200.0.0/16", "0")
    assert rules.startswith("add table inet lambdad_x\ndelete table inet lambdad_x\n")
    assert 'comment "lambdad: ip_forward was 0"' in rules
    assert 'iifname "lbd*" drop' in rules
    assert 'iifname "lbd*" oifname "lbd*" drop' in rules
    assert 'ip saddr 10.200.0.0/16 oifname != "lbd*" masquerade' in rules


def test_probe_explains_missing_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    ready, reason = NetworkPool.probe()
    assert not ready and "root" in reason


async def test_a_pool_that_was_not_started_hands_out_nothing() -> None:
    pool = NetworkPool(tag="idle")
    assert pool.statistics() == NetworkStatistics(0, 0, 0, 0.0)
    with pytest.raises(NetworkPoolError, match="new"):
        await pool.acquire()
    await pool.close()
    assert pool.state is PoolState.CLOSED


# with root: reachability ---------------------------------------------------------------------
@needs_host
async def test_slot_reaches_an_outside_host_through_nat(outside: OutsideHost) -> None:
    async with running_pool() as pool:
        slot = await pool.acquire()
        with serving(listen(socket_in(outside.path))) as server:
            reply = await asyncio.to_thread(fetch, slot.path, outside.address, server.port)
        assert reply == f"hello {outside.host_address}"
        assert server.peers == [outside.host_address] != [ip_of(slot)]


@needs_host
async def test_slot_cannot_reach_the_hosts_loopback() -> None:
    async with running_pool() as pool:
        slot = await pool.acquire()
        with serving(listen(socket.socket(), "127.0.0.1")) as server:
            target = [("127.0.0.1", server.port)]
            assert reachable(None, target) == target  # the listener is up
            assert reachable(slot.path, target) == []
        assert server.peers == ["127.0.0.1"]


@needs_host
async def test_slot_cannot_reach_any_host_address(outside: OutsideHost) -> None:
    async with running_pool() as pool:
        slot, other = await pool.acquire(), await pool.acquire()
        with serving(listen(socket.socket())) as server:
            addresses = {slot.gateway, other.gateway, outside.host_address, *host_addresses()}
            targets = [(address, server.port) for address in sorted(addresses)]
            assert reachable(slot.path, targets) == []
        assert server.peers == []


def sysctl_in(netns_path: str, name: str) -> str:
    """A /proc/sys value as seen inside the network namespace at netns_path."""
    return in_namespace(netns_path, lambda: Path(f"/proc/sys/{name}").read_text().strip())


@needs_host
@pytest.mark.skipif(not Path("/proc/sys/net/ipv6").is_dir(), reason="no IPv6 in this kernel")
async def test_a_slot_carries_no_ipv6() -> None:
    async with running_pool() as pool:
        slot = await pool.acquire()
        host_side = Path(f"/proc/sys/net/ipv6/conf/{slot.interface}/disable_ipv6")
        assert host_side.read_text().strip() == "1"
        # inside: eth0 has no IPv6 address at all (not even fe80::), set up never to make one
        assert sysctl_in(slot.path, "net/ipv6/conf/eth0/addr_gen_mode") == "1"
        inet6 = Path("/proc/thread-self/net/if_inet6")  # (/proc/net: the process's namespace)
        addresses = in_namespace(slot.path, inet6.read_text)
        assert [line for line in addresses.splitlines() if line.endswith("eth0")] == []

        def connect_v6() -> int:
            probe = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            try:
                probe.connect(("2001:db8::1", 9))
            except OSError as exc:
                return exc.errno or 0
            finally:
                probe.close()
            return 0

        assert in_namespace(slot.path, connect_v6) == errno.ENETUNREACH


@needs_host
async def test_slots_cannot_reach_each_other() -> None:
    async with running_pool() as pool:
        slot, other = await pool.acquire(), await pool.acquire()
        with serving(listen(socket_in(other.path))) as server:
            target = [(ip_of(other), server.port)]
            assert reachable(other.path, target) == target  # the listener is up
            assert reachable(slot.path, target) == []
        assert server.peers == [ip_of(other)]


@needs_host
async def test_outside_hosts_cannot_connect_into_a_slot(outside: OutsideHost) -> None:
    async with running_pool() as pool:
        slot = await pool.acquire()
        subnet = str(ipaddress.ip_network(slot.address, strict=False).supernet(new_prefix=24))
        sh("ip", "-n", outside.netns, "route", "add", subnet, "via", outside.host_address)
        try:
            with serving(listen(socket_in(slot.path))) as server:
                assert reachable(outside.path, [(ip_of(slot), server.port)]) == []
            assert server.peers == []
        finally:
            sh("ip", "-n", outside.netns, "route", "del", subnet)


# with root: lifecycle ------------------------------------------------------------------------
@needs_host
async def test_a_released_slot_is_reused_with_its_connections_forgotten(
    outside: OutsideHost,
) -> None:
    async with running_pool(target_idle=1) as pool:
        slot = await pool.acquire()
        with serving(listen(socket_in(outside.path))) as server:
            await asyncio.to_thread(fetch, slot.path, outside.address, server.port)
            assert conntrack_sources(ip_of(slot)) >= 1
            pool.release(slot)
            pool.release(slot)  # repeated: harmless
            await wait_until(lambda: pool.statistics().idle == 2)
            assert conntrack_sources(ip_of(slot)) == 0
            # released, not rebuilt: the slot itself and the one built to keep one idle
            assert pool.statistics().built == 2
            # the two idle slots: the released one, and the one built to keep one idle (which
            # of them was ready last, and is handed out first, depends on the builders; taking
            # both may start one more build, to keep one idle again)
            assert slot in {await pool.acquire(), await pool.acquire()}
            reply = await asyncio.to_thread(fetch, slot.path, outside.address, server.port)
        assert reply == f"hello {outside.host_address}"


@needs_host
async def test_connections_are_forgotten_without_the_kernels_filtered_flush(
    outside: OutsideHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unsupported(address: str) -> None:
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(network, "_flush_conntrack_from", unsupported)
    async with running_pool(target_idle=0, max_idle=4) as pool:
        slot = await pool.acquire()
        with serving(listen(socket_in(outside.path))) as server:
            await asyncio.to_thread(fetch, slot.path, outside.address, server.port)
        assert conntrack_sources(ip_of(slot)) >= 1
        pool.release(slot)
        await wait_until(lambda: pool.statistics().idle == 1)
        assert conntrack_sources(ip_of(slot)) == 0


@needs_host
async def test_acquire_fails_fast_when_every_address_is_taken() -> None:
    async with running_pool(subnet=free_network("10.244.0.0/16", 29), target_idle=0) as pool:
        await pool.acquire()
        await pool.acquire()
        with pytest.raises(NetworkPoolError, match="all 2 addresses"):
            await pool.acquire()


@needs_host
async def test_release_waits_for_a_leftover_listener_to_close() -> None:
    async with running_pool(target_idle=0, max_idle=4) as pool:
        slot = await pool.acquire()
        listener = listen(socket_in(slot.path), "127.0.0.1")  # as lambdad's Runtime API socket
        pool.release(slot)
        await asyncio.sleep(0.3)
        assert pool.statistics().idle == 0
        listener.close()
        await wait_until(lambda: pool.statistics().idle == 1)
        assert await pool.acquire() == slot
        assert pool.statistics().built == 1


@needs_host
async def test_a_slot_whose_listener_stays_open_is_destroyed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(network, "RECYCLE_ATTEMPTS", 3)
    async with running_pool(target_idle=0, max_idle=4) as pool:
        slot = await pool.acquire()
        with listen(socket_in(slot.path), "127.0.0.1"):
            namespace = os.readlink(slot.path)
            pool.release(slot)
            await wait_until(lambda: namespace not in held_namespaces())
        assert leftovers(pool.tag)["links"] == []
        assert pool.statistics() == NetworkStatistics(0, 0, 1, pool.statistics().build_ms_p50)
        replacement = await pool.acquire()  # built anew, at the freed address
        assert (replacement.interface, replacement.address) == (slot.interface, slot.address)
        assert os.readlink(replacement.path) != namespace
        assert pool.statistics().built == 2


@needs_host
async def test_a_destroyed_slots_connections_are_forgotten_before_its_address_is_reused(
    outside: OutsideHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(network, "RECYCLE_ATTEMPTS", 3)
    async with running_pool(target_idle=0, max_idle=4) as pool:
        slot = await pool.acquire()
        with serving(listen(socket_in(outside.path))) as server:
            await asyncio.to_thread(fetch, slot.path, outside.address, server.port)
        assert conntrack_sources(ip_of(slot)) >= 1
        with listen(socket_in(slot.path), "127.0.0.1"):  # so it is not recycled
            namespace = os.readlink(slot.path)
            pool.release(slot)
            await wait_until(lambda: namespace not in held_namespaces())
        assert conntrack_sources(ip_of(slot)) == 0  # a later slot gets the same address
        replacement = await pool.acquire()
        assert replacement.address == slot.address


@needs_host
async def test_slots_beyond_the_idle_cap_are_destroyed_without_recycling(
    outside: OutsideHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    recycled: list[str] = []
    recycle = network._Host.recycle

    def counting(host: Any, slot: NetworkSlot) -> bool:
        recycled.append(slot.name)
        return recycle(host, slot)

    monkeypatch.setattr(network._Host, "recycle", counting)
    async with running_pool(target_idle=0, max_idle=1) as pool:
        first, second = await pool.acquire(), await pool.acquire()
        with serving(listen(socket_in(outside.path))) as server:
            await asyncio.to_thread(fetch, second.path, outside.address, server.port)
        pool.release(first)
        await wait_until(lambda: pool.statistics().idle == 1)
        namespace = os.readlink(second.path)
        pool.release(second)  # the idle cap is reached: destroyed at once
        await wait_until(lambda: namespace not in held_namespaces())
        assert recycled == [first.name]
        assert conntrack_sources(ip_of(second)) == 0  # forgotten all the same
        assert pool.statistics().idle == 1 and pool.statistics().in_use == 0


@needs_host
async def test_acquire_from_a_warm_pool_is_well_under_a_millisecond() -> None:
    async with running_pool(target_idle=8) as pool:
        timings = []
        for _ in range(8):
            started = time.perf_counter()
            await pool.acquire()
            timings.append(time.perf_counter() - started)
        assert statistics.median(timings) < 0.001, timings
        assert 0 < pool.statistics().build_ms_p50 < 1000


@needs_host
async def test_an_empty_pool_builds_on_demand() -> None:
    async with running_pool(target_idle=0) as pool:
        assert pool.statistics().idle == 0
        slot = await pool.acquire()
        assert Path(slot.path).exists()
        assert pool.statistics() == NetworkStatistics(0, 1, 1, pool.statistics().build_ms_p50)


@needs_host
async def test_a_cancelled_acquire_leaks_no_slot() -> None:
    async with running_pool(target_idle=0, max_idle=4) as pool:
        waiting = asyncio.ensure_future(pool.acquire())
        await asyncio.sleep(0)
        waiting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiting
        await wait_until(lambda: pool.statistics().built == 1)
        await wait_until(lambda: pool.statistics().idle == 1)
        assert pool.statistics().in_use == 0


@needs_host
async def test_close_leaves_nothing_behind_and_restores_ip_forward() -> None:
    alone, before = not lambdad_tables(), IP_FORWARD.read_text()
    tag = new_tag()
    async with running_pool(tag=tag, target_idle=3) as pool:
        slot = await pool.acquire()
        assert IP_FORWARD.read_text().strip() == "1"
        assert leftovers(tag)["links"] and leftovers(tag)["tables"]
        assert os.readlink(slot.path) in held_namespaces()
        assert len(held_namespaces()) >= 3
        await pool.close()
        assert leftovers(tag) == {"netns": [], "links": [], "tables": []}
        assert held_namespaces() == []
        if alone and not lambdad_tables():  # else another pool decides
            assert IP_FORWARD.read_text() == before
        with pytest.raises(NetworkPoolError, match="closed"):
            await pool.acquire()


# Two pools in a network namespace of their own (ip_forward and nft tables are per namespace):
# no other test's lambdad pool can be running there, so the check always runs.
LAST_POOL_CHECK = r"""
import asyncio, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from lambdad.sandbox.network import NetworkPool

FORWARD = Path("/proc/sys/net/ipv4/ip_forward")

async def main() -> None:
    FORWARD.write_text("0\n")
    first = NetworkPool(subnet="10.244.1.0/24", tag="tlpa", target_idle=1)
    second = NetworkPool(subnet="10.244.2.0/24", tag="tlpb", target_idle=1)
    await first.start()
    await second.start()
    assert FORWARD.read_text().strip() == "1"
    await first.close()
    assert FORWARD.read_text().strip() == "1", "the second pool still needs it"
    await second.close()
    assert FORWARD.read_text().strip() == "0", "the last pool restores what was there"
    print("ok")

asyncio.run(main())
"""


@needs_host
def test_the_last_pool_to_close_restores_ip_forward(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    run_check(["unshare", "--net", sys.executable, "-c", LAST_POOL_CHECK, str(root)], tmp_path)


@needs_host
async def test_start_refuses_a_subnet_in_use_and_leaves_nothing() -> None:
    async with running_pool() as pool:
        clash = NetworkPool(subnet=str(pool._plan.subnet), tag=new_tag())
        with pytest.raises(NetworkPoolError, match="overlaps"):
            await clash.start()
        assert clash.state is PoolState.CLOSED
        assert leftovers(clash.tag) == {"netns": [], "links": [], "tables": []}
        assert pool.statistics().idle == 2


@needs_host
async def test_start_refuses_a_subnet_another_pool_claimed_before_building_a_slot() -> None:
    # Two servers starting together: the first has its table but no slot (so no route) yet.
    async with running_pool(target_idle=0) as pool:
        inside = ipaddress.ip_network(pool._plan.subnet).subnets(new_prefix=28)
        clash = NetworkPool(subnet=str(next(inside)), tag=new_tag())
        try:
            with pytest.raises(NetworkPoolError, match="another lambdad network pool"):
                await clash.start()
        finally:
            await clash.close()  # (started, if the check failed)
        assert clash.state is PoolState.CLOSED
        assert leftovers(clash.tag) == {"netns": [], "links": [], "tables": []}
        slot = await pool.acquire()  # the first is unharmed
        assert ipaddress.ip_address(ip_of(slot)) in ipaddress.ip_network(pool._plan.subnet)


@needs_host
async def test_start_removes_what_a_crashed_run_with_the_same_tag_left() -> None:
    tag = new_tag()
    try:
        sh("ip", "netns", "add", f"lambdad-{tag}-9")
        sh("ip", "link", "add", f"lbd{tag}-9", "type", "veth", "peer", "name", f"lbd{tag}-9p")
        async with running_pool(tag=tag, target_idle=1):
            assert leftovers(tag)["netns"] == []
            assert leftovers(tag)["links"] == [f"lbd{tag}-0"]
    finally:
        sweep(tag)
