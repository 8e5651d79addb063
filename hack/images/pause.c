/*
 * The pod sandbox's "pause" process for popup.local/pause (built by hack/images.sh with
 * `musl-gcc -static -Os`). It holds the pod's namespaces open and does nothing else:
 *   - SIGINT / SIGTERM: exit 0 at once (containerd stops the sandbox with SIGTERM first);
 *   - SIGCHLD: reap every exited child, since as PID 1 of a shared PID namespace orphans land here;
 *   - otherwise: sleep in pause() forever.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_stop(int sig) {
    (void)sig;
    _exit(0);
}

static void on_child(int sig) {
    int saved = errno; /* a handler must not clobber errno of the interrupted code */
    (void)sig;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
    errno = saved;
}

static int handle(int sig, void (*fn)(int), int flags) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = fn;
    sa.sa_flags = flags;
    sigemptyset(&sa.sa_mask);
    return sigaction(sig, &sa, NULL);
}

int main(int argc, char **argv) {
    if (argc > 1 && (strcmp(argv[1], "-v") == 0 || strcmp(argv[1], "--version") == 0)) {
        puts("popup pause 1.0");
        return 0;
    }
    if (getpid() != 1) {
        /* Still useful outside a PID namespace (tests), so only say so. */
        fputs("pause: not running as PID 1\n", stderr);
    }
    if (handle(SIGINT, on_stop, 0) < 0 || handle(SIGTERM, on_stop, 0) < 0 ||
        handle(SIGCHLD, on_child, SA_NOCLDSTOP | SA_RESTART) < 0) {
        perror("pause: sigaction");
        return 1;
    }
    for (;;) {
        pause();
    }
    /* not reached */
    return 42;
}
