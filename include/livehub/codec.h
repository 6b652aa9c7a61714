/* livehub SDK: safe msgpack decoding and the msgpack <-> JSON converters used at every edge. */
#ifndef LIVEHUB_CODEC_H
#define LIVEHUB_CODEC_H

#include <stddef.h>
#include <stdint.h>
#include <msgpack.h>
#include <jansson.h>
#include "livehub/error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Nesting deeper than this is refused by every decoder in livehub. */
#define LH_MSGPACK_MAX_DEPTH 32

/* Walks the msgpack object that starts at buf[*pos] without allocating anything. Every declared
 * length (str, bin, ext sizes; array and map element counts) is checked against the bytes that are
 * really present, and containers may nest at most max_depth levels (a scalar at top level is depth
 * 0, the elements of a top-level array are depth 1). On success advances *pos just past the object
 * and returns 0; on failure returns -1, leaves *pos unchanged and says why in err. Reserved byte
 * 0xc1 is refused. This is the guard that must run before msgpack-c sees untrusted bytes:
 * msgpack-c trusts declared sizes and will attempt huge allocations for tiny inputs. */
int lh_msgpack_skip(const uint8_t *buf, size_t size, size_t *pos, int max_depth, lh_error_t *err);

/* 0 when buf holds exactly one well-formed msgpack object (see lh_msgpack_skip) and nothing after
 * it; -1 with a reason otherwise (including "trailing bytes" and empty input). */
int lh_msgpack_scan(const void *buf, size_t size, int max_depth, lh_error_t *err);

/* Scans (LH_MSGPACK_MAX_DEPTH) then unpacks buf into zone; *out points into zone memory.
 * Returns 0, or -1 with a reason; safe for untrusted bytes. */
int lh_msgpack_unpack(const void *buf, size_t size, msgpack_zone *zone, msgpack_object *out,
                      lh_error_t *err);

/* Converts msgpack to a new JSON value (caller owns the reference). The rules are explicit and
 * the same everywhere in livehub:
 *   nil -> null; bool -> true/false;
 *   integers in [INT64_MIN, INT64_MAX] -> JSON integer;
 *   unsigned integers above INT64_MAX -> JSON string of the decimal digits (lossless; JSON numbers
 *     beyond int64 are not portable);
 *   float32/float64 finite -> JSON real; NaN and +/-Infinity -> null (as JSON.stringify does);
 *   str -> string, which must be valid UTF-8 without NUL bytes, else error;
 *   bin -> string holding standard base64 (RFC 4648, with padding);
 *   ext -> error ("ext type N not convertible");
 *   array -> array; map -> object whose keys must be str (valid UTF-8) or integers (written in
 *     decimal); any other key type is an error, and so is a key that repeats in one map.
 *   Nesting deeper than LH_MSGPACK_MAX_DEPTH is an error.
 * Returns NULL with a reason on error. */
json_t *lh_msgpack_to_json(const msgpack_object *object, lh_error_t *err);

/* Packs a JSON value: null, true/false, integer (int64), real (float64; jansson never holds NaN),
 * string (str), array, object (map with str keys, in the object's iteration order).
 * Returns 0, or -1 with a reason (nesting deeper than LH_MSGPACK_MAX_DEPTH). */
int lh_json_to_msgpack(const json_t *json, msgpack_packer *packer, lh_error_t *err);

/* Parses JSON text (max_depth LH_MSGPACK_MAX_DEPTH, no duplicate keys, exactly one value) and
 * returns a new reference, or NULL with "line L column C: reason" in err. */
json_t *lh_json_parse(const char *text, size_t size, lh_error_t *err);

#ifdef __cplusplus
}
#endif
#endif
