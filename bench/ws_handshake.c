/* ws_handshake: Sec-WebSocket-Key and its Accept check (RFC 6455 §4.1), shared by the benches. */
#include "ws_handshake.h"

#include <openssl/evp.h>
#include <openssl/sha.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void ws_handshake_key(char out[WS_HANDSHAKE_KEY_SIZE])
{
    uint8_t raw[16];
    for (int i = 0; i < 16; i++)
        raw[i] = (uint8_t)(rand() >> 7); /* a bench needs distinct keys, not secret ones */
    EVP_EncodeBlock((unsigned char *)out, raw, 16);
}

bool ws_handshake_accepted(const char *key, const char *head)
{
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    char joined[64], expect[32];
    uint8_t digest[SHA_DIGEST_LENGTH];
    snprintf(joined, sizeof joined, "%s%s", key, guid);
    SHA1((const unsigned char *)joined, strlen(joined), digest);
    EVP_EncodeBlock((unsigned char *)expect, digest, SHA_DIGEST_LENGTH);
    const char *h = strcasestr(head, "\r\nSec-WebSocket-Accept:");
    if (!h)
        return false;
    h += strlen("\r\nSec-WebSocket-Accept:");
    while (*h == ' ')
        h++;
    return strncmp(h, expect, strlen(expect)) == 0;
}
