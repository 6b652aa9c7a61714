/* failvalidate: a well-formed sink whose validate() refuses every conf with a reason naming its
 * key `limit`; the hub must report that reason with the conf file and line, and not start. */
#include <livehub/plugin.h>

static const lh_option_t s_options[] = {
    {"limit", LH_OPTION_INT, "5", false, 0, 0, "any number; validate() refuses it anyway"},
    {NULL, 0, NULL, false, 0, 0, NULL},
};

static int failvalidate_validate(const lh_conf_t *conf, lh_error_t *err)
{
    const char *limit = lh_conf_get(conf, "limit");
    lh_error_set(err, "limit: %s is refused (failvalidate refuses every value)",
                 limit ? limit : "(unset)");
    return -1;
}

static void *failvalidate_create(lh_io_t *io)
{
    return io;
}

static int failvalidate_run(void *self, lh_io_t *io)
{
    (void)self;
    (void)io;
    return -1; /* never reached: the conf never validates */
}

static void failvalidate_destroy(void **self_p)
{
    *self_p = 0;
}

static const lh_plugin_t s_plugin = {
    .abi_major = LH_PLUGIN_ABI_MAJOR,
    .abi_minor = LH_PLUGIN_ABI_MINOR,
    .struct_size = sizeof(lh_plugin_t),
    .name = "failvalidate",
    .version = "1.0",
    .description = "test: validate() always fails",
    .roles = LH_ROLE_SINK,
    .options = s_options,
    .validate = failvalidate_validate,
    .create = failvalidate_create,
    .run = failvalidate_run,
    .destroy = failvalidate_destroy,
};

LH_PLUGIN_EXPORT(s_plugin)
