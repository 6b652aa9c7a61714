/* A real hub inside a fuzz target's process: the conf below, loaded and run by the core on a
 * thread of its own, with the plugins of this build tree. Fuzz inputs reach it the way a stranger's
 * bytes do, over TCP to the plugins' listeners. */
#ifndef LIVEHUB_TESTS_FUZZ_HUB_HARNESS_H
#define LIVEHUB_TESTS_FUZZ_HUB_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The listeners of the hub: a websocket sink (anonymous allowed, Socket.IO on /socket.io/,
 * client publications for admins, presence), a polling sink, an http_publish source. */
typedef struct {
    int websocket, polling, http_publish;
} fuzz_hub_ports_t;

/* Starts the hub once per process (later calls return the same ports) and publishes a few events
 * so that history has something to replay. Aborts when the hub cannot start. */
const fuzz_hub_ports_t *fuzz_hub_start(void);

/* A copy of data with every "@ADMIN@" replaced by a valid token of role admin, "@USER@" by one of
 * role client and "@KEY@" by the http_publish key: the fuzzer cannot forge signatures, so inputs
 * name them. New buffer (free()), NUL-terminated, its length in *size. */
char *fuzz_hub_substitute(const uint8_t *data, size_t size, size_t *out_size);

/* A TCP connection to 127.0.0.1:port whose reads and writes give up after timeout_ms; -1 (said on
 * stderr) when the port refuses connections for 10 s. */
int fuzz_connect(int port, int timeout_ms);
/* Writes everything it can (a peer that closed early is not an error). */
void fuzz_send(int fd, const void *data, size_t size);
/* Reads until the peer closes, the time-out passes or max bytes came; returns the bytes read into
 * buffer (NUL-terminated, at most capacity - 1 kept). */
size_t fuzz_read_until_close(int fd, char *buffer, size_t capacity);
/* Reads one HTTP answer: until the peer closes, the time-out passes, or the headers and as many
 * body bytes as Content-Length says have come. Returns the bytes kept (as above). */
size_t fuzz_read_answer(int fd, char *buffer, size_t capacity);
/* Sends data (substituted, see fuzz_hub_substitute) to port as raw bytes and reads the answer;
 * what a stranger's HTTP client does. */
void fuzz_http_exchange(int port, const uint8_t *data, size_t size);
/* Upgrades the connection at path to a WebSocket; true when the server answered 101. */
bool fuzz_ws_upgrade(int fd, const char *path);
/* Reads the server's frames until its close frame (or EOF, or the time-out): a server may wait
 * for the client to hang up after answering a close, so reading until EOF would wait for that. */
void fuzz_ws_read_until_close_frame(int fd);
/* Sends one masked WebSocket frame (opcode 1 text, 8 close, 9 ping) holding data. */
void fuzz_ws_send(int fd, int opcode, const void *data, size_t size);

#endif
