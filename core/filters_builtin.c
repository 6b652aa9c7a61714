/* The built-in in-line filters (docs/CHAINS.md): keep, drop, redact, route, rename. They use the
 * same ABI 1.2 filter callbacks as a plugin would; the hub finds them by name before looking for
 * a .so. Their options are parsed once, in filter_create (and in validate, for `livehub check`). */
#include <ctype.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "filter.h"

#define S_PATHS_MAX 64      /* paths, globs, conditions or templates in one option */
#define S_PATH_PARTS_MAX 16 /* dots in one path */
#define S_TEXT_MAX 512      /* one word of an option */

/* A dotted path into the event's JSON ("data.user.email", "data.*.token"). */
typedef struct {
    char *parts[S_PATH_PARTS_MAX];
    size_t count;
    char *text;
} s_path_t;

typedef enum { S_EQ, S_NE, S_IN, S_EXISTS, S_MISSING, S_LT, S_LE, S_GT, S_GE } s_op_t;

typedef struct {
    s_path_t path;
    s_op_t op;
    char *value;   /* S_EQ/S_NE/compare: the text; S_IN: comma-separated */
    double number; /* compare */
} s_condition_t;

typedef struct {
    char *name;
    char *globs[S_PATHS_MAX]; /* types; none: every type */
    size_t glob_count;
    s_condition_t conditions[S_PATHS_MAX]; /* all must hold */
    size_t condition_count;
    bool drop; /* drop the matching events (else keep only them) */
    /* redact */
    s_path_t paths[S_PATHS_MAX];
    size_t path_count;
    char *mask; /* NULL: remove */
    /* route */
    char *templates[S_PATHS_MAX];
    size_t template_count;
    bool set; /* replace `to` (else add) */
    /* rename */
    char *from[S_PATHS_MAX], *to[S_PATHS_MAX];
    size_t map_count;
    s_path_t move_from[S_PATHS_MAX], move_to[S_PATHS_MAX]; /* field moves, in data */
    size_t move_count;
} s_state_t;

static void s_path_free(s_path_t *path)
{
    free(path->text);
    memset(path, 0, sizeof *path);
}

static int s_path_parse(s_path_t *path, const char *text, lh_error_t *err)
{
    memset(path, 0, sizeof *path);
    if (!*text || strlen(text) >= S_TEXT_MAX || text[0] == '.' || text[strlen(text) - 1] == '.' ||
        strstr(text, "..")) {
        lh_error_set(err, "'%s' is not a path (fields separated by dots, e.g. data.email)", text);
        return -1;
    }
    if (!(path->text = strdup(text))) {
        lh_error_set(err, "out of memory");
        return -1;
    }
    for (char *part = path->text; part;) {
        if (path->count == S_PATH_PARTS_MAX) {
            lh_error_set(err, "path '%s' has more than %d parts", text, S_PATH_PARTS_MAX);
            s_path_free(path);
            return -1;
        }
        path->parts[path->count++] = part;
        char *dot = strchr(part, '.');
        if (dot)
            *dot++ = '\0';
        part = dot;
    }
    return 0;
}

/* The value at path (no wildcards), or NULL. */
static json_t *s_path_get(json_t *json, const s_path_t *path)
{
    for (size_t i = 0; json && i < path->count; i++) {
        if (json_is_object(json))
            json = json_object_get(json, path->parts[i]);
        else if (json_is_array(json)) {
            char *end;
            unsigned long index = strtoul(path->parts[i], &end, 10);
            json = *end || end == path->parts[i] ? NULL : json_array_get(json, index);
        } else
            json = NULL;
    }
    return json;
}

static void s_state_free(s_state_t *self)
{
    if (!self)
        return;
    free(self->name);
    for (size_t i = 0; i < self->glob_count; i++)
        free(self->globs[i]);
    for (size_t i = 0; i < self->condition_count; i++) {
        s_path_free(&self->conditions[i].path);
        free(self->conditions[i].value);
    }
    for (size_t i = 0; i < self->path_count; i++)
        s_path_free(&self->paths[i]);
    free(self->mask);
    for (size_t i = 0; i < self->template_count; i++)
        free(self->templates[i]);
    for (size_t i = 0; i < self->map_count; i++) {
        free(self->from[i]);
        free(self->to[i]);
    }
    for (size_t i = 0; i < self->move_count; i++) {
        s_path_free(&self->move_from[i]);
        s_path_free(&self->move_to[i]);
    }
    free(self);
}

static void s_destroy(void **state_p)
{
    s_state_free(*state_p);
    *state_p = NULL;
}

/* Splits a whitespace-separated option into new strings. */
static int s_words(const char *text, char **words, size_t *count, const char *key,
                   lh_error_t *err)
{
    *count = 0;
    while (text && *text) {
        while (isspace((unsigned char)*text))
            text++;
        size_t size = strcspn(text, " \t");
        if (!size)
            break;
        if (*count == S_PATHS_MAX || size >= S_TEXT_MAX) {
            lh_error_set(err, "%s: at most %d words of at most %d bytes", key, S_PATHS_MAX,
                         S_TEXT_MAX - 1);
            return -1;
        }
        if (!(words[(*count)++] = strndup(text, size))) {
            lh_error_set(err, "out of memory");
            return -1;
        }
        text += size;
    }
    return 0;
}

static const struct {
    const char *text;
    s_op_t op;
} s_ops[] = {{"==", S_EQ}, {"!=", S_NE}, {"<=", S_LE}, {">=", S_GE}, {"<", S_LT},
             {">", S_GT},  {"in", S_IN}, {"exists", S_EXISTS}, {"missing", S_MISSING}};

/* Parses `where`: conditions separated by ';', each "PATH OP [VALUE]". */
static int s_parse_where(s_state_t *self, const char *text, lh_error_t *err)
{
    char *copy = strdup(text ? text : "");
    if (!copy) {
        lh_error_set(err, "out of memory");
        return -1;
    }
    int rc = 0;
    char *save = NULL;
    for (char *item = strtok_r(copy, ";", &save); item && rc == 0;
         item = strtok_r(NULL, ";", &save)) {
        char path[S_TEXT_MAX], op[16], value[S_TEXT_MAX] = "";
        int read = sscanf(item, " %511s %15s %511[^\n]", path, op, value);
        if (read < 1)
            continue;
        if (self->condition_count == S_PATHS_MAX) {
            lh_error_set(err, "where: at most %d conditions", S_PATHS_MAX);
            rc = -1;
            break;
        }
        s_condition_t *condition = &self->conditions[self->condition_count];
        size_t o = 0;
        while (read >= 2 && o < sizeof s_ops / sizeof s_ops[0] && strcmp(s_ops[o].text, op) != 0)
            o++;
        if (read < 2 || o == sizeof s_ops / sizeof s_ops[0]) {
            lh_error_set(err,
                         "where: '%s' needs PATH OP [VALUE], OP one of == != < <= > >= in "
                         "exists missing",
                         item);
            rc = -1;
            break;
        }
        condition->op = s_ops[o].op;
        for (char *end = value + strlen(value); end > value && isspace((unsigned char)end[-1]);)
            *--end = '\0';
        bool unary = condition->op == S_EXISTS || condition->op == S_MISSING;
        if (unary != (value[0] == '\0')) {
            lh_error_set(err, "where: '%s': %s", item,
                         unary ? "exists/missing take no value" : "a value is missing");
            rc = -1;
            break;
        }
        if (condition->op >= S_LT) {
            char *end;
            condition->number = strtod(value, &end);
            if (*end || end == value) {
                lh_error_set(err, "where: '%s': '%s' is not a number", item, value);
                rc = -1;
                break;
            }
        }
        if (s_path_parse(&condition->path, path, err) != 0 ||
            !(condition->value = strdup(value))) {
            rc = -1;
            break;
        }
        self->condition_count++;
    }
    free(copy);
    return rc;
}

/* The value as text for comparisons: strings as they are, numbers and bools written out. */
static bool s_text(const json_t *value, char *out, size_t size)
{
    if (json_is_string(value))
        snprintf(out, size, "%s", json_string_value(value));
    else if (json_is_integer(value))
        snprintf(out, size, "%lld", (long long)json_integer_value(value));
    else if (json_is_real(value))
        snprintf(out, size, "%.17g", json_real_value(value));
    else if (json_is_boolean(value))
        snprintf(out, size, "%s", json_is_true(value) ? "true" : "false");
    else
        return false;
    return true;
}

static bool s_holds(const s_condition_t *condition, json_t *json)
{
    json_t *value = s_path_get(json, &condition->path);
    char text[S_TEXT_MAX];
    switch (condition->op) {
    case S_EXISTS:
        return value != NULL;
    case S_MISSING:
        return value == NULL;
    case S_EQ:
        return value && s_text(value, text, sizeof text) && strcmp(text, condition->value) == 0;
    case S_NE:
        return !(value && s_text(value, text, sizeof text) && strcmp(text, condition->value) == 0);
    case S_IN:
        if (!value || !s_text(value, text, sizeof text))
            return false;
        for (const char *item = condition->value; *item;) {
            size_t size = strcspn(item, ",");
            if (size == strlen(text) && memcmp(item, text, size) == 0)
                return true;
            item += size + (item[size] == ',');
        }
        return false;
    default: {
        double number;
        if (json_is_number(value))
            number = json_number_value(value);
        else if (json_is_string(value)) {
            char *end;
            number = strtod(json_string_value(value), &end);
            if (*end || end == json_string_value(value))
                return false;
        } else
            return false;
        return condition->op == S_LT   ? number < condition->number
               : condition->op == S_LE ? number <= condition->number
               : condition->op == S_GT ? number > condition->number
                                       : number >= condition->number;
    }
    }
}

static bool s_type_matches(const s_state_t *self, const char *type)
{
    if (self->glob_count == 0)
        return true;
    for (size_t i = 0; i < self->glob_count; i++)
        if (fnmatch(self->globs[i], type, 0) == 0)
            return true;
    return false;
}

static s_state_t *s_state_new(const lh_conf_t *conf, lh_error_t *err)
{
    s_state_t *self = calloc(1, sizeof *self);
    if (!self || !(self->name = strdup(lh_conf_stage(conf)))) {
        free(self);
        lh_error_set(err, "out of memory");
        return NULL;
    }
    if (s_words(lh_conf_get(conf, "types"), self->globs, &self->glob_count, "types", err) != 0) {
        s_state_free(self);
        return NULL;
    }
    return self;
}

/* ---- keep / drop -------------------------------------------------------------------------- */

static void *s_match_create(const lh_conf_t *conf, lh_error_t *err, bool drop)
{
    s_state_t *self = s_state_new(conf, err);
    if (!self)
        return NULL;
    self->drop = drop;
    if (s_parse_where(self, lh_conf_get(conf, "where"), err) != 0) {
        s_state_free(self);
        return NULL;
    }
    if (self->glob_count == 0 && self->condition_count == 0) {
        lh_error_set(err, "set types or where (a %s filter without either would %s everything)",
                     drop ? "drop" : "keep", drop ? "drop" : "keep");
        s_state_free(self);
        return NULL;
    }
    return self;
}

static void *s_keep_create(const lh_conf_t *conf, lh_error_t *err)
{
    return s_match_create(conf, err, false);
}

static void *s_drop_create(const lh_conf_t *conf, lh_error_t *err)
{
    return s_match_create(conf, err, true);
}

static lh_filter_verdict_t s_match_filter(void *state, lh_filter_event_t *event)
{
    s_state_t *self = state;
    bool matches = s_type_matches(self, lh_filter_event_type(event));
    if (matches && self->condition_count) {
        json_t *json = lh_filter_event_json(event, NULL);
        if (!json)
            return LH_FILTER_ERROR;
        for (size_t i = 0; i < self->condition_count && matches; i++)
            matches = s_holds(&self->conditions[i], json);
    }
    return matches == self->drop ? LH_FILTER_DROP : LH_FILTER_PASS;
}

/* ---- redact -------------------------------------------------------------------------------- */

static void *s_redact_create(const lh_conf_t *conf, lh_error_t *err)
{
    s_state_t *self = s_state_new(conf, err);
    if (!self)
        return NULL;
    char *words[S_PATHS_MAX];
    size_t count = 0;
    int rc = s_words(lh_conf_get(conf, "fields"), words, &count, "fields", err);
    for (size_t i = 0; i < count; i++) {
        if (rc == 0 && (rc = s_path_parse(&self->paths[i], words[i], err)) == 0)
            self->path_count++;
        free(words[i]);
    }
    if (rc == 0 && self->path_count == 0) {
        lh_error_set(err, "fields: name at least one path (e.g. data.password data.*.token)");
        rc = -1;
    }
    const char *mask = lh_conf_get(conf, "mask");
    if (rc == 0 && mask && *mask && !(self->mask = strdup(mask))) {
        lh_error_set(err, "out of memory");
        rc = -1;
    }
    if (rc != 0) {
        s_state_free(self);
        return NULL;
    }
    return self;
}

/* Removes (or masks) what path names below json, from part on; true when something changed. */
static bool s_redact_at(json_t *json, const s_path_t *path, size_t part, const char *mask)
{
    const char *name = path->parts[part];
    bool last = part + 1 == path->count, changed = false;
    if (json_is_object(json)) {
        if (strcmp(name, "*") == 0) {
            const char *key;
            json_t *value;
            void *tmp;
            json_object_foreach_safe(json, tmp, key, value)
            {
                if (!last)
                    changed |= s_redact_at(value, path, part + 1, mask);
                else if (mask)
                    changed |= json_object_set_new(json, key, json_string(mask)) == 0;
                else
                    changed |= json_object_del(json, key) == 0;
            }
            return changed;
        }
        json_t *value = json_object_get(json, name);
        if (!value)
            return false;
        if (!last)
            return s_redact_at(value, path, part + 1, mask);
        return mask ? json_object_set_new(json, name, json_string(mask)) == 0
                    : json_object_del(json, name) == 0;
    }
    if (json_is_array(json) && strcmp(name, "*") == 0 && !last) {
        size_t index;
        json_t *value;
        json_array_foreach(json, index, value) changed |= s_redact_at(value, path, part + 1, mask);
    }
    return changed;
}

static lh_filter_verdict_t s_redact_filter(void *state, lh_filter_event_t *event)
{
    s_state_t *self = state;
    if (!s_type_matches(self, lh_filter_event_type(event)))
        return LH_FILTER_PASS;
    json_t *json = lh_filter_event_json(event, NULL);
    if (!json)
        return LH_FILTER_ERROR;
    bool changed = false;
    for (size_t i = 0; i < self->path_count; i++) {
        if (self->paths[i].count == 1 && strcmp(self->paths[i].parts[0], "type") == 0)
            continue; /* an event keeps its type */
        changed |= s_redact_at(json, &self->paths[i], 0, self->mask);
    }
    return changed ? LH_FILTER_CHANGED : LH_FILTER_PASS;
}

/* ---- route --------------------------------------------------------------------------------- */

/* Checks a template: text with {path} placeholders, braces balanced, paths valid. */
static int s_template_check(const char *text, lh_error_t *err)
{
    for (const char *open = strchr(text, '{'); open; open = strchr(open + 1, '{')) {
        const char *close = strchr(open, '}');
        char path[S_TEXT_MAX];
        if (!close || (size_t)(close - open - 1) >= sizeof path) {
            lh_error_set(err, "to: '%s' has an unclosed {", text);
            return -1;
        }
        memcpy(path, open + 1, (size_t)(close - open - 1));
        path[close - open - 1] = '\0';
        s_path_t parsed;
        if (s_path_parse(&parsed, path, err) != 0)
            return -1;
        s_path_free(&parsed);
    }
    return 0;
}

static void *s_route_create(const lh_conf_t *conf, lh_error_t *err)
{
    s_state_t *self = s_state_new(conf, err);
    if (!self)
        return NULL;
    const char *mode = lh_conf_get(conf, "mode");
    int rc = s_words(lh_conf_get(conf, "to"), self->templates, &self->template_count, "to", err);
    for (size_t i = 0; rc == 0 && i < self->template_count; i++)
        rc = s_template_check(self->templates[i], err);
    if (rc == 0 && self->template_count == 0) {
        lh_error_set(err, "to: name at least one audience (e.g. user:{data.assigneeId} admin)");
        rc = -1;
    }
    if (rc == 0 && mode && strcmp(mode, "add") != 0 && strcmp(mode, "set") != 0) {
        lh_error_set(err, "mode: '%s' is not add or set", mode);
        rc = -1;
    }
    if (rc != 0) {
        s_state_free(self);
        return NULL;
    }
    self->set = mode && strcmp(mode, "set") == 0;
    return self;
}

/* Fills a template from the event; false when a placeholder's field is absent or not a scalar. */
static bool s_expand(const char *template, json_t *json, char *out, size_t size)
{
    size_t used = 0;
    for (const char *c = template; *c;) {
        const char *open = strchr(c, '{');
        size_t literal = open ? (size_t)(open - c) : strlen(c);
        if (used + literal >= size)
            return false;
        memcpy(out + used, c, literal);
        used += literal;
        if (!open)
            break;
        const char *close = strchr(open, '}');
        char text[S_TEXT_MAX];
        memcpy(text, open + 1, (size_t)(close - open - 1));
        text[close - open - 1] = '\0';
        s_path_t path;
        if (s_path_parse(&path, text, NULL) != 0)
            return false;
        json_t *value = s_path_get(json, &path);
        s_path_free(&path);
        char piece[S_TEXT_MAX];
        if (!value || !s_text(value, piece, sizeof piece) || !*piece ||
            used + strlen(piece) >= size)
            return false;
        memcpy(out + used, piece, strlen(piece));
        used += strlen(piece);
        c = close + 1;
    }
    out[used] = '\0';
    return used > 0;
}

static lh_filter_verdict_t s_route_filter(void *state, lh_filter_event_t *event)
{
    s_state_t *self = state;
    if (!s_type_matches(self, lh_filter_event_type(event)))
        return LH_FILTER_PASS;
    json_t *json = lh_filter_event_json(event, NULL);
    if (!json)
        return LH_FILTER_ERROR;
    json_t *to = json_object_get(json, "to");
    json_t *audiences = self->set || !json_is_array(to) ? json_array() : json_copy(to);
    if (!audiences)
        return LH_FILTER_ERROR;
    size_t before = json_array_size(audiences);
    for (size_t i = 0; i < self->template_count; i++) {
        char audience[LH_TYPE_MAX + 1];
        if (!s_expand(self->templates[i], json, audience, sizeof audience))
            continue;
        bool known = false;
        size_t index;
        json_t *value;
        json_array_foreach(audiences, index, value) known |=
            strcmp(json_string_value(value) ? json_string_value(value) : "", audience) == 0;
        if (!known && json_array_size(audiences) < LH_AUDIENCE_MAX)
            json_array_append_new(audiences, json_string(audience));
    }
    if (json_array_size(audiences) == before && !self->set) {
        json_decref(audiences);
        return LH_FILTER_PASS;
    }
    if (json_array_size(audiences) == 0) { /* set, and no template applied: leave `to` alone */
        json_decref(audiences);
        return LH_FILTER_PASS;
    }
    json_object_set_new(json, "to", audiences);
    return LH_FILTER_CHANGED;
}

/* ---- rename -------------------------------------------------------------------------------- */

static void *s_rename_create(const lh_conf_t *conf, lh_error_t *err)
{
    s_state_t *self = s_state_new(conf, err);
    if (!self)
        return NULL;
    char *words[S_PATHS_MAX];
    size_t count = 0;
    int rc = s_words(lh_conf_get(conf, "map"), words, &count, "map", err);
    for (size_t i = 0; i < count; i++) {
        char *equals = strchr(words[i], '=');
        if (rc == 0) {
            size_t from = equals ? (size_t)(equals - words[i]) : 0;
            bool from_star = from && words[i][from - 1] == '*';
            bool to_star = equals && equals[1] && equals[strlen(equals) - 1] == '*';
            if (!equals || !from || !equals[1] || from_star != to_star ||
                memchr(words[i], '*', from - from_star) || strchr(equals + 1, '*') !=
                                                                 (to_star ? equals + strlen(equals) - 1 : NULL)) {
                lh_error_set(err,
                             "map: '%s' must be FROM=TO, or PREFIX*=NEWPREFIX* to rename a "
                             "family of types",
                             words[i]);
                rc = -1;
            } else {
                self->from[self->map_count] = strndup(words[i], from);
                self->to[self->map_count] = strdup(equals + 1);
                self->map_count++;
            }
        }
        free(words[i]);
    }
    count = 0;
    if (rc == 0)
        rc = s_words(lh_conf_get(conf, "move"), words, &count, "move", err);
    for (size_t i = 0; i < count; i++) {
        char *equals = strchr(words[i], '=');
        if (rc == 0) {
            if (!equals || strncmp(words[i], "data.", 5) != 0 || strncmp(equals + 1, "data.", 5) != 0 ||
                strchr(words[i], '*')) {
                lh_error_set(err, "move: '%s' must be data.FROM=data.TO (no wildcards)", words[i]);
                rc = -1;
            } else {
                *equals = '\0';
                if ((rc = s_path_parse(&self->move_from[self->move_count], words[i], err)) == 0 &&
                    (rc = s_path_parse(&self->move_to[self->move_count], equals + 1, err)) != 0)
                    s_path_free(&self->move_from[self->move_count]);
                if (rc == 0)
                    self->move_count++;
            }
        }
        free(words[i]);
    }
    if (rc == 0 && self->map_count == 0 && self->move_count == 0) {
        lh_error_set(err, "name at least one map FROM=TO or move data.FROM=data.TO");
        rc = -1;
    }
    if (rc != 0) {
        s_state_free(self);
        return NULL;
    }
    return self;
}

/* Moves the value at from to to (objects on the way made as needed); true when it moved. */
static bool s_move(json_t *json, const s_path_t *from, const s_path_t *to)
{
    s_path_t parent = *from;
    parent.count--;
    json_t *holder = s_path_get(json, &parent);
    json_t *value = json_is_object(holder) ? json_object_get(holder, from->parts[from->count - 1])
                                           : NULL;
    if (!value)
        return false;
    json_incref(value);
    json_object_del(holder, from->parts[from->count - 1]);
    json_t *at = json;
    for (size_t i = 0; i + 1 < to->count; i++) {
        json_t *next = json_object_get(at, to->parts[i]);
        if (!json_is_object(next)) {
            next = json_object();
            json_object_set_new(at, to->parts[i], next);
        }
        at = next;
    }
    json_object_set_new(at, to->parts[to->count - 1], value);
    return true;
}

static lh_filter_verdict_t s_rename_filter(void *state, lh_filter_event_t *event)
{
    s_state_t *self = state;
    bool moved = false;
    if (self->move_count) {
        json_t *json = lh_filter_event_json(event, NULL);
        if (!json)
            return LH_FILTER_ERROR;
        if (!json_is_object(json_object_get(json, "data")))
            json = NULL; /* nothing to move in a scalar data */
        for (size_t i = 0; json && i < self->move_count; i++)
            moved |= s_move(json, &self->move_from[i], &self->move_to[i]);
    }
    const char *type = lh_filter_event_type(event);
    for (size_t i = 0; i < self->map_count; i++) {
        size_t from = strlen(self->from[i]);
        bool prefix = self->from[i][from - 1] == '*';
        char renamed[LH_TYPE_MAX + 2];
        if (prefix) {
            if (strncmp(type, self->from[i], from - 1) != 0)
                continue;
            int size = snprintf(renamed, sizeof renamed, "%.*s%s",
                                (int)strlen(self->to[i]) - 1, self->to[i], type + from - 1);
            if (size < 1 || size > LH_TYPE_MAX)
                return LH_FILTER_ERROR;
        } else if (strcmp(type, self->from[i]) == 0)
            snprintf(renamed, sizeof renamed, "%s", self->to[i]);
        else
            continue;
        json_t *json = lh_filter_event_json(event, NULL);
        if (!json)
            return LH_FILTER_ERROR;
        json_object_set_new(json, "type", json_string(renamed));
        return LH_FILTER_CHANGED;
    }
    return moved ? LH_FILTER_CHANGED : LH_FILTER_PASS;
}

/* ---- descriptors --------------------------------------------------------------------------- */

static int s_validate_with(void *(*create)(const lh_conf_t *, lh_error_t *), const lh_conf_t *conf,
                           lh_error_t *err)
{
    void *state = create(conf, err);
    if (!state)
        return -1;
    s_destroy(&state);
    return 0;
}
static int s_keep_validate(const lh_conf_t *c, lh_error_t *e)
{
    return s_validate_with(s_keep_create, c, e);
}
static int s_drop_validate(const lh_conf_t *c, lh_error_t *e)
{
    return s_validate_with(s_drop_create, c, e);
}
static int s_redact_validate(const lh_conf_t *c, lh_error_t *e)
{
    return s_validate_with(s_redact_create, c, e);
}
static int s_route_validate(const lh_conf_t *c, lh_error_t *e)
{
    return s_validate_with(s_route_create, c, e);
}
static int s_rename_validate(const lh_conf_t *c, lh_error_t *e)
{
    return s_validate_with(s_rename_create, c, e);
}

#define S_TYPES_OPTION(help)                                                                       \
    {"types", LH_OPTION_STRING, NULL, false, 0, 0, help}

static const lh_option_t s_match_options[] = {
    S_TYPES_OPTION("type globs, space-separated (debug:* airtable:*:created); none: every type"),
    {"where", LH_OPTION_STRING, NULL, false, 0, 0,
     "conditions separated by ';', all must hold: PATH == V, != V, in A,B, exists, missing, "
     "< <= > >= N"},
    {NULL, 0, NULL, false, 0, 0, NULL},
};
static const lh_option_t s_redact_options[] = {
    {"fields", LH_OPTION_STRING, NULL, true, 0, 0,
     "paths to remove, space-separated; * matches any key or element (data.*.token)"},
    {"mask", LH_OPTION_STRING, NULL, false, 0, 0, "replace the values with this text instead"},
    S_TYPES_OPTION("only events of these type globs; none: every type"),
    {NULL, 0, NULL, false, 0, 0, NULL},
};
static const lh_option_t s_route_options[] = {
    {"to", LH_OPTION_STRING, NULL, true, 0, 0,
     "audiences, space-separated, {path} filled from the event (user:{data.assigneeId} admin)"},
    {"mode", LH_OPTION_STRING, "add", false, 0, 0, "add to the event's audiences, or set them"},
    S_TYPES_OPTION("only events of these type globs; none: every type"),
    {NULL, 0, NULL, false, 0, 0, NULL},
};
static const lh_option_t s_rename_options[] = {
    {"map", LH_OPTION_STRING, NULL, false, 0, 0,
     "FROM=TO type renames, space-separated; PREFIX*=NEW* renames a family"},
    {"move", LH_OPTION_STRING, NULL, false, 0, 0,
     "data.FROM=data.TO field moves and renames, space-separated"},
    {NULL, 0, NULL, false, 0, 0, NULL},
};

#define S_DESCRIPTOR(id, text, opts, check, make, run)                                             \
    static const lh_plugin_t id = {                                                                \
        .abi_major = LH_PLUGIN_ABI_MAJOR,                                                          \
        .abi_minor = LH_PLUGIN_ABI_MINOR,                                                          \
        .struct_size = sizeof(lh_plugin_t),                                                        \
        .name = &(#id)[2], /* s_keep -> "keep" */                                                  \
        .version = "1.0",                                                                          \
        .description = text,                                                                       \
        .roles = LH_ROLE_EVENT_FILTER,                                                             \
        .options = opts,                                                                           \
        .validate = check,                                                                         \
        .filter_create = make,                                                                     \
        .filter = run,                                                                             \
        .filter_destroy = s_destroy,                                                               \
    }

S_DESCRIPTOR(s_keep, "built-in: keeps only the events of these types that meet every condition",
             s_match_options, s_keep_validate, s_keep_create, s_match_filter);
S_DESCRIPTOR(s_drop, "built-in: drops the events of these types that meet every condition",
             s_match_options, s_drop_validate, s_drop_create, s_match_filter);
S_DESCRIPTOR(s_redact, "built-in: removes or masks fields (nested paths, * wildcards)",
             s_redact_options, s_redact_validate, s_redact_create, s_redact_filter);
S_DESCRIPTOR(s_route, "built-in: adds or sets audiences from the event's fields", s_route_options,
             s_route_validate, s_route_create, s_route_filter);
S_DESCRIPTOR(s_rename, "built-in: renames types (topic frame and type field) and moves fields", s_rename_options,
             s_rename_validate, s_rename_create, s_rename_filter);

static const lh_plugin_t *const s_builtins[] = {&s_keep, &s_drop, &s_redact, &s_route,
                                                  &s_rename};

const lh_plugin_t *lh_builtin_filter(const char *name)
{
    for (size_t i = 0; i < sizeof s_builtins / sizeof s_builtins[0]; i++)
        if (strcmp(s_builtins[i]->name, name) == 0)
            return s_builtins[i];
    return NULL;
}
