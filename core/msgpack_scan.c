/* msgpack_scan: bounds- and depth-checking msgpack walker that shields msgpack-c from bad input. */
#include <inttypes.h>
#include <stdbool.h>
#include <string.h>
#include "livehub/codec.h"

/* Open containers tracked per s_walk frame. Deeper nesting (possible only when a caller passes
 * max_depth >= S_STACK) continues in a nested frame, so recursion is bounded by
 * max_depth / S_STACK. */
#define S_STACK 64

static inline uint32_t s_be16(const uint8_t *p)
{
    return (uint32_t)p[0] << 8 | p[1];
}

static inline uint32_t s_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Error reporters live out of line so the hot loop stays small. */
__attribute__((cold, noinline)) static int s_fail_short(lh_error_t *err, const char *what,
                                                        size_t offset, size_t need, size_t have)
{
    lh_error_set(err, "truncated %s at offset %zu: needs %zu bytes, %zu present", what, offset,
                 need, have);
    return -1;
}

__attribute__((cold, noinline)) static int s_fail_header(lh_error_t *err, const char *what,
                                                         size_t offset, size_t need, size_t have)
{
    lh_error_set(err, "truncated %s header at offset %zu: needs %zu bytes, %zu present", what,
                 offset, need, have);
    return -1;
}

__attribute__((cold, noinline)) static int
s_fail_length(lh_error_t *err, const char *what, uint32_t declared, size_t offset, size_t have)
{
    lh_error_set(err, "declared %s length %" PRIu32 " at offset %zu exceeds the %zu bytes present",
                 what, declared, offset, have);
    return -1;
}

__attribute__((cold, noinline)) static int s_fail_count(lh_error_t *err, bool map, uint32_t count,
                                                        size_t offset, size_t have)
{
    if (map)
        lh_error_set(err,
                     "declared map of %" PRIu32 " pairs at offset %zu needs at least %" PRIu64
                     " bytes, %zu present",
                     count, offset, (uint64_t)count * 2, have);
    else
        lh_error_set(err,
                     "declared array of %" PRIu32 " elements at offset %zu needs at least %" PRIu32
                     " bytes, %zu present",
                     count, offset, count, have);
    return -1;
}

__attribute__((cold, noinline)) static int s_fail_depth(lh_error_t *err, int max_depth,
                                                        size_t offset)
{
    lh_error_set(err, "nesting deeper than %d at offset %zu", max_depth, offset);
    return -1;
}

__attribute__((cold, noinline)) static int s_fail_missing(lh_error_t *err, size_t offset)
{
    lh_error_set(err, "truncated: object expected at offset %zu", offset);
    return -1;
}

/* Walks one object starting at buf[*pos], whose own depth is `depth`. */
static int s_walk(const uint8_t *buf, size_t size, size_t *pos, int depth, int max_depth,
                  lh_error_t *err)
{
    size_t left[S_STACK]; /* objects still expected in each open container */
    int top = 0;
    size_t p = *pos;

    for (;;) {
        if (p >= size)
            return s_fail_missing(err, p);
        const uint8_t b = buf[p];
        const size_t have = size - p; /* bytes from the type byte on */
        size_t hdr;                   /* type byte plus length/count bytes */
        uint32_t n;                   /* payload length, or element/pair count */
        const char *what;
        bool map;

        if (b <= 0x7f || b >= 0xe0) { /* fixint */
            p++;
            goto complete;
        }
        if (b <= 0x8f) {
            hdr = 1, n = b & 0x0f, map = true;
            goto container;
        }
        if (b <= 0x9f) {
            hdr = 1, n = b & 0x0f, map = false;
            goto container;
        }
        if (b <= 0xbf) {
            hdr = 1, n = b & 0x1f, what = "str";
            goto payload;
        }

        size_t fixed; /* total size of a fixed-size object */
        switch (b) {
        case 0xc0: /* nil */
        case 0xc2: /* false */
        case 0xc3: /* true */
            p++;
            goto complete;
        case 0xc1:
            lh_error_set(err, "reserved byte 0xc1 at offset %zu", p);
            return -1;
        case 0xc4:
            hdr = 2, what = "bin";
            goto len8;
        case 0xc5:
            hdr = 3, what = "bin";
            goto len16;
        case 0xc6:
            hdr = 5, what = "bin";
            goto len32;
        case 0xc7:
            hdr = 3, what = "ext";
            goto len8; /* ext: length then type byte */
        case 0xc8:
            hdr = 4, what = "ext";
            goto len16;
        case 0xc9:
            hdr = 6, what = "ext";
            goto len32;
        case 0xca:
            fixed = 5, what = "float32";
            goto fixed_size;
        case 0xcb:
            fixed = 9, what = "float64";
            goto fixed_size;
        case 0xcc:
            fixed = 2, what = "uint8";
            goto fixed_size;
        case 0xcd:
            fixed = 3, what = "uint16";
            goto fixed_size;
        case 0xce:
            fixed = 5, what = "uint32";
            goto fixed_size;
        case 0xcf:
            fixed = 9, what = "uint64";
            goto fixed_size;
        case 0xd0:
            fixed = 2, what = "int8";
            goto fixed_size;
        case 0xd1:
            fixed = 3, what = "int16";
            goto fixed_size;
        case 0xd2:
            fixed = 5, what = "int32";
            goto fixed_size;
        case 0xd3:
            fixed = 9, what = "int64";
            goto fixed_size;
        case 0xd4:
            fixed = 3, what = "fixext1";
            goto fixed_size;
        case 0xd5:
            fixed = 4, what = "fixext2";
            goto fixed_size;
        case 0xd6:
            fixed = 6, what = "fixext4";
            goto fixed_size;
        case 0xd7:
            fixed = 10, what = "fixext8";
            goto fixed_size;
        case 0xd8:
            fixed = 18, what = "fixext16";
            goto fixed_size;
        case 0xd9:
            hdr = 2, what = "str";
            goto len8;
        case 0xda:
            hdr = 3, what = "str";
            goto len16;
        case 0xdb:
            hdr = 5, what = "str";
            goto len32;
        case 0xdc:
            if (have < 3)
                return s_fail_header(err, "array16", p, 3, have);
            hdr = 3, n = s_be16(buf + p + 1), map = false;
            goto container;
        case 0xdd:
            if (have < 5)
                return s_fail_header(err, "array32", p, 5, have);
            hdr = 5, n = s_be32(buf + p + 1), map = false;
            goto container;
        case 0xde:
            if (have < 3)
                return s_fail_header(err, "map16", p, 3, have);
            hdr = 3, n = s_be16(buf + p + 1), map = true;
            goto container;
        default: /* 0xdf */
            if (have < 5)
                return s_fail_header(err, "map32", p, 5, have);
            hdr = 5, n = s_be32(buf + p + 1), map = true;
            goto container;
        }

    fixed_size:
        if (have < fixed)
            return s_fail_short(err, what, p, fixed, have);
        p += fixed;
        goto complete;

    len8:
        if (have < hdr)
            return s_fail_header(err, what, p, hdr, have);
        n = buf[p + 1];
        goto payload;
    len16:
        if (have < hdr)
            return s_fail_header(err, what, p, hdr, have);
        n = s_be16(buf + p + 1);
        goto payload;
    len32:
        if (have < hdr)
            return s_fail_header(err, what, p, hdr, have);
        n = s_be32(buf + p + 1);
        goto payload;

    payload:
        if (n > have - hdr)
            return s_fail_length(err, what, n, p, have - hdr);
        p += hdr + n;
        goto complete;

    container:
        if (depth + top >= max_depth) /* its elements would sit deeper than max_depth */
            return s_fail_depth(err, max_depth, p);
        /* Every element takes at least one byte: refuse impossible counts before anyone trusts
         * them (msgpack-c allocates count-sized arrays up front). */
        if ((map ? (uint64_t)n * 2 : n) > have - hdr)
            return s_fail_count(err, map, n, p, have - hdr);
        if (n == 0) {
            p += hdr;
            goto complete;
        }
        if (top == S_STACK) {
            size_t q = p;
            if (s_walk(buf, size, &q, depth + top, max_depth, err) != 0)
                return -1;
            p = q;
            goto complete;
        }
        left[top++] = map ? (size_t)n * 2 : n;
        p += hdr;
        continue;

    complete:
        /* One object done: close every container it finished. */
        while (top > 0) {
            if (--left[top - 1] != 0)
                break;
            top--;
        }
        if (top == 0) {
            *pos = p;
            return 0;
        }
    }
}

int lh_msgpack_skip(const uint8_t *buf, size_t size, size_t *pos, int max_depth, lh_error_t *err)
{
    if (!pos || (!buf && size > 0)) {
        lh_error_set(err, "invalid arguments");
        return -1;
    }
    if (max_depth < 0) {
        lh_error_set(err, "max_depth %d is negative", max_depth);
        return -1;
    }
    if (*pos > size) {
        lh_error_set(err, "offset %zu is past the end of the %zu-byte input", *pos, size);
        return -1;
    }
    return s_walk(buf, size, pos, 0, max_depth, err);
}

int lh_msgpack_scan(const void *buf, size_t size, int max_depth, lh_error_t *err)
{
    if (size == 0) {
        lh_error_set(err, "empty input");
        return -1;
    }
    size_t pos = 0;
    if (lh_msgpack_skip(buf, size, &pos, max_depth, err) != 0)
        return -1;
    if (pos != size) {
        lh_error_set(err, "trailing bytes after offset %zu (%zu extra)", pos, size - pos);
        return -1;
    }
    return 0;
}

int lh_msgpack_unpack(const void *buf, size_t size, msgpack_zone *zone, msgpack_object *out,
                      lh_error_t *err)
{
    if (!zone || !out) {
        lh_error_set(err, "invalid arguments");
        return -1;
    }
    /* msgpack-c itself handles at most 32 nested non-empty containers (MSGPACK_EMBED_STACK_SIZE,
     * fixed when the library was built), so LH_MSGPACK_MAX_DEPTH cannot grow past 32 alone. */
    if (lh_msgpack_scan(buf, size, LH_MSGPACK_MAX_DEPTH, err) != 0)
        return -1;
    /* msgpack_unpack leaves str/bin/ext pointing into its input; copying the bytes into the zone
     * first makes the whole result live in zone memory, as the header promises. */
    char *copy = msgpack_zone_malloc(zone, size);
    if (!copy) {
        lh_error_set(err, "out of memory copying %zu bytes into the zone", size);
        return -1;
    }
    memcpy(copy, buf, size);
    size_t off = 0;
    msgpack_object object;
    msgpack_unpack_return ret = msgpack_unpack(copy, size, &off, zone, &object);
    if (ret != MSGPACK_UNPACK_SUCCESS || off != size) {
        lh_error_set(err, "msgpack_unpack failed (%d) after a successful scan", (int)ret);
        return -1;
    }
    *out = object;
    return 0;
}
