/* Unit tests for the conf loader: ZPL parsing, hub and stage validation, plugin option checks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "conf.h"
#include "journal.h"

static char s_dir[64];
static char s_path[128];

static int s_setup(void **state)
{
    (void)state;
    snprintf(s_dir, sizeof s_dir, "/tmp/livehub-test-conf-XXXXXX");
    if (!mkdtemp(s_dir))
        return -1;
    snprintf(s_path, sizeof s_path, "%s/livehub.conf", s_dir);
    return 0;
}

static int s_teardown(void **state)
{
    (void)state;
    unlink(s_path);
    return rmdir(s_dir);
}

static void s_write(const char *text, size_t size)
{
    FILE *file = fopen(s_path, "wb");
    assert_non_null(file);
    assert_int_equal(fwrite(text, 1, size, file), size);
    assert_int_equal(fclose(file), 0);
}

static lh_hub_conf_t *s_load_with(const char *text, lh_plugin_lookup_fn *lookup, void *arg,
                                  lh_error_t *err)
{
    s_write(text, strlen(text));
    return lh_hub_conf_load(s_path, lookup, arg, err);
}

/* Loads text that must be valid; fails the test with the loader's reason otherwise. */
static lh_hub_conf_t *s_load_ok(const char *text, lh_plugin_lookup_fn *lookup)
{
    lh_error_t err = {""};
    lh_hub_conf_t *conf = s_load_with(text, lookup, NULL, &err);
    if (!conf)
        fail_msg("refused: %s", err.text);
    return conf;
}

/* Asserts that text is refused with a message starting "PATH:LINE: " that contains needle, and
 * returns the message for further checks. */
static const char *s_refused(const char *text, lh_plugin_lookup_fn *lookup, int line,
                             const char *needle)
{
    static lh_error_t err;
    memset(&err, 0, sizeof err);
    lh_hub_conf_t *conf = s_load_with(text, lookup, NULL, &err);
    if (conf) {
        lh_hub_conf_destroy(&conf);
        fail_msg("accepted; expected an error at line %d containing '%s'", line, needle);
    }
    char prefix[256];
    snprintf(prefix, sizeof prefix, "%s:%d: ", s_path, line);
    if (strncmp(err.text, prefix, strlen(prefix)) != 0 || !strstr(err.text, needle))
        fail_msg("expected '%s...%s...', got '%s'", prefix, needle, err.text);
    return err.text;
}

/* ---- fake plugins ---------------------------------------------------------------------------- */

static char s_validated_stage[64];

/* Refuses mode = broken; also proves defaults are filled in before validate() runs. */
static int s_echo_validate(const lh_conf_t *conf, lh_error_t *err)
{
    snprintf(s_validated_stage, sizeof s_validated_stage, "%s", lh_conf_stage(conf));
    if (!lh_conf_get(conf, "count")) {
        lh_error_set(err, "count: the default was not filled in");
        return -1;
    }
    const char *mode = lh_conf_get(conf, "mode");
    if (mode && strcmp(mode, "broken") == 0) {
        lh_error_set(err, "mode: 'broken' is not a mode");
        return -1;
    }
    return 0;
}

static const lh_option_t s_echo_options[] = {
    {.name = "listen",
     .type = LH_OPTION_ENDPOINT,
     .default_value = "127.0.0.1:9000",
     .help = "where to listen"},
    {.name = "token", .type = LH_OPTION_SECRET, .help = "api token"},
    {.name = "count",
     .type = LH_OPTION_INT,
     .default_value = "10",
     .min = 1,
     .max = 100,
     .help = "how many"},
    {.name = "verbose", .type = LH_OPTION_BOOL, .default_value = "false", .help = "chatty"},
    {.name = "base", .type = LH_OPTION_STRING, .required = true, .help = "base directory"},
    {.name = "mode", .type = LH_OPTION_STRING, .default_value = "plain", .help = "mode"},
    {.name = "big", .type = LH_OPTION_INT, .help = "any integer"},
    {.name = NULL},
};

static const lh_plugin_t s_echo = {
    .abi_major = LH_PLUGIN_ABI_MAJOR,
    .abi_minor = LH_PLUGIN_ABI_MINOR,
    .struct_size = sizeof(lh_plugin_t),
    .name = "echo",
    .version = "1.0",
    .description = "test sink/filter",
    .roles = LH_ROLE_SINK | LH_ROLE_FILTER,
    .options = s_echo_options,
    .validate = s_echo_validate,
};

static const lh_option_t s_feed_options[] = {
    {.name = "token", .type = LH_OPTION_SECRET, .required = true, .help = "api token"},
    {.name = NULL},
};

static const lh_plugin_t s_feed = {
    .abi_major = LH_PLUGIN_ABI_MAJOR,
    .abi_minor = LH_PLUGIN_ABI_MINOR,
    .struct_size = sizeof(lh_plugin_t),
    .name = "feed",
    .roles = LH_ROLE_SOURCE,
    .options = s_feed_options,
};

static const lh_plugin_t *s_lookup(const char *name, void *arg, lh_error_t *err)
{
    if (arg)
        (*(int *)arg)++;
    if (strcmp(name, "echo") == 0)
        return &s_echo;
    if (strcmp(name, "feed") == 0)
        return &s_feed;
    lh_error_set(err, "%s.so not found in the test plugin dir", name);
    return NULL;
}

/* ---- valid confs ----------------------------------------------------------------------------- */

static const char s_full[] = "hub\n"              /* 1 */
                             "    name = hub-1\n" /* 2 */
                             "    ingress = tcp://127.0.0.1:7500      #   PUSH here\n"
                             "    egress = tcp://localhost:7501\n"           /* 4 */
                             "    control = ipc:///run/lh-test/ctl\n"        /* 5 */
                             "    history = 5000\n"                          /* 6 */
                             "    history_age = 60\n"                        /* 7 */
                             "    journal = /var/lib/livehub/journal\n"      /* 8 */
                             "    plugin_dir = /usr/lib/livehub/plugins\n"   /* 9 */
                             "    max_event_size = 65536\n"                  /* 10 */
                             "    hwm = 1000\n"                              /* 11 */
                             "    token_secret = env:LIVEHUB_TOKEN_SECRET\n" /* 12 */
                             "    curve\n"                                   /* 13 */
                             "        server_cert = /etc/livehub/server.cert_secret\n"
                             "        clients = /etc/livehub/clients\n" /* 15 */
                             "# a comment\n"                            /* 16 */
                             "\n"                                       /* 17 */
                             "chain = browsers\n"                       /* 18 */
                             "    source = airtable\n"                  /* 19 */
                             "        plugin = airtable\n"              /* 20 */
                             "        token = env:AIRTABLE_TOKEN\n"     /* 21 */
                             "    sink = ws\n"                          /* 22 */
                             "        plugin = websocket\n"             /* 23 */
                             "        listen = 127.0.0.1:8080\n"        /* 24 */
                             "        subscribe = signal: assignment: connection:\n"
                             "chain = alerts\n"                         /* 26 */
                             "    sink = desk\n"                        /* 27 */
                             "        plugin = notify\n"                /* 28 */
                             "        subscribe = assignment:created\n" /* 29 */
                             "        delivery = queue\n"               /* 30 */
                             "        workers = 3\n"                    /* 31 */
                             "        ready_timeout = 250\n"            /* 32 */
                             "        public = yes\n";                  /* 33 */

static void test_full_conf(void **state)
{
    (void)state;
    lh_hub_conf_t *conf = s_load_ok(s_full, NULL);
    assert_string_equal(conf->path, s_path);
    assert_string_equal(conf->name, "hub-1");
    assert_string_equal(conf->ingress, "tcp://127.0.0.1:7500");
    assert_string_equal(conf->egress, "tcp://localhost:7501");
    assert_string_equal(conf->control, "ipc:///run/lh-test/ctl");
    assert_false(conf->public_listen);
    assert_int_equal(conf->history, 5000);
    assert_int_equal(conf->history_age, 60);
    assert_string_equal(conf->journal, "/var/lib/livehub/journal");
    assert_string_equal(conf->plugin_dir, "/usr/lib/livehub/plugins");
    assert_int_equal(conf->max_event_size, 65536);
    assert_int_equal(conf->hwm, 1000);
    assert_string_equal(conf->token_secret, "env:LIVEHUB_TOKEN_SECRET");
    assert_string_equal(conf->curve_server_cert, "/etc/livehub/server.cert_secret");
    assert_string_equal(conf->curve_clients, "/etc/livehub/clients");
    assert_int_equal(conf->stage_count, 3);

    lh_stage_conf_t *airtable = conf->stages[0];
    assert_ptr_equal(lh_hub_conf_stage(conf, "airtable"), airtable);
    assert_string_equal(airtable->chain, "browsers");
    assert_string_equal(airtable->name, "airtable");
    assert_int_equal(airtable->role, LH_STAGE_SOURCE);
    assert_string_equal(airtable->plugin, "airtable");
    assert_int_equal(airtable->subscribe_count, 0);
    assert_null(airtable->subscribe[0]);
    assert_int_equal(airtable->line, 19);
    assert_string_equal(airtable->file, s_path);
    assert_int_equal(airtable->option_count, 1);
    assert_string_equal(airtable->keys[0], "token");
    assert_string_equal(airtable->values[0], "env:AIRTABLE_TOKEN");
    assert_int_equal(airtable->lines[0], 21);

    lh_stage_conf_t *ws = conf->stages[1];
    assert_ptr_equal(lh_hub_conf_stage(conf, "ws"), ws);
    assert_string_equal(ws->chain, "browsers");
    assert_int_equal(ws->role, LH_STAGE_SINK);
    assert_string_equal(ws->plugin, "websocket");
    assert_int_equal(ws->line, 22);
    assert_int_equal(ws->subscribe_count, 3);
    assert_string_equal(ws->subscribe[0], "signal:");
    assert_string_equal(ws->subscribe[1], "assignment:");
    assert_string_equal(ws->subscribe[2], "connection:");
    assert_null(ws->subscribe[3]);
    assert_false(ws->queue);
    assert_int_equal(ws->workers, 1);
    assert_int_equal(ws->ready_timeout_ms, 5000);
    assert_false(ws->public_listen);
    assert_int_equal(ws->option_count, 1);
    assert_string_equal(lh_conf_get(ws, "listen"), "127.0.0.1:8080");
    assert_int_equal(ws->lines[0], 24);
    assert_null(lh_conf_get(ws, "plugin")); /* generic keys are not plugin options */
    assert_string_equal(lh_conf_stage(ws), "ws");

    lh_stage_conf_t *desk = conf->stages[2];
    assert_ptr_equal(lh_hub_conf_stage(conf, "desk"), desk);
    assert_string_equal(desk->chain, "alerts");
    assert_int_equal(desk->line, 27);
    assert_int_equal(desk->subscribe_count, 1);
    assert_string_equal(desk->subscribe[0], "assignment:created");
    assert_true(desk->queue);
    assert_int_equal(desk->workers, 3);
    assert_int_equal(desk->ready_timeout_ms, 250);
    assert_true(desk->public_listen);
    assert_int_equal(desk->option_count, 0);

    for (size_t i = 0; i < conf->stage_count; i++)
        assert_non_null(conf->stages[i]->fingerprint);
    assert_null(lh_hub_conf_stage(conf, "nosuch"));
    lh_hub_conf_destroy(&conf);
    assert_null(conf);
}

static void test_defaults(void **state)
{
    (void)state;
    /* the default control socket is in this user's runtime directory, named after the hub */
    setenv("XDG_RUNTIME_DIR", "/run/user/4242", 1);
    lh_hub_conf_t *conf = s_load_ok("chain = only\n"
                                    "    processor = f\n"
                                    "        plugin = p\n",
                                    NULL);
    unsetenv("XDG_RUNTIME_DIR");
    assert_string_equal(conf->name, "livehub");
    assert_null(conf->ingress);
    assert_null(conf->egress);
    assert_string_equal(conf->control, "ipc:///run/user/4242/livehub/livehub.control");
    assert_false(conf->public_listen);
    assert_int_equal(conf->history, 100000);
    assert_int_equal(conf->history_age, 3600);
    assert_int_equal(conf->history_bytes, 64 * 1024 * 1024);
    assert_int_equal(conf->journal_sync, LH_JOURNAL_SYNC_INTERVAL);
    assert_null(conf->journal);
    assert_null(conf->plugin_dir);
    assert_int_equal(conf->max_event_size, 262144);
    assert_int_equal(conf->hwm, 100000);
    assert_null(conf->token_secret);
    assert_null(conf->curve_server_cert);
    assert_null(conf->curve_clients);

    assert_int_equal(conf->stage_count, 1);
    lh_stage_conf_t *stage = conf->stages[0];
    assert_int_equal(stage->role, LH_STAGE_PROCESSOR);
    assert_non_null(stage->subscribe);
    assert_null(stage->subscribe[0]);
    assert_int_equal(stage->subscribe_count, 0);
    assert_false(stage->queue);
    assert_int_equal(stage->workers, 1);
    assert_int_equal(stage->ready_timeout_ms, 5000);
    assert_false(stage->public_listen);
    assert_int_equal(stage->option_count, 0);
    lh_hub_conf_destroy(&conf);
}

static void test_hub_only_and_quoted_values(void **state)
{
    (void)state;
    lh_hub_conf_t *conf = s_load_ok("hub\n"
                                    "    name = \"quoted\"   # a comment\n"
                                    "    ingress = tcp://[::1]:7500\n"
                                    "    control = tcp://127.0.0.5:7502\n"
                                    "    history = 0\n",
                                    NULL);
    assert_string_equal(conf->name, "quoted");
    assert_string_equal(conf->ingress, "tcp://[::1]:7500");
    assert_string_equal(conf->control, "tcp://127.0.0.5:7502");
    assert_int_equal(conf->history, 0);
    assert_int_equal(conf->stage_count, 0);
    lh_hub_conf_destroy(&conf);
}

static void test_public_hub_allows_any_interface(void **state)
{
    (void)state;
    lh_hub_conf_t *conf = s_load_ok("hub\n"
                                    "    ingress = tcp://0.0.0.0:7500\n"
                                    "    egress = tcp://*:7501\n"
                                    "    public = true\n",
                                    NULL);
    assert_true(conf->public_listen);
    assert_string_equal(conf->ingress, "tcp://0.0.0.0:7500");
    lh_hub_conf_destroy(&conf);
}

static void test_conf_getters(void **state)
{
    (void)state;
    lh_hub_conf_t *conf = s_load_ok("chain = c\n"
                                    "    sink = s\n"
                                    "        plugin = p\n"
                                    "        n = 42\n"
                                    "        neg = -7\n"
                                    "        flag = on\n"
                                    "        off = No\n"
                                    "        word = hello\n",
                                    NULL);
    const lh_conf_t *stage = lh_hub_conf_stage(conf, "s");
    assert_non_null(stage);
    lh_error_t err = {""};
    int64_t number = 0;
    assert_int_equal(lh_conf_get_int(stage, "n", &number, &err), 0);
    assert_int_equal(number, 42);
    assert_int_equal(lh_conf_get_int(stage, "neg", &number, &err), 0);
    assert_int_equal(number, -7);
    assert_int_equal(lh_conf_get_int(stage, "word", &number, &err), -1);
    assert_non_null(strstr(err.text, "word: 'hello' is not"));
    assert_int_equal(number, -7);
    assert_int_equal(lh_conf_get_int(stage, "nope", &number, &err), -1);
    assert_non_null(strstr(err.text, "nope: not set"));

    bool flag = false;
    assert_int_equal(lh_conf_get_bool(stage, "flag", &flag, &err), 0);
    assert_true(flag);
    assert_int_equal(lh_conf_get_bool(stage, "off", &flag, &err), 0);
    assert_false(flag);
    assert_int_equal(lh_conf_get_bool(stage, "n", &flag, &err), -1);
    assert_non_null(strstr(err.text, "n: '42' is not a boolean"));
    assert_int_equal(lh_conf_get_bool(stage, "missing", &flag, &err), -1);
    assert_non_null(strstr(err.text, "missing: not set"));

    assert_string_equal(lh_conf_get(stage, "word"), "hello");
    assert_null(lh_conf_get(stage, "nope"));
    assert_null(lh_conf_get(NULL, "word"));
    assert_string_equal(lh_conf_stage(stage), "s");
    assert_null(lh_conf_stage(NULL));
    lh_hub_conf_destroy(&conf);
}

/* ---- the text ------------------------------------------------------------------------------- */

static void test_tab_indentation(void **state)
{
    (void)state;
    s_refused("hub\n\thwm = 5\n", NULL, 2, "tab in indentation; ZPL indents with 4 spaces");
    s_refused("hub\n    hwm = 5\n    \tname = x\n", NULL, 3, "tab in indentation");
    s_refused("hub\n\t# a comment\n", NULL, 2, "tab in indentation");
}

static void test_bad_indentation(void **state)
{
    (void)state;
    s_refused("hub\n    hwm = 5\n   name = x\n", NULL, 3, "indented by 3 spaces");
    s_refused("chain = a\n    sink = s\n            plugin = p\n", NULL, 3, "more than one level");
    s_refused("    hub\n", NULL, 1, "more than one level");
    s_refused("hub\n  # a comment\n", NULL, 2, "indented by 2 spaces");
}

static void test_invalid_zpl(void **state)
{
    (void)state;
    s_refused("hub\n    name = \"unterminated\n", NULL, 2, "not valid ZPL: missing closing quote");
    s_refused("hub\n    hwm: 5\n", NULL, 2, "not valid ZPL: expected '='");
    s_refused("hub\n    name = 'x' y\n", NULL, 2, "not valid ZPL: text after the closing quote");
}

static void test_long_line(void **state)
{
    (void)state;
    char text[1200];
    int used = snprintf(text, sizeof text, "hub\n    journal = ");
    memset(text + used, 'x', 1100);
    strcpy(text + used + 1100, "\n");
    s_refused(text, NULL, 2, "longer than 1024");
}

static void test_nul_byte(void **state)
{
    (void)state;
    static const char text[] = "hub\n    name = a\0b\n";
    s_write(text, sizeof text - 1);
    lh_error_t err = {""};
    lh_hub_conf_t *conf = lh_hub_conf_load(s_path, NULL, NULL, &err);
    assert_null(conf);
    char expected[256];
    snprintf(expected, sizeof expected, "%s:2: NUL byte in the text", s_path);
    assert_string_equal(err.text, expected);
}

static void test_missing_and_unreadable(void **state)
{
    (void)state;
    char missing[256];
    snprintf(missing, sizeof missing, "%s/nothing-here.conf", s_dir);
    lh_error_t err = {""};
    assert_null(lh_hub_conf_load(missing, NULL, NULL, &err));
    char expected[512];
    snprintf(expected, sizeof expected, "%s: No such file or directory", missing);
    assert_string_equal(err.text, expected);

    assert_null(lh_hub_conf_load(s_dir, NULL, NULL, &err));
    snprintf(expected, sizeof expected, "%s: Is a directory", s_dir);
    assert_string_equal(err.text, expected);

    /* err may be NULL when the caller does not care why */
    assert_null(lh_hub_conf_load(missing, NULL, NULL, NULL));
}

static void test_empty(void **state)
{
    (void)state;
    lh_error_t err = {""};
    assert_null(s_load_with("", NULL, NULL, &err));
    char expected[256];
    snprintf(expected, sizeof expected, "%s: empty (no hub or chain block)", s_path);
    assert_string_equal(err.text, expected);

    assert_null(s_load_with("# only a comment\n\n    # and another\n", NULL, NULL, &err));
    assert_non_null(strstr(err.text, "nothing but comments"));
}

/* ---- top level and hub ---------------------------------------------------------------------- */

static void test_unknown_top_level_key(void **state)
{
    (void)state;
    s_refused("hub\n    hwm = 5\nbogus = 1\n", NULL, 3, "bogus: unknown top-level key");
}

static void test_second_hub(void **state)
{
    (void)state;
    s_refused("hub\n    hwm = 5\nhub\n    name = x\n", NULL, 3, "hub: a second hub block");
}

static void test_unknown_hub_key(void **state)
{
    (void)state;
    const char *message = s_refused("hub\n    hwm = 5\n    histroy = 5\n", NULL, 3,
                                    "histroy: unknown key in hub (known: name, ingress,");
    assert_non_null(strstr(message, "curve"));
    s_refused("hub\n    curve\n        server_cert = a\n        client = b\n", NULL, 4,
              "client: unknown key in curve (known: server_cert, clients)");
}

static void test_duplicate_hub_key(void **state)
{
    (void)state;
    s_refused("hub\n    hwm = 5\n    hwm = 6\n", NULL, 3, "hwm: set twice (first at line 2)");
}

static void test_hub_nested_block_refused(void **state)
{
    (void)state;
    s_refused("hub\n    hwm = 5\n        deeper = 1\n", NULL, 2, "hwm: takes no nested block");
    s_refused("hub = main\n    hwm = 5\n", NULL, 1, "hub: takes no value");
}

static void test_hub_value_types(void **state)
{
    (void)state;
    s_refused("hub\n    hwm = lots\n", NULL, 2, "hwm: 'lots' is not a decimal integer");
    s_refused("hub\n    hwm = 0\n", NULL, 2, "hwm: 0 is out of range 1..10000000");
    s_refused("hub\n    max_event_size = 1023\n", NULL, 2,
              "max_event_size: 1023 is out of range 1024..16777216");
    s_refused("hub\n    history_age = 0\n", NULL, 2, "history_age: 0 is out of range");
    s_refused("hub\n    history = -1\n", NULL, 2, "history: -1 is out of range");
    s_refused("hub\n    public = maybe\n", NULL, 2, "public: 'maybe' is not a boolean");
    s_refused("hub\n    name = a/b\n", NULL, 2, "name: must be letters");
    s_refused("hub\n    journal\n", NULL, 2, "journal: needs a value");
    s_refused("hub\n    history_bytes = 1023\n", NULL, 2,
              "history_bytes: 1023 is out of range 1024..1099511627776");
    s_refused("hub\n    history_bytes = 64M\n", NULL, 2,
              "history_bytes: '64M' is not a decimal integer");
    s_refused("hub\n    hwm = 5\n    history_bytes = 100000\n", NULL, 3,
              "history_bytes: 100000 is less than max_event_size (262144)");
    s_refused("hub\n    journal_sync = always\n", NULL, 2,
              "journal_sync: 'always' is not one of: interval batch none");
}

/* history_bytes below max_event_size is fine when history keeps nothing; the sync policies parse
 * to lh_journal_sync_t. */
static void test_history_bytes_and_journal_sync(void **state)
{
    (void)state;
    const char *choices[] = {"interval", "batch", "none"};
    const lh_journal_sync_t policies[] = {LH_JOURNAL_SYNC_INTERVAL, LH_JOURNAL_SYNC_BATCH,
                                          LH_JOURNAL_SYNC_NONE};
    for (int i = 0; i < 3; i++) {
        char text[200];
        snprintf(text, sizeof text,
                 "hub\n    history = 0\n    history_bytes = 1024\n    journal_sync = %s\n",
                 choices[i]);
        lh_hub_conf_t *conf = s_load_ok(text, NULL);
        assert_non_null(conf);
        assert_int_equal(conf->history_bytes, 1024);
        assert_int_equal(conf->journal_sync, policies[i]);
        lh_hub_conf_destroy(&conf);
    }
}

static void test_non_loopback_endpoints(void **state)
{
    (void)state;
    s_refused("hub\n    ingress = tcp://0.0.0.0:7500\n", NULL, 2,
              "ingress: tcp://0.0.0.0:7500 is not a loopback address; set public = true");
    s_refused("hub\n    hwm = 5\n    egress = tcp://10.1.2.3:7501\n", NULL, 3, "egress:");
    s_refused("hub\n    control = tcp://192.168.0.1:7502\n", NULL, 2, "control:");
    s_refused("hub\n    ingress = tcp://[::]:7500\n", NULL, 2, "not a loopback address");
}

static void test_malformed_endpoints(void **state)
{
    (void)state;
    s_refused("hub\n    ingress = ipc://@x\n", NULL, 2, "ingress: expected tcp://HOST:PORT");
    s_refused("hub\n    ingress = tcp://127.0.0.1\n", NULL, 2, "ingress:");
    s_refused("hub\n    egress = tcp://127.0.0.1:70000\n", NULL, 2, "egress: the port must be");
    s_refused("hub\n    egress = tcp://::1:7000\n", NULL, 2, "egress: an IPv6 host");
    s_refused("hub\n    control = ipc://\n", NULL, 2, "control: ipc:// needs a path");
    /* an abstract socket has no permissions: any local user could use it */
    s_refused("hub\n    control = ipc://@livehub-control\n", NULL, 2,
              "control: an abstract socket (ipc://@NAME) has no permissions");
    s_refused("hub\n    control = inproc://x\n", NULL, 2,
              "control: expected ipc://PATH or tcp://HOST:PORT");
}

static void test_bad_token_secret(void **state)
{
    (void)state;
    const char *message = s_refused("hub\n    token_secret = hunter2\n", NULL, 2,
                                    "token_secret: must be a reference");
    assert_null(strstr(message, "hunter2"));
    s_refused("hub\n    token_secret = env:\n", NULL, 2, "token_secret:");
    s_refused("hub\n    token_secret = env:9LIVES\n", NULL, 2, "token_secret:");
    s_refused("hub\n    token_secret = file:\n", NULL, 2, "token_secret:");

    setenv("LIVEHUB_TEST_SECRET", "do-not-expand", 1);
    lh_hub_conf_t *conf = s_load_ok("hub\n    token_secret = env:LIVEHUB_TEST_SECRET\n", NULL);
    assert_string_equal(conf->token_secret, "env:LIVEHUB_TEST_SECRET");
    lh_hub_conf_destroy(&conf);
    conf = s_load_ok("hub\n    token_secret = file:/etc/livehub/token\n", NULL);
    assert_string_equal(conf->token_secret, "file:/etc/livehub/token");
    lh_hub_conf_destroy(&conf);
    /* "random" is the one non-reference value: a per-start secret, not an inline one. */
    conf = s_load_ok("hub\n    token_secret = random\n", NULL);
    assert_string_equal(conf->token_secret, "random");
    lh_hub_conf_destroy(&conf);
    s_refused("hub\n    token_secret = randomly\n", NULL, 2, "token_secret: must be a reference");
}

static void test_curve_half_configured(void **state)
{
    (void)state;
    s_refused("hub\n    hwm = 5\n    curve\n        server_cert = /x\n", NULL, 3,
              "curve: needs both server_cert and clients");
    s_refused("hub\n    curve\n        clients = /x\n", NULL, 2, "curve: needs both");
    s_refused("hub\n    curve\n", NULL, 2, "curve: needs both");
    s_refused("hub\n    curve = yes\n        clients = /x\n", NULL, 2, "curve: takes no value");
}

/* ---- chains and stages ---------------------------------------------------------------------- */

static void test_duplicate_stage_names(void **state)
{
    (void)state;
    s_refused("chain = a\n"
              "    sink = ws\n"
              "        plugin = p\n"
              "chain = b\n"
              "    filter = ws\n"
              "        plugin = q\n",
              NULL, 5, "filter: stage name 'ws' is already used at line 2");
}

static void test_duplicate_chain_name(void **state)
{
    (void)state;
    s_refused("chain = a\n"
              "    sink = one\n"
              "        plugin = p\n"
              "chain = a\n"
              "    sink = two\n"
              "        plugin = p\n",
              NULL, 4, "chain: 'a' is already defined at line 1");
}

static void test_empty_chain(void **state)
{
    (void)state;
    s_refused("chain = a\n"
              "chain = b\n"
              "    sink = s\n"
              "        plugin = p\n",
              NULL, 1, "chain: 'a' has no stages");
    s_refused("chain\n    sink = s\n        plugin = p\n", NULL, 1, "chain: needs a name");
}

static void test_unknown_chain_key(void **state)
{
    (void)state;
    s_refused("chain = a\n    sink = s\n        plugin = p\n    snk = t\n", NULL, 4,
              "snk: unknown key in chain 'a'");
}

static void test_bad_stage_name(void **state)
{
    (void)state;
    s_refused("chain = a\n    sink = we b\n        plugin = p\n", NULL, 2,
              "sink: stage name 'we b' must be");
    s_refused("chain = a\n    source\n        plugin = p\n", NULL, 2, "source: stage name ''");
}

static void test_missing_plugin(void **state)
{
    (void)state;
    s_refused("chain = a\n"
              "    sink = s\n"
              "        plugin = p\n"
              "    sink = t\n"
              "        subscribe = x:\n",
              NULL, 4, "plugin: missing; sink 't' needs plugin = NAME");
    s_refused("chain = a\n    sink = s\n        plugin = ../evil\n", NULL, 3,
              "plugin: '../evil' is not a plugin name");
}

static void test_workers_without_queue(void **state)
{
    (void)state;
    s_refused("chain = a\n"
              "    sink = s\n"
              "        plugin = p\n"
              "        workers = 3\n",
              NULL, 4, "workers: 3 workers need delivery = queue");
    s_refused("chain = a\n"
              "    sink = s\n"
              "        plugin = p\n"
              "        delivery = broadcast\n"
              "        workers = 2\n",
              NULL, 5, "workers: 2 workers need delivery = queue");
}

static void test_workers_out_of_range(void **state)
{
    (void)state;
    s_refused("chain = a\n    sink = s\n        plugin = p\n        workers = 0\n", NULL, 4,
              "workers: 0 is out of range 1..64");
    s_refused("chain = a\n    sink = s\n        plugin = p\n        workers = 65\n", NULL, 4,
              "workers: 65 is out of range 1..64");
    s_refused("chain = a\n    sink = s\n        plugin = p\n        workers = two\n", NULL, 4,
              "workers: 'two' is not a decimal integer");
}

static void test_subscribe_on_source(void **state)
{
    (void)state;
    s_refused("chain = a\n"
              "    source = s\n"
              "        plugin = p\n"
              "        subscribe = x:\n",
              NULL, 4, "subscribe: a source receives no events");
    s_refused("chain = a\n"
              "    source = s\n"
              "        plugin = p\n"
              "        delivery = queue\n",
              NULL, 4, "delivery: a source receives no events");
}

static void test_bad_generic_values(void **state)
{
    (void)state;
    s_refused("chain = a\n    sink = s\n        plugin = p\n        delivery = fanout\n", NULL, 4,
              "delivery: 'fanout' is neither broadcast nor queue");
    s_refused("chain = a\n    sink = s\n        plugin = p\n        ready_timeout = 99\n", NULL, 4,
              "ready_timeout: 99 is out of range 100..600000");
    s_refused("chain = a\n    sink = s\n        plugin = p\n        public = perhaps\n", NULL, 4,
              "public: 'perhaps' is not a boolean");
}

static void test_duplicate_stage_keys(void **state)
{
    (void)state;
    s_refused("chain = a\n    sink = s\n        plugin = p\n        plugin = q\n", NULL, 4,
              "plugin: set twice (first at line 3)");
    s_refused("chain = a\n    sink = s\n        plugin = p\n        x = 1\n        x = 2\n", NULL,
              5, "x: set twice (first at line 4)");
}

static void test_nested_stage_option(void **state)
{
    (void)state;
    s_refused("chain = a\n"
              "    sink = s\n"
              "        plugin = p\n"
              "        tls\n"
              "            cert = /x\n",
              NULL, 4, "tls: nested blocks are not supported");
}

/* Siblings share names: the line of each must still be its own. */
static void test_lines_of_same_named_siblings(void **state)
{
    (void)state;
    s_refused("chain = a\n"
              "    sink = s1\n"
              "        plugin = p\n"
              "    sink = s2\n"
              "        plugin = p\n"
              "    sink = s3\n"
              "        plugin = p\n"
              "        workers = 99\n",
              NULL, 8, "workers: 99");
    s_refused("chain = a\n"
              "    sink = s1\n"
              "        plugin = p\n"
              "chain = b\n"
              "    sink = s2\n"
              "        plugin = p\n"
              "        delivery = x\n",
              NULL, 7, "delivery:");
}

/* ---- plugin options ------------------------------------------------------------------------- */

static void test_plugin_defaults_filled(void **state)
{
    (void)state;
    int calls = 0;
    lh_error_t err = {""};
    s_validated_stage[0] = '\0';
    lh_hub_conf_t *conf = s_load_with("chain = c\n"
                                      "    sink = out\n"
                                      "        plugin = echo\n"
                                      "        base = /srv\n"
                                      "        count = 100\n"
                                      "        big = -99999999999\n",
                                      s_lookup, &calls, &err);
    if (!conf)
        fail_msg("refused: %s", err.text);
    assert_int_equal(calls, 1);
    assert_string_equal(s_validated_stage, "out");
    lh_stage_conf_t *stage = lh_hub_conf_stage(conf, "out");
    assert_int_equal(stage->option_count, 6);
    const char *expected[][2] = {{"base", "/srv"},        {"count", "100"},
                                 {"big", "-99999999999"}, {"listen", "127.0.0.1:9000"},
                                 {"verbose", "false"},    {"mode", "plain"}};
    int lines[] = {4, 5, 6, 0, 0, 0};
    for (size_t i = 0; i < 6; i++) {
        assert_string_equal(stage->keys[i], expected[i][0]);
        assert_string_equal(stage->values[i], expected[i][1]);
        assert_int_equal(stage->lines[i], lines[i]);
    }
    assert_null(lh_conf_get(stage, "token"));
    assert_non_null(strstr(stage->fingerprint, "mode=plain"));
    lh_hub_conf_destroy(&conf);
}

static void test_unknown_plugin(void **state)
{
    (void)state;
    s_refused("chain = c\n    sink = out\n        plugin = nosuch\n", s_lookup, 3,
              "plugin: cannot use plugin 'nosuch': nosuch.so not found in the test plugin dir");
}

static void test_role_not_allowed(void **state)
{
    (void)state;
    s_refused("chain = c\n    source = in\n        base = /x\n        plugin = echo\n", s_lookup, 4,
              "plugin: 'echo' cannot be a source (it can be: processor, sink)");
    s_refused("chain = c\n    sink = out\n        plugin = feed\n", s_lookup, 3,
              "plugin: 'feed' cannot be a sink (it can be: source)");
}

static void test_unknown_option(void **state)
{
    (void)state;
    s_refused("chain = c\n    sink = out\n        plugin = echo\n        bsae = /x\n", s_lookup, 4,
              "bsae: unknown key 'bsae' for plugin 'echo' (known: listen, token, count, verbose, "
              "base, mode, big)");
}

static void test_missing_required_option(void **state)
{
    (void)state;
    s_refused("chain = c\n    sink = out\n        plugin = echo\n        count = 5\n", s_lookup, 2,
              "base: required by plugin 'echo'");
    s_refused("chain = c\n    source = in\n        plugin = feed\n", s_lookup, 2,
              "token: required by plugin 'feed'");
}

static void test_option_int_range(void **state)
{
    (void)state;
    s_refused("chain = c\n    sink = out\n        plugin = echo\n        base = /x\n"
              "        count = 0\n",
              s_lookup, 5, "count: 0 is out of range 1..100");
    s_refused("chain = c\n    sink = out\n        plugin = echo\n        base = /x\n"
              "        count = 101\n",
              s_lookup, 5, "count: 101 is out of range 1..100");
    s_refused("chain = c\n    sink = out\n        plugin = echo\n        base = /x\n"
              "        big = 1.5\n",
              s_lookup, 5, "big: '1.5' is not a decimal integer");
}

static void test_option_bad_bool(void **state)
{
    (void)state;
    s_refused("chain = c\n    sink = out\n        plugin = echo\n        base = /x\n"
              "        verbose = sometimes\n",
              s_lookup, 5, "verbose: 'sometimes' is not a boolean");
}

static void test_option_inline_secret(void **state)
{
    (void)state;
    const char *message = s_refused("chain = c\n    source = in\n        plugin = feed\n"
                                    "        token = sk_live_123\n",
                                    s_lookup, 4, "token: must be a reference");
    assert_null(strstr(message, "sk_live_123"));

    setenv("FEED_TOKEN", "must-not-appear", 1);
    lh_hub_conf_t *conf = s_load_ok("chain = c\n    source = in\n        plugin = feed\n"
                                    "        token = env:FEED_TOKEN\n",
                                    s_lookup);
    assert_string_equal(lh_conf_get(conf->stages[0], "token"), "env:FEED_TOKEN");
    assert_null(strstr(conf->stages[0]->fingerprint, "must-not-appear"));
    lh_hub_conf_destroy(&conf);
}

static void test_option_endpoint(void **state)
{
    (void)state;
    s_refused("chain = c\n    sink = out\n        plugin = echo\n        base = /x\n"
              "        listen = 0.0.0.0:9000\n",
              s_lookup, 5, "listen: 0.0.0.0:9000 is not a loopback address; set public = true");
    s_refused("chain = c\n    sink = out\n        plugin = echo\n        base = /x\n"
              "        listen = 9000\n",
              s_lookup, 5, "listen: '9000': expected HOST:PORT");

    lh_hub_conf_t *conf = s_load_ok("chain = c\n    sink = out\n        plugin = echo\n"
                                    "        listen = 0.0.0.0:9000\n        base = /x\n"
                                    "        public = true\n",
                                    s_lookup);
    assert_true(conf->stages[0]->public_listen);
    lh_hub_conf_destroy(&conf);
    conf = s_load_ok("chain = c\n    sink = out\n        plugin = echo\n"
                     "        listen = 0.0.0.0:9000\n        base = /x\n"
                     "hub\n    public = true\n",
                     s_lookup);
    assert_string_equal(lh_conf_get(conf->stages[0], "listen"), "0.0.0.0:9000");
    lh_hub_conf_destroy(&conf);
}

static void test_validate_failure(void **state)
{
    (void)state;
    const char *message = s_refused("chain = c\n"
                                    "    filter = f\n"
                                    "        plugin = echo\n"
                                    "        base = /x\n"
                                    "        mode = broken\n",
                                    s_lookup, 2, "mode: 'broken' is not a mode");
    char expected[256];
    snprintf(expected, sizeof expected, "%s:2: mode: 'broken' is not a mode", s_path);
    assert_string_equal(message, expected);
}

static void test_options_unchecked_without_lookup(void **state)
{
    (void)state;
    lh_hub_conf_t *conf = s_load_ok("chain = c\n    sink = out\n        plugin = echo\n"
                                    "        anything = goes\n",
                                    NULL);
    assert_int_equal(conf->stages[0]->option_count, 1);
    assert_string_equal(lh_conf_get(conf->stages[0], "anything"), "goes");
    lh_hub_conf_destroy(&conf);
}

/* ---- fingerprints --------------------------------------------------------------------------- */

static char *s_fingerprint_of(const char *text, const char *stage_name)
{
    lh_hub_conf_t *conf = s_load_ok(text, s_lookup);
    lh_stage_conf_t *stage = lh_hub_conf_stage(conf, stage_name);
    assert_non_null(stage);
    char *fingerprint = strdup(stage->fingerprint);
    assert_non_null(fingerprint);
    lh_hub_conf_destroy(&conf);
    return fingerprint;
}

static const char s_pair[] = "chain = c\n"
                             "    sink = out\n"
                             "        plugin = echo\n"
                             "        base = /x\n"
                             "        subscribe = a: b:\n"
                             "    filter = other\n"
                             "        plugin = echo\n"
                             "        base = /y\n";

static void test_fingerprint_stable(void **state)
{
    (void)state;
    char *first = s_fingerprint_of(s_pair, "out");
    char *second = s_fingerprint_of(s_pair, "out");
    assert_string_equal(first, second);
    /* spacing in the file is not part of the stage */
    char *spaced = s_fingerprint_of("chain = c\n"
                                    "    sink = out      # the same stage\n"
                                    "        plugin = echo\n"
                                    "        base = \"/x\"\n"
                                    "        subscribe = a:   b:\n"
                                    "    filter = other\n"
                                    "        plugin = echo\n"
                                    "        base = /z\n",
                                    "out");
    assert_string_equal(first, spaced);
    free(first);
    free(second);
    free(spaced);
}

static void test_fingerprint_changes(void **state)
{
    (void)state;
    char *before = s_fingerprint_of(s_pair, "out");
    char *other_before = s_fingerprint_of(s_pair, "other");
    static const char changed[] = "chain = c\n"
                                  "    sink = out\n"
                                  "        plugin = echo\n"
                                  "        base = /x\n"
                                  "        subscribe = a: b:\n"
                                  "        count = 11\n"
                                  "    filter = other\n"
                                  "        plugin = echo\n"
                                  "        base = /y\n";
    char *after = s_fingerprint_of(changed, "out");
    char *other_after = s_fingerprint_of(changed, "other");
    assert_string_not_equal(before, after);
    assert_string_equal(other_before, other_after);

    char *no_sub = s_fingerprint_of("chain = c\n    sink = out\n        plugin = echo\n"
                                    "        base = /x\n        subscribe = a:\n",
                                    "out");
    assert_string_not_equal(before, no_sub);
    char *queued = s_fingerprint_of("chain = c\n    sink = out\n        plugin = echo\n"
                                    "        base = /x\n        subscribe = a: b:\n"
                                    "        delivery = queue\n",
                                    "out");
    assert_string_not_equal(before, queued);
    free(before);
    free(other_before);
    free(after);
    free(other_after);
    free(no_sub);
    free(queued);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_conf),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_hub_only_and_quoted_values),
        cmocka_unit_test(test_public_hub_allows_any_interface),
        cmocka_unit_test(test_conf_getters),
        cmocka_unit_test(test_tab_indentation),
        cmocka_unit_test(test_bad_indentation),
        cmocka_unit_test(test_invalid_zpl),
        cmocka_unit_test(test_long_line),
        cmocka_unit_test(test_nul_byte),
        cmocka_unit_test(test_missing_and_unreadable),
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_unknown_top_level_key),
        cmocka_unit_test(test_second_hub),
        cmocka_unit_test(test_unknown_hub_key),
        cmocka_unit_test(test_duplicate_hub_key),
        cmocka_unit_test(test_hub_nested_block_refused),
        cmocka_unit_test(test_hub_value_types),
        cmocka_unit_test(test_history_bytes_and_journal_sync),
        cmocka_unit_test(test_non_loopback_endpoints),
        cmocka_unit_test(test_malformed_endpoints),
        cmocka_unit_test(test_bad_token_secret),
        cmocka_unit_test(test_curve_half_configured),
        cmocka_unit_test(test_duplicate_stage_names),
        cmocka_unit_test(test_duplicate_chain_name),
        cmocka_unit_test(test_empty_chain),
        cmocka_unit_test(test_unknown_chain_key),
        cmocka_unit_test(test_bad_stage_name),
        cmocka_unit_test(test_missing_plugin),
        cmocka_unit_test(test_workers_without_queue),
        cmocka_unit_test(test_workers_out_of_range),
        cmocka_unit_test(test_subscribe_on_source),
        cmocka_unit_test(test_bad_generic_values),
        cmocka_unit_test(test_duplicate_stage_keys),
        cmocka_unit_test(test_nested_stage_option),
        cmocka_unit_test(test_lines_of_same_named_siblings),
        cmocka_unit_test(test_plugin_defaults_filled),
        cmocka_unit_test(test_unknown_plugin),
        cmocka_unit_test(test_role_not_allowed),
        cmocka_unit_test(test_unknown_option),
        cmocka_unit_test(test_missing_required_option),
        cmocka_unit_test(test_option_int_range),
        cmocka_unit_test(test_option_bad_bool),
        cmocka_unit_test(test_option_inline_secret),
        cmocka_unit_test(test_option_endpoint),
        cmocka_unit_test(test_validate_failure),
        cmocka_unit_test(test_options_unchecked_without_lookup),
        cmocka_unit_test(test_fingerprint_stable),
        cmocka_unit_test(test_fingerprint_changes),
    };
    return cmocka_run_group_tests(tests, s_setup, s_teardown);
}
