/* Envelope parsing and stamping on raw msgpack bytes: the router's hot path, so no allocation. */
#include <string.h>
#include "envelope.h"
#include "livehub/codec.h"
#include "livehub/event.h"
#include "utf8.h"

static const char *const s_field_names[LH_FIELD_COUNT] = {
    "v", "type", "data", "to", "key", "id", "epoch", "ts", "src",
};

static uint64_t s_read_be(const uint8_t *p, int bytes)
{
    uint64_t value = 0;
    for (int i = 0; i < bytes; i++)
        value = (value << 8) | p[i];
    return value;
}

/* Reads a str at buf[*pos] (*pos < end); -1 when it is no str or does not fit before end. Map
 * keys are read before anything has scanned them, so the header's own bytes are checked too. */
static int s_read_str(const uint8_t *buf, size_t end, size_t *pos, lh_span_t *out)
{
    size_t p = *pos;
    uint8_t tag = buf[p];
    size_t header = (tag & 0xe0) == 0xa0 ? 1 : tag == 0xd9 ? 2 : tag == 0xda ? 3 : 5;
    if (header > end - p)
        return -1;
    size_t len;
    if ((tag & 0xe0) == 0xa0) {
        len = tag & 0x1f;
        p += 1;
    } else if (tag == 0xd9) {
        len = buf[p + 1];
        p += 2;
    } else if (tag == 0xda) {
        len = (size_t)s_read_be(buf + p + 1, 2);
        p += 3;
    } else if (tag == 0xdb) {
        len = (size_t)s_read_be(buf + p + 1, 4);
        p += 5;
    } else {
        return -1;
    }
    if (p > end || len > end - p)
        return -1;
    out->ptr = buf + p;
    out->size = len;
    *pos = p + len;
    return 0;
}

/* Reads a non-negative integer (any msgpack integer encoding with a value >= 0). */
static int s_read_uint(const lh_span_t *value, uint64_t *out)
{
    const uint8_t *p = value->ptr;
    uint8_t tag = p[0];
    if (tag <= 0x7f) {
        *out = tag;
        return 0;
    }
    if (tag >= 0xcc && tag <= 0xcf) {
        *out = s_read_be(p + 1, 1 << (tag - 0xcc));
        return 0;
    }
    if (tag >= 0xd0 && tag <= 0xd3) {
        int bytes = 1 << (tag - 0xd0);
        uint64_t raw = s_read_be(p + 1, bytes);
        if (raw >> (bytes * 8 - 1))
            return -1; /* negative */
        *out = raw;
        return 0;
    }
    return -1;
}

/* Reads an array header; returns its element count or -1. */
static int64_t s_read_array_header(const uint8_t *p, size_t *header_size)
{
    if ((p[0] & 0xf0) == 0x90) {
        *header_size = 1;
        return p[0] & 0x0f;
    }
    if (p[0] == 0xdc) {
        *header_size = 3;
        return (int64_t)s_read_be(p + 1, 2);
    }
    if (p[0] == 0xdd) {
        *header_size = 5;
        return (int64_t)s_read_be(p + 1, 4);
    }
    return -1;
}

static int s_check_text(const lh_span_t *text, const char *what, size_t max, lh_error_t *err)
{
    if (text->size == 0 || text->size > max) {
        lh_error_set(err, "%s must be 1..%zu bytes, not %zu", what, max, text->size);
        return -1;
    }
    if (!lh_utf8_valid(text->ptr, text->size)) {
        lh_error_set(err, "%s is not valid UTF-8", what);
        return -1;
    }
    return 0;
}

/* Checks the `to` array and counts its audiences. */
static int s_check_audiences(lh_envelope_t *env, lh_error_t *err)
{
    const lh_span_t *value = &env->value[LH_FIELD_TO];
    size_t pos;
    int64_t count = s_read_array_header(value->ptr, &pos);
    if (count < 1 || count > LH_AUDIENCE_MAX) {
        lh_error_set(err, "to must be an array of 1..%d audience strings", LH_AUDIENCE_MAX);
        return -1;
    }
    for (int64_t i = 0; i < count; i++) {
        lh_span_t audience;
        if (s_read_str(value->ptr, value->size, &pos, &audience) != 0) {
            lh_error_set(err, "to[%lld] is not a string", (long long)i);
            return -1;
        }
        if (s_check_text(&audience, "audience", LH_TYPE_MAX, err) != 0)
            return -1;
    }
    env->audience_count = (uint32_t)count;
    return 0;
}

lh_span_t lh_envelope_audience(const lh_envelope_t *env, uint32_t index)
{
    const lh_span_t *value = &env->value[LH_FIELD_TO];
    size_t pos = 0;
    lh_span_t audience = {NULL, 0};
    s_read_array_header(value->ptr, &pos);
    for (uint32_t i = 0; i <= index; i++)
        s_read_str(value->ptr, value->size, &pos, &audience);
    return audience;
}

static int s_field_by_name(const lh_span_t *name)
{
    for (int f = 0; f < LH_FIELD_COUNT; f++) {
        if (strlen(s_field_names[f]) == name->size &&
            memcmp(s_field_names[f], name->ptr, name->size) == 0)
            return f;
    }
    return -1;
}

/* Validates the fields' values once every entry has been located. */
static int s_check_fields(lh_envelope_t *env, const void *topic, size_t topic_size, unsigned flags,
                          lh_error_t *err)
{
    uint64_t version;
    if (!env->has[LH_FIELD_V]) {
        lh_error_set(err, "missing envelope version v");
        return -1;
    }
    if (s_read_uint(&env->value[LH_FIELD_V], &version) != 0 || version != LH_ENVELOPE_VERSION) {
        lh_error_set(err, "unknown envelope version (this hub speaks v=%d)", LH_ENVELOPE_VERSION);
        return -1;
    }
    if (!env->has[LH_FIELD_TYPE]) {
        lh_error_set(err, "missing type");
        return -1;
    }
    const lh_span_t *type = &env->value[LH_FIELD_TYPE];
    if (s_check_text(type, "type", LH_TYPE_MAX, err) != 0)
        return -1;
    if (type->size != topic_size || memcmp(type->ptr, topic, topic_size) != 0) {
        lh_error_set(err, "topic frame does not match the body's type");
        return -1;
    }
    if (type->ptr[0] == '$' && !(flags & LH_ENVELOPE_ALLOW_RESERVED)) {
        lh_error_set(err, "types starting with '$' are reserved for the hub");
        return -1;
    }
    if (env->has[LH_FIELD_TO] && s_check_audiences(env, err) != 0)
        return -1;
    if (env->has[LH_FIELD_KEY] && s_check_text(&env->value[LH_FIELD_KEY], "key", LH_TYPE_MAX, err))
        return -1;
    if (env->has[LH_FIELD_EPOCH] &&
        s_check_text(&env->value[LH_FIELD_EPOCH], "epoch", LH_TYPE_MAX, err) != 0)
        return -1;
    if (env->has[LH_FIELD_SRC] && s_check_text(&env->value[LH_FIELD_SRC], "src", LH_TYPE_MAX, err))
        return -1;
    if (env->has[LH_FIELD_ID] && s_read_uint(&env->value[LH_FIELD_ID], &env->id) != 0) {
        lh_error_set(err, "id must be an unsigned integer");
        return -1;
    }
    if (env->has[LH_FIELD_TS] && s_read_uint(&env->value[LH_FIELD_TS], &env->ts) != 0) {
        lh_error_set(err, "ts must be an unsigned integer");
        return -1;
    }
    return 0;
}

int lh_envelope_parse(const void *topic, size_t topic_size, const void *body, size_t body_size,
                      unsigned flags, lh_envelope_t *env, lh_error_t *err)
{
    const uint8_t *buf = body;
    memset(env, 0, sizeof *env);
    if (body_size == 0) {
        lh_error_set(err, "empty body");
        return -1;
    }
    size_t pos;
    size_t count;
    uint8_t tag = buf[0];
    if ((tag & 0xf0) == 0x80) {
        count = tag & 0x0f;
        pos = 1;
    } else if (tag == 0xde && body_size >= 3) {
        count = (size_t)s_read_be(buf + 1, 2);
        pos = 3;
    } else if (tag == 0xdf && body_size >= 5) {
        count = (size_t)s_read_be(buf + 1, 4);
        pos = 5;
    } else {
        lh_error_set(err, "body is not a msgpack map");
        return -1;
    }
    if (count > LH_FIELD_COUNT) {
        lh_error_set(err, "body has %zu keys; an envelope has at most %d", count, LH_FIELD_COUNT);
        return -1;
    }
    for (size_t i = 0; i < count; i++) {
        size_t entry_start = pos;
        lh_span_t name;
        if (pos >= body_size) {
            lh_error_set(err, "truncated body: %zu of %zu keys present", i, count);
            return -1;
        }
        if (s_read_str(buf, body_size, &pos, &name) != 0) {
            lh_error_set(err, "envelope keys must be strings (key %zu is not, or is truncated)", i);
            return -1;
        }
        int field = s_field_by_name(&name);
        if (field < 0) {
            lh_error_set(err, "unknown envelope key '%.*s'", (int)(name.size > 32 ? 32 : name.size),
                         lh_utf8_valid(name.ptr, name.size) ? (const char *)name.ptr : "?");
            return -1;
        }
        if (env->has[field]) {
            lh_error_set(err, "envelope key '%s' appears twice", s_field_names[field]);
            return -1;
        }
        size_t value_start = pos;
        if (lh_msgpack_skip(buf, body_size, &pos, LH_MSGPACK_MAX_DEPTH - 1, err) != 0)
            return -1;
        env->has[field] = true;
        env->entry[field] = (lh_span_t){buf + entry_start, pos - entry_start};
        env->value[field] = (lh_span_t){buf + value_start, pos - value_start};
        bool is_text = field == LH_FIELD_TYPE || field == LH_FIELD_KEY || field == LH_FIELD_EPOCH ||
                       field == LH_FIELD_SRC;
        if (is_text) {
            size_t str_pos = value_start;
            if (s_read_str(buf, pos, &str_pos, &env->value[field]) != 0) {
                lh_error_set(err, "%s must be a string", s_field_names[field]);
                return -1;
            }
        }
    }
    if (pos != body_size) {
        lh_error_set(err, "trailing bytes after the envelope map");
        return -1;
    }
    return s_check_fields(env, topic, topic_size, flags, err);
}

static size_t s_str_size(size_t len)
{
    return len + (len < 32 ? 1 : 2); /* stamped strings are at most LH_TYPE_MAX bytes */
}

static uint8_t *s_write_str(uint8_t *out, const char *text, size_t len)
{
    if (len < 32) {
        *out++ = (uint8_t)(0xa0 | len);
    } else {
        *out++ = 0xd9;
        *out++ = (uint8_t)len;
    }
    memcpy(out, text, len);
    return out + len;
}

static uint8_t *s_write_uint64(uint8_t *out, uint64_t value)
{
    *out++ = 0xcf;
    for (int shift = 56; shift >= 0; shift -= 8)
        *out++ = (uint8_t)(value >> shift);
    return out;
}

static const uint8_t s_default_to[] = {0xa2, 't', 'o', 0x91, 0xa6, 'p', 'u', 'b', 'l', 'i', 'c'};
#define S_KEPT_FIELDS 5 /* v, type, data, to, key: the producer's own */

size_t lh_envelope_stamped_size(const lh_envelope_t *env, size_t epoch_size, size_t src_size)
{
    size_t size = 1; /* fixmap header: at most 9 entries */
    for (int f = 0; f < S_KEPT_FIELDS; f++)
        if (env->has[f])
            size += env->entry[f].size;
    if (!env->has[LH_FIELD_TO])
        size += sizeof s_default_to;
    size += s_str_size(2) + 9;                      /* id */
    size += s_str_size(5) + s_str_size(epoch_size); /* epoch */
    size += s_str_size(2) + 9;                      /* ts */
    size += s_str_size(3) + s_str_size(src_size);   /* src */
    return size;
}

void lh_envelope_stamp(const lh_envelope_t *env, uint64_t id, const char *epoch, size_t epoch_size,
                       uint64_t ts, const char *src, size_t src_size, uint8_t *out)
{
    uint8_t *header = out++;
    unsigned entries = 4;
    for (int f = 0; f < S_KEPT_FIELDS; f++) {
        if (!env->has[f])
            continue;
        memcpy(out, env->entry[f].ptr, env->entry[f].size);
        out += env->entry[f].size;
        entries++;
    }
    if (!env->has[LH_FIELD_TO]) {
        memcpy(out, s_default_to, sizeof s_default_to);
        out += sizeof s_default_to;
        entries++;
    }
    *header = (uint8_t)(0x80 | entries);
    out = s_write_str(out, "id", 2);
    out = s_write_uint64(out, id);
    out = s_write_str(out, "epoch", 5);
    out = s_write_str(out, epoch, epoch_size);
    out = s_write_str(out, "ts", 2);
    out = s_write_uint64(out, ts);
    out = s_write_str(out, "src", 3);
    s_write_str(out, src, src_size);
}
