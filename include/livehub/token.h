/* livehub SDK: the HS256 JSON Web Tokens that browser connections present (DESIGN §4). */
#ifndef LIVEHUB_TOKEN_H
#define LIVEHUB_TOKEN_H

#include <stddef.h>
#include <stdint.h>
#include "livehub/error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Longest accepted token text and claim values; longer ones are refused, never truncated. */
#define LH_TOKEN_MAX_SIZE 4096
#define LH_CLAIM_MAX 128

typedef struct lh_claims {
    char sub[LH_CLAIM_MAX];  /* user id; required, non-empty */
    char role[LH_CLAIM_MAX]; /* e.g. "admin", "startup"; required, non-empty */
    int64_t exp;             /* expiry, seconds since the Unix epoch; required */
    int64_t nbf;             /* not-before, 0 when absent */
    int64_t iat;             /* issued-at, 0 when absent */
} lh_claims_t;

/* Mints "header.payload.signature" with header {"alg":"HS256","typ":"JWT"} and claims
 * sub, role, iat = now, exp = now + ttl_seconds. Returns a new string (caller frees) or NULL
 * with a reason (empty secret, empty sub/role, claim too long, ttl <= 0). */
char *lh_token_mint(const void *secret, size_t secret_size, const char *sub, const char *role,
                    int64_t ttl_seconds, int64_t now, lh_error_t *err);

/* Verifies a token and fills *claims. The algorithm is pinned: the header must say
 * "alg":"HS256" (so "none" and every other algorithm fail); the signature is compared in constant
 * time; exp must be later than now - skew_seconds and nbf (if present) no later than
 * now + skew_seconds. Malformed base64url, JSON, or claim types fail with a reason; an expired
 * token fails with a reason that begins "expired". Returns 0 or -1. */
int lh_token_verify(const char *token, const void *secret, size_t secret_size, int64_t now,
                    int64_t skew_seconds, lh_claims_t *claims, lh_error_t *err);

/* Resolves a secret reference from a conf value: "env:NAME" reads environment variable NAME,
 * "file:PATH" reads the whole file (one trailing newline removed). Any other text is refused,
 * so secrets are never written inline in a conf. Returns a new buffer (caller frees with free();
 * it is NUL-terminated and *size excludes the NUL) or NULL with a reason that names the variable
 * or path but never the secret. */
char *lh_secret_resolve(const char *reference, size_t *size, lh_error_t *err);

#ifdef __cplusplus
}
#endif
#endif
