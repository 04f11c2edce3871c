"""The seccomp filter of every sandboxed environment, as classic BPF built here.

Denied system calls fail with EPERM: mounting, namespaces, tracing other processes, kernel
modules and kexec, BPF, keyrings, clock and host settings, io_uring, and clone() with any
namespace flag. clone3() answers ENOSYS so the C library falls back to clone(), whose flags a
classic BPF filter can inspect. x32 system calls and foreign architectures are refused.

A SnapStart snapshot runs under a laxer filter (``snapshot=True``): it may unshare mount, PID,
network, IPC and UTS namespaces, mount and set a hostname — only ever in namespaces owned by its
own unprivileged user namespace — because each restored environment it forks builds its own
sandbox that way; every restored environment then stacks the full filter on top.
"""

from __future__ import annotations

import errno
import platform
import struct

AUDIT_ARCH_X86_64 = 0xC000003E
X32_SYSCALL_BIT = 0x40000000

BPF_LD_W_ABS = 0x20
BPF_JEQ_K = 0x15
BPF_JGE_K = 0x35
BPF_JSET_K = 0x45
BPF_RET_K = 0x06

RET_ALLOW = 0x7FFF0000
RET_KILL_PROCESS = 0x80000000
RET_ERRNO = 0x00050000

# Offsets in struct seccomp_data.
NR, ARCH, ARG0_LOW = 0, 4, 16

CLONE_NAMESPACE_FLAGS = (
    0x00020000  # CLONE_NEWNS
    | 0x02000000  # CLONE_NEWCGROUP
    | 0x04000000  # CLONE_NEWUTS
    | 0x08000000  # CLONE_NEWIPC
    | 0x10000000  # CLONE_NEWUSER
    | 0x20000000  # CLONE_NEWPID
    | 0x40000000  # CLONE_NEWNET
    | 0x00000080  # CLONE_NEWTIME
)

# x86_64 numbers of the calls an environment may not make.
DENIED_X86_64 = {
    "mount": 165,
    "umount2": 166,
    "pivot_root": 155,
    "chroot": 161,
    "ptrace": 101,
    "process_vm_readv": 310,
    "process_vm_writev": 311,
    "kexec_load": 246,
    "kexec_file_load": 320,
    "init_module": 175,
    "finit_module": 313,
    "delete_module": 176,
    "bpf": 321,
    "keyctl": 250,
    "add_key": 248,
    "request_key": 249,
    "unshare": 272,
    "setns": 308,
    "perf_event_open": 298,
    "userfaultfd": 323,
    "swapon": 167,
    "swapoff": 168,
    "reboot": 169,
    "syslog": 103,
    "acct": 163,
    "quotactl": 179,
    "quotactl_fd": 443,
    "open_by_handle_at": 304,
    "name_to_handle_at": 303,
    "lookup_dcookie": 212,
    "iopl": 172,
    "ioperm": 173,
    "settimeofday": 164,
    "clock_settime": 227,
    "clock_adjtime": 305,
    "adjtimex": 159,
    "sethostname": 170,
    "setdomainname": 171,
    "vhangup": 153,
    "kcmp": 312,
    "fsopen": 430,
    "fsconfig": 431,
    "fsmount": 432,
    "fspick": 433,
    "open_tree": 428,
    "move_mount": 429,
    "mount_setattr": 442,
    "uselib": 134,
    "pidfd_getfd": 438,
    "fanotify_init": 300,
    "io_uring_setup": 425,
    "io_uring_enter": 426,
    "io_uring_register": 427,
    "_sysctl": 156,
    "create_module": 174,
    "nfsservctl": 180,
}
CLONE_X86_64 = 56
CLONE3_X86_64 = 435
UNSHARE_X86_64 = 272
# What a snapshot needs to give each restored environment namespaces of its own.
SNAPSHOT_ALLOWED = frozenset({"unshare", "mount", "sethostname"})
# unshare() flags a snapshot may never use.
SNAPSHOT_UNSHARE_DENIED = (
    0x02000000  # CLONE_NEWCGROUP
    | 0x10000000  # CLONE_NEWUSER
    | 0x00000080  # CLONE_NEWTIME
)


def _insn(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("<HBBI", code, jt, jf, k)


def build_filter(machine: str | None = None, *, snapshot: bool = False) -> bytes | None:
    """The filter for this machine's architecture, or None where lambdad has no table;
    `snapshot` builds the laxer filter of a SnapStart snapshot (see above)."""
    if (machine or platform.machine()) != "x86_64":
        return None
    skipped = SNAPSHOT_ALLOWED if snapshot else frozenset()
    denied = sorted({nr for name, nr in DENIED_X86_64.items() if name not in skipped})
    eperm = RET_ERRNO | errno.EPERM
    program = [
        _insn(BPF_LD_W_ABS, 0, 0, ARCH),
        _insn(BPF_JEQ_K, 1, 0, AUDIT_ARCH_X86_64),
        _insn(BPF_RET_K, 0, 0, RET_KILL_PROCESS),
        _insn(BPF_LD_W_ABS, 0, 0, NR),
        _insn(BPF_JGE_K, 0, 1, X32_SYSCALL_BIT),
        _insn(BPF_RET_K, 0, 0, eperm),
        _insn(BPF_JEQ_K, 0, 1, CLONE3_X86_64),
        _insn(BPF_RET_K, 0, 0, RET_ERRNO | errno.ENOSYS),
    ]
    for number in denied:
        program.append(_insn(BPF_JEQ_K, 0, 1, number))
        program.append(_insn(BPF_RET_K, 0, 0, eperm))
    if snapshot:
        program += [
            _insn(BPF_JEQ_K, 0, 4, UNSHARE_X86_64),
            _insn(BPF_LD_W_ABS, 0, 0, ARG0_LOW),
            _insn(BPF_JSET_K, 0, 1, SNAPSHOT_UNSHARE_DENIED),
            _insn(BPF_RET_K, 0, 0, eperm),
            _insn(BPF_RET_K, 0, 0, RET_ALLOW),
        ]
    program += [
        _insn(BPF_JEQ_K, 0, 4, CLONE_X86_64),
        _insn(BPF_LD_W_ABS, 0, 0, ARG0_LOW),
        _insn(BPF_JSET_K, 0, 1, CLONE_NAMESPACE_FLAGS),
        _insn(BPF_RET_K, 0, 0, eperm),
        _insn(BPF_RET_K, 0, 0, RET_ALLOW),
        _insn(BPF_RET_K, 0, 0, RET_ALLOW),
    ]
    return b"".join(program)
