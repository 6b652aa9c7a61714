/* airtable: the mapping from Airtable tables and fields (named in a JSON file, resolved to ids
 * through the base schema) to livehub events. Payloads carry only ids and V2 cell values
 * (airtable-api.md §5, §7); this module turns them into plain JSON events with audiences and
 * idempotency keys "airtable:<base>:<webhook>:<payload number>:<record>:<event>". */
#define _DEFAULT_SOURCE /* timegm, strptime */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <livehub/codec.h>
#include "at_internal.h"

#define AT_MAP_MAX (1 << 20)
/* How long after a nearly empty create its cell changes still raise a complete `updated` (unless
 * every mapped field has a value before). */
#define AT_SPARSE_WINDOW_S 300

typedef struct {
    const char *name;   /* borrowed from the map's JSON */
    const char *family; /* event type prefix, e.g. "signal" */
    const json_t *fields, *changes, *to;
    const char *public_field, *public_value;
    bool created, updated, deleted;
    char id[AT_ID_SIZE + 1];
    json_t *by_id;   /* fld id -> {"name", "type"}, every field of the table */
    json_t *by_name; /* field name -> fld id */
} s_table_t;

struct at_map {
    json_t *root;
    json_t *known_tables; /* every table id of the base's schema (mapped or not) -> true */
    s_table_t *tables;
    size_t count;
};

void at_map_destroy(at_map_t **self_p)
{
    at_map_t *self = *self_p;
    if (!self)
        return;
    for (size_t i = 0; i < self->count; i++) {
        json_decref(self->tables[i].by_id);
        json_decref(self->tables[i].by_name);
    }
    free(self->tables);
    json_decref(self->known_tables);
    json_decref(self->root);
    free(self);
    *self_p = NULL;
}

static bool s_string_array(const json_t *value)
{
    size_t i;
    const json_t *item;
    if (!json_is_array(value))
        return false;
    json_array_foreach(value, i, item) if (!json_is_string(item)) return false;
    return true;
}

static bool s_flag(const json_t *events, const char *key, bool fallback)
{
    const json_t *value = json_object_get(events, key);
    return json_is_boolean(value) ? json_is_true(value) : fallback;
}

static int s_load_table(s_table_t *table, const char *name, const json_t *spec, lh_error_t *err)
{
    table->name = name;
    table->family = json_string_value(json_object_get(spec, "family"));
    table->fields = json_object_get(spec, "fields");
    table->changes = json_object_get(spec, "changes");
    table->to = json_object_get(spec, "to");
    const json_t *when = json_object_get(spec, "public_when");
    const json_t *events = json_object_get(spec, "events");
    if (!json_is_object(spec) || !table->family || !table->family[0] ||
        strchr(table->family, ':')) {
        lh_error_set(err, "map: table '%s' needs \"family\" (an event type prefix without ':')",
                     name);
        return -1;
    }
    if ((table->fields && !s_string_array(table->fields)) ||
        (table->to && !s_string_array(table->to)) ||
        (table->changes && !json_is_object(table->changes)) ||
        (events && !json_is_object(events))) {
        lh_error_set(err,
                     "map: table '%s': fields and to are arrays of names, changes and "
                     "events objects",
                     name);
        return -1;
    }
    const char *field;
    const json_t *suffix;
    json_object_foreach((json_t *)table->changes, field, suffix)
    {
        if (!json_is_string(suffix) || !json_string_length(suffix) ||
            strchr(json_string_value(suffix), ':')) {
            lh_error_set(err, "map: table '%s': changes.%s must name an event (e.g. statusChanged)",
                         name, field);
            return -1;
        }
    }
    if (when) {
        table->public_field = json_string_value(json_object_get(when, "field"));
        table->public_value = json_string_value(json_object_get(when, "equals"));
        if (!table->public_field || !table->public_value) {
            lh_error_set(err, "map: table '%s': public_when needs field and equals", name);
            return -1;
        }
    }
    table->created = s_flag(events, "created", true);
    table->updated = s_flag(events, "updated", true);
    table->deleted = s_flag(events, "deleted", true);
    return 0;
}

at_map_t *at_map_load(const char *path, lh_error_t *err)
{
    FILE *file = fopen(path, "rb");
    if (!file) {
        lh_error_set(err, "map: cannot open %s", path);
        return NULL;
    }
    char *text = malloc(AT_MAP_MAX + 1);
    size_t size = text ? fread(text, 1, AT_MAP_MAX + 1, file) : 0;
    fclose(file);
    if (!text || size > AT_MAP_MAX) {
        lh_error_set(err, "map: %s is unreadable or larger than 1 MiB", path);
        free(text);
        return NULL;
    }
    lh_error_t parse_err;
    json_t *root = lh_json_parse(text, size, &parse_err);
    free(text);
    if (!root) {
        lh_error_set(err, "map: %s: %s", path, parse_err.text);
        return NULL;
    }
    at_map_t *self = calloc(1, sizeof *self);
    json_t *tables = json_object_get(root, "tables");
    if (!self || !json_is_object(tables) || json_object_size(tables) == 0) {
        lh_error_set(err, "map: %s needs a non-empty \"tables\" object", path);
        json_decref(root);
        free(self);
        return NULL;
    }
    self->root = root;
    self->tables = calloc(json_object_size(tables), sizeof *self->tables);
    const char *name;
    json_t *spec;
    json_object_foreach(tables, name, spec)
    {
        if (!self->tables || s_load_table(&self->tables[self->count++], name, spec, err) != 0) {
            at_map_destroy(&self);
            return NULL;
        }
    }
    return self;
}

/* "user:{Startup}" -> "Startup" in name (NULL when the template has no placeholder). */
static const char *s_placeholder(const char *template, char *name, size_t size)
{
    const char *open = strchr(template, '{'), *close = open ? strchr(open, '}') : NULL;
    if (!close || (size_t)(close - open - 1) >= size)
        return NULL;
    memcpy(name, open + 1, (size_t)(close - open - 1));
    name[close - open - 1] = '\0';
    return name;
}

static void s_candidates(char *out, size_t size, const json_t *array, const char *key)
{
    size_t i, used = 0;
    const json_t *item;
    out[0] = '\0';
    json_array_foreach(array, i, item)
    {
        const char *name = json_string_value(json_object_get(item, key));
        int n = snprintf(out + used, size - used, "%s'%s'", used ? ", " : "", name ? name : "?");
        if (n < 0 || (size_t)n >= size - used)
            break;
        used += (size_t)n;
    }
}

static int s_need_field(const s_table_t *table, const char *field, const json_t *fields,
                        lh_error_t *err)
{
    if (json_object_get(table->by_name, field))
        return 0;
    char candidates[200];
    s_candidates(candidates, sizeof candidates, fields, "name");
    lh_error_set(err, "map: table '%s' has no field '%s'; candidates: %s", table->name, field,
                 candidates);
    return -1;
}

static int s_resolve_table(s_table_t *table, const json_t *schema_table, lh_error_t *err)
{
    const json_t *fields = json_object_get(schema_table, "fields");
    const char *id = json_string_value(json_object_get(schema_table, "id"));
    if (!at_id_valid(id, "tbl") || !json_is_array(fields)) {
        lh_error_set(err, "schema: table '%s' has no id or fields", table->name);
        return -1;
    }
    snprintf(table->id, sizeof table->id, "%s", id);
    json_decref(table->by_id);
    json_decref(table->by_name);
    table->by_id = json_object();
    table->by_name = json_object();
    size_t i;
    const json_t *field;
    json_array_foreach(fields, i, field)
    {
        const char *fid = json_string_value(json_object_get(field, "id"));
        const char *name = json_string_value(json_object_get(field, "name"));
        const char *type = json_string_value(json_object_get(field, "type"));
        if (!fid || !name)
            continue;
        /* "name" is what events say, "bound" what the map's rules say: the same until a
         * rename is followed (at_map_follow_renames). */
        json_object_set_new(table->by_id, fid,
                            json_pack("{s:s, s:s, s:s}", "name", name, "bound", name, "type",
                                      type ? type : ""));
        json_object_set_new(table->by_name, name, json_string(fid));
    }
    const json_t *item;
    json_array_foreach(table->fields, i, item) if (s_need_field(table, json_string_value(item),
                                                                fields, err) != 0) return -1;
    const char *name;
    json_object_foreach((json_t *)table->changes, name,
                        item) if (s_need_field(table, name, fields, err) != 0) return -1;
    json_array_foreach(table->to, i, item)
    {
        char placeholder[128];
        if (s_placeholder(json_string_value(item), placeholder, sizeof placeholder) &&
            s_need_field(table, placeholder, fields, err) != 0)
            return -1;
    }
    if (table->public_field && s_need_field(table, table->public_field, fields, err) != 0)
        return -1;
    return 0;
}

int at_map_resolve(at_map_t *self, const json_t *schema, lh_error_t *err)
{
    const json_t *tables = json_object_get(schema, "tables");
    if (!json_is_array(tables)) {
        lh_error_set(err, "schema: answer has no \"tables\" array");
        return -1;
    }
    json_decref(self->known_tables);
    self->known_tables = json_object();
    const json_t *entry;
    size_t e;
    json_array_foreach(tables, e, entry)
    {
        const char *id = json_string_value(json_object_get(entry, "id"));
        if (id)
            json_object_set_new(self->known_tables, id, json_true());
    }
    for (size_t t = 0; t < self->count; t++) {
        const json_t *found = NULL, *item;
        size_t i;
        json_array_foreach(tables, i, item)
        {
            const char *name = json_string_value(json_object_get(item, "name"));
            if (name && strcmp(name, self->tables[t].name) == 0)
                found = item;
        }
        if (!found) {
            char candidates[200];
            s_candidates(candidates, sizeof candidates, tables, "name");
            lh_error_set(err, "map: the base has no table '%s'; candidates: %s",
                         self->tables[t].name, candidates);
            return -1;
        }
        if (s_resolve_table(&self->tables[t], found, err) != 0)
            return -1;
    }
    return 0;
}

/* ---- schema changes ----------------------------------------------------------------------- */

/* Calls visit on each field id of cells that the table does not know; stops at the first nonzero
 * return. */
typedef int(s_visit_fn)(s_table_t *table, const char *field);

static int s_unknown_cells(s_table_t *table, const json_t *cells, s_visit_fn *visit)
{
    const char *fid;
    const json_t *value;
    json_object_foreach((json_t *)cells, fid, value)
    {
        if (!json_object_get(table->by_id, fid) && visit(table, fid) != 0)
            return 1;
    }
    return 0;
}

static int s_unknown_fields(s_table_t *table, const json_t *changes, s_visit_fn *visit)
{
    const char *record;
    const json_t *entry;
    json_object_foreach((json_t *)json_object_get(changes, "createdRecordsById"), record, entry)
    {
        if (s_unknown_cells(table, json_object_get(entry, "cellValuesByFieldId"), visit))
            return 1;
    }
    const char *parts[] = {"current", "previous", "unchanged"};
    json_object_foreach((json_t *)json_object_get(changes, "changedRecordsById"), record, entry)
    {
        for (size_t i = 0; i < 3; i++)
            if (s_unknown_cells(
                    table, json_object_get(json_object_get(entry, parts[i]), "cellValuesByFieldId"),
                    visit))
                return 1;
    }
    return 0;
}

static int s_stop(s_table_t *table, const char *field)
{
    (void)table;
    (void)field;
    return 1;
}

static int s_remember(s_table_t *table, const char *field)
{
    /* Nameless: such cells stay out of events, as before. */
    json_object_set_new(table->by_id, field, json_object());
    return 0;
}

bool at_map_knows(const at_map_t *self, const json_t *payload)
{
    const char *tid;
    const json_t *changes;
    json_object_foreach((json_t *)json_object_get(payload, "changedTablesById"), tid, changes)
    {
        if (!self->known_tables || !json_object_get(self->known_tables, tid))
            return false;
        for (size_t t = 0; t < self->count; t++) {
            if (strcmp(self->tables[t].id, tid) != 0)
                continue;
            /* Field or table metadata changed (only with the tableFields/tableMetadata types):
             * names may have moved. */
            if (json_object_get(changes, "createdFieldsById") ||
                json_object_get(changes, "changedFieldsById") ||
                json_object_get(changes, "destroyedFieldIds") ||
                json_object_get(changes, "changedMetadata") ||
                s_unknown_fields(&self->tables[t], changes, s_stop))
                return false;
        }
    }
    return true;
}

void at_map_mark_seen(at_map_t *self, const json_t *payload)
{
    const char *tid;
    const json_t *changes;
    if (!self->known_tables)
        self->known_tables = json_object();
    json_object_foreach((json_t *)json_object_get(payload, "changedTablesById"), tid, changes)
    {
        json_object_set_new(self->known_tables, tid, json_true());
        for (size_t t = 0; t < self->count; t++)
            if (strcmp(self->tables[t].id, tid) == 0 && json_is_object(changes))
                s_unknown_fields(&self->tables[t], changes, s_remember);
    }
}

json_t *at_map_follow_renames(at_map_t *self, const json_t *schema)
{
    json_t *renames = json_array();
    const json_t *tables = json_object_get(schema, "tables"), *entry;
    size_t e;
    json_array_foreach(tables, e, entry)
    {
        const char *tid = json_string_value(json_object_get(entry, "id"));
        for (size_t t = 0; tid && t < self->count; t++) {
            s_table_t *table = &self->tables[t];
            if (strcmp(table->id, tid) != 0)
                continue;
            size_t i;
            const json_t *field;
            json_array_foreach(json_object_get(entry, "fields"), i, field)
            {
                const char *fid = json_string_value(json_object_get(field, "id"));
                const char *name = json_string_value(json_object_get(field, "name"));
                const char *type = json_string_value(json_object_get(field, "type"));
                if (!fid || !name)
                    continue;
                json_t *known = json_object_get(table->by_id, fid);
                const char *was = json_string_value(json_object_get(known, "name"));
                if (was && strcmp(was, name) == 0)
                    continue;
                if (was)
                    json_array_append_new(renames, json_pack("{s:s, s:s, s:s}", "table",
                                                             table->name, "from", was, "to", name));
                /* A field new to the map (or only seen as a nameless id) is bound by its name,
                 * unless the map already means another field by that name. */
                const char *bound = json_string_value(json_object_get(known, "bound"));
                json_t *entry_new = json_pack("{s:s, s:s, s:s}", "name", name, "bound",
                                              bound ? bound : name, "type", type ? type : "");
                if (!bound && !json_object_get(table->by_name, name))
                    json_object_set_new(table->by_name, name, json_string(fid));
                json_object_set_new(table->by_id, fid, entry_new);
            }
        }
    }
    return renames;
}

json_t *at_map_watched_fields(const at_map_t *self)
{
    json_t *ids = json_array();
    for (size_t t = 0; t < self->count; t++) {
        const char *name;
        const json_t *id;
        json_object_foreach(self->tables[t].by_name, name, id) json_array_append(ids, (json_t *)id);
    }
    return ids;
}

/* ---- payload to events ------------------------------------------------------------------ */

/* A V2 cell value as plain JSON (§7): selects become their name, links {id, name}, lookups their
 * values, collaborators {id, email, name}; everything else is kept as it is. New reference. */
static json_t *s_plain(const json_t *value, const char *type)
{
    if (!type)
        type = "";
    if (json_is_object(value) && json_is_string(json_object_get(value, "name")) &&
        (strcmp(type, "singleSelect") == 0 || strcmp(type, "externalSyncSource") == 0))
        return json_incref(json_object_get(value, "name"));
    if (json_is_array(value) && strcmp(type, "multipleSelects") == 0) {
        json_t *names = json_array();
        size_t i;
        const json_t *item;
        json_array_foreach(value, i, item) json_array_append(
            names, json_object_get(item, "name") ? json_object_get(item, "name") : json_null());
        return names;
    }
    if (json_is_array(value) && strcmp(type, "multipleRecordLinks") == 0) {
        json_t *links = json_array();
        size_t i;
        const json_t *item;
        json_array_foreach(value, i, item) json_array_append_new(
            links, json_pack("{s:O?, s:O?}", "id", json_object_get(item, "id"), "name",
                             json_object_get(item, "name")));
        return links;
    }
    if (json_is_object(value) && strcmp(type, "multipleLookupValues") == 0) {
        json_t *flat = json_array();
        const json_t *ids = json_object_get(value, "linkedRecordIds");
        const json_t *by_id = json_object_get(value, "valuesByLinkedRecordId");
        size_t i;
        const json_t *id;
        json_array_foreach(ids, i, id)
        {
            const json_t *values = json_object_get(by_id, json_string_value(id));
            if (json_is_array(values))
                json_array_extend(flat, (json_t *)values);
        }
        return flat;
    }
    if (json_is_object(value) &&
        (strcmp(type, "singleCollaborator") == 0 || strcmp(type, "createdBy") == 0 ||
         strcmp(type, "lastModifiedBy") == 0))
        return json_pack("{s:O?, s:O?, s:O?}", "id", json_object_get(value, "id"), "email",
                         json_object_get(value, "email"), "name", json_object_get(value, "name"));
    if (json_is_object(value) && strcmp(type, "barcode") == 0)
        return json_incref(json_object_get(value, "text"));
    if (json_is_object(value) && strcmp(type, "aiText") == 0)
        return json_incref(json_object_get(value, "value"));
    return json_incref((json_t *)value);
}

static bool s_wanted_field(const s_table_t *table, const char *name)
{
    if (!table->fields)
        return true;
    size_t i;
    const json_t *item;
    json_array_foreach(table->fields, i,
                       item) if (strcmp(json_string_value(item), name) == 0) return true;
    return false;
}

/* cells {fld: V2} -> {name: plain} into out, for the table's known fields; names of the cells in
 * changed_out when given. Fields missing from the schema (added since start) are skipped.
 * only_wanted: the event's view (the map's fields, by their current names); otherwise the rules'
 * view (every field, by the name the map knows it by: audiences, public_when). */
static void s_name_cells(const s_table_t *table, const json_t *cells, json_t *out,
                         json_t *changed_out, bool only_wanted)
{
    const char *fid;
    const json_t *value;
    json_object_foreach((json_t *)cells, fid, value)
    {
        const json_t *field = json_object_get(table->by_id, fid);
        const char *bound = json_string_value(json_object_get(field, "bound"));
        const char *name = json_string_value(json_object_get(field, "name"));
        if (!bound)
            bound = name;
        if (!name || (only_wanted && !s_wanted_field(table, bound)))
            continue;
        if (!only_wanted)
            name = bound;
        json_object_set_new(out, name,
                            s_plain(value, json_string_value(json_object_get(field, "type"))));
        if (changed_out)
            json_array_append_new(changed_out, json_string(name));
    }
}

/* Text for an audience placeholder: each linked record's id, a select's name, a string. */
static void s_expand(const char *template, const json_t *value, lh_event_t *event, size_t *added)
{
    const char *open = strchr(template, '{'), *close = strchr(open, '}');
    char audience[LH_TYPE_MAX + 1];
    const json_t *items[LH_AUDIENCE_MAX];
    size_t count = 0;
    if (json_is_array(value)) {
        size_t i;
        const json_t *item;
        json_array_foreach(value, i, item) if (count < LH_AUDIENCE_MAX) items[count++] = item;
    } else if (value) {
        items[count++] = value;
    }
    for (size_t i = 0; i < count; i++) {
        const json_t *item = items[i];
        char number[32];
        const char *text = json_string_value(item);
        if (json_is_object(item))
            text = json_string_value(json_object_get(item, "id"));
        if (json_is_integer(item)) {
            snprintf(number, sizeof number, "%" JSON_INTEGER_FORMAT, json_integer_value(item));
            text = number;
        }
        if (!text || !text[0])
            continue;
        int n = snprintf(audience, sizeof audience, "%.*s%s%s", (int)(open - template), template,
                         text, close + 1);
        if (n > 0 && (size_t)n < sizeof audience && lh_event_add_audience(event, audience) == 0)
            (*added)++;
    }
}

/* Public when the rule's field equals its value, else the `to` templates; admin when nothing
 * resolves, so a record never goes public by accident. */
static void s_audiences(const s_table_t *table, const json_t *values, lh_event_t *event)
{
    size_t added = 0;
    if (table->public_field) {
        const json_t *value = json_object_get(values, table->public_field);
        if (json_is_string(value) && strcmp(json_string_value(value), table->public_value) == 0) {
            lh_event_add_audience(event, "public");
            return;
        }
    }
    size_t i;
    const json_t *item;
    json_array_foreach(table->to, i, item)
    {
        const char *template = json_string_value(item);
        char field[128];
        if (!s_placeholder(template, field, sizeof field)) {
            if (lh_event_add_audience(event, template) == 0)
                added++;
        } else {
            const json_t *value = json_object_get(values, field);
            /* Links are plain {id, name}: the audience uses the id. */
            s_expand(template, value, event, &added);
        }
    }
    if (added == 0)
        lh_event_add_audience(event, "admin");
}

typedef struct {
    const s_table_t *table;
    const at_payload_ref_t *ref;
    const json_t *actor;
    const json_t *timestamp;
    at_emit_fn *emit;
    void *arg;
    int emitted;
    at_cache_t *cache;
} s_context_t;

/* ---- the record cache ---------------------------------------------------------------------- */

static json_t *s_cache_get(const s_context_t *context, const char *record)
{
    return context->cache ? json_object_get(context->cache->records, record) : NULL;
}

/* Stores entry (consumed) as the most recent one; evicts the least recent beyond the bound. */
static void s_cache_put(s_context_t *context, const char *record, json_t *entry)
{
    at_cache_t *cache = context->cache;
    if (!cache || cache->max == 0) {
        json_decref(entry);
        return;
    }
    /* Delete first: jansson iterates in insertion order, so re-adding moves it to the end. */
    json_object_del(cache->records, record);
    json_object_set_new(cache->records, record, entry);
    while (json_object_size(cache->records) > cache->max) {
        char oldest[AT_ID_SIZE + 8];
        snprintf(oldest, sizeof oldest, "%s",
                 json_object_iter_key(json_object_iter(cache->records)));
        json_object_del(cache->records, oldest);
    }
}

static time_t s_epoch(const json_t *iso)
{
    struct tm tm = {0};
    const char *text = json_string_value(iso);
    if (!text || !strptime(text, "%Y-%m-%dT%H:%M:%S", &tm))
        return 0;
    return timegm(&tm);
}

/* Builds and emits one event; data is consumed. Returns 0 or -1 (emit refused). */
static int s_emit(s_context_t *context, const char *record, const char *suffix, json_t *data,
                  const json_t *audience_values)
{
    const s_table_t *table = context->table;
    char type[LH_TYPE_MAX + 1], key[LH_TYPE_MAX + 1];
    snprintf(type, sizeof type, "%s:%s", table->family, suffix);
    snprintf(key, sizeof key, "airtable:%s:%s:%" PRIu64 ":%s:%s", context->ref->base,
             context->ref->webhook, context->ref->number, record, suffix);
    json_object_set_new(data, "record", json_string(record));
    json_object_set_new(data, "table", json_string(table->name));
    json_object_set_new(data, "tableId", json_string(table->id));
    json_object_set_new(data, "actor", json_deep_copy(context->actor));
    json_object_set(data, "timestamp", (json_t *)context->timestamp);
    json_object_set_new(data, "webhook", json_string(context->ref->webhook));
    json_object_set_new(data, "cursor", json_integer((json_int_t)context->ref->number));
    lh_event_t *event = lh_event_new(type);
    lh_error_t err;
    int rc = -1;
    if (event && lh_event_set_data_json(event, data, &err) == 0 &&
        lh_event_set_key(event, key) == 0) {
        s_audiences(table, audience_values, event);
        rc = context->emit(&event, context->arg);
        if (rc == 0)
            context->emitted++;
    } else {
        rc = 0; /* cannot be built (never expected): skip it rather than block the cursor */
    }
    lh_event_destroy(&event);
    json_decref(data);
    return rc;
}

static int s_created(s_context_t *context, const json_t *records, size_t *skipped)
{
    const char *record;
    const json_t *entry;
    json_object_foreach((json_t *)records, record, entry)
    {
        const json_t *cells = json_object_get(entry, "cellValuesByFieldId");
        if (!at_id_valid(record, "rec") || (cells && !json_is_object(cells))) {
            (*skipped)++;
            continue;
        }
        json_t *values = json_object();
        s_name_cells(context->table, cells, values, NULL, false);
        json_t *data = json_object();
        json_t *fields = json_object();
        s_name_cells(context->table, cells, fields, NULL, true);
        /* Records made in the UI arrive as an (almost) empty create, then one change per cell:
         * remember that so the changes raise a complete `updated` even where updates are off. */
        bool sparse = json_object_size(fields) <= 1;
        json_t *cached = json_pack("{s:o}", "c", cells ? json_deep_copy(cells) : json_object());
        const json_t *created_time = json_object_get(entry, "createdTime");
        if (sparse)
            json_object_set(
                cached, "s",
                (json_t *)(json_is_string(created_time) ? created_time : context->timestamp));
        json_object_set_new(data, "fields", fields);
        json_object_set(data, "createdTime", json_object_get(entry, "createdTime"));
        int rc = context->table->created ? s_emit(context, record, "created", data, values) : 0;
        if (!context->table->created)
            json_decref(data);
        json_decref(values);
        if (rc != 0) {
            json_decref(cached);
            return -1;
        }
        s_cache_put(context, record, cached);
    }
    return 0;
}

/* True when named has a non-null value for every mapped field of the table. */
static bool s_all_known(const s_table_t *table, const json_t *named)
{
    size_t wanted = table->fields ? json_array_size(table->fields) : json_object_size(table->by_id);
    size_t known = 0;
    const char *name;
    const json_t *value;
    json_object_foreach((json_t *)named, name, value) if (!json_is_null(value)) known++;
    return known >= wanted;
}

static int s_changed(s_context_t *context, const json_t *records, size_t *skipped)
{
    const s_table_t *table = context->table;
    const char *record;
    const json_t *entry;
    json_object_foreach((json_t *)records, record, entry)
    {
        const json_t *current =
            json_object_get(json_object_get(entry, "current"), "cellValuesByFieldId");
        const json_t *previous =
            json_object_get(json_object_get(entry, "previous"), "cellValuesByFieldId");
        const json_t *unchanged =
            json_object_get(json_object_get(entry, "unchanged"), "cellValuesByFieldId");
        if (!at_id_valid(record, "rec") || !json_is_object(current) ||
            (previous && !json_is_object(previous)) || (unchanged && !json_is_object(unchanged))) {
            (*skipped)++;
            continue;
        }
        /* Every known value: the cache's, then unchanged ones, then the new ones. */
        const json_t *cached = s_cache_get(context, record);
        json_t *cells = json_deep_copy(json_object_get(cached, "c"));
        if (!json_is_object(cells)) {
            json_decref(cells);
            cells = json_object();
        }
        json_object_update(cells, (json_t *)unchanged);
        json_object_update(cells, (json_t *)current);
        /* Within the window after a nearly empty create the change completes it (see above). */
        const json_t *sparse_since = json_object_get(cached, "s");
        time_t since = s_epoch(sparse_since), at = s_epoch(context->timestamp);
        bool completing = sparse_since && (!since || !at || at - since <= AT_SPARSE_WINDOW_S);
        /* All known values for audiences; the named ones for data. */
        json_t *values = json_object(), *now = json_object(), *before = json_object();
        json_t *changed = json_array(), *ignored = json_array();
        s_name_cells(table, cells, values, NULL, false);
        s_name_cells(table, cells, now, NULL, true);
        s_name_cells(table, current, ignored, changed, true);
        json_decref(ignored);
        ignored = json_array();
        s_name_cells(table, previous, before, ignored, true);
        json_decref(ignored);
        json_t *entry_out = json_pack("{s:o}", "c", cells);
        /* Complete once every mapped field has a value: later changes follow the map again. */
        if (completing && !s_all_known(table, now))
            json_object_set(entry_out, "s", (json_t *)sparse_since);
        int rc = 0;
        if ((table->updated || completing) && json_array_size(changed) > 0) {
            json_t *data =
                json_pack("{s:O, s:O, s:O}", "fields", now, "changed", changed, "previous", before);
            rc = s_emit(context, record, "updated", data, values);
        }
        const char *field;
        const json_t *suffix;
        json_object_foreach((json_t *)table->changes, field, suffix)
        {
            const char *fid = json_string_value(json_object_get(table->by_name, field));
            if (rc != 0 || !fid || !json_object_get(current, fid))
                continue;
            const char *type =
                json_string_value(json_object_get(json_object_get(table->by_id, fid), "type"));
            json_t *value = s_plain(json_object_get(current, fid), type);
            json_t *old = previous && json_object_get(previous, fid)
                              ? s_plain(json_object_get(previous, fid), type)
                              : json_null();
            const char *shown =
                json_string_value(json_object_get(json_object_get(table->by_id, fid), "name"));
            json_t *data = json_pack("{s:s, s:o, s:o, s:O, s:O}", "field", shown ? shown : field,
                                     "value", value,
                                     "previousValue", old, "fields", now, "changed", changed);
            rc = s_emit(context, record, json_string_value(suffix), data, values);
        }
        json_decref(values);
        json_decref(now);
        json_decref(before);
        json_decref(changed);
        if (rc != 0) {
            json_decref(entry_out);
            return -1;
        }
        s_cache_put(context, record, entry_out);
    }
    return 0;
}

static int s_destroyed(s_context_t *context, const json_t *records, size_t *skipped)
{
    size_t i;
    const json_t *item;
    json_array_foreach(records, i, item)
    {
        const char *record = json_string_value(item);
        if (!at_id_valid(record, "rec")) {
            (*skipped)++;
            continue;
        }
        /* The last known values, when the record is still in the cache (else only its id). */
        const json_t *cells = json_object_get(s_cache_get(context, record), "c");
        json_t *data = json_object(), *values = json_object();
        if (json_is_object(cells)) {
            json_t *fields = json_object();
            s_name_cells(context->table, cells, fields, NULL, true);
            s_name_cells(context->table, cells, values, NULL, false);
            json_object_set_new(data, "fields", fields);
            json_object_set_new(data, "lastKnown", json_true());
        }
        int rc = 0;
        if (context->table->deleted)
            rc = s_emit(context, record, "deleted", data, json_is_object(cells) ? values : NULL);
        else
            json_decref(data);
        json_decref(values);
        if (rc != 0)
            return -1;
        if (context->cache)
            json_object_del(context->cache->records, record);
    }
    return 0;
}

/* {source, user?, viewId?, ...} from actionMetadata, with the user cut down to id/email/name. */
static json_t *s_actor(const json_t *payload)
{
    const json_t *metadata = json_object_get(payload, "actionMetadata");
    const json_t *source = json_object_get(metadata, "source");
    const json_t *details = json_object_get(metadata, "sourceMetadata");
    json_t *actor = json_pack("{s:O?}", "source", json_is_string(source) ? source : NULL);
    const json_t *user = json_object_get(details, "user");
    if (json_is_object(user))
        json_object_set_new(actor, "user",
                            json_pack("{s:O?, s:O?, s:O?}", "id", json_object_get(user, "id"),
                                      "email", json_object_get(user, "email"), "name",
                                      json_object_get(user, "name")));
    const char *keys[] = {"viewId", "pageId", "automationId"};
    for (size_t i = 0; i < 3; i++)
        if (json_is_string(json_object_get(details, keys[i])))
            json_object_set(actor, keys[i], json_object_get(details, keys[i]));
    return actor;
}

int at_map_payload(const at_map_t *self, const json_t *payload, const at_payload_ref_t *ref,
                   at_cache_t *cache, at_emit_fn *emit, void *arg, size_t *skipped)
{
    const json_t *changed = json_object_get(payload, "changedTablesById");
    if (!json_is_object(payload) || (changed && !json_is_object(changed))) {
        (*skipped)++;
        return 0;
    }
    json_t *actor = s_actor(payload);
    const json_t *timestamp = json_object_get(payload, "timestamp");
    s_context_t context = {NULL, ref, actor, json_is_string(timestamp) ? timestamp : json_null(),
                           emit, arg, 0,     cache};
    int rc = 0;
    for (size_t t = 0; t < self->count && rc == 0; t++) {
        const json_t *table = json_object_get(changed, self->tables[t].id);
        if (!table)
            continue;
        if (!json_is_object(table)) {
            (*skipped)++;
            continue;
        }
        context.table = &self->tables[t];
        const json_t *created = json_object_get(table, "createdRecordsById");
        const json_t *updated = json_object_get(table, "changedRecordsById");
        const json_t *destroyed = json_object_get(table, "destroyedRecordIds");
        if ((created && !json_is_object(created)) || (updated && !json_is_object(updated)) ||
            (destroyed && !json_is_array(destroyed)))
            (*skipped)++;
        if (json_is_object(created))
            rc = s_created(&context, created, skipped);
        if (rc == 0 && json_is_object(updated))
            rc = s_changed(&context, updated, skipped);
        if (rc == 0 && json_is_array(destroyed))
            rc = s_destroyed(&context, destroyed, skipped);
    }
    json_decref(actor);
    return rc == 0 ? context.emitted : -1;
}
