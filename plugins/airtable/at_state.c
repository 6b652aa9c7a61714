/* airtable: the state file. It holds the payload cursor and the managed webhook with its MAC
 * secret, so it is written with mode 0600 and replaced atomically: a crash leaves either the old
 * or the new file, never a torn one, and the cursor never goes backwards. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <livehub/codec.h>
#include "at_internal.h"

/* Room for the record cache (10000 records of a few fields is a few MiB). */
#define AT_STATE_MAX (256 << 20)

void at_state_clear(at_state_t *state)
{
    free(state->secret);
    free(state->expiration);
    json_decref(state->records);
    memset(state, 0, sizeof *state);
    state->cursor = 1;
}

static char *s_read_file(const char *path, size_t *size, lh_error_t *err)
{
    FILE *file = fopen(path, "rb");
    if (!file) {
        if (errno != ENOENT)
            lh_error_set(err, "state %s: %s", path, strerror(errno));
        return NULL;
    }
    /* Sized from the file: the bound is large now that the cache lives here. */
    struct stat info;
    size_t want = fstat(fileno(file), &info) == 0 && info.st_size >= 0 ? (size_t)info.st_size : 0;
    char *text = want <= AT_STATE_MAX ? malloc(want + 1) : NULL;
    size_t got = text ? fread(text, 1, want + 1, file) : 0;
    fclose(file);
    if (!text || got > want) {
        lh_error_set(err, "state %s: unreadable or larger than 256 MiB", path);
        free(text);
        return NULL;
    }
    text[got] = '\0';
    *size = got;
    return text;
}

static char *s_dup_string(const json_t *object, const char *key)
{
    const char *value = json_string_value(json_object_get(object, key));
    return value ? strdup(value) : NULL;
}

int at_state_load(at_state_t *state, const char *path, const char *base, lh_error_t *err)
{
    at_state_clear(state);
    state->records = json_object();
    snprintf(state->base, sizeof state->base, "%s", base);
    size_t size = 0;
    lh_error_t read_err = {""};
    char *text = s_read_file(path, &size, &read_err);
    if (!text) {
        if (read_err.text[0]) {
            lh_error_set(err, "%s", read_err.text);
            return -1;
        }
        return 0; /* first start */
    }
    lh_error_t parse_err;
    json_t *root = lh_json_parse(text, size, &parse_err);
    free(text);
    json_t *cursor = json_object_get(root, "cursor");
    const char *stored_base = json_string_value(json_object_get(root, "base"));
    const char *webhook = json_string_value(json_object_get(root, "webhook"));
    if (!json_is_object(root) || !json_is_integer(cursor) || json_integer_value(cursor) < 1 ||
        !stored_base || (webhook && !at_id_valid(webhook, "ach"))) {
        lh_error_set(err, "state %s: not a state file of this plugin", path);
        json_decref(root);
        return -1;
    }
    if (strcmp(stored_base, base) != 0) {
        lh_error_set(err, "state %s belongs to base %s, not %s", path, stored_base, base);
        json_decref(root);
        return -1;
    }
    state->cursor = (uint64_t)json_integer_value(cursor);
    if (webhook)
        snprintf(state->webhook, sizeof state->webhook, "%s", webhook);
    state->secret = s_dup_string(root, "secret");
    state->expiration = s_dup_string(root, "expiration");
    /* Older state files have no cache; a malformed one is dropped (it is only a cache). */
    json_t *records = json_object_get(root, "records");
    if (json_is_object(records)) {
        json_decref(state->records); /* the empty cache made for a first start */
        state->records = json_incref(records);
    }
    json_decref(root);
    return 0;
}

static int s_fsync_dir(const char *path)
{
    char *copy = strdup(path);
    if (!copy)
        return -1;
    int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY);
    free(copy);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

int at_state_save(const at_state_t *state, const char *path, lh_error_t *err)
{
    json_t *root =
        json_pack("{s:s, s:I}", "base", state->base, "cursor", (json_int_t)state->cursor);
    if (root && state->webhook[0])
        json_object_set_new(root, "webhook", json_string(state->webhook));
    if (root && state->secret)
        json_object_set_new(root, "secret", json_string(state->secret));
    if (root && state->expiration)
        json_object_set_new(root, "expiration", json_string(state->expiration));
    if (root && state->records)
        json_object_set(root, "records", state->records);
    char *text = root ? json_dumps(root, JSON_COMPACT) : NULL;
    json_decref(root);
    char temp[4096];
    if (!text || snprintf(temp, sizeof temp, "%s.tmp", path) >= (int)sizeof temp) {
        lh_error_set(err, "state %s: out of memory or path too long", path);
        free(text);
        return -1;
    }
    int fd = open(temp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    size_t length = strlen(text), written = 0;
    while (fd >= 0 && written < length) {
        ssize_t n = write(fd, text + written, length - written);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        written += (size_t)n;
    }
    free(text);
    int saved_errno = errno;
    bool ok = fd >= 0 && written == length && fsync(fd) == 0;
    if (fd >= 0 && close(fd) != 0)
        ok = false;
    if (ok && rename(temp, path) == 0) {
        s_fsync_dir(path);
        return 0;
    }
    lh_error_set(err, "state %s: %s", path, strerror(ok ? errno : saved_errno));
    unlink(temp);
    return -1;
}
