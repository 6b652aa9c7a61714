/* Fuzz target: the conf file (core/conf.c on czmq's ZPL reader, then every plugin's options table
 * and validate()), with the plugins this build tree made. Every stage of a conf that loads has a
 * name and a plugin. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include "conf.h"
#include "fuzz.h"
#include "plugin_host.h"

static lh_plugins_t *s_plugins;
static char s_dir[64], s_path[96];

static void s_remove_files(void)
{
    unlink(s_path);
    rmdir(s_dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    s_plugins = lh_plugins_new(LIVEHUB_BUILD_PLUGIN_DIR);
    snprintf(s_dir, sizeof s_dir, "/tmp/livehub-fuzz-conf-XXXXXX");
    if (!s_plugins || !mkdtemp(s_dir))
        abort();
    snprintf(s_path, sizeof s_path, "%s/livehub.conf", s_dir);
    atexit(s_remove_files);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    FILE *file = fopen(s_path, "wb");
    FUZZ_CHECK(file && fwrite(data, 1, size, file) == size && fclose(file) == 0);
    lh_error_t err;
    lh_hub_conf_t *conf = lh_hub_conf_load(s_path, lh_plugins_lookup, s_plugins, &err);
    if (conf) {
        for (size_t i = 0; i < conf->stage_count; i++)
            FUZZ_CHECK(conf->stages[i]->plugin && conf->stages[i]->name);
        lh_hub_conf_destroy(&conf);
    }
    return 0;
}
