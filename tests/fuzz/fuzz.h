/* The libFuzzer entry points every tests/fuzz target defines. The same target file links either
 * with libFuzzer (clang, -fsanitize=fuzzer: the fuzz_<name> programs) or with replay.c (any
 * compiler: fuzz_replay_<name>, which runs the kept inputs as a test). */
#ifndef LIVEHUB_TESTS_FUZZ_H
#define LIVEHUB_TESTS_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* An invariant of the code under test; unlike assert() it holds in release builds (NDEBUG) too,
 * so the replay tests check it everywhere. A failure aborts: libFuzzer keeps the input. */
#define FUZZ_CHECK(condition)                                                                     \
    do {                                                                                          \
        if (!(condition)) {                                                                       \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #condition);         \
            abort();                                                                              \
        }                                                                                         \
    } while (0)

#endif
