/* UTF-8 validation shared by every decoder that accepts text from outside. */
#ifndef LIVEHUB_CORE_UTF8_H
#define LIVEHUB_CORE_UTF8_H
#include <stdbool.h>
#include <stddef.h>

/* True when bytes[0..size) is well-formed UTF-8 (RFC 3629: no overlongs, no surrogates, nothing
 * above U+10FFFF) and contains no NUL byte. */
bool lh_utf8_valid(const void *bytes, size_t size);

#endif
