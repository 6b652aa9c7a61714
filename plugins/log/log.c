/* log: a sink that writes every event it receives as one JSON line (to stdout or a file). */
#include <errno.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <livehub/plugin.h>

typedef struct {
    FILE *out;
    bool owns_out;
    char **patterns; /* glob patterns on the type; "!" first excludes; none: everything */
    size_t pattern_count;
    bool has_includes; /* only excludes given: everything else is wanted */
    lh_metric_t *written;
} log_sink_t;

static const lh_option_t s_options[] = {
    {"output", LH_OPTION_STRING, "-", false, 0, 0, "file to append JSON lines to; - is stdout"},
    {"types", LH_OPTION_STRING, NULL, false, 0, 0,
     "space-separated glob patterns on the event type (e.g. assignment:* signal:created); "
     "!pattern leaves matching types out (e.g. * !presence:join)"},
    {NULL, 0, NULL, false, 0, 0, NULL},
};

static void s_free_patterns(log_sink_t *self)
{
    for (size_t i = 0; i < self->pattern_count; i++)
        free(self->patterns[i]);
    free(self->patterns);
}

static int s_parse_patterns(log_sink_t *self, const char *text)
{
    char *copy = strdup(text);
    if (!copy)
        return -1;
    for (char *save = NULL, *word = strtok_r(copy, " ", &save); word;
         word = strtok_r(NULL, " ", &save)) {
        char **grown = realloc(self->patterns, (self->pattern_count + 1) * sizeof *grown);
        if (!grown || !(grown[self->pattern_count] = strdup(word))) {
            if (grown)
                self->patterns = grown;
            free(copy);
            return -1;
        }
        self->patterns = grown;
        self->pattern_count++;
        if (word[0] != '!')
            self->has_includes = true;
    }
    free(copy);
    return 0;
}

static void *log_create(lh_io_t *io)
{
    log_sink_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    const lh_conf_t *conf = lh_io_conf(io);
    const char *output = lh_conf_get(conf, "output");
    const char *types = lh_conf_get(conf, "types");
    if (types && s_parse_patterns(self, types) != 0)
        goto failed;
    if (!output || strcmp(output, "-") == 0) {
        self->out = stdout;
    } else if ((self->out = fopen(output, "a"))) {
        self->owns_out = true;
    } else {
        lh_log(io, LH_LOG_ERROR, "cannot open %s: %s", output, strerror(errno));
        goto failed;
    }
    self->written = lh_io_counter(io, "livehub_log_lines_total", "Events written by a log sink");
    return self;
failed:
    s_free_patterns(self);
    free(self);
    return NULL;
}

static bool s_wanted(const log_sink_t *self, const char *type)
{
    bool included = !self->has_includes;
    for (size_t i = 0; i < self->pattern_count; i++) {
        const char *pattern = self->patterns[i];
        if (pattern[0] == '!') {
            if (fnmatch(pattern + 1, type, 0) == 0)
                return false; /* an exclusion wins wherever it is written */
        } else if (!included && fnmatch(pattern, type, 0) == 0) {
            included = true;
        }
    }
    return included;
}

static int log_run(void *handle, lh_io_t *io)
{
    log_sink_t *self = handle;
    lh_io_ready(io);
    lh_event_t *event;
    while ((event = lh_io_recv(io, -1))) {
        const char *type = lh_event_type(event);
        if (type[0] != '$' && s_wanted(self, type)) {
            lh_error_t err;
            char *line = lh_event_to_json(event, &err);
            if (line) {
                fprintf(self->out, "%s\n", line);
                fflush(self->out); /* a line is complete or absent, even if we are killed */
                lh_metric_add(self->written, 1);
                free(line);
            } else {
                lh_log(io, LH_LOG_WARNING, "event %llu (%s): %s",
                       (unsigned long long)lh_event_id(event), type, err.text);
            }
        }
        lh_event_destroy(&event);
    }
    return lh_io_terminated(io) ? 0 : -1;
}

static void log_destroy(void **handle_p)
{
    log_sink_t *self = *handle_p;
    if (!self)
        return;
    if (self->owns_out)
        fclose(self->out);
    s_free_patterns(self);
    free(self);
    *handle_p = NULL;
}

static const lh_plugin_t s_plugin = {
    .abi_major = LH_PLUGIN_ABI_MAJOR,
    .abi_minor = LH_PLUGIN_ABI_MINOR,
    .struct_size = sizeof(lh_plugin_t),
    .name = "log",
    .version = "1.0",
    .description = "writes events as JSON lines, optionally filtered by type patterns",
    .roles = LH_ROLE_SINK,
    .options = s_options,
    .create = log_create,
    .run = log_run,
    .destroy = log_destroy,
};

LH_PLUGIN_EXPORT(s_plugin)
