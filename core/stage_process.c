/* Child processes for isolated stages. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include "plugin_host.h"
#include "stage_link.h"
#include "stage_process.h"

#define S_HOST_NAME "livehub-stage-host"
#define S_RUN_DIR_BASE_MAX 64 /* longer bases would not leave room for socket names */

static bool s_usable_base(const char *base)
{
    struct stat info;
    return base && *base == '/' && strlen(base) <= S_RUN_DIR_BASE_MAX && stat(base, &info) == 0 &&
           S_ISDIR(info.st_mode) && access(base, W_OK | X_OK) == 0;
}

char *lh_run_dir_new(lh_error_t *err)
{
    const char *bases[] = {getenv("XDG_RUNTIME_DIR"), getenv("TMPDIR"), "/tmp"};
    for (size_t i = 0; i < sizeof bases / sizeof bases[0]; i++) {
        if (!s_usable_base(bases[i]))
            continue;
        char *dir = NULL;
        if (asprintf(&dir, "%s/livehub-%d-XXXXXX", bases[i], (int)getpid()) < 0)
            break;
        if (mkdtemp(dir)) /* mode 0700 */
            return dir;
        free(dir);
    }
    lh_error_set(err, "cannot create a runtime directory for isolated stages: %s",
                 strerror(errno));
    return NULL;
}

void lh_run_dir_remove(const char *dir)
{
    if (!dir)
        return;
    DIR *listing = opendir(dir);
    if (listing) {
        struct dirent *entry;
        while ((entry = readdir(listing)))
            if (strcmp(entry->d_name, ".") != 0 && strcmp(entry->d_name, "..") != 0)
                unlinkat(dirfd(listing), entry->d_name, 0);
        closedir(listing);
    }
    rmdir(dir);
}

/* The host program: $LIVEHUB_STAGE_HOST, else beside the running program (the build tree), else
 * in libexec relative to it (an installed prefix, even one moved after the build), else in the
 * configured libexec directory. */
static int s_host_path(char *path, size_t size)
{
    const char *env = getenv("LIVEHUB_STAGE_HOST");
    if (env && *env) {
        snprintf(path, size, "%s", env);
        return 0;
    }
    char exe[PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    char *slash = NULL;
    if (len > 0) {
        exe[len] = '\0';
        slash = strrchr(exe, '/');
    }
    if (slash) {
        *slash = '\0';
        if (snprintf(path, size, "%s/%s", exe, S_HOST_NAME) < (int)size && access(path, X_OK) == 0)
            return 0;
        if (snprintf(path, size, "%s/../%s/%s", exe, LIVEHUB_LIBEXEC_RELATIVE, S_HOST_NAME) <
                (int)size &&
            access(path, X_OK) == 0)
            return 0;
    }
    snprintf(path, size, "%s/%s", LIVEHUB_LIBEXEC_DIR, S_HOST_NAME);
    return access(path, X_OK) == 0 ? 0 : -1;
}

int lh_child_spawn(lh_child_t *child, const char *stage, int worker, const char *init,
                   const void *secret, size_t secret_size, lh_error_t *err)
{
    *child = LH_CHILD_NONE;
    char host[PATH_MAX];
    if (s_host_path(host, sizeof host) != 0) {
        lh_error_set(err, "cannot find %s (looked beside livehubd and in %s)", S_HOST_NAME,
                     LIVEHUB_LIBEXEC_DIR);
        return -1;
    }
    int pair[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) {
        lh_error_set(err, "socketpair: %s", strerror(errno));
        return -1;
    }
    char worker_text[16], parent_text[16];
    snprintf(worker_text, sizeof worker_text, "%d", worker);
    snprintf(parent_text, sizeof parent_text, "%d", (int)getpid());
    /* argv says who the process is (ps); nothing secret goes there */
    char *argv[] = {S_HOST_NAME, (char *)stage, worker_text, parent_text, NULL};
    sigset_t none;
    sigemptyset(&none);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        lh_error_set(err, "fork: %s", strerror(errno));
        close(pair[0]);
        close(pair[1]);
        return -1;
    }
    if (pid == 0) {
        /* Only async-signal-safe calls until exec. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(LH_HOST_EXIT_ORPHAN);
        if (pair[1] == LH_LINK_FD)
            fcntl(LH_LINK_FD, F_SETFD, 0);
        else if (dup2(pair[1], LH_LINK_FD) < 0)
            _exit(LH_HOST_EXIT_EXEC);
#ifdef SYS_close_range
        syscall(SYS_close_range, LH_LINK_FD + 1, ~0U, 0);
#endif
        signal(SIGPIPE, SIG_DFL);
        sigprocmask(SIG_SETMASK, &none, NULL);
        execv(host, argv);
        _exit(LH_HOST_EXIT_EXEC);
    }
    close(pair[1]);
    child->pid = pid;
    child->link_fd = pair[0];
#ifdef SYS_pidfd_open
    child->pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (child->pidfd >= 0)
        fcntl(child->pidfd, F_SETFD, FD_CLOEXEC);
#endif
    if (lh_link_write_record(child->link_fd, init, strlen(init)) != 0 ||
        lh_link_write_record(child->link_fd, secret ? secret : "", secret ? secret_size : 0) != 0) {
        /* the child died at once; the caller reaps it like any other exit */
        lh_error_set(err, "the stage host did not take its start message: %s", strerror(errno));
    }
    return 0;
}

int lh_child_watch_fd(const lh_child_t *child)
{
    return child->pidfd >= 0 ? child->pidfd : child->link_fd;
}

static const char *s_outcome_reason(int code)
{
    switch (code) {
    case LH_HOST_EXIT_OUTCOME + LH_INSTANCE_CREATE_FAILED:
        return lh_instance_outcome_text(LH_INSTANCE_CREATE_FAILED);
    case LH_HOST_EXIT_OUTCOME + LH_INSTANCE_RUN_FAILED:
        return lh_instance_outcome_text(LH_INSTANCE_RUN_FAILED);
    case LH_HOST_EXIT_OUTCOME + LH_INSTANCE_RUN_RETURNED:
        return lh_instance_outcome_text(LH_INSTANCE_RUN_RETURNED);
    case LH_HOST_EXIT_SETUP:
        return "the stage host could not set up the plugin";
    case LH_HOST_EXIT_ORPHAN:
        return "the stage host lost the hub";
    case LH_HOST_EXIT_EXEC:
        return "cannot run " S_HOST_NAME;
    default:
        return NULL;
    }
}

bool lh_child_reap(lh_child_t *child, bool wait, char *reason, size_t reason_size,
                   char *crash_signal, size_t signal_size, bool *clean)
{
    if (!child->pid)
        return false;
    int status = 0;
    pid_t done;
    do
        done = waitpid(child->pid, &status, wait ? 0 : WNOHANG);
    while (done < 0 && errno == EINTR);
    if (done == 0)
        return false;
    *clean = false;
    crash_signal[0] = '\0';
    if (done < 0) {
        snprintf(reason, reason_size, "lost track of the stage host: %s", strerror(errno));
    } else if (WIFSIGNALED(status)) {
        const char *name = sigabbrev_np(WTERMSIG(status));
        snprintf(crash_signal, signal_size, "SIG%s", name ? name : "UNKNOWN");
        snprintf(reason, reason_size, "killed by %s%s", crash_signal,
                 WCOREDUMP(status) ? " (core dumped)" : "");
    } else if (WEXITSTATUS(status) == 0) {
        *clean = true;
        snprintf(reason, reason_size, "stopped");
    } else {
        const char *known = s_outcome_reason(WEXITSTATUS(status));
        if (known)
            snprintf(reason, reason_size, "%s", known);
        else
            snprintf(reason, reason_size, "the stage host exited with status %d",
                     WEXITSTATUS(status));
    }
    if (child->pidfd >= 0)
        close(child->pidfd);
    if (child->link_fd >= 0)
        close(child->link_fd);
    *child = LH_CHILD_NONE;
    return true;
}

void lh_child_kill(lh_child_t *child)
{
    if (child->pid)
        kill(child->pid, SIGKILL);
}
