/* secret: resolving env:NAME / file:PATH secret references from a conf. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "livehub/token.h"

#define S_FILE_MAX (64 * 1024) /* a secret file larger than this is surely the wrong file */

static char *s_from_env(const char *name, size_t *size, lh_error_t *err)
{
    if (name[0] == '\0') {
        lh_error_set(err, "secret reference env: names no variable");
        return NULL;
    }
    const char *value = getenv(name);
    if (!value) {
        lh_error_set(err, "environment variable %s is not set", name);
        return NULL;
    }
    size_t n = strlen(value);
    if (n == 0) {
        lh_error_set(err, "environment variable %s is empty", name);
        return NULL;
    }
    char *copy = malloc(n + 1);
    if (!copy) {
        lh_error_set(err, "out of memory reading environment variable %s", name);
        return NULL;
    }
    memcpy(copy, value, n + 1);
    *size = n;
    return copy;
}

/* Frees a buffer that may hold secret bytes, wiping it first. */
static void s_wipe_free(char *buf, size_t n)
{
    OPENSSL_cleanse(buf, n);
    free(buf);
}

static char *s_from_file(const char *path, size_t *size, lh_error_t *err)
{
    if (path[0] == '\0') {
        lh_error_set(err, "secret reference file: names no path");
        return NULL;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        lh_error_set(err, "cannot open secret file %s: %s", path, strerror(errno));
        return NULL;
    }
    /* One byte past the cap tells "exactly 64 KiB" apart from "larger". */
    size_t cap = S_FILE_MAX + 1;
    char *buf = malloc(cap + 1);
    if (!buf) {
        close(fd);
        lh_error_set(err, "out of memory reading secret file %s", path);
        return NULL;
    }
    size_t n = 0;
    while (n < cap) {
        ssize_t got = read(fd, buf + n, cap - n);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            int e = errno;
            close(fd);
            s_wipe_free(buf, cap + 1);
            lh_error_set(err, "cannot read secret file %s: %s", path, strerror(e));
            return NULL;
        }
        if (got == 0)
            break;
        n += (size_t)got;
    }
    close(fd);
    if (n > S_FILE_MAX) {
        s_wipe_free(buf, cap + 1);
        lh_error_set(err, "secret file %s is larger than %d KiB", path, S_FILE_MAX / 1024);
        return NULL;
    }
    /* Editors add a final newline; it is not part of the secret. */
    if (n > 0 && buf[n - 1] == '\n') {
        n--;
        if (n > 0 && buf[n - 1] == '\r')
            n--;
    }
    if (n == 0) {
        s_wipe_free(buf, cap + 1);
        lh_error_set(err, "secret file %s is empty", path);
        return NULL;
    }
    /* Hand back an exact-size copy rather than the 64 KiB read buffer. */
    char *secret = malloc(n + 1);
    if (!secret) {
        s_wipe_free(buf, cap + 1);
        lh_error_set(err, "out of memory reading secret file %s", path);
        return NULL;
    }
    memcpy(secret, buf, n);
    secret[n] = '\0';
    s_wipe_free(buf, cap + 1);
    *size = n;
    return secret;
}

char *lh_secret_resolve(const char *reference, size_t *size, lh_error_t *err)
{
    size_t ignored;
    if (!size)
        size = &ignored;
    /* The reference itself is never echoed: an inline secret is exactly what we refuse. */
    if (reference && strncmp(reference, "env:", 4) == 0)
        return s_from_env(reference + 4, size, err);
    if (reference && strncmp(reference, "file:", 5) == 0)
        return s_from_file(reference + 5, size, err);
    lh_error_set(err, "secrets must be written as env:NAME or file:PATH");
    return NULL;
}
