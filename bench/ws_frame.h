/* ws_frame: reading the header of a server-to-client WebSocket frame, for the bench load programs.
 */
#ifndef LIVEHUB_BENCH_WS_FRAME_H
#define LIVEHUB_BENCH_WS_FRAME_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    WS_FRAME_BAD = -1,    /* 64-bit length, masked, fragmented, or larger than the buffer */
    WS_FRAME_PARTIAL = 0, /* more bytes are needed */
    WS_FRAME_WHOLE = 1,   /* head + size bytes at p are the whole frame */
} ws_frame_status_t;

/* Reads the frame at p (avail bytes there, at least 2) into *opcode, *head and *size. Frames
 * whose head + size exceed cap are BAD: they would never fit the client's buffer. */
ws_frame_status_t ws_frame_read_header(const uint8_t *p, size_t avail, size_t cap, int *opcode,
                                       size_t *head, size_t *size);

#endif
