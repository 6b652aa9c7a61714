/* notify: text templates with {field} substitution from an event. */
#ifndef NT_TEMPLATE_H
#define NT_TEMPLATE_H

#include <jansson.h>
#include <livehub/error.h>

/* How substituted values are escaped (the literal template text never is). */
typedef enum {
    NT_ESCAPE_NONE,   /* summary: plain text per the notification spec */
    NT_ESCAPE_MARKUP, /* body: the spec's small XML-like markup, so & < > ' " are escaped */
    NT_ESCAPE_URL,    /* action URL: values are percent-encoded */
} nt_escape_t;

/* 0 when text is a valid template, else -1 with a reason: a '{' without its '}', an empty or
 * over-long field name. "{{" and "}}" stand for literal braces. */
int nt_template_check(const char *text, lh_error_t *err);

/* Renders text with each {path} replaced by the value found in scope, a JSON object. A path is
 * dot-separated (data.signalIdentifier); a first segment missing from scope is looked up in
 * scope.data, so {signalIdentifier} works too. Strings go in as they are, numbers and booleans in
 * their JSON form, a missing or null value as "", objects and arrays as compact JSON.
 * Returns a new string (free()) or NULL when out of memory. */
char *nt_template_render(const char *text, const json_t *scope, nt_escape_t escape);

#endif
