"""A fake Airtable API for tests: a real HTTP server on 127.0.0.1 that speaks the webhook and
metadata endpoints exactly as ../shared/airtable-api.md describes them (§9 is its checklist), and
sends real notification pings with X-Airtable-Content-MAC to the webhook's notificationUrl.

Tests drive it in-process, as an Airtable user would: create, update and delete records, revoke a
token, break a hook, start a 429 storm, make the server fail or go down for a while.

Choices where the spec says "unconfirmed" (U):
- 404 on an unknown webhook: {"error":{"type":"NOT_FOUND","message":"Could not find webhook"}};
  unknown routes: {"error":"NOT_FOUND"}.
- limit omitted: 50; limit > 50 clamped to 50; limit < 1 or a non-number: 422 INVALID_REQUEST_UNKNOWN.
- cursor < 1 is treated as 1; a cursor past the end returns an empty page with that cursor.
- a token without webhook:manage (or schema.bases:read on the schema route): 403 with the
  INVALID_PERMISSIONS_OR_MODEL_NOT_FOUND body.
- more than 10 hooks: 422 TOO_MANY_WEBHOOKS_IN_BASE. A spec without dataTypes: 422
  INVALID_REQUEST_UNKNOWN. A body that is not JSON: 400 INVALID_REQUEST_BODY.
- 429 penalty: `penalty` seconds from the first refused request, not extended by further calls.
- refresh of an expired hook: 422 CANNOT_REFRESH_EXPIRED_WEBHOOK. enableNotifications and
  delete answer {}.
- ping retries: `ping_retry_base` * 2**n seconds, `ping_retries` times, then
  areNotificationsEnabled turns false (payloads keep being stored).
- secret: 32 random bytes, base64.
- whether isHookEnabled turns false on expiry: yes by default (`expiry_disables`); with
  expiry_disables=False an expired hook is listed enabled and only refresh (422) tells.
- a stored cursor that points into payloads deleted by retention: the page starts at the oldest
  payload still kept (so its implicit numbering skips ahead).
- `page_cap` (default 50): the most payloads a page holds, whatever the limit; the real API may
  also return fewer than `limit` (mightHaveMore says whether more wait).
- hooks whose dataTypes include tableFields get a payload for each field added or renamed
  (createdFieldsById / changedFieldsById, with previous when includePreviousFieldDefinitions).
"""
import base64
import datetime
import hashlib
import hmac
import http.server
import json
import random
import secrets
import socket
import string
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

ALPHANUM = string.ascii_letters + string.digits
AUTH_REQUIRED = {"error": {"type": "AUTHENTICATION_REQUIRED", "message": "Authentication required"}}
NOT_AUTHORIZED = {"error": {
    "type": "INVALID_PERMISSIONS_OR_MODEL_NOT_FOUND",
    "message": "Invalid permissions, or the requested model was not found. Check that both your "
               "user and your token have the required permissions, and that the model names "
               "and/or ids are correct."}}
RATE_LIMITED = {"errors": [{"error": "RATE_LIMIT_REACHED",
                            "message": "Rate limit exceeded. Please try again later"}]}
ALL_SCOPES = {"webhook:manage", "data.records:read", "schema.bases:read"}
COLORS = ["blueLight2", "greenLight2", "redLight2", "yellowLight2", "purpleLight2", "grayLight2"]


def make_id(prefix):
    return prefix + "".join(random.choice(ALPHANUM) for _ in range(14))


def iso(epoch):
    moment = datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (moment.microsecond // 1000)


def mac_header(secret_b64, body):
    key = base64.b64decode(secret_b64)
    return "hmac-sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


class ApiError(Exception):
    def __init__(self, status, body):
        super().__init__(status)
        self.status, self.body = status, body


class Hook:
    def __init__(self, base, url, spec, ttl):
        self.id = make_id("ach")
        self.base = base
        self.secret = base64.b64encode(secrets.token_bytes(32)).decode()
        self.url = url
        self.spec = spec
        self.ttl = ttl
        self.expiration = time.time() + ttl
        self.enabled = True
        self.notifications = True
        self.payloads = []  # (number, created, payload)
        self.next_cursor = 1
        self.last_result = None
        self.last_success = None
        self.ping_pending = False
        self.created = time.time()

    def active(self, now):
        return self.enabled and now < self.expiration

    def gone(self, now):
        return now >= self.expiration + 7 * 86400

    def as_json(self, now, expiry_disables=True):
        enabled = self.active(now) if expiry_disables else self.enabled
        body = {"id": self.id, "areNotificationsEnabled": self.notifications,
                "cursorForNextPayload": self.next_cursor, "isHookEnabled": enabled,
                "lastSuccessfulNotificationTime": self.last_success, "notificationUrl": self.url,
                "expirationTime": iso(self.expiration), "lastNotificationResult": self.last_result,
                "specification": self.spec}
        return body


class FakeAirtable:
    """Run with start(); stop() ends the server and every ping thread."""

    def __init__(self, rate_limit=5, token_rate_limit=50, penalty=30.0, ping_retry_base=10.0,
                 ping_retries=13, ping_timeout=25.0, hook_ttl=7 * 86400, ping_delay=0.05,
                 expiry_disables=True, page_cap=50):
        self.lock = threading.RLock()
        self.tokens = {}
        self.bases = {}
        self.rate_limit, self.token_rate_limit, self.penalty = rate_limit, token_rate_limit, penalty
        self.ping_retry_base, self.ping_retries = ping_retry_base, ping_retries
        self.ping_timeout, self.hook_ttl, self.ping_delay = ping_timeout, hook_ttl, ping_delay
        self.expiry_disables, self.page_cap = expiry_disables, page_cap
        self.request_times = []  # (time, method, path) of each authorised API request
        self.recent = {}       # base or token -> [request times]
        self.penalty_until = {}
        self.faults = []       # statuses forced on the next requests
        self.requests = []     # (method, path, status), for assertions
        self.pings = []        # (hook id, status or error text)
        self.server = None
        self.connections = set()
        self.port = None
        self.running = False
        self.transaction = 0

    # ---- server lifecycle --------------------------------------------------------------------
    def start(self, port=0):
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def setup(self):
                super().setup()
                with fake.lock:
                    fake.connections.add(self.connection)

            def finish(self):
                super().finish()
                with fake.lock:
                    fake.connections.discard(self.connection)

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                status, body = fake.handle(self.command, self.path, self.headers, raw)
                data = json.dumps(body, separators=(",", ":")).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json; charset=utf-8")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client stopped reading (e.g. an answer over its bound)
                    self.close_connection = True

            do_GET = do_POST = do_DELETE = do_PATCH = _handle

        class Server(http.server.ThreadingHTTPServer):
            allow_reuse_address = True

            def handle_error(self, request, client_address):
                # A client that cut a too large answer short resets the connection: expected.
                if not isinstance(sys.exc_info()[1], ConnectionError):
                    super().handle_error(request, client_address)

        self.server = Server(("127.0.0.1", port or self.port or 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.running = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def stop(self):
        self.running = False
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        # Kept-alive connections would go on being served by their threads: cut them too.
        with self.lock:
            for connection in list(self.connections):
                try:
                    connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def down(self):
        """The server goes away (connections refused); up() brings it back on the same port."""
        self.stop()

    def up(self):
        self.start(self.port)

    # ---- world set-up, as an Airtable user ---------------------------------------------------
    def add_token(self, bases, scopes=ALL_SCOPES):
        token = "pat" + "".join(random.choice(ALPHANUM) for _ in range(14)) + "." + \
            secrets.token_hex(32)
        with self.lock:
            self.tokens[token] = {"bases": set(bases), "scopes": set(scopes)}
        return token

    def revoke(self, token, base):
        with self.lock:
            self.tokens[token]["bases"].discard(base)

    def grant(self, token, base):
        with self.lock:
            self.tokens[token]["bases"].add(base)

    def add_base(self, tables):
        """tables: {name: [(field name, type, [choices])...]}; the first field is primary."""
        base = make_id("app")
        with self.lock:
            self.bases[base] = {"tables": {}, "hooks": {}, "records": {}}
            for name, fields in tables.items():
                table = {"id": make_id("tbl"), "name": name, "fields": [], "views": [
                    {"id": make_id("viw"), "name": "Grid view", "type": "grid"}]}
                for spec in fields:
                    field = {"id": make_id("fld"), "name": spec[0], "type": spec[1]}
                    if spec[1] in ("singleSelect", "multipleSelects"):
                        field["options"] = {"choices": [
                            {"id": make_id("sel"), "name": choice, "color": COLORS[i % 6]}
                            for i, choice in enumerate(spec[2])]}
                    table["fields"].append(field)
                table["primaryFieldId"] = table["fields"][0]["id"]
                self.bases[base]["tables"][table["id"]] = table
        return base

    def table_id(self, base, name):
        return next(t["id"] for t in self.bases[base]["tables"].values() if t["name"] == name)

    def field(self, base, table_name, field_name):
        table = self.bases[base]["tables"][self.table_id(base, table_name)]
        return next(f for f in table["fields"] if f["name"] == field_name)

    def add_field(self, base, table_name, name, type_="singleLineText"):
        """A field added in the UI: in the schema from now on. Hooks watching only tableData
        hear of it through the cells of later changes."""
        with self.lock:
            table = self.bases[base]["tables"][self.table_id(base, table_name)]
            field = {"id": make_id("fld"), "name": name, "type": type_}
            table["fields"].append(field)
            self._field_change(base, table["id"], lambda hook: {
                "createdFieldsById": {field["id"]: {"name": name, "type": type_}}})
        return field["id"]

    def rename_field(self, base, table_name, old, new):
        """A field renamed in the UI: its id stays, hooks watching tableFields get a payload."""
        with self.lock:
            table_id = self.table_id(base, table_name)
            field = self.field(base, table_name, old)
            field["name"] = new

            def change(hook):
                entry = {"current": {"name": new}}
                if hook.spec["options"].get("includes", {}).get("includePreviousFieldDefinitions"):
                    entry["previous"] = {"name": old}
                return {"changedFieldsById": {field["id"]: entry}}
            self._field_change(base, table_id, change)
        return field["id"]

    def _field_change(self, base, table_id, build):
        self.transaction += 1
        now = time.time()
        for hook in self.bases[base]["hooks"].values():
            if not hook.active(now) or \
                    "tableFields" not in hook.spec["options"]["filters"]["dataTypes"]:
                continue
            self._store(hook, {"timestamp": iso(now), "baseTransactionNumber": self.transaction,
                               "actionMetadata": self._actor("client"), "payloadFormat": "v0",
                               "changedTablesById": {table_id: build(hook)}})

    def create_hook(self, base, url=None, data_types=("tableData",)):
        """A webhook made by another client of the base (as POST /webhooks would)."""
        with self.lock:
            hook = Hook(base, url, {"options": {"filters": {"dataTypes": list(data_types)}}},
                        self.hook_ttl)
            self.bases[base]["hooks"][hook.id] = hook
            return hook

    def age_payloads(self, base, hook_id, count):
        """The oldest `count` payloads of the hook pass Airtable's 7-day retention."""
        with self.lock:
            hook = self.bases[base]["hooks"][hook_id]
            old = time.time() - 8 * 86400
            hook.payloads = [(n, old if i < count else created, p)
                             for i, (n, created, p) in enumerate(hook.payloads)]

    def request_rate(self, since=0.0):
        """(count, seconds between the first and the last) of API requests after `since`."""
        with self.lock:
            times = [t for t, _, _ in self.request_times if t >= since]
        return len(times), (times[-1] - times[0]) if times else 0.0

    def hooks(self, base):
        with self.lock:
            return list(self.bases[base]["hooks"].values())

    def _v2(self, base, field, value):
        """A test's plain value as the V2 cell value of §7."""
        if value is None:
            return None
        if field["type"] == "singleSelect":
            return dict(next(c for c in field["options"]["choices"] if c["name"] == value))
        if field["type"] == "multipleSelects":
            return [dict(next(c for c in field["options"]["choices"] if c["name"] == v))
                    for v in value]
        if field["type"] == "multipleRecordLinks":
            links = []
            for record in value:
                table_id, cells = self.bases[base]["records"][record]
                primary = self.bases[base]["tables"][table_id]["primaryFieldId"]
                links.append({"id": record, "name": cells.get(primary)})
            return links
        return value

    def _actor(self, source):
        if source in ("client", "publicApi"):
            return {"source": source, "sourceMetadata": {"user": {
                "id": "usrQ3zK8mVb2LpR7xT", "email": "ops@example.org", "permissionLevel": "create",
                "name": "Ops Person", "profilePicUrl": "https://example.org/p.png"}}}
        if source == "formSubmission":
            return {"source": source, "sourceMetadata": {"viewId": make_id("viw")}}
        return {"source": source}

    def _cells(self, base, table_id, fields):
        table = self.bases[base]["tables"][table_id]
        by_name = {f["name"]: f for f in table["fields"]}
        return {by_name[name]["id"]: self._v2(base, by_name[name], value)
                for name, value in fields.items()}

    def create_record(self, base, table_name, fields, source="client"):
        with self.lock:
            table_id = self.table_id(base, table_name)
            record = make_id("rec")
            cells = {k: v for k, v in self._cells(base, table_id, fields).items() if v is not None}
            self.bases[base]["records"][record] = (table_id, cells)
            created = iso(time.time())
            self._record_change(base, table_id, "add", source, lambda hook: {
                "createdRecordsById": {record: {"createdTime": created,
                                                "cellValuesByFieldId": dict(cells)}}}, cells)
        return record

    def update_record(self, base, record, fields, source="client"):
        with self.lock:
            table_id, cells = self.bases[base]["records"][record]
            new = self._cells(base, table_id, fields)
            previous = {fid: cells.get(fid) for fid in new}
            for fid, value in new.items():
                if value is None:
                    cells.pop(fid, None)
                else:
                    cells[fid] = value

            def change(hook):
                includes = hook.spec["options"].get("includes", {})
                entry = {"current": {"cellValuesByFieldId": dict(new)}}
                if includes.get("includePreviousCellValues"):
                    entry["previous"] = {"cellValuesByFieldId": previous}
                wanted = includes.get("includeCellValuesInFieldIds")
                unchanged = {fid: value for fid, value in cells.items() if fid not in new and
                             (wanted == "all" or (isinstance(wanted, list) and fid in wanted))}
                if unchanged:
                    entry["unchanged"] = {"cellValuesByFieldId": unchanged}
                return {"changedRecordsById": {record: entry}}
            self._record_change(base, table_id, "update", source, change, new)

    def create_record_in_ui(self, base, table_name, fields, source="client"):
        """What a user typing a new row in the grid does: an empty create, then one change per
        cell, each its own transaction and payload."""
        record = self.create_record(base, table_name, {}, source)
        for name, value in fields.items():
            self.update_record(base, record, {name: value}, source)
        return record

    def delete_record(self, base, record, source="client"):
        with self.lock:
            table_id, _ = self.bases[base]["records"].pop(record)
            self._record_change(base, table_id, "remove", source,
                                lambda hook: {"destroyedRecordIds": [record]}, {})

    def _record_change(self, base, table_id, change_type, source, build, cells):
        self.transaction += 1
        now = time.time()
        for hook in self.bases[base]["hooks"].values():
            filters = hook.spec["options"]["filters"]
            if not hook.active(now) or "tableData" not in filters["dataTypes"]:
                continue
            scope = filters.get("recordChangeScope")
            if scope and scope != table_id:
                continue
            if filters.get("changeTypes") and change_type not in filters["changeTypes"]:
                continue
            if filters.get("fromSources") and source not in filters["fromSources"]:
                continue
            watched = filters.get("watchDataInFieldIds")
            if watched and change_type == "update" and not set(watched) & set(cells):
                continue
            payload = {"timestamp": iso(now), "baseTransactionNumber": self.transaction,
                       "actionMetadata": self._actor(source), "payloadFormat": "v0",
                       "changedTablesById": {table_id: build(hook)}}
            self._store(hook, payload)

    def inject_payload(self, base, hook_id, payload):
        """Stores a payload as given (unknown keys, wrong types...) and pings."""
        with self.lock:
            self._store(self.bases[base]["hooks"][hook_id], payload)

    def break_hook(self, base, hook_id, code="INVALID_HOOK"):
        """What deleting a scoped table or a watched field does (§5.6): an error payload, and the
        hook is disabled for good."""
        with self.lock:
            hook = self.bases[base]["hooks"][hook_id]
            self.transaction += 1
            self._store(hook, {"timestamp": iso(time.time()),
                               "baseTransactionNumber": self.transaction,
                               "actionMetadata": self._actor("client"),
                               "destroyedTableIds": [make_id("tbl")], "error": True,
                               "code": code, "payloadFormat": "v0"})
            hook.enabled = False

    def expire_hook(self, base, hook_id):
        with self.lock:
            self.bases[base]["hooks"][hook_id].expiration = time.time() - 1

    def _store(self, hook, payload):
        hook.payloads.append((hook.next_cursor, time.time(), payload))
        hook.next_cursor += 1
        self._schedule_ping(hook)

    # ---- pings -------------------------------------------------------------------------------
    def _schedule_ping(self, hook):
        """Coalesces: one ping covers every payload stored before it leaves."""
        if not hook.url or not hook.notifications or hook.ping_pending:
            return
        hook.ping_pending = True
        threading.Thread(target=self._ping_loop, args=(hook,), daemon=True).start()

    def ping_body(self, base, hook_id):
        return json.dumps({"base": {"id": base}, "webhook": {"id": hook_id},
                           "timestamp": iso(time.time())}, separators=(",", ":")).encode()

    def send_ping(self, url, body, mac, content_type="application/json"):
        """POSTs one ping; returns the HTTP status (or an error text when none came)."""
        headers = {"Content-Type": content_type}
        if mac is not None:
            headers["X-Airtable-Content-MAC"] = mac
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.ping_timeout) as answer:
                return answer.status
        except urllib.error.HTTPError as error:
            return error.code
        except OSError as error:
            return str(error)

    def _ping_loop(self, hook):
        time.sleep(self.ping_delay)
        with self.lock:
            hook.ping_pending = False
        for attempt in range(self.ping_retries + 1):
            if not self.running:
                return
            started = time.time()
            body = self.ping_body(hook.base, hook.id)
            status = self.send_ping(hook.url, body, mac_header(hook.secret, body))
            with self.lock:
                self.pings.append((hook.id, status))
                ok = status in (200, 204)
                result = {"success": ok, "completionTimestamp": iso(time.time()),
                          "durationMs": (time.time() - started) * 1000, "retryNumber": attempt}
                if not ok:
                    result["error"] = {"message": "The HTTP request returned a %s status code "
                                       "instead of 200 or 204" % status}
                    result["willBeRetried"] = attempt < self.ping_retries
                else:
                    hook.last_success = result["completionTimestamp"]
                hook.last_result = result
            if ok:
                return
            if attempt < self.ping_retries:
                time.sleep(self.ping_retry_base * 2 ** attempt)
        with self.lock:
            hook.notifications = False

    # ---- faults ------------------------------------------------------------------------------
    def fail_next(self, count, status=500):
        with self.lock:
            self.faults += [status] * count

    def storm(self, base):
        """Starts a 429 window on the base, as a burst from another client would."""
        with self.lock:
            self.penalty_until[base] = time.time() + self.penalty

    def count(self, method=None, path_part=""):
        with self.lock:
            return sum(1 for m, p, _ in self.requests
                       if (method is None or m == method) and path_part in p)

    # ---- the API -----------------------------------------------------------------------------
    def handle(self, method, target, headers, raw):
        parsed = urllib.parse.urlsplit(target)
        query = urllib.parse.parse_qs(parsed.query)
        parts = [p for p in parsed.path.split("/") if p]
        with self.lock:
            try:
                status, body = self._route(method, parts, query, headers, raw)
            except ApiError as error:
                status, body = error.status, error.body
            self.requests.append((method, parsed.path, status))
            return status, body

    def _authorize(self, headers, base, scopes):
        auth = headers.get("Authorization") or ""
        if not auth.startswith("Bearer ") or auth[7:] not in self.tokens:
            raise ApiError(401, AUTH_REQUIRED)
        token = auth[7:]
        now = time.time()
        self.request_times.append((now, "", ""))
        for key, limit in ((base, self.rate_limit), (token, self.token_rate_limit)):
            if self.penalty_until.get(key, 0) > now:
                raise ApiError(429, RATE_LIMITED)
            window = [t for t in self.recent.get(key, []) if t > now - 1.0] + [now]
            self.recent[key] = window
            if len(window) > limit:
                self.penalty_until[key] = now + self.penalty
                raise ApiError(429, RATE_LIMITED)
        grant = self.tokens[token]
        if base not in grant["bases"] or base not in self.bases or not scopes <= grant["scopes"]:
            raise ApiError(403, NOT_AUTHORIZED)

    def _hook(self, base, hook_id):
        hook = self.bases[base]["hooks"].get(hook_id)
        if not hook or hook.gone(time.time()):
            raise ApiError(404, {"error": {"type": "NOT_FOUND",
                                           "message": "Could not find webhook"}})
        return hook

    def _json(self, raw):
        try:
            return json.loads(raw) if raw else {}
        except ValueError:
            raise ApiError(400, {"error": {"type": "INVALID_REQUEST_BODY",
                                           "message": "Could not parse request body"}})

    def _route(self, method, parts, query, headers, raw):
        if self.faults:
            status = self.faults.pop(0)
            return status, {"error": {"type": "SERVER_ERROR", "message": "Try again later"}}
        if parts[:1] != ["v0"] or len(parts) < 4:
            return 404, {"error": "NOT_FOUND"}
        if parts[1:3] == ["meta", "bases"] and len(parts) == 5 and parts[4] == "tables" \
                and method == "GET":
            base = parts[3]
            self._authorize(headers, base, {"schema.bases:read"})
            return 200, {"tables": json.loads(json.dumps(
                list(self.bases[base]["tables"].values())))}
        if parts[1] != "bases" or parts[3] != "webhooks":
            return 404, {"error": "NOT_FOUND"}
        base = parts[2]
        self._authorize(headers, base, {"webhook:manage"})
        hooks = self.bases[base]["hooks"]
        now = time.time()
        if len(parts) == 4 and method == "GET":
            return 200, {"webhooks": [h.as_json(now, self.expiry_disables)
                                      for h in hooks.values() if not h.gone(now)]}
        if len(parts) == 4 and method == "POST":
            request = self._json(raw)
            spec = request.get("specification") if isinstance(request, dict) else None
            options = spec.get("options") if isinstance(spec, dict) else None
            filters = options.get("filters") if isinstance(options, dict) else None
            if not isinstance(filters, dict) or not isinstance(filters.get("dataTypes"), list):
                raise ApiError(422, {"error": {"type": "INVALID_REQUEST_UNKNOWN", "message":
                                               "specification.options.filters.dataTypes is "
                                               "required"}})
            if len(hooks) >= 10:
                raise ApiError(422, {"error": {"type": "TOO_MANY_WEBHOOKS_IN_BASE",
                                               "message": "A base can have at most 10 webhooks"}})
            hook = Hook(base, request.get("notificationUrl"), spec, self.hook_ttl)
            hooks[hook.id] = hook
            return 200, {"id": hook.id, "macSecretBase64": hook.secret,
                         "expirationTime": iso(hook.expiration)}
        hook = self._hook(base, parts[4])
        if len(parts) == 5 and method == "DELETE":
            del hooks[hook.id]
            return 200, {}
        action = parts[5] if len(parts) == 6 else None
        if action == "refresh" and method == "POST":
            if not hook.active(now):
                raise ApiError(422, {"error": {"type": "CANNOT_REFRESH_EXPIRED_WEBHOOK",
                                               "message": "The webhook has expired"}})
            hook.expiration = now + hook.ttl
            return 200, {"expirationTime": iso(hook.expiration)}
        if action == "enableNotifications" and method == "POST":
            request = self._json(raw)
            if not isinstance(request, dict) or not isinstance(request.get("enable"), bool):
                raise ApiError(422, {"error": {"type": "INVALID_REQUEST_UNKNOWN",
                                               "message": "enable must be a boolean"}})
            hook.notifications = request["enable"]
            return 200, {}
        if action == "payloads" and method == "GET":
            if not {"data.records:read"} <= self.tokens[headers["Authorization"][7:]]["scopes"]:
                raise ApiError(403, NOT_AUTHORIZED)
            try:
                cursor = max(1, int(query.get("cursor", ["1"])[0]))
                limit = int(query.get("limit", ["50"])[0])
            except ValueError:
                limit = 0
            if limit < 1:
                raise ApiError(422, {"error": {"type": "INVALID_REQUEST_UNKNOWN",
                                               "message": "limit must be a positive number"}})
            limit = min(limit, 50, self.page_cap)
            kept = [(n, p) for n, created, p in hook.payloads if created > now - 7 * 86400]
            after = [(n, p) for n, p in kept if n >= cursor]
            page = after[:limit]
            if hook.active(now):
                hook.expiration = now + hook.ttl
            return 200, {"payloads": [p for _, p in page],
                         "cursor": page[-1][0] + 1 if page else cursor,
                         "mightHaveMore": len(after) > len(page)}
        return 404, {"error": "NOT_FOUND"}
