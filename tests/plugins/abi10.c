/* abi10: a sink as a plugin built against the ABI 1.0 header would describe itself (abi_minor 0,
 * the 1.0 struct_size, no command callback). It must keep loading into a 1.1 hub, and the hub
 * must never read the fields 1.0 did not have. */
#include <stddef.h>
#include <stdlib.h>
#include <livehub/plugin.h>

static void *abi10_create(lh_io_t *io)
{
    (void)io;
    return malloc(1);
}

static int abi10_run(void *self, lh_io_t *io)
{
    (void)self;
    lh_io_ready(io);
    lh_event_t *event;
    while ((event = lh_io_recv(io, -1)) || !lh_io_terminated(io))
        lh_event_destroy(&event);
    return 0;
}

static void abi10_destroy(void **self_p)
{
    free(*self_p);
    *self_p = NULL;
}

static const lh_plugin_t s_plugin = {
    .abi_major = LH_PLUGIN_ABI_MAJOR,
    .abi_minor = 0,
    .struct_size = offsetof(lh_plugin_t, command), /* 1.0 ended at destroy */
    .name = "abi10",
    .version = "1.0",
    .description = "test sink described as ABI 1.0 (no command callback)",
    .roles = LH_ROLE_SINK,
    .create = abi10_create,
    .run = abi10_run,
    .destroy = abi10_destroy,
};

LH_PLUGIN_EXPORT(s_plugin)
