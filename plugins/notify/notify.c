/* notify: a sink that turns events into desktop notifications (freedesktop Notifications over the
 * session D-Bus) and event sounds (libcanberra), with per-type rules, coalescing of bursts, a rate
 * limit, quiet hours, an idle check and a do-not-disturb switch. docs/NOTIFY.md */
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <livehub/plugin.h>
#include "nt_desktop.h"
#include "nt_rules.h"
#include "nt_sound.h"
#include "nt_template.h"

#define S_LINKS 32   /* notification ids whose action URL we remember */
#define S_OPENERS 16 /* opener processes not yet reaped */

extern char **environ;

/* One rule's current burst: the notification it shows and the events folded into it. */
typedef struct {
    uint32_t id;        /* the server's id, for replaces_id */
    uint64_t count;     /* events in the burst, the first included */
    bool dirty;         /* events arrived since the notification was last shown */
    int64_t window_end; /* ms (monotonic): events before this join the burst */
    json_t *last;       /* template scope of the latest event */
} s_burst_t;

typedef struct {
    uint32_t id;
    char *url;
} s_link_t;

/* Conditions that are logged once when they begin and once when they end. */
typedef enum { S_DOWN_BUS, S_DOWN_SERVER, S_DOWN_AUDIO, S_DOWN_IDLE_CHECK, S_DOWN_COUNT } s_down_t;

typedef struct {
    lh_io_t *io;
    nt_rules_t rules;
    s_burst_t *bursts;
    nt_desktop_t *desktop;
    nt_sound_t *sound;
    const char *app_name, *dnd_file, *action_label, *opener;
    int64_t coalesce_ms, retry_ms, max_per_minute;
    int quiet_from, quiet_to; /* minutes after local midnight; -1: no quiet hours */
    bool quiet_when_idle, sounds, sound_via_server, critical_in_quiet;
    double tokens; /* rate limit bucket */
    int64_t tokens_at;
    int64_t bus_retry_at;
    bool dnd_switch;         /* `livehub stage NAME dnd on` when there is no dnd_file */
    uint64_t dnd_suppressed; /* events this instance kept quiet for do not disturb */
    bool down[S_DOWN_COUNT];
    s_link_t links[S_LINKS];
    size_t link_next;
    pid_t openers[S_OPENERS];
    lh_metric_t *sent, *coalesced, *sounds_played, *actions;
    lh_metric_t *quiet, *dnd, *rate, *disabled;
    lh_metric_t *fail_bus, *fail_server, *fail_audio, *fail_render;
} notify_t;

static const lh_option_t s_options[] = {
    {"rules", LH_OPTION_STRING, NULL, false, 0, 0,
     "JSON file of per-type rules (templates, urgency, sound...); default: built-in rules"},
    {"app_name", LH_OPTION_STRING, "livehub", false, 0, 0, "app_name sent with notifications"},
    {"icon", LH_OPTION_STRING, "dialog-information", false, 0, 0, "default icon name or file"},
    {"urgency", LH_OPTION_STRING, "normal", false, 0, 0, "default urgency: low, normal, critical"},
    {"expire", LH_OPTION_INT, "-1", false, -1, 86400000,
     "default expiry in ms (-1: the server decides, 0: never)"},
    {"sound", LH_OPTION_STRING, "message-new-instant", false, 0, 0,
     "default sound theme event id (empty: silent)"},
    {"sounds", LH_OPTION_BOOL, "yes", false, 0, 0, "play sounds at all"},
    {"sound_via", LH_OPTION_STRING, "canberra", false, 0, 0,
     "canberra: play here; server: ask the notification server (sound-name hint)"},
    {"sound_driver", LH_OPTION_STRING, "pulse", false, 0, 0,
     "libcanberra driver (pulse also covers PipeWire; empty: libcanberra's choice)"},
    {"coalesce", LH_OPTION_INT, "3000", false, 0, 3600000,
     "ms during which further events of a rule update one notification (0: never coalesce)"},
    {"max_per_minute", LH_OPTION_INT, "20", false, 0, 100000,
     "new notifications per minute before the rest are dropped (0: no limit)"},
    {"quiet_hours", LH_OPTION_STRING, NULL, false, 0, 0,
     "HH:MM-HH:MM local time without notifications (may wrap midnight; 24:00 ends a day)"},
    {"quiet_when_idle", LH_OPTION_BOOL, "no", false, 0, 0,
     "no notifications while org.freedesktop.ScreenSaver says the screensaver is active"},
    {"critical_in_quiet", LH_OPTION_BOOL, "yes", false, 0, 0,
     "critical rules still notify (silently) in quiet hours and while idle"},
    {"dnd_file", LH_OPTION_STRING, NULL, false, 0, 0,
     "do not disturb while this file exists (touch to enable, rm to disable)"},
    {"bus", LH_OPTION_STRING, NULL, false, 0, 0,
     "D-Bus address (default: DBUS_SESSION_BUS_ADDRESS of the hub)"},
    {"dbus_timeout", LH_OPTION_INT, "2000", false, 50, 60000, "ms to wait for a D-Bus reply"},
    {"retry", LH_OPTION_INT, "5000", false, 100, 3600000,
     "ms between attempts to reach a session bus that was not there"},
    {"action_label", LH_OPTION_STRING, "Open", false, 0, 0,
     "label of the action a rule's url adds"},
    {"opener", LH_OPTION_STRING, "xdg-open", false, 0, 0,
     "program run with the URL when the action is clicked"},
    {NULL, 0, NULL, false, 0, 0, NULL},
};

static int64_t s_now_ms(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

/* "HH:MM" into minutes after midnight; 24:00 only when allowed (the end of a range). */
static int s_parse_clock(const char *text, size_t size, bool end)
{
    int hours, minutes;
    char tail;
    char copy[8];
    if (size >= sizeof copy)
        return -1;
    memcpy(copy, text, size);
    copy[size] = '\0';
    if (sscanf(copy, "%2d:%2d%c", &hours, &minutes, &tail) != 2 || minutes < 0 || minutes > 59 ||
        hours < 0 || hours > 24 || (hours == 24 && (minutes != 0 || !end)))
        return -1;
    return hours * 60 + minutes;
}

static int s_parse_quiet(const char *text, int *from, int *to, lh_error_t *err)
{
    const char *dash = text ? strchr(text, '-') : NULL;
    if (!dash || (*from = s_parse_clock(text, (size_t)(dash - text), false)) < 0 ||
        (*to = s_parse_clock(dash + 1, strlen(dash + 1), true)) < 0 || *from == *to) {
        lh_error_set(err, "quiet_hours: '%s' is not HH:MM-HH:MM with two different times",
                     text ? text : "");
        return -1;
    }
    return 0;
}

static int s_defaults(const lh_conf_t *conf, nt_rule_defaults_t *defaults, lh_error_t *err)
{
    int urgency = nt_urgency_parse(lh_conf_get(conf, "urgency"));
    if (urgency < 0) {
        lh_error_set(err, "urgency: '%s' is not low, normal or critical",
                     lh_conf_get(conf, "urgency"));
        return -1;
    }
    if (lh_conf_get_int(conf, "expire", &defaults->expire_ms, err) != 0)
        return -1;
    defaults->urgency = (nt_urgency_t)urgency;
    defaults->icon = lh_conf_get(conf, "icon");
    defaults->sound = lh_conf_get(conf, "sound");
    return 0;
}

static int notify_validate(const lh_conf_t *conf, lh_error_t *err)
{
    nt_rule_defaults_t defaults;
    if (s_defaults(conf, &defaults, err) != 0)
        return -1;
    const char *via = lh_conf_get(conf, "sound_via");
    if (strcmp(via, "canberra") != 0 && strcmp(via, "server") != 0) {
        lh_error_set(err, "sound_via: '%s' is neither canberra nor server", via);
        return -1;
    }
    int from, to;
    if (lh_conf_get(conf, "quiet_hours") &&
        s_parse_quiet(lh_conf_get(conf, "quiet_hours"), &from, &to, err) != 0)
        return -1;
    nt_rules_t rules;
    lh_error_t reason;
    if (nt_rules_load(&rules, lh_conf_get(conf, "rules"), &defaults, &reason) != 0) {
        lh_error_set(err, "rules: %s", reason.text);
        return -1;
    }
    nt_rules_free(&rules);
    return 0;
}

static void s_on_action(uint32_t id, const char *action, void *arg);

/* A counter of the stage with one reason label: livehub_notify_<what>_total{reason="..."}. */
static lh_metric_t *s_reason_counter(lh_io_t *io, const char *name, const char *help,
                                     const char *reason)
{
    char labels[64];
    snprintf(labels, sizeof labels, "reason=\"%s\"", reason);
    return lh_io_metric(io, LH_METRIC_COUNTER, name, help, labels, NULL, 0);
}

static void s_metrics(notify_t *self, lh_io_t *io)
{
    self->sent = lh_io_counter(io, "livehub_notify_sent_total",
                               "Notifications shown or updated on the desktop");
    self->coalesced = lh_io_counter(io, "livehub_notify_coalesced_total",
                                    "Events folded into an earlier notification of their burst");
    self->sounds_played = lh_io_counter(io, "livehub_notify_sounds_total", "Sounds started");
    self->actions = lh_io_counter(io, "livehub_notify_actions_total",
                                  "Notification actions clicked and opened");
    const char *suppressed = "livehub_notify_suppressed_total";
    const char *suppressed_help = "Events not notified, by reason: quiet (quiet hours or "
                                  "screensaver), dnd (do not disturb), rate (over "
                                  "max_per_minute), disabled (their rule is off)";
    self->quiet = s_reason_counter(io, suppressed, suppressed_help, "quiet");
    self->dnd = s_reason_counter(io, suppressed, suppressed_help, "dnd");
    self->rate = s_reason_counter(io, suppressed, suppressed_help, "rate");
    self->disabled = s_reason_counter(io, suppressed, suppressed_help, "disabled");
    const char *failures = "livehub_notify_failures_total";
    const char *failures_help = "Notifications or sounds lost, by reason: bus (no session bus), "
                                "server (no notification server answered), audio (no audio "
                                "server, unknown sound or file), render (unusable event data)";
    self->fail_bus = s_reason_counter(io, failures, failures_help, "bus");
    self->fail_server = s_reason_counter(io, failures, failures_help, "server");
    self->fail_audio = s_reason_counter(io, failures, failures_help, "audio");
    self->fail_render = s_reason_counter(io, failures, failures_help, "render");
}

static void notify_destroy(void **self_p);

static void *notify_create(lh_io_t *io)
{
    notify_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->io = io;
    const lh_conf_t *conf = lh_io_conf(io);
    nt_rule_defaults_t defaults;
    lh_error_t err;
    int64_t timeout;
    if (s_defaults(conf, &defaults, &err) != 0 ||
        nt_rules_load(&self->rules, lh_conf_get(conf, "rules"), &defaults, &err) != 0 ||
        lh_conf_get_int(conf, "coalesce", &self->coalesce_ms, &err) != 0 ||
        lh_conf_get_int(conf, "retry", &self->retry_ms, &err) != 0 ||
        lh_conf_get_int(conf, "max_per_minute", &self->max_per_minute, &err) != 0 ||
        lh_conf_get_int(conf, "dbus_timeout", &timeout, &err) != 0 ||
        lh_conf_get_bool(conf, "quiet_when_idle", &self->quiet_when_idle, &err) != 0 ||
        lh_conf_get_bool(conf, "critical_in_quiet", &self->critical_in_quiet, &err) != 0 ||
        lh_conf_get_bool(conf, "sounds", &self->sounds, &err) != 0) {
        lh_log(io, LH_LOG_ERROR, "%s", err.text);
        notify_destroy((void **)&self);
        return NULL;
    }
    self->quiet_from = self->quiet_to = -1;
    if (lh_conf_get(conf, "quiet_hours"))
        s_parse_quiet(lh_conf_get(conf, "quiet_hours"), &self->quiet_from, &self->quiet_to, &err);
    self->sound_via_server = strcmp(lh_conf_get(conf, "sound_via"), "server") == 0;
    self->app_name = lh_conf_get(conf, "app_name");
    self->dnd_file = lh_conf_get(conf, "dnd_file");
    self->action_label = lh_conf_get(conf, "action_label");
    self->opener = lh_conf_get(conf, "opener");
    self->tokens = (double)self->max_per_minute;
    self->tokens_at = s_now_ms();
    s_metrics(self, io);
    self->bursts = calloc(self->rules.count ? self->rules.count : 1, sizeof *self->bursts);
    self->desktop = nt_desktop_new(lh_conf_get(conf, "bus"), (int)timeout, s_on_action, self);
    self->sound = nt_sound_new(lh_conf_get(conf, "sound_driver"), self->fail_audio);
    if (!self->bursts || !self->desktop || !self->sound) {
        lh_log(io, LH_LOG_ERROR, "out of memory");
        notify_destroy((void **)&self);
        return NULL;
    }
    return self;
}

/* Logs the start of a condition once, and its end once. */
static void s_set_down(notify_t *self, s_down_t which, bool down, const char *reason)
{
    static const char *const names[] = {"session bus", "notification server", "audio",
                                        "screensaver check"};
    if (down == self->down[which])
        return;
    self->down[which] = down;
    if (down)
        lh_log(self->io, LH_LOG_WARNING, "%s unavailable, carrying on without it: %s", names[which],
               reason);
    else
        lh_log(self->io, LH_LOG_INFO, "%s available again", names[which]);
}

static bool s_in_quiet_hours(const notify_t *self)
{
    if (self->quiet_from < 0)
        return false;
    time_t now = time(NULL);
    struct tm local;
    localtime_r(&now, &local);
    int minute = local.tm_hour * 60 + local.tm_min;
    return self->quiet_from < self->quiet_to
               ? minute >= self->quiet_from && minute < self->quiet_to
               : minute >= self->quiet_from || minute < self->quiet_to;
}

static bool s_screensaver_active(notify_t *self)
{
    if (!self->quiet_when_idle || !nt_desktop_connected(self->desktop))
        return false;
    lh_error_t err;
    int active = nt_desktop_screensaver_active(self->desktop, &err);
    s_set_down(self, S_DOWN_IDLE_CHECK, active < 0, active < 0 ? err.text : NULL);
    return active == 1; /* nobody answering means nobody says the desk is empty */
}

static bool s_take_token(notify_t *self, int64_t now)
{
    if (self->max_per_minute == 0)
        return true;
    double capacity = (double)self->max_per_minute;
    self->tokens += (double)(now - self->tokens_at) * capacity / 60000.0;
    if (self->tokens > capacity)
        self->tokens = capacity;
    self->tokens_at = now;
    if (self->tokens < 1.0)
        return false;
    self->tokens -= 1.0;
    return true;
}

static void s_remember_link(notify_t *self, uint32_t id, char *url)
{
    s_link_t *link = NULL;
    for (size_t i = 0; i < S_LINKS && !link; i++)
        if (self->links[i].url && self->links[i].id == id)
            link = &self->links[i]; /* an updated notification keeps its id */
    if (!link) {
        link = &self->links[self->link_next];
        self->link_next = (self->link_next + 1) % S_LINKS;
    }
    free(link->url);
    link->id = id;
    link->url = url;
}

static void s_reap_openers(notify_t *self, bool wait)
{
    for (size_t i = 0; i < S_OPENERS; i++)
        if (self->openers[i] > 0 && waitpid(self->openers[i], NULL, wait ? 0 : WNOHANG) != 0)
            self->openers[i] = 0;
}

static void s_on_action(uint32_t id, const char *action, void *arg)
{
    notify_t *self = arg;
    if (strcmp(action, "default") != 0)
        return;
    for (size_t i = 0; i < S_LINKS; i++) {
        s_link_t *link = &self->links[i];
        if (!link->url || link->id != id)
            continue;
        s_reap_openers(self, false);
        size_t slot = 0;
        while (slot < S_OPENERS && self->openers[slot] > 0)
            slot++;
        char *argv[] = {(char *)self->opener, link->url, NULL};
        pid_t pid;
        int rc =
            slot < S_OPENERS ? posix_spawnp(&pid, self->opener, NULL, NULL, argv, environ) : -1;
        if (rc == 0) {
            self->openers[slot] = pid;
            lh_metric_add(self->actions, 1);
            lh_log(self->io, LH_LOG_INFO, "notification %u clicked: %s %s", id, self->opener,
                   link->url);
        } else {
            lh_log(self->io, LH_LOG_WARNING, "notification %u clicked but %s could not start: %s",
                   id, self->opener, rc > 0 ? strerror(rc) : "too many openers running");
        }
        return;
    }
}

/* Starts the rule's sound (or leaves it to the server), unless quiet. */
static void s_play(notify_t *self, const nt_rule_t *rule)
{
    if (!self->sounds || self->sound_via_server || (!rule->sound_file && !*rule->sound))
        return;
    lh_error_t err;
    if (nt_sound_play(self->sound, rule->sound, rule->sound_file, &err) == 0) {
        lh_metric_add(self->sounds_played, 1);
        s_set_down(self, S_DOWN_AUDIO, false, NULL);
    } else {
        lh_metric_add(self->fail_audio, 1);
        s_set_down(self, S_DOWN_AUDIO, true, err.text);
    }
}

/* Shows the rule's notification for scope (one event, or a burst when coalesced). Returns true
 * when the server took it. */
static bool s_show(notify_t *self, const nt_rule_t *rule, s_burst_t *burst, const json_t *scope,
                   bool coalesced, bool silent)
{
    int64_t now = s_now_ms();
    if (!nt_desktop_connected(self->desktop) && now < self->bus_retry_at) {
        lh_metric_add(self->fail_bus, 1); /* still down; do not retry on every event */
        return false;
    }
    char *summary = nt_template_render(coalesced ? rule->coalesced_summary : rule->summary, scope,
                                       NT_ESCAPE_NONE);
    char *body =
        nt_template_render(coalesced ? rule->coalesced_body : rule->body, scope, NT_ESCAPE_MARKUP);
    char *url = rule->url ? nt_template_render(rule->url, scope, NT_ESCAPE_URL) : NULL;
    bool shown = false;
    if (!summary || !body || (rule->url && !url)) {
        lh_metric_add(self->fail_render, 1);
        lh_log(self->io, LH_LOG_WARNING, "out of memory rendering rule '%s'", rule->pattern);
        goto done;
    }
    bool server_sound = self->sounds && self->sound_via_server && !silent && !coalesced;
    nt_notification_t notification = {
        .app_name = self->app_name,
        .replaces_id = coalesced ? burst->id : 0,
        .icon = rule->icon,
        .summary = summary,
        .body = body,
        .action_label = url ? self->action_label : NULL,
        .urgency = (int)rule->urgency,
        .category = rule->category,
        .sound_name = server_sound && *rule->sound ? rule->sound : NULL,
        /* We play sounds ourselves (or deliberately not), so the server must not add its own. */
        .suppress_sound = !server_sound,
        .expire_ms = (int32_t)rule->expire_ms,
    };
    uint32_t id = 0;
    lh_error_t err;
    nt_failure_t failure = nt_desktop_notify(self->desktop, &notification, &id, &err);
    if (failure == NT_FAIL_BUS) {
        lh_metric_add(self->fail_bus, 1);
        self->bus_retry_at = now + self->retry_ms;
        s_set_down(self, S_DOWN_BUS, true, err.text);
    } else if (failure == NT_FAIL_SERVER) {
        lh_metric_add(self->fail_server, 1);
        s_set_down(self, S_DOWN_BUS, false, NULL);
        s_set_down(self, S_DOWN_SERVER, true, err.text);
    } else {
        s_set_down(self, S_DOWN_BUS, false, NULL);
        s_set_down(self, S_DOWN_SERVER, false, NULL);
        lh_metric_add(self->sent, 1);
        burst->id = id;
        if (url) {
            s_remember_link(self, id, url);
            url = NULL;
        }
        shown = true;
    }
done:
    free(summary);
    free(body);
    free(url);
    return shown;
}

/* The template scope of an event: type, id, src, count and data. New reference or NULL. */
static json_t *s_scope(notify_t *self, const lh_event_t *event)
{
    lh_error_t err;
    json_t *data = lh_event_data_json(event, &err);
    if (!data) {
        lh_metric_add(self->fail_render, 1);
        lh_log(self->io, LH_LOG_WARNING, "event %llu (%s): data unusable: %s",
               (unsigned long long)lh_event_id(event), lh_event_type(event), err.text);
        return NULL;
    }
    const char *src = lh_event_src(event);
    return json_pack("{s:s, s:I, s:s, s:I, s:o}", "type", lh_event_type(event), "id",
                     (json_int_t)lh_event_id(event), "src", src ? src : "", "count", (json_int_t)1,
                     "data", data);
}

static bool s_dnd_file_exists(const notify_t *self)
{
    struct stat info;
    return self->dnd_file && stat(self->dnd_file, &info) == 0;
}

/* Do not disturb: switched on by command (without a dnd_file), or the dnd_file exists. */
static bool s_dnd(const notify_t *self)
{
    return self->dnd_switch || s_dnd_file_exists(self);
}

static void s_handle(notify_t *self, const lh_event_t *event)
{
    const char *type = lh_event_type(event);
    int index = type[0] == '$' ? -1 : nt_rules_find(&self->rules, type);
    if (index < 0)
        return; /* the hub's own events, and types no rule covers */
    const nt_rule_t *rule = &self->rules.rules[index];
    s_burst_t *burst = &self->bursts[index];
    if (!rule->enabled) {
        lh_metric_add(self->disabled, 1);
        return;
    }
    if (s_dnd(self)) {
        lh_metric_add(self->dnd, 1);
        self->dnd_suppressed++;
        return;
    }
    bool quiet = s_in_quiet_hours(self) || s_screensaver_active(self);
    if (quiet && !(self->critical_in_quiet && rule->urgency == NT_URGENCY_CRITICAL)) {
        lh_metric_add(self->quiet, 1);
        return;
    }
    json_t *scope = s_scope(self, event);
    if (!scope)
        return;
    int64_t now = s_now_ms();
    if (self->coalesce_ms > 0 && now < burst->window_end) {
        burst->count++;
        burst->dirty = true;
        json_decref(burst->last);
        burst->last = scope;
        lh_metric_add(self->coalesced, 1);
        return;
    }
    if (!s_take_token(self, now)) {
        lh_metric_add(self->rate, 1);
        json_decref(scope);
        return;
    }
    burst->count = 1;
    burst->dirty = false;
    burst->window_end = now + self->coalesce_ms;
    json_decref(burst->last);
    burst->last = scope;
    s_show(self, rule, burst, scope, false, quiet);
    if (!quiet)
        s_play(self, rule);
}

/* Updates every burst whose window closed with events not shown yet; returns the ms until the
 * next window closes (-1: none open). */
static int s_flush(notify_t *self)
{
    int64_t now = s_now_ms(), next = -1;
    for (size_t i = 0; i < self->rules.count; i++) {
        s_burst_t *burst = &self->bursts[i];
        if (!burst->dirty)
            continue;
        if (now < burst->window_end) {
            int64_t wait = burst->window_end - now;
            next = next < 0 || wait < next ? wait : next;
            continue;
        }
        json_object_set_new(burst->last, "count", json_integer((json_int_t)burst->count));
        s_show(self, &self->rules.rules[i], burst, burst->last, true, true);
        burst->dirty = false;
        /* The burst goes on: what arrives within the next window updates the same notification. */
        burst->window_end = now + self->coalesce_ms;
    }
    return (int)next;
}

static int notify_run(void *handle, lh_io_t *io)
{
    notify_t *self = handle;
    lh_error_t err;
    if (nt_desktop_connect(self->desktop, &err) != 0) {
        self->bus_retry_at = s_now_ms() + self->retry_ms;
        s_set_down(self, S_DOWN_BUS, true, err.text);
    }
    lh_io_ready(io);
    for (;;) {
        int next = s_flush(self);
        /* Wake for the next burst update, and often enough to see clicked actions. */
        int timeout = next >= 0 && next < 250 ? next : 250;
        lh_event_t *event = lh_io_recv(io, timeout);
        if (event) {
            s_handle(self, event);
            lh_event_destroy(&event);
        } else if (lh_io_terminated(io)) {
            break;
        }
        bool was_connected = nt_desktop_connected(self->desktop);
        nt_desktop_dispatch(self->desktop);
        if (was_connected && !nt_desktop_connected(self->desktop)) {
            self->bus_retry_at = 0; /* try again at the next notification */
            s_set_down(self, S_DOWN_BUS, true, "the session bus closed the connection");
        }
        const char *late = nt_sound_late_error(self->sound);
        if (late)
            s_set_down(self, S_DOWN_AUDIO, true, late);
        s_reap_openers(self, false);
    }
    return 0;
}

/* Sets do not disturb. With a dnd_file the file itself is the switch, so every worker, a
 * restarted one and a person's `touch`/`rm` agree; without one it is this instance's memory.
 * Returns 0, or -1 with a reason in reply. */
static int s_set_dnd(notify_t *self, bool on, char *reply, size_t reply_size)
{
    if (!self->dnd_file) {
        self->dnd_switch = on;
        return 0;
    }
    int fd = on ? open(self->dnd_file, O_WRONLY | O_CREAT | O_CLOEXEC, 0644) : -1;
    if (on && fd < 0) {
        snprintf(reply, reply_size, "cannot create dnd_file %s: %s", self->dnd_file,
                 strerror(errno));
        return -1;
    }
    if (fd >= 0)
        close(fd);
    if (!on && unlink(self->dnd_file) != 0 && errno != ENOENT) {
        snprintf(reply, reply_size, "cannot remove dnd_file %s: %s", self->dnd_file,
                 strerror(errno));
        return -1;
    }
    return 0;
}

/* Operator commands: `dnd on|off|status` (also true/false/null). The reply reports the state:
 * {"dnd":true,"dnd_file":null,"suppressed":3}. */
static int notify_command(void *handle, lh_io_t *io, const char *name, const char *args_json,
                          char *reply, size_t reply_size)
{
    notify_t *self = handle;
    if (strcmp(name, "dnd") != 0) {
        snprintf(reply, reply_size, "unknown command '%s' (notify takes: dnd on|off|status)", name);
        return -1;
    }
    json_t *args = json_loads(args_json, JSON_DECODE_ANY, NULL);
    const char *word = json_string_value(args);
    int set = -1; /* -1: status only */
    bool valid = true;
    if (json_is_true(args) || (word && strcmp(word, "on") == 0))
        set = 1;
    else if (json_is_false(args) || (word && strcmp(word, "off") == 0))
        set = 0;
    else if (!json_is_null(args) && !(word && strcmp(word, "status") == 0))
        valid = false;
    json_decref(args);
    if (!valid) {
        snprintf(reply, reply_size, "dnd takes on, off or status (got %.100s)", args_json);
        return -1;
    }
    bool was = s_dnd(self);
    if (set >= 0 && s_set_dnd(self, set == 1, reply, reply_size) != 0)
        return -1;
    if (s_dnd(self) != was)
        lh_log(io, LH_LOG_INFO, "do not disturb %s by command", s_dnd(self) ? "on" : "off");
    json_t *state = json_pack("{s:b, s:s?, s:I}", "dnd", s_dnd(self), "dnd_file", self->dnd_file,
                              "suppressed", (json_int_t)self->dnd_suppressed);
    char *text = state ? json_dumps(state, JSON_COMPACT) : NULL;
    int rc = text ? 0 : -1;
    snprintf(reply, reply_size, "%s", text ? text : "out of memory");
    free(text);
    json_decref(state);
    return rc;
}

static void notify_destroy(void **self_p)
{
    notify_t *self = *self_p;
    if (!self)
        return;
    nt_sound_destroy(&self->sound);
    nt_desktop_destroy(&self->desktop);
    if (self->bursts)
        for (size_t i = 0; i < self->rules.count; i++)
            json_decref(self->bursts[i].last);
    free(self->bursts);
    nt_rules_free(&self->rules);
    for (size_t i = 0; i < S_LINKS; i++)
        free(self->links[i].url);
    s_reap_openers(self, true);
    free(self);
    *self_p = NULL;
}

static const lh_plugin_t s_plugin = {
    .abi_major = LH_PLUGIN_ABI_MAJOR,
    .abi_minor = LH_PLUGIN_ABI_MINOR,
    .struct_size = sizeof(lh_plugin_t),
    .name = "notify",
    .version = "1.0",
    .description = "desktop notifications over D-Bus and event sounds, coalesced and rate limited",
    .roles = LH_ROLE_SINK,
    .options = s_options,
    .validate = notify_validate,
    .create = notify_create,
    .run = notify_run,
    .destroy = notify_destroy,
    .command = notify_command,
};

LH_PLUGIN_EXPORT(s_plugin)
