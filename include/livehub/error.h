/* livehub SDK: error reports shared by every API that can fail. */
#ifndef LIVEHUB_ERROR_H
#define LIVEHUB_ERROR_H

#ifdef __cplusplus
extern "C" {
#endif

/* A human-readable reason for a failure. Every function that takes an `lh_error_t *err` fills it
 * when it fails (returns -1 or NULL) and leaves it alone on success; `err` may be NULL when the
 * caller does not care why. Texts never contain secrets or token contents. */
typedef struct lh_error {
    char text[256];
} lh_error_t;

/* Sets err->text with printf formatting; does nothing when err is NULL. */
void lh_error_set(lh_error_t *err, const char *format, ...) __attribute__((format(printf, 2, 3)));

#ifdef __cplusplus
}
#endif
#endif
