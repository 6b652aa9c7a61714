/* ws_frame: the server frame header (RFC 6455 §5.2) as the bench clients read it. */
#include "ws_frame.h"

ws_frame_status_t ws_frame_read_header(const uint8_t *p, size_t avail, size_t cap, int *opcode,
                                       size_t *head, size_t *size)
{
    size_t n = p[1] & 0x7f, h = 2;
    /* none of the benchmarked servers sends these to a client */
    if (n == 127 || (p[1] & 0x80) || !(p[0] & 0x80))
        return WS_FRAME_BAD;
    if (n == 126) {
        if (avail < 4)
            return WS_FRAME_PARTIAL;
        n = (size_t)p[2] << 8 | p[3];
        h = 4;
    }
    if (h + n > cap)
        return WS_FRAME_BAD;
    if (avail < h + n)
        return WS_FRAME_PARTIAL;
    *opcode = p[0] & 0x0f;
    *head = h;
    *size = n;
    return WS_FRAME_WHOLE;
}
