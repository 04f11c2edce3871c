"""Detached mount trees (open_tree + mount_setattr), for binding code into a running sandbox.

lambdad clones a read-only mount of a host directory without attaching it anywhere and passes
the file descriptor to a prepared sandbox, which moves it onto /var/task inside its own mount
namespace (move_mount). Nothing is unmounted on the request path, so no RCU grace period is
waited for.
"""

from __future__ import annotations

import ctypes
import os
import platform

_libc = ctypes.CDLL(None, use_errno=True)

_OPEN_TREE = {"x86_64": 428, "aarch64": 428}
_MOUNT_SETATTR = {"x86_64": 442, "aarch64": 442}
AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
OPEN_TREE_CLONE = 1
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4


class _MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


def supported() -> bool:
    return platform.machine() in _OPEN_TREE


def read_only_tree(path: str) -> int:
    """A new detached, read-only, nosuid, nodev mount of `path`; the caller closes the fd."""
    machine = platform.machine()
    fd = _libc.syscall(
        _OPEN_TREE[machine],
        AT_FDCWD,
        os.fsencode(path),
        OPEN_TREE_CLONE | os.O_CLOEXEC | AT_RECURSIVE,
    )
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"open_tree {path}: {os.strerror(err)}")
    attr = _MountAttr(MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, 0, 0, 0)
    result = _libc.syscall(
        _MOUNT_SETATTR[machine],
        fd,
        b"",
        AT_EMPTY_PATH | AT_RECURSIVE,
        ctypes.byref(attr),
        ctypes.sizeof(attr),
    )
    if result != 0:
        err = ctypes.get_errno()
        os.close(fd)
        raise OSError(err, f"mount_setattr {path}: {os.strerror(err)}")
    return int(fd)
