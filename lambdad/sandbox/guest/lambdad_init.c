/*
 * lambdad-init: PID 1 of an execution environment's PID namespace.
 *
 * lambdad_jail.prepare forks the environment's function process from a Python process that is
 * PID 1 of a fresh PID namespace, then execs this program in its place, so the namespace's
 * init costs a few pages instead of a whole Python interpreter's private memory.
 *
 * usage: lambdad-init FUNCTION_PID STATUS_FD
 * Reaps every process that ends in the namespace (orphans are reparented to PID 1). When the
 * function process ends, writes how ("code N" or "signal N") to STATUS_FD and exits 0: PID 1
 * cannot end itself by a signal, so the zygote reports that status instead of this one.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 3) {
        return 2;
    }
    pid_t function = (pid_t)strtol(argv[1], NULL, 10);
    int status_fd = (int)strtol(argv[2], NULL, 10);
    signal(SIGTERM, SIG_IGN);
    for (;;) {
        int status;
        pid_t pid = waitpid(-1, &status, 0);
        if (pid < 0) {
            if (errno == EINTR) {
                continue;
            }
            return 1; /* no children left: the function process is gone */
        }
        if (pid == function) {
            char report[32];
            int n = WIFSIGNALED(status)
                        ? snprintf(report, sizeof report, "signal %d", WTERMSIG(status))
                        : snprintf(report, sizeof report, "code %d", WEXITSTATUS(status));
            if (write(status_fd, report, (size_t)n) < 0) {
                return 1;
            }
            return 0;
        }
    }
}
