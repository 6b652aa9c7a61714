/* Unit tests for HS256 token minting/verification and env:/file: secret resolution. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "livehub/token.h"

#define SECRET "s3cret"
#define NOW INT64_C(1700000000)

/* Computed once outside the repo with Python's hmac/base64 and checked with `openssl dgst`:
 * secret "s3cret", payload {"sub":"u1","role":"admin","iat":1700000000,"exp":1700000060}. */
static const char s_vector[] =
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
    ".eyJzdWIiOiJ1MSIsInJvbGUiOiJhZG1pbiIsImlhdCI6MTcwMDAwMDAwMCwiZXhwIjoxNzAwMDAwMDYwfQ"
    ".6R73btOkg6ua574EKHKECOqpOKelq_nGDSi7c1WvX0c";

/* base64url via OpenSSL's standard base64, so the tests do not reuse the code under test. */
static void s_b64url(const void *data, size_t n, char *out)
{
    int len = EVP_EncodeBlock((unsigned char *)out, data, (int)n);
    while (len > 0 && out[len - 1] == '=')
        len--;
    out[len] = '\0';
    for (int i = 0; i < len; i++) {
        if (out[i] == '+')
            out[i] = '-';
        else if (out[i] == '/')
            out[i] = '_';
    }
}

/* Builds b64(header).b64(payload).b64(HMAC-SHA256) with the given secret; caller frees. */
static char *s_sign(const char *header, const char *payload, const char *secret)
{
    size_t cap = 2 * (strlen(header) + strlen(payload)) + 128;
    char *tok = malloc(cap);
    assert_non_null(tok);
    s_b64url(header, strlen(header), tok);
    size_t o = strlen(tok);
    tok[o++] = '.';
    s_b64url(payload, strlen(payload), tok + o);
    o = strlen(tok);
    unsigned char mac[32];
    unsigned int mac_len = 0;
    assert_non_null(
        HMAC(EVP_sha256(), secret, (int)strlen(secret), (unsigned char *)tok, o, mac, &mac_len));
    assert_int_equal(mac_len, 32);
    tok[o++] = '.';
    s_b64url(mac, mac_len, tok + o);
    return tok;
}

#define HS256 "{\"alg\":\"HS256\",\"typ\":\"JWT\"}"

/* Verifies a token signed by s_sign with SECRET, at NOW with the given skew. */
static int s_verify(const char *token, int64_t skew, lh_claims_t *claims, lh_error_t *err)
{
    return lh_token_verify(token, SECRET, strlen(SECRET), NOW, skew, claims, err);
}

/* Signs header/payload with SECRET and expects verification to fail with a reason containing
 * `reason` (and never the secret or the token's signed part). */
static void s_expect_refused(const char *header, const char *payload, const char *reason)
{
    char *tok = s_sign(header, payload, SECRET);
    lh_error_t err = {{0}};
    lh_claims_t claims;
    assert_int_equal(s_verify(tok, 30, &claims, &err), -1);
    if (!strstr(err.text, reason))
        fail_msg("reason \"%s\" lacks \"%s\"", err.text, reason);
    assert_null(strstr(err.text, SECRET));
    assert_null(strstr(err.text, strchr(tok, '.') + 1));
    assert_string_equal(claims.sub, "");
    free(tok);
}

static void s_expect_reason(const char *token, const char *reason)
{
    lh_error_t err = {{0}};
    lh_claims_t claims;
    assert_int_equal(s_verify(token, 30, &claims, &err), -1);
    if (!strstr(err.text, reason))
        fail_msg("reason \"%s\" lacks \"%s\"", err.text, reason);
}

static void test_round_trip(void **state)
{
    (void)state;
    lh_error_t err = {{0}};
    char *tok = lh_token_mint(SECRET, strlen(SECRET), "user-42", "startup", 300, NOW, &err);
    assert_non_null(tok);
    lh_claims_t c;
    assert_int_equal(s_verify(tok, 0, &c, &err), 0);
    assert_string_equal(c.sub, "user-42");
    assert_string_equal(c.role, "startup");
    assert_int_equal(c.iat, NOW);
    assert_int_equal(c.exp, NOW + 300);
    assert_int_equal(c.nbf, 0);
    /* Still valid one second before expiry, refused at it. */
    assert_int_equal(lh_token_verify(tok, SECRET, 6, NOW + 299, 0, &c, &err), 0);
    assert_int_equal(lh_token_verify(tok, SECRET, 6, NOW + 300, 0, &c, &err), -1);
    assert_memory_equal(err.text, "expired", 7);
    /* A NULL claims pointer is allowed for a yes/no check. */
    assert_int_equal(lh_token_verify(tok, SECRET, 6, NOW, 0, NULL, &err), 0);
    free(tok);
}

static void test_known_vector(void **state)
{
    (void)state;
    lh_error_t err = {{0}};
    char *tok = lh_token_mint(SECRET, strlen(SECRET), "u1", "admin", 60, NOW, &err);
    assert_non_null(tok);
    assert_string_equal(tok, s_vector);
    free(tok);
    lh_claims_t c;
    assert_int_equal(s_verify(s_vector, 0, &c, &err), 0);
    assert_string_equal(c.sub, "u1");
    assert_string_equal(c.role, "admin");
    assert_int_equal(c.exp, NOW + 60);
}

static void test_mint_refusals(void **state)
{
    (void)state;
    lh_error_t err = {{0}};
    char long_sub[LH_CLAIM_MAX + 1];
    memset(long_sub, 'x', LH_CLAIM_MAX);
    long_sub[LH_CLAIM_MAX] = '\0';

    assert_null(lh_token_mint(SECRET, 0, "u", "r", 60, NOW, &err));
    assert_non_null(strstr(err.text, "secret is empty"));
    assert_null(lh_token_mint(NULL, 6, "u", "r", 60, NOW, &err));
    assert_non_null(strstr(err.text, "secret is empty"));
    assert_null(lh_token_mint(SECRET, 6, "", "r", 60, NOW, &err));
    assert_non_null(strstr(err.text, "'sub'"));
    assert_null(lh_token_mint(SECRET, 6, "u", NULL, 60, NOW, &err));
    assert_non_null(strstr(err.text, "'role'"));
    assert_null(lh_token_mint(SECRET, 6, "u", "r", 0, NOW, &err));
    assert_non_null(strstr(err.text, "lifetime"));
    assert_null(lh_token_mint(SECRET, 6, "u", "r", -5, NOW, &err));
    assert_null(lh_token_mint(SECRET, 6, "u", "r", INT64_MAX, NOW, &err));
    assert_non_null(strstr(err.text, "out of range"));
    assert_null(lh_token_mint(SECRET, 6, long_sub, "r", 60, NOW, &err));
    assert_non_null(strstr(err.text, "longer than"));
    assert_null(lh_token_mint(SECRET, 6, "u", "\xff", 60, NOW, &err));
    assert_non_null(strstr(err.text, "UTF-8"));

    /* The longest allowed sub mints and verifies intact. */
    long_sub[LH_CLAIM_MAX - 1] = '\0';
    char *tok = lh_token_mint(SECRET, 6, long_sub, "r", 60, NOW, &err);
    assert_non_null(tok);
    lh_claims_t c;
    assert_int_equal(s_verify(tok, 0, &c, &err), 0);
    assert_string_equal(c.sub, long_sub);
    free(tok);
}

static void test_verify_empty_secret(void **state)
{
    (void)state;
    lh_error_t err = {{0}};
    assert_int_equal(lh_token_verify(s_vector, SECRET, 0, NOW, 0, NULL, &err), -1);
    assert_non_null(strstr(err.text, "secret is empty"));
    assert_int_equal(lh_token_verify(s_vector, NULL, 6, NOW, 0, NULL, &err), -1);
    assert_non_null(strstr(err.text, "secret is empty"));
}

static void test_wrong_secret(void **state)
{
    (void)state;
    lh_error_t err = {{0}};
    lh_claims_t c;
    assert_int_equal(lh_token_verify(s_vector, "s3creT", 6, NOW, 0, &c, &err), -1);
    assert_string_equal(err.text, "bad signature");
    assert_string_equal(c.sub, "");
    /* A secret that merely starts with the right bytes is still wrong. */
    assert_int_equal(lh_token_verify(s_vector, "s3cret!", 7, NOW, 0, &c, &err), -1);
    assert_string_equal(err.text, "bad signature");
}

static void test_tampered_payload(void **state)
{
    (void)state;
    /* Keep the original header and signature but swap in an escalated role. */
    char forged[512];
    char payload_b64[128];
    const char *escalated =
        "{\"sub\":\"u1\",\"role\":\"root\",\"iat\":1700000000,\"exp\":1700000060}";
    s_b64url(escalated, strlen(escalated), payload_b64);
    const char *dot1 = strchr(s_vector, '.');
    const char *dot2 = strchr(dot1 + 1, '.');
    snprintf(forged, sizeof forged, "%.*s.%s%s", (int)(dot1 - s_vector), s_vector, payload_b64,
             dot2);
    s_expect_reason(forged, "bad signature");
}

static void test_tampered_signature(void **state)
{
    (void)state;
    char tok[sizeof s_vector];
    memcpy(tok, s_vector, sizeof tok);
    char *sig = strrchr(tok, '.') + 1;
    sig[0] = sig[0] == 'A' ? 'B' : 'A';
    s_expect_reason(tok, "bad signature");

    /* Empty and truncated signatures cannot match either. */
    memcpy(tok, s_vector, sizeof tok);
    sig = strrchr(tok, '.') + 1;
    sig[0] = '\0';
    s_expect_reason(tok, "bad signature");
    memcpy(tok, s_vector, sizeof tok);
    tok[sizeof tok - 1 - 11] = '\0'; /* 32 of 43 characters remain: 24 bytes */
    s_expect_reason(tok, "bad signature");

    /* The right 32 bytes followed by more bytes is still not the signature. */
    char longer[sizeof s_vector + 8];
    snprintf(longer, sizeof longer, "%sAAAA", s_vector);
    s_expect_reason(longer, "bad signature");
}

static void test_tampered_header(void **state)
{
    (void)state;
    char forged[512];
    char header_b64[128];
    const char *header = "{\"alg\":\"HS256\",\"typ\":\"JWT\",\"kid\":\"x\"}";
    s_b64url(header, strlen(header), header_b64);
    snprintf(forged, sizeof forged, "%s%s", header_b64, strchr(s_vector, '.'));
    s_expect_reason(forged, "bad signature");
}

#define PAYLOAD "{\"sub\":\"u1\",\"role\":\"admin\",\"exp\":1700000060}"

static void test_alg_none_refused(void **state)
{
    (void)state;
    /* The classic forgery: alg none and no signature at all. */
    char header_b64[64], payload_b64[128], tok[256];
    s_b64url("{\"alg\":\"none\"}", 14, header_b64);
    s_b64url(PAYLOAD, strlen(PAYLOAD), payload_b64);
    snprintf(tok, sizeof tok, "%s.%s.", header_b64, payload_b64);
    s_expect_reason(tok, "algorithm 'none' refused");
    /* Even with a valid HMAC attached, only HS256 headers are accepted. */
    s_expect_refused("{\"alg\":\"none\",\"typ\":\"JWT\"}", PAYLOAD, "algorithm 'none' refused");
}

static void test_other_algs_refused(void **state)
{
    (void)state;
    s_expect_refused("{\"alg\":\"HS512\",\"typ\":\"JWT\"}", PAYLOAD, "algorithm 'HS512' refused");
    s_expect_refused("{\"alg\":\"RS256\"}", PAYLOAD, "algorithm 'RS256' refused");
    s_expect_refused("{\"alg\":\"hs256\"}", PAYLOAD, "algorithm 'hs256' refused");
    s_expect_refused("{\"alg\":\"HS256 \"}", PAYLOAD, "algorithm refused");
    s_expect_refused("{\"typ\":\"JWT\"}", PAYLOAD, "no 'alg'");
    s_expect_refused("{\"alg\":256}", PAYLOAD, "'alg' is not a string");
    s_expect_refused("{\"alg\":\"HS256\",\"typ\":\"JWE\"}", PAYLOAD, "'typ'");
    s_expect_refused("{\"alg\":\"HS256\",\"crit\":[\"exp\"]}", PAYLOAD, "'crit' refused");
    s_expect_refused("{\"alg\":\"HS256\",\"alg\":\"none\"}", PAYLOAD, "header is not a JSON");
    s_expect_refused("[\"HS256\"]", PAYLOAD, "header is not a JSON object");
    /* Without typ the header is still acceptable. */
    char *tok = s_sign("{\"alg\":\"HS256\"}", PAYLOAD, SECRET);
    lh_error_t err = {{0}};
    assert_int_equal(s_verify(tok, 0, NULL, &err), 0);
    free(tok);
}

/* A payload with the given exp and optional nbf (pass nbf < 0 to leave it out). */
static char *s_timed(int64_t exp, int64_t nbf)
{
    char payload[160];
    if (nbf < 0)
        snprintf(payload, sizeof payload, "{\"sub\":\"u\",\"role\":\"r\",\"exp\":%lld}",
                 (long long)exp);
    else
        snprintf(payload, sizeof payload,
                 "{\"sub\":\"u\",\"role\":\"r\",\"exp\":%lld,\"nbf\":%lld}", (long long)exp,
                 (long long)nbf);
    return s_sign(HS256, payload, SECRET);
}

static void test_expiry_and_skew(void **state)
{
    (void)state;
    lh_error_t err = {{0}};
    lh_claims_t c;
    char *tok = s_timed(NOW - 100, -1);
    assert_int_equal(s_verify(tok, 0, &c, &err), -1);
    assert_memory_equal(err.text, "expired", 7);
    free(tok);

    /* With 30 s of skew, exp = now - 30 is expired and exp = now - 29 is not. */
    tok = s_timed(NOW - 30, -1);
    assert_int_equal(s_verify(tok, 30, &c, &err), -1);
    assert_memory_equal(err.text, "expired", 7);
    free(tok);
    tok = s_timed(NOW - 29, -1);
    assert_int_equal(s_verify(tok, 30, &c, &err), 0);
    assert_int_equal(c.exp, NOW - 29);
    free(tok);

    /* exp == now with no skew is expired. */
    tok = s_timed(NOW, -1);
    assert_int_equal(s_verify(tok, 0, &c, &err), -1);
    assert_memory_equal(err.text, "expired", 7);
    free(tok);

    /* Negative skew is a caller bug, not a tighter window. */
    tok = s_timed(NOW + 100, -1);
    assert_int_equal(s_verify(tok, -1, &c, &err), -1);
    assert_non_null(strstr(err.text, "skew"));
    /* An enormous skew saturates instead of wrapping. */
    assert_int_equal(s_verify(tok, INT64_MAX, &c, &err), 0);
    free(tok);
}

static void test_not_before(void **state)
{
    (void)state;
    lh_error_t err = {{0}};
    lh_claims_t c;
    char *tok = s_timed(NOW + 600, NOW + 31);
    assert_int_equal(s_verify(tok, 30, &c, &err), -1);
    assert_memory_equal(err.text, "not yet valid", 13);
    free(tok);
    tok = s_timed(NOW + 600, NOW + 30);
    assert_int_equal(s_verify(tok, 30, &c, &err), 0);
    assert_int_equal(c.nbf, NOW + 30);
    free(tok);
    tok = s_timed(NOW + 600, NOW + 1);
    assert_int_equal(s_verify(tok, 0, &c, &err), -1);
    assert_memory_equal(err.text, "not yet valid", 13);
    free(tok);
}

static void test_malformed(void **state)
{
    (void)state;
    char tok[LH_TOKEN_MAX_SIZE + 64];
    const char *dot1 = strchr(s_vector, '.');
    const char *dot2 = strchr(dot1 + 1, '.');
    int hn = (int)(dot1 - s_vector);

    s_expect_reason("", "malformed token");
    s_expect_reason("abc", "malformed token");
    s_expect_reason("abc.def", "malformed token");
    s_expect_reason(NULL, "malformed token");
    snprintf(tok, sizeof tok, "%s.", s_vector);
    s_expect_reason(tok, "expected header.payload.signature");
    snprintf(tok, sizeof tok, "%.*s..%s", hn, s_vector, dot1 + 1);
    s_expect_reason(tok, "expected header.payload.signature");

    /* Characters outside base64url, in each part. */
    snprintf(tok, sizeof tok, "%s", s_vector);
    tok[3] = '+';
    s_expect_reason(tok, "header is not valid base64url");
    snprintf(tok, sizeof tok, "%s", s_vector);
    tok[hn + 4] = '/';
    s_expect_reason(tok, "payload is not valid base64url");
    snprintf(tok, sizeof tok, "%s", s_vector);
    tok[strlen(tok) - 2] = ' ';
    s_expect_reason(tok, "signature is not valid base64url");
    snprintf(tok, sizeof tok, " %s", s_vector);
    s_expect_reason(tok, "header is not valid base64url");

    /* Padding is not allowed (the header is 36 characters, so "==" would pad a whole group). */
    snprintf(tok, sizeof tok, "%s=", s_vector);
    s_expect_reason(tok, "signature is not valid base64url");
    snprintf(tok, sizeof tok, "%.*s==%s", (int)(dot2 - s_vector), s_vector, dot2);
    s_expect_reason(tok, "payload is not valid base64url");

    /* A 4k+1 length cannot be base64url; neither can non-zero leftover bits. */
    snprintf(tok, sizeof tok, "%.*sA%s", hn, s_vector, dot1);
    s_expect_reason(tok, "header is not valid base64url");
    snprintf(tok, sizeof tok, "%s", s_vector);
    tok[strlen(tok) - 1] = 'd'; /* 'c' ends in binary 00; 'd' leaves a stray bit */
    s_expect_reason(tok, "signature is not valid base64url");

    /* Header decodes but is not JSON. */
    snprintf(tok, sizeof tok, "bm90IGpzb24%s", dot1);
    s_expect_reason(tok, "header is not a JSON object");

    /* Over the size cap, even though the prefix is a valid token. */
    memset(tok, 'A', LH_TOKEN_MAX_SIZE + 1);
    memcpy(tok, s_vector, strlen(s_vector));
    tok[LH_TOKEN_MAX_SIZE + 1] = '\0';
    s_expect_reason(tok, "longer than 4096");
}

static void test_bad_claims(void **state)
{
    (void)state;
    char long_sub[LH_CLAIM_MAX + 64];
    snprintf(long_sub, sizeof long_sub, "{\"sub\":\"%0*d\",\"role\":\"r\",\"exp\":1700000060}",
             LH_CLAIM_MAX, 7);

    s_expect_refused(HS256, "{\"role\":\"r\",\"exp\":1700000060}", "'sub' is missing");
    s_expect_refused(HS256, "{\"sub\":\"u\",\"exp\":1700000060}", "'role' is missing");
    s_expect_refused(HS256, "{\"sub\":\"u\",\"role\":\"r\"}", "'exp' is missing");
    s_expect_refused(HS256, "{\"sub\":\"u\",\"role\":\"r\",\"exp\":\"1700000060\"}",
                     "'exp' must be an integer");
    s_expect_refused(HS256, "{\"sub\":\"u\",\"role\":\"r\",\"exp\":1700000060.0}",
                     "'exp' must be an integer");
    s_expect_refused(HS256, "{\"sub\":\"u\",\"role\":\"r\",\"exp\":null}",
                     "'exp' must be an integer");
    s_expect_refused(HS256, "{\"sub\":\"u\",\"role\":\"r\",\"exp\":1700000060,\"nbf\":true}",
                     "'nbf' must be an integer");
    s_expect_refused(HS256, "{\"sub\":\"u\",\"role\":\"r\",\"exp\":1700000060,\"iat\":\"x\"}",
                     "'iat' must be an integer");
    s_expect_refused(HS256, "{\"sub\":\"\",\"role\":\"r\",\"exp\":1700000060}", "'sub' is empty");
    s_expect_refused(HS256, "{\"sub\":\"u\",\"role\":\"\",\"exp\":1700000060}", "'role' is empty");
    s_expect_refused(HS256, "{\"sub\":42,\"role\":\"r\",\"exp\":1700000060}",
                     "'sub' must be a string");
    s_expect_refused(HS256, "{\"sub\":\"a\\u0000b\",\"role\":\"r\",\"exp\":1700000060}",
                     "payload is not a JSON object");
    s_expect_refused(HS256, long_sub, "'sub' is longer than 127");
    s_expect_refused(HS256, "{\"sub\":\"u\",\"sub\":\"v\",\"role\":\"r\",\"exp\":1700000060}",
                     "payload is not a JSON object");
    s_expect_refused(HS256, "[1,2]", "payload is not a JSON object");
    s_expect_refused(HS256, "{\"sub\":\"u\",\"role\":\"r\",\"exp\":99999999999999999999}",
                     "payload is not a JSON object");
}

/* Secrets. */

static void test_secret_env(void **state)
{
    (void)state;
    lh_error_t err = {{0}};
    size_t n = 0;
    setenv("LH_TEST_SECRET", "from-env", 1);
    char *s = lh_secret_resolve("env:LH_TEST_SECRET", &n, &err);
    assert_non_null(s);
    assert_string_equal(s, "from-env");
    assert_int_equal(n, 8);
    free(s);
    s = lh_secret_resolve("env:LH_TEST_SECRET", NULL, &err);
    assert_string_equal(s, "from-env");
    free(s);

    setenv("LH_TEST_SECRET", "", 1);
    assert_null(lh_secret_resolve("env:LH_TEST_SECRET", &n, &err));
    assert_string_equal(err.text, "environment variable LH_TEST_SECRET is empty");

    unsetenv("LH_TEST_SECRET");
    assert_null(lh_secret_resolve("env:LH_TEST_SECRET", &n, &err));
    assert_string_equal(err.text, "environment variable LH_TEST_SECRET is not set");

    assert_null(lh_secret_resolve("env:", &n, &err));
    assert_non_null(strstr(err.text, "names no variable"));
}

/* Writes data to a new temp file and returns its path (static buffer). */
static const char *s_temp_file(const void *data, size_t n)
{
    static char path[64];
    snprintf(path, sizeof path, "/tmp/lh_test_token_XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, n), (ssize_t)n);
    close(fd);
    return path;
}

/* Resolves file:<temp file holding data> and checks the result is want[0..want_n). */
static void s_expect_file_secret(const char *data, size_t n, const char *want, size_t want_n)
{
    char ref[80];
    const char *path = s_temp_file(data, n);
    snprintf(ref, sizeof ref, "file:%s", path);
    lh_error_t err = {{0}};
    size_t got_n = 99;
    char *s = lh_secret_resolve(ref, &got_n, &err);
    unlink(path);
    if (!s)
        fail_msg("resolve failed: %s", err.text);
    assert_int_equal(got_n, want_n);
    assert_memory_equal(s, want, want_n);
    assert_int_equal(s[got_n], '\0');
    free(s);
}

static void test_secret_file(void **state)
{
    (void)state;
    s_expect_file_secret("filesecret\n", 11, "filesecret", 10);
    s_expect_file_secret("filesecret", 10, "filesecret", 10);
    s_expect_file_secret("crlf\r\n", 6, "crlf", 4);
    /* Only one trailing newline goes; a lone \r stays. */
    s_expect_file_secret("two\n\n", 5, "two\n", 4);
    s_expect_file_secret("cr\r", 3, "cr\r", 3);
    /* Binary secrets keep their NUL bytes; size is the truth. */
    s_expect_file_secret("a\0b\n", 4, "a\0b", 3);

    /* Exactly 64 KiB is accepted, one byte more is not. */
    size_t big_n = 64 * 1024 + 1;
    char *big = malloc(big_n);
    assert_non_null(big);
    memset(big, 'k', big_n);
    s_expect_file_secret(big, big_n - 1, big, big_n - 1);
    const char *path = s_temp_file(big, big_n);
    char ref[80];
    snprintf(ref, sizeof ref, "file:%s", path);
    lh_error_t err = {{0}};
    assert_null(lh_secret_resolve(ref, NULL, &err));
    unlink(path);
    assert_non_null(strstr(err.text, path));
    assert_non_null(strstr(err.text, "larger than 64 KiB"));
    assert_null(strstr(err.text, "kkkk"));
    free(big);

    /* A file that only holds a newline is an empty secret. */
    path = s_temp_file("\n", 1);
    snprintf(ref, sizeof ref, "file:%s", path);
    assert_null(lh_secret_resolve(ref, NULL, &err));
    unlink(path);
    assert_non_null(strstr(err.text, "is empty"));
}

static void test_secret_file_missing(void **state)
{
    (void)state;
    lh_error_t err = {{0}};
    size_t n = 0;
    assert_null(lh_secret_resolve("file:/nonexistent/livehub/secret", &n, &err));
    assert_non_null(strstr(err.text, "/nonexistent/livehub/secret"));
    assert_non_null(strstr(err.text, strerror(ENOENT)));
    /* A directory opens but cannot be read. */
    assert_null(lh_secret_resolve("file:/tmp", &n, &err));
    assert_non_null(strstr(err.text, "/tmp"));
    assert_non_null(strstr(err.text, strerror(EISDIR)));
    assert_null(lh_secret_resolve("file:", &n, &err));
    assert_non_null(strstr(err.text, "names no path"));
}

static void test_secret_inline_refused(void **state)
{
    (void)state;
    static const char *const refs[] = {"hunter2",   "",       "ENV:HOME", "File:/etc/hostname",
                                       " env:HOME", "envHOME"};
    for (size_t i = 0; i < sizeof refs / sizeof refs[0]; i++) {
        lh_error_t err = {{0}};
        size_t n = 7;
        assert_null(lh_secret_resolve(refs[i], &n, &err));
        assert_string_equal(err.text, "secrets must be written as env:NAME or file:PATH");
    }
    lh_error_t err = {{0}};
    assert_null(lh_secret_resolve(NULL, NULL, &err));
    assert_string_equal(err.text, "secrets must be written as env:NAME or file:PATH");
    /* err may be NULL when the caller does not need a reason. */
    assert_null(lh_secret_resolve("hunter2", NULL, NULL));
}

/* A resolved secret drives mint and verify end to end. */
static void test_secret_with_token(void **state)
{
    (void)state;
    lh_error_t err = {{0}};
    const char *path = s_temp_file(SECRET "\n", strlen(SECRET) + 1);
    char ref[80];
    snprintf(ref, sizeof ref, "file:%s", path);
    size_t n = 0;
    char *secret = lh_secret_resolve(ref, &n, &err);
    unlink(path);
    assert_non_null(secret);
    assert_int_equal(lh_token_verify(s_vector, secret, n, NOW, 0, NULL, &err), 0);
    free(secret);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),          cmocka_unit_test(test_known_vector),
        cmocka_unit_test(test_mint_refusals),       cmocka_unit_test(test_verify_empty_secret),
        cmocka_unit_test(test_wrong_secret),        cmocka_unit_test(test_tampered_payload),
        cmocka_unit_test(test_tampered_signature),  cmocka_unit_test(test_tampered_header),
        cmocka_unit_test(test_alg_none_refused),    cmocka_unit_test(test_other_algs_refused),
        cmocka_unit_test(test_expiry_and_skew),     cmocka_unit_test(test_not_before),
        cmocka_unit_test(test_malformed),           cmocka_unit_test(test_bad_claims),
        cmocka_unit_test(test_secret_env),          cmocka_unit_test(test_secret_file),
        cmocka_unit_test(test_secret_file_missing), cmocka_unit_test(test_secret_inline_refused),
        cmocka_unit_test(test_secret_with_token),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
