/* token: minting and verifying the HS256 JSON Web Tokens browser connections present. */
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "livehub/token.h"

#define S_SIG_SIZE 32 /* HMAC-SHA256 output */

/* The only header we ever mint; verify accepts any equivalent JSON object, not just these bytes. */
static const char s_header_json[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";

static const char s_b64url_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* Encoded length of n bytes without padding. */
static size_t s_b64url_len(size_t n)
{
    return n / 3 * 4 + (n % 3 ? n % 3 + 1 : 0);
}

/* Writes the unpadded base64url form of in[0..n) to out and NUL-terminates it; out must hold
 * s_b64url_len(n) + 1 bytes. Returns the number of characters written. */
static size_t s_b64url_encode(const unsigned char *in, size_t n, char *out)
{
    size_t o = 0;
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = s_b64url_alphabet[v >> 18 & 63];
        out[o++] = s_b64url_alphabet[v >> 12 & 63];
        out[o++] = s_b64url_alphabet[v >> 6 & 63];
        out[o++] = s_b64url_alphabet[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[o++] = s_b64url_alphabet[v >> 18 & 63];
        out[o++] = s_b64url_alphabet[v >> 12 & 63];
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[o++] = s_b64url_alphabet[v >> 18 & 63];
        out[o++] = s_b64url_alphabet[v >> 12 & 63];
        out[o++] = s_b64url_alphabet[v >> 6 & 63];
    }
    out[o] = '\0';
    return o;
}

/* Value of one base64url character, or -1 for anything else (including '=', '+', '/', spaces). */
static int s_b64url_value(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

/* Strictly decodes n characters of unpadded base64url into out (which must hold n / 4 * 3 + 2
 * bytes). Refuses foreign characters, a length of 4k+1, and non-zero leftover bits, so each
 * byte string has exactly one accepted encoding. Returns the decoded size or -1. */
static long s_b64url_decode(const char *in, size_t n, unsigned char *out)
{
    if (n % 4 == 1)
        return -1;
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        int v = s_b64url_value(in[i]);
        if (v < 0)
            return -1;
        acc = (acc << 6 | (uint32_t)v) & 0xffffff;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits & 0xff);
        }
    }
    /* The 2 or 4 bits left over from a short final group must be zero. */
    if (bits > 0 && (acc & ((1u << bits) - 1)) != 0)
        return -1;
    return (long)o;
}

/* Decodes one token segment into a new buffer (NUL-terminated for the JSON parser), or NULL. */
static unsigned char *s_decode_segment(const char *in, size_t n, size_t *out_size)
{
    unsigned char *buf = malloc(n / 4 * 3 + 3);
    if (!buf)
        return NULL;
    long got = s_b64url_decode(in, n, buf);
    if (got < 0) {
        free(buf);
        return NULL;
    }
    buf[got] = '\0';
    *out_size = (size_t)got;
    return buf;
}

static bool s_hmac_sha256(const void *key, size_t key_size, const char *data, size_t n,
                          unsigned char out[S_SIG_SIZE])
{
    unsigned int out_len = 0;
    if (!HMAC(EVP_sha256(), key, (int)key_size, (const unsigned char *)data, n, out, &out_len))
        return false;
    return out_len == S_SIG_SIZE;
}

/* Secrets go to HMAC() as an int length, so anything larger is refused up front. */
static bool s_secret_ok(const void *secret, size_t secret_size, lh_error_t *err)
{
    if (!secret || secret_size == 0) {
        lh_error_set(err, "token secret is empty");
        return false;
    }
    if (secret_size > INT_MAX) {
        lh_error_set(err, "token secret is too large");
        return false;
    }
    return true;
}

static bool s_claim_text_ok(const char *name, const char *value, lh_error_t *err)
{
    if (!value || value[0] == '\0') {
        lh_error_set(err, "claim '%s' must be a non-empty string", name);
        return false;
    }
    if (strlen(value) >= LH_CLAIM_MAX) {
        lh_error_set(err, "claim '%s' is longer than %d bytes", name, LH_CLAIM_MAX - 1);
        return false;
    }
    return true;
}

char *lh_token_mint(const void *secret, size_t secret_size, const char *sub, const char *role,
                    int64_t ttl_seconds, int64_t now, lh_error_t *err)
{
    if (!s_secret_ok(secret, secret_size, err))
        return NULL;
    if (!s_claim_text_ok("sub", sub, err) || !s_claim_text_ok("role", role, err))
        return NULL;
    if (ttl_seconds <= 0) {
        lh_error_set(err, "token lifetime must be positive");
        return NULL;
    }
    int64_t exp;
    if (__builtin_add_overflow(now, ttl_seconds, &exp)) {
        lh_error_set(err, "token expiry is out of range");
        return NULL;
    }

    /* jansson keeps insertion order, so the payload is always sub, role, iat, exp. */
    json_t *payload = json_object();
    json_t *jsub = json_string(sub);
    json_t *jrole = json_string(role);
    if (!payload || !jsub || !jrole) {
        json_decref(payload);
        json_decref(jsub);
        json_decref(jrole);
        lh_error_set(err, "sub and role must be valid UTF-8");
        return NULL;
    }
    char *payload_json = NULL;
    if (json_object_set_new(payload, "sub", jsub) == 0 &&
        json_object_set_new(payload, "role", jrole) == 0 &&
        json_object_set_new(payload, "iat", json_integer(now)) == 0 &&
        json_object_set_new(payload, "exp", json_integer(exp)) == 0)
        payload_json = json_dumps(payload, JSON_COMPACT);
    json_decref(payload);
    if (!payload_json) {
        lh_error_set(err, "out of memory building the token payload");
        return NULL;
    }

    size_t header_len = sizeof s_header_json - 1;
    size_t payload_len = strlen(payload_json);
    size_t total =
        s_b64url_len(header_len) + 1 + s_b64url_len(payload_len) + 1 + s_b64url_len(S_SIG_SIZE) + 1;
    char *token = malloc(total);
    if (!token) {
        free(payload_json);
        lh_error_set(err, "out of memory building the token");
        return NULL;
    }
    size_t o = s_b64url_encode((const unsigned char *)s_header_json, header_len, token);
    token[o++] = '.';
    o += s_b64url_encode((const unsigned char *)payload_json, payload_len, token + o);
    free(payload_json);

    unsigned char sig[S_SIG_SIZE];
    if (!s_hmac_sha256(secret, secret_size, token, o, sig)) {
        free(token);
        lh_error_set(err, "HMAC-SHA256 failed");
        return NULL;
    }
    token[o++] = '.';
    s_b64url_encode(sig, sizeof sig, token + o);
    OPENSSL_cleanse(sig, sizeof sig);
    return token;
}

/* Names an algorithm in a reason only when it is short and plain, so header text chosen by an
 * attacker never flows into logs. */
static void s_refuse_alg(const char *alg, lh_error_t *err)
{
    size_t n = strlen(alg);
    bool plain = n > 0 && n <= 16;
    for (size_t i = 0; plain && i < n; i++) {
        char c = alg[i];
        plain = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
    }
    if (plain)
        lh_error_set(err, "algorithm '%s' refused (only HS256 is accepted)", alg);
    else
        lh_error_set(err, "algorithm refused (only HS256 is accepted)");
}

/* The algorithm is pinned before any signature work: alg must be exactly "HS256". */
static bool s_check_header(const unsigned char *json, size_t n, lh_error_t *err)
{
    json_t *header = json_loadb((const char *)json, n, JSON_REJECT_DUPLICATES, NULL);
    if (!json_is_object(header)) {
        json_decref(header);
        lh_error_set(err, "malformed token: header is not a JSON object");
        return false;
    }
    bool ok = false;
    json_t *alg = json_object_get(header, "alg");
    json_t *typ = json_object_get(header, "typ");
    if (!alg)
        lh_error_set(err, "malformed token: header has no 'alg'");
    else if (!json_is_string(alg))
        lh_error_set(err, "malformed token: header 'alg' is not a string");
    else if (strcmp(json_string_value(alg), "HS256") != 0)
        s_refuse_alg(json_string_value(alg), err);
    else if (typ && !(json_is_string(typ) && strcmp(json_string_value(typ), "JWT") == 0))
        lh_error_set(err, "malformed token: header 'typ' must be \"JWT\"");
    else if (json_object_get(header, "crit"))
        lh_error_set(err, "token header 'crit' refused: no extensions are supported");
    else
        ok = true;
    json_decref(header);
    return ok;
}

/* Reads an optional integer claim; false (with a reason) when present but not an integer. */
static bool s_int_claim(json_t *payload, const char *name, bool required, int64_t *out,
                        lh_error_t *err)
{
    json_t *v = json_object_get(payload, name);
    if (!v) {
        if (required)
            lh_error_set(err, "claim '%s' is missing", name);
        *out = 0;
        return !required;
    }
    if (!json_is_integer(v)) {
        lh_error_set(err, "claim '%s' must be an integer", name);
        return false;
    }
    *out = (int64_t)json_integer_value(v);
    return true;
}

static bool s_text_claim(json_t *payload, const char *name, char out[LH_CLAIM_MAX], lh_error_t *err)
{
    json_t *v = json_object_get(payload, name);
    if (!v) {
        lh_error_set(err, "claim '%s' is missing", name);
        return false;
    }
    if (!json_is_string(v)) {
        lh_error_set(err, "claim '%s' must be a string", name);
        return false;
    }
    /* jansson refuses \u0000 by default, so the string length is the claim length. */
    size_t n = json_string_length(v);
    if (n == 0) {
        lh_error_set(err, "claim '%s' is empty", name);
        return false;
    }
    if (n >= LH_CLAIM_MAX) {
        lh_error_set(err, "claim '%s' is longer than %d bytes", name, LH_CLAIM_MAX - 1);
        return false;
    }
    memcpy(out, json_string_value(v), n + 1);
    return true;
}

static bool s_parse_claims(const unsigned char *json, size_t n, int64_t now, int64_t skew,
                           lh_claims_t *c, lh_error_t *err)
{
    json_t *payload = json_loadb((const char *)json, n, JSON_REJECT_DUPLICATES, NULL);
    if (!json_is_object(payload)) {
        json_decref(payload);
        lh_error_set(err, "malformed token: payload is not a JSON object");
        return false;
    }
    bool ok = s_text_claim(payload, "sub", c->sub, err) &&
              s_text_claim(payload, "role", c->role, err) &&
              s_int_claim(payload, "exp", true, &c->exp, err) &&
              s_int_claim(payload, "nbf", false, &c->nbf, err) &&
              s_int_claim(payload, "iat", false, &c->iat, err);
    json_decref(payload);
    if (!ok)
        return false;

    /* Saturate so extreme now/skew values cannot wrap around and accept a stale token. */
    int64_t earliest, latest;
    if (__builtin_sub_overflow(now, skew, &earliest))
        earliest = INT64_MIN;
    if (__builtin_add_overflow(now, skew, &latest))
        latest = INT64_MAX;
    if (c->exp <= earliest) {
        lh_error_set(err, "expired: exp is not later than now minus %lld s of allowed skew",
                     (long long)skew);
        return false;
    }
    if (c->nbf > latest) {
        lh_error_set(err, "not yet valid: nbf is later than now plus %lld s of allowed skew",
                     (long long)skew);
        return false;
    }
    return true;
}

int lh_token_verify(const char *token, const void *secret, size_t secret_size, int64_t now,
                    int64_t skew_seconds, lh_claims_t *claims, lh_error_t *err)
{
    if (claims)
        memset(claims, 0, sizeof *claims);
    if (!s_secret_ok(secret, secret_size, err))
        return -1;
    if (skew_seconds < 0) {
        lh_error_set(err, "clock skew allowance must not be negative");
        return -1;
    }
    if (!token) {
        lh_error_set(err, "malformed token: no token given");
        return -1;
    }
    size_t len = strnlen(token, LH_TOKEN_MAX_SIZE + 1);
    if (len > LH_TOKEN_MAX_SIZE) {
        lh_error_set(err, "malformed token: longer than %d bytes", LH_TOKEN_MAX_SIZE);
        return -1;
    }
    const char *dot1 = memchr(token, '.', len);
    const char *dot2 = dot1 ? memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - token)) : NULL;
    if (!dot2 || memchr(dot2 + 1, '.', len - (size_t)(dot2 + 1 - token))) {
        lh_error_set(err, "malformed token: expected header.payload.signature");
        return -1;
    }
    size_t header_n = (size_t)(dot1 - token);
    size_t payload_n = (size_t)(dot2 - dot1 - 1);
    size_t sig_n = len - (size_t)(dot2 + 1 - token);

    size_t header_size;
    unsigned char *header = s_decode_segment(token, header_n, &header_size);
    if (!header) {
        lh_error_set(err, "malformed token: header is not valid base64url");
        return -1;
    }
    bool header_ok = s_check_header(header, header_size, err);
    free(header);
    if (!header_ok)
        return -1;

    /* Decoding is only syntax; the payload JSON is not looked at until the signature matches. */
    size_t payload_size;
    unsigned char *payload = s_decode_segment(dot1 + 1, payload_n, &payload_size);
    if (!payload) {
        lh_error_set(err, "malformed token: payload is not valid base64url");
        return -1;
    }
    /* A signature that decodes to anything but 32 bytes cannot match: it is a bad signature. */
    size_t given_n;
    unsigned char *given = s_decode_segment(dot2 + 1, sig_n, &given_n);
    if (!given) {
        free(payload);
        lh_error_set(err, "malformed token: signature is not valid base64url");
        return -1;
    }
    unsigned char expected[S_SIG_SIZE];
    if (!s_hmac_sha256(secret, secret_size, token, (size_t)(dot2 - token), expected)) {
        free(given);
        free(payload);
        lh_error_set(err, "HMAC-SHA256 failed");
        return -1;
    }
    bool sig_ok = given_n == S_SIG_SIZE && CRYPTO_memcmp(given, expected, S_SIG_SIZE) == 0;
    OPENSSL_cleanse(expected, sizeof expected);
    free(given);
    if (!sig_ok) {
        free(payload);
        lh_error_set(err, "bad signature");
        return -1;
    }

    lh_claims_t parsed;
    memset(&parsed, 0, sizeof parsed);
    bool claims_ok = s_parse_claims(payload, payload_size, now, skew_seconds, &parsed, err);
    free(payload);
    if (!claims_ok)
        return -1;
    if (claims)
        *claims = parsed;
    return 0;
}
