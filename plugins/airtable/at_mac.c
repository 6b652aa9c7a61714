/* airtable: the notification ping's MAC (airtable-api.md §1.2): HMAC-SHA256 keyed with the
 * base64-decoded macSecretBase64 over the raw body, sent as "hmac-sha256=<lowercase hex>". */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include "at_internal.h"

bool at_id_valid(const char *text, const char *prefix)
{
    if (!text || strlen(text) != AT_ID_SIZE || strncmp(text, prefix, 3) != 0)
        return false;
    for (size_t i = 3; i < AT_ID_SIZE; i++)
        if (!isalnum((unsigned char)text[i]))
            return false;
    return true;
}

int at_base64_decode(const char *text, unsigned char **key, size_t *size)
{
    size_t length = strlen(text);
    if (length == 0 || length % 4 != 0)
        return -1;
    unsigned char *out = malloc(length / 4 * 3 + 1);
    if (!out)
        return -1;
    /* EVP_DecodeBlock counts the padding as data bytes, so take them off again. */
    int decoded = EVP_DecodeBlock(out, (const unsigned char *)text, (int)length);
    if (decoded < 0) {
        free(out);
        return -1;
    }
    size_t padding = text[length - 1] == '=' ? (text[length - 2] == '=' ? 2 : 1) : 0;
    *key = out;
    *size = (size_t)decoded - padding;
    return 0;
}

bool at_mac_verify(const unsigned char *key, size_t key_size, const void *body, size_t body_size,
                   const char *header)
{
    static const char prefix[] = "hmac-sha256=";
    if (!key || key_size == 0 || !header || strncmp(header, prefix, sizeof prefix - 1) != 0)
        return false;
    const char *hex = header + sizeof prefix - 1;
    if (strlen(hex) != 64)
        return false;
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mac_size = 0;
    if (!HMAC(EVP_sha256(), key, (int)key_size, body, body_size, mac, &mac_size) || mac_size != 32)
        return false;
    char expected[65];
    static const char digits[] = "0123456789abcdef";
    for (unsigned i = 0; i < 32; i++) {
        expected[2 * i] = digits[mac[i] >> 4];
        expected[2 * i + 1] = digits[mac[i] & 15];
    }
    return CRYPTO_memcmp(expected, hex, 64) == 0;
}
