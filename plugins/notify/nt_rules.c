/* notify: the rule table. Loaded with jansson (already an SDK dependency) so that a rules file is
 * ordinary JSON, and so that the built-in rules are written the same way as a user's. */
#include <fnmatch.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>
#include "nt_rules.h"
#include "nt_template.h"

/* The seed's toast ("New Signal Assignment" / "You've been assigned: ...") and sensible texts for
 * the rest of its vocabulary; anything else stays silent unless a rules file says otherwise. */
static const char s_builtin[] =
    "{\"assignment:created\": {\"summary\": \"New Signal Assignment\","
    " \"body\": \"You've been assigned: {signalIdentifier}\","
    " \"coalesced_summary\": \"{count} new assignments\","
    " \"coalesced_body\": \"Latest: {signalIdentifier}\", \"category\": \"im.received\"},"
    " \"assignment:responseChanged\": {\"summary\": \"Assignment updated\","
    " \"body\": \"{signalIdentifier}: {response}\", \"urgency\": \"low\", \"sound\": \"\"},"
    " \"signal:assigned\": {\"summary\": \"Signal assigned\", \"body\": \"{signalIdentifier}\"},"
    " \"connection:statusChanged\": {\"summary\": \"Connection {status}\", \"urgency\": \"low\","
    " \"sound\": \"\"}}";

static const char *const s_keys[] = {
    "summary", "body",  "coalesced_summary", "coalesced_body", "url",     "icon", "category",
    "urgency", "sound", "sound_file",        "expire",         "enabled", NULL};
static const char *const s_templates[] = {"summary",        "body", "coalesced_summary",
                                          "coalesced_body", "url",  NULL};

int nt_urgency_parse(const char *text)
{
    return strcmp(text, "low") == 0        ? NT_URGENCY_LOW
           : strcmp(text, "normal") == 0   ? NT_URGENCY_NORMAL
           : strcmp(text, "critical") == 0 ? NT_URGENCY_CRITICAL
                                           : -1;
}

/* A new copy of the string member key, or of fallback when it is absent. */
static int s_string(const json_t *spec, const char *key, const char *fallback, char **out,
                    const char *pattern, lh_error_t *err)
{
    const json_t *value = json_object_get(spec, key);
    if (value && !json_is_string(value)) {
        lh_error_set(err, "rule '%s': %s must be a string", pattern, key);
        return -1;
    }
    const char *text = value ? json_string_value(value) : fallback;
    *out = text ? strdup(text) : NULL;
    return 0;
}

static int s_check_keys(const json_t *spec, const char *pattern, lh_error_t *err)
{
    const char *key;
    const json_t *value;
    json_object_foreach((json_t *)spec, key, value)
    {
        size_t i = 0;
        while (s_keys[i] && strcmp(s_keys[i], key) != 0)
            i++;
        if (!s_keys[i]) {
            lh_error_set(err, "rule '%s': unknown key '%s'", pattern, key);
            return -1;
        }
    }
    for (size_t i = 0; s_templates[i]; i++) {
        const json_t *text = json_object_get(spec, s_templates[i]);
        lh_error_t reason;
        if (json_is_string(text) && nt_template_check(json_string_value(text), &reason) != 0) {
            lh_error_set(err, "rule '%s': %s: %s", pattern, s_templates[i], reason.text);
            return -1;
        }
    }
    return 0;
}

static int s_rule(nt_rule_t *rule, const char *pattern, const json_t *spec,
                  const nt_rule_defaults_t *defaults, lh_error_t *err)
{
    if (!json_is_object(spec)) {
        lh_error_set(err, "rule '%s': expected an object", pattern);
        return -1;
    }
    if (s_check_keys(spec, pattern, err) != 0)
        return -1;
    rule->pattern = strdup(pattern);
    if (s_string(spec, "summary", "{type}", &rule->summary, pattern, err) ||
        s_string(spec, "body", "", &rule->body, pattern, err) ||
        s_string(spec, "coalesced_summary", "{count} × {type}", &rule->coalesced_summary, pattern,
                 err) ||
        s_string(spec, "coalesced_body", "", &rule->coalesced_body, pattern, err) ||
        s_string(spec, "url", NULL, &rule->url, pattern, err) ||
        s_string(spec, "icon", defaults->icon, &rule->icon, pattern, err) ||
        s_string(spec, "category", NULL, &rule->category, pattern, err) ||
        s_string(spec, "sound", defaults->sound, &rule->sound, pattern, err) ||
        s_string(spec, "sound_file", NULL, &rule->sound_file, pattern, err))
        return -1;
    const json_t *urgency = json_object_get(spec, "urgency");
    int level = urgency
                    ? nt_urgency_parse(json_is_string(urgency) ? json_string_value(urgency) : "")
                    : (int)defaults->urgency;
    if (level < 0) {
        lh_error_set(err, "rule '%s': urgency must be \"low\", \"normal\" or \"critical\"",
                     pattern);
        return -1;
    }
    rule->urgency = (nt_urgency_t)level;
    const json_t *expire = json_object_get(spec, "expire");
    if (expire && (!json_is_integer(expire) || json_integer_value(expire) < -1 ||
                   json_integer_value(expire) > 86400000)) {
        lh_error_set(err, "rule '%s': expire must be -1 (server default), 0 (never) or ms",
                     pattern);
        return -1;
    }
    rule->expire_ms = expire ? json_integer_value(expire) : defaults->expire_ms;
    const json_t *enabled = json_object_get(spec, "enabled");
    if (enabled && !json_is_boolean(enabled)) {
        lh_error_set(err, "rule '%s': enabled must be true or false", pattern);
        return -1;
    }
    rule->enabled = enabled ? json_is_true(enabled) : true;
    return 0;
}

int nt_rules_load(nt_rules_t *rules, const char *path, const nt_rule_defaults_t *defaults,
                  lh_error_t *err)
{
    memset(rules, 0, sizeof *rules);
    json_error_t parse;
    json_t *root = path ? json_load_file(path, JSON_REJECT_DUPLICATES, &parse)
                        : json_loads(s_builtin, JSON_REJECT_DUPLICATES, &parse);
    if (!root) {
        lh_error_set(err, "%s:%d:%d: %s", path ? path : "built-in rules", parse.line, parse.column,
                     parse.text);
        return -1;
    }
    if (!json_is_object(root) || json_object_size(root) == 0) {
        lh_error_set(err, "%s: expected an object of type patterns to rules", path);
        json_decref(root);
        return -1;
    }
    rules->rules = calloc(json_object_size(root), sizeof *rules->rules);
    int rc = rules->rules ? 0 : -1;
    if (rc != 0)
        lh_error_set(err, "out of memory");
    const char *pattern;
    json_t *spec;
    json_object_foreach(root, pattern, spec)
    {
        if (rc != 0)
            break;
        rc = s_rule(&rules->rules[rules->count++], pattern, spec, defaults, err);
    }
    json_decref(root);
    if (rc != 0)
        nt_rules_free(rules);
    return rc;
}

void nt_rules_free(nt_rules_t *rules)
{
    for (size_t i = 0; i < rules->count; i++) {
        nt_rule_t *rule = &rules->rules[i];
        char *strings[] = {
            rule->pattern,        rule->summary,   rule->body, rule->coalesced_summary,
            rule->coalesced_body, rule->url,       rule->icon, rule->category,
            rule->sound,          rule->sound_file};
        for (size_t j = 0; j < sizeof strings / sizeof *strings; j++)
            free(strings[j]);
    }
    free(rules->rules);
    memset(rules, 0, sizeof *rules);
}

int nt_rules_find(const nt_rules_t *rules, const char *type)
{
    for (size_t i = 0; i < rules->count; i++)
        if (fnmatch(rules->rules[i].pattern, type, 0) == 0)
            return (int)i;
    return -1;
}
