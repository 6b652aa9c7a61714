/* livehub: the command-line client of a running hub (publish, subscribe with resume, status,
 * reload), plus conf checking and token minting. */
#include <czmq.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include "conf.h"
#include "control_client.h"
#include "control_endpoint.h"
#include "livehub/livehub.h"
#include "plugin_host.h"

#define S_DEFAULT_EGRESS "tcp://127.0.0.1:7501"
#define S_TIMEOUT_MS 5000
#define S_STAGE_TIMEOUT_MS 10000 /* longer than the hub's own wait for the stage's workers */

typedef struct {
    const char *control, *egress;
    const char *server_key, *client_cert; /* CURVE */
    lh_hub_conf_t *conf;
} s_client_t;

/* The control endpoint of a hub called "livehub" run by this user, for the usage text. */
static char s_default_control[256] = "ipc://RUNTIME_DIR/livehub.control";

static void s_usage(FILE *out)
{
    fprintf(out,
            "usage: livehub [--conf FILE | --hub NAME] [--control EP] [--egress EP]\n"
            "               [--server-key Z85 --client-cert FILE] COMMAND ...\n"
            "commands:\n"
            "  pub TYPE JSON [--to AUDIENCE]... [--key KEY]   publish; prints the event id\n"
            "  sub [PREFIX]... [--since ID [--epoch E]] [--count N] [--timeout SECONDS]\n"
            "                                  print events as JSON lines; --since replays the\n"
            "                                  missed ones first, then follows live without gap\n"
            "  status                          the hub's plugins, states and counters (JSON)\n"
            "  reload                          re-read the hub's conf (like SIGHUP)\n"
            "  stage NAME COMMAND [ARG]        send a command to a stage's plugin (e.g. stage\n"
            "                                  desk dnd on); ARG is JSON or a bare word\n"
            "  check CONF                      validate a conf file, plugins included\n"
            "  token --sub ID --role ROLE [--ttl SECONDS] [--secret env:NAME|file:PATH]\n"
            "                                  mint a browser token (secret: --secret, else the\n"
            "                                  conf's token_secret)\n"
            "  plugins                         list the plugins on the search path and options\n"
            "Endpoints come from --conf's hub block when given, else the defaults "
            "(control %s,\n"
            "egress %s). --hub NAME: the default control socket of the hub called NAME.\n",
            s_default_control, S_DEFAULT_EGRESS);
}

static int s_fail(const char *what, const char *reason)
{
    fprintf(stderr, "livehub: %s: %s\n", what, reason);
    return 1;
}

static zmsg_t *s_request_within(s_client_t *client, zmsg_t *request, int timeout_ms,
                                lh_error_t *err)
{
    lh_control_t *control =
        lh_control_new(client->control, client->server_key, client->client_cert, err);
    if (!control) {
        zmsg_destroy(&request);
        return NULL;
    }
    zmsg_t *reply = lh_control_request(control, &request, timeout_ms, err);
    lh_control_destroy(&control);
    return reply;
}

static zmsg_t *s_request(s_client_t *client, zmsg_t *request, lh_error_t *err)
{
    return s_request_within(client, request, S_TIMEOUT_MS, err);
}

/* Prints a reply's second frame; the first says OK or ERR. */
static int s_simple_command(s_client_t *client, const char *command)
{
    lh_error_t err;
    zmsg_t *request = zmsg_new();
    zmsg_addstr(request, command);
    zmsg_t *reply = s_request(client, request, &err);
    if (!reply)
        return s_fail(command, err.text);
    char *status = zmsg_popstr(reply);
    char *text = zmsg_popstr(reply);
    int rc = status && strcmp(status, "OK") == 0 ? 0 : 1;
    if (rc == 0 && text && strcmp(command, "STATUS") == 0) {
        json_t *document = json_loads(text, 0, NULL);
        char *pretty = document ? json_dumps(document, JSON_INDENT(2)) : NULL;
        printf("%s\n", pretty ? pretty : text);
        free(pretty);
        json_decref(document);
    } else {
        fprintf(rc ? stderr : stdout, "%s%s\n", rc ? "livehub: " : "", text ? text : "");
    }
    free(status);
    free(text);
    zmsg_destroy(&reply);
    return rc;
}

static int s_pub(s_client_t *client, int argc, char **argv)
{
    static struct option options[] = {{"to", required_argument, NULL, 't'},
                                      {"key", required_argument, NULL, 'k'},
                                      {NULL, 0, NULL, 0}};
    if (argc < 3) {
        s_usage(stderr);
        return 2;
    }
    const char *type = argv[1]; /* read before getopt permutes argv */
    lh_event_t *event = lh_event_new(type);
    if (!event)
        return s_fail("pub", "TYPE must be 1..255 bytes of UTF-8");
    lh_error_t err;
    if (lh_event_set_data_json_text(event, argv[2], &err) != 0) {
        lh_event_destroy(&event);
        return s_fail("pub: JSON", err.text);
    }
    optind = 0;
    int option;
    while ((option = getopt_long(argc, argv, "", options, NULL)) != -1) {
        int rc = option == 't'   ? lh_event_add_audience(event, optarg)
                 : option == 'k' ? lh_event_set_key(event, optarg)
                                 : -1;
        if (rc != 0) {
            lh_event_destroy(&event);
            return s_fail("pub", "bad --to or --key (1..255 bytes of UTF-8; at most 64 --to)");
        }
    }
    size_t size;
    const void *body = lh_event_body(event, &size, &err);
    zmsg_t *request = zmsg_new();
    zmsg_addstr(request, "PUBLISH");
    zmsg_addstr(request, type);
    zmsg_addmem(request, body, size);
    lh_event_destroy(&event);
    zmsg_t *reply = s_request(client, request, &err);
    if (!reply)
        return s_fail("pub", err.text);
    char *status = zmsg_popstr(reply);
    char *text = zmsg_popstr(reply);
    int rc = status && strcmp(status, "OK") == 0 ? 0 : 1;
    if (rc != 0)
        fprintf(stderr, "livehub: pub refused: %s\n", text ? text : "?");
    else if (strcmp(text, "0") == 0)
        fprintf(stderr, "livehub: duplicate key: the hub already has this event\n");
    else
        printf("%s\n", text);
    free(status);
    free(text);
    zmsg_destroy(&reply);
    return rc;
}

/* The epoch the printed ids belong to; a live event of another epoch means the hub restarted. */
static char s_epoch[LH_TYPE_MAX + 1];

/* Prints an event unless it is the hub's own or already printed; true when printed. */
static bool s_print_event(zframe_t *topic, zframe_t *body, uint64_t *last_id)
{
    if (zframe_size(topic) == 0 || zframe_data(topic)[0] == '$')
        return false;
    lh_error_t err;
    lh_event_t *event = lh_event_decode(zframe_data(topic), zframe_size(topic), zframe_data(body),
                                        zframe_size(body), &err);
    if (!event) {
        fprintf(stderr, "livehub: undecodable event: %s\n", err.text);
        return false;
    }
    bool printed = false;
    const char *epoch = lh_event_epoch(event);
    if (epoch && *s_epoch && strcmp(epoch, s_epoch) != 0) {
        printf("{\"type\":\"$reset\",\"epoch\":\"%s\",\"reason\":\"the hub restarted; "
               "events may have been missed\"}\n",
               epoch);
        *last_id = 0;
    }
    if (epoch)
        snprintf(s_epoch, sizeof s_epoch, "%s", epoch);
    if (lh_event_id(event) > *last_id) {
        char *line = lh_event_to_json(event, &err);
        if (line) {
            printf("%s\n", line);
            fflush(stdout);
            free(line);
            printed = true;
        }
        *last_id = lh_event_id(event);
    }
    lh_event_destroy(&event);
    return printed;
}

/* Replays from `since` in batches until the hub says there is no more. Returns events printed, or
 * -1 on failure. A reset is printed as a {"type":"$reset",...} line and live follows. */
static int64_t s_replay(s_client_t *client, const char *epoch, uint64_t *last_id, char **prefixes,
                        int prefix_count)
{
    int64_t printed = 0;
    for (bool more = true; more;) {
        zmsg_t *request = zmsg_new();
        zmsg_addstr(request, "REPLAY");
        zmsg_addstr(request, epoch ? epoch : "");
        zmsg_addstrf(request, "%" PRIu64, *last_id);
        zmsg_addstr(request, "1000");
        for (int i = 0; i < prefix_count; i++)
            zmsg_addstr(request, prefixes[i]);
        lh_error_t err;
        zmsg_t *reply = s_request(client, request, &err);
        if (!reply) {
            s_fail("sub --since", err.text);
            return -1;
        }
        char *status = zmsg_popstr(reply);
        char *meta_text = zmsg_popstr(reply);
        json_t *meta = meta_text ? json_loads(meta_text, 0, NULL) : NULL;
        more = false;
        if (status && strcmp(status, "OK") == 0 && meta) {
            zframe_t *topic, *body;
            uint64_t scanned_to = (uint64_t)json_integer_value(json_object_get(meta, "scanned_to"));
            while ((topic = zmsg_pop(reply)) && (body = zmsg_pop(reply))) {
                printed += s_print_event(topic, body, last_id);
                zframe_destroy(&topic);
                zframe_destroy(&body);
            }
            zframe_destroy(&topic);
            if (scanned_to > *last_id)
                *last_id = scanned_to;
            more = json_is_true(json_object_get(meta, "more"));
        } else if (status && strcmp(status, "RESET") == 0 && meta) {
            json_object_set_new(meta, "type", json_string("$reset"));
            char *line = json_dumps(meta, JSON_COMPACT | JSON_SORT_KEYS);
            printf("%s\n", line);
            fflush(stdout);
            free(line);
            *last_id = (uint64_t)json_integer_value(json_object_get(meta, "newest"));
        } else {
            fprintf(stderr, "livehub: sub --since: %s %s\n", status ? status : "?",
                    meta_text ? meta_text : "");
            printed = -1;
        }
        free(status);
        free(meta_text);
        json_decref(meta);
        zmsg_destroy(&reply);
        if (printed < 0)
            return -1;
    }
    return printed;
}

static int s_sub(s_client_t *client, int argc, char **argv)
{
    static struct option options[] = {{"since", required_argument, NULL, 's'},
                                      {"epoch", required_argument, NULL, 'e'},
                                      {"count", required_argument, NULL, 'c'},
                                      {"timeout", required_argument, NULL, 't'},
                                      {NULL, 0, NULL, 0}};
    bool resume = false;
    uint64_t last_id = 0;
    const char *epoch = NULL;
    long count = -1;
    double timeout = -1;
    optind = 0;
    int option;
    while ((option = getopt_long(argc, argv, "", options, NULL)) != -1) {
        if (option == 's') {
            resume = true;
            last_id = strtoull(optarg, NULL, 10);
        } else if (option == 'e') {
            epoch = optarg;
        } else if (option == 'c') {
            count = strtol(optarg, NULL, 10);
        } else if (option == 't') {
            timeout = strtod(optarg, NULL);
        } else {
            s_usage(stderr);
            return 2;
        }
    }
    char **prefixes = argv + optind;
    int prefix_count = argc - optind;
    zsock_t *sub = zsock_new(ZMQ_SUB);
    zsock_set_linger(sub, 0);
    zsock_set_rcvhwm(sub, 1000000);
    if (client->server_key) {
        zcert_t *cert = client->client_cert ? zcert_load(client->client_cert) : NULL;
        if (!cert) {
            zsock_destroy(&sub);
            return s_fail("sub", "cannot load --client-cert");
        }
        zcert_apply(cert, sub);
        zcert_destroy(&cert);
        zsock_set_curve_serverkey(sub, client->server_key);
    }
    for (int i = 0; i < prefix_count; i++)
        zsock_set_subscribe(sub, prefixes[i]);
    if (prefix_count == 0)
        zsock_set_subscribe(sub, "");
    /* The hub answers this unique subscription once every earlier one is active: from then on
     * nothing can fall between the replay and the live stream. */
    char hello[64];
    snprintf(hello, sizeof hello, "$hello/%d/%" PRId64, getpid(), zclock_usecs());
    zsock_set_subscribe(sub, hello);
    if (zsock_connect(sub, "%s", client->egress) != 0) {
        zsock_destroy(&sub);
        return s_fail("sub", "cannot connect to the egress endpoint");
    }
    int64_t deadline = timeout >= 0 ? zclock_mono() + (int64_t)(timeout * 1000) : -1;
    zpoller_t *poller = zpoller_new(sub, NULL);
    bool greeted = false;
    long printed = 0;
    int rc = 0;
    while (count < 0 || printed < count) {
        int wait = deadline < 0 ? -1 : (int)(deadline - zclock_mono());
        if (deadline >= 0 && wait <= 0) {
            rc = count >= 0 ? 1 : 0; /* the requested count did not arrive in time */
            break;
        }
        if (!greeted && (wait < 0 || wait > S_TIMEOUT_MS))
            wait = S_TIMEOUT_MS;
        if (!zpoller_wait(poller, wait)) {
            if (zpoller_terminated(poller))
                break;
            if (!greeted) {
                rc = s_fail("sub", "no answer from the hub's egress (is egress set and livehubd "
                                   "running?)");
                break;
            }
            continue;
        }
        zmsg_t *message = zmsg_recv(sub);
        if (!message)
            break;
        zframe_t *topic = zmsg_first(message), *body = zmsg_next(message);
        if (topic && body && !greeted && zframe_streq(topic, hello)) {
            greeted = true;
            lh_event_t *greeting = lh_event_decode(zframe_data(topic), zframe_size(topic),
                                                   zframe_data(body), zframe_size(body), NULL);
            json_t *data = greeting ? lh_event_data_json(greeting, NULL) : NULL;
            const char *hub_epoch = json_string_value(json_object_get(data, "epoch"));
            if (hub_epoch)
                snprintf(s_epoch, sizeof s_epoch, "%s", hub_epoch);
            json_decref(data);
            lh_event_destroy(&greeting);
            if (resume) {
                int64_t replayed = s_replay(client, epoch, &last_id, prefixes, prefix_count);
                if (replayed < 0) {
                    zmsg_destroy(&message);
                    rc = 1;
                    break;
                }
                printed += replayed;
            }
        } else if (topic && body && greeted) {
            printed += s_print_event(topic, body, &last_id);
        }
        zmsg_destroy(&message);
    }
    zpoller_destroy(&poller);
    zsock_destroy(&sub);
    return rc;
}

/* A bare word such as `on` stands for the JSON string "on"; anything else must be JSON. */
static bool s_bare_word(const char *text)
{
    if (!((*text >= 'a' && *text <= 'z') || (*text >= 'A' && *text <= 'Z')))
        return false;
    for (const char *c = text; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
              strchr("_.:-", *c)))
            return false;
    return true;
}

/* stage NAME COMMAND [ARG]: prints one line per worker's reply. */
static int s_stage(s_client_t *client, int argc, char **argv)
{
    if (argc < 3 || argc > 4) {
        s_usage(stderr);
        return 2;
    }
    char *args = NULL;
    if (argc == 4) {
        json_error_t error;
        json_t *value = json_loads(argv[3], JSON_DECODE_ANY, &error);
        if (!value && s_bare_word(argv[3]))
            value = json_string(argv[3]);
        if (!value) {
            fprintf(stderr, "livehub: stage: ARG is neither JSON nor a bare word: %s\n",
                    error.text);
            return 2;
        }
        args = json_dumps(value, JSON_COMPACT | JSON_ENCODE_ANY);
        json_decref(value);
    }
    zmsg_t *request = zmsg_new();
    zmsg_addstr(request, "STAGE");
    zmsg_addstr(request, argv[1]);
    zmsg_addstr(request, argv[2]);
    if (args)
        zmsg_addstr(request, args);
    free(args);
    lh_error_t err;
    zmsg_t *reply = s_request_within(client, request, S_STAGE_TIMEOUT_MS, &err);
    if (!reply)
        return s_fail("stage", err.text);
    char *status = zmsg_popstr(reply);
    int rc = status && strcmp(status, "OK") == 0 ? 0 : 1;
    for (char *text; (text = zmsg_popstr(reply)); free(text)) {
        if (rc == 0)
            printf("%s\n", text);
        else
            fprintf(stderr, "livehub: stage %s %s: %s\n", argv[1], argv[2], text);
    }
    free(status);
    zmsg_destroy(&reply);
    return rc;
}

static int s_token(s_client_t *client, int argc, char **argv)
{
    static struct option options[] = {{"sub", required_argument, NULL, 's'},
                                      {"role", required_argument, NULL, 'r'},
                                      {"ttl", required_argument, NULL, 't'},
                                      {"secret", required_argument, NULL, 'k'},
                                      {NULL, 0, NULL, 0}};
    const char *sub = NULL, *role = NULL, *reference = NULL;
    long long ttl = 3600;
    optind = 0;
    int option;
    while ((option = getopt_long(argc, argv, "", options, NULL)) != -1) {
        if (option == 's')
            sub = optarg;
        else if (option == 'r')
            role = optarg;
        else if (option == 't')
            ttl = strtoll(optarg, NULL, 10);
        else if (option == 'k')
            reference = optarg;
        else
            return 2;
    }
    if (!reference && client->conf)
        reference = client->conf->token_secret;
    if (!sub || !role || !reference) {
        fprintf(stderr, "livehub: token needs --sub, --role and a secret (--secret or a --conf "
                        "with token_secret)\n");
        return 2;
    }
    if (strcmp(reference, "random") == 0) {
        fprintf(stderr, "livehub: token: this hub's token_secret is random (new at each start, "
                        "known only to the hub): sign in through the dashboard's dev login, or "
                        "give the hub an env: or file: secret and pass it with --secret\n");
        return 2;
    }
    lh_error_t err;
    size_t size;
    char *secret = lh_secret_resolve(reference, &size, &err);
    if (!secret)
        return s_fail("token", err.text);
    char *token = lh_token_mint(secret, size, sub, role, ttl, (int64_t)time(NULL), &err);
    explicit_bzero(secret, size);
    free(secret);
    if (!token)
        return s_fail("token", err.text);
    printf("%s\n", token);
    free(token);
    return 0;
}

static int s_check(int argc, char **argv)
{
    if (argc != 2) {
        s_usage(stderr);
        return 2;
    }
    lh_error_t err;
    lh_plugins_t *plugins = NULL;
    lh_hub_conf_t *conf = lh_hub_conf_load_checked(argv[1], &plugins, &err);
    if (!conf) {
        fprintf(stderr, "%s\n", err.text);
        return 1;
    }
    for (size_t i = 0; i < conf->stage_count; i++)
        if (conf->stages[i]->deprecated_filter)
            fprintf(stderr,
                    "%s:%d: warning: `filter = %s` names a processor; since ABI 1.2 a filter is "
                    "in-line (docs/CHAINS.md): write `processor = %s`\n",
                    argv[1], conf->stages[i]->line, conf->stages[i]->name, conf->stages[i]->name);
    printf("%s: OK (%zu stages, %zu filters)\n", argv[1], conf->stage_count, conf->filter_count);
    lh_hub_conf_destroy(&conf);
    lh_plugins_destroy(&plugins);
    return 0;
}

static const char *const s_option_types[] = {"string", "int", "bool", "secret", "endpoint"};

/* Prints a plugin's roles, description and options (the options table is its documentation). */
static void s_print_plugin(const lh_plugin_t *plugin, const char *where)
{
    printf("%s %s: %s\n    roles:%s%s%s%s\n    in %s\n", plugin->name, plugin->version,
           plugin->description, plugin->roles & LH_ROLE_SOURCE ? " source" : "",
           plugin->roles & LH_ROLE_PROCESSOR ? " processor" : "",
           plugin->roles & LH_ROLE_SINK ? " sink" : "",
           lh_plugin_filters(plugin) ? " filter" : "", where);
    for (const lh_option_t *option = plugin->options; option && option->name; option++) {
        printf("    %-14s %-8s %s", option->name, s_option_types[option->type], option->help);
        if (option->required)
            printf(" (required)");
        if (option->default_value && *option->default_value)
            printf(" [default: %s]", option->default_value);
        printf("\n");
    }
}

/* Prints each plugin found in one directory; returns how many. */
static int s_list_plugins(lh_plugins_t *plugins, const char *dir_path)
{
    int shown = 0;
    zdir_t *dir = zdir_new(dir_path, NULL);
    zlist_t *files = dir ? zdir_list(dir) : NULL;
    for (zfile_t *file = files ? zlist_first(files) : NULL; file; file = zlist_next(files)) {
        const char *name = zfile_filename(file, dir_path);
        size_t len = strlen(name);
        if (len < 4 || strcmp(name + len - 3, ".so") != 0 || strchr(name, '/'))
            continue;
        char plugin_name[128];
        snprintf(plugin_name, sizeof plugin_name, "%.*s", (int)(len - 3), name);
        lh_error_t err;
        const lh_plugin_t *plugin = lh_plugins_load(plugins, plugin_name, &err);
        if (!plugin) {
            printf("%s/%s: %s\n\n", dir_path, name, err.text);
            continue;
        }
        s_print_plugin(plugin, dir_path);
        printf("\n");
        shown++;
    }
    zlist_destroy(&files);
    zdir_destroy(&dir);
    return shown;
}
/* Lists the plugins of LIVEHUB_PLUGIN_DIR (':'-separated), else of the installed plugin dir. */
static int s_plugins(void)
{
    const char *env = getenv("LIVEHUB_PLUGIN_DIR");
    char *path = strdup(env && *env ? env : LIVEHUB_DEFAULT_PLUGIN_DIR);
    lh_plugins_t *plugins = lh_plugins_new(path);
    int shown = 0;
    static const char *const builtins[] = {"keep", "drop", "redact", "route", "rename"};
    for (size_t i = 0; i < sizeof builtins / sizeof builtins[0]; i++) {
        lh_error_t err;
        s_print_plugin(lh_plugins_load(plugins, builtins[i], &err), "the hub (built in)");
        printf("\n");
    }
    for (char *save = NULL, *dir = strtok_r(path, ":", &save); dir;
         dir = strtok_r(NULL, ":", &save))
        shown += s_list_plugins(plugins, dir);
    if (!shown)
        fprintf(stderr, "livehub: no plugins in %s\n",
                env && *env ? env : LIVEHUB_DEFAULT_PLUGIN_DIR);
    lh_plugins_destroy(&plugins);
    free(path);
    return shown ? 0 : 1;
}

int main(int argc, char **argv)
{
    static struct option options[] = {{"conf", required_argument, NULL, 'f'},
                                      {"control", required_argument, NULL, 'c'},
                                      {"egress", required_argument, NULL, 'e'},
                                      {"hub", required_argument, NULL, 'n'},
                                      {"server-key", required_argument, NULL, 'k'},
                                      {"client-cert", required_argument, NULL, 'C'},
                                      {"help", no_argument, NULL, 'h'},
                                      {NULL, 0, NULL, 0}};
    zsys_handler_set(NULL);
    s_client_t client = {0};
    const char *conf_path = NULL, *control = NULL, *egress = NULL, *hub_name = "livehub";
    int option;
    lh_control_default_endpoint(hub_name, s_default_control, sizeof s_default_control);
    while ((option = getopt_long(argc, argv, "+h", options, NULL)) != -1) {
        switch (option) {
        case 'f':
            conf_path = optarg;
            break;
        case 'c':
            control = optarg;
            break;
        case 'e':
            egress = optarg;
            break;
        case 'n':
            hub_name = optarg;
            break;
        case 'k':
            client.server_key = optarg;
            break;
        case 'C':
            client.client_cert = optarg;
            break;
        case 'h':
            s_usage(stdout);
            return 0;
        default:
            s_usage(stderr);
            return 2;
        }
    }
    if (optind >= argc) {
        s_usage(stderr);
        return 2;
    }
    if (conf_path) {
        lh_error_t err;
        if (!(client.conf = lh_hub_conf_load(conf_path, NULL, NULL, &err)))
            return s_fail("--conf", err.text);
    }
    if (!control && !conf_path &&
        lh_control_default_endpoint(hub_name, s_default_control, sizeof s_default_control) != 0)
        return s_fail("--hub", "the name makes too long a control path; give --control");
    client.control = control                               ? control
                     : client.conf && client.conf->control ? client.conf->control
                                                           : s_default_control;
    client.egress = egress                               ? egress
                    : client.conf && client.conf->egress ? client.conf->egress
                                                         : S_DEFAULT_EGRESS;
    const char *command = argv[optind];
    int sub_argc = argc - optind;
    char **sub_argv = argv + optind;
    int rc;
    if (strcmp(command, "pub") == 0)
        rc = s_pub(&client, sub_argc, sub_argv);
    else if (strcmp(command, "sub") == 0)
        rc = s_sub(&client, sub_argc, sub_argv);
    else if (strcmp(command, "status") == 0)
        rc = s_simple_command(&client, "STATUS");
    else if (strcmp(command, "reload") == 0)
        rc = s_simple_command(&client, "RELOAD");
    else if (strcmp(command, "stage") == 0)
        rc = s_stage(&client, sub_argc, sub_argv);
    else if (strcmp(command, "check") == 0)
        rc = s_check(sub_argc, sub_argv);
    else if (strcmp(command, "token") == 0)
        rc = s_token(&client, sub_argc, sub_argv);
    else if (strcmp(command, "plugins") == 0)
        rc = s_plugins();
    else {
        s_usage(stderr);
        rc = 2;
    }
    lh_hub_conf_destroy(&client.conf);
    zsys_shutdown();
    return rc;
}
