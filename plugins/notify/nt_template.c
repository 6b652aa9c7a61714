/* notify: {field} templates. Templates are kept as text and re-scanned on each render: they are
 * short, and checking them once at load time is what catches mistakes early. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "nt_template.h"

#define NT_FIELD_MAX 128

/* A growable string; on allocation failure `failed` sticks and the result is NULL. */
typedef struct {
    char *text;
    size_t size, capacity;
    bool failed;
} s_buffer_t;

static void s_append(s_buffer_t *buffer, const char *bytes, size_t size)
{
    if (buffer->failed)
        return;
    if (buffer->size + size + 1 > buffer->capacity) {
        size_t capacity = buffer->capacity ? buffer->capacity : 64;
        while (capacity < buffer->size + size + 1)
            capacity *= 2;
        char *grown = realloc(buffer->text, capacity);
        if (!grown) {
            buffer->failed = true;
            return;
        }
        buffer->text = grown;
        buffer->capacity = capacity;
    }
    memcpy(buffer->text + buffer->size, bytes, size);
    buffer->size += size;
    buffer->text[buffer->size] = '\0';
}

static void s_append_escaped(s_buffer_t *buffer, const char *value, nt_escape_t escape)
{
    for (const char *p = value; *p; p++) {
        const char *entity = NULL;
        char encoded[4];
        unsigned char c = (unsigned char)*p;
        if (escape == NT_ESCAPE_MARKUP) {
            entity = c == '&'    ? "&amp;"
                     : c == '<'  ? "&lt;"
                     : c == '>'  ? "&gt;"
                     : c == '"'  ? "&quot;"
                     : c == '\'' ? "&apos;"
                                 : NULL;
        } else if (escape == NT_ESCAPE_URL &&
                   !((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                     c == '-' || c == '_' || c == '.' || c == '~')) {
            snprintf(encoded, sizeof encoded, "%%%02X", c);
            entity = encoded;
        }
        if (entity)
            s_append(buffer, entity, strlen(entity));
        else
            s_append(buffer, p, 1);
    }
}

/* Finds the value at a dot-separated path, falling back to scope.data for the first segment. */
static const json_t *s_lookup(const json_t *scope, const char *path)
{
    char copy[NT_FIELD_MAX + 1];
    snprintf(copy, sizeof copy, "%s", path);
    const json_t *node = scope;
    bool first = true;
    for (char *save = NULL, *segment = strtok_r(copy, ".", &save); segment;
         segment = strtok_r(NULL, ".", &save)) {
        const json_t *next = json_is_object(node) ? json_object_get(node, segment) : NULL;
        if (!next && first) {
            const json_t *data = json_object_get(scope, "data");
            next = json_is_object(data) ? json_object_get(data, segment) : NULL;
        }
        if (!next)
            return NULL;
        node = next;
        first = false;
    }
    return node;
}

static void s_append_value(s_buffer_t *buffer, const json_t *value, nt_escape_t escape)
{
    if (!value || json_is_null(value))
        return;
    if (json_is_string(value)) {
        s_append_escaped(buffer, json_string_value(value), escape);
        return;
    }
    char *text = json_dumps(value, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!text) {
        buffer->failed = true;
        return;
    }
    s_append_escaped(buffer, text, escape);
    free(text);
}

int nt_template_check(const char *text, lh_error_t *err)
{
    for (const char *p = text; *p; p++) {
        if ((p[0] == '{' && p[1] == '{') || (p[0] == '}' && p[1] == '}')) {
            p++;
            continue;
        }
        if (*p == '}') {
            lh_error_set(err, "a '}' at offset %zu closes nothing (write }} for a brace)",
                         (size_t)(p - text));
            return -1;
        }
        if (*p != '{')
            continue;
        const char *end = strchr(p + 1, '}');
        const char *nested = strchr(p + 1, '{');
        if (!end || (nested && nested < end)) {
            lh_error_set(err, "the '{' at offset %zu has no '}' (write {{ for a brace)",
                         (size_t)(p - text));
            return -1;
        }
        size_t size = (size_t)(end - p - 1);
        if (size == 0 || size > NT_FIELD_MAX) {
            lh_error_set(err, "the field at offset %zu must have 1..%d characters",
                         (size_t)(p - text), NT_FIELD_MAX);
            return -1;
        }
        p = end;
    }
    return 0;
}

char *nt_template_render(const char *text, const json_t *scope, nt_escape_t escape)
{
    s_buffer_t buffer = {0};
    s_append(&buffer, "", 0);
    for (const char *p = text; *p; p++) {
        if ((p[0] == '{' && p[1] == '{') || (p[0] == '}' && p[1] == '}')) {
            s_append(&buffer, p, 1);
            p++;
            continue;
        }
        const char *end = *p == '{' ? strchr(p + 1, '}') : NULL;
        if (!end || end - p - 1 > NT_FIELD_MAX) { /* unchecked text: copied as it is */
            s_append(&buffer, p, 1);
            continue;
        }
        char path[NT_FIELD_MAX + 1];
        snprintf(path, sizeof path, "%.*s", (int)(end - p - 1), p + 1);
        s_append_value(&buffer, s_lookup(scope, path), escape);
        p = end;
    }
    if (buffer.failed) {
        free(buffer.text);
        return NULL;
    }
    return buffer.text;
}
