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


class SpareTrees:
    """Read-only trees of recently used directories, made ahead: a sandbox's assignment takes
    one instead of cloning a mount on the request path, where open_tree's clone (the mount
    namespace's lock, the copy) and mount_setattr cost ~60 us of a ~2.4 ms cold start. One
    spare per directory, for the `limit` directories used last; made again after each take,
    off the request path (`refill`). A spare is handed out only while its directory is still
    the same one (device and inode: a package removed and extracted again is a new directory)."""

    def __init__(self, limit: int = 64) -> None:
        self._limit = limit
        # directory -> (the tree's fd, its st_dev, st_ino), least recently used first
        self._spares: dict[str, tuple[int, int, int]] = {}

    def take(self, path: str) -> int:
        """A detached read-only tree of `path` (the caller closes it): the spare if it is
        current, else cloned now."""
        spare = self._spares.pop(path, None)
        if spare is not None:
            fd, dev, ino = spare
            try:
                now = os.stat(path)
            except OSError:
                now = None
            if now is not None and (now.st_dev, now.st_ino) == (dev, ino):
                return fd
            os.close(fd)
        return read_only_tree(path)

    def refill(self, path: str) -> None:
        """Make `path`'s spare if it has none (errors are left to the next take)."""
        if path in self._spares:
            return
        try:
            fd = read_only_tree(path)
        except OSError:
            return
        identity = os.fstat(fd)
        self._spares[path] = (fd, identity.st_dev, identity.st_ino)
        while len(self._spares) > self._limit:
            oldest = next(iter(self._spares))
            os.close(self._spares.pop(oldest)[0])

    def __len__(self) -> int:
        return len(self._spares)

    def close(self) -> None:
        for fd, _, _ in self._spares.values():
            os.close(fd)
        self._spares.clear()
