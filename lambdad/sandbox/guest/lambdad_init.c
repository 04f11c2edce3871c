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
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

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

static int move_tree(int tree, const char *target) {
    int result = (int)syscall(SYS_move_mount, tree, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH);
    close(tree);
    return result;
}

/* 0 when the mounts were made (or nothing was asked), else the errno; `step` names it. */
static int mount_assignment(int mount_fd, long uid, long gid, const char **step) {
    char text[32];
    int fds[2] = {-1, -1};
    union {
        struct cmsghdr header;
        char space[CMSG_SPACE(sizeof fds)];
    } control;
    struct iovec iov = {text, sizeof text - 1};
    struct msghdr msg = {0};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.space;
    msg.msg_controllen = sizeof control.space;
    *step = "receive";
    ssize_t n = recvmsg(mount_fd, &msg, MSG_CMSG_CLOEXEC);
    if (n <= 0) {
        return n == 0 ? ECONNRESET : errno; /* lambdad discarded this sandbox */
    }
    text[n] = '\0';
    int count = 0;
    struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
    if (cmsg != NULL && cmsg->cmsg_level == SOL_SOCKET && cmsg->cmsg_type == SCM_RIGHTS) {
        count = (int)((cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        memcpy(fds, CMSG_DATA(cmsg), sizeof(int) * (size_t)(count > 2 ? 2 : count));
    }
    *step = "message";
    if (count < 1 || count > 2) {
        return EINVAL;
    }
    if (count == 2) {
        *step = "move_mount /opt";
        if (move_tree(fds[1], "/opt") != 0) {
            int err = errno;
            close(fds[0]);
            return err;
        }
    }
    *step = "move_mount /var/task";
    if (move_tree(fds[0], "/var/task") != 0) {
        return errno;
    }
    char options[96];
    snprintf(options, sizeof options, "size=%ldm,mode=1777,uid=%ld,gid=%ld", strtol(text, NULL, 10),
             uid, gid);
    *step = "mount /tmp";
    if (mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, options) != 0) {
        return errno;
    }
    return 0;
}

/* Wait for the assignment's mounts (or for the function process to end first). */
static void serve_mounts(int function, int mount_fd, int ready_fd, long uid, long gid) {
    struct pollfd waits[2] = {{mount_fd, POLLIN, 0}, {function, POLLIN, 0}};
    while (poll(waits, 2, -1) < 0) {
        if (errno != EINTR) {
            break;
        }
    }
    if (waits[0].revents != 0) {
        const char *step = "";
        int err = mount_assignment(mount_fd, uid, gid, &step);
        char report[96];
        int n = err == 0 ? snprintf(report, sizeof report, "ok")
                         : snprintf(report, sizeof report, "error %d %s", err, step);
        if (write(ready_fd, report, (size_t)n) < 0) {
            /* the function process is gone: the wait below notices */
        }
    }
    close(mount_fd);
    close(ready_fd);
}

/* Close every descriptor but stdin/out/err and `kept` (ascending; the zygote's are all
 * close-on-exec, so this is a guard, not a clean-up). */
static void close_others(const int *kept, int count) {
    unsigned int from = 3;
    for (int i = 0; i < count; i++) {
        if (kept[i] >= (int)from) {
            if (kept[i] > (int)from) {
                syscall(SYS_close_range, from, (unsigned int)kept[i] - 1, 0);
            }
            from = (unsigned int)kept[i] + 1;
        }
    }
    syscall(SYS_close_range, from, ~0U, 0);
}

static int ascending(const void *a, const void *b) {
    return *(const int *)a - *(const int *)b;
}

int main(int argc, char **argv) {
    if (argc != 2 && argc != 6) {
        return 2;
    }
    int kept[3] = {(int)strtol(argv[1], NULL, 10), -1, -1};
    if (argc == 6) {
        kept[1] = (int)strtol(argv[2], NULL, 10);
        kept[2] = (int)strtol(argv[3], NULL, 10);
    }
    qsort(kept, 3, sizeof kept[0], ascending);
    close_others(kept, 3);
    signal(SIGTERM, SIG_IGN);
    signal(SIGCHLD, SIG_IGN); /* orphans reparented to PID 1 are reaped by the kernel */
    if (chdir("/") != 0) {
        return 1;
    }
    char go;
    ssize_t n;
    do {
        n = read((int)strtol(argv[1], NULL, 10), &go, 1);
    } while (n < 0 && errno == EINTR);
    if (n != 1) {
        return 1; /* the function process was not forked, or ended before it unshared */
    }
    int function = (int)syscall(SYS_pidfd_open, 2, 0); /* PID 2: forked right after init */
    if (function < 0) {
        return 1;
    }
    if (argc == 6) {
        if (setns(function, CLONE_NEWNS) != 0) { /* now, off the request path */
            return 1;                              /* (the namespace ends with init) */
        }
        serve_mounts(function, (int)strtol(argv[2], NULL, 10), (int)strtol(argv[3], NULL, 10),
                     strtol(argv[4], NULL, 10), strtol(argv[5], NULL, 10));
    }
    struct pollfd wait = {function, POLLIN, 0};
    while (poll(&wait, 1, -1) < 0 && errno == EINTR) {
    }
    return 0;
}
