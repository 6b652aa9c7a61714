/* Unit tests for lh_msgpack_skip / lh_msgpack_scan / lh_msgpack_unpack (core/msgpack_scan.c). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include "livehub/codec.h"

#define S_BYTES(lit) (const uint8_t *)(lit), (sizeof(lit) - 1)

/* xorshift64*: deterministic across runs and platforms. */
static uint64_t s_rng_state;

static uint64_t s_rand(void)
{
    s_rng_state ^= s_rng_state >> 12;
    s_rng_state ^= s_rng_state << 25;
    s_rng_state ^= s_rng_state >> 27;
    return s_rng_state * 0x2545F4914F6CDD1DULL;
}

static size_t s_below(size_t n)
{
    return (size_t)(s_rand() % n);
}

/* An exact-size heap copy, so AddressSanitizer flags any read past the end. */
static uint8_t *s_exact(const void *data, size_t size)
{
    uint8_t *copy = malloc(size ? size : 1);
    assert_non_null(copy);
    if (size)
        memcpy(copy, data, size);
    return copy;
}

static void s_assert_text(const lh_error_t *err, const char *want)
{
    if (!strstr(err->text, want))
        fail_msg("error text \"%s\" lacks \"%s\"", err->text, want);
}

/* Asserts that data is accepted by scan and by skip (which must consume it all), and that
 * lh_msgpack_unpack produces an object of the given type. */
static void s_accepts(const uint8_t *data, size_t size, msgpack_object_type type)
{
    uint8_t *buf = s_exact(data, size);
    lh_error_t err = {{0}};
    if (lh_msgpack_scan(buf, size, LH_MSGPACK_MAX_DEPTH, &err) != 0)
        fail_msg("scan refused a valid object: %s", err.text);
    size_t pos = 0;
    assert_int_equal(lh_msgpack_skip(buf, size, &pos, LH_MSGPACK_MAX_DEPTH, &err), 0);
    assert_int_equal(pos, size);

    msgpack_zone zone;
    msgpack_zone_init(&zone, 1024);
    msgpack_object obj;
    assert_int_equal(lh_msgpack_unpack(buf, size, &zone, &obj, &err), 0);
    assert_int_equal(obj.type, type);
    msgpack_zone_destroy(&zone);
    free(buf);
}

/* Asserts that scan, skip and unpack all refuse data, with `want` in the reason. */
static void s_rejects(const uint8_t *data, size_t size, const char *want)
{
    uint8_t *buf = s_exact(data, size);
    lh_error_t err = {{0}};
    assert_int_equal(lh_msgpack_scan(buf, size, LH_MSGPACK_MAX_DEPTH, &err), -1);
    assert_true(err.text[0] != '\0');
    if (want)
        s_assert_text(&err, want);

    msgpack_zone zone;
    msgpack_zone_init(&zone, 1024);
    msgpack_object obj;
    lh_error_t err2 = {{0}};
    assert_int_equal(lh_msgpack_unpack(buf, size, &zone, &obj, &err2), -1);
    assert_string_equal(err2.text, err.text);
    msgpack_zone_destroy(&zone);
    free(buf);
}

/* Asserts every strict prefix of data is refused by scan and skip, leaving pos alone. */
static void s_prefixes_rejected(const uint8_t *data, size_t size)
{
    for (size_t cut = 0; cut < size; cut++) {
        uint8_t *buf = s_exact(data, cut);
        lh_error_t err = {{0}};
        if (lh_msgpack_scan(buf, cut, LH_MSGPACK_MAX_DEPTH, &err) != -1)
            fail_msg("prefix of %zu/%zu bytes accepted", cut, size);
        assert_true(err.text[0] != '\0');
        size_t pos = 0;
        err.text[0] = '\0';
        assert_int_equal(lh_msgpack_skip(buf, cut, &pos, LH_MSGPACK_MAX_DEPTH, &err), -1);
        assert_int_equal(pos, 0);
        assert_true(err.text[0] != '\0');
        free(buf);
    }
}

typedef struct {
    msgpack_sbuffer sb;
    msgpack_packer pk;
} s_packbuf;

static void s_pb_init(s_packbuf *b)
{
    msgpack_sbuffer_init(&b->sb);
    msgpack_packer_init(&b->pk, &b->sb, msgpack_sbuffer_write);
}

/* ---- every format ---- */

static void test_every_format(void **state)
{
    (void)state;
    static const struct {
        const char *bytes;
        size_t size;
        msgpack_object_type type;
    } cases[] = {
#define C(lit, type) {lit, sizeof(lit) - 1, type}
        C("\x00", MSGPACK_OBJECT_POSITIVE_INTEGER),
        C("\x7f", MSGPACK_OBJECT_POSITIVE_INTEGER),
        C("\xe0", MSGPACK_OBJECT_NEGATIVE_INTEGER),
        C("\xff", MSGPACK_OBJECT_NEGATIVE_INTEGER),
        C("\xc0", MSGPACK_OBJECT_NIL),
        C("\xc2", MSGPACK_OBJECT_BOOLEAN),
        C("\xc3", MSGPACK_OBJECT_BOOLEAN),
        C("\xca\x3f\xc0\x00\x00", MSGPACK_OBJECT_FLOAT32),
        C("\xcb\x3f\xf8\x00\x00\x00\x00\x00\x00", MSGPACK_OBJECT_FLOAT64),
        C("\xcc\xff", MSGPACK_OBJECT_POSITIVE_INTEGER),
        C("\xcd\xff\xff", MSGPACK_OBJECT_POSITIVE_INTEGER),
        C("\xce\xff\xff\xff\xff", MSGPACK_OBJECT_POSITIVE_INTEGER),
        C("\xcf\xff\xff\xff\xff\xff\xff\xff\xff", MSGPACK_OBJECT_POSITIVE_INTEGER),
        C("\xd0\x80", MSGPACK_OBJECT_NEGATIVE_INTEGER),
        C("\xd1\x80\x00", MSGPACK_OBJECT_NEGATIVE_INTEGER),
        C("\xd2\x80\x00\x00\x00", MSGPACK_OBJECT_NEGATIVE_INTEGER),
        C("\xd3\x80\x00\x00\x00\x00\x00\x00\x00", MSGPACK_OBJECT_NEGATIVE_INTEGER),
        C("\xa0", MSGPACK_OBJECT_STR),
        C("\xa3"
          "abc",
          MSGPACK_OBJECT_STR),
        C("\xd9\x00", MSGPACK_OBJECT_STR),
        C("\xd9\x02"
          "hi",
          MSGPACK_OBJECT_STR),
        C("\xda\x00\x00", MSGPACK_OBJECT_STR),
        C("\xda\x00\x01"
          "x",
          MSGPACK_OBJECT_STR),
        C("\xdb\x00\x00\x00\x00", MSGPACK_OBJECT_STR),
        C("\xdb\x00\x00\x00\x02"
          "ok",
          MSGPACK_OBJECT_STR),
        C("\xc4\x00", MSGPACK_OBJECT_BIN),
        C("\xc4\x01\xff", MSGPACK_OBJECT_BIN),
        C("\xc5\x00\x00", MSGPACK_OBJECT_BIN),
        C("\xc5\x00\x02\x00\x01", MSGPACK_OBJECT_BIN),
        C("\xc6\x00\x00\x00\x00", MSGPACK_OBJECT_BIN),
        C("\xc6\x00\x00\x00\x01\x07", MSGPACK_OBJECT_BIN),
        C("\xd4\x01\xaa", MSGPACK_OBJECT_EXT),
        C("\xd5\x01\xaa\xbb", MSGPACK_OBJECT_EXT),
        C("\xd6\xff\x01\x02\x03\x04", MSGPACK_OBJECT_EXT),
        C("\xd7\x05\x01\x02\x03\x04\x05\x06\x07\x08", MSGPACK_OBJECT_EXT),
        C("\xd8\x05\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f\x10",
          MSGPACK_OBJECT_EXT),
        C("\xc7\x00\x05", MSGPACK_OBJECT_EXT),
        C("\xc7\x03\x05\x01\x02\x03", MSGPACK_OBJECT_EXT),
        C("\xc8\x00\x01\x05\x01", MSGPACK_OBJECT_EXT),
        C("\xc9\x00\x00\x00\x02\x05\x01\x02", MSGPACK_OBJECT_EXT),
        C("\x90", MSGPACK_OBJECT_ARRAY),
        C("\x91\x01", MSGPACK_OBJECT_ARRAY),
        C("\x80", MSGPACK_OBJECT_MAP),
        C("\x81\x01\x02", MSGPACK_OBJECT_MAP),
        C("\xdc\x00\x00", MSGPACK_OBJECT_ARRAY),
        C("\xdc\x00\x02\xc0\xc3", MSGPACK_OBJECT_ARRAY),
        C("\xdd\x00\x00\x00\x00", MSGPACK_OBJECT_ARRAY),
        C("\xdd\x00\x00\x00\x02\xc0\xc2", MSGPACK_OBJECT_ARRAY),
        C("\xde\x00\x00", MSGPACK_OBJECT_MAP),
        C("\xde\x00\x01\xa1k\x01", MSGPACK_OBJECT_MAP),
        C("\xdf\x00\x00\x00\x00", MSGPACK_OBJECT_MAP),
        C("\xdf\x00\x00\x00\x01\xa1k\x90", MSGPACK_OBJECT_MAP),
#undef C
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const uint8_t *bytes = (const uint8_t *)cases[i].bytes;
        size_t size = cases[i].size;
        s_accepts(bytes, size, cases[i].type);
        s_prefixes_rejected(bytes, size);

        /* One byte too many: scan says trailing, skip stops exactly at the end of the object. */
        uint8_t *more = malloc(size + 1);
        assert_non_null(more);
        memcpy(more, bytes, size);
        more[size] = 0x01;
        lh_error_t err = {{0}};
        assert_int_equal(lh_msgpack_scan(more, size + 1, LH_MSGPACK_MAX_DEPTH, &err), -1);
        s_assert_text(&err, "trailing bytes");
        size_t pos = 0;
        assert_int_equal(lh_msgpack_skip(more, size + 1, &pos, LH_MSGPACK_MAX_DEPTH, &err), 0);
        assert_int_equal(pos, size);
        free(more);
    }
}

/* Spot-checks that unpacked values are what the bytes say (i.e. scan's sizes agree). */
static void test_unpacked_values(void **state)
{
    (void)state;
    msgpack_zone zone;
    msgpack_zone_init(&zone, 1024);
    msgpack_object o;
    lh_error_t err;

    assert_int_equal(
        lh_msgpack_unpack(S_BYTES("\xcf\xff\xff\xff\xff\xff\xff\xff\xff"), &zone, &o, &err), 0);
    assert_true(o.via.u64 == UINT64_MAX);
    assert_int_equal(
        lh_msgpack_unpack(S_BYTES("\xd3\x80\x00\x00\x00\x00\x00\x00\x00"), &zone, &o, &err), 0);
    assert_true(o.via.i64 == INT64_MIN);
    assert_int_equal(lh_msgpack_unpack(S_BYTES("\xca\x3f\xc0\x00\x00"), &zone, &o, &err), 0);
    assert_true(o.via.f64 == 1.5);
    assert_int_equal(lh_msgpack_unpack(S_BYTES("\xc7\x03\xfe\x01\x02\x03"), &zone, &o, &err), 0);
    assert_int_equal(o.via.ext.type, -2);
    assert_int_equal(o.via.ext.size, 3);
    assert_memory_equal(o.via.ext.ptr, "\x01\x02\x03", 3);
    assert_int_equal(lh_msgpack_unpack(S_BYTES("\x82\xa1"
                                               "a\x01\xa1"
                                               "b\x92\xc0\xa0"),
                                       &zone, &o, &err),
                     0);
    assert_int_equal(o.type, MSGPACK_OBJECT_MAP);
    assert_int_equal(o.via.map.size, 2);
    assert_int_equal(o.via.map.ptr[1].val.type, MSGPACK_OBJECT_ARRAY);
    assert_int_equal(o.via.map.ptr[1].val.via.array.size, 2);
    msgpack_zone_destroy(&zone);
}

/* ---- boundary sizes, built with msgpack-c's packer ---- */

static void s_check_sized(s_packbuf *b, uint8_t first, msgpack_object_type type, size_t len,
                          const char *trunc_text)
{
    const uint8_t *data = (const uint8_t *)b->sb.data;
    size_t size = b->sb.size;
    assert_int_equal(data[0], first);
    s_accepts(data, size, type);

    msgpack_zone zone;
    msgpack_zone_init(&zone, 1024);
    msgpack_object o;
    assert_int_equal(lh_msgpack_unpack(data, size, &zone, &o, NULL), 0);
    size_t got = type == MSGPACK_OBJECT_STR     ? o.via.str.size
                 : type == MSGPACK_OBJECT_BIN   ? o.via.bin.size
                 : type == MSGPACK_OBJECT_EXT   ? o.via.ext.size
                 : type == MSGPACK_OBJECT_ARRAY ? o.via.array.size
                                                : o.via.map.size;
    assert_int_equal(got, len);
    msgpack_zone_destroy(&zone);

    /* The last byte missing: the declared length/count no longer fits (or an element is absent). */
    s_rejects(data, size - 1, trunc_text);
}

static void test_str_bin_boundaries(void **state)
{
    (void)state;
    static const struct {
        size_t len;
        uint8_t str_first, bin_first;
    } cases[] = {
        {1, 0xa1, 0xc4},   {31, 0xbf, 0xc4},    {32, 0xd9, 0xc4},    {255, 0xd9, 0xc4},
        {256, 0xda, 0xc5}, {65535, 0xda, 0xc5}, {65536, 0xdb, 0xc6}, {70000, 0xdb, 0xc6},
    };
    char *body = malloc(70000);
    assert_non_null(body);
    memset(body, 'x', 70000);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        s_packbuf b;
        s_pb_init(&b);
        msgpack_pack_str_with_body(&b.pk, body, cases[i].len);
        s_check_sized(&b, cases[i].str_first, MSGPACK_OBJECT_STR, cases[i].len,
                      "declared str length");
        msgpack_sbuffer_destroy(&b.sb);

        s_pb_init(&b);
        msgpack_pack_bin_with_body(&b.pk, body, cases[i].len);
        s_check_sized(&b, cases[i].bin_first, MSGPACK_OBJECT_BIN, cases[i].len,
                      "declared bin length");
        msgpack_sbuffer_destroy(&b.sb);
    }
    free(body);
}

static void test_ext_boundaries(void **state)
{
    (void)state;
    static const struct {
        size_t len;
        uint8_t first;
    } cases[] = {
        {1, 0xd4},  {2, 0xd5},   {4, 0xd6},   {8, 0xd7},     {16, 0xd8},    {3, 0xc7},
        {17, 0xc7}, {255, 0xc7}, {256, 0xc8}, {65535, 0xc8}, {65536, 0xc9},
    };
    char *body = calloc(1, 65536);
    assert_non_null(body);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        s_packbuf b;
        s_pb_init(&b);
        msgpack_pack_ext_with_body(&b.pk, body, cases[i].len, 42);
        s_check_sized(&b, cases[i].first, MSGPACK_OBJECT_EXT, cases[i].len,
                      cases[i].first >= 0xd4 ? "truncated fixext" : "declared ext length");
        msgpack_sbuffer_destroy(&b.sb);
    }
    free(body);
}

static void test_container_boundaries(void **state)
{
    (void)state;
    /* Cutting the last byte trips the count check while one byte per element is all there is
     * (bool elements; keys below 128); with wider keys the walk finds the missing value. */
    static const struct {
        size_t n;
        bool map;
        uint8_t first;
        const char *trunc_text;
    } cases[] = {
        {15, false, 0x9f, "declared array of 15 elements"},
        {16, false, 0xdc, "declared array of 16 elements"},
        {65535, false, 0xdc, "declared array of 65535 elements"},
        {65536, false, 0xdd, "declared array of 65536 elements"},
        {15, true, 0x8f, "declared map of 15 pairs"},
        {16, true, 0xde, "declared map of 16 pairs"},
        {65535, true, 0xde, "object expected"},
        {65536, true, 0xdf, "object expected"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        s_packbuf b;
        s_pb_init(&b);
        if (cases[i].map) {
            msgpack_pack_map(&b.pk, cases[i].n);
            for (size_t k = 0; k < cases[i].n; k++) {
                msgpack_pack_uint64(&b.pk, k); /* distinct keys */
                msgpack_pack_nil(&b.pk);
            }
        } else {
            msgpack_pack_array(&b.pk, cases[i].n);
            for (size_t k = 0; k < cases[i].n; k++)
                msgpack_pack_true(&b.pk);
        }
        s_check_sized(&b, cases[i].first, cases[i].map ? MSGPACK_OBJECT_MAP : MSGPACK_OBJECT_ARRAY,
                      cases[i].n, cases[i].trunc_text);
        msgpack_sbuffer_destroy(&b.sb);
    }
}

/* ---- hostile and malformed input ---- */

static void test_hostile_declared_sizes(void **state)
{
    (void)state;
    /* Each of these would make msgpack-c attempt a multi-gigabyte allocation. */
    s_rejects(S_BYTES("\xdd\xff\xff\xff\xff"),
              "declared array of 4294967295 elements at offset 0 needs at least 4294967295 bytes, "
              "0 present");
    s_rejects(S_BYTES("\xdb\xff\xff\xff\xff"),
              "declared str length 4294967295 at offset 0 exceeds the 0 bytes present");
    s_rejects(S_BYTES("\xdb\xff\xff\xff\xff"
                      "abc"),
              "declared str length 4294967295 at offset 0 exceeds the 3 bytes present");
    s_rejects(S_BYTES("\xdf\xff\xff\xff\xff\x01\x01"), "declared map of 4294967295 pairs");
    s_rejects(S_BYTES("\xc6\xff\xff\xff\xff"), "declared bin length 4294967295");
    s_rejects(S_BYTES("\xc9\xff\xff\xff\xff\x01"), "declared ext length 4294967295");
    s_rejects(S_BYTES("\xdc\xff\xff"), "declared array of 65535 elements");
    s_rejects(S_BYTES("\xde\xff\xff"), "declared map of 65535 pairs");
    s_rejects(S_BYTES("\xda\xff\xff"), "declared str length 65535");
    s_rejects(S_BYTES("\xc5\x00\x02\x01"), "declared bin length 2 at offset 0 exceeds the 1 bytes");
    s_rejects(S_BYTES("\xc7\x02\x01\x01"), "declared ext length 2");
    /* Nested: the offset reported is the inner header's. */
    s_rejects(S_BYTES("\x92\x01\xdd\x7f\xff\xff\xff\x01"), "elements at offset 2");
    /* Headers cut short. */
    s_rejects(S_BYTES("\xdd\xff\xff"), "truncated array32 header at offset 0: needs 5 bytes, 3");
    s_rejects(S_BYTES("\xdb\x00"), "truncated str header");
    s_rejects(S_BYTES("\xcb\x00\x00"), "truncated float64 at offset 0: needs 9 bytes, 3 present");
}

static void test_counts_need_bytes(void **state)
{
    (void)state;
    /* An array of n needs n bytes, a map of n pairs 2n, before any element is looked at. */
    s_rejects(S_BYTES("\x93\x01\x02"),
              "declared array of 3 elements at offset 0 needs at least 3 bytes, 2 present");
    s_rejects(S_BYTES("\x82\x01\x02\x03"),
              "declared map of 2 pairs at offset 0 needs at least 4 bytes, 3 present");
    s_accepts(S_BYTES("\x93\x01\x02\x03"), MSGPACK_OBJECT_ARRAY);
    s_accepts(S_BYTES("\x82\x01\x02\x03\x04"), MSGPACK_OBJECT_MAP);
    /* Enough bytes for the count but an element runs out: found while walking. */
    s_rejects(S_BYTES("\x92\x91\x01"), "truncated: object expected at offset 3");
    s_rejects(S_BYTES("\x92\xa2"
                      "ab"),
              "object expected at offset 4");
}

static void s_nested_arrays(s_packbuf *b, int levels, bool innermost_filled)
{
    for (int i = 0; i < levels; i++)
        msgpack_pack_array(&b->pk, i == levels - 1 && !innermost_filled ? 0 : 1);
    if (innermost_filled)
        msgpack_pack_int(&b->pk, 7);
}

static void s_nested_maps(s_packbuf *b, int levels)
{
    for (int i = 0; i < levels; i++) {
        msgpack_pack_map(&b->pk, 1);
        msgpack_pack_str_with_body(&b->pk, "k", 1);
    }
    msgpack_pack_nil(&b->pk);
}

static int s_scan_pb(const s_packbuf *b, int max_depth, lh_error_t *err)
{
    uint8_t *buf = s_exact(b->sb.data, b->sb.size);
    int rc = lh_msgpack_scan(buf, b->sb.size, max_depth, err);
    free(buf);
    return rc;
}

static void test_depth_limit(void **state)
{
    (void)state;
    lh_error_t err;
    for (int filled = 0; filled <= 1; filled++) {
        s_packbuf b;
        s_pb_init(&b);
        s_nested_arrays(&b, 32, filled);
        s_accepts((const uint8_t *)b.sb.data, b.sb.size, MSGPACK_OBJECT_ARRAY);
        msgpack_sbuffer_destroy(&b.sb);

        s_pb_init(&b);
        s_nested_arrays(&b, 33, filled);
        s_rejects((const uint8_t *)b.sb.data, b.sb.size, "nesting deeper than 32 at offset 32");
        msgpack_sbuffer_destroy(&b.sb);
    }

    s_packbuf b;
    s_pb_init(&b);
    s_nested_maps(&b, 32);
    s_accepts((const uint8_t *)b.sb.data, b.sb.size, MSGPACK_OBJECT_MAP);
    msgpack_sbuffer_destroy(&b.sb);
    s_pb_init(&b);
    s_nested_maps(&b, 33);
    s_rejects((const uint8_t *)b.sb.data, b.sb.size, "nesting deeper than 32");
    msgpack_sbuffer_destroy(&b.sb);

    /* max_depth 0 allows scalars only; max_depth 1 one level of containers. */
    assert_int_equal(lh_msgpack_scan("\x05", 1, 0, &err), 0);
    assert_int_equal(lh_msgpack_scan("\x90", 1, 0, &err), -1);
    s_assert_text(&err, "nesting deeper than 0 at offset 0");
    assert_int_equal(lh_msgpack_scan("\x91\x05", 2, 1, &err), 0);
    assert_int_equal(lh_msgpack_scan("\x91\x90", 2, 1, &err), -1);
    s_assert_text(&err, "nesting deeper than 1 at offset 1");
    assert_int_equal(lh_msgpack_scan("\x81\x90\x01", 3, 1, &err), -1); /* container as map key */
    assert_int_equal(lh_msgpack_scan("\x05", 1, -1, &err), -1);
    s_assert_text(&err, "negative");

    /* A caller-chosen depth beyond the walker's per-frame stack still works exactly. */
    static const int deep[] = {1, 31, 63, 64, 65, 128, 129, 1001};
    for (size_t i = 0; i < sizeof deep / sizeof deep[0]; i++) {
        int levels = deep[i];
        for (int max_depth = levels - 1; max_depth <= levels; max_depth++) {
            s_pb_init(&b);
            s_nested_arrays(&b, levels, levels % 2);
            int rc = s_scan_pb(&b, max_depth, &err);
            assert_int_equal(rc, max_depth >= levels ? 0 : -1);
            msgpack_sbuffer_destroy(&b.sb);
        }
    }
    s_pb_init(&b);
    s_nested_arrays(&b, 1001, true);
    assert_int_equal(s_scan_pb(&b, 1000, &err), -1);
    s_assert_text(&err, "nesting deeper than 1000 at offset 1000");
    /* Siblings after a deep branch are still walked, and checked at the right depth. */
    msgpack_sbuffer_clear(&b.sb);
    msgpack_pack_array(&b.pk, 3);
    s_nested_arrays(&b, 150, true);
    s_nested_arrays(&b, 199, false);
    msgpack_pack_int(&b.pk, 1);
    assert_int_equal(s_scan_pb(&b, 200, &err), 0);
    assert_int_equal(s_scan_pb(&b, 199, &err), -1);
    s_assert_text(&err, "nesting deeper than 199 at offset 350");
    msgpack_sbuffer_clear(&b.sb);
    msgpack_pack_array(&b.pk, 3);
    s_nested_arrays(&b, 150, true);
    s_nested_arrays(&b, 10, false);
    msgpack_pack_array(&b.pk, 1); /* truncated sibling after the deep branch */
    assert_int_equal(s_scan_pb(&b, 200, &err), -1);
    s_assert_text(&err, "declared array of 1 elements at offset 162");
    msgpack_sbuffer_destroy(&b.sb);
}

static void test_reserved_c1(void **state)
{
    (void)state;
    s_rejects(S_BYTES("\xc1"), "reserved byte 0xc1 at offset 0");
    s_rejects(S_BYTES("\x92\x01\xc1"), "reserved byte 0xc1 at offset 2");
    s_rejects(S_BYTES("\x81\xc1\x01"), "reserved byte 0xc1 at offset 1");
    /* Inside a str it is just data. */
    s_accepts(S_BYTES("\xa1\xc1"), MSGPACK_OBJECT_STR);
}

static void test_trailing_and_skip(void **state)
{
    (void)state;
    lh_error_t err;
    s_rejects(S_BYTES("\x01\x02"), "trailing bytes after offset 1");
    s_rejects(S_BYTES("\x91\x01\xc0\xc0"), "trailing bytes after offset 2 (2 extra)");
    s_rejects(S_BYTES("\xc0\xc1"), "trailing bytes after offset 1");

    /* skip walks a sequence of objects and stops where each ends. */
    const uint8_t seq[] = {0x92, 0x01, 0xa1, 'x', 0xcd, 0x01, 0x00, 0x80};
    uint8_t *buf = s_exact(seq, sizeof seq);
    size_t pos = 0;
    assert_int_equal(lh_msgpack_skip(buf, sizeof seq, &pos, 1, &err), 0);
    assert_int_equal(pos, 4);
    assert_int_equal(lh_msgpack_skip(buf, sizeof seq, &pos, 1, &err), 0);
    assert_int_equal(pos, 7);
    assert_int_equal(lh_msgpack_skip(buf, sizeof seq, &pos, 1, &err), 0);
    assert_int_equal(pos, 8);
    assert_int_equal(lh_msgpack_skip(buf, sizeof seq, &pos, 1, &err), -1);
    assert_int_equal(pos, 8);
    s_assert_text(&err, "object expected at offset 8");
    pos = 9;
    assert_int_equal(lh_msgpack_skip(buf, sizeof seq, &pos, 1, &err), -1);
    assert_int_equal(pos, 9);
    s_assert_text(&err, "past the end");
    /* A failure in the middle leaves pos where it was. */
    pos = 4;
    assert_int_equal(lh_msgpack_skip(buf, 6, &pos, 1, &err), -1);
    assert_int_equal(pos, 4);
    free(buf);
}

static void test_empty_and_arguments(void **state)
{
    (void)state;
    lh_error_t err;
    assert_int_equal(lh_msgpack_scan(NULL, 0, LH_MSGPACK_MAX_DEPTH, &err), -1);
    assert_string_equal(err.text, "empty input");
    assert_int_equal(lh_msgpack_scan("", 0, LH_MSGPACK_MAX_DEPTH, &err), -1);
    assert_string_equal(err.text, "empty input");
    /* A NULL err is allowed on both paths; a success leaves err untouched. */
    assert_int_equal(lh_msgpack_scan("\xc1", 1, LH_MSGPACK_MAX_DEPTH, NULL), -1);
    assert_int_equal(lh_msgpack_scan("\xc0", 1, LH_MSGPACK_MAX_DEPTH, NULL), 0);
    strcpy(err.text, "untouched");
    assert_int_equal(lh_msgpack_scan("\xc0", 1, LH_MSGPACK_MAX_DEPTH, &err), 0);
    assert_string_equal(err.text, "untouched");
    assert_int_equal(lh_msgpack_skip((const uint8_t *)"\xc0", 1, NULL, 1, &err), -1);

    msgpack_zone zone;
    msgpack_zone_init(&zone, 256);
    msgpack_object o;
    assert_int_equal(lh_msgpack_unpack("", 0, &zone, &o, &err), -1);
    assert_string_equal(err.text, "empty input");
    assert_int_equal(lh_msgpack_unpack("\xc0", 1, NULL, &o, &err), -1);
    assert_int_equal(lh_msgpack_unpack("\xc0", 1, &zone, NULL, &err), -1);
    msgpack_zone_destroy(&zone);
}

/* A multi-level object using every kind of element; used for truncation and as a fuzz seed. */
static void s_pack_sample(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 6);
    msgpack_pack_str_with_body(pk, "topic", 5);
    msgpack_pack_str_with_body(pk, "sensors/kitchen/temperature", 27);
    msgpack_pack_str_with_body(pk, "values", 6);
    msgpack_pack_array(pk, 7);
    msgpack_pack_int8(pk, -3);
    msgpack_pack_uint16(pk, 300);
    msgpack_pack_int64(pk, INT64_MIN);
    msgpack_pack_uint64(pk, UINT64_MAX);
    msgpack_pack_float(pk, 2.5f);
    msgpack_pack_double(pk, -0.125);
    msgpack_pack_array(pk, 2);
    msgpack_pack_nil(pk);
    msgpack_pack_map(pk, 1);
    msgpack_pack_true(pk);
    msgpack_pack_false(pk);
    msgpack_pack_str_with_body(pk, "blob", 4);
    msgpack_pack_bin_with_body(pk, "\x00\x01\x02\xff", 4);
    msgpack_pack_str_with_body(pk, "ext", 3);
    msgpack_pack_ext_with_body(pk, "abcd", 4, 7);
    msgpack_pack_int(pk, 17);
    msgpack_pack_ext_with_body(pk, "xyz", 3, -1);
    msgpack_pack_str_with_body(pk, "empty", 5);
    msgpack_pack_array(pk, 2);
    msgpack_pack_map(pk, 0);
    msgpack_pack_array(pk, 0);
}

static void test_truncation_every_offset(void **state)
{
    (void)state;
    s_packbuf b;
    s_pb_init(&b);
    s_pack_sample(&b.pk);
    const uint8_t *data = (const uint8_t *)b.sb.data;
    s_accepts(data, b.sb.size, MSGPACK_OBJECT_MAP);
    s_prefixes_rejected(data, b.sb.size);
    for (size_t cut = 0; cut < b.sb.size; cut++)
        s_rejects(data, cut, cut == 0 ? "empty input" : NULL);
    msgpack_sbuffer_destroy(&b.sb);
}

/* The unpacked object lives entirely in the zone: the input can go away. */
static void test_unpack_result_in_zone(void **state)
{
    (void)state;
    s_packbuf b;
    s_pb_init(&b);
    s_pack_sample(&b.pk);
    uint8_t *input = s_exact(b.sb.data, b.sb.size);

    msgpack_zone ref_zone, zone;
    msgpack_zone_init(&ref_zone, 1024);
    msgpack_zone_init(&zone, 1024);
    msgpack_object ref, o;
    size_t off = 0;
    assert_int_equal(msgpack_unpack(b.sb.data, b.sb.size, &off, &ref_zone, &ref),
                     MSGPACK_UNPACK_SUCCESS);
    lh_error_t err;
    assert_int_equal(lh_msgpack_unpack(input, b.sb.size, &zone, &o, &err), 0);
    memset(input, 0xc1, b.sb.size);
    free(input); /* AddressSanitizer reports it if o still points here */
    assert_true(msgpack_object_equal(o, ref));
    assert_memory_equal(o.via.map.ptr[0].val.via.str.ptr, "sensors/kitchen/temperature", 27);

    msgpack_zone_destroy(&zone);
    msgpack_zone_destroy(&ref_zone);
    msgpack_sbuffer_destroy(&b.sb);
}

/* ---- generated and fuzzed input ---- */

static void s_gen(msgpack_packer *pk, int depth)
{
    static char body[70000];
    int kind = (int)s_below(depth >= 6 ? 9 : 12);
    switch (kind) {
    case 0:
        msgpack_pack_nil(pk);
        break;
    case 1:
        s_below(2) ? msgpack_pack_true(pk) : msgpack_pack_false(pk);
        break;
    case 2:
        msgpack_pack_uint64(pk, s_rand() >> s_below(64));
        break;
    case 3:
        msgpack_pack_int64(pk, -(int64_t)(s_rand() >> (1 + s_below(63))));
        break;
    case 4:
        msgpack_pack_float(pk, (float)s_below(1000) / 7.0f);
        break;
    case 5:
        msgpack_pack_double(pk, (double)s_rand() / 3.0);
        break;
    case 6: {
        static const size_t lens[] = {0, 1, 5, 31, 32, 33, 255, 256, 300, 65535, 65536};
        size_t len = s_below(8) ? s_below(40) : lens[s_below(11)];
        msgpack_pack_str_with_body(pk, body, len);
        break;
    }
    case 7:
        msgpack_pack_bin_with_body(pk, body, s_below(8) ? s_below(20) : s_below(70000));
        break;
    case 8:
        msgpack_pack_ext_with_body(pk, body, s_below(20), (int8_t)s_below(256));
        break;
    case 9:
    case 10: {
        size_t n = s_below(10) ? s_below(6) : 14 + s_below(6);
        msgpack_pack_array(pk, n);
        for (size_t i = 0; i < n; i++)
            s_gen(pk, depth + 1);
        break;
    }
    default: {
        size_t n = s_below(10) ? s_below(5) : 14 + s_below(4);
        msgpack_pack_map(pk, n);
        for (size_t i = 0; i < 2 * n; i++)
            s_gen(pk, depth + 1);
        break;
    }
    }
}

static void test_generated_objects(void **state)
{
    (void)state;
    s_rng_state = 0x9e3779b97f4a7c15ULL;
    msgpack_zone zone, ref_zone;
    msgpack_zone_init(&zone, 4096);
    msgpack_zone_init(&ref_zone, 4096);
    for (int i = 0; i < 3000; i++) {
        s_packbuf b;
        s_pb_init(&b);
        s_gen(&b.pk, 0);
        uint8_t *buf = s_exact(b.sb.data, b.sb.size);
        lh_error_t err;
        if (lh_msgpack_scan(buf, b.sb.size, LH_MSGPACK_MAX_DEPTH, &err) != 0)
            fail_msg("generated object %d refused: %s", i, err.text);
        msgpack_object o, ref;
        size_t off = 0;
        assert_int_equal(msgpack_unpack(b.sb.data, b.sb.size, &off, &ref_zone, &ref),
                         MSGPACK_UNPACK_SUCCESS);
        assert_int_equal(lh_msgpack_unpack(buf, b.sb.size, &zone, &o, &err), 0);
        assert_true(msgpack_object_equal(o, ref));
        free(buf);
        msgpack_sbuffer_destroy(&b.sb);
        msgpack_zone_clear(&zone);
        msgpack_zone_clear(&ref_zone);
    }
    msgpack_zone_destroy(&zone);
    msgpack_zone_destroy(&ref_zone);
}

/* Bytes that start interesting objects, to make random buffers hit every branch. */
static uint8_t s_interesting_byte(void)
{
    static const uint8_t bytes[] = {
        0x00, 0x7f, 0x80, 0x81, 0x8f, 0x90, 0x91, 0x9f, 0xa0, 0xa5, 0xbf, 0xc0,
        0xc1, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xcb, 0xcc,
        0xcd, 0xce, 0xcf, 0xd0, 0xd1, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8,
        0xd9, 0xda, 0xdb, 0xdc, 0xdd, 0xde, 0xdf, 0xe0, 0xff, 0x01, 0x02, 0x03,
    };
    return bytes[s_below(sizeof bytes)];
}

static void test_fuzz(void **state)
{
    (void)state;
    enum { ITERATIONS = 200000, MAX_LEN = 4096, SEEDS = 64 };
    s_rng_state = 0x2545F4914F6CDD1DULL;

    /* Seed corpus: the sample object plus small generated ones. */
    s_packbuf seeds[SEEDS];
    for (int i = 0; i < SEEDS; i++) {
        s_pb_init(&seeds[i]);
        if (i == 0) {
            s_pack_sample(&seeds[i].pk);
            continue;
        }
        do {
            msgpack_sbuffer_clear(&seeds[i].sb);
            s_gen(&seeds[i].pk, 2);
        } while (seeds[i].sb.size > 512);
    }

    uint8_t *work = malloc(MAX_LEN);
    assert_non_null(work);
    msgpack_zone zone;
    msgpack_zone_init(&zone, 4096);
    long accepted = 0, skipped_prefix = 0;
    for (int it = 0; it < ITERATIONS; it++) {
        size_t len;
        if (it % 4 == 0) { /* random bytes, biased toward type bytes */
            len = s_below(40);
            for (size_t i = 0; i < len; i++)
                work[i] = s_below(2) ? s_interesting_byte() : (uint8_t)s_rand();
        } else { /* a mutated seed */
            const s_packbuf *seed = &seeds[s_below(SEEDS)];
            len = seed->sb.size;
            memcpy(work, seed->sb.data, len);
            int edits = 1 + (int)s_below(4);
            for (int e = 0; e < edits && len > 0; e++) {
                size_t at = s_below(len);
                switch (s_below(5)) {
                case 0:
                    work[at] ^= (uint8_t)(1u << s_below(8));
                    break;
                case 1:
                    work[at] = s_interesting_byte();
                    break;
                case 2:
                    work[at] = (uint8_t)s_rand();
                    break;
                case 3:
                    len = at;
                    break; /* truncate */
                default:   /* insert a byte */
                    if (len < MAX_LEN) {
                        memmove(work + at + 1, work + at, len - at);
                        work[at] = s_interesting_byte();
                        len++;
                    }
                    break;
                }
            }
        }

        uint8_t *buf = s_exact(work, len);
        lh_error_t err = {{0}};
        if (lh_msgpack_scan(buf, len, LH_MSGPACK_MAX_DEPTH, &err) == 0) {
            /* Accepted bytes are safe for msgpack-c and mean exactly the same object. */
            size_t off = 0;
            msgpack_object o;
            assert_int_equal(msgpack_unpack((const char *)buf, len, &off, &zone, &o),
                             MSGPACK_UNPACK_SUCCESS);
            assert_int_equal(off, len);
            accepted++;
        } else {
            assert_true(err.text[0] != '\0');
            size_t pos = 0;
            if (len > 0 && lh_msgpack_skip(buf, len, &pos, LH_MSGPACK_MAX_DEPTH, &err) == 0) {
                /* A valid object followed by junk: msgpack-c must agree where it ends. */
                size_t off = 0;
                msgpack_object o;
                assert_int_equal(msgpack_unpack((const char *)buf, len, &off, &zone, &o),
                                 MSGPACK_UNPACK_EXTRA_BYTES);
                assert_int_equal(off, pos);
                skipped_prefix++;
            } else {
                assert_int_equal(pos, 0);
            }
        }
        msgpack_zone_clear(&zone);
        free(buf);
    }
    /* Keep the loop honest: both outcomes must be common. */
    assert_true(accepted > ITERATIONS / 20);
    assert_true(skipped_prefix > ITERATIONS / 100);
    assert_true(accepted < ITERATIONS);

    msgpack_zone_destroy(&zone);
    free(work);
    for (int i = 0; i < SEEDS; i++)
        msgpack_sbuffer_destroy(&seeds[i].sb);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_format),
        cmocka_unit_test(test_unpacked_values),
        cmocka_unit_test(test_str_bin_boundaries),
        cmocka_unit_test(test_ext_boundaries),
        cmocka_unit_test(test_container_boundaries),
        cmocka_unit_test(test_hostile_declared_sizes),
        cmocka_unit_test(test_counts_need_bytes),
        cmocka_unit_test(test_depth_limit),
        cmocka_unit_test(test_reserved_c1),
        cmocka_unit_test(test_trailing_and_skip),
        cmocka_unit_test(test_empty_and_arguments),
        cmocka_unit_test(test_truncation_every_offset),
        cmocka_unit_test(test_unpack_result_in_zone),
        cmocka_unit_test(test_generated_objects),
        cmocka_unit_test(test_fuzz),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
