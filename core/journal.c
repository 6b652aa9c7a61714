/* Journal file: a header line "livehub-journal 2 EPOCH\n", then records
 * [u64 id][u64 ts][u32 topic size][u32 body size][topic][body], little-endian. A record with
 * topic and body sizes 0 is an id mark: ids up to its id were given out (the newest ones to
 * ephemeral events, which are not recorded). A record is taken only when complete, its id is
 * greater than the previous one (ephemeral events leave holes) and its body is a valid envelope;
 * the first record that fails ends the file (a crash mid-write leaves at most one torn batch).
 * Version 1 files (no marks) are read and upgraded in place. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "envelope.h"
#include "journal.h"
#include "log.h"

#define S_MAGIC "livehub-journal "
#define S_VERSION '2'
#define S_RECORD_HEADER 24
#define S_MAX_RECORD (16u * 1024 * 1024 + 256)
#define S_WRITE_CHUNK (1024 * 1024) /* a batch larger than this is written out in parts */
#define S_COMPACT_SLACK_EVENTS 1000
#define S_COMPACT_SLACK_BYTES (16 * 1024 * 1024)

struct lh_journal {
    char *path;
    int fd;
    char epoch[64];
    size_t keep, keep_bytes;
    size_t records;           /* committed records in the file */
    size_t batch_records;     /* records of the current batch */
    uint64_t newest_id;       /* id of the newest committed record (event or mark) */
    uint64_t batch_newest_id; /* id of the newest record of the current batch */
    off_t committed;          /* end of the last committed batch */
    off_t written;            /* end of what the current batch has written so far */
    uint8_t *buffer;          /* the current batch's unwritten bytes */
    size_t used, capacity;
    int failed_errno; /* non-zero: the current batch failed (and was cut off) */
    bool unsynced;
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

/* Writes all of data at offset, retrying short writes and interruptions. */
static int s_write_all(int fd, const uint8_t *data, size_t size, off_t offset)
{
    while (size) {
        ssize_t done = pwrite(fd, data, size, offset);
        if (done < 0 && errno == EINTR)
            continue;
        if (done <= 0) {
            if (done == 0)
                errno = EIO;
            return -1;
        }
        data += done;
        size -= (size_t)done;
        offset += done;
    }
    return 0;
}

/* The current batch failed: nothing of it stays in the file, and further appends to it fail. */
static void s_fail_batch(lh_journal_t *self)
{
    int error = errno ? errno : EIO;
    /* always: a write that failed may still have put part of its bytes past `written` */
    if (ftruncate(self->fd, self->committed) != 0)
        lh_core_log(LH_LOG_ERROR, "journal %s: cannot cut a failed batch off: %s", self->path,
                    strerror(errno));
    self->written = self->committed;
    self->used = 0;
    self->batch_records = 0;
    self->batch_newest_id = 0;
    self->failed_errno = error;
}

static int s_write_out(lh_journal_t *self)
{
    if (self->used == 0)
        return 0;
    if (s_write_all(self->fd, self->buffer, self->used, self->written) != 0) {
        s_fail_batch(self);
        return -1;
    }
    self->written += (off_t)self->used;
    self->used = 0;
    return 0;
}

static int s_buffer(lh_journal_t *self, const void *data, size_t size)
{
    if (self->used + size > self->capacity) {
        size_t grown = self->capacity ? self->capacity : 4096;
        while (grown < self->used + size)
            grown *= 2;
        uint8_t *bigger = realloc(self->buffer, grown);
        if (!bigger) {
            errno = ENOMEM;
            s_fail_batch(self);
            return -1;
        }
        self->buffer = bigger;
        self->capacity = grown;
    }
    memcpy(self->buffer + self->used, data, size);
    self->used += size;
    return 0;
}

static int s_append_record(lh_journal_t *self, uint64_t id, uint64_t ts_us, const void *topic,
                           size_t topic_size, const void *body, size_t body_size)
{
    if (self->failed_errno)
        return -1;
    uint8_t header[S_RECORD_HEADER];
    s_put_u64(header, id);
    s_put_u64(header + 8, ts_us);
    s_put_u32(header + 16, (uint32_t)topic_size);
    s_put_u32(header + 20, (uint32_t)body_size);
    if (s_buffer(self, header, sizeof header) != 0 || s_buffer(self, topic, topic_size) != 0 ||
        s_buffer(self, body, body_size) != 0)
        return -1;
    self->batch_records++;
    self->batch_newest_id = id;
    return self->used >= S_WRITE_CHUNK ? s_write_out(self) : 0;
}

int lh_journal_append(lh_journal_t *self, uint64_t id, uint64_t ts_us, const void *topic,
                      size_t topic_size, const void *body, size_t body_size)
{
    return s_append_record(self, id, ts_us, topic, topic_size, body, body_size);
}

int lh_journal_commit(lh_journal_t *self, uint64_t last_id, bool sync)
{
    uint64_t newest = self->batch_newest_id ? self->batch_newest_id : self->newest_id;
    if (!self->failed_errno && last_id > newest)
        s_append_record(self, last_id, 0, "", 0, "", 0);
    if (!self->failed_errno && s_write_out(self) == 0 && self->written != self->committed &&
        sync && fdatasync(self->fd) != 0)
        s_fail_batch(self);
    if (self->failed_errno) {
        errno = self->failed_errno;
        self->failed_errno = 0;
        return -1;
    }
    if (self->written != self->committed) {
        self->committed = self->written;
        self->records += self->batch_records;
        if (self->batch_records)
            self->newest_id = self->batch_newest_id;
        self->unsynced = !sync;
    }
    self->batch_records = 0;
    self->batch_newest_id = 0;
    return 0;
}

bool lh_journal_unsynced(const lh_journal_t *self)
{
    return self->unsynced;
}

int lh_journal_sync(lh_journal_t *self)
{
    if (!self->unsynced)
        return 0;
    if (fdatasync(self->fd) != 0)
        return -1;
    self->unsynced = false;
    return 0;
}

bool lh_journal_wants_compaction(const lh_journal_t *self)
{
    return self->records > 2 * self->keep + S_COMPACT_SLACK_EVENTS ||
           (uint64_t)self->committed > 2 * (uint64_t)self->keep_bytes + S_COMPACT_SLACK_BYTES;
}

/* Reads records after the header; returns the offset where valid data ends. */
static long s_read_records(lh_journal_t *self, FILE *file, lh_journal_visit_fn *fn, void *arg)
{
    long valid_end = ftell(file);
    uint64_t previous = 0;
    uint8_t header[S_RECORD_HEADER];
    uint8_t *data = NULL;
    while (fread(header, 1, sizeof header, file) == sizeof header) {
        uint64_t id = s_get(header, 8), ts = s_get(header + 8, 8);
        uint32_t topic_size = (uint32_t)s_get(header + 16, 4);
        uint32_t body_size = (uint32_t)s_get(header + 20, 4);
        bool mark = topic_size == 0 && body_size == 0;
        if (id == 0 || (previous && id <= previous) || (topic_size == 0 && !mark) ||
            topic_size > 255 || body_size > S_MAX_RECORD)
            break;
        if (!mark) {
            uint8_t *grown = realloc(data, topic_size + body_size);
            if (!grown)
                break;
            data = grown;
            if (fread(data, 1, topic_size + body_size, file) != topic_size + body_size)
                break;
            lh_envelope_t env;
            if (lh_envelope_parse(data, topic_size, data + topic_size, body_size, 0, &env,
                                  NULL) != 0 ||
                env.id != id)
                break;
        }
        fn(id, ts, mark ? NULL : data, topic_size, mark ? NULL : data + topic_size, body_size,
           arg);
        previous = id;
        self->records++;
        valid_end = ftell(file);
    }
    self->newest_id = previous;
    free(data);
    return valid_end;
}

/* Reads an existing journal: its epoch, its records (through fn), and cuts a torn tail. */
static int s_read(lh_journal_t *self, char *epoch, size_t epoch_size, lh_journal_visit_fn *fn,
                  void *arg, bool *empty, lh_error_t *err)
{
    int reader_fd = dup(self->fd);
    FILE *file = reader_fd >= 0 ? fdopen(reader_fd, "rb") : NULL;
    if (!file) {
        if (reader_fd >= 0)
            close(reader_fd);
        lh_error_set(err, "journal %s: %s", self->path, strerror(errno));
        return -1;
    }
    char line[128] = "";
    size_t magic = strlen(S_MAGIC);
    bool has_header = fgets(line, sizeof line, file) && strncmp(line, S_MAGIC, magic) == 0 &&
                      (line[magic] == '1' || line[magic] == S_VERSION) &&
                      line[magic + 1] == ' ' && strchr(line, '\n');
    if (!has_header) {
        fseek(file, 0, SEEK_END);
        *empty = ftell(file) == 0;
        fclose(file);
        if (*empty)
            return 0;
        lh_error_set(err, "journal %s: not a livehub journal; refusing to overwrite it",
                     self->path);
        return -1;
    }
    *empty = false;
    char version = line[magic];
    *strchr(line, '\n') = '\0';
    const char *stored = line + magic + 2;
    size_t stored_size = strlen(stored);
    if (stored_size == 0 || stored_size >= sizeof self->epoch || stored_size >= epoch_size) {
        fclose(file);
        lh_error_set(err, "journal %s: its header holds no valid epoch", self->path);
        return -1;
    }
    memcpy(self->epoch, stored, stored_size + 1);
    snprintf(epoch, epoch_size, "%s", self->epoch);
    long end = s_read_records(self, file, fn, arg);
    fseek(file, 0, SEEK_END);
    long size = ftell(file);
    fclose(file);
    if (size != end) {
        lh_core_log(LH_LOG_WARNING,
                    "journal %s: cutting a torn or corrupt tail at byte %ld (after %zu events)",
                    self->path, end, self->records);
        if (ftruncate(self->fd, end) != 0) {
            lh_error_set(err, "journal %s: %s", self->path, strerror(errno));
            return -1;
        }
    }
    /* version 1 differs only in having no marks: the new version number is all that changes */
    const char upgraded = S_VERSION;
    if (version != S_VERSION &&
        s_write_all(self->fd, (const uint8_t *)&upgraded, 1, (off_t)magic) != 0) {
        lh_error_set(err, "journal %s: %s", self->path, strerror(errno));
        return -1;
    }
    self->committed = self->written = end;
    return 0;
}

/* Starts a file with its header, written and synced. */
static int s_write_header(lh_journal_t *self)
{
    char header[128];
    int size = snprintf(header, sizeof header, "%s%c %s\n", S_MAGIC, S_VERSION, self->epoch);
    if (s_buffer(self, header, (size_t)size) != 0)
        return -1;
    return lh_journal_commit(self, 0, true);
}

lh_journal_t *lh_journal_open(const char *path, char *epoch, size_t epoch_size, size_t keep,
                              size_t keep_bytes, lh_journal_visit_fn *fn, void *arg,
                              lh_error_t *err)
{
    lh_journal_t *self = calloc(1, sizeof *self);
    if (!self || !(self->path = strdup(path))) {
        free(self);
        lh_error_set(err, "out of memory");
        return NULL;
    }
    self->keep = keep ? keep : 1;
    self->keep_bytes = keep_bytes;
    /* events may be private: the journal is the hub user's alone */
    self->fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (self->fd < 0) {
        lh_error_set(err, "journal %s: %s", path, strerror(errno));
        lh_journal_destroy(&self);
        return NULL;
    }
    bool empty = false;
    if (s_read(self, epoch, epoch_size, fn, arg, &empty, err) != 0) {
        lh_journal_destroy(&self);
        return NULL;
    }
    if (empty) {
        snprintf(self->epoch, sizeof self->epoch, "%s", epoch);
        if (s_write_header(self) != 0) {
            lh_error_set(err, "journal %s: %s", path, strerror(errno));
            lh_journal_destroy(&self);
            return NULL;
        }
    }
    return self;
}

/* Syncs the directory holding path, so that a rename in it survives a power loss. */
static void s_sync_directory(const char *path)
{
    char *copy = strdup(path);
    int fd = copy ? open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
    free(copy);
}

int lh_journal_compact(lh_journal_t *self, lh_journal_fill_fn *fill, void *arg, uint64_t last_id,
                       lh_error_t *err)
{
    char *temporary = NULL;
    if (asprintf(&temporary, "%s.compacting", self->path) < 0) {
        lh_error_set(err, "out of memory");
        return -1;
    }
    int fresh = open(temporary, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fresh < 0) {
        lh_error_set(err, "journal %s: %s", temporary, strerror(errno));
        free(temporary);
        return -1;
    }
    lh_journal_t old = *self;
    self->fd = fresh;
    self->records = self->batch_records = 0;
    self->newest_id = self->batch_newest_id = 0;
    self->committed = self->written = 0;
    int rc = s_write_header(self);
    if (rc == 0) {
        fill(self, arg);
        rc = lh_journal_commit(self, last_id, true);
    }
    if (rc != 0 || rename(temporary, self->path) != 0) {
        lh_error_set(err, "journal %s: %s", self->path, strerror(errno));
        close(fresh);
        unlink(temporary);
        old.buffer = self->buffer; /* the buffer may have grown: keep the current one */
        old.capacity = self->capacity;
        old.used = 0;
        *self = old;
        free(temporary);
        return -1;
    }
    s_sync_directory(self->path);
    self->unsynced = false;
    close(old.fd);
    free(temporary);
    return 0;
}

void lh_journal_destroy(lh_journal_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    lh_journal_t *self = *self_p;
    if (self->fd >= 0) {
        lh_journal_sync(self);
        close(self->fd);
    }
    free(self->buffer);
    free(self->path);
    free(self);
    *self_p = NULL;
}
