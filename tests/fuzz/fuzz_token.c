/* Fuzz target: the tokens browsers present (core/token.c lh_token_verify). Random text rarely
 * carries a valid signature, and the claims are only parsed behind one, so an input whose first
 * byte is 's' is "header JSON\npayload JSON" that this harness encodes and signs with the secret:
 * the claim parser then sees what the fuzzer writes. Any other input is verified as token text.
 * An accepted token must have non-empty sub and role. */
#include <string.h>
#include <time.h>
#include <openssl/hmac.h>
#include <livehub/token.h>
#include "fuzz.h"

static const char s_secret[] = "fuzz-secret-0123456789abcdef";

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    return 0;
}

/* Appends the unpadded base64url form of in to out at *at (out is large enough). */
static void s_base64url(const uint8_t *in, size_t size, char *out, size_t *at)
{
    static const char digits[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    for (size_t i = 0; i < size; i += 3) {
        uint32_t bits = (uint32_t)in[i] << 16;
        if (i + 1 < size)
            bits |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < size)
            bits |= in[i + 2];
        size_t chars = size - i >= 3 ? 4 : size - i + 1;
        for (size_t c = 0; c < chars; c++)
            out[(*at)++] = digits[(bits >> (18 - 6 * c)) & 63];
    }
}

static void s_verify(const char *token)
{
    lh_claims_t claims;
    lh_error_t err;
    if (lh_token_verify(token, s_secret, strlen(s_secret), (int64_t)time(NULL), 60, &claims,
                        &err) == 0)
        FUZZ_CHECK(claims.sub[0] && claims.role[0]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 2 * LH_TOKEN_MAX_SIZE)
        return 0;
    char token[3 * LH_TOKEN_MAX_SIZE];
    if (size > 0 && data[0] == 's') {
        const uint8_t *header = data + 1;
        const uint8_t *newline = memchr(header, '\n', size - 1);
        size_t header_size = newline ? (size_t)(newline - header) : size - 1;
        const uint8_t *payload = newline ? newline + 1 : data + size;
        size_t at = 0;
        s_base64url(header, header_size, token, &at);
        token[at++] = '.';
        s_base64url(payload, (size_t)(data + size - payload), token, &at);
        unsigned char signature[EVP_MAX_MD_SIZE];
        unsigned int signature_size = 0;
        HMAC(EVP_sha256(), s_secret, (int)strlen(s_secret), (const unsigned char *)token, at,
             signature, &signature_size);
        token[at++] = '.';
        s_base64url(signature, signature_size, token, &at);
        token[at] = '\0';
    } else {
        memcpy(token, data, size);
        token[size] = '\0';
    }
    s_verify(token);
    return 0;
}
