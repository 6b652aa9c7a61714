/* Unit tests for the msgpack <-> JSON rules and lh_json_parse (core/json_codec.c). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include "livehub/codec.h"

typedef struct {
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_zone zone;
} s_fixture;

static int s_setup(void **state)
{
    s_fixture *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    msgpack_sbuffer_init(&f->sb);
    msgpack_packer_init(&f->pk, &f->sb, msgpack_sbuffer_write);
    msgpack_zone_init(&f->zone, 4096);
    *state = f;
    return 0;
}

static int s_teardown(void **state)
{
    s_fixture *f = *state;
    msgpack_sbuffer_destroy(&f->sb);
    msgpack_zone_destroy(&f->zone);
    free(f);
    return 0;
}

static void s_assert_text(const lh_error_t *err, const char *want)
{
    if (!strstr(err->text, want))
        fail_msg("error text \"%s\" lacks \"%s\"", err->text, want);
}

/* Converts what has been packed into f->sb (via the safe unpacker), then resets the buffer. */
static json_t *s_convert(s_fixture *f, lh_error_t *err)
{
    msgpack_object o;
    lh_error_t scan_err;
    if (lh_msgpack_unpack(f->sb.data, f->sb.size, &f->zone, &o, &scan_err) != 0)
        fail_msg("test bytes did not unpack: %s", scan_err.text);
    msgpack_sbuffer_clear(&f->sb);
    return lh_msgpack_to_json(&o, err);
}

/* Like s_convert but expects failure with `want` in the reason. */
static void s_convert_fails(s_fixture *f, const char *want)
{
    lh_error_t err = {{0}};
    json_t *json = s_convert(f, &err);
    if (json) {
        char *text = json_dumps(json, JSON_ENCODE_ANY);
        fail_msg("conversion succeeded with %s, expected \"%s\"", text, want);
    }
    s_assert_text(&err, want);
}

/* Converts and compares against JSON text (compared as values, not as text). */
static void s_convert_equals(s_fixture *f, const char *expected)
{
    lh_error_t err = {{0}};
    json_t *json = s_convert(f, &err);
    if (!json)
        fail_msg("conversion failed: %s", err.text);
    json_t *want = json_loads(expected, JSON_DECODE_ANY, NULL);
    assert_non_null(want);
    if (!json_equal(json, want)) {
        char *got = json_dumps(json, JSON_ENCODE_ANY);
        fail_msg("got %s, expected %s", got, expected);
    }
    /* json_equal treats 1 and 1.0 as different types, so this also pins integer vs real. */
    json_decref(want);
    json_decref(json);
}

static void s_pack_str(msgpack_packer *pk, const char *s)
{
    msgpack_pack_str_with_body(pk, s, strlen(s));
}

/* ---- msgpack -> JSON ---- */

static void test_nil_bool_integers(void **state)
{
    s_fixture *f = *state;
    msgpack_pack_nil(&f->pk);
    s_convert_equals(f, "null");
    msgpack_pack_true(&f->pk);
    s_convert_equals(f, "true");
    msgpack_pack_false(&f->pk);
    s_convert_equals(f, "false");
    msgpack_pack_int(&f->pk, 0);
    s_convert_equals(f, "0");
    msgpack_pack_int(&f->pk, -1);
    s_convert_equals(f, "-1");
    msgpack_pack_uint8(&f->pk, 200);
    s_convert_equals(f, "200");

    lh_error_t err;
    msgpack_pack_int64(&f->pk, INT64_MIN);
    json_t *j = s_convert(f, &err);
    assert_true(json_is_integer(j));
    assert_true(json_integer_value(j) == INT64_MIN);
    json_decref(j);
    msgpack_pack_int64(&f->pk, INT64_MAX);
    j = s_convert(f, &err);
    assert_true(json_is_integer(j));
    assert_true(json_integer_value(j) == INT64_MAX);
    json_decref(j);
    msgpack_pack_uint64(&f->pk, (uint64_t)INT64_MAX); /* still fits: integer */
    j = s_convert(f, &err);
    assert_true(json_is_integer(j));
    assert_true(json_integer_value(j) == INT64_MAX);
    json_decref(j);

    /* Above INT64_MAX: decimal string, losslessly. */
    msgpack_pack_uint64(&f->pk, (uint64_t)INT64_MAX + 1);
    s_convert_equals(f, "\"9223372036854775808\"");
    msgpack_pack_uint64(&f->pk, UINT64_MAX);
    s_convert_equals(f, "\"18446744073709551615\"");

    /* A non-negative value in a signed encoding is still just an integer. */
    static const char d3_five[] = "\xd3\x00\x00\x00\x00\x00\x00\x00\x05";
    msgpack_sbuffer_write(&f->sb, d3_five, sizeof d3_five - 1);
    s_convert_equals(f, "5");
}

static void test_floats(void **state)
{
    s_fixture *f = *state;
    msgpack_pack_float(&f->pk, 1.5f);
    s_convert_equals(f, "1.5");
    msgpack_pack_double(&f->pk, -0.125);
    s_convert_equals(f, "-0.125");
    msgpack_pack_double(&f->pk, 3.0); /* stays a real, not an integer */
    s_convert_equals(f, "3.0");
    msgpack_pack_double(&f->pk, 1e300);
    s_convert_equals(f, "1e300");

    const double bad[] = {NAN, INFINITY, -INFINITY};
    for (size_t i = 0; i < 3; i++) {
        msgpack_pack_double(&f->pk, bad[i]);
        s_convert_equals(f, "null");
        msgpack_pack_float(&f->pk, (float)bad[i]);
        s_convert_equals(f, "null");
    }
    msgpack_pack_array(&f->pk, 2);
    msgpack_pack_double(&f->pk, NAN);
    msgpack_pack_double(&f->pk, 2.0);
    s_convert_equals(f, "[null, 2.0]");
}

static void test_str_utf8(void **state)
{
    s_fixture *f = *state;
    static const char *valid[] = {
        "",
        "plain ascii",
        "h\xc3\xa9llo",
        "\xe2\x82\xac",
        "\xf0\x9f\x98\x80",
        "\xc2\x80",
        "\xdf\xbf",
        "\xe0\xa0\x80",
        "\xed\x9f\xbf",
        "\xee\x80\x80",
        "\xef\xbf\xbf",
        "\xf0\x90\x80\x80",
        "\xf4\x8f\xbf\xbf",
        "\x7f",
    };
    for (size_t i = 0; i < sizeof valid / sizeof valid[0]; i++) {
        s_pack_str(&f->pk, valid[i]);
        lh_error_t err;
        json_t *j = s_convert(f, &err);
        if (!j)
            fail_msg("valid str %zu refused: %s", i, err.text);
        assert_int_equal(json_string_length(j), strlen(valid[i]));
        assert_memory_equal(json_string_value(j), valid[i], strlen(valid[i]));
        json_decref(j);
    }

    static const struct {
        const char *bytes;
        size_t len;
        const char *want;
    } invalid[] = {
        {"\xff", 1, "str is not valid UTF-8 at byte 0"},
        {"ab\x80", 3, "str is not valid UTF-8 at byte 2"},
        {"\xc0\x80", 2, "not valid UTF-8 at byte 0"}, /* overlong NUL */
        {"\xc1\xbf", 2, "not valid UTF-8"},           /* overlong */
        {"\xe0\x9f\xbf", 3, "not valid UTF-8"},       /* overlong */
        {"\xf0\x8f\xbf\xbf", 4, "not valid UTF-8"},   /* overlong */
        {"\xed\xa0\x80", 3, "not valid UTF-8"},       /* high surrogate */
        {"\xed\xbf\xbf", 3, "not valid UTF-8"},       /* low surrogate */
        {"\xf4\x90\x80\x80", 4, "not valid UTF-8"},   /* above U+10FFFF */
        {"\xf5\x80\x80\x80", 4, "not valid UTF-8"},
        {"x\xe2\x82", 3, "not valid UTF-8 at byte 1"}, /* cut short */
        {"\xe2\x28\xa1", 3, "not valid UTF-8"},        /* bad continuation */
        {"\xf0\x9f\x98", 3, "not valid UTF-8"},
        {"a\0b", 3, "str contains a NUL byte at byte 1"},
        {"\0", 1, "NUL byte at byte 0"},
    };
    for (size_t i = 0; i < sizeof invalid / sizeof invalid[0]; i++) {
        msgpack_pack_str_with_body(&f->pk, invalid[i].bytes, invalid[i].len);
        s_convert_fails(f, invalid[i].want);
    }
    /* An invalid str deep inside a container fails the whole conversion without leaking. */
    msgpack_pack_array(&f->pk, 2);
    s_pack_str(&f->pk, "fine");
    msgpack_pack_map(&f->pk, 1);
    s_pack_str(&f->pk, "k");
    msgpack_pack_str_with_body(&f->pk, "\xed\xa0\x80", 3);
    s_convert_fails(f, "str is not valid UTF-8");
}

/* The validator agrees with jansson's own UTF-8 check (which allows NUL) on random bytes. */
static void test_utf8_matches_jansson(void **state)
{
    s_fixture *f = *state;
    uint64_t x = 88172645463325252ULL;
    static const uint8_t pool[] = {0x00, 0x41, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf,
                                   0xc0, 0xc1, 0xc2, 0xdf, 0xe0, 0xe1, 0xec, 0xed, 0xee,
                                   0xef, 0xf0, 0xf1, 0xf3, 0xf4, 0xf5, 0xff};
    int valid_seen = 0;
    for (int i = 0; i < 50000; i++) {
        uint8_t s[6];
        size_t len = 1 + i % 6;
        for (size_t k = 0; k < len; k++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            s[k] = pool[x % sizeof pool];
        }
        json_t *ref = json_stringn((const char *)s, len);
        bool expect = ref && !memchr(s, 0, len);
        json_decref(ref);

        msgpack_pack_str_with_body(&f->pk, s, len);
        lh_error_t err;
        json_t *j = s_convert(f, &err);
        if ((j != NULL) != expect)
            fail_msg("case %d (len %zu, first byte 0x%02x): validator says %d, jansson %d", i, len,
                     s[0], j != NULL, expect);
        valid_seen += expect;
        json_decref(j);
        msgpack_zone_clear(&f->zone);
    }
    assert_true(valid_seen > 1000);
}

static void test_bin_base64(void **state)
{
    s_fixture *f = *state;
    static const struct {
        const char *in;
        size_t len;
        const char *out;
    } vectors[] = {
        /* RFC 4648 section 10 */
        {"", 0, ""},
        {"f", 1, "Zg=="},
        {"fo", 2, "Zm8="},
        {"foo", 3, "Zm9v"},
        {"foob", 4, "Zm9vYg=="},
        {"fooba", 5, "Zm9vYmE="},
        {"foobar", 6, "Zm9vYmFy"},
        /* the two non-alphanumeric digits and zero bytes */
        {"\xfb\xff", 2, "+/8="},
        {"\x00\x00\x00", 3, "AAAA"},
        {"\xff\xff\xff", 3, "////"},
        {"\x00\x10\x83\x10\x51\x87\x20\x92\x8b\x30\xd3\x8f\x41\x14\x93\x51\x55\x97"
         "\x61\x96\x9b\x71\xd7\x9f\x82\x18\xa3\x92\x59\xa7\xa2\x9a\xab\xb2\xdb\xaf"
         "\xc3\x1c\xb3\xd3\x5d\xb7\xe3\x9e\xbb\xf3\xdf\xbf",
         48, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"},
    };
    for (size_t i = 0; i < sizeof vectors / sizeof vectors[0]; i++) {
        msgpack_pack_bin_with_body(&f->pk, vectors[i].in, vectors[i].len);
        lh_error_t err;
        json_t *j = s_convert(f, &err);
        assert_non_null(j);
        assert_true(json_is_string(j));
        assert_string_equal(json_string_value(j), vectors[i].out);
        json_decref(j);
    }
    /* A large bin: length is exact and padding right. */
    static uint8_t big[100000]; /* one byte over a multiple of three */
    msgpack_pack_bin_with_body(&f->pk, big, sizeof big);
    lh_error_t err;
    json_t *j = s_convert(f, &err);
    assert_non_null(j);
    assert_int_equal(json_string_length(j), (sizeof big + 2) / 3 * 4);
    assert_string_equal(json_string_value(j) + json_string_length(j) - 4, "AA==");
    json_decref(j);
}

static void test_ext_refused(void **state)
{
    s_fixture *f = *state;
    msgpack_pack_ext_with_body(&f->pk, "abcd", 4, 5);
    s_convert_fails(f, "ext type 5 not convertible");
    msgpack_pack_ext_with_body(&f->pk, "", 0, -1);
    s_convert_fails(f, "ext type -1 not convertible");
    msgpack_pack_map(&f->pk, 2);
    s_pack_str(&f->pk, "ok");
    msgpack_pack_int(&f->pk, 1);
    s_pack_str(&f->pk, "when");
    msgpack_pack_ext_with_body(&f->pk, "\x00\x00\x00\x01", 4, -1); /* a timestamp */
    s_convert_fails(f, "ext type -1 not convertible");
}

static void test_containers(void **state)
{
    s_fixture *f = *state;
    msgpack_pack_array(&f->pk, 0);
    s_convert_equals(f, "[]");
    msgpack_pack_map(&f->pk, 0);
    s_convert_equals(f, "{}");
    msgpack_pack_array(&f->pk, 4);
    msgpack_pack_int(&f->pk, 1);
    s_pack_str(&f->pk, "a");
    msgpack_pack_nil(&f->pk);
    msgpack_pack_array(&f->pk, 1);
    msgpack_pack_map(&f->pk, 0);
    s_convert_equals(f, "[1, \"a\", null, [{}]]");

    /* Map order is kept. */
    msgpack_pack_map(&f->pk, 3);
    s_pack_str(&f->pk, "zeta");
    msgpack_pack_int(&f->pk, 1);
    s_pack_str(&f->pk, "alpha");
    msgpack_pack_array(&f->pk, 1);
    msgpack_pack_true(&f->pk);
    s_pack_str(&f->pk, "mid");
    msgpack_pack_map(&f->pk, 1);
    s_pack_str(&f->pk, "x");
    msgpack_pack_nil(&f->pk);
    lh_error_t err;
    json_t *j = s_convert(f, &err);
    assert_non_null(j);
    char *text = json_dumps(j, JSON_COMPACT);
    assert_string_equal(text, "{\"zeta\":1,\"alpha\":[true],\"mid\":{\"x\":null}}");
    free(text);
    json_decref(j);
}

static void test_map_keys(void **state)
{
    s_fixture *f = *state;
    msgpack_pack_map(&f->pk, 6);
    msgpack_pack_int(&f->pk, 1);
    s_pack_str(&f->pk, "one");
    msgpack_pack_int(&f->pk, -5);
    s_pack_str(&f->pk, "minus five");
    msgpack_pack_uint64(&f->pk, UINT64_MAX);
    msgpack_pack_nil(&f->pk);
    msgpack_pack_int64(&f->pk, INT64_MIN);
    msgpack_pack_nil(&f->pk);
    s_pack_str(&f->pk, "h\xc3\xa9");
    msgpack_pack_true(&f->pk);
    s_pack_str(&f->pk, "");
    msgpack_pack_int(&f->pk, 0);
    s_convert_equals(f, "{\"1\": \"one\", \"-5\": \"minus five\", \"18446744073709551615\": null,"
                        " \"-9223372036854775808\": null, \"h\xc3\xa9\": true, \"\": 0}");

    /* Keys of any other type are refused. */
    for (int kind = 0; kind < 7; kind++) {
        msgpack_pack_map(&f->pk, 1);
        switch (kind) {
        case 0:
            msgpack_pack_nil(&f->pk);
            break;
        case 1:
            msgpack_pack_true(&f->pk);
            break;
        case 2:
            msgpack_pack_double(&f->pk, 1.0);
            break;
        case 3:
            msgpack_pack_array(&f->pk, 0);
            break;
        case 4:
            msgpack_pack_map(&f->pk, 0);
            break;
        case 5:
            msgpack_pack_bin_with_body(&f->pk, "k", 1);
            break;
        default:
            msgpack_pack_ext_with_body(&f->pk, "k", 1, 1);
            break;
        }
        msgpack_pack_int(&f->pk, 0);
        s_convert_fails(f, "is neither str nor integer");
    }
    msgpack_pack_map(&f->pk, 1);
    msgpack_pack_str_with_body(&f->pk, "\xc3", 1);
    msgpack_pack_int(&f->pk, 0);
    s_convert_fails(f, "map key is not valid UTF-8 at byte 0");
    msgpack_pack_map(&f->pk, 1);
    msgpack_pack_str_with_body(&f->pk, "a\0", 2);
    msgpack_pack_int(&f->pk, 0);
    s_convert_fails(f, "map key contains a NUL byte at byte 1");
}

static void test_duplicate_keys(void **state)
{
    s_fixture *f = *state;
    msgpack_pack_map(&f->pk, 2);
    s_pack_str(&f->pk, "a");
    msgpack_pack_int(&f->pk, 1);
    s_pack_str(&f->pk, "a");
    msgpack_pack_int(&f->pk, 2);
    s_convert_fails(f, "duplicate map key \"a\"");

    /* A str key and an integer key that spell the same name collide too. */
    msgpack_pack_map(&f->pk, 2);
    s_pack_str(&f->pk, "7");
    msgpack_pack_int(&f->pk, 1);
    msgpack_pack_int(&f->pk, 7);
    msgpack_pack_int(&f->pk, 2);
    s_convert_fails(f, "duplicate map key \"7\"");
    msgpack_pack_map(&f->pk, 2);
    msgpack_pack_int(&f->pk, -3);
    msgpack_pack_nil(&f->pk);
    msgpack_pack_int64(&f->pk, -3);
    msgpack_pack_nil(&f->pk);
    s_convert_fails(f, "duplicate map key \"-3\"");

    /* Only within one map: the same key in sibling maps is fine. */
    msgpack_pack_array(&f->pk, 2);
    msgpack_pack_map(&f->pk, 1);
    s_pack_str(&f->pk, "a");
    msgpack_pack_int(&f->pk, 1);
    msgpack_pack_map(&f->pk, 1);
    s_pack_str(&f->pk, "a");
    msgpack_pack_int(&f->pk, 2);
    s_convert_equals(f, "[{\"a\": 1}, {\"a\": 2}]");

    /* A long key is shortened in the message. */
    char key[200];
    memset(key, 'k', sizeof key);
    msgpack_pack_map(&f->pk, 2);
    msgpack_pack_str_with_body(&f->pk, key, sizeof key);
    msgpack_pack_nil(&f->pk);
    msgpack_pack_str_with_body(&f->pk, key, sizeof key);
    msgpack_pack_nil(&f->pk);
    s_convert_fails(f, "kkkk\" (first 64 of 200 bytes)");
}

/* Builds `levels` nested containers by hand (bypassing the scanner's own limit). */
static void s_chain(msgpack_object *nodes, msgpack_object_kv *kvs, int levels, bool maps)
{
    for (int i = 0; i < levels; i++) {
        if (maps) {
            nodes[i].type = MSGPACK_OBJECT_MAP;
            nodes[i].via.map.size = 1;
            nodes[i].via.map.ptr = &kvs[i];
            kvs[i].key.type = MSGPACK_OBJECT_STR;
            kvs[i].key.via.str.ptr = "k";
            kvs[i].key.via.str.size = 1;
        } else {
            nodes[i].type = MSGPACK_OBJECT_ARRAY;
            nodes[i].via.array.size = 1;
            nodes[i].via.array.ptr = &nodes[i + 1];
        }
    }
    nodes[levels].type = MSGPACK_OBJECT_NIL;
    if (maps) /* kv values are copies, so link from the innermost level outwards */
        for (int i = levels - 1; i >= 0; i--)
            kvs[i].val = nodes[i + 1];
}

static void test_depth_to_json(void **state)
{
    (void)state;
    msgpack_object nodes[40];
    msgpack_object_kv kvs[40];
    for (int maps = 0; maps <= 1; maps++) {
        lh_error_t err;
        s_chain(nodes, kvs, 32, maps);
        json_t *j = lh_msgpack_to_json(&nodes[0], &err);
        if (!j)
            fail_msg("32 levels refused: %s", err.text);
        json_decref(j);
        s_chain(nodes, kvs, 33, maps);
        assert_null(lh_msgpack_to_json(&nodes[0], &err));
        assert_string_equal(err.text, "nesting deeper than 32");
        s_chain(nodes, kvs, 39, maps);
        assert_null(lh_msgpack_to_json(&nodes[0], &err));
        assert_string_equal(err.text, "nesting deeper than 32");
    }
    /* An empty container at depth 32 is too deep as well, as in the scanner. */
    s_chain(nodes, kvs, 32, false);
    nodes[32].type = MSGPACK_OBJECT_ARRAY;
    nodes[32].via.array.size = 0;
    nodes[32].via.array.ptr = NULL;
    lh_error_t err;
    assert_null(lh_msgpack_to_json(&nodes[0], &err));
    assert_string_equal(err.text, "nesting deeper than 32");
}

static void test_to_json_arguments(void **state)
{
    s_fixture *f = *state;
    lh_error_t err;
    assert_null(lh_msgpack_to_json(NULL, &err));
    s_assert_text(&err, "invalid");
    /* NULL err is fine; success leaves err alone. */
    msgpack_pack_ext_with_body(&f->pk, "", 0, 1);
    assert_null(s_convert(f, NULL));
    strcpy(err.text, "untouched");
    msgpack_pack_nil(&f->pk);
    json_t *j = s_convert(f, &err);
    assert_non_null(j);
    assert_string_equal(err.text, "untouched");
    json_decref(j);
}

/* ---- JSON -> msgpack ---- */

static void s_assert_packs_to(s_fixture *f, json_t *json, const char *bytes, size_t len)
{
    lh_error_t err;
    msgpack_sbuffer_clear(&f->sb);
    if (lh_json_to_msgpack(json, &f->pk, &err) != 0)
        fail_msg("packing failed: %s", err.text);
    assert_int_equal(f->sb.size, len);
    assert_memory_equal(f->sb.data, bytes, len);
    msgpack_sbuffer_clear(&f->sb);
    json_decref(json);
}

#define S_PACKS_TO(f, json, lit) s_assert_packs_to(f, json, lit, sizeof(lit) - 1)

static void test_json_to_msgpack_types(void **state)
{
    s_fixture *f = *state;
    S_PACKS_TO(f, json_null(), "\xc0");
    S_PACKS_TO(f, json_true(), "\xc3");
    S_PACKS_TO(f, json_false(), "\xc2");
    S_PACKS_TO(f, json_integer(0), "\x00");
    S_PACKS_TO(f, json_integer(-1), "\xff");
    S_PACKS_TO(f, json_integer(300), "\xcd\x01\x2c");
    S_PACKS_TO(f, json_integer(INT64_MIN), "\xd3\x80\x00\x00\x00\x00\x00\x00\x00");
    S_PACKS_TO(f, json_integer(INT64_MAX), "\xcf\x7f\xff\xff\xff\xff\xff\xff\xff");
    S_PACKS_TO(f, json_real(1.5), "\xcb\x3f\xf8\x00\x00\x00\x00\x00\x00");
    S_PACKS_TO(f, json_real(2.0), "\xcb\x40\x00\x00\x00\x00\x00\x00\x00"); /* stays float64 */
    S_PACKS_TO(f, json_string("hi"), "\xa2hi");
    S_PACKS_TO(f, json_stringn("a\0b", 3),
               "\xa3"
               "a\0b"); /* length, not strlen */
    S_PACKS_TO(f, json_array(), "\x90");
    S_PACKS_TO(f, json_object(), "\x80");
    S_PACKS_TO(f, json_pack("[i,s,n]", 1, "x"), "\x93\x01\xa1x\xc0");

    /* Object keys in insertion order, as str. */
    json_t *obj = json_object();
    json_object_set_new(obj, "b", json_integer(1));
    json_object_set_new(obj, "a", json_integer(2));
    json_object_setn_new(obj, "n\0l", 3, json_true());
    S_PACKS_TO(f, obj,
               "\x83\xa1"
               "b\x01\xa1"
               "a\x02\xa3n\0l\xc3");

    /* A long string takes the str16 form. */
    char text[300];
    memset(text, 'q', sizeof text);
    json_t *s = json_stringn(text, sizeof text);
    lh_error_t err;
    assert_int_equal(lh_json_to_msgpack(s, &f->pk, &err), 0);
    assert_int_equal(f->sb.size, 3 + sizeof text);
    assert_memory_equal(f->sb.data, "\xda\x01\x2c", 3);
    msgpack_sbuffer_clear(&f->sb);
    json_decref(s);

    assert_int_equal(lh_json_to_msgpack(NULL, &f->pk, &err), -1);
    assert_int_equal(lh_json_to_msgpack(json_null(), NULL, &err), -1);
}

static json_t *s_nested_json(int levels, bool objects)
{
    json_t *inner = json_integer(1);
    for (int i = 0; i < levels; i++) {
        json_t *outer = objects ? json_object() : json_array();
        if (objects)
            json_object_set_new(outer, "k", inner);
        else
            json_array_append_new(outer, inner);
        inner = outer;
    }
    return inner;
}

static void test_json_to_msgpack_depth(void **state)
{
    s_fixture *f = *state;
    for (int objects = 0; objects <= 1; objects++) {
        lh_error_t err;
        json_t *ok = s_nested_json(32, objects);
        if (lh_json_to_msgpack(ok, &f->pk, &err) != 0)
            fail_msg("32 levels refused: %s", err.text);
        /* The result is itself acceptable to the scanner. */
        assert_int_equal(lh_msgpack_scan(f->sb.data, f->sb.size, LH_MSGPACK_MAX_DEPTH, &err), 0);
        msgpack_sbuffer_clear(&f->sb);
        json_decref(ok);

        json_t *deep = s_nested_json(33, objects);
        assert_int_equal(lh_json_to_msgpack(deep, &f->pk, &err), -1);
        assert_string_equal(err.text, "nesting deeper than 32");
        msgpack_sbuffer_clear(&f->sb);
        json_decref(deep);
    }
}

/* A packer whose writes always fail. */
static int s_failing_write(void *data, const char *buf, size_t len)
{
    (void)data, (void)buf, (void)len;
    return -1;
}

static void test_json_to_msgpack_write_error(void **state)
{
    (void)state;
    msgpack_packer pk;
    msgpack_packer_init(&pk, NULL, s_failing_write);
    lh_error_t err;
    json_t *j = json_pack("{s:[i,i]}", "a", 1, 2);
    assert_int_equal(lh_json_to_msgpack(j, &pk, &err), -1);
    s_assert_text(&err, "write failed");
    json_decref(j);
}

/* ---- round trips ---- */

static const char s_document[] =
    "{\n"
    "  \"topic\": \"sensors/kitchen/temperature\",\n"
    "  \"ts\": 1732570000123,\n"
    "  \"value\": 21.5,\n"
    "  \"neg\": -0.001,\n"
    "  \"big\": 9223372036854775807,\n"
    "  \"small\": -9223372036854775808,\n"
    "  \"ok\": true, \"bad\": false, \"none\": null,\n"
    "  \"text\": \"h\\u00e9llo \\u20ac \\ud83d\\ude00 \\\"quoted\\\" [not] {nested}\",\n"
    "  \"tags\": [\"a\", \"bb\", 3, [], {}, [[[1, 2.25, [\"deep\"]]]]],\n"
    "  \"meta\": {\"src\": \"dev-17\", \"seq\": 4711, \"inner\": {\"z\": [null, {\"y\": 0}]}}\n"
    "}";

static void test_round_trip_json(void **state)
{
    s_fixture *f = *state;
    lh_error_t err;
    json_t *doc = lh_json_parse(s_document, sizeof s_document - 1, &err);
    if (!doc)
        fail_msg("document refused: %s", err.text);
    assert_int_equal(lh_json_to_msgpack(doc, &f->pk, &err), 0);
    json_t *back = s_convert(f, &err);
    if (!back)
        fail_msg("conversion back failed: %s", err.text);
    assert_true(json_equal(doc, back));
    /* And the key order survives both directions. */
    char *a = json_dumps(doc, JSON_COMPACT), *b = json_dumps(back, JSON_COMPACT);
    assert_string_equal(a, b);
    free(a);
    free(b);
    json_decref(back);
    json_decref(doc);
}

static void test_round_trip_msgpack(void **state)
{
    s_fixture *f = *state;
    /* msgpack that JSON can carry exactly: str keys, int64 range, float64. */
    msgpack_pack_map(&f->pk, 4);
    s_pack_str(&f->pk, "ints");
    msgpack_pack_array(&f->pk, 5);
    msgpack_pack_int64(&f->pk, INT64_MIN);
    msgpack_pack_int64(&f->pk, -1);
    msgpack_pack_uint64(&f->pk, 0);
    msgpack_pack_uint32(&f->pk, 70000);
    msgpack_pack_int64(&f->pk, INT64_MAX);
    s_pack_str(&f->pk, "real");
    msgpack_pack_double(&f->pk, 6.02214076e23);
    s_pack_str(&f->pk, "s");
    s_pack_str(&f->pk, "\xe2\x82\xac");
    s_pack_str(&f->pk, "m");
    msgpack_pack_map(&f->pk, 1);
    s_pack_str(&f->pk, "x");
    msgpack_pack_array(&f->pk, 0);

    msgpack_object original;
    lh_error_t err;
    assert_int_equal(lh_msgpack_unpack(f->sb.data, f->sb.size, &f->zone, &original, &err), 0);
    msgpack_sbuffer_clear(&f->sb);
    json_t *j = lh_msgpack_to_json(&original, &err);
    assert_non_null(j);
    assert_int_equal(lh_json_to_msgpack(j, &f->pk, &err), 0);
    msgpack_object again;
    assert_int_equal(lh_msgpack_unpack(f->sb.data, f->sb.size, &f->zone, &again, &err), 0);
    assert_true(msgpack_object_equal(original, again));
    json_decref(j);
}

/* ---- lh_json_parse ---- */

static void s_parse_ok(const char *text, const char *expected)
{
    lh_error_t err;
    json_t *j = lh_json_parse(text, strlen(text), &err);
    if (!j)
        fail_msg("'%s' refused: %s", text, err.text);
    json_t *want = json_loads(expected, JSON_DECODE_ANY, NULL);
    assert_non_null(want);
    assert_true(json_equal(j, want));
    json_decref(want);
    json_decref(j);
}

static void s_parse_fails(const char *text, size_t size, const char *want)
{
    lh_error_t err = {{0}};
    json_t *j = lh_json_parse(text, size, &err);
    if (j)
        fail_msg("'%.*s' accepted", (int)size, text);
    s_assert_text(&err, want);
    assert_true(strncmp(err.text, "line ", 5) == 0);
}

static void test_parse_any_value(void **state)
{
    (void)state;
    s_parse_ok("\"x\"", "\"x\"");
    s_parse_ok("3", "3");
    s_parse_ok("-2.5", "-2.5");
    s_parse_ok("null", "null");
    s_parse_ok("true", "true");
    s_parse_ok("  [1, 2]  \n", "[1, 2]");
    s_parse_ok("{\"a\": {\"a\": 1}}", "{\"a\": {\"a\": 1}}"); /* same key in different objects */

    /* size is honoured: no NUL terminator needed, bytes beyond are not looked at */
    lh_error_t err;
    json_t *j = lh_json_parse("[7]garbage", 3, &err);
    assert_non_null(j);
    assert_int_equal(json_integer_value(json_array_get(j, 0)), 7);
    json_decref(j);
}

static void test_parse_errors(void **state)
{
    (void)state;
    s_parse_fails("", 0, "line 1 column 0: ");
    s_parse_fails("[1] x", 5, "line 1 column 5: end of file expected");
    s_parse_fails("{} {}", 5, "end of file expected");
    s_parse_fails("3 4", 3, "end of file expected");
    s_parse_fails("{\"a\": 1, \"a\": 2}", 16, "duplicate object key");
    s_parse_fails("[1,]", 4, "line 1 column 4: ");
    s_parse_fails("{\n  \"a\": ]\n}", 12, "line 2 column 8: unexpected token");
    s_parse_fails("\"\\u0000\"", 8, "line 1 column 8: ");
    s_parse_fails("18446744073709551615", 20, "too big integer");
    s_parse_fails("[1]\0", 4, "end of file expected");
    s_parse_fails("\"\xff\"", 3, "line 1 ");
    /* NULL err on failure is fine */
    assert_null(lh_json_parse("[", 1, NULL));
    assert_null(lh_json_parse(NULL, 1, NULL));
}

/* Builds `open` + levels*"[" + "1" + levels*"]" + `close`. */
static char *s_brackets(const char *open, int levels, const char *close)
{
    size_t len = strlen(open) + 2 * (size_t)levels + 1 + strlen(close);
    char *text = malloc(len + 1);
    assert_non_null(text);
    char *p = text;
    p += sprintf(p, "%s", open);
    for (int i = 0; i < levels; i++)
        *p++ = '[';
    *p++ = '1';
    for (int i = 0; i < levels; i++)
        *p++ = ']';
    sprintf(p, "%s", close);
    return text;
}

static void test_parse_depth(void **state)
{
    (void)state;
    lh_error_t err;
    char *text = s_brackets("", 32, "");
    json_t *j = lh_json_parse(text, strlen(text), &err);
    if (!j)
        fail_msg("32 levels refused: %s", err.text);
    json_decref(j);
    free(text);

    text = s_brackets("", 33, "");
    s_parse_fails(text, strlen(text), "line 1 column 33: nesting deeper than 32");
    free(text);
    text = s_brackets("", 3000, ""); /* beyond jansson's own limit: its error wins */
    s_parse_fails(text, strlen(text), "line 1 ");
    free(text);

    /* Brackets and escaped quotes inside strings do not count; columns count characters. */
    text = s_brackets("{\"k\\\"[{\": \"\xc3\xa9[[\",\n \"v\xc3\xa9\":", 31, "}");
    j = lh_json_parse(text, strlen(text), &err);
    if (!j)
        fail_msg("31 levels inside an object refused: %s", err.text);
    json_decref(j);
    free(text);
    text = s_brackets("{\"k\\\"[{\": \"\xc3\xa9[[\",\n \"v\xc3\xa9\":", 32, "}");
    s_parse_fails(text, strlen(text), "line 2 column 38: nesting deeper than 32");
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_nil_bool_integers, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_floats, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_str_utf8, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_utf8_matches_jansson, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_bin_base64, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_ext_refused, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_containers, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_map_keys, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_duplicate_keys, s_setup, s_teardown),
        cmocka_unit_test(test_depth_to_json),
        cmocka_unit_test_setup_teardown(test_to_json_arguments, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_json_to_msgpack_types, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_json_to_msgpack_depth, s_setup, s_teardown),
        cmocka_unit_test(test_json_to_msgpack_write_error),
        cmocka_unit_test_setup_teardown(test_round_trip_json, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_round_trip_msgpack, s_setup, s_teardown),
        cmocka_unit_test(test_parse_any_value),
        cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_parse_depth),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
