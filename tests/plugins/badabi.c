/* badabi: exports the ABI 1 symbol, but its hand-written descriptor claims abi_major = 2. The hub
 * must refuse it before calling anything else, with a message naming both ABIs. */
#include <livehub/plugin.h>

static void *badabi_create(lh_io_t *io)
{
    return io;
}

static int badabi_run(void *self, lh_io_t *io)
{
    (void)self;
    (void)io;
    return 0;
}

static void badabi_destroy(void **self_p)
{
    *self_p = 0;
}

static const lh_plugin_t s_plugin = {
    .abi_major = 2,
    .abi_minor = 0,
    .struct_size = sizeof(lh_plugin_t),
    .name = "badabi",
    .version = "1.0",
    .description = "test: a descriptor from a future ABI behind the ABI 1 symbol",
    .roles = LH_ROLE_SINK,
    .create = badabi_create,
    .run = badabi_run,
    .destroy = badabi_destroy,
};

LH_PLUGIN_EXPORT(s_plugin)
