"""NetworkPool: pre-built network namespaces giving sandboxes outbound-only networking through NAT.

Lambda's default network: a function may open connections to non-local addresses (through NAT)
but reaches nothing on the host it runs on and no other environment. Each environment joins one
*slot*, built ahead of time by builder processes (sandbox/netlink.py), off the request path:

    netns (slot n)                              host
      lo       up                                 lbd<tag>-<n>  <gateway>/30, up
      eth0     <address>/30, up   <--- veth --->  nft table inet lambdad_<tag>
      default  via <gateway>

A slot's namespace is kept alive by a file descriptor lambdad holds, not by a bind mount under
/run/netns (`ip netns` does not list it; `nsenter --net=<slot.path>` enters it): every mount of
the host's mount namespace is copied into each new sandbox's and detached again at its
pivot_root, and 1,000 slot mounts made each sandbox cost 3 ms more CPU (+50% wall for a burst
of 300). Closing the descriptor of an unused slot lets the kernel remove it, veth included.

The host rules (one table per pool, replaced atomically, removed at close) are:

    input        iifname "lbd*" drop                  nothing on the host: any address, any port
    forward      iifname "lbd*" oifname "lbd*" drop   no sandbox reaches another one
                 oifname "lbd*" ct state != { established, related } drop   no inbound connection
    postrouting  ip saddr <subnet> oifname != "lbd*" masquerade            outbound through NAT

plus net.ipv4.ip_forward=1. The value it had before the first lambdad pool is written in each
table's comment; the last pool to close restores it. A pool's subnet is its own: one that
overlaps a host route or another pool's table (its masquerade rule, read under the same lock
that installs tables) is refused, and lambdad tries the next (two servers starting together
used to take the same one, before either had a route, and built slots with the same
addresses). IPv6 is disabled on the host's end of every veth and the sandbox's end has no IPv6
address (sandbox/netlink.py), so a sandbox has IPv4 only (as a Lambda function outside a VPC).

Reuse: a released slot is reused, not rebuilt. Nothing in it can have been changed by the
function (it runs without capabilities, so addresses, routes and sysctls are out of its reach)
and its processes are gone with their sockets; what survives is the host's conntrack entries for
the slot's address, which are deleted, and a Runtime API listener lambdad may not have closed
yet, which is waited for (up to RECYCLE_ATTEMPTS x RECYCLE_RETRY_S) before the slot is
destroyed and a new one built instead (its conntrack entries deleted then: the new one gets
the same address). A slot released while the idle ones (and those being recycled) already
reach the idle cap is destroyed at once, the same way.

Processes and threads: slots are built by BUILDERS processes of their own (sandbox/netlink.py
explains why), taking slots in turn, up to BUILDS_IN_FLIGHT requests queued there at once. The
other kernel calls (host rules, recycling, removal) block and move the calling thread into a
slot's namespace for a moment (setns acts on the calling thread only): they run on the pool's
single worker thread. The asyncio side only keeps the books.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import enum
import errno
import heapq
import importlib.util
import ipaddress
import logging
import os
import re
import shutil
import socket
import statistics as stats
import struct
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from lambdad.sandbox.helper import HelperProcess
from lambdad.sandbox.host_lock import locked_directory

__all__ = ["NetworkPool", "NetworkPoolError", "NetworkSlot", "NetworkStatistics", "PoolState"]

log = logging.getLogger(__name__)

NETNS_DIR = Path("/run/netns")
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
INTERFACE_PREFIX = "lbd"  # the host side of every sandbox veth; the rules match "lbd*"
TABLE_PREFIX = "lambdad_"
RECYCLE_ATTEMPTS = 40  # a released slot that still holds a listener is checked this often,
RECYCLE_RETRY_S = 0.05  # this far apart, then destroyed and replaced
BUILD_SAMPLES = 256  # build times kept for the median
NFT_TIMEOUT_S = 10
NETLINK_TIMEOUT_S = 5
SWEEP_WAIT_S = 2.0  # how long close() lets the kernel remove veths before deleting them
MAX_IFNAME = 15
# Slot builder processes. A slot's kernel work waits (rtnl, RCU grace periods) as much as it
# computes: three overlap that, and a burst of 1,000 cold starts ended 1-3 s sooner than with
# one (four alternating runs each: 10.1-14.1 s against 11.2-15.2 s).
BUILDERS = 3
BUILDS_IN_FLIGHT = 6 * BUILDERS  # slot requests queued at the builder processes at once

CLONE_NEWNET = 0x40000000
MS_BIND, MS_REC, MS_SHARED = 4096, 16384, 1 << 20
MNT_DETACH = 2
TCP_LISTEN = 10  # TCP_LISTEN in the kernel's tcp_states.h
NETLINK_SOCK_DIAG, NETLINK_NETFILTER = 4, 12
SOCK_DIAG_BY_FAMILY = 20
IPCTNL_MSG_CT_DELETE = (1 << 8) | 2  # NFNL_SUBSYS_CTNETLINK, IPCTNL_MSG_CT_DELETE
CTA_TUPLE_ORIG, CTA_TUPLE_IP, CTA_IP_V4_SRC, CTA_FILTER = 1, 1, 1, 25
CTA_FILTER_ORIG_FLAGS, CTA_FILTER_REPLY_FLAGS, CTA_FILTER_F_CTA_IP_SRC = 1, 2, 1
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP = 0x1, 0x4, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLA_F_NESTED = 0x8000

_TAG = re.compile(r"[a-z0-9]{1,7}")
_FORWARD_NOTE = re.compile(r'comment "lambdad: ip_forward was ([01])"')
_MASQUERADED = re.compile(r"ip saddr (\d+\.\d+\.\d+\.\d+/\d+) oifname")
_libc = ctypes.CDLL(None, use_errno=True)
_T = TypeVar("_T")


class NetworkPoolError(RuntimeError):
    """The pool cannot provide a network namespace (host refused, closed, subnet exhausted)."""


@dataclass(frozen=True)
class NetworkSlot:
    """One pre-built network namespace, joined by one environment at a time."""

    name: str  # for logs: lambdad-<tag>-<n>
    path: str  # /proc/<lambdad's pid>/fd/<n>: open it (as root) and setns(fd, CLONE_NEWNET)
    address: str  # the namespace side, with its prefix, on eth0: "10.200.0.2/30"
    gateway: str  # the host side of the veth, the namespace's default route: "10.200.0.1"
    interface: str  # the host side's name: lbd<tag>-<n>


@dataclass(frozen=True)
class NetworkStatistics:
    idle: int  # built and ready to hand out
    in_use: int  # acquired and not released yet
    built: int  # slots built since start (reused slots are not counted again)
    build_ms_p50: float  # median time to build one slot (recent builds), 0.0 before the first


class PoolState(enum.Enum):
    NEW = "new"  # constructed; start() not called yet
    RUNNING = "running"  # host rules installed; slots are built, handed out and recycled
    CLOSED = "closed"  # close() called (or start() failed): everything it made is removed


@dataclass(frozen=True)
class _AddressPlan:
    """Where slot n lives: names from the tag, a /30 of the subnet."""

    subnet: ipaddress.IPv4Network
    tag: str

    def __post_init__(self) -> None:
        if not _TAG.fullmatch(self.tag):
            raise ValueError(f"tag {self.tag!r}: 1 to 7 characters of [a-z0-9]")
        if self.subnet.prefixlen > 30:
            raise ValueError(f"subnet {self.subnet} is too small: it needs at least one /30")

    @property
    def table(self) -> str:
        return f"{TABLE_PREFIX}{self.tag}"

    @property
    def netns_prefix(self) -> str:
        return f"lambdad-{self.tag}-"

    @property
    def interface_prefix(self) -> str:
        return f"{INTERFACE_PREFIX}{self.tag}-"

    @property
    def capacity(self) -> int:
        """How many slots can exist at once: /30s in the subnet, indexes that fit IFNAMSIZ."""
        digits = MAX_IFNAME - len(self.interface_prefix)
        return min(self.subnet.num_addresses // 4, int(10**digits))

    def slot(self, index: int, namespace: int = -1) -> NetworkSlot:
        """Slot `index`, whose namespace this process holds open as fd `namespace`."""
        if not 0 <= index < self.capacity:
            raise ValueError(f"slot index {index} outside 0..{self.capacity - 1}")
        base = self.subnet.network_address + 4 * index
        return NetworkSlot(
            name=f"{self.netns_prefix}{index}",
            path=f"/proc/{os.getpid()}/fd/{namespace}",
            address=f"{base + 2}/30",
            gateway=str(base + 1),
            interface=f"{self.interface_prefix}{index}",
        )


class NetworkPool:
    """Pre-built network namespaces (veth + NAT), handed to environments and reused.

    Contract: ``acquire`` returns a slot no one else holds; the caller makes its environment
    join ``slot.path`` and calls ``release(slot)`` once every process of that environment has
    exited. After ``release`` the caller must not touch the slot. ``close`` removes every
    namespace, veth and rule the pool made, including slots still acquired.
    """

    def __init__(
        self,
        subnet: str = "10.200.0.0/16",
        target_idle: int = 8,
        tag: str | None = None,
        max_idle: int | None = None,
    ) -> None:
        self._plan = _AddressPlan(ipaddress.IPv4Network(subnet), tag or str(os.getpid()))
        self._target_idle = max(0, target_idle)
        self._max_idle = max(self._target_idle, 4 * target_idle if max_idle is None else max_idle)
        self._state = PoolState.NEW
        self._idle: deque[NetworkSlot] = deque()  # ready slots, most recently released last
        self._in_use: set[NetworkSlot] = set()
        self._waiters: deque[asyncio.Future[NetworkSlot]] = deque()  # acquirers, oldest first
        self._free: list[int] = []  # heap of indexes whose slot was destroyed
        self._namespaces: dict[int, int] = {}  # slot index -> fd of its namespace (held open)
        self._next_index = 0
        self._building = 0
        self._recycling = 0
        self._built = 0
        self._build_ms: deque[float] = deque(maxlen=BUILD_SAMPLES)
        self._last_error: BaseException | None = None
        self._builds: set[asyncio.Task[None]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._builders = [
            HelperProcess("lambdad.sandbox.netlink:serve_slots") for _ in range(BUILDERS)
        ]
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"lambdad-network-{self.tag}")
        self._host = _Host(self._plan)

    @property
    def tag(self) -> str:
        return self._plan.tag

    @property
    def state(self) -> PoolState:
        return self._state

    @classmethod
    def probe(cls) -> tuple[bool, str]:
        """(True, "") if this host can run a pool; else (False, the reason)."""
        if os.geteuid() != 0:
            return False, "not running as root: network namespaces, veths and nftables need root"
        if shutil.which("nft") is None:
            return False, "nft is not installed (Debian: apt-get install nftables)"
        if importlib.util.find_spec("pyroute2") is None:
            return False, "the pyroute2 package is not installed"
        if not _can_unshare_network():
            return False, "unshare(CLONE_NEWNET) is not permitted here"
        try:
            _nft("list", "tables")
        except NetworkPoolError as exc:
            return False, f"nftables is not usable: {exc}"
        return True, ""

    # lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        """Install the host rules and build target_idle slots; raise NetworkPoolError if not."""
        if self._state is not PoolState.NEW:
            raise NetworkPoolError(f"the network pool is {self._state.value}, cannot start")
        self._state = PoolState.RUNNING
        try:
            await self._run(self._host.open)
            for builder in self._builders:
                builder.start()
        except Exception as exc:
            await self.close()
            raise NetworkPoolError(f"cannot set up sandbox networking: {exc}") from exc
        self._top_up()
        while self._builds:
            await asyncio.gather(*self._builds, return_exceptions=True)
        if len(self._idle) < self._target_idle and self._last_error is not None:
            error = self._last_error
            await self.close()
            raise NetworkPoolError(f"cannot build network namespaces: {error}") from error

    async def close(self) -> None:
        """Remove every namespace, veth and rule this pool made; restore ip_forward."""
        if self._state is PoolState.CLOSED:
            return
        opened, self._state = self._state is PoolState.RUNNING, PoolState.CLOSED
        self._fail_waiters(NetworkPoolError("the network pool is closed"))
        await asyncio.gather(*self._builds, *self._tasks, return_exceptions=True)
        for builder in self._builders:
            await builder.close()
        for namespace in self._namespaces.values():  # the kernel removes the unused ones
            os.close(namespace)
        self._namespaces.clear()
        if opened:
            in_use = list(self._in_use)
            self._idle.clear()
            self._in_use.clear()
            await self._run(self._host.shutdown, in_use)
        self._executor.shutdown(wait=True)

    # handing out -----------------------------------------------------------------------------
    async def acquire(self) -> NetworkSlot:
        """An idle slot (the fast path), or the next one built or released."""
        if self._state is not PoolState.RUNNING:
            raise NetworkPoolError(f"the network pool is {self._state.value}")
        if self._idle:
            slot = self._idle.pop()
            self._in_use.add(slot)
            self._top_up()
            return slot
        if len(self._in_use) + len(self._waiters) >= self._plan.capacity:
            raise NetworkPoolError(f"all {self._plan.capacity} addresses of the subnet are in use")
        waiter: asyncio.Future[NetworkSlot] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._top_up()
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release(waiter.result())  # handed to us just as we were cancelled
            raise
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)

    def release(self, slot: NetworkSlot) -> None:
        """The slot's environment is gone: clean the slot for reuse (harmless if repeated)."""
        if slot not in self._in_use:
            return
        self._in_use.remove(slot)
        if self._state is not PoolState.RUNNING:
            self._idle.append(slot)  # close() removes it
            return
        if not self._waiters and len(self._idle) + self._recycling >= self._max_idle:
            # It would be destroyed once recycled (as many environments end at once, say):
            # destroy it now, without waiting for listeners or looking for them.
            self._spawn(self._destroy(slot, forget=True))
            return
        self._recycling += 1
        self._spawn(self._recycle(slot))

    def statistics(self) -> NetworkStatistics:
        p50 = stats.median(self._build_ms) if self._build_ms else 0.0
        return NetworkStatistics(len(self._idle), len(self._in_use), self._built, round(p50, 3))

    # background work -------------------------------------------------------------------------
    def _deficit(self) -> int:
        ready = len(self._idle) + self._building + self._recycling
        return len(self._waiters) + self._target_idle - ready

    def _top_up(self) -> None:
        """Start building slots for the deficit, at most BUILDS_IN_FLIGHT at a time."""
        while (
            self._state is PoolState.RUNNING
            and self._deficit() > 0
            and self._building < BUILDS_IN_FLIGHT
        ):
            index = self._take_index()
            if index is None:
                log.warning("network pool %s: subnet %s exhausted", self.tag, self._plan.subnet)
                return
            self._building += 1
            task = asyncio.ensure_future(self._build(index))
            self._builds.add(task)
            task.add_done_callback(self._builds.discard)

    async def _build(self, index: int) -> None:
        try:
            builder = self._builders[index % len(self._builders)]
            if not builder.alive:  # it exited (see its log): a new one
                builder.start()
            built = await builder.request(self._host.build_request(self._plan.slot(index)))
            (namespace,) = built["fds"]
        except Exception as exc:
            log.exception("network pool %s: cannot build slot %d", self.tag, index)
            heapq.heappush(self._free, index)
            self._last_error = exc
            self._fail_waiters(NetworkPoolError(f"cannot build a network namespace: {exc}"))
            return  # no new builds until the next acquire
        finally:
            self._building -= 1
        self._namespaces[index] = namespace
        self._built += 1
        self._build_ms.append(float(built["ms"]))
        self._offer(self._plan.slot(index, namespace))
        self._top_up()

    async def _recycle(self, slot: NetworkSlot) -> None:
        try:
            for _ in range(RECYCLE_ATTEMPTS):
                if self._state is not PoolState.RUNNING:
                    break
                if await self._run(self._host.recycle, slot):
                    self._recycling -= 1
                    self._offer(slot)
                    return
                await asyncio.sleep(RECYCLE_RETRY_S)
            else:
                log.warning("network pool %s: %s still has a listener", self.tag, slot.name)
        except Exception:
            log.exception("network pool %s: cannot recycle %s", self.tag, slot.name)
        self._recycling -= 1
        await self._destroy(slot, forget=True)  # its address is built again later

    def _offer(self, slot: NetworkSlot) -> None:
        """A slot is ready: to the oldest waiter, else idle (or destroyed if idle is full)."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._in_use.add(slot)
                waiter.set_result(slot)
                return
        if self._state is PoolState.RUNNING and len(self._idle) >= self._max_idle:
            self._spawn(self._destroy(slot))
        else:
            self._idle.append(slot)

    async def _destroy(self, slot: NetworkSlot, *, forget: bool = False) -> None:
        """Remove a slot and free its address; `forget`: also delete the host's conntrack
        entries from that address (not recycled, they are still there)."""
        if self._state is not PoolState.RUNNING:
            self._idle.append(slot)  # close() removes it
            return
        try:
            await self._run(self._host.destroy, slot, forget)
        except Exception:
            log.exception("network pool %s: cannot remove %s", self.tag, slot.name)
            return  # its index stays taken; close() sweeps it
        index = _index_of(slot)
        os.close(self._namespaces.pop(index))
        heapq.heappush(self._free, index)
        self._top_up()

    def _take_index(self) -> int | None:
        if self._free:
            return heapq.heappop(self._free)
        if self._next_index < self._plan.capacity:
            self._next_index += 1
            return self._next_index - 1
        return None

    def _fail_waiters(self, error: NetworkPoolError) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(error)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, function: Callable[..., _T], *args: Any) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)


def _index_of(slot: NetworkSlot) -> int:
    return int(slot.name.rsplit("-", 1)[1])


class _Host:
    """Every kernel call of a pool. Confined to the pool's one worker thread."""

    def __init__(self, plan: _AddressPlan) -> None:
        self._plan = plan
        self._home = -1  # the worker thread's own (the host's) network namespace
        self._ipr: Any = None  # pyroute2 IPRoute in the host namespace
        self._filtered_flush = True  # until the kernel refuses a filtered conntrack flush
        self._mtu = 1500
        self._forward_before = ""  # set once the table is installed
        self._stranded = False  # the worker thread failed to setns back home

    def open(self) -> None:
        from pyroute2 import IPRoute  # type: ignore[import-untyped]

        self._home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        self._ipr = IPRoute()
        _share_netns_dir()
        self.sweep()
        self._check_subnet_is_free()
        self._mtu = self._uplink_mtu()
        self._forward_before = _install_rules(self._plan)

    def shutdown(self, in_use: list[NetworkSlot]) -> None:
        if self._ipr is not None:
            for slot in in_use:  # their namespaces may still hold processes: cut the veths
                _attempt(f"remove {slot.name}", self.destroy, slot)
            _attempt("remove the namespaces", self.sweep)
        if self._forward_before:
            _attempt("remove the nft table", _remove_rules, self._plan.table, self._forward_before)
        if self._ipr is not None:
            _attempt("close the netlink socket", self._ipr.close)
        if self._home >= 0:
            os.close(self._home)

    # slots ------------------------------------------------------------------------------------
    def build_request(self, slot: NetworkSlot) -> dict[str, Any]:
        """What a builder process needs to build the slot (see sandbox/netlink.py)."""
        return {
            "interface": slot.interface,
            "address": slot.address,
            "gateway": slot.gateway,
            "mtu": self._mtu,
        }

    def recycle(self, slot: NetworkSlot) -> bool:
        """Make a released slot reusable; False while something still listens inside it."""
        with self._inside(slot.path):
            if _has_listener():
                return False
        self._forget_connections(slot)
        return True

    def destroy(self, slot: NetworkSlot, forget: bool = False) -> None:
        """Delete the slot's veth (the caller then closes its namespace's descriptor); with
        `forget`, then the conntrack entries from its address (none can be made after)."""
        for index in self._ipr.link_lookup(ifname=slot.interface):
            self._delete_link(index)  # removes the peer inside the namespace too
        if forget:
            self._forget_connections(slot)

    def sweep(self) -> None:
        """Remove every veth of this tag once its namespace is gone (at close, after the
        descriptors were closed), and namespaces an earlier version bound under /run/netns.

        Letting the kernel tear the namespaces down, veths included, in one batch is faster
        than deleting them one by one (32 slots: ~70 ms against ~30 ms per slot).
        """
        for path in NETNS_DIR.glob(f"{self._plan.netns_prefix}*"):
            _remove_namespace_file(path)
        deadline = time.monotonic() + SWEEP_WAIT_S
        while (links := self._own_links()) and time.monotonic() < deadline:
            time.sleep(0.01)
        for index in links:  # a namespace still held by a process, or a stray link
            self._delete_link(index)

    def _own_links(self) -> list[int]:
        prefix = self._plan.interface_prefix
        return [
            link["index"]
            for link in self._ipr.link("dump")
            if (link.get_attr("IFLA_IFNAME") or "").startswith(prefix)
        ]

    def _delete_link(self, index: int) -> None:
        from pyroute2.netlink.exceptions import NetlinkError  # type: ignore[import-untyped]

        try:
            self._ipr.link("del", index=index)
        except NetlinkError as exc:
            if exc.code != errno.ENODEV:  # gone already (a veth goes with its peer)
                raise

    # steps ------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _inside(self, path: str) -> Iterator[None]:
        """Run the block in the namespace at path on this thread only."""
        if self._stranded:
            raise NetworkPoolError("the network worker thread could not return to its namespace")
        target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            _check(_libc.setns(target, CLONE_NEWNET), f"setns {path}")
        finally:
            os.close(target)
        try:
            yield
        finally:
            if _libc.setns(self._home, CLONE_NEWNET) != 0:
                self._stranded = True  # every later step that needs the host namespace refuses
                _check(-1, "setns back to the host namespace")

    def _forget_connections(self, slot: NetworkSlot) -> None:
        """Delete the host's conntrack entries that started from the slot's address.

        Otherwise a late reply to the previous environment's connection (say, a DNS answer)
        would still be translated back to the slot, and the next tenant could read it.
        """
        address = slot.address.split("/")[0]
        if self._filtered_flush:
            try:
                _flush_conntrack_from(address)  # one request; older kernels say EINVAL
                return
            except OSError as exc:
                log.info("filtered conntrack flush unsupported (%s): dumping instead", exc)
                self._filtered_flush = False
        self._delete_conntrack_entries(address)

    def _delete_conntrack_entries(self, address: str) -> None:
        from pyroute2.conntrack import Conntrack  # type: ignore[import-untyped]
        from pyroute2.netlink.nfnetlink.nfctsocket import (  # type: ignore[import-untyped]
            NFCTAttrTuple,
        )

        with Conntrack() as conntrack:
            for entry in list(conntrack.dump_entries(tuple_orig=NFCTAttrTuple(saddr=address))):
                with contextlib.suppress(Exception):  # it may expire between dump and delete
                    conntrack.delete(entry)

    def _check_subnet_is_free(self) -> None:
        for route in self._ipr.route("dump", family=socket.AF_INET):
            destination = route.get_attr("RTA_DST")
            if destination is None:
                continue
            network = ipaddress.IPv4Network(f"{destination}/{route['dst_len']}", strict=False)
            if network.overlaps(self._plan.subnet):
                raise NetworkPoolError(
                    f"subnet {self._plan.subnet} overlaps the host route {network}"
                    " (another lambdad, or a local network): choose another subnet"
                )

    def _uplink_mtu(self) -> int:
        """The MTU of the default route's interface (so sandboxes never need fragmenting)."""
        for route in self._ipr.route("dump", family=socket.AF_INET):
            if route["dst_len"] == 0 and route.get_attr("RTA_OIF"):
                for link in self._ipr.link("get", index=route.get_attr("RTA_OIF")):
                    return min(1500, int(link.get_attr("IFLA_MTU")))
        return 1500


def _has_listener() -> bool:
    """A TCP socket listens in the calling thread's network namespace (asked via sock_diag)."""
    for family in (socket.AF_INET, socket.AF_INET6):
        request = struct.pack("=BBBxI", family, socket.IPPROTO_TCP, 0, 1 << TCP_LISTEN)
        replies = _netlink(NETLINK_SOCK_DIAG, SOCK_DIAG_BY_FAMILY, NLM_F_DUMP, request + bytes(48))
        if replies:
            return True
    return False


def _flush_conntrack_from(address: str) -> None:
    """Delete every conntrack entry whose original source is address, in one request."""
    source = _nla(CTA_TUPLE_IP | NLA_F_NESTED, _nla(CTA_IP_V4_SRC, socket.inet_aton(address)))
    flags = _nla(CTA_FILTER_ORIG_FLAGS, struct.pack("=I", CTA_FILTER_F_CTA_IP_SRC))
    flags += _nla(CTA_FILTER_REPLY_FLAGS, struct.pack("=I", 0))
    request = struct.pack("=BBH", socket.AF_INET, 0, 0)  # nfgenmsg: family, version, res_id
    request += _nla(CTA_TUPLE_ORIG | NLA_F_NESTED, source) + _nla(CTA_FILTER | NLA_F_NESTED, flags)
    _netlink(NETLINK_NETFILTER, IPCTNL_MSG_CT_DELETE, NLM_F_ACK, request)


def _nla(kind: int, data: bytes) -> bytes:
    return struct.pack("=HH", 4 + len(data), kind) + data + bytes(-len(data) % 4)


def _netlink(protocol: int, kind: int, flags: int, payload: bytes) -> list[bytes]:
    """One request on a new netlink socket (in this thread's namespace): the reply payloads.

    Raises OSError with the kernel's errno if it answers with an error.
    """
    header = struct.pack("=IHHII", 16 + len(payload), kind, NLM_F_REQUEST | flags, 1, 0)
    replies: list[bytes] = []
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, protocol) as sock:
        sock.settimeout(NETLINK_TIMEOUT_S)
        sock.send(header + payload)
        while True:
            data, offset = sock.recv(1 << 16), 0
            while offset < len(data):
                length, reply_kind = struct.unpack_from("=IH", data, offset)
                body = data[offset + 16 : offset + length]
                if reply_kind == NLMSG_DONE:
                    return replies
                if reply_kind == NLMSG_ERROR:
                    error = -struct.unpack_from("=i", body)[0]
                    if error:
                        raise OSError(error, os.strerror(error))
                    return replies  # the acknowledgement
                replies.append(body)
                offset += (length + 3) & ~3


def _remove_namespace_file(path: Path) -> None:
    _libc.umount2(str(path).encode(), MNT_DETACH)  # fails harmlessly if not mounted
    path.unlink(missing_ok=True)


def _share_netns_dir() -> None:
    """Make /run/netns a shared mount point, as `ip netns add` does (compatible with it)."""
    NETNS_DIR.mkdir(parents=True, exist_ok=True)
    directory = str(NETNS_DIR).encode()
    if _libc.mount(b"none", directory, None, MS_SHARED | MS_REC, None) == 0:
        return
    _check(_libc.mount(directory, directory, None, MS_BIND | MS_REC, None), "bind /run/netns")
    _check(_libc.mount(b"none", directory, None, MS_SHARED | MS_REC, None), "share /run/netns")


def _can_unshare_network() -> bool:
    """Try unshare(CLONE_NEWNET) on a throw-away thread (the namespace dies with it)."""
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(_libc.unshare(CLONE_NEWNET)))
    thread.start()
    thread.join()
    return result == [0]


# host rules ------------------------------------------------------------------------------------
def _ruleset(table: str, subnet: str, forward_before: str) -> str:
    """The pool's nft table; replaces any previous table of that name in one transaction."""
    sandboxes = f'"{INTERFACE_PREFIX}*"'
    return f"""add table inet {table}
delete table inet {table}
table inet {table} {{
    comment "lambdad: ip_forward was {forward_before}"
    chain input {{
        type filter hook input priority filter; policy accept;
        iifname {sandboxes} drop
    }}
    chain forward {{
        type filter hook forward priority filter; policy accept;
        iifname {sandboxes} oifname {sandboxes} drop
        oifname {sandboxes} ct state != {{ established, related }} drop
    }}
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        ip saddr {subnet} oifname != {sandboxes} masquerade
    }}
}}
"""


def _install_rules(plan: _AddressPlan) -> str:
    """Install the table and turn forwarding on; return ip_forward's value before lambdad.
    Refused when another pool's table claims an overlapping subnet: the host's routes show a
    pool's subnet only once it has built slots, so two pools starting together both found
    the same one free and built slots with the same addresses."""
    with _host_lock():
        for table, subnet in _claimed_subnets(exclude=plan.table):
            if subnet.overlaps(plan.subnet):
                raise NetworkPoolError(
                    f"subnet {plan.subnet} overlaps {subnet}, another lambdad network pool's"
                    f" (nft table {table})"
                )
        before = _recorded_forward(exclude=plan.table) or IP_FORWARD.read_text().strip()
        _nft("-f", "-", script=_ruleset(plan.table, str(plan.subnet), before))
        IP_FORWARD.write_text("1")
    return before


def _remove_rules(table: str, forward_before: str) -> None:
    with _host_lock():
        _nft("-f", "-", script=f"add table inet {table}\ndelete table inet {table}\n")
        if not _lambdad_tables():
            IP_FORWARD.write_text(forward_before)


def _host_lock() -> contextlib.AbstractContextManager[None]:
    """Serialise table changes and the ip_forward bookkeeping between pools and processes
    (the lock is on the /run/netns directory)."""
    return locked_directory(NETNS_DIR)


def _lambdad_tables() -> list[str]:
    names = (line.split()[-1] for line in _nft("list", "tables").splitlines() if line.strip())
    return [name for name in names if name.startswith(TABLE_PREFIX)]


def _other_tables(exclude: str) -> Iterator[tuple[str, str]]:
    """(name, listing) of every other pool's table (call with the host lock held)."""
    for table in _lambdad_tables():
        if table == exclude:
            continue
        try:
            yield table, _nft("list", "table", "inet", table)
        except NetworkPoolError:  # removed meanwhile by something not holding the lock
            continue


def _claimed_subnets(exclude: str) -> list[tuple[str, ipaddress.IPv4Network]]:
    """The subnets other pools' tables masquerade, by table."""
    claimed = []
    for table, listing in _other_tables(exclude):
        if found := _MASQUERADED.search(listing):
            claimed.append((table, ipaddress.IPv4Network(found.group(1), strict=False)))
    return claimed


def _recorded_forward(exclude: str) -> str:
    """ip_forward's value before lambdad, as another running pool's table recorded it."""
    for _, listing in _other_tables(exclude):
        if found := _FORWARD_NOTE.search(listing):
            return found.group(1)
    return ""


def _nft(*args: str, script: str | None = None) -> str:
    try:
        done = subprocess.run(
            ["nft", *args],
            input=script,
            capture_output=True,
            text=True,
            timeout=NFT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetworkPoolError(f"nft {' '.join(args)}: {exc}") from exc
    if done.returncode != 0:
        raise NetworkPoolError(f"nft {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


# small helpers ---------------------------------------------------------------------------------
def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _attempt(what: str, step: Callable[..., object], *args: Any) -> None:
    """Run one clean-up step; log and carry on if it fails (the others still run)."""
    try:
        step(*args)
    except Exception:
        log.exception("network pool: cannot %s", what)


def _pid_alive(text: str) -> bool:
    return text.isdigit() and Path(f"/proc/{text}").exists()


def sweep_stale_pools() -> int:
    """Remove namespaces, veths and tables left by lambdad servers that died without closing
    their pool (their tag is their pid, and that pid is gone). Returns how many were removed."""
    removed = 0
    with _host_lock():
        for table in _lambdad_tables():
            tag = table.removeprefix(TABLE_PREFIX)
            if tag.isdigit() and not _pid_alive(tag):
                with contextlib.suppress(NetworkPoolError):
                    _nft("-f", "-", script=f"add table inet {table}\ndelete table inet {table}\n")
                    removed += 1
        for path in NETNS_DIR.glob("lambdad-*-*"):
            tag = path.name.split("-")[1]
            if tag.isdigit() and not _pid_alive(tag):
                _remove_namespace_file(path)
                removed += 1
    links = subprocess.run(
        ["ip", "-o", "link", "show"], capture_output=True, text=True, check=False
    ).stdout
    for line in links.splitlines():
        name = line.split(":")[1].strip().split("@")[0] if ":" in line else ""
        if name.startswith("lbd") and "-" in name:
            tag = name[3:].split("-")[0]
            if tag.isdigit() and not _pid_alive(tag):
                subprocess.run(["ip", "link", "del", name], capture_output=True, check=False)
                removed += 1
    return removed
