/* conf: loads livehubd's ZPL conf with czmq zconfig and validates all of it, naming file:line. */
#include <arpa/inet.h>
#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <czmq.h>

#include "conf.h"
#include "control_endpoint.h"

#define S_FILE_MAX (1024 * 1024) /* a conf larger than this is surely the wrong file */
#define S_LINE_MAX 1024          /* zconfig silently cuts longer lines */
#define S_DEPTH_MAX 8            /* valid confs nest 3 deep; deeper is refused by the scan */
#define S_PATH_MAX 4096          /* ordinal paths of valid confs stay far below this */
#define S_LIST_MAX 256           /* "known: a, b, c" lists in messages */

/* Everything one load needs: where errors go and where each node came from. */
typedef struct {
    const char *file;
    lh_error_t *err;
    zhash_t *lines; /* ordinal path ("chain[1]/sink[0]/listen[0]") -> line, as intptr_t */
    size_t node_count;
    int suspect_line; /* first line zconfig will probably refuse, for its silent failures */
    char suspect[96];
    zhash_t *chains; /* chain name -> line, as intptr_t */
    lh_plugin_lookup_fn *lookup;
    void *lookup_arg;
    lh_hub_conf_t *conf;
} s_ctx_t;

static const char *s_role_names[] = {"source", "processor", "sink", "filter"};
#define S_ROLE_COUNT 4

/* Sets "file:line: key: reason" (parts omitted when 0 / NULL) and returns -1, so that callers can
 * `return s_fail(...)`. */
static int s_fail(s_ctx_t *ctx, int line, const char *key, const char *format, ...)
    __attribute__((format(printf, 4, 5)));
static int s_fail(s_ctx_t *ctx, int line, const char *key, const char *format, ...)
{
    char reason[sizeof ctx->err->text];
    va_list args;
    va_start(args, format);
    vsnprintf(reason, sizeof reason, format, args);
    va_end(args);
    char where[32] = "";
    if (line > 0)
        snprintf(where, sizeof where, ":%d", line);
    if (key)
        lh_error_set(ctx->err, "%s%s: %s: %s", ctx->file, where, key, reason);
    else
        lh_error_set(ctx->err, "%s%s: %s", ctx->file, where, reason);
    return -1;
}

static int s_fail_oom(s_ctx_t *ctx)
{
    return s_fail(ctx, 0, NULL, "out of memory");
}

/* ---- value syntax --------------------------------------------------------------------------- */

/* The characters zconfig accepts in a name. */
static bool s_is_namechar(char c)
{
    return isalnum((unsigned char)c) || (c && strchr("$-_@.&+/", c));
}

/* Stage and hub names: [A-Za-z0-9_.-]{1,64}, safe in logs, metrics labels, inproc endpoint names
 * and event sources (whose stamped length must stay within LH_TYPE_MAX). */
static bool s_is_name(const char *text)
{
    if (!*text || strlen(text) > 64)
        return false;
    for (const char *c = text; *c; c++)
        if (!isalnum((unsigned char)*c) && !strchr("_.-", *c))
            return false;
    return true;
}

/* Plugin names become file names (NAME.so): a name, but never starting with a dot. */
static bool s_is_plugin_name(const char *text)
{
    return s_is_name(text) && text[0] != '.';
}

/* Parses a whole decimal integer; returns 0, or -1 when text is not one or does not fit. */
static int s_parse_int(const char *text, int64_t *value)
{
    if (!*text || isspace((unsigned char)*text))
        return -1;
    errno = 0;
    char *end;
    long long parsed = strtoll(text, &end, 10);
    if (*end || errno)
        return -1;
    *value = parsed;
    return 0;
}

static int s_parse_bool(const char *text, bool *value)
{
    static const char *yes[] = {"true", "yes", "on", "1"};
    static const char *no[] = {"false", "no", "off", "0"};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        if (strcasecmp(text, yes[i]) == 0) {
            *value = true;
            return 0;
        }
        if (strcasecmp(text, no[i]) == 0) {
            *value = false;
            return 0;
        }
    }
    return -1;
}

/* env:NAME (a valid variable name) or file:PATH; only the form, the secret is never read here. */
static bool s_is_secret_ref(const char *text)
{
    if (strncmp(text, "env:", 4) == 0) {
        const char *name = text + 4;
        if (!isalpha((unsigned char)*name) && *name != '_')
            return false;
        for (; *name; name++)
            if (!isalnum((unsigned char)*name) && *name != '_')
                return false;
        return true;
    }
    return strncmp(text, "file:", 5) == 0 && text[5] != '\0';
}

/* Checks HOST:PORT (HOST may be a bracketed IPv6 address); returns NULL, or a reason. *loopback
 * tells whether HOST only reaches this machine. */
static const char *s_check_host_port(const char *text, bool *loopback)
{
    const char *colon = strrchr(text, ':');
    if (!colon || colon == text)
        return "expected HOST:PORT";
    const char *port = colon + 1;
    int64_t number;
    if (!isdigit((unsigned char)*port) || s_parse_int(port, &number) || number < 1 ||
        number > 65535)
        return "the port must be a number in 1..65535";
    char host[256];
    size_t host_size = (size_t)(colon - text);
    if (host_size >= sizeof host)
        return "the host name is too long";
    memcpy(host, text, host_size);
    host[host_size] = '\0';

    if (host[0] == '[') {
        if (host_size < 3 || host[host_size - 1] != ']')
            return "an IPv6 host must be written [ADDRESS]";
        host[host_size - 1] = '\0';
        struct in6_addr address;
        if (inet_pton(AF_INET6, host + 1, &address) != 1)
            return "not a valid IPv6 address";
        *loopback = IN6_IS_ADDR_LOOPBACK(&address);
        return NULL;
    }
    if (strchr(host, ':'))
        return "an IPv6 host must be written [ADDRESS]";
    struct in_addr address;
    *loopback = strcmp(host, "localhost") == 0 ||
                (inet_pton(AF_INET, host, &address) == 1 && (ntohl(address.s_addr) >> 24) == 127);
    return NULL;
}

/* Checks tcp://HOST:PORT, or also ipc://NAME when ipc_too; *loopback is true for ipc. */
static const char *s_check_endpoint(const char *text, bool ipc_too, bool *loopback)
{
    if (ipc_too && strncmp(text, "ipc://", 6) == 0) {
        *loopback = true;
        return text[6] ? NULL : "ipc:// needs a path";
    }
    if (strncmp(text, "tcp://", 6) != 0)
        return ipc_too ? "expected ipc://PATH or tcp://HOST:PORT" : "expected tcp://HOST:PORT";
    return s_check_host_port(text + 6, loopback);
}

/* Parses an integer within [min, max] into *value, or fails naming key and line. */
static int s_int_in_range(s_ctx_t *ctx, int line, const char *key, const char *text, int64_t min,
                          int64_t max, int64_t *value)
{
    if (s_parse_int(text, value))
        return s_fail(ctx, line, key, "'%s' is not a decimal integer", text);
    if (*value < min || *value > max) {
        if (max == INT64_MAX)
            return s_fail(ctx, line, key, "%" PRId64 " is out of range (at least %" PRId64 ")",
                          *value, min);
        return s_fail(ctx, line, key, "%" PRId64 " is out of range %" PRId64 "..%" PRId64, *value,
                      min, max);
    }
    return 0;
}

static int s_bool(s_ctx_t *ctx, int line, const char *key, const char *text, bool *value)
{
    if (s_parse_bool(text, value))
        return s_fail(ctx, line, key, "'%s' is not a boolean (true/false, yes/no, on/off, 1/0)",
                      text);
    return 0;
}

/* Replaces *field with a copy of value. */
static int s_set_text(s_ctx_t *ctx, char **field, const char *value)
{
    char *copy = strdup(value);
    if (!copy)
        return s_fail_oom(ctx);
    free(*field);
    *field = copy;
    return 0;
}

/* ---- the line scan -------------------------------------------------------------------------- */

/* One open level of nesting while scanning: the ordinal path of its node, and how many children
 * of each name it has had so far. */
typedef struct {
    char path[S_PATH_MAX];
    zhash_t *counts; /* child name -> count + 1, as intptr_t */
} s_frame_t;

/* Writes the ordinal path "parent/name[ordinal]" of a node into path (S_PATH_MAX bytes). Only
 * absurd names nested deep could overflow it; such a path becomes "?", which no name can spell,
 * so it never takes the line of a real node. */
static void s_child_path(char *path, const char *parent_path, const char *name, int ordinal)
{
    char buffer[S_PATH_MAX];
    int size = snprintf(buffer, sizeof buffer, "%s%s%s[%d]", parent_path, *parent_path ? "/" : "",
                        name, ordinal);
    if (size < 0 || size >= S_PATH_MAX)
        strcpy(path, "?");
    else
        memcpy(path, buffer, (size_t)size + 1);
}

/* Notes why zconfig will refuse a line with a node name (for the "not valid ZPL" message). */
static void s_note_syntax(s_ctx_t *ctx, int lineno, const char *name, size_t name_size,
                          const char *rest)
{
    const char *reason = NULL;
    if (name[0] == '/' || name[name_size - 1] == '/')
        reason = "'/' cannot start or end a name";
    while (isspace((unsigned char)*rest))
        rest++;
    if (!reason && *rest == '=') {
        rest++;
        while (isspace((unsigned char)*rest))
            rest++;
        if (*rest == '"' || *rest == '\'') {
            const char *close = strchr(rest + 1, *rest);
            if (!close)
                reason = "missing closing quote";
            else {
                rest = close + 1;
                while (isspace((unsigned char)*rest))
                    rest++;
                if (*rest && *rest != '#')
                    reason = "text after the closing quote";
            }
        }
    } else if (!reason && *rest && *rest != '#')
        reason = "expected '=' after the name";
    if (reason && !ctx->suspect_line) {
        ctx->suspect_line = lineno;
        snprintf(ctx->suspect, sizeof ctx->suspect, "%s", reason);
    }
}

/* Checks the text line by line for what zconfig cannot report with a line number (tabs, odd
 * indentation, long lines) and records the line of every node under its ordinal path. Node lines
 * are the ones zconfig turns into items: indentation, then a name character. Returns 0, or -1
 * with ctx->err set. */
static int s_scan(s_ctx_t *ctx, const char *text, size_t size)
{
    s_frame_t *frames = calloc(S_DEPTH_MAX + 1, sizeof *frames);
    if (!frames)
        return s_fail_oom(ctx);
    int rc = -1;
    int previous_level = -1;
    int lineno = 0;
    const char *cursor = text;
    const char *end = text + size;
    while (cursor < end) {
        const char *eol = memchr(cursor, '\n', (size_t)(end - cursor));
        const char *start = cursor;
        size_t length = eol ? (size_t)(eol - cursor) : (size_t)(end - cursor);
        cursor = eol ? eol + 1 : end;
        lineno++;
        if (memchr(start, '\0', length)) {
            s_fail(ctx, lineno, NULL, "NUL byte in the text");
            goto done;
        }
        while (length && isspace((unsigned char)start[length - 1]))
            length--;
        if (length > S_LINE_MAX) {
            s_fail(ctx, lineno, NULL, "line longer than %d characters", S_LINE_MAX);
            goto done;
        }
        char line[S_LINE_MAX + 1];
        memcpy(line, start, length);
        line[length] = '\0';
        if (length == 0)
            continue;

        size_t indent = strspn(line, " \t");
        if (memchr(line, '\t', indent)) {
            s_fail(ctx, lineno, NULL, "tab in indentation; ZPL indents with 4 spaces");
            goto done;
        }
        if (indent % 4) {
            s_fail(ctx, lineno, NULL, "indented by %zu spaces; ZPL indents by multiples of 4",
                   indent);
            goto done;
        }
        int level = (int)(indent / 4);
        char *name = line + indent;
        if (!s_is_namechar(*name)) {
            if (*name != '#' && !ctx->suspect_line) {
                ctx->suspect_line = lineno;
                snprintf(ctx->suspect, sizeof ctx->suspect, "a line must start with a name");
            }
            continue;
        }
        if (level > previous_level + 1) {
            s_fail(ctx, lineno, NULL, "indented more than one level below the entry above");
            goto done;
        }
        if (level >= S_DEPTH_MAX) {
            s_fail(ctx, lineno, NULL, "nested deeper than %d levels", S_DEPTH_MAX);
            goto done;
        }
        size_t name_size = 1;
        while (s_is_namechar(name[name_size]))
            name_size++;
        s_note_syntax(ctx, lineno, name, name_size, name + name_size);
        char rest = name[name_size];
        name[name_size] = '\0';

        s_frame_t *parent = &frames[level];
        if (!parent->counts && !(parent->counts = zhash_new())) {
            s_fail_oom(ctx);
            goto done;
        }
        intptr_t ordinal = (intptr_t)zhash_lookup(parent->counts, name);
        zhash_update(parent->counts, name, (void *)(ordinal + 1));
        /* The node opens the next level: its own children count from zero. */
        s_frame_t *frame = &frames[level + 1];
        zhash_destroy(&frame->counts);
        s_child_path(frame->path, parent->path, name, (int)ordinal);
        name[name_size] = rest;
        if (zhash_insert(ctx->lines, frame->path, (void *)(intptr_t)lineno) == -1 &&
            !zhash_lookup(ctx->lines, frame->path)) {
            s_fail_oom(ctx);
            goto done;
        }
        ctx->node_count++;
        previous_level = level;
    }
    rc = 0;
done:
    for (int level = 0; level <= S_DEPTH_MAX; level++)
        zhash_destroy(&frames[level].counts);
    free(frames);
    return rc;
}

/* Writes the ordinal path of item, a child of parent (at parent_path), into path, and returns the
 * item's line as the scan recorded it (0 if unknown). */
static int s_locate(s_ctx_t *ctx, const char *parent_path, zconfig_t *parent, zconfig_t *item,
                    char *path)
{
    int ordinal = 0;
    for (zconfig_t *sibling = zconfig_child(parent); sibling && sibling != item;
         sibling = zconfig_next(sibling))
        if (strcmp(zconfig_name(sibling), zconfig_name(item)) == 0)
            ordinal++;
    s_child_path(path, parent_path, zconfig_name(item), ordinal);
    return (int)(intptr_t)zhash_lookup(ctx->lines, path);
}

/* ---- the hub block -------------------------------------------------------------------------- */

typedef enum {
    S_TEXT,    /* char *, non-empty */
    S_NAME,    /* char *, [A-Za-z0-9_.-]+ */
    S_TCP,     /* char *, tcp://HOST:PORT */
    S_CONTROL, /* char *, ipc://PATH or tcp://HOST:PORT */
    S_SECRET,  /* char *, env:NAME or file:PATH */
    S_BOOL,    /* bool */
    S_INT,     /* int within [min, max] */
    S_INT64,   /* int64_t within [min, max] */
    S_SIZE,    /* size_t within [min, max] */
    S_CHOICE,  /* int: the index of the value among the key's space-separated choices */
} s_kind_t;

/* One key of the hub block; section names a nested block (curve) holding the key. */
typedef struct {
    const char *section;
    const char *name;
    s_kind_t kind;
    const char *default_value;
    int64_t min, max;
    size_t offset; /* of the field in lh_hub_conf_t */
    const char *help;
} s_hub_key_t;

/* The values an S_CHOICE key allows, space-separated, in the order of its field's enum. */
static const struct {
    const char *key, *choices;
} s_hub_choices[] = {
    {"journal_sync", "interval batch none"}, /* lh_journal_sync_t */
};

#define S_FIELD(field) offsetof(lh_hub_conf_t, field)

static const s_hub_key_t s_hub_keys[] = {
    {NULL, "name", S_NAME, "livehub", 0, 0, S_FIELD(name), "hub name, shown by status and in logs"},
    {NULL, "ingress", S_TCP, NULL, 0, 0, S_FIELD(ingress), "tcp:// endpoint producers PUSH to"},
    {NULL, "egress", S_TCP, NULL, 0, 0, S_FIELD(egress), "tcp:// endpoint subscribers SUB to"},
    {NULL, "control", S_CONTROL, NULL, 0, 0, S_FIELD(control),
     "ipc://PATH or tcp:// endpoint of the livehub CLI (default ipc://RUNTIME_DIR/NAME.control, "
     "a socket only the hub's user can reach)"},
    {NULL, "public", S_BOOL, "false", 0, 0, S_FIELD(public_listen),
     "allow tcp endpoints on non-loopback interfaces"},
    {NULL, "history", S_SIZE, "100000", 0, INT64_MAX, S_FIELD(history),
     "events kept for resume (0: none)"},
    {NULL, "history_bytes", S_SIZE, "67108864", 1024, (int64_t)1 << 40, S_FIELD(history_bytes),
     "bytes of events kept for resume, at least max_event_size"},
    {NULL, "history_age", S_INT64, "3600", 1, INT64_MAX, S_FIELD(history_age),
     "seconds events are kept for resume"},
    {NULL, "journal", S_TEXT, NULL, 0, 0, S_FIELD(journal), "file keeping history across restarts"},
    {NULL, "journal_sync", S_CHOICE, "interval", 0, 0, S_FIELD(journal_sync),
     "when the journal is synced to the disk: interval (each second), batch (before each batch "
     "is delivered) or none"},
    {NULL, "plugin_dir", S_TEXT, NULL, 0, 0, S_FIELD(plugin_dir), "directory of plugin .so files"},
    {NULL, "max_event_size", S_SIZE, "262144", 1024, 16777216, S_FIELD(max_event_size),
     "largest topic + body accepted, in bytes"},
    {NULL, "hwm", S_INT, "100000", 1, 10000000, S_FIELD(hwm), "ZeroMQ high-water marks"},
    {NULL, "token_secret", S_SECRET, NULL, 0, 0, S_FIELD(token_secret),
     "env:NAME or file:PATH of the browser token secret, or random (new each start)"},
    {NULL, "ephemeral", S_TEXT, NULL, 0, 0, S_FIELD(ephemeral),
     "space-separated type prefixes routed live but not kept in history or the journal"},
    {"curve", "server_cert", S_TEXT, NULL, 0, 0, S_FIELD(curve_server_cert),
     "zcert secret file of the hub"},
    {"curve", "clients", S_TEXT, NULL, 0, 0, S_FIELD(curve_clients),
     "directory of allowed client public certs"},
};
#define S_HUB_KEY_COUNT (sizeof s_hub_keys / sizeof s_hub_keys[0])

static bool s_same_section(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* Index of the first key of section, or -1 when there is no such section. */
static int s_section_index(const char *section)
{
    for (size_t i = 0; i < S_HUB_KEY_COUNT; i++)
        if (s_same_section(s_hub_keys[i].section, section))
            return (int)i;
    return -1;
}

/* Stores one hub key's value after checking it; line is 0 for defaults. */
static int s_hub_set(s_ctx_t *ctx, const s_hub_key_t *key, const char *value, int line)
{
    void *field = (char *)ctx->conf + key->offset;
    const char *reason = NULL;
    bool loopback;
    int64_t number = 0;
    switch (key->kind) {
    case S_TEXT:
        if (!*value)
            reason = "needs a value";
        break;
    case S_NAME:
        if (!s_is_name(value))
            reason = "must be letters, digits, '_', '.' or '-'";
        break;
    case S_TCP:
    case S_CONTROL:
        reason = s_check_endpoint(value, key->kind == S_CONTROL, &loopback);
        if (!reason && strncmp(value, "ipc://@", 7) == 0)
            reason = "an abstract socket (ipc://@NAME) has no permissions: any local user could "
                     "publish, reload and command stages; leave control unset (a private socket) "
                     "or use ipc://PATH or tcp:// with curve";
        break;
    case S_SECRET:
        /* Never echo the value: an inline secret is exactly what this refuses. */
        /* "random" (token_secret only) is a fresh secret per start: dev logins without setup. */
        if (!s_is_secret_ref(value) &&
            !(strcmp(key->name, "token_secret") == 0 && strcmp(value, "random") == 0))
            reason = "must be a reference, env:NAME or file:PATH (inline secrets are refused)";
        break;
    case S_BOOL:
        return s_bool(ctx, line, key->name, value, (bool *)field);
    case S_INT:
    case S_INT64:
    case S_SIZE:
        if (s_int_in_range(ctx, line, key->name, value, key->min, key->max, &number))
            return -1;
        if (key->kind == S_INT)
            *(int *)field = (int)number;
        else if (key->kind == S_INT64)
            *(int64_t *)field = number;
        else
            *(size_t *)field = (size_t)number;
        return 0;
    case S_CHOICE: {
        const char *choices = "";
        for (size_t i = 0; i < sizeof s_hub_choices / sizeof s_hub_choices[0]; i++)
            if (strcmp(s_hub_choices[i].key, key->name) == 0)
                choices = s_hub_choices[i].choices;
        size_t size = strlen(value);
        int index = 0;
        for (const char *choice = choices; *choice; index++) {
            size_t length = strcspn(choice, " ");
            if (length == size && memcmp(choice, value, size) == 0) {
                *(int *)field = index;
                return 0;
            }
            choice += length + (choice[length] == ' ');
        }
        return s_fail(ctx, line, key->name, "'%s' is not one of: %s", value, choices);
    }
    }
    if (reason)
        return s_fail(ctx, line, key->name, "%s", reason);
    return s_set_text(ctx, (char **)field, value);
}

/* "a, b, c": the hub keys of a section, for messages. */
static void s_hub_key_list(const char *section, char *list, size_t size)
{
    list[0] = '\0';
    for (size_t i = 0; i < S_HUB_KEY_COUNT; i++) {
        if (!s_same_section(s_hub_keys[i].section, section))
            continue;
        size_t used = strlen(list);
        snprintf(list + used, size - used, "%s%s", used ? ", " : "", s_hub_keys[i].name);
    }
    if (!section)
        for (size_t i = 0; i < S_HUB_KEY_COUNT; i++)
            if (s_hub_keys[i].section && s_section_index(s_hub_keys[i].section) == (int)i) {
                size_t used = strlen(list);
                snprintf(list + used, size - used, ", %s", s_hub_keys[i].section);
            }
}

/* Reads the keys of the hub block or of one of its sections; lines[i] receives the line of
 * s_hub_keys[i], section_lines[i] that of the section starting at i. */
static int s_load_hub_block(s_ctx_t *ctx, zconfig_t *block, const char *section,
                            const char *block_path, int lines[], int section_lines[])
{
    char path[S_PATH_MAX];
    for (zconfig_t *item = zconfig_child(block); item; item = zconfig_next(item)) {
        int line = s_locate(ctx, block_path, block, item, path);
        const char *name = zconfig_name(item);
        int nested = section ? -1 : s_section_index(name);
        if (nested >= 0) {
            if (section_lines[nested])
                return s_fail(ctx, line, name, "set twice (first at line %d)",
                              section_lines[nested]);
            section_lines[nested] = line;
            if (*zconfig_value(item))
                return s_fail(ctx, line, name, "takes no value, only a nested block");
            if (s_load_hub_block(ctx, item, name, path, lines, section_lines))
                return -1;
            continue;
        }
        size_t index = 0;
        while (index < S_HUB_KEY_COUNT && !(s_same_section(s_hub_keys[index].section, section) &&
                                            strcmp(s_hub_keys[index].name, name) == 0))
            index++;
        if (index == S_HUB_KEY_COUNT) {
            char known[S_LIST_MAX];
            s_hub_key_list(section, known, sizeof known);
            return s_fail(ctx, line, name, "unknown key in %s (known: %s)",
                          section ? section : "hub", known);
        }
        if (zconfig_child(item))
            return s_fail(ctx, line, name, "takes no nested block");
        if (lines[index])
            return s_fail(ctx, line, name, "set twice (first at line %d)", lines[index]);
        lines[index] = line;
        if (s_hub_set(ctx, &s_hub_keys[index], zconfig_value(item), line))
            return -1;
    }
    return 0;
}

/* Reads the hub block, then checks what spans keys: tcp endpoints stay on loopback unless
 * `public = true`, curve is configured whole or not at all, and history_bytes holds the largest
 * event. */
static int s_load_hub(s_ctx_t *ctx, zconfig_t *hub, const char *hub_path, int hub_line)
{
    if (*zconfig_value(hub))
        return s_fail(ctx, hub_line, "hub", "takes no value, only a nested block");
    int lines[S_HUB_KEY_COUNT] = {0};
    int section_lines[S_HUB_KEY_COUNT] = {0};
    if (s_load_hub_block(ctx, hub, NULL, hub_path, lines, section_lines))
        return -1;

    lh_hub_conf_t *conf = ctx->conf;
    for (size_t i = 0; i < S_HUB_KEY_COUNT; i++) {
        if (s_hub_keys[i].kind != S_TCP && s_hub_keys[i].kind != S_CONTROL)
            continue;
        const char *endpoint = *(char **)((char *)conf + s_hub_keys[i].offset);
        bool loopback = true;
        if (endpoint && !s_check_endpoint(endpoint, true, &loopback) && !loopback &&
            !conf->public_listen)
            return s_fail(ctx, lines[i] ? lines[i] : hub_line, s_hub_keys[i].name,
                          "%s is not a loopback address; set public = true in hub to listen on "
                          "other interfaces",
                          endpoint);
    }
    int curve = s_section_index("curve");
    if (section_lines[curve] && (!conf->curve_server_cert || !conf->curve_clients))
        return s_fail(ctx, section_lines[curve], "curve", "needs both server_cert and clients");
    /* every event history takes must fit in it */
    if (conf->history && conf->history_bytes < conf->max_event_size) {
        size_t key = 0;
        while (strcmp(s_hub_keys[key].name, "history_bytes") != 0)
            key++;
        return s_fail(ctx, lines[key] ? lines[key] : hub_line, "history_bytes",
                      "%zu is less than max_event_size (%zu): the largest event must fit",
                      conf->history_bytes, conf->max_event_size);
    }
    return 0;
}

/* ---- stages --------------------------------------------------------------------------------- */

static void s_stage_destroy(lh_stage_conf_t **self_p)
{
    lh_stage_conf_t *self = *self_p;
    if (!self)
        return;
    free(self->chain);
    free(self->name);
    free(self->plugin);
    for (size_t i = 0; self->subscribe && i < self->subscribe_count; i++)
        free(self->subscribe[i]);
    free(self->subscribe);
    for (size_t i = 0; i < self->option_count; i++) {
        free(self->keys[i]);
        free(self->values[i]);
    }
    free(self->keys);
    free(self->values);
    free(self->lines);
    free(self->fingerprint);
    free(self->file);
    free(self);
    *self_p = NULL;
}

/* A new stage with its defaults, already owned by conf (so that any later failure frees it with
 * the conf), or NULL when memory runs out. */
static lh_stage_conf_t *s_stage_append(lh_hub_conf_t *conf, const char *chain, const char *name,
                                       lh_stage_role_t role, int line)
{
    lh_stage_conf_t **stages = realloc(conf->stages, (conf->stage_count + 1) * sizeof *stages);
    if (!stages)
        return NULL;
    conf->stages = stages;
    lh_stage_conf_t *stage = calloc(1, sizeof *stage);
    if (!stage)
        return NULL;
    stages[conf->stage_count++] = stage;
    stage->role = role;
    stage->workers = 1;
    stage->ready_timeout_ms = 5000;
    stage->line = line;
    stage->chain = strdup(chain);
    stage->name = strdup(name);
    stage->file = strdup(conf->path);
    stage->subscribe = calloc(1, sizeof *stage->subscribe);
    if (!stage->chain || !stage->name || !stage->file || !stage->subscribe)
        return NULL;
    return stage;
}

/* Appends a plugin option (line 0: a filled-in default). */
static int s_stage_add_option(lh_stage_conf_t *stage, const char *key, const char *value, int line)
{
    size_t count = stage->option_count + 1;
    char **keys = realloc(stage->keys, count * sizeof *keys);
    if (!keys)
        return -1;
    stage->keys = keys;
    char **values = realloc(stage->values, count * sizeof *values);
    if (!values)
        return -1;
    stage->values = values;
    int *lines = realloc(stage->lines, count * sizeof *lines);
    if (!lines)
        return -1;
    stage->lines = lines;
    char *key_copy = strdup(key);
    char *value_copy = strdup(value);
    if (!key_copy || !value_copy) {
        free(key_copy);
        free(value_copy);
        return -1;
    }
    keys[count - 1] = key_copy;
    values[count - 1] = value_copy;
    lines[count - 1] = line;
    stage->option_count = count;
    return 0;
}

static int s_option_index(const lh_stage_conf_t *stage, const char *key)
{
    for (size_t i = 0; i < stage->option_count; i++)
        if (strcmp(stage->keys[i], key) == 0)
            return (int)i;
    return -1;
}

/* Splits space-separated topic prefixes into the stage's NULL-terminated array. */
static int s_stage_set_subscribe(lh_stage_conf_t *stage, const char *value)
{
    char *copy = strdup(value);
    if (!copy)
        return -1;
    int rc = -1;
    size_t capacity = strlen(copy) / 2 + 2; /* prefixes are at least one character apart */
    char **prefixes = calloc(capacity, sizeof *prefixes);
    size_t count = 0;
    if (!prefixes)
        goto done;
    char *saveptr = NULL;
    for (char *token = strtok_r(copy, " \t", &saveptr); token;
         token = strtok_r(NULL, " \t", &saveptr)) {
        if (!(prefixes[count] = strdup(token)))
            goto done;
        count++;
    }
    for (size_t i = 0; i < stage->subscribe_count; i++)
        free(stage->subscribe[i]);
    free(stage->subscribe);
    stage->subscribe = prefixes;
    stage->subscribe_count = count;
    prefixes = NULL;
    rc = 0;
done:
    for (size_t i = 0; prefixes && i < count; i++)
        free(prefixes[i]);
    free(prefixes);
    free(copy);
    return rc;
}

/* The keys every stage has, handled here rather than by the plugin. */
typedef enum {
    S_PLUGIN,
    S_SUBSCRIBE,
    S_DELIVERY,
    S_WORKERS,
    S_READY_TIMEOUT,
    S_PUBLIC,
    S_ISOLATE,
    S_GENERIC_COUNT
} s_generic_t;

static const char *s_generic_names[S_GENERIC_COUNT] = {
    "plugin", "subscribe", "delivery", "workers", "ready_timeout", "public", "isolate"};

static int s_stage_set_generic(s_ctx_t *ctx, lh_stage_conf_t *stage, s_generic_t which,
                               const char *value, int line)
{
    const char *key = s_generic_names[which];
    int64_t number;
    switch (which) {
    case S_PLUGIN:
        if (!s_is_plugin_name(value))
            return s_fail(ctx, line, key,
                          "'%s' is not a plugin name (letters, digits, '_', '.', '-')", value);
        return s_set_text(ctx, &stage->plugin, value);
    case S_SUBSCRIBE:
        if (stage->role == LH_STAGE_SOURCE)
            return s_fail(ctx, line, key, "a source receives no events, so it subscribes to none");
        return s_stage_set_subscribe(stage, value) ? s_fail_oom(ctx) : 0;
    case S_DELIVERY:
        if (stage->role == LH_STAGE_SOURCE)
            return s_fail(ctx, line, key, "a source receives no events, so it has no delivery");
        if (strcmp(value, "queue") != 0 && strcmp(value, "broadcast") != 0)
            return s_fail(ctx, line, key, "'%s' is neither broadcast nor queue", value);
        stage->queue = strcmp(value, "queue") == 0;
        return 0;
    case S_WORKERS:
        if (s_int_in_range(ctx, line, key, value, 1, 64, &number))
            return -1;
        stage->workers = (int)number;
        return 0;
    case S_READY_TIMEOUT:
        if (s_int_in_range(ctx, line, key, value, 100, 600000, &number))
            return -1;
        stage->ready_timeout_ms = (int)number;
        return 0;
    case S_PUBLIC:
        return s_bool(ctx, line, key, value, &stage->public_listen);
    case S_ISOLATE:
        if (strcmp(value, "process") != 0 && strcmp(value, "thread") != 0)
            return s_fail(ctx, line, key,
                          "'%s' is neither thread (in the hub's process) nor process (a child "
                          "process per worker)",
                          value);
        stage->isolate_process = strcmp(value, "process") == 0;
        return 0;
    case S_GENERIC_COUNT:
        break;
    }
    return 0;
}

/* Checks one plugin option's value against its declared type. */
static int s_check_option(s_ctx_t *ctx, const lh_stage_conf_t *stage, const lh_option_t *option,
                          const char *value, int line)
{
    const char *key = option->name;
    int64_t number;
    bool flag, loopback;
    const char *reason;
    switch (option->type) {
    case LH_OPTION_STRING:
        return 0;
    case LH_OPTION_INT:
        if (option->min == 0 && option->max == 0)
            return s_int_in_range(ctx, line, key, value, INT64_MIN, INT64_MAX, &number);
        return s_int_in_range(ctx, line, key, value, option->min, option->max, &number);
    case LH_OPTION_BOOL:
        return s_bool(ctx, line, key, value, &flag);
    case LH_OPTION_SECRET:
        if (!s_is_secret_ref(value))
            return s_fail(ctx, line, key,
                          "must be a reference, env:NAME or file:PATH (inline secrets are "
                          "refused)");
        return 0;
    case LH_OPTION_ENDPOINT:
        if ((reason = s_check_host_port(value, &loopback)))
            return s_fail(ctx, line, key, "'%s': %s", value, reason);
        if (!loopback && !stage->public_listen && !ctx->conf->public_listen)
            return s_fail(ctx, line, key,
                          "%s is not a loopback address; set public = true on the stage to listen "
                          "on other interfaces",
                          value);
        return 0;
    }
    return s_fail(ctx, line, key, "the plugin declares an unknown option type %d",
                  (int)option->type);
}

static const lh_option_t *s_find_option(const lh_plugin_t *plugin, const char *key)
{
    for (const lh_option_t *option = plugin->options; option && option->name; option++)
        if (strcmp(option->name, key) == 0)
            return option;
    return NULL;
}

/* Looks the stage's plugin up and checks the stage against its descriptor: role, option keys and
 * types, required options; fills defaults in, then runs the plugin's own validate(). */
static int s_check_plugin(s_ctx_t *ctx, lh_stage_conf_t *stage, int plugin_line)
{
    lh_error_t why = {""};
    const lh_plugin_t *plugin = ctx->lookup(stage->plugin, ctx->lookup_arg, &why);
    if (!plugin)
        return s_fail(ctx, plugin_line, "plugin", "cannot use plugin '%s': %s", stage->plugin,
                      why.text[0] ? why.text : "not found");

    static const unsigned role_bits[] = {LH_ROLE_SOURCE, LH_ROLE_PROCESSOR, LH_ROLE_SINK,
                                         LH_ROLE_EVENT_FILTER};
    /* `filter =` was the name of processors before ABI 1.2: a plugin that is only a processor
     * still loads that way, with a deprecation warning (livehubd and livehub check print it) */
    if (stage->role == LH_STAGE_FILTER && !(plugin->roles & LH_ROLE_EVENT_FILTER) &&
        (plugin->roles & LH_ROLE_PROCESSOR)) {
        stage->role = LH_STAGE_PROCESSOR;
        stage->deprecated_filter = true;
    }
    if (!(plugin->roles & role_bits[stage->role])) {
        char roles[S_LIST_MAX] = "";
        for (size_t i = 0; i < sizeof role_bits / sizeof role_bits[0]; i++)
            if (plugin->roles & role_bits[i]) {
                size_t used = strlen(roles);
                snprintf(roles + used, sizeof roles - used, "%s%s", used ? ", " : "",
                         s_role_names[i]);
            }
        return s_fail(ctx, plugin_line, "plugin", "'%s' cannot be a %s (it can be: %s)",
                      stage->plugin, s_role_names[stage->role], roles[0] ? roles : "nothing");
    }

    size_t written = stage->option_count;
    for (size_t i = 0; i < written; i++) {
        const lh_option_t *option = s_find_option(plugin, stage->keys[i]);
        if (!option) {
            char known[S_LIST_MAX] = "";
            for (option = plugin->options; option && option->name; option++) {
                size_t used = strlen(known);
                snprintf(known + used, sizeof known - used, "%s%s", used ? ", " : "", option->name);
            }
            return s_fail(ctx, stage->lines[i], stage->keys[i],
                          "unknown key '%s' for plugin '%s' (known: %s)", stage->keys[i],
                          stage->plugin, known[0] ? known : "none");
        }
        if (s_check_option(ctx, stage, option, stage->values[i], stage->lines[i]))
            return -1;
    }
    for (const lh_option_t *option = plugin->options; option && option->name; option++) {
        if (s_option_index(stage, option->name) >= 0)
            continue;
        if (option->default_value) {
            if (s_stage_add_option(stage, option->name, option->default_value, 0))
                return s_fail_oom(ctx);
        } else if (option->required)
            return s_fail(ctx, stage->line, option->name, "required by plugin '%s' (%s)",
                          stage->plugin, option->help ? option->help : "no help");
    }
    if (plugin->validate) {
        lh_error_t reason = {""};
        if (plugin->validate(stage, &reason) != 0)
            return s_fail(ctx, stage->line, NULL, "%s",
                          reason.text[0] ? reason.text : "refused by the plugin's validate()");
    }
    return 0;
}

/* Canonical text of everything that makes the stage what it is: equal text, unchanged stage. */
static char *s_fingerprint(const lh_stage_conf_t *stage)
{
    char *text = NULL;
    size_t size = 0;
    FILE *out = open_memstream(&text, &size);
    if (!out)
        return NULL;
    fprintf(out, "chain=%s\n%s=%s\nplugin=%s\nsubscribe=", stage->chain, s_role_names[stage->role],
            stage->name, stage->plugin);
    for (size_t i = 0; i < stage->subscribe_count; i++)
        fprintf(out, "%s%s", i ? " " : "", stage->subscribe[i]);
    fprintf(out, "\ndelivery=%s\nworkers=%d\nready_timeout=%d\npublic=%s\nisolate=%s\n",
            stage->queue ? "queue" : "broadcast", stage->workers, stage->ready_timeout_ms,
            stage->public_listen ? "true" : "false", stage->isolate_process ? "process" : "thread");
    for (size_t i = 0; i < stage->option_count; i++)
        fprintf(out, "option %s=%s\n", stage->keys[i], stage->values[i]);
    if (fclose(out) != 0) {
        free(text);
        return NULL;
    }
    return text;
}

/* Reads one `source|filter|sink = NAME` block of a chain. */
static int s_load_stage(s_ctx_t *ctx, const char *chain, zconfig_t *block, const char *block_path,
                        int line, lh_stage_role_t role)
{
    const char *role_name = s_role_names[role];
    const char *name = zconfig_value(block);
    if (!s_is_name(name))
        return s_fail(ctx, line, role_name,
                      "stage name '%s' must be non-empty letters, digits, '_', '.' or '-'", name);
    lh_stage_conf_t *same = lh_hub_conf_stage(ctx->conf, name);
    if (same)
        return s_fail(ctx, line, role_name, "stage name '%s' is already used at line %d", name,
                      same->line);
    lh_stage_conf_t *stage = s_stage_append(ctx->conf, chain, name, role, line);
    if (!stage)
        return s_fail_oom(ctx);

    int generic_lines[S_GENERIC_COUNT] = {0};
    char path[S_PATH_MAX];
    for (zconfig_t *item = zconfig_child(block); item; item = zconfig_next(item)) {
        int key_line = s_locate(ctx, block_path, block, item, path);
        const char *key = zconfig_name(item);
        const char *value = zconfig_value(item);
        if (zconfig_child(item))
            return s_fail(ctx, key_line, key, "nested blocks are not supported in a stage");
        int which = 0;
        while (which < S_GENERIC_COUNT && strcmp(s_generic_names[which], key) != 0)
            which++;
        if (which < S_GENERIC_COUNT) {
            if (generic_lines[which])
                return s_fail(ctx, key_line, key, "set twice (first at line %d)",
                              generic_lines[which]);
            generic_lines[which] = key_line;
            if (s_stage_set_generic(ctx, stage, (s_generic_t)which, value, key_line))
                return -1;
            continue;
        }
        int index = s_option_index(stage, key);
        if (index >= 0)
            return s_fail(ctx, key_line, key, "set twice (first at line %d)", stage->lines[index]);
        if (s_stage_add_option(stage, key, value, key_line))
            return s_fail_oom(ctx);
    }
    if (!stage->plugin)
        return s_fail(ctx, line, "plugin", "missing; %s '%s' needs plugin = NAME", role_name, name);
    if (stage->workers > 1 && !stage->queue)
        return s_fail(ctx, generic_lines[S_WORKERS], "workers",
                      "%d workers need delivery = queue (broadcast would hand each event to "
                      "every worker)",
                      stage->workers);
    if (ctx->lookup && s_check_plugin(ctx, stage, generic_lines[S_PLUGIN]))
        return -1;
    /* an in-line filter takes no delivery keys; they go with a thread of its own */
    for (int which = S_SUBSCRIBE; ctx->lookup && stage->role == LH_STAGE_FILTER && which < S_GENERIC_COUNT;
         which++)
        if (generic_lines[which] && which != S_PUBLIC && which != S_READY_TIMEOUT)
            return s_fail(ctx, generic_lines[which], s_generic_names[which],
                          "a filter runs in-line on the router's thread, on the events of its "
                          "chain's sources: it has no %s (use a processor for that)",
                          s_generic_names[which]);
    if (!(stage->fingerprint = s_fingerprint(stage)))
        return s_fail_oom(ctx);
    return 0;
}

/* Reads a chain's `entries`: the external entries whose events pass through its filters. */
static int s_load_entries(s_ctx_t *ctx, const char *chain, const char *value, int line)
{
    char *copy = strdup(value);
    if (!copy)
        return s_fail_oom(ctx);
    int rc = 0;
    char *save = NULL;
    for (char *word = strtok_r(copy, " \t", &save); word && rc == 0;
         word = strtok_r(NULL, " \t", &save)) {
        char **claim = strcmp(word, "ingress") == 0   ? &ctx->conf->ingress_chain
                       : strcmp(word, "control") == 0 ? &ctx->conf->control_chain
                                                      : NULL;
        if (!claim)
            rc = s_fail(ctx, line, "entries",
                        "'%s' is not an external entry (ingress: the tcp ingress; control: the "
                        "control endpoint's PUBLISH, livehub pub)",
                        word);
        else if (*claim)
            rc = s_fail(ctx, line, "entries", "%s already goes through chain '%s'", word, *claim);
        else if (!(*claim = strdup(chain)))
            rc = s_fail_oom(ctx);
    }
    free(copy);
    return rc;
}

/* Reads one `chain = NAME` block. */
static int s_load_chain(s_ctx_t *ctx, zconfig_t *block, const char *block_path, int line)
{
    const char *name = zconfig_value(block);
    if (!*name)
        return s_fail(ctx, line, "chain", "needs a name (chain = NAME)");
    int first = (int)(intptr_t)zhash_lookup(ctx->chains, name);
    if (first)
        return s_fail(ctx, line, "chain", "'%s' is already defined at line %d", name, first);
    if (zhash_insert(ctx->chains, name, (void *)(intptr_t)(line ? line : -1)))
        return s_fail_oom(ctx);

    size_t stage_count = 0;
    char path[S_PATH_MAX];
    for (zconfig_t *item = zconfig_child(block); item; item = zconfig_next(item)) {
        int item_line = s_locate(ctx, block_path, block, item, path);
        const char *key = zconfig_name(item);
        if (strcmp(key, "entries") == 0) {
            if (s_load_entries(ctx, name, zconfig_value(item), item_line))
                return -1;
            continue;
        }
        size_t role = 0;
        while (role < S_ROLE_COUNT && strcmp(s_role_names[role], key) != 0)
            role++;
        if (role == S_ROLE_COUNT)
            return s_fail(ctx, item_line, key,
                          "unknown key in chain '%s' (expected source, processor, filter or sink "
                          "= NAME, or entries = ingress control)",
                          name);
        if (s_load_stage(ctx, name, item, path, item_line, (lh_stage_role_t)role))
            return -1;
        stage_count++;
    }
    if (stage_count == 0)
        return s_fail(ctx, line, "chain", "'%s' has no stages (add source, filter or sink = NAME)",
                      name);
    return 0;
}

/* Moves the in-line filters out of the stages (the router starts no thread for them). */
static int s_split_filters(s_ctx_t *ctx)
{
    lh_hub_conf_t *conf = ctx->conf;
    if (!(conf->filters = calloc(conf->stage_count + 1, sizeof *conf->filters)))
        return s_fail_oom(ctx);
    size_t kept = 0;
    for (size_t i = 0; i < conf->stage_count; i++) {
        if (conf->stages[i]->role == LH_STAGE_FILTER)
            conf->filters[conf->filter_count++] = conf->stages[i];
        else
            conf->stages[kept++] = conf->stages[i];
    }
    conf->stage_count = kept;
    return 0;
}

/* Reads the top level: the hub first, since stage endpoints depend on its `public`. */
static int s_load_tree(s_ctx_t *ctx, zconfig_t *root)
{
    char path[S_PATH_MAX];
    bool seen_hub = false;
    int hub_line = 0;
    for (zconfig_t *item = zconfig_child(root); item; item = zconfig_next(item)) {
        int line = s_locate(ctx, "", root, item, path);
        const char *name = zconfig_name(item);
        if (strcmp(name, "hub") == 0) {
            if (seen_hub)
                return s_fail(ctx, line, "hub", "a second hub block (the first is at line %d)",
                              hub_line);
            seen_hub = true;
            hub_line = line;
            if (s_load_hub(ctx, item, path, line))
                return -1;
        } else if (strcmp(name, "chain") != 0)
            return s_fail(ctx, line, name, "unknown top-level key (expected hub or chain = NAME)");
    }
    for (zconfig_t *item = zconfig_child(root); item; item = zconfig_next(item)) {
        int line = s_locate(ctx, "", root, item, path);
        if (strcmp(zconfig_name(item), "chain") == 0 && s_load_chain(ctx, item, path, line))
            return -1;
    }
    return s_split_filters(ctx);
}

/* ---- loading -------------------------------------------------------------------------------- */

/* Reads the whole file as a NUL-terminated text. */
static char *s_read_file(s_ctx_t *ctx, size_t *size_p)
{
    FILE *file = fopen(ctx->file, "rb");
    if (!file) {
        s_fail(ctx, 0, NULL, "%s", strerror(errno));
        return NULL;
    }
    char *text = NULL;
    size_t size = 0;
    size_t capacity = 0;
    for (;;) {
        if (size == capacity) {
            capacity = capacity ? capacity * 2 : 16384;
            char *bigger = realloc(text, capacity + 1);
            if (!bigger) {
                s_fail_oom(ctx);
                goto failed;
            }
            text = bigger;
        }
        size_t got = fread(text + size, 1, capacity - size, file);
        size += got;
        if (size > S_FILE_MAX) {
            s_fail(ctx, 0, NULL, "larger than %d KiB; is this the conf file?", S_FILE_MAX / 1024);
            goto failed;
        }
        if (got == 0)
            break;
    }
    if (ferror(file)) {
        s_fail(ctx, 0, NULL, "%s", strerror(errno));
        goto failed;
    }
    fclose(file);
    text[size] = '\0';
    *size_p = size;
    return text;
failed:
    fclose(file);
    free(text);
    return NULL;
}

static lh_hub_conf_t *s_hub_conf_new(s_ctx_t *ctx)
{
    lh_hub_conf_t *conf = calloc(1, sizeof *conf);
    if (!conf || !(conf->path = strdup(ctx->file))) {
        free(conf);
        s_fail_oom(ctx);
        return NULL;
    }
    ctx->conf = conf;
    for (size_t i = 0; i < S_HUB_KEY_COUNT; i++)
        if (s_hub_keys[i].default_value &&
            s_hub_set(ctx, &s_hub_keys[i], s_hub_keys[i].default_value, 0)) {
            lh_hub_conf_destroy(&ctx->conf);
            return NULL;
        }
    return conf;
}

/* The control endpoint when the conf names none: the hub's own socket in its user's runtime
 * directory (control_endpoint.h), found the same way by the CLI. */
static int s_default_control(s_ctx_t *ctx, lh_hub_conf_t *conf)
{
    char endpoint[256];
    if (lh_control_default_endpoint(conf->name, endpoint, sizeof endpoint) != 0)
        return s_fail(ctx, 0, "control", "the default control path is too long; set control");
    return s_set_text(ctx, &conf->control, endpoint);
}

lh_hub_conf_t *lh_hub_conf_load(const char *path, lh_plugin_lookup_fn *lookup, void *lookup_arg,
                                lh_error_t *err)
{
    assert(path);
    s_ctx_t ctx = {.file = path, .err = err, .lookup = lookup, .lookup_arg = lookup_arg};
    lh_hub_conf_t *conf = NULL;
    zconfig_t *root = NULL;
    size_t size = 0;
    char *text = s_read_file(&ctx, &size);
    if (!text)
        goto done;
    ctx.lines = zhash_new();
    ctx.chains = zhash_new();
    if (!ctx.lines || !ctx.chains) {
        s_fail_oom(&ctx);
        goto done;
    }
    if (s_scan(&ctx, text, size))
        goto done;
    if (ctx.node_count == 0) {
        s_fail(&ctx, 0, NULL, "%s (no hub or chain block)",
               size ? "nothing but comments" : "empty");
        goto done;
    }
    /* Parse the very text just scanned: reading the file again could see another version. */
    root = zconfig_str_load(text);
    if (!root) {
        if (ctx.suspect_line)
            s_fail(&ctx, ctx.suspect_line, NULL, "not valid ZPL: %s", ctx.suspect);
        else
            s_fail(&ctx, 0, NULL, "not valid ZPL");
        goto done;
    }
    if (!(conf = s_hub_conf_new(&ctx)))
        goto done;
    if (s_load_tree(&ctx, root))
        lh_hub_conf_destroy(&conf);
    else if (!conf->control && s_default_control(&ctx, conf))
        lh_hub_conf_destroy(&conf);
done:
    zconfig_destroy(&root);
    zhash_destroy(&ctx.chains);
    zhash_destroy(&ctx.lines);
    free(text);
    return conf;
}

void lh_hub_conf_destroy(lh_hub_conf_t **self_p)
{
    assert(self_p);
    lh_hub_conf_t *self = *self_p;
    if (!self)
        return;
    for (size_t i = 0; i < S_HUB_KEY_COUNT; i++) {
        s_kind_t kind = s_hub_keys[i].kind;
        if (kind != S_BOOL && kind != S_INT && kind != S_INT64 && kind != S_SIZE &&
            kind != S_CHOICE)
            free(*(char **)((char *)self + s_hub_keys[i].offset));
    }
    for (size_t i = 0; i < self->stage_count; i++)
        s_stage_destroy(&self->stages[i]);
    free(self->stages);
    for (size_t i = 0; i < self->filter_count; i++)
        s_stage_destroy(&self->filters[i]);
    free(self->filters);
    free(self->ingress_chain);
    free(self->control_chain);
    free(self->path);
    free(self);
    *self_p = NULL;
}

lh_stage_conf_t *lh_hub_conf_stage(lh_hub_conf_t *self, const char *name)
{
    for (size_t i = 0; self && name && i < self->stage_count; i++)
        if (self->stages[i]->name && strcmp(self->stages[i]->name, name) == 0)
            return self->stages[i];
    for (size_t i = 0; self && name && i < self->filter_count; i++)
        if (self->filters[i]->name && strcmp(self->filters[i]->name, name) == 0)
            return self->filters[i];
    return NULL;
}

/* ---- the plugin's view of its stage ---------------------------------------------------------- */

const char *lh_conf_get(const lh_conf_t *conf, const char *key)
{
    if (!conf || !key)
        return NULL;
    int index = s_option_index(conf, key);
    return index >= 0 ? conf->values[index] : NULL;
}

int lh_conf_get_int(const lh_conf_t *conf, const char *key, int64_t *value, lh_error_t *err)
{
    const char *text = lh_conf_get(conf, key);
    int64_t parsed;
    if (!text) {
        lh_error_set(err, "%s: not set", key ? key : "(null)");
        return -1;
    }
    if (s_parse_int(text, &parsed)) {
        lh_error_set(err, "%s: '%s' is not a decimal integer", key, text);
        return -1;
    }
    *value = parsed;
    return 0;
}

int lh_conf_get_bool(const lh_conf_t *conf, const char *key, bool *value, lh_error_t *err)
{
    const char *text = lh_conf_get(conf, key);
    bool parsed;
    if (!text) {
        lh_error_set(err, "%s: not set", key ? key : "(null)");
        return -1;
    }
    if (s_parse_bool(text, &parsed)) {
        lh_error_set(err, "%s: '%s' is not a boolean (true/false, yes/no, on/off, 1/0)", key, text);
        return -1;
    }
    *value = parsed;
    return 0;
}

const char *lh_conf_stage(const lh_conf_t *conf)
{
    return conf ? conf->name : NULL;
}

size_t lh_conf_subscribe(const lh_conf_t *conf, const char *const **prefixes)
{
    if (prefixes)
        *prefixes = (const char *const *)conf->subscribe;
    return conf->subscribe_count;
}
