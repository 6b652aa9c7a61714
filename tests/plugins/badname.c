/* badname: a correct descriptor except that its name ("othername") differs from its file name
 * (badname.so); the hub must refuse it, naming both. */
#include <livehub/plugin.h>

static void *badname_create(lh_io_t *io)
{
    return io;
}

static int badname_run(void *self, lh_io_t *io)
{
    (void)self;
    (void)io;
    return 0;
}

static void badname_destroy(void **self_p)
{
    *self_p = 0;
}

static const lh_plugin_t s_plugin = {
    .abi_major = LH_PLUGIN_ABI_MAJOR,
    .abi_minor = LH_PLUGIN_ABI_MINOR,
    .struct_size = sizeof(lh_plugin_t),
    .name = "othername",
    .version = "1.0",
    .description = "test: descriptor name differs from the file name",
    .roles = LH_ROLE_SINK,
    .create = badname_create,
    .run = badname_run,
    .destroy = badname_destroy,
};

LH_PLUGIN_EXPORT(s_plugin)
