/*
 * The sandbox zygote's fork loop, in C (loaded by lambdad_forkserver with ctypes.PyDLL, so it
 * runs holding the interpreter's lock; the zygote has no other thread).
 *
 * Why: the zygote forks with hundreds of children sharing its memory, so every page its loop
 * writes between two forks is copied (copy-on-write) after each of them. The Python loop wrote
 * ~155 pages per fork (its objects' reference counts, allocations): ~0.5 ms of CPU per
 * environment in a burst. This loop writes a few: its stack, the request buffer, the record
 * of the fork.
 *
 * It serves lambdad_forkserver's protocol for sandboxes: a request is the header line
 * "ID PIDNS INIT UID GID\n" then JSON, which only the child reads. Per request it unshares a
 * PID namespace (PIDNS 1), spawns lambdad-init there (INIT 1: with the "go" pipe; INIT 2: also
 * the mount socket and the "ready" pipe; usage in lambdad_init.c), forks the child (PID 2 of
 * the namespace; PID 1 when there is no init, with a status pipe), returns to its own PID
 * namespace and answers {"id": ID, "pid": PID} or {"id": ID, "error": "..."}.
 *
 * lambdad_fork_loop returns to Python: FORK_LOOP_CHILD in each forked child (`child` filled
 * in), FORK_LOOP_WAKE when the wake pipe is readable or a signal interrupted the wait (Python
 * then runs its handlers and reaps), FORK_LOOP_FULL when `forked` is full, FORK_LOOP_EOF once
 * lambdad closed the socket, FORK_LOOP_BAD_REQUEST for a request without a header (what the
 * Python loop raises for), FORK_LOOP_STRANDED if it could not return to its own PID namespace
 * (errno is set). In every case the first `*count` entries of `forked` are the forks
 * made since the last return, for Python's tables (each child with its init or status pipe).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

/* The interpreter's fork protocol (what os.fork calls), resolved in the loading process. */
void PyOS_BeforeFork(void);
void PyOS_AfterFork_Parent(void);
void PyOS_AfterFork_Child(void);

enum {
    FORK_LOOP_EOF = 0,
    FORK_LOOP_WAKE = 1,
    FORK_LOOP_CHILD = 2,
    FORK_LOOP_FULL = 3,
    FORK_LOOP_BAD_REQUEST = 4,
    FORK_LOOP_STRANDED = 5,
};
enum { INIT_NONE = 0, INIT_GO = 1, INIT_MOUNTS = 2 };
#define MAX_FDS 8

struct fork_loop_config {
    int control;          /* the SOCK_SEQPACKET socket to lambdad */
    int wake;             /* read end of the signal wake-up pipe */
    int own_pid_namespace; /* to return to after each fork */
    int init_dir;         /* directory of lambdad-init (O_PATH), or -1: no compiled init */
    const char *init_name;
    unsigned fds_allowed; /* bit n: a request may carry n descriptors */
    char *buffer;
    size_t buffer_size;
};

struct fork_loop_forked {
    int pid;       /* the child; -1: the fork failed (then init_pid's init ends by itself) */
    int init_pid;  /* its spawned init, or -1 */
    int status_fd; /* read end of its status pipe (no init: it is PID 1), or -1 */
};

struct fork_loop_child {
    size_t body_offset, body_size; /* the request's JSON in the buffer */
    int fds[MAX_FDS];
    int nfds;
    int go, mounts, ready; /* its init's descriptors (-1: none; see lambdad_jail.spawn_init) */
    int status_fd;         /* write end of its status pipe, or -1 */
};

static void close_all(const int *fds, int n) {
    for (int i = 0; i < n; i++)
        close(fds[i]);
}

static void answer(int control, long id, pid_t pid, const char *error, int err) {
    char reply[256];
    int n;
    if (error == NULL)
        n = snprintf(reply, sizeof reply, "{\"id\": %ld, \"pid\": %d}", id, (int)pid);
    else
        n = snprintf(reply, sizeof reply, "{\"id\": %ld, \"error\": \"%s: %s\"}", id, error,
                     strerror(err));
    if (n <= 0)
        return;
    size_t size = (size_t)n < sizeof reply ? (size_t)n : sizeof reply - 1;
    /* A send waits while the socket's send buffer is full (lambdad has not read the answers
     * and exit reports queued before), and a SIGCHLD then interrupts it (the interpreter's
     * handlers are not SA_RESTART): send again, or the answer is lost and lambdad waits for
     * that fork for ever. */
    while (send(control, reply, size, 0) < 0 && errno == EINTR)
        ;
}

/* lambdad-init as PID 1 of the namespace just unshared: vfork + exec, never a copy of the
 * interpreter. Fills `child`'s go/mounts/ready (ours); returns its pid, or -1 (errno). */
static pid_t spawn_init(const struct fork_loop_config *config, int kind, long uid, long gid,
                        const int *fds, int nfds, struct fork_loop_child *child) {
    int go[2], ready[2] = {-1, -1}, mounts[2] = {-1, -1};
    int theirs[3], ntheirs = 0;
    pid_t pid = -1;
    int err = 0;
    if (pipe2(go, O_CLOEXEC) != 0)
        return -1;
    theirs[ntheirs++] = go[0];
    if (kind == INIT_MOUNTS) {
        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, mounts) != 0 ||
            pipe2(ready, O_CLOEXEC) != 0) {
            err = errno;
            goto fail;
        }
        theirs[ntheirs++] = mounts[0];
        theirs[ntheirs++] = ready[1];
    }
    char numbers[5][24];
    char *argv[7] = {"lambdad-init", NULL};
    int argc = 1;
    for (int i = 0; i < ntheirs; i++) {
        snprintf(numbers[i], sizeof numbers[i], "%d", theirs[i]);
        argv[argc++] = numbers[i];
        fcntl(theirs[i], F_SETFD, 0); /* inherited by init */
    }
    if (ntheirs > 1) {
        snprintf(numbers[3], sizeof numbers[3], "%ld", uid);
        snprintf(numbers[4], sizeof numbers[4], "%ld", gid);
        argv[argc++] = numbers[3];
        argv[argc++] = numbers[4];
    }
    argv[argc] = NULL;
    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attributes;
    posix_spawn_file_actions_init(&actions);
    for (int i = 0; i < nfds; i++) /* lambdad's descriptors arrived without close-on-exec */
        posix_spawn_file_actions_addclose(&actions, fds[i]);
    posix_spawnattr_init(&attributes);
    posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETSID);
    char *no_environment[] = {NULL};
    if (fchdir(config->init_dir) != 0) {
        err = errno;
    } else {
        /* exec'd by a name relative to its directory: the zygote's root lacks it */
        err = posix_spawn(&pid, config->init_name, &actions, &attributes, argv, no_environment);
        if (chdir("/") != 0 && err == 0)
            err = errno;
    }
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attributes);
    close_all(theirs, ntheirs);
    if (err != 0) {
        close(go[1]);
        if (kind == INIT_MOUNTS) {
            close(mounts[1]);
            close(ready[0]);
        }
        errno = err;
        return -1;
    }
    child->go = go[1];
    child->mounts = mounts[1];
    child->ready = ready[0];
    return pid;
fail:
    close(go[0]);
    close(go[1]);
    for (int i = 0; i < 2; i++) {
        if (mounts[i] >= 0)
            close(mounts[i]);
        if (ready[i] >= 0)
            close(ready[i]);
    }
    errno = err;
    return -1;
}

static void close_init_descriptors(struct fork_loop_child *child) {
    int *ours[3] = {&child->go, &child->mounts, &child->ready};
    for (int i = 0; i < 3; i++) {
        if (*ours[i] >= 0)
            close(*ours[i]);
        *ours[i] = -1;
    }
}

/* Receive one request: its size (0: lambdad closed the socket; -1: errno), its descriptors
 * in `child`, whether it was cut short in `*truncated`. */
static ssize_t receive(const struct fork_loop_config *config, struct fork_loop_child *child,
                       int *truncated) {
    union {
        char space[CMSG_SPACE(MAX_FDS * sizeof(int))];
        struct cmsghdr align;
    } control;
    struct iovec iov = {config->buffer, config->buffer_size};
    struct msghdr message = {0};
    message.msg_iov = &iov;
    message.msg_iovlen = 1;
    message.msg_control = control.space;
    message.msg_controllen = sizeof control.space;
    ssize_t size = recvmsg(config->control, &message, 0);
    child->nfds = 0;
    if (size < 0)
        return -1;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&message); c != NULL; c = CMSG_NXTHDR(&message, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        int n = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        for (int i = 0; i < n && child->nfds < MAX_FDS; i++)
            memcpy(&child->fds[child->nfds++], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
    }
    *truncated = (message.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0;
    return size;
}

int lambdad_fork_loop(const struct fork_loop_config *config, struct fork_loop_forked *forked,
                      int capacity, int *count, struct fork_loop_child *child) {
    *count = 0;
    for (;;) {
        if (*count >= capacity)
            return FORK_LOOP_FULL;
        struct pollfd waits[2] = {{config->control, POLLIN, 0}, {config->wake, POLLIN, 0}};
        if (poll(waits, 2, -1) < 0)
            return errno == EINTR ? FORK_LOOP_WAKE : FORK_LOOP_EOF;
        if (waits[1].revents)
            return FORK_LOOP_WAKE;
        if (!waits[0].revents)
            continue;
        int truncated = 0;
        ssize_t size = receive(config, child, &truncated);
        if (size < 0 && errno == EINTR)
            return FORK_LOOP_WAKE;
        if (size <= 0)
            return FORK_LOOP_EOF;
        char *line_end = memchr(config->buffer, '\n', (size_t)size);
        long id, uid, gid;
        int new_namespace, kind, consumed = 0, fields = 0;
        if (line_end != NULL) {
            *line_end = '\0'; /* the header alone is scanned */
            fields = sscanf(config->buffer, "%ld %d %d %ld %ld%n", &id, &new_namespace, &kind,
                            &uid, &gid, &consumed);
            *line_end = '\n';
        }
        if (fields != 5 || config->buffer + consumed != line_end) {
            close_all(child->fds, child->nfds);
            return FORK_LOOP_BAD_REQUEST;
        }
        if (truncated || child->nfds >= 32 || !(config->fds_allowed & (1u << child->nfds))) {
            close_all(child->fds, child->nfds);
            answer(config->control, id, 0, "request", truncated ? EMSGSIZE : EBADF);
            continue;
        }
        child->body_offset = (size_t)(line_end + 1 - config->buffer);
        child->body_size = (size_t)size - child->body_offset;
        child->go = child->mounts = child->ready = child->status_fd = -1;
        pid_t init = -1;
        int status[2] = {-1, -1};
        if (new_namespace) {
            if (unshare(CLONE_NEWPID) != 0) {
                int err = errno;
                close_all(child->fds, child->nfds);
                answer(config->control, id, 0, "unshare(CLONE_NEWPID)", err);
                continue;
            }
            if (kind != INIT_NONE && config->init_dir >= 0) {
                init = spawn_init(config, kind, uid, gid, child->fds, child->nfds, child);
                if (init < 0) {
                    int err = errno;
                    setns(config->own_pid_namespace, CLONE_NEWPID);
                    close_all(child->fds, child->nfds);
                    answer(config->control, id, 0, "spawn init", err);
                    continue;
                }
            } else if (pipe2(status, O_CLOEXEC) != 0) {
                int err = errno;
                setns(config->own_pid_namespace, CLONE_NEWPID);
                close_all(child->fds, child->nfds);
                answer(config->control, id, 0, "pipe", err);
                continue;
            }
        }
        PyOS_BeforeFork();
        pid_t pid = fork();
        int fork_error = errno;
        if (pid == 0) {
            PyOS_AfterFork_Child();
            if (status[0] >= 0) {
                close(status[0]);
                child->status_fd = status[1];
            }
            return FORK_LOOP_CHILD;
        }
        PyOS_AfterFork_Parent();
        int returned = !new_namespace || setns(config->own_pid_namespace, CLONE_NEWPID) == 0;
        int setns_error = errno;
        if (pid > 0 || init > 0) {
            forked[*count].pid = pid > 0 ? pid : -1;
            forked[*count].init_pid = init;
            forked[*count].status_fd = pid > 0 ? status[0] : -1;
            (*count)++;
        }
        close_init_descriptors(child);
        if (status[1] >= 0)
            close(status[1]);
        if (pid < 0 && status[0] >= 0)
            close(status[0]);
        close_all(child->fds, child->nfds);
        answer(config->control, id, pid, pid > 0 ? NULL : "fork", fork_error);
        errno = setns_error;
        if (!returned) /* children would be born in the last one's namespace: stop here */
            return FORK_LOOP_STRANDED;
    }
}
