/* json_codec: the msgpack <-> JSON conversion rules of codec.h, and depth-limited JSON parsing. */
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "livehub/codec.h"

_Static_assert(sizeof(json_int_t) == sizeof(int64_t), "json_int_t must hold every int64");

/* Longest key echoed back in an error text. */
#define S_KEY_ECHO 64

/* Returns the offset of the first byte that breaks UTF-8 (or is NUL), or len when s is valid.
 * Rejects overlong forms, UTF-16 surrogates and code points above U+10FFFF. */
static size_t s_utf8_invalid_at(const uint8_t *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        uint8_t c = s[i];
        if (c < 0x80) {
            if (c == 0)
                return i;
            i++;
            continue;
        }
        size_t extra;
        uint8_t lo = 0x80, hi = 0xbf; /* allowed range of the second byte */
        if (c >= 0xc2 && c <= 0xdf) {
            extra = 1;
        } else if (c >= 0xe0 && c <= 0xef) {
            extra = 2;
            if (c == 0xe0)
                lo = 0xa0; /* overlong */
            else if (c == 0xed)
                hi = 0x9f; /* surrogates */
        } else if (c >= 0xf0 && c <= 0xf4) {
            extra = 3;
            if (c == 0xf0)
                lo = 0x90; /* overlong */
            else if (c == 0xf4)
                hi = 0x8f; /* above U+10FFFF */
        } else {
            return i;
        }
        if (len - i <= extra || s[i + 1] < lo || s[i + 1] > hi)
            return i;
        for (size_t k = 2; k <= extra; k++)
            if ((s[i + k] & 0xc0) != 0x80)
                return i;
        i += extra + 1;
    }
    return len;
}

/* Checks a msgpack str; `what` names it in the error ("str" or "map key"). */
static int s_check_str(const msgpack_object_str *str, const char *what, lh_error_t *err)
{
    size_t bad = s_utf8_invalid_at((const uint8_t *)str->ptr, str->size);
    if (bad == str->size)
        return 0;
    if (str->ptr[bad] == 0)
        lh_error_set(err, "%s contains a NUL byte at byte %zu", what, bad);
    else
        lh_error_set(err, "%s is not valid UTF-8 at byte %zu", what, bad);
    return -1;
}

static const char s_b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static json_t *s_base64(const uint8_t *in, size_t len, lh_error_t *err)
{
    size_t out_len = (len + 2) / 3 * 4;
    char *out = malloc(out_len + 1);
    if (!out) {
        lh_error_set(err, "out of memory");
        return NULL;
    }
    char *o = out;
    size_t i = 0;
    for (; len - i >= 3; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        *o++ = s_b64[v >> 18];
        *o++ = s_b64[v >> 12 & 0x3f];
        *o++ = s_b64[v >> 6 & 0x3f];
        *o++ = s_b64[v & 0x3f];
    }
    if (len - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        *o++ = s_b64[v >> 18];
        *o++ = s_b64[v >> 12 & 0x3f];
        *o++ = '=';
        *o++ = '=';
    } else if (len - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        *o++ = s_b64[v >> 18];
        *o++ = s_b64[v >> 12 & 0x3f];
        *o++ = s_b64[v >> 6 & 0x3f];
        *o++ = '=';
    }
    json_t *json = json_stringn_nocheck(out, out_len);
    free(out);
    if (!json)
        lh_error_set(err, "out of memory");
    return json;
}

static json_t *s_to_json(const msgpack_object *o, int depth, lh_error_t *err);

/* Adds one map entry, enforcing the key rules. Takes ownership of value. */
static int s_object_put(json_t *object, const msgpack_object *key, json_t *value, lh_error_t *err)
{
    char digits[24];
    const char *k;
    size_t k_len;

    switch (key->type) {
    case MSGPACK_OBJECT_STR:
        if (s_check_str(&key->via.str, "map key", err) != 0)
            goto fail;
        k_len = key->via.str.size;
        k = k_len ? key->via.str.ptr : ""; /* msgpack-c may leave ptr NULL when empty */
        break;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        k_len = (size_t)snprintf(digits, sizeof digits, "%" PRIu64, key->via.u64);
        k = digits;
        break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        k_len = (size_t)snprintf(digits, sizeof digits, "%" PRId64, key->via.i64);
        k = digits;
        break;
    default:
        lh_error_set(err, "map key of msgpack type %d is neither str nor integer", (int)key->type);
        goto fail;
    }
    /* Also catches a str key and an integer key that spell the same decimal number. */
    if (json_object_getn(object, k, k_len)) {
        if (k_len > S_KEY_ECHO)
            lh_error_set(err, "duplicate map key \"%.*s\" (first %d of %zu bytes)", S_KEY_ECHO, k,
                         S_KEY_ECHO, k_len);
        else
            lh_error_set(err, "duplicate map key \"%.*s\"", (int)k_len, k);
        goto fail;
    }
    if (json_object_setn_new_nocheck(object, k, k_len, value) != 0) {
        lh_error_set(err, "out of memory");
        return -1; /* jansson already dropped value */
    }
    return 0;

fail:
    json_decref(value);
    return -1;
}

static json_t *s_container_to_json(const msgpack_object *o, int depth, lh_error_t *err)
{
    if (depth >= LH_MSGPACK_MAX_DEPTH) {
        lh_error_set(err, "nesting deeper than %d", LH_MSGPACK_MAX_DEPTH);
        return NULL;
    }
    if (o->type == MSGPACK_OBJECT_ARRAY) {
        json_t *array = json_array();
        if (!array)
            goto oom;
        for (uint32_t i = 0; i < o->via.array.size; i++) {
            json_t *item = s_to_json(&o->via.array.ptr[i], depth + 1, err);
            if (!item) {
                json_decref(array);
                return NULL;
            }
            if (json_array_append_new(array, item) != 0) {
                json_decref(array);
                goto oom;
            }
        }
        return array;
    }
    json_t *object = json_object();
    if (!object)
        goto oom;
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        const msgpack_object_kv *kv = &o->via.map.ptr[i];
        json_t *value = s_to_json(&kv->val, depth + 1, err);
        if (!value || s_object_put(object, &kv->key, value, err) != 0) {
            json_decref(object);
            return NULL;
        }
    }
    return object;

oom:
    lh_error_set(err, "out of memory");
    return NULL;
}

/* Converts one object whose depth is `depth` (0 at top level). */
static json_t *s_to_json(const msgpack_object *o, int depth, lh_error_t *err)
{
    json_t *json;
    char digits[24];

    switch (o->type) {
    case MSGPACK_OBJECT_NIL:
        json = json_null();
        break;
    case MSGPACK_OBJECT_BOOLEAN:
        json = json_boolean(o->via.boolean);
        break;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        if (o->via.u64 <= INT64_MAX) {
            json = json_integer((json_int_t)o->via.u64);
        } else {
            int n = snprintf(digits, sizeof digits, "%" PRIu64, o->via.u64);
            json = json_stringn_nocheck(digits, (size_t)n);
        }
        break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        json = json_integer((json_int_t)o->via.i64);
        break;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        json = isfinite(o->via.f64) ? json_real(o->via.f64) : json_null();
        break;
    case MSGPACK_OBJECT_STR:
        if (s_check_str(&o->via.str, "str", err) != 0)
            return NULL;
        /* jansson refuses a NULL pointer even for length 0, which msgpack-c may hand us. */
        json = json_stringn_nocheck(o->via.str.size ? o->via.str.ptr : "", o->via.str.size);
        break;
    case MSGPACK_OBJECT_BIN:
        return s_base64((const uint8_t *)o->via.bin.ptr, o->via.bin.size, err);
    case MSGPACK_OBJECT_EXT:
        lh_error_set(err, "ext type %d not convertible", (int)o->via.ext.type);
        return NULL;
    case MSGPACK_OBJECT_ARRAY:
    case MSGPACK_OBJECT_MAP:
        return s_container_to_json(o, depth, err);
    default:
        lh_error_set(err, "unknown msgpack object type %d", (int)o->type);
        return NULL;
    }
    if (!json)
        lh_error_set(err, "out of memory");
    return json;
}

json_t *lh_msgpack_to_json(const msgpack_object *object, lh_error_t *err)
{
    if (!object) {
        lh_error_set(err, "invalid arguments");
        return NULL;
    }
    return s_to_json(object, 0, err);
}

static int s_pack(const json_t *json, msgpack_packer *pk, int depth, lh_error_t *err)
{
    int rc;

    switch (json_typeof(json)) {
    case JSON_NULL:
        rc = msgpack_pack_nil(pk);
        break;
    case JSON_TRUE:
        rc = msgpack_pack_true(pk);
        break;
    case JSON_FALSE:
        rc = msgpack_pack_false(pk);
        break;
    case JSON_INTEGER:
        rc = msgpack_pack_int64(pk, (int64_t)json_integer_value(json));
        break;
    case JSON_REAL:
        rc = msgpack_pack_double(pk, json_real_value(json));
        break;
    case JSON_STRING: {
        size_t len = json_string_length(json);
        if (len > UINT32_MAX)
            goto too_big;
        rc = msgpack_pack_str_with_body(pk, json_string_value(json), len);
        break;
    }
    case JSON_ARRAY: {
        if (depth >= LH_MSGPACK_MAX_DEPTH)
            goto too_deep;
        size_t n = json_array_size(json);
        if (n > UINT32_MAX)
            goto too_big;
        rc = msgpack_pack_array(pk, n);
        for (size_t i = 0; rc == 0 && i < n; i++)
            if (s_pack(json_array_get(json, i), pk, depth + 1, err) != 0)
                return -1;
        break;
    }
    case JSON_OBJECT: {
        if (depth >= LH_MSGPACK_MAX_DEPTH)
            goto too_deep;
        size_t n = json_object_size(json);
        if (n > UINT32_MAX)
            goto too_big;
        rc = msgpack_pack_map(pk, n);
        /* jansson's iterators take a non-const object but do not modify it. */
        for (void *it = json_object_iter((json_t *)json); rc == 0 && it;
             it = json_object_iter_next((json_t *)json, it)) {
            size_t key_len = json_object_iter_key_len(it);
            if (key_len > UINT32_MAX)
                goto too_big;
            rc = msgpack_pack_str_with_body(pk, json_object_iter_key(it), key_len);
            if (rc == 0 && s_pack(json_object_iter_value(it), pk, depth + 1, err) != 0)
                return -1;
        }
        break;
    }
    default:
        lh_error_set(err, "unknown JSON type %d", (int)json_typeof(json));
        return -1;
    }
    if (rc != 0) {
        lh_error_set(err, "msgpack packer write failed");
        return -1;
    }
    return 0;

too_deep:
    lh_error_set(err, "nesting deeper than %d", LH_MSGPACK_MAX_DEPTH);
    return -1;
too_big:
    lh_error_set(err, "value too large for msgpack (more than 2^32-1 bytes or entries)");
    return -1;
}

int lh_json_to_msgpack(const json_t *json, msgpack_packer *packer, lh_error_t *err)
{
    if (!json || !packer) {
        lh_error_set(err, "invalid arguments");
        return -1;
    }
    return s_pack(json, packer, 0, err);
}

/* Finds where valid JSON text first nests deeper than LH_MSGPACK_MAX_DEPTH; returns false if it
 * never does. Line and column count the way jansson does (1-based, column in characters). */
static bool s_find_too_deep(const char *text, size_t size, int *line, int *column)
{
    int depth = 0, ln = 1, col = 0;
    bool in_string = false, escaped = false;

    for (size_t i = 0; i < size; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c == '\n') {
            ln++;
            col = 0;
            continue;
        }
        if ((c & 0xc0) != 0x80) /* count characters, not UTF-8 continuation bytes */
            col++;
        if (in_string) {
            if (escaped)
                escaped = false;
            else if (c == '\\')
                escaped = true;
            else if (c == '"')
                in_string = false;
        } else if (c == '"') {
            in_string = true;
        } else if (c == '[' || c == '{') {
            if (++depth > LH_MSGPACK_MAX_DEPTH) {
                *line = ln;
                *column = col;
                return true;
            }
        } else if (c == ']' || c == '}') {
            depth--;
        }
    }
    return false;
}

json_t *lh_json_parse(const char *text, size_t size, lh_error_t *err)
{
    if (!text && size > 0) {
        lh_error_set(err, "invalid arguments");
        return NULL;
    }
    json_error_t jerr;
    /* Without JSON_DISABLE_EOF_CHECK jansson refuses anything after the value but whitespace. */
    json_t *json =
        json_loadb(text ? text : "", size, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &jerr);
    if (!json) {
        lh_error_set(err, "line %d column %d: %s", jerr.line, jerr.column, jerr.text);
        return NULL;
    }
    /* The text is now known to be valid JSON, so brackets outside strings are exactly the
     * containers; counting them also gives the position for the error. */
    int line, column;
    if (s_find_too_deep(text, size, &line, &column)) {
        json_decref(json);
        lh_error_set(err, "line %d column %d: nesting deeper than %d", line, column,
                     LH_MSGPACK_MAX_DEPTH);
        return NULL;
    }
    return json;
}
