/* The hub's side of `isolate = process`: a private runtime directory for the ipc endpoints, and
 * the child processes (livehub-stage-host) that run isolated workers: spawn, watch, reap. */
#ifndef LIVEHUB_CORE_STAGE_PROCESS_H
#define LIVEHUB_CORE_STAGE_PROCESS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include "livehub/error.h"

/* A stage host's exit status when the plugin ended by itself (see lh_instance_outcome_t). */
#define LH_HOST_EXIT_OUTCOME 10 /* + outcome: 11 create failed, 12 run failed, 13 run returned */
#define LH_HOST_EXIT_SETUP 20   /* the host could not set up the plugin (its log says why) */
#define LH_HOST_EXIT_ORPHAN 70  /* the hub went away */
#define LH_HOST_EXIT_EXEC 127   /* the host program could not be run */

/* Creates a 0700 directory for the hub's ipc endpoints (under $XDG_RUNTIME_DIR, $TMPDIR or
 * /tmp). New path, caller frees after lh_run_dir_remove. */
char *lh_run_dir_new(lh_error_t *err);
/* Removes the directory and whatever endpoint files are left in it. */
void lh_run_dir_remove(const char *dir);

typedef struct lh_child {
    pid_t pid;   /* 0: none */
    int pidfd;   /* readable once the child has exited; -1 when the kernel has no pidfd */
    int link_fd; /* the hub's end of the socketpair; end-of-file also means the child is gone */
} lh_child_t;

#define LH_CHILD_NONE ((lh_child_t){0, -1, -1})

/* Starts the host program for one worker and hands it init (the start message, JSON) and the
 * secret over the socketpair. The child dies with the hub's thread (PR_SET_PDEATHSIG). */
int lh_child_spawn(lh_child_t *child, const char *stage, int worker, const char *init,
                   const void *secret, size_t secret_size, lh_error_t *err);

/* The fd that becomes readable when the child exits. */
int lh_child_watch_fd(const lh_child_t *child);

/* Reaps the child if it has exited (or, with wait, once it has). Returns true when reaped: then
 * reason says how it ended ("killed by SIGSEGV", "run() returned an error", ...), *crash_signal
 * is the signal's name ("SIGSEGV") or "" for an exit, *clean is true for an exit after a stop
 * request. The child's fds are closed. */
bool lh_child_reap(lh_child_t *child, bool wait, char *reason, size_t reason_size,
                   char *crash_signal, size_t signal_size, bool *clean);

/* SIGKILL (a child that does not stop when asked). */
void lh_child_kill(lh_child_t *child);

#endif
