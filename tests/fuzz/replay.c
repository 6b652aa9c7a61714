/* Runs every input kept for a fuzz target (its seed corpus and the crashes found so far) through
 * LLVMFuzzerTestOneInput, so the optimised and sanitizer builds check them without libFuzzer.
 * Usage: fuzz_replay_<name> FILE|DIR...; a missing DIR holds nothing (regressions start empty).
 * Exits 0 after the last input (a crash or a sanitizer report ends it earlier), 2 when no input
 * was found at all: an empty corpus is a mistake, not a pass. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "fuzz.h"

static int s_compare(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int s_run_file(const char *path)
{
    FILE *file = fopen(path, "rb");
    if (!file) {
        fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
        return -1;
    }
    size_t capacity = 4096, size = 0;
    uint8_t *data = malloc(capacity);
    size_t got;
    while (data && (got = fread(data + size, 1, capacity - size, file)) > 0) {
        size += got;
        if (size == capacity) {
            uint8_t *grown = realloc(data, capacity * 2);
            if (!grown) {
                free(data);
                data = NULL;
            }
            data = grown;
            capacity *= 2;
        }
    }
    fclose(file);
    if (!data) {
        fprintf(stderr, "replay: %s: out of memory\n", path);
        return -1;
    }
    fprintf(stderr, "replay: %s (%zu bytes)\n", path, size);
    /* An exact-size copy, so a read past the end is seen by AddressSanitizer. */
    uint8_t *exact = malloc(size ? size : 1);
    if (exact)
        memcpy(exact, data, size);
    free(data);
    if (!exact)
        return -1;
    LLVMFuzzerTestOneInput(exact, size);
    free(exact);
    return 0;
}

/* Runs the regular files of dir in name order; returns how many, or -1. */
static int s_run_dir(const char *path)
{
    DIR *dir = opendir(path);
    if (!dir)
        return errno == ENOENT ? 0 : -1;
    char **names = NULL;
    size_t count = 0;
    struct dirent *entry;
    while ((entry = readdir(dir))) {
        if (entry->d_name[0] == '.')
            continue;
        char **grown = realloc(names, (count + 1) * sizeof *names);
        if (!grown)
            break;
        names = grown;
        if (asprintf(&names[count], "%s/%s", path, entry->d_name) < 0)
            break;
        count++;
    }
    closedir(dir);
    if (count > 0)
        qsort(names, count, sizeof *names, s_compare);
    int ran = 0;
    for (size_t i = 0; i < count; i++) {
        struct stat info;
        if (stat(names[i], &info) == 0 && S_ISREG(info.st_mode) && s_run_file(names[i]) == 0)
            ran++;
        free(names[i]);
    }
    free(names);
    return ran;
}

int main(int argc, char **argv)
{
    LLVMFuzzerInitialize(&argc, &argv);
    int total = 0;
    for (int i = 1; i < argc; i++) {
        struct stat info;
        int ran = stat(argv[i], &info) == 0 && S_ISREG(info.st_mode)
                      ? (s_run_file(argv[i]) == 0 ? 1 : -1)
                      : s_run_dir(argv[i]);
        if (ran < 0) {
            fprintf(stderr, "replay: cannot read %s\n", argv[i]);
            return 1;
        }
        total += ran;
    }
    fprintf(stderr, "replay: %d inputs, no crash\n", total);
    if (total == 0) {
        fflush(NULL);
        _exit(2); /* not through atexit(), where a target may turn every exit into 0 */
    }
    return 0;
}
