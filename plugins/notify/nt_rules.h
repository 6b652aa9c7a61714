/* notify: per-event-type rules (templates, urgency, icon, sound) read from JSON. */
#ifndef NT_RULES_H
#define NT_RULES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <livehub/error.h>

typedef enum { NT_URGENCY_LOW = 0, NT_URGENCY_NORMAL = 1, NT_URGENCY_CRITICAL = 2 } nt_urgency_t;

/* One rule; strings are owned by the rule set. NULL summary/body/... means "not set". */
typedef struct {
    char *pattern; /* glob on the event type (fnmatch) */
    bool enabled;
    char *summary, *body;                     /* templates for one event */
    char *coalesced_summary, *coalesced_body; /* templates for a burst, with {count} */
    char *url;                                /* action URL template; NULL: no action */
    char *icon, *category;
    char *sound;      /* freedesktop sound theme event id; "" for none */
    char *sound_file; /* a file to play instead of the theme sound */
    nt_urgency_t urgency;
    int64_t expire_ms; /* -1: the server decides; 0: never expires */
} nt_rule_t;

/* Values a rule takes when it does not set them (the stage's options). */
typedef struct {
    const char *icon;
    const char *sound;
    nt_urgency_t urgency;
    int64_t expire_ms;
} nt_rule_defaults_t;

typedef struct {
    nt_rule_t *rules;
    size_t count;
} nt_rules_t;

/* Loads rules from a JSON file (path NULL: the built-in rules, which cover the seed's
 * vocabulary). The file is an object whose keys are type patterns, tried in file order, each
 * holding {summary, body, coalesced_summary, coalesced_body, url, icon, category, urgency
 * ("low"|"normal"|"critical"), sound, sound_file, expire (ms), enabled}. Every template is
 * checked. A type no pattern matches is not notified. Returns 0, or -1 with a reason naming the
 * pattern and key. */
int nt_rules_load(nt_rules_t *rules, const char *path, const nt_rule_defaults_t *defaults,
                  lh_error_t *err);
void nt_rules_free(nt_rules_t *rules);

/* The index of the first rule whose pattern matches type, or -1. */
int nt_rules_find(const nt_rules_t *rules, const char *type);

/* "low" | "normal" | "critical" to an urgency; -1 when it is none of those. */
int nt_urgency_parse(const char *text);

#endif
