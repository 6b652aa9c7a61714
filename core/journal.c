/* Journal file: a header line "livehub-journal 1 EPOCH\n", then records
 * [u64 id][u64 ts][u32 topic size][u32 body size][topic][body], little-endian. A record is taken
 * only when complete, its id is greater than the previous one (ephemeral events leave holes) and
 * its body is a valid envelope; the first record that fails ends the file (a crash mid-write
 * leaves at most one torn record). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "envelope.h"
#include "journal.h"
#include "log.h"

#define S_MAGIC "livehub-journal 1 "
#define S_RECORD_HEADER 24
#define S_MAX_RECORD (16u * 1024 * 1024 + 256)

struct lh_journal {
    char *path;
    FILE *file;
    char epoch[64];
    size_t keep;
    size_t records;
};

static void s_put_u64(uint8_t *out, uint64_t value)
{
    for (int i = 0; i < 8; i++)
        out[i] = (uint8_t)(value >> (8 * i));
}

static void s_put_u32(uint8_t *out, uint32_t value)
{
    for (int i = 0; i < 4; i++)
        out[i] = (uint8_t)(value >> (8 * i));
}

static uint64_t s_get(const uint8_t *in, int bytes)
{
    uint64_t value = 0;
    for (int i = bytes - 1; i >= 0; i--)
        value = (value << 8) | in[i];
    return value;
}

/* Reads records after the header; returns the offset where valid data ends. */
static long s_read_records(lh_journal_t *self, lh_journal_visit_fn *fn, void *arg)
{
    long valid_end = ftell(self->file);
    uint64_t previous = 0;
    uint8_t header[S_RECORD_HEADER];
    uint8_t *data = NULL;
    while (fread(header, 1, sizeof header, self->file) == sizeof header) {
        uint64_t id = s_get(header, 8), ts = s_get(header + 8, 8);
        uint32_t topic_size = (uint32_t)s_get(header + 16, 4);
        uint32_t body_size = (uint32_t)s_get(header + 20, 4);
        if ((previous && id <= previous) || topic_size == 0 || topic_size > 255 ||
            body_size > S_MAX_RECORD)
            break;
        uint8_t *grown = realloc(data, topic_size + body_size);
        if (!grown)
            break;
        data = grown;
        if (fread(data, 1, topic_size + body_size, self->file) != topic_size + body_size)
            break;
        lh_envelope_t env;
        if (lh_envelope_parse(data, topic_size, data + topic_size, body_size, 0, &env, NULL) != 0 ||
            env.id != id)
            break;
        fn(id, ts, data, topic_size, data + topic_size, body_size, arg);
        previous = id;
        self->records++;
        valid_end = ftell(self->file);
    }
    free(data);
    return valid_end;
}

static int s_write_header(FILE *file, const char *epoch)
{
    return fprintf(file, "%s%s\n", S_MAGIC, epoch) < 0 || fflush(file) != 0 ? -1 : 0;
}

lh_journal_t *lh_journal_open(const char *path, char *epoch, size_t epoch_size, size_t keep,
                              lh_journal_visit_fn *fn, void *arg, lh_error_t *err)
{
    lh_journal_t *self = calloc(1, sizeof *self);
    if (!self || !(self->path = strdup(path))) {
        free(self);
        lh_error_set(err, "out of memory");
        return NULL;
    }
    self->keep = keep;
    self->file = fopen(path, "r+b");
    if (!self->file && errno == ENOENT)
        self->file = fopen(path, "w+b");
    if (!self->file) {
        lh_error_set(err, "journal %s: %s", path, strerror(errno));
        lh_journal_destroy(&self);
        return NULL;
    }
    char line[128] = "";
    bool has_header = fgets(line, sizeof line, self->file) &&
                      strncmp(line, S_MAGIC, strlen(S_MAGIC)) == 0 && strchr(line, '\n');
    if (has_header) {
        *strchr(line, '\n') = '\0';
        const char *stored = line + strlen(S_MAGIC);
        size_t stored_size = strlen(stored);
        if (stored_size == 0 || stored_size >= sizeof self->epoch || stored_size >= epoch_size) {
            lh_error_set(err, "journal %s: its header holds no valid epoch", path);
            lh_journal_destroy(&self);
            return NULL;
        }
        memcpy(self->epoch, stored, stored_size + 1);
        snprintf(epoch, epoch_size, "%s", self->epoch);
        long end = s_read_records(self, fn, arg);
        fseek(self->file, 0, SEEK_END);
        if (ftell(self->file) != end) {
            lh_core_log(LH_LOG_WARNING,
                        "journal %s: cutting a torn or corrupt tail at byte %ld "
                        "(after %zu events)",
                        path, end, self->records);
            if (ftruncate(fileno(self->file), end) != 0) {
                lh_error_set(err, "journal %s: %s", path, strerror(errno));
                lh_journal_destroy(&self);
                return NULL;
            }
        }
        fseek(self->file, end, SEEK_SET);
    } else {
        fseek(self->file, 0, SEEK_END);
        if (ftell(self->file) > 0) {
            lh_error_set(err, "journal %s: not a livehub journal; refusing to overwrite it", path);
            lh_journal_destroy(&self);
            return NULL;
        }
        snprintf(self->epoch, sizeof self->epoch, "%s", epoch);
        if (s_write_header(self->file, self->epoch) != 0) {
            lh_error_set(err, "journal %s: %s", path, strerror(errno));
            lh_journal_destroy(&self);
            return NULL;
        }
    }
    return self;
}

int lh_journal_append(lh_journal_t *self, uint64_t id, uint64_t ts_us, const void *topic,
                      size_t topic_size, const void *body, size_t body_size)
{
    uint8_t header[S_RECORD_HEADER];
    s_put_u64(header, id);
    s_put_u64(header + 8, ts_us);
    s_put_u32(header + 16, (uint32_t)topic_size);
    s_put_u32(header + 20, (uint32_t)body_size);
    if (fwrite(header, 1, sizeof header, self->file) != sizeof header ||
        fwrite(topic, 1, topic_size, self->file) != topic_size ||
        fwrite(body, 1, body_size, self->file) != body_size)
        return -1;
    self->records++;
    return 0;
}

int lh_journal_flush(lh_journal_t *self, int sync)
{
    if (fflush(self->file) != 0)
        return -1;
    return sync ? fdatasync(fileno(self->file)) : 0;
}

int lh_journal_wants_compaction(const lh_journal_t *self)
{
    return self->records > 2 * (self->keep ? self->keep : 1) + 1000;
}

int lh_journal_compact(lh_journal_t *self, lh_journal_fill_fn *fill, void *arg, lh_error_t *err)
{
    char *temporary = NULL;
    if (asprintf(&temporary, "%s.compacting", self->path) < 0) {
        lh_error_set(err, "out of memory");
        return -1;
    }
    FILE *fresh = fopen(temporary, "w+b");
    if (!fresh || s_write_header(fresh, self->epoch) != 0) {
        lh_error_set(err, "journal %s: %s", temporary, strerror(errno));
        if (fresh)
            fclose(fresh);
        free(temporary);
        return -1;
    }
    FILE *old = self->file;
    size_t old_records = self->records;
    self->file = fresh;
    self->records = 0;
    fill(self, arg);
    if (lh_journal_flush(self, 1) != 0 || rename(temporary, self->path) != 0) {
        lh_error_set(err, "journal %s: %s", self->path, strerror(errno));
        fclose(fresh);
        unlink(temporary);
        self->file = old;
        self->records = old_records;
        free(temporary);
        return -1;
    }
    fclose(old);
    free(temporary);
    return 0;
}

void lh_journal_destroy(lh_journal_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    lh_journal_t *self = *self_p;
    if (self->file) {
        lh_journal_flush(self, 1);
        fclose(self->file);
    }
    free(self->path);
    free(self);
    *self_p = NULL;
}
