"""Network slots built by a helper process of their own, with raw rtnetlink (stdlib only).

A slot (see sandbox/network.py) is built in these steps, all in the host's network namespace
except the first:

    unshare(CLONE_NEWNET) on this thread, open the new namespace (the file descriptor that
    keeps it, handed to lambdad), open a NETLINK_ROUTE socket inside (it stays there), setns
    back home
    -> veth: the host side lbd<tag>-<n>, the peer "eth0" created inside the namespace
    -> host side: IPv6 disabled, gateway address, up
    -> inside: lo up; eth0 without IPv6 addresses (addr_gen_mode "none"), addressed and up;
       default route via the gateway

IPv6 inside: eth0 is given no IPv6 address of any kind (no link-local either), so nothing can
be sent over IPv6 (and the host side drops IPv6 anyway). Writing the namespace's
net.ipv6.conf.default.disable_ipv6 instead cost a quarter of a builder's CPU with 1,000 slots:
each component of a path under /proc/sys/net is compared with every network namespace's
(proc_sys_compare), and that write came from inside the new namespace, which has no open
directory to start from (the host side's is written relative to one).

Why a process: lambdad's event loop is busiest exactly when slots are wanted (a burst of cold
starts), and a worker thread of lambdad waits for the GIL after every system call (see
sandbox/helper.py): a slot took 20-28 ms there, against ~2.5 ms in the builder. Raw requests,
batched per namespace, also avoid pyroute2's per-message cost (6.5 ms a slot on an idle host).

Requests (sandbox/helper.py's protocol): {"interface": "lbd...", "mtu": 1500, "address":
"10.200.0.2/30", "gateway": "10.200.0.1"}; reply {"ms": build time} carrying the namespace's
file descriptor. Nothing of a slot that failed is left behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import itertools
import os
import socket
import struct
import time
from typing import Any

from lambdad.sandbox.helper import serve

CLONE_NEWNET = 0x40000000
SANDBOX_INTERFACE = "eth0"
LOOPBACK_INDEX = 1  # the kernel numbers a namespace's loopback 1
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK, RTM_NEWADDR, RTM_NEWROUTE = 16, 17, 18, 20, 24
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400
NLMSG_ERROR = 2
NLA_F_NESTED = 0x8000
IFLA_IFNAME, IFLA_MTU, IFLA_LINKINFO, IFLA_AF_SPEC, IFLA_NET_NS_FD = 3, 4, 18, 26, 28
IFLA_INET6_ADDR_GEN_MODE, IN6_ADDR_GEN_MODE_NONE = 8, 1
IFLA_NUM_TX_QUEUES, IFLA_NUM_RX_QUEUES = 31, 32
IFLA_INFO_KIND, IFLA_INFO_DATA, VETH_INFO_PEER = 1, 2, 1
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTA_GATEWAY = 5
RT_TABLE_MAIN, RTPROT_BOOT, RT_SCOPE_UNIVERSE, RTN_UNICAST = 254, 3, 0, 1
IFF_UP = 0x1

_libc = ctypes.CDLL(None, use_errno=True)


class _Netlink:
    """A NETLINK_ROUTE socket (in the namespace of the thread that made it) that sends a batch
    of requests at once and waits for every acknowledgement."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0)
        self._sock.bind((0, 0))
        self._seq = itertools.count(1)

    def close(self) -> None:
        self._sock.close()

    def request(self, *messages: tuple[int, int, bytes]) -> list[bytes]:
        """Send (type, flags, payload) messages; the payloads of the replies that are not
        acknowledgements. Raises OSError with the kernel's errno for the first refusal."""
        batch, waiting = b"", set()
        for kind, flags, payload in messages:
            seq = next(self._seq)
            waiting.add(seq)
            flags |= NLM_F_REQUEST | NLM_F_ACK
            batch += struct.pack("=IHHII", 16 + len(payload), kind, flags, seq, 0) + payload
        self._sock.send(batch)
        replies: list[bytes] = []
        error: OSError | None = None
        while waiting:
            data, offset = self._sock.recv(1 << 16), 0
            while offset < len(data):
                length, kind, _, seq, _ = struct.unpack_from("=IHHII", data, offset)
                body = data[offset + 16 : offset + length]
                if kind == NLMSG_ERROR:
                    waiting.discard(seq)
                    code = -struct.unpack_from("=i", body)[0]
                    if code and error is None:
                        error = OSError(code, os.strerror(code))
                else:
                    replies.append(body)
                offset += (length + 3) & ~3
        if error is not None:
            raise error
        return replies


def _attr(kind: int, data: bytes) -> bytes:
    return struct.pack("=HH", 4 + len(data), kind) + data + bytes(-len(data) % 4)


def _name(name: str) -> bytes:
    return _attr(IFLA_IFNAME, name.encode() + b"\0")


def _link(index: int = 0, up: bool = False) -> bytes:
    """An ifinfomsg; `up` sets IFF_UP."""
    flags = IFF_UP if up else 0
    return struct.pack("=BxHiII", socket.AF_UNSPEC, 0, index, flags, flags)


def _without_ipv6_addresses(index: int) -> tuple[int, int, bytes]:
    """Link `index` gets no IPv6 address, not even a link-local one (addr_gen_mode none)."""
    mode = _attr(IFLA_INET6_ADDR_GEN_MODE, struct.pack("=B", IN6_ADDR_GEN_MODE_NONE))
    spec = _attr(IFLA_AF_SPEC | NLA_F_NESTED, _attr(socket.AF_INET6 | NLA_F_NESTED, mode))
    return RTM_NEWLINK, 0, _link(index) + spec


def _address(index: int, address: str, prefixlen: int) -> tuple[int, int, bytes]:
    packed = socket.inet_aton(address)
    header = struct.pack("=BBBBI", socket.AF_INET, prefixlen, 0, 0, index)
    payload = header + _attr(IFA_LOCAL, packed) + _attr(IFA_ADDRESS, packed)
    return RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, payload


def _default_route(gateway: str) -> tuple[int, int, bytes]:
    rtmsg = (socket.AF_INET, 0, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT, RT_SCOPE_UNIVERSE, RTN_UNICAST, 0)
    payload = struct.pack("=BBBBBBBBI", *rtmsg) + _attr(RTA_GATEWAY, socket.inet_aton(gateway))
    return RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, payload


def _veth(interface: str, mtu: int, namespace_fd: int) -> tuple[int, int, bytes]:
    """The host side `interface`; its peer eth0 is created in the namespace. Both ends ask for
    one queue each way: without that, veth makes one per CPU and then cuts them to one, which
    waits for an expedited RCU grace period while holding the kernel's rtnl lock (every other
    link change on the host, other slots' included, waits behind it)."""
    one = struct.pack("=I", 1)
    queues = _attr(IFLA_NUM_TX_QUEUES, one) + _attr(IFLA_NUM_RX_QUEUES, one)
    mtu_attr = _attr(IFLA_MTU, struct.pack("=I", mtu)) + queues
    peer = _link() + _name(SANDBOX_INTERFACE) + mtu_attr
    peer += _attr(IFLA_NET_NS_FD, struct.pack("=I", namespace_fd))
    info = _attr(IFLA_INFO_KIND, b"veth\0")
    info += _attr(IFLA_INFO_DATA | NLA_F_NESTED, _attr(VETH_INFO_PEER | NLA_F_NESTED, peer))
    payload = _link() + _name(interface) + mtu_attr + _attr(IFLA_LINKINFO | NLA_F_NESTED, info)
    return RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, payload


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _write_sysctl(name: str, value: str, directory: int) -> None:
    """Write <name> relative to `directory`, an open directory of /proc/sys."""
    fd = os.open(name, os.O_WRONLY | os.O_CLOEXEC, dir_fd=directory)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


class SlotMaker:
    """Builds slots; confined to one thread, which must stay in the host namespace between
    calls (a failed return home leaves it `stranded`: it refuses from then on)."""

    def __init__(self) -> None:
        self._home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        self._host = _Netlink()
        self.stranded = False
        # The host's IPv6 per-interface settings, reached from here: a path from /proc/sys
        # compares its "net" with every network namespace's (proc_sys_compare), which made
        # the two sysctl writes a third of a builder's CPU with 1,000 slots.
        self._host_ipv6: int | None = None
        with contextlib.suppress(FileNotFoundError):  # no IPv6 in this kernel
            flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
            self._host_ipv6 = os.open("/proc/sys/net/ipv6/conf", flags)

    def build(self, plan: dict[str, Any]) -> tuple[int, float]:
        """Create the slot `plan` describes: a file descriptor of its namespace (the caller's
        to close) and the build time in ms. Removes what it made if it fails."""
        started = time.perf_counter()
        namespace, inner = self._create_namespace()
        try:
            self._add_veth(namespace, plan)
            self._configure_inside(inner, plan, ipv6=self._host_ipv6 is not None)
        except BaseException:
            with contextlib.suppress(OSError):
                self._delete_link(plan["interface"])
            os.close(namespace)  # the namespace goes with it
            raise
        finally:
            inner.close()
        return namespace, (time.perf_counter() - started) * 1000

    def _delete_link(self, interface: str) -> None:
        try:
            self._host.request((RTM_DELLINK, 0, _link() + _name(interface)))
        except OSError as exc:
            if exc.errno != errno.ENODEV:  # never made
                raise

    def _create_namespace(self) -> tuple[int, _Netlink]:
        """A new namespace's file descriptor, and a netlink socket inside it."""
        if self.stranded:
            raise OSError("the builder could not return to the host's network namespace")
        _check(_libc.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")
        namespace = -1
        try:
            namespace = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            return namespace, _Netlink()
        except BaseException:
            if namespace >= 0:
                os.close(namespace)
            raise
        finally:
            if _libc.setns(self._home, CLONE_NEWNET) != 0:
                self.stranded = True
                _check(-1, "setns back to the host namespace")

    def _add_veth(self, namespace: int, plan: dict[str, Any]) -> None:
        interface = plan["interface"]
        self._host.request(_veth(interface, plan["mtu"], namespace))
        if self._host_ipv6 is not None:
            _write_sysctl(f"{interface}/disable_ipv6", "1", self._host_ipv6)
        index = socket.if_nametoindex(interface)
        prefixlen = int(plan["address"].split("/")[1])
        self._host.request(
            _address(index, plan["gateway"], prefixlen), (RTM_NEWLINK, 0, _link(index, up=True))
        )

    @staticmethod
    def _configure_inside(inner: _Netlink, plan: dict[str, Any], *, ipv6: bool) -> None:
        """lo up; eth0 (without IPv6 addresses, where the kernel has IPv6: set while it is
        down, before it could make its link-local one) addressed and up; the default route."""
        (reply,) = inner.request((RTM_GETLINK, 0, _link() + _name(SANDBOX_INTERFACE)))
        eth0 = struct.unpack_from("=BxHiII", reply)[2]
        address, prefixlen = plan["address"].split("/")
        inner.request(
            (RTM_NEWLINK, 0, _link(LOOPBACK_INDEX, up=True)),
            *([_without_ipv6_addresses(eth0)] if ipv6 else []),
            _address(eth0, address, int(prefixlen)),
            (RTM_NEWLINK, 0, _link(eth0, up=True)),
            _default_route(plan["gateway"]),
        )


def serve_slots(fd: int) -> None:
    """A builder process (see sandbox/helper.py): one slot per request, in order."""
    maker = SlotMaker()

    def build(plan: dict[str, Any]) -> dict[str, Any]:
        if maker.stranded:  # a thread stuck in a slot's namespace: lambdad starts a new builder
            os._exit(1)
        namespace, elapsed_ms = maker.build(plan)
        return {"ms": elapsed_ms, "fds": [namespace]}

    serve(fd, build)
