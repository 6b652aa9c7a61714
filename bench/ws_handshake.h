/* ws_handshake: the client side of the RFC 6455 opening handshake, for the bench load programs. */
#ifndef LIVEHUB_BENCH_WS_HANDSHAKE_H
#define LIVEHUB_BENCH_WS_HANDSHAKE_H

#include <stdbool.h>

#define WS_HANDSHAKE_KEY_SIZE 25 /* 24 base64 characters of 16 random bytes, and the NUL */

/* A fresh Sec-WebSocket-Key. */
void ws_handshake_key(char out[WS_HANDSHAKE_KEY_SIZE]);

/* True when the response head carries the Sec-WebSocket-Accept that key asks for. */
bool ws_handshake_accepted(const char *key, const char *head);

#endif
