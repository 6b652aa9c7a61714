/* Fuzz target: Engine.IO v4 and Socket.IO v5 packets (plugins/websocket/ws_engineio.c,
 * ws_socketio.c), through the real hub and libwebsockets (hub_harness.h). The first byte says how
 * the rest arrives:
 *   'w': text lines, each one WebSocket frame on /socket.io/?EIO=4&transport=websocket;
 *   'p': one POST body of the polling transport, after the handshake that gives its sid;
 *   anything else: raw HTTP bytes to the websocket plugin's port (handshakes, queries, upgrades).
 * "@ADMIN@" and "@USER@" become valid tokens. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "fuzz.h"
#include "hub_harness.h"

static const fuzz_hub_ports_t *s_ports;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    s_ports = fuzz_hub_start();
    return 0;
}

static void s_websocket(const char *text, size_t size)
{
    int fd = fuzz_connect(s_ports->websocket, 1000);
    FUZZ_CHECK(fd >= 0);
    if (fuzz_ws_upgrade(fd, "/socket.io/?EIO=4&transport=websocket")) {
        for (const char *line = text, *end = text + size; line < end;) {
            const char *newline = memchr(line, '\n', (size_t)(end - line));
            size_t line_size = newline ? (size_t)(newline - line) : (size_t)(end - line);
            fuzz_ws_send(fd, 1, line, line_size);
            line += line_size + 1;
        }
        fuzz_ws_send(fd, 8, "\x03\xe8", 2);
        fuzz_ws_read_until_close_frame(fd);
    }
    close(fd);
}

static void s_polling(const char *body, size_t size)
{
    static const char open[] = "GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\n"
                               "Host: 127.0.0.1\r\nConnection: close\r\n\r\n";
    int fd = fuzz_connect(s_ports->websocket, 1000);
    FUZZ_CHECK(fd >= 0);
    fuzz_send(fd, open, strlen(open));
    char answer[4096];
    fuzz_read_answer(fd, answer, sizeof answer);
    close(fd);
    const char *sid = strstr(answer, "\"sid\":\"");
    if (!sid)
        return;
    sid += 7;
    const char *quote = strchr(sid, '"');
    if (!quote || quote - sid > 64)
        return;
    char head[512];
    int head_size = snprintf(head, sizeof head,
                             "POST /socket.io/?EIO=4&transport=polling&sid=%.*s HTTP/1.1\r\n"
                             "Host: 127.0.0.1\r\nContent-Type: text/plain;charset=UTF-8\r\n"
                             "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                             (int)(quote - sid), sid, size);
    fd = fuzz_connect(s_ports->websocket, 2000);
    FUZZ_CHECK(fd >= 0);
    fuzz_send(fd, head, (size_t)head_size);
    fuzz_send(fd, body, size);
    fuzz_read_answer(fd, answer, sizeof answer);
    close(fd);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    if (data[0] != 'w' && data[0] != 'p') {
        fuzz_http_exchange(s_ports->websocket, data, size);
        return 0;
    }
    size_t text_size;
    char *text = fuzz_hub_substitute(data + 1, size - 1, &text_size);
    if (data[0] == 'w')
        s_websocket(text, text_size);
    else
        s_polling(text, text_size);
    free(text);
    return 0;
}
