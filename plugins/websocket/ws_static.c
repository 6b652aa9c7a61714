/* ws_static: the plain HTTP side: files from the `www` folder (with content types, never outside
 * it), when configured the stage's counters as JSON, and the dev login's answers (ws_auth.c). */
#include <dlfcn.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include "ws_internal.h"

static const struct {
    const char *extension;
    const char *type;
} s_types[] = {
    {".html", "text/html; charset=utf-8"},
    {".htm", "text/html; charset=utf-8"},
    {".js", "text/javascript; charset=utf-8"},
    {".mjs", "text/javascript; charset=utf-8"},
    {".css", "text/css; charset=utf-8"},
    {".json", "application/json"},
    {".map", "application/json"},
    {".txt", "text/plain; charset=utf-8"},
    {".svg", "image/svg+xml"},
    {".png", "image/png"},
    {".jpg", "image/jpeg"},
    {".jpeg", "image/jpeg"},
    {".gif", "image/gif"},
    {".webp", "image/webp"},
    {".ico", "image/x-icon"},
    {".woff", "font/woff"},
    {".woff2", "font/woff2"},
    {".wasm", "application/wasm"},
    {".mp3", "audio/mpeg"},
    {".ogg", "audio/ogg"},
    {".oga", "audio/ogg"},
    {".wav", "audio/wav"},
};

static const char *s_content_type(const char *path)
{
    const char *dot = strrchr(path, '.');
    const char *slash = strrchr(path, '/');
    if (dot && (!slash || dot > slash))
        for (size_t i = 0; i < sizeof s_types / sizeof s_types[0]; i++)
            if (strcasecmp(dot, s_types[i].extension) == 0)
                return s_types[i].type;
    return "application/octet-stream";
}

char *ws_static_default_root(void)
{
    Dl_info info;
    if (dladdr((const void *)s_types, &info) && info.dli_fname) {
        char *copy = strdup(info.dli_fname), *path = NULL, *real = NULL;
        if (copy && asprintf(&path, "%s/%s", dirname(copy), WS_WWW_FROM_PLUGIN) >= 0)
            real = realpath(path, NULL);
        free(path);
        free(copy);
        struct stat st;
        if (real && stat(real, &st) == 0 && S_ISDIR(st.st_mode))
            return real;
        free(real);
    }
    return realpath(WS_WWW_SOURCE_DIR, NULL);
}

static int s_status(struct lws *wsi, unsigned status, const char *message)
{
    if (lws_return_http_status(wsi, status, message))
        return -1;
    return lws_http_transaction_completed(wsi) ? -1 : 0;
}

/* The file a request names, resolved inside root; NULL when it is not a readable regular file
 * there. Dot segments ("..", hidden files) are refused before the file system is asked, and the
 * resolved path must still be under root, so symbolic links cannot lead out either. */
static char *s_resolve(const char *root, const char *uri)
{
    if (uri[0] != '/' || strchr(uri, '\\') || strstr(uri, "/."))
        return NULL;
    char *path = NULL;
    size_t size = strlen(uri);
    if (asprintf(&path, "%s%s%s", root, uri, uri[size - 1] == '/' ? "index.html" : "") < 0)
        return NULL;
    char *real = realpath(path, NULL);
    free(path);
    struct stat st;
    size_t root_size = strlen(root);
    if (real && stat(real, &st) == 0 && S_ISDIR(st.st_mode)) {
        char *index = NULL;
        if (asprintf(&index, "%s/index.html", real) >= 0) {
            free(real);
            real = realpath(index, NULL);
        }
        free(index);
    }
    if (!real || strncmp(real, root, root_size) != 0 || real[root_size] != '/' ||
        stat(real, &st) != 0 || !S_ISREG(st.st_mode)) {
        free(real);
        return NULL;
    }
    return real;
}

typedef struct {
    const char *labels;
    json_t *object;
} s_stats_t;

/* A histogram's series of this stage add up into <name>_count and <name>_sum. */
static void s_collect_histogram(s_stats_t *stats, const lh_metric_view_t *view)
{
    size_t size = strlen(stats->labels);
    if (strncmp(view->labels, stats->labels, size) != 0 ||
        (view->labels[size] != '\0' && view->labels[size] != ','))
        return;
    char key[160];
    snprintf(key, sizeof key, "%s_count", view->name);
    json_t *old = json_object_get(stats->object, key);
    json_object_set_new(
        stats->object, key,
        json_integer((json_int_t)view->count + (old ? json_integer_value(old) : 0)));
    snprintf(key, sizeof key, "%s_sum", view->name);
    old = json_object_get(stats->object, key);
    json_object_set_new(stats->object, key, json_real(view->value + json_number_value(old)));
}

static void s_collect(const lh_metric_view_t *view, void *arg)
{
    s_stats_t *stats = arg;
    if (strncmp(view->name, "livehub_ws_", 11) != 0)
        return;
    if (view->kind == LH_METRIC_HISTOGRAM)
        s_collect_histogram(stats, view);
    else if (strcmp(view->labels, stats->labels) == 0)
        json_object_set_new(stats->object, view->name, json_real(view->value));
}

int ws_static_json(struct lws *wsi, unsigned status, json_t *json)
{
    char *body = json ? json_dumps(json, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(json);
    if (!body)
        return s_status(wsi, HTTP_STATUS_INTERNAL_SERVER_ERROR, NULL);
    size_t body_size = strlen(body);
    unsigned char *buffer = malloc(LWS_PRE + 512 + body_size);
    int rc = -1;
    if (buffer) {
        unsigned char *start = buffer + LWS_PRE, *p = start, *end = start + 512;
        if (!lws_add_http_common_headers(wsi, status, "application/json", body_size, &p, end) &&
            !lws_add_http_header_by_name(wsi, (const unsigned char *)"cache-control:",
                                         (const unsigned char *)"no-store", 8, &p, end) &&
            !lws_finalize_http_header(wsi, &p, end)) {
            memcpy(p, body, body_size);
            size_t total = (size_t)(p - start) + body_size;
            if (lws_write(wsi, start, total, LWS_WRITE_HTTP) == (int)total)
                rc = lws_http_transaction_completed(wsi) ? -1 : 0;
        }
    }
    free(buffer);
    /* the body may hold a token: wipe it like the other secret-bearing buffers */
    memset(body, 0, body_size);
    free(body);
    return rc;
}

/* The stage's livehub_ws_* metrics as one JSON object. */
static int s_stats(ws_server_t *server, struct lws *wsi)
{
    char labels[300];
    snprintf(labels, sizeof labels, "stage=\"%s\"", lh_io_stage(server->io));
    s_stats_t stats = {labels, json_object()};
    lh_io_metrics_each(server->io, s_collect, &stats);
    return ws_static_json(wsi, HTTP_STATUS_OK, stats.object);
}

int ws_static_http(ws_server_t *server, struct lws *wsi, const char *uri)
{
    if (lws_hdr_total_length(wsi, WSI_TOKEN_GET_URI) <= 0)
        return s_status(wsi, HTTP_STATUS_METHOD_NOT_ALLOWED, "only GET");
    if (server->opt.stats_path && strcmp(uri, server->opt.stats_path) == 0)
        return s_stats(server, wsi);
    if (strcmp(uri, WS_DEV_TOKEN_PATH) == 0)
        return ws_auth_dev_token(server, wsi);
    if (strncmp(uri, "/ws/", 4) == 0)
        return s_status(wsi, HTTP_STATUS_BAD_REQUEST, "a WebSocket endpoint: upgrade required");
    char *path = server->www ? s_resolve(server->www, uri) : NULL;
    if (!path)
        return s_status(wsi, HTTP_STATUS_NOT_FOUND, NULL);
    unsigned char headers[256], *p = headers, *end = headers + sizeof headers;
    if (lws_add_http_header_by_name(wsi, (const unsigned char *)"x-content-type-options:",
                                    (const unsigned char *)"nosniff", 7, &p, end) ||
        lws_add_http_header_by_name(wsi, (const unsigned char *)"cache-control:",
                                    (const unsigned char *)"no-cache", 8, &p, end))
        p = headers; /* cannot happen with this buffer; the file still goes out */
    int n = lws_serve_http_file(wsi, path, s_content_type(path), (const char *)headers,
                                (int)(p - headers));
    free(path);
    if (n < 0 || (n > 0 && lws_http_transaction_completed(wsi)))
        return -1;
    return 0;
}
