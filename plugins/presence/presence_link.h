/* presence_link: what a browser-facing sink (websocket, polling) shares with the presence tracker
 * (docs/PRESENCE.md). Compiled into each such sink.
 *
 * A sink announces its connections as events on the hub's inproc ingest, addressed to the
 * PRESENCE_AUDIENCE that no token is ever granted:
 *   presence:hello {stage, worker, incarnation}        an instance started (or was asked to sync)
 *   presence:join  {incarnation, conn, user, role, transport}
 *   presence:leave {incarnation, conn}
 * The tracker answers with presence:online / presence:offline to the audiences its conf allows, a
 * presence:snapshot after every hello and a presence:sync (re-announce everything) when it starts.
 * The link also keeps the sink's mirror of who is online, filled from those events, which answers
 * presence queries without a round trip. Everything runs on the sink's own thread. */
#ifndef PRESENCE_LINK_H
#define PRESENCE_LINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <livehub/livehub.h>

/* The audience of the presence traffic between sinks and the tracker: granted to no token. */
#define PRESENCE_AUDIENCE "hub:presence"

typedef struct presence_link presence_link_t;

/* A link for this sink instance: a PUSH to the hub's inproc ingest and a fresh incarnation id.
 * NULL when the socket cannot be made. */
presence_link_t *presence_link_new(lh_io_t *io);
void presence_link_destroy(presence_link_t **self_p);

/* Announcements; 0, or -1 when the hub's ingest is full (the tracker then resyncs later). */
int presence_link_hello(presence_link_t *self);
int presence_link_join(presence_link_t *self, uint64_t conn, const char *user, const char *role,
                       const char *transport);
int presence_link_leave(presence_link_t *self, uint64_t conn);

/* Publishes an event on behalf of src (e.g. "user:42"), which the hub keeps as the event's src.
 * data may be NULL; to holds to_count audiences (0: none, the hub makes it public). 0 or -1 with a
 * reason. */
int presence_link_publish(presence_link_t *self, const char *type, const json_t *data,
                          const char *const *to, size_t to_count, const char *src,
                          lh_error_t *err);

/* Feeds an event the sink received to the mirror. Returns true for presence:sync, after which
 * the sink must send presence_link_hello and re-announce every connection. */
bool presence_link_observe(presence_link_t *self, const lh_event_t *event);

/* The users online that a connection with these grants may see: a new JSON array of
 * {"user","role","connections":{transport: count}}. NULL when out of memory. */
json_t *presence_link_query(presence_link_t *self, const char *const *granted,
                            size_t granted_count);

/* The user and role behind grants ("user:<sub>", "role:<role>"); false when anonymous. */
bool presence_identity(const char *const *granted, size_t granted_count, const char **user,
                       const char **role);

#endif
