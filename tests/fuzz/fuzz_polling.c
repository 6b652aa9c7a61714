/* Fuzz target: raw HTTP requests, as a stranger's client writes them, to the polling sink (plugins/polling/poll_request.c: short and long polls, SSE
 * streams, presence, CORS, tokens in headers and query), through the real
 * hub and libwebsockets (hub_harness.h). "@ADMIN@", "@USER@" and "@KEY@" in the input become a
 * valid admin token, client token and API key. The hub must keep accepting connections. */
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
    fuzz_http_exchange(s_ports->polling, data, size);
    return 0;
}
