/*
 * lambdad-init: PID 1 of an execution environment's PID namespace.
 *
 * The zygote spawns it (vfork + exec: no copy of the zygote's interpreter) as the first process
 * of a fresh PID namespace, then forks the environment's function process into the same
 * namespace: PID 2, the zygote's child, not this one's. So init costs a few pages instead of a
 * whole Python interpreter's private memory, and the zygote reaps the function process itself.
 *
 * usage: lambdad-init GO_FD [MOUNT_FD READY_FD UID GID]
 *
 * GO_FD is a pipe from the function process (PID 2): one byte once it has unshared its
 * namespaces, or end-of-file if it could not be forked or ended first (then init ends too).
 *
 * With MOUNT_FD (a SOCK_SEQPACKET socket whose other end lambdad holds), init joins the
 * function process's mount namespace then and mounts the environment's assignment there,
 * because the function process drops every privilege ahead: one message "TMP_MB" with
 * SCM_RIGHTS [code tree, (layers tree)] (detached mounts made by open_tree) -> it moves the code
 * tree onto /var/task, the layers onto /opt, mounts a tmpfs of TMP_MB MiB owned by UID:GID onto
 * /tmp; then "ok" (or "error ERRNO STEP") on READY_FD, which the function process waits for.
 * If the function process ends first, it stops waiting.
 *
 * Then it waits for the function process to end and exits, which ends every other process of
 * the namespace (the kernel kills them when PID 1 exits). Orphans reparented to it meanwhile
 * are reaped by the kernel (SIGCHLD ignored). How the function process ended is the zygote's
 * to report: it is the zygote's child.
 *
 * It makes system calls only, through sys() below, and uses no C library function: on x86-64
 * it is built freestanding (LAMBDAD_FREESTANDING: its own _start, no libc linked), because a
 * C library's start-up is most of such a program's cost on a VM, where the CPUID instructions
 * it runs to pick its string functions each exit to the hypervisor: a static glibc program
 * took ~550 us to spawn and exit on the development VM, this one ~60 us, once per environment.
 * Elsewhere the same code is built against the C library (syscall()).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/syscall.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_close_range
#define SYS_close_range 436
#endif
#ifndef SYS_move_mount
#define SYS_move_mount 429
#endif
#define MOVE_MOUNT_F_EMPTY_PATH 0x00000004
#define E_INTR 4
#define E_INVAL 22
#define E_CONNRESET 104

#if defined(LAMBDAD_FREESTANDING) && !defined(__x86_64__)
#error "the freestanding build is for x86-64 (build against the C library elsewhere)"
#endif

/* A system call: its result, or -errno. */
#ifdef LAMBDAD_FREESTANDING
static long sys(long n, long a, long b, long c, long d, long e) {
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    long result;
    __asm__ volatile("syscall"
                     : "=a"(result)
                     : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8)
                     : "rcx", "r11", "memory");
    return result;
}

/* What the compiler may call for struct copies and initialisers (built with
 * -fno-tree-loop-distribute-patterns: these loops are not turned into calls to themselves). */
void *memset(void *to, int byte, size_t n) {
    unsigned char *p = to;
    while (n--) {
        *p++ = (unsigned char)byte;
    }
    return to;
}

void *memcpy(void *to, const void *from, size_t n) {
    unsigned char *p = to;
    const unsigned char *q = from;
    while (n--) {
        *p++ = *q++;
    }
    return to;
}
#else
#include <errno.h>
#include <unistd.h>
static long sys(long n, long a, long b, long c, long d, long e) {
    long result = syscall(n, a, b, c, d, e);
    return result < 0 ? -errno : result;
}
#endif

static long parse_long(const char *text) {
    long sign = 1, value = 0;
    if (*text == '-') {
        sign = -1;
        text++;
    }
    while (*text >= '0' && *text <= '9') {
        value = value * 10 + (*text++ - '0');
    }
    return sign * value;
}

/* Text built into a fixed buffer (truncated when full, always terminated). */
struct text {
    char chars[96];
    size_t length;
};

static void add_char(struct text *t, char c) {
    if (t->length < sizeof t->chars - 1) {
        t->chars[t->length++] = c;
        t->chars[t->length] = '\0';
    }
}

static void add_string(struct text *t, const char *s) {
    while (*s != '\0') {
        add_char(t, *s++);
    }
}

static void add_long(struct text *t, long value) {
    char digits[24];
    int n = 0;
    unsigned long magnitude = value < 0 ? 0UL - (unsigned long)value : (unsigned long)value;
    do {
        digits[n++] = (char)('0' + magnitude % 10);
        magnitude /= 10;
    } while (magnitude != 0);
    if (value < 0) {
        add_char(t, '-');
    }
    while (n > 0) {
        add_char(t, digits[--n]);
    }
}

static void close_fd(int fd) {
    sys(SYS_close, fd, 0, 0, 0, 0);
}

static int wait_readable(struct pollfd *waits, int count) {
    long result;
    do {
        result = sys(SYS_ppoll, (long)waits, count, 0, 0, 8);
    } while (result == -E_INTR);
    return result < 0 ? (int)-result : 0;
}

/* 0 once `tree` (a detached mount) is on `target`, else the errno. */
static int move_tree(int tree, const char *target) {
    long result = sys(SYS_move_mount, tree, (long)"", AT_FDCWD, (long)target,
                      MOVE_MOUNT_F_EMPTY_PATH);
    close_fd(tree);
    return result < 0 ? (int)-result : 0;
}

/* 0 when the mounts were made (or nothing was asked), else the errno; `step` names it. */
static int mount_assignment(int mount_fd, long uid, long gid, const char **step) {
    char message[32];
    int fds[2] = {-1, -1};
    union {
        struct cmsghdr header;
        char space[CMSG_SPACE(sizeof fds)];
    } control;
    struct iovec iov = {message, sizeof message - 1};
    struct msghdr msg = {0};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.space;
    msg.msg_controllen = sizeof control.space;
    *step = "receive";
    long n = sys(SYS_recvmsg, mount_fd, (long)&msg, MSG_CMSG_CLOEXEC, 0, 0);
    if (n <= 0) {
        return n == 0 ? E_CONNRESET : (int)-n; /* lambdad discarded this sandbox */
    }
    message[n] = '\0';
    int count = 0;
    struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
    if (cmsg != NULL && cmsg->cmsg_level == SOL_SOCKET && cmsg->cmsg_type == SCM_RIGHTS) {
        count = (int)((cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        const int *passed = (const int *)CMSG_DATA(cmsg);
        for (int i = 0; i < count && i < 2; i++) {
            fds[i] = passed[i];
        }
    }
    *step = "message";
    if (count < 1 || count > 2) {
        return E_INVAL;
    }
    int err;
    if (count == 2) {
        *step = "move_mount /opt";
        if ((err = move_tree(fds[1], "/opt")) != 0) {
            close_fd(fds[0]);
            return err;
        }
    }
    *step = "move_mount /var/task";
    if ((err = move_tree(fds[0], "/var/task")) != 0) {
        return err;
    }
    struct text options = {{0}, 0};
    add_string(&options, "size=");
    add_long(&options, parse_long(message));
    add_string(&options, "m,mode=1777,uid=");
    add_long(&options, uid);
    add_string(&options, ",gid=");
    add_long(&options, gid);
    *step = "mount /tmp";
    long mounted = sys(SYS_mount, (long)"tmpfs", (long)"/tmp", (long)"tmpfs",
                       MS_NOSUID | MS_NODEV, (long)options.chars);
    return mounted < 0 ? (int)-mounted : 0;
}

/* Wait for the assignment's mounts (or for the function process to end first). */
static void serve_mounts(int function, int mount_fd, int ready_fd, long uid, long gid) {
    struct pollfd waits[2] = {{mount_fd, POLLIN, 0}, {function, POLLIN, 0}};
    wait_readable(waits, 2);
    if (waits[0].revents != 0) {
        const char *step = "";
        int err = mount_assignment(mount_fd, uid, gid, &step);
        struct text report = {{0}, 0};
        if (err == 0) {
            add_string(&report, "ok");
        } else {
            add_string(&report, "error ");
            add_long(&report, err);
            add_string(&report, " ");
            add_string(&report, step);
        }
        /* (a failed write: the function process is gone, and the wait below notices) */
        sys(SYS_write, ready_fd, (long)report.chars, (long)report.length, 0, 0);
    }
    close_fd(mount_fd);
    close_fd(ready_fd);
}

/* Close every descriptor but stdin/out/err and `kept` (ascending; the zygote's are all
 * close-on-exec, so this is a guard, not a clean-up). */
static void close_others(const int *kept, int count) {
    unsigned long from = 3;
    for (int i = 0; i < count; i++) {
        if (kept[i] >= (long)from) {
            if (kept[i] > (long)from) {
                sys(SYS_close_range, (long)from, kept[i] - 1, 0, 0, 0);
            }
            from = (unsigned long)kept[i] + 1;
        }
    }
    sys(SYS_close_range, (long)from, (long)~0U, 0, 0, 0);
}

static void ignore_signal(int signal) {
    struct {
        void *handler;
        unsigned long flags;
        void *restorer;
        unsigned long mask;
    } action = {(void *)SIG_IGN, 0, NULL, 0}; /* the kernel's struct sigaction */
    sys(SYS_rt_sigaction, signal, (long)&action, 0, 8, 0);
}

int main(int argc, char **argv) {
    if (argc != 2 && argc != 6) {
        return 2;
    }
    int go_fd = (int)parse_long(argv[1]);
    int kept[3] = {go_fd, -1, -1};
    if (argc == 6) {
        kept[1] = (int)parse_long(argv[2]);
        kept[2] = (int)parse_long(argv[3]);
    }
    for (int i = 0; i < 3; i++) { /* ascending */
        for (int j = i + 1; j < 3; j++) {
            if (kept[j] < kept[i]) {
                int swap = kept[i];
                kept[i] = kept[j];
                kept[j] = swap;
            }
        }
    }
    close_others(kept, 3);
    ignore_signal(SIGTERM);
    ignore_signal(SIGCHLD); /* orphans reparented to PID 1 are reaped by the kernel */
    if (sys(SYS_chdir, (long)"/", 0, 0, 0, 0) != 0) {
        return 1;
    }
    char go;
    long n;
    do {
        n = sys(SYS_read, go_fd, (long)&go, 1, 0, 0);
    } while (n == -E_INTR);
    if (n != 1) {
        return 1; /* the function process was not forked, or ended before it unshared */
    }
    long function = sys(SYS_pidfd_open, 2, 0, 0, 0, 0); /* PID 2: forked right after init */
    if (function < 0) {
        return 1;
    }
    if (argc == 6) {
        if (sys(SYS_setns, function, CLONE_NEWNS, 0, 0, 0) != 0) { /* now, off the request path */
            return 1;                                             /* (the namespace ends with init) */
        }
        serve_mounts((int)function, (int)parse_long(argv[2]), (int)parse_long(argv[3]),
                     parse_long(argv[4]), parse_long(argv[5]));
    }
    struct pollfd wait = {(int)function, POLLIN, 0};
    wait_readable(&wait, 1);
    return 0;
}

#ifdef LAMBDAD_FREESTANDING
/* The entry point: the kernel leaves argc, then argv's pointers, on the stack. */
__attribute__((used, noreturn)) void lambdad_init_start(long *stack) {
    int status = main((int)stack[0], (char **)(stack + 1));
    for (;;) {
        sys(SYS_exit_group, status, 0, 0, 0, 0);
    }
}

__asm__(".text\n"
        ".globl _start\n"
        ".type _start, @function\n"
        "_start:\n"
        "    xor %ebp, %ebp\n"
        "    mov %rsp, %rdi\n"
        "    and $-16, %rsp\n"
        "    call lambdad_init_start\n"
        "    hlt\n");
#endif
