/* livehubd: loads a conf, checks it whole, then runs the hub until SIGTERM. */
#include <czmq.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>
#include "conf.h"
#include "log.h"
#include "plugin_host.h"
#include "router.h"

static void s_usage(FILE *out)
{
    fprintf(out, "usage: livehubd [--check] CONF\n"
                 "  Runs the livehub router with the plugin chains of CONF (ZPL).\n"
                 "  --check    validate CONF (including every plugin's options) and exit\n"
                 "  --version  print the version\n"
                 "Environment: LIVEHUB_PLUGIN_DIR (plugin search path, ':'-separated, used when\n"
                 "the conf sets no plugin_dir), LIVEHUB_LOG (error|warning|info|debug).\n");
}

/* Every connection of every listener is a descriptor: take all the kernel allows this process
 * (the soft limit is often 1024, the hard one far higher); the listeners' max_connections then
 * bound them within it. */
static void s_raise_descriptor_limit(void)
{
    struct rlimit limit;
    if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
        limit.rlim_cur = limit.rlim_max == RLIM_INFINITY ? 1048576 : limit.rlim_max;
        setrlimit(RLIMIT_NOFILE, &limit); /* a failure leaves the soft limit as it was */
    }
}

int main(int argc, char **argv)
{
    bool check_only = false;
    const char *path = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--check") == 0) {
            check_only = true;
        } else if (strcmp(argv[i], "--version") == 0) {
            printf("livehubd %s\n", LIVEHUB_VERSION);
            return 0;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            s_usage(stdout);
            return 0;
        } else if (argv[i][0] == '-' || path) {
            s_usage(stderr);
            return 2;
        } else {
            path = argv[i];
        }
    }
    if (!path) {
        s_usage(stderr);
        return 2;
    }
    /* Signals go to the router's signalfd only: block them before any thread exists. */
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGTERM);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &signals, NULL);
    signal(SIGPIPE, SIG_IGN);
    zsys_handler_set(NULL);

    lh_error_t err;
    lh_plugins_t *plugins = NULL;
    lh_hub_conf_t *conf = lh_hub_conf_load_checked(path, &plugins, &err);
    if (!conf) {
        fprintf(stderr, "livehubd: %s\n", err.text);
        return 1;
    }
    if (check_only) {
        printf("%s: OK (%zu stages)\n", path, conf->stage_count);
        lh_hub_conf_destroy(&conf);
        lh_plugins_destroy(&plugins);
        return 0;
    }
    s_raise_descriptor_limit();
    lh_hub_t *hub = lh_hub_new(conf, plugins, &err);
    if (!hub) {
        fprintf(stderr, "livehubd: %s\n", err.text);
        lh_plugins_destroy(&plugins);
        zsys_shutdown();
        return 1;
    }
    int rc = lh_hub_run(hub);
    lh_hub_destroy(&hub);
    lh_plugins_destroy(&plugins);
    zsys_shutdown();
    return rc == 0 ? 0 : 1;
}
