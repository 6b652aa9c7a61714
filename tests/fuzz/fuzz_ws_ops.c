/* Fuzz target: what a browser sends on a native WebSocket (plugins/websocket: ws_session.c's op
 * parsing and every op behind it, ws_auth.c, ws_publish.c, ws_presence.c), through the real hub
 * and libwebsockets (hub_harness.h). Input: text lines; a first line starting with '/' is the URL
 * to upgrade (default /ws/client), every other line is one text frame ("@ADMIN@" and "@USER@"
 * become valid tokens). Then a close frame; the server must answer it and close. */
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t text_size;
    char *text = fuzz_hub_substitute(data, size, &text_size);
    char *line = text, *end = text + text_size;
    const char *path = "/ws/client";
    char *newline = memchr(line, '\n', (size_t)(end - line));
    if (text_size > 0 && text[0] == '/') {
        if (newline)
            *newline = '\0';
        path = text;
        line = newline ? newline + 1 : end;
    }
    if (strlen(path) > 1024) {
        free(text);
        return 0;
    }
    int fd = fuzz_connect(s_ports->websocket, 1000);
    FUZZ_CHECK(fd >= 0); /* the hub still accepts connections */
    if (fuzz_ws_upgrade(fd, path)) {
        while (line < end) {
            newline = memchr(line, '\n', (size_t)(end - line));
            size_t line_size = newline ? (size_t)(newline - line) : (size_t)(end - line);
            fuzz_ws_send(fd, 1, line, line_size);
            line += line_size + 1;
        }
        fuzz_ws_send(fd, 8, "\x03\xe8", 2);
        fuzz_ws_read_until_close_frame(fd);
    }
    close(fd);
    free(text);
    return 0;
}
