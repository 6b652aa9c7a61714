"""The airtable source end to end: a fake Airtable API (tests/fakes/airtable_fake.py, real HTTP
both ways) changes records as a user would; the plugin in a real livehubd turns the webhook
payloads into events that a subscriber receives once, with the right audience and data."""
import asyncio
import json
import os
import stat
import sys
import tempfile
import time
import unittest

import websockets

from hubtest import HubTestCase, SOURCE_DIR, free_port
from test_websocket import SECRET_ENV, mint, recv_op

sys.path.insert(0, os.path.join(SOURCE_DIR, "tests", "fakes"))
import airtable_fake  # noqa: E402

TABLES = {
    "Startups": [("Name", "singleLineText")],
    "Signals": [("Title", "singleLineText"), ("Visibility", "singleSelect", ["Public", "Private"]),
                ("Status", "singleSelect", ["Draft", "Published", "Removed"]),
                ("Notes", "multilineText")],
    "Assignments": [("Name", "singleLineText"), ("Startup", "multipleRecordLinks"),
                    ("Response", "singleSelect", ["Pending", "Viewed", "Interested", "Declined"])],
    "Connections": [("Name", "singleLineText"), ("Startup", "multipleRecordLinks"),
                    ("Status", "singleSelect", ["Requested", "Accepted", "Closed"])],
}
MAP = {"tables": {
    "Signals": {"family": "signal", "fields": ["Title", "Visibility", "Status"],
                "public_when": {"field": "Visibility", "equals": "Public"}, "to": ["admin"]},
    "Assignments": {"family": "assignment", "changes": {"Response": "responseChanged"},
                    "to": ["user:{Startup}", "admin"], "events": {"updated": False}},
    "Connections": {"family": "connection", "changes": {"Status": "statusChanged"},
                    "to": ["user:{Startup}", "admin"]},
}}


def wait_for(predicate, timeout=10.0, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out waiting for " + what)


class AirtableCase(HubTestCase):
    def setUp(self):
        super().setUp()
        self.fake = airtable_fake.FakeAirtable(penalty=1.5, ping_retry_base=0.2, ping_retries=2,
                                               ping_timeout=5.0).start()
        self.addCleanup(self.fake.stop)
        self.base = self.fake.add_base(TABLES)
        self.token = self.fake.add_token([self.base])
        self.dir = tempfile.mkdtemp(prefix="livehub-airtable-")
        self.map_path = os.path.join(self.dir, "map.json")
        with open(self.map_path, "w") as out:
            json.dump(MAP, out)
        self.listen_port = free_port()
        self.state_path = os.path.join(self.dir, "airtable-at.json")

    def start_hub(self, hub_extra="", **options):
        settings = {"base": self.base, "token": "env:AIRTABLE_TOKEN", "map": self.map_path,
                    "state_dir": self.dir, "api_url": self.fake.url,
                    "listen": "127.0.0.1:%d" % self.listen_port, "rate_limit_backoff": 1500,
                    "retry_base": 200, "auth_retry": 1000, "poll_interval": 60,
                    "lifecycle_interval": 60}
        settings.update(options)
        chains = "chain = airtable\n    source = at\n        plugin = airtable\n" + "".join(
            "        %s = %s\n" % item for item in settings.items())
        return self.hub(chains=chains, hub_extra=hub_extra,
                        env={"AIRTABLE_TOKEN": self.token})

    def wait_hook(self):
        return wait_for(lambda: [h for h in self.fake.hooks(self.base) if h.active(time.time())],
                        what="the plugin's webhook")[-1]

    def state(self):
        with open(self.state_path) as state:
            return json.load(state)

    def ping_url(self):
        return "http://127.0.0.1:%d/airtable/webhook" % self.listen_port


class FlowTest(AirtableCase):
    def test_changes_become_events_once_with_audiences_and_plain_data(self):
        hub = self.start_hub()
        events = hub.subscriber("signal:", "assignment:", "connection:")
        sync = hub.subscriber("sync:")
        hook = self.wait_hook()
        self.assertEqual(hook.url, self.ping_url())
        self.assertTrue(hook.spec["options"]["includes"]["includePreviousCellValues"])

        startup = self.fake.create_record(self.base, "Startups", {"Name": "Acme"})
        signal = self.fake.create_record(self.base, "Signals", {
            "Title": "Grant call", "Visibility": "Public", "Status": "Draft", "Notes": "x"})
        created = events.recv()
        self.assertEqual(created["type"], "signal:created")
        self.assertEqual(created["to"], ["public"])
        self.assertEqual(created["data"]["record"], signal)
        self.assertEqual(created["data"]["table"], "Signals")
        self.assertEqual(created["data"]["fields"],
                         {"Title": "Grant call", "Visibility": "Public", "Status": "Draft"},
                         "selects as names, unmapped fields left out")
        self.assertEqual(created["data"]["actor"]["source"], "client")
        self.assertEqual(created["data"]["actor"]["user"]["email"], "ops@example.org")
        self.assertTrue(created["key"].startswith("airtable:%s:%s:" % (self.base, hook.id)))

        self.fake.update_record(self.base, signal, {"Status": "Published"})
        updated = events.recv()
        self.assertEqual(updated["type"], "signal:updated")
        self.assertEqual(updated["data"]["changed"], ["Status"])
        self.assertEqual(updated["data"]["previous"], {"Status": "Draft"})
        self.assertEqual(updated["data"]["fields"]["Status"], "Published")
        self.assertEqual(updated["to"], ["public"], "Visibility came in `unchanged`")

        assignment = self.fake.create_record(self.base, "Assignments", {
            "Name": "A-1", "Startup": [startup], "Response": "Pending"})
        event = events.recv()
        self.assertEqual(event["type"], "assignment:created")
        self.assertEqual(event["to"], ["user:%s" % startup, "admin"])
        self.assertEqual(event["data"]["fields"]["Startup"], [{"id": startup, "name": "Acme"}])

        self.fake.update_record(self.base, assignment, {"Response": "Interested"})
        event = events.recv()
        self.assertEqual(event["type"], "assignment:responseChanged")
        self.assertEqual((event["data"]["previousValue"], event["data"]["value"]),
                         ("Pending", "Interested"))
        self.assertEqual(event["to"], ["user:%s" % startup, "admin"])

        connection = self.fake.create_record(self.base, "Connections", {
            "Name": "C-1", "Startup": [startup], "Status": "Requested"})
        self.assertEqual(events.recv()["type"], "connection:created")
        self.fake.update_record(self.base, connection, {"Status": "Accepted"})
        got = events.recv_n(2)
        self.assertEqual([e["type"] for e in got],
                         ["connection:updated", "connection:statusChanged"])
        self.fake.delete_record(self.base, connection)
        deleted = events.recv()
        self.assertEqual((deleted["type"], deleted["data"]["record"]),
                         ("connection:deleted", connection))
        self.assertIsNone(events.recv(0.5), "each change once, nothing else")

        completed = wait_for(lambda: next((e for e in iter(lambda: sync.recv(0.2), None)
                                           if e["type"] == "sync:completed"), None),
                             what="sync:completed")
        self.assertEqual(completed["to"], ["admin"])
        self.assertGreaterEqual(completed["data"]["payloads"], 1)
        state = wait_for(lambda: self.state()["cursor"] == hook.next_cursor and self.state(),
                         what="the persisted cursor")
        self.assertEqual(state["webhook"], hook.id)
        self.assertEqual(stat.S_IMODE(os.stat(self.state_path).st_mode), 0o600)
        self.assertNotIn(self.token, hub.log(), "the token is never logged")
        self.assertNotIn(hook.secret, hub.log(), "nor the MAC secret")

    def test_bad_pings_are_refused_counted_and_change_nothing(self):
        hub = self.start_hub()
        hook = self.wait_hook()
        wait_for(lambda: self.fake.count("GET", "/payloads") >= 1, what="the first drain")
        time.sleep(0.3)
        fetches = self.fake.count("GET", "/payloads")
        url, fake = self.ping_url(), self.fake
        body = fake.ping_body(self.base, hook.id)
        forged = airtable_fake.mac_header("c2VjcmV0LWtleQ==", body)
        other = fake.ping_body(self.base, "achAAAAAAAAAAAAAA")
        cases = [
            (fake.send_ping(url, body, forged), 401),
            (fake.send_ping(url, body, None), 401),
            (fake.send_ping(url, body, airtable_fake.mac_header(hook.secret, body + b" ")), 401),
            (fake.send_ping(url, b"{not json", airtable_fake.mac_header(hook.secret,
                                                                         b"{not json")), 400),
            (fake.send_ping(url, b"[1,2]", airtable_fake.mac_header(hook.secret, b"[1,2]")), 400),
            (fake.send_ping(url, other, airtable_fake.mac_header(hook.secret, other)), 404),
            (fake.send_ping(url + "x", body, airtable_fake.mac_header(hook.secret, body)), 404),
            (fake.send_ping(url, b"x" * 20000, "hmac-sha256=" + "0" * 64), 413),
        ]
        self.assertEqual([got for got, _ in cases], [want for _, want in cases])
        time.sleep(0.5)
        self.assertEqual(self.fake.count("GET", "/payloads"), fetches, "no fetch for bad pings")
        self.assertIn("bad X-Airtable-Content-MAC", hub.log())
        # A valid ping replayed many times: answered, but no event appears twice.
        events = hub.subscriber("signal:")
        self.fake.create_record(self.base, "Signals", {"Title": "once", "Visibility": "Private"})
        first = events.recv()
        self.assertEqual((first["type"], first["to"]), ("signal:created", ["admin"]))
        for _ in range(5):
            self.assertEqual(fake.send_ping(url, body, airtable_fake.mac_header(hook.secret, body)),
                             204)
        self.assertIsNone(events.recv(0.7), "replayed pings raise nothing new")
        self.assertEqual(hub.stage("at")["restarts"], 0)


class FaultTest(AirtableCase):
    def test_429_storm_and_5xx_back_off_and_recover_without_loss(self):
        hub = self.start_hub()
        self.wait_hook()
        events, sync = hub.subscriber("signal:"), hub.subscriber("sync:")
        self.fake.storm(self.base)
        started = time.time()
        record = self.fake.create_record(self.base, "Signals", {"Title": "late"})
        event = events.recv(timeout=6)
        self.assertEqual(event["data"]["record"], record)
        self.assertGreaterEqual(time.time() - started, 1.4, "waited out the 429 window")
        self.assertLessEqual(self.fake.count() and sum(
            1 for _, _, s in self.fake.requests if s == 429), 3, "no hammering during 429")
        kinds = [(e["type"], e["data"].get("error") or e["data"].get("after"))
                 for e in sync.recv_n(2, timeout=3)]
        self.assertIn(("sync:error", "rate_limited"), kinds)

        self.fake.fail_next(3, 503)
        record = self.fake.create_record(self.base, "Signals", {"Title": "after 503s"})
        self.assertEqual(events.recv(timeout=6)["data"]["record"], record)
        self.assertIsNone(events.recv(0.5), "once")
        self.assertIn("HTTP 503", hub.log())

    def test_token_losing_access_and_server_down_then_back(self):
        hub = self.start_hub()
        hook = self.wait_hook()
        events, sync = hub.subscriber("signal:"), hub.subscriber("sync:")
        self.fake.revoke(self.token, self.base)
        record = self.fake.create_record(self.base, "Signals", {"Title": "while revoked"})
        self.assertIsNone(events.recv(1.5))
        error = sync.recv(2)
        self.assertEqual((error["type"], error["data"]["error"]), ("sync:error", "auth"))
        self.assertIn("INVALID_PERMISSIONS_OR_MODEL_NOT_FOUND", error["data"]["message"])
        self.assertEqual(hub.log().count("auth: HTTP 403"), 1, "reported once, retried quietly")
        self.fake.grant(self.token, self.base)
        self.assertEqual(events.recv(4)["data"]["record"], record)

        self.fake.down()
        body = self.fake.ping_body(self.base, hook.id)
        self.assertEqual(self.fake.send_ping(self.ping_url(), body,
                                             airtable_fake.mac_header(hook.secret, body)), 204)
        time.sleep(1.0)
        self.fake.up()
        record = self.fake.create_record(self.base, "Signals", {"Title": "after outage"})
        self.assertEqual(events.recv(6)["data"]["record"], record)
        self.assertIn("unreachable", hub.log())
        self.assertEqual(hub.stage("at")["restarts"], 0)

    def test_odd_payloads_are_skipped_and_error_payload_replaces_the_hook(self):
        hub = self.start_hub()
        hook = self.wait_hook()
        events, sync = hub.subscriber("signal:"), hub.subscriber("sync:")
        table = self.fake.table_id(self.base, "Signals")
        self.fake.inject_payload(self.base, hook.id, {
            "timestamp": 5, "newKey": {"x": 1}, "payloadFormat": "v9",
            "changedTablesById": {table: {"createdRecordsById": [1, 2],
                                          "changedRecordsById": {"recBAD": 3}}}})
        record = self.fake.create_record(self.base, "Signals", {"Title": "good"})
        event = events.recv(3)
        self.assertEqual(event["data"]["record"], record)
        wait_for(lambda: "skipped" in hub.log(), what="the skipped payload logged")

        self.fake.break_hook(self.base, hook.id, "INVALID_HOOK")
        replaced = wait_for(lambda: [h for h in self.fake.hooks(self.base) if h.id != hook.id
                                     and h.active(time.time())], what="a new webhook")[0]
        self.assertNotIn(hook.id, [h.id for h in self.fake.hooks(self.base)], "old one deleted")
        wait_for(lambda: self.state()["webhook"] == replaced.id, what="state with the new hook")
        seen = [e["type"] for e in sync.recv_n(8, timeout=2)]
        self.assertIn("sync:error", seen)
        self.assertIn("sync:recovered", seen)
        record = self.fake.create_record(self.base, "Signals", {"Title": "through the new hook"})
        event = events.recv(3)
        self.assertEqual(event["data"]["record"], record)
        self.assertEqual(event["data"]["webhook"], replaced.id)

    def test_refresh_before_expiry_and_reenable_pings(self):
        self.fake.hook_ttl = 30
        hub = self.start_hub(refresh_margin=29, lifecycle_interval=1)
        hook = self.wait_hook()
        first_expiry = hook.expiration
        wait_for(lambda: self.fake.count("POST", "/refresh") >= 1, what="a refresh")
        self.assertGreater(hook.expiration, first_expiry)
        hook.notifications = False  # as Airtable does after a day of failed pings
        record = self.fake.create_record(self.base, "Signals", {"Title": "while muted"})
        events = hub.subscriber("signal:")
        wait_for(lambda: hook.notifications, timeout=5, what="enableNotifications")
        self.assertEqual(self.fake.count("POST", "/enableNotifications"), 1)
        self.assertEqual(events.recv(3)["data"]["record"], record, "caught up by polling")

    def test_unknown_table_name_is_reported_with_candidates(self):
        with open(self.map_path, "w") as out:
            json.dump({"tables": {"Signalz": {"family": "signal"}}}, out)
        hub = self.start_hub()
        hub.wait_log("no table 'Signalz'; candidates: 'Startups', 'Signals'")
        self.assertEqual(self.fake.hooks(self.base), [], "no webhook for a wrong map")
        self.assertEqual(hub.stage("at")["restarts"], 0)


class UnmanagedTest(AirtableCase):
    def test_existing_webhook_with_secret_from_file(self):
        import urllib.request
        request = urllib.request.Request(
            self.fake.url + "/v0/bases/%s/webhooks" % self.base, method="POST",
            headers={"Authorization": "Bearer " + self.token,
                     "Content-Type": "application/json"},
            data=json.dumps({"notificationUrl": self.ping_url(), "specification": {"options": {
                "filters": {"dataTypes": ["tableData"]}}}}).encode())
        with urllib.request.urlopen(request, timeout=5) as answer:
            created = json.load(answer)
        secret_path = os.path.join(self.dir, "mac")
        with open(secret_path, "w") as out:
            out.write(created["macSecretBase64"] + "\n")
        hub = self.start_hub(manage_webhook="no", webhook_id=created["id"],
                             mac_secret="file:" + secret_path)
        events = hub.subscriber("signal:")
        wait_for(lambda: self.fake.count("GET", "/payloads") >= 1, what="the first drain")
        record = self.fake.create_record(self.base, "Signals", {"Title": "unmanaged"})
        self.assertEqual(events.recv(3)["data"]["record"], record)
        self.assertEqual(self.fake.count("POST", "/webhooks"), 1, "the plugin created none")
        self.assertEqual(self.state()["webhook"], created["id"])


class RestartTest(AirtableCase):
    def test_sigkill_mid_drain_then_restart_loses_and_repeats_nothing(self):
        journal = os.path.join(self.dir, "journal")
        hub = self.start_hub(hub_extra="journal = %s" % journal, requests_per_second=3)
        hook = self.wait_hook()
        events = hub.subscriber("signal:")
        records = set()
        with self.fake.lock:
            for n in range(130):
                records.add(self.fake.create_record(self.base, "Signals", {"Title": "r%d" % n}))
        wait_for(lambda: events.recv(0.05), what="the drain to start")
        cursor_before = self.state()["cursor"] if os.path.exists(self.state_path) else 1
        hub.process.kill()
        hub.process.wait()
        hub.log_file.close()
        self.assertLess(cursor_before, hook.next_cursor, "killed before the drain ended")
        hub.start()
        wait_for(lambda: self.state()["cursor"] == hook.next_cursor, timeout=15,
                 what="the drain to finish after the restart")
        self.assertGreaterEqual(self.state()["cursor"], cursor_before, "never backwards")
        self.assertEqual(self.state()["webhook"], hook.id, "same hook after the restart")
        status, _, history = hub.replay(0, prefixes=["signal:"], batch=1000)
        self.assertEqual(status, "OK")
        seen = [e["data"]["record"] for e in history]
        self.assertEqual(set(seen), records, "none lost")
        self.assertEqual(len(seen), len(records), "none twice")


class RecordCacheTest(AirtableCase):
    def test_delete_carries_the_last_known_values(self):
        hub = self.start_hub()
        self.wait_hook()
        events = hub.subscriber("connection:")
        startup = self.fake.create_record(self.base, "Startups", {"Name": "Acme"})
        connection = self.fake.create_record(self.base, "Connections", {
            "Name": "C-1", "Startup": [startup], "Status": "Requested"})
        self.fake.update_record(self.base, connection, {"Status": "Accepted"})
        self.assertEqual([e["type"] for e in events.recv_n(3)],
                         ["connection:created", "connection:updated", "connection:statusChanged"])
        self.fake.delete_record(self.base, connection)
        deleted = events.recv()
        self.assertEqual(deleted["type"], "connection:deleted")
        self.assertEqual(deleted["data"]["fields"], {
            "Name": "C-1", "Startup": [{"id": startup, "name": "Acme"}], "Status": "Accepted"})
        self.assertTrue(deleted["data"]["lastKnown"])
        self.assertEqual(deleted["to"], ["user:%s" % startup, "admin"],
                         "the audience of the record it was")
        wait_for(lambda: connection not in self.state()["records"], what="forgotten once deleted")

    def test_empty_create_from_the_ui_is_followed_by_a_complete_update(self):
        hub = self.start_hub()
        self.wait_hook()
        events = hub.subscriber("assignment:")
        startup = self.fake.create_record(self.base, "Startups", {"Name": "Acme"})
        # Assignments map `updated` off: the completing updates come all the same.
        assignment = self.fake.create_record_in_ui(self.base, "Assignments", {
            "Name": "A-7", "Startup": [startup], "Response": "Pending"})
        got = events.recv_n(5)
        self.assertIsNone(events.recv(0.5), "nothing more")
        self.assertEqual([e["type"] for e in got],
                         ["assignment:created", "assignment:updated", "assignment:updated",
                          "assignment:updated", "assignment:responseChanged"])
        self.assertEqual((got[0]["data"]["fields"], got[0]["to"]), ({}, ["admin"]))
        last = got[3]
        self.assertEqual(last["data"]["record"], assignment)
        self.assertEqual(last["data"]["changed"], ["Response"])
        self.assertEqual(last["data"]["fields"], {
            "Name": "A-7", "Startup": [{"id": startup, "name": "Acme"}], "Response": "Pending"})
        self.assertEqual(last["to"], ["user:%s" % startup, "admin"])
        # A later change of a complete record follows the map again: no `updated`.
        self.fake.update_record(self.base, assignment, {"Name": "A-7b"})
        self.fake.update_record(self.base, assignment, {"Response": "Viewed"})
        later = [events.recv()]
        self.assertIsNone(events.recv(0.5), "nothing more")
        self.assertEqual([e["type"] for e in later], ["assignment:responseChanged"])
        self.assertEqual(later[0]["data"]["fields"]["Name"], "A-7b")

    def test_the_cache_survives_a_restart(self):
        hub = self.start_hub()
        hook = self.wait_hook()
        events = hub.subscriber("signal:")
        signal = self.fake.create_record(self.base, "Signals", {
            "Title": "Kept", "Visibility": "Public", "Status": "Draft"})
        self.assertEqual(events.recv()["type"], "signal:created")
        wait_for(lambda: self.state()["cursor"] == hook.next_cursor, what="the persisted cursor")
        self.assertIn(signal, self.state()["records"])
        hub.stop()
        hub.start()
        events = hub.subscriber("signal:")
        self.fake.delete_record(self.base, signal)
        deleted = events.recv()
        self.assertEqual((deleted["type"], deleted["to"]), ("signal:deleted", ["public"]))
        self.assertEqual(deleted["data"]["fields"],
                         {"Title": "Kept", "Visibility": "Public", "Status": "Draft"})

    def test_the_bound_evicts_the_least_recently_changed(self):
        hub = self.start_hub(cache_records=2)
        hook = self.wait_hook()
        events = hub.subscriber("signal:")
        first = self.fake.create_record(self.base, "Signals", {"Title": "one", "Status": "Draft"})
        second = self.fake.create_record(self.base, "Signals", {"Title": "two", "Status": "Draft"})
        self.fake.update_record(self.base, first, {"Status": "Published"})  # first is recent now
        third = self.fake.create_record(self.base, "Signals", {"Title": "three"})
        self.assertEqual(len(events.recv_n(4)), 4)
        wait_for(lambda: self.state()["cursor"] == hook.next_cursor, what="the persisted cursor")
        self.assertEqual(sorted(self.state()["records"]), sorted([first, third]))
        self.fake.delete_record(self.base, second)
        evicted = events.recv()
        self.assertEqual(evicted["data"]["record"], second)
        self.assertNotIn("fields", evicted["data"], "evicted: the id only")
        self.assertEqual(evicted["to"], ["admin"])
        self.fake.delete_record(self.base, first)
        kept = events.recv()
        self.assertEqual(kept["data"]["fields"], {"Title": "one", "Status": "Published"})



class SchemaRefreshTest(AirtableCase):
    def test_a_field_added_after_start_is_named_after_a_schema_read(self):
        hub = self.start_hub()
        hook = self.wait_hook()
        events = hub.subscriber("connection:")
        connection = self.fake.create_record(self.base, "Connections", {"Name": "C-9"})
        self.assertEqual(events.recv()["type"], "connection:created")
        reads = self.fake.count("GET", "/tables")
        self.fake.add_field(self.base, "Connections", "Priority")
        self.fake.update_record(self.base, connection, {"Priority": "high"})
        updated = events.recv()
        self.assertEqual(updated["type"], "connection:updated")
        self.assertEqual(updated["data"]["changed"], ["Priority"])
        self.assertEqual(updated["data"]["fields"], {"Name": "C-9", "Priority": "high"})
        self.assertEqual(self.fake.count("GET", "/tables"), reads + 1, "one schema read")
        hub.wait_log("schema re-read")
        # A payload with an id no schema explains asks once, then is left out.
        table = self.fake.table_id(self.base, "Connections")
        for _ in range(2):
            self.fake.inject_payload(self.base, hook.id, {
                "timestamp": airtable_fake.iso(time.time()), "changedTablesById": {table: {
                    "changedRecordsById": {connection: {"current": {"cellValuesByFieldId": {
                        "fldGONEGONEGONE12": "x"}}}}}}})
        wait_for(lambda: self.fake.count("GET", "/tables") >= reads + 2,
                 what="a schema read for the unknown field")
        self.assertIsNone(events.recv(1.0), "no known field changed: no event")
        self.assertEqual(self.fake.count("GET", "/tables"), reads + 2, "asked once more only")
        self.fake.update_record(self.base, connection, {"Name": "C-10"})
        self.assertEqual(events.recv()["data"]["fields"]["Name"], "C-10")


if __name__ == "__main__":
    unittest.main()


class BrowserDeliveryTest(AirtableCase):
    """A change in the base reaches a browser's WebSocket as the right event, for the right user
    only, once."""

    def test_assignment_reaches_only_its_startup_over_websocket(self):
        ws_port = free_port()
        settings = {"base": self.base, "token": "env:AIRTABLE_TOKEN", "map": self.map_path,
                    "state_dir": self.dir, "api_url": self.fake.url,
                    "listen": "127.0.0.1:%d" % self.listen_port, "poll_interval": 60,
                    "lifecycle_interval": 60}
        chains = ("chain = airtable\n    source = at\n        plugin = airtable\n"
                  + "".join("        %s = %s\n" % item for item in settings.items())
                  + "chain = web\n    sink = ws\n        plugin = websocket\n"
                  + "        listen = 127.0.0.1:%d\n" % ws_port)
        hub = self.hub(chains=chains, hub_extra="token_secret = env:LIVEHUB_WS_TEST_SECRET",
                       env=dict(SECRET_ENV, AIRTABLE_TOKEN=self.token))
        hub.wait_running("ws")
        self.wait_hook()
        acme = self.fake.create_record(self.base, "Startups", {"Name": "Acme"})
        other = self.fake.create_record(self.base, "Startups", {"Name": "Other"})

        async def scenario():
            url = "ws://127.0.0.1:%d/ws/client?access_token=%s"
            async with websockets.connect(url % (ws_port, mint(acme, "startup"))) as mine, \
                    websockets.connect(url % (ws_port, mint(other, "startup"))) as theirs:
                for ws in (mine, theirs):
                    await recv_op(ws, "welcome")
                    await ws.send(json.dumps({"op": "subscribe", "types": ["assignment:*"]}))
                    await recv_op(ws, "subscribed")
                self.fake.create_record(self.base, "Assignments", {
                    "Name": "A-9", "Startup": [acme], "Response": "Pending"})
                event = await recv_op(mine, "event", timeout=15)
                self.assertEqual(event["type"], "assignment:created")
                self.assertEqual(event["data"]["fields"]["Startup"],
                                 [{"id": acme, "name": "Acme"}])
                with self.assertRaises(asyncio.TimeoutError):
                    await recv_op(theirs, "event", timeout=1.0)
                with self.assertRaises(asyncio.TimeoutError):
                    await recv_op(mine, "event", timeout=0.5)  # once

        asyncio.run(asyncio.wait_for(scenario(), 40))


class HardeningTest(AirtableCase):
    """Issue 21, finding 10: each test failed against the plugin before its fix."""

    def metric(self, hub, name):
        return hub.status()["metrics"].get('%s{stage="at"}' % name, 0)

    def wait_first_drain(self):
        """The plugin's first drain (right after setup) has had its answer, so payloads stored
        from now on wait for a ping, a poll or a lifecycle check."""
        wait_for(lambda: self.fake.count("GET", "/payloads") >= 1, what="the first drain")

    def mute_and_fill(self, hook, titles):
        """Records whose payloads wait unread: the hook's pings are off (as after a day of failed
        pings), and the plugin's poll is far away."""
        with self.fake.lock:
            hook.notifications = False
            return [self.fake.create_record(self.base, "Signals", {"Title": t}) for t in titles]

    def test_an_expired_hook_is_read_to_the_end_before_it_is_replaced(self):
        hub = self.start_hub(lifecycle_interval=1)
        hook = self.wait_hook()
        events = hub.subscriber("signal:")
        self.wait_first_drain()
        with self.fake.lock:
            records = self.mute_and_fill(hook, ["a", "b", "c"])
            self.fake.expire_hook(self.base, hook.id)
        replaced = wait_for(lambda: [h for h in self.fake.hooks(self.base) if h.id != hook.id],
                            what="a new webhook")[0]
        got = events.recv_n(3, timeout=10)
        self.assertEqual([e["data"]["record"] for e in got], records, "none lost")
        self.assertEqual({e["data"]["webhook"] for e in got}, {hook.id})
        self.assertNotIn(hook.id, [h.id for h in self.fake.hooks(self.base)], "then deleted")
        wait_for(lambda: self.state()["webhook"] == replaced.id, what="the state's new hook")
        hub.wait_log("reading its remaining payloads, then replacing it")

    def test_a_refresh_refused_with_422_replaces_the_hook_after_reading_it(self):
        # The spec leaves open whether isHookEnabled turns false on expiry: here it does not,
        # so only the refresh answer (422) says the hook has expired.
        self.fake.expiry_disables = False
        hub = self.start_hub(lifecycle_interval=1, auth_retry=300)
        hook = self.wait_hook()
        events = hub.subscriber("signal:")
        self.wait_first_drain()
        with self.fake.lock:
            records = self.mute_and_fill(hook, ["x", "y"])
            self.fake.expire_hook(self.base, hook.id)
        replaced = wait_for(lambda: [h for h in self.fake.hooks(self.base) if h.id != hook.id],
                            timeout=15, what="a new webhook")[0]
        self.assertEqual([e["data"]["record"] for e in events.recv_n(2)], records, "none lost")
        self.assertEqual(self.fake.count("POST", "/%s/refresh" % hook.id), 1,
                         "a 422 refresh is not retried")
        hub.wait_log("cannot be refreshed (HTTP 422 CANNOT_REFRESH_EXPIRED_WEBHOOK")
        record = self.fake.create_record(self.base, "Signals", {"Title": "via the new hook"})
        event = events.recv(5)
        self.assertEqual((event["data"]["record"], event["data"]["webhook"]),
                         (record, replaced.id))

    def test_a_lost_state_file_leaks_no_webhooks(self):
        foreign = self.fake.create_hook(self.base, "https://other.example.org/hook")
        made = []
        for round_ in range(3):
            hub = self.start_hub()
            hook = wait_for(lambda: [h for h in self.fake.hooks(self.base)
                                     if h.url == self.ping_url() and h.id not in made],
                            what="the webhook of round %d" % round_)[0]
            made.append(hook.id)
            wait_for(lambda: os.path.exists(self.state_path) and
                     self.state().get("webhook") == hook.id, what="the state file")
            mine = wait_for(lambda: (lambda m: len(m) == 1 and m)(
                [h for h in self.fake.hooks(self.base) if h.url == self.ping_url()]),
                what="exactly one webhook of this hub in round %d" % round_)
            self.assertEqual(mine[0].id, hook.id)
            hub.stop()
            os.unlink(self.state_path)
        self.assertIn(foreign.id, [h.id for h in self.fake.hooks(self.base)],
                      "another client's hook is left alone")
        self.assertIn("made by this hub", hub.log())

    def test_a_full_base_gives_a_clear_error_and_bounded_retries(self):
        for n in range(10):
            self.fake.create_hook(self.base, "https://other.example.org/%d" % n)
        hub = self.start_hub(auth_retry=200, lifecycle_interval=3600)
        sync = hub.subscriber("sync:")
        hub.wait_log("quick retries given up", timeout=40)
        attempts = self.fake.count("POST", "/webhooks")
        self.assertEqual(attempts, 5)
        time.sleep(2.0)  # the old code went on trying every auth_retry ms
        self.assertEqual(self.fake.count("POST", "/webhooks"), attempts, "no more quick retries")
        self.assertIn("TOO_MANY_WEBHOOKS_IN_BASE", hub.log())
        self.assertIn("Delete unused webhooks of base %s" % self.base, hub.log())
        error = sync.recv(1)
        self.assertEqual((error["type"], error["data"]["error"]), ("sync:error", "webhook_limit"))
        self.assertEqual(hub.stage("at")["restarts"], 0)

    def test_a_page_over_max_page_bytes_is_asked_again_smaller_and_a_huge_payload_skipped(self):
        hub = self.start_hub(max_page_bytes=65536)
        hook = self.wait_hook()
        events = hub.subscriber("signal:")
        self.wait_first_drain()
        with self.fake.lock:
            hook.notifications = False
            small = [self.fake.create_record(self.base, "Signals", {
                "Title": "s%d" % n, "Notes": "n" * 15000}) for n in range(6)]
            huge = self.fake.create_record(self.base, "Signals", {"Title": "huge",
                                                                  "Notes": "h" * 100000})
            after = self.fake.create_record(self.base, "Signals", {"Title": "after"})
            hook.notifications = True
        body = self.fake.ping_body(self.base, hook.id)
        self.fake.send_ping(self.ping_url(), body, airtable_fake.mac_header(hook.secret, body))
        got = [e["data"]["record"] for e in events.recv_n(7, timeout=15)]
        self.assertEqual(got, small + [after], "all but the one too large for any page")
        self.assertNotIn(huge, got)
        self.assertEqual(self.metric(hub, "livehub_airtable_payloads_oversized_total"), 1)
        hub.wait_log("one payload alone is larger than max_page_bytes: skipped")
        gap = [e for e in hub.replay(0, prefixes=["sync:gap"])[2]]
        self.assertEqual([(e["data"]["missed"], e["data"]["reason"]) for e in gap],
                         [(1, "oversized")])
        wait_for(lambda: self.state()["cursor"] == hook.next_cursor, what="the cursor past it")

    def test_a_payload_over_the_default_16_mib_bound_no_longer_stalls_the_source(self):
        hub = self.start_hub()
        hook = self.wait_hook()
        events = hub.subscriber("signal:")
        self.wait_first_drain()
        with self.fake.lock:
            hook.notifications = False
            self.fake.create_record(self.base, "Signals", {"Title": "huge",
                                                           "Notes": "h" * (17 << 20)})
            after = self.fake.create_record(self.base, "Signals", {"Title": "after"})
            hook.notifications = True
        body = self.fake.ping_body(self.base, hook.id)
        self.fake.send_ping(self.ping_url(), body, airtable_fake.mac_header(hook.secret, body))
        event = events.recv(60)
        self.assertIsNotNone(event, "the source stalled on the page:\n" + hub.log()[-4000:])
        self.assertEqual(event["data"]["record"], after)
        self.assertEqual(self.metric(hub, "livehub_airtable_payloads_oversized_total"), 1)

    def test_the_default_request_rate_leaves_most_of_the_base_budget_to_others(self):
        self.fake.page_cap = 2  # many pages: the plugin asks as fast as it may
        started = time.time()
        hub = self.start_hub()
        hook = self.wait_hook()
        events = hub.subscriber("signal:")
        self.wait_first_drain()
        with self.fake.lock:
            hook.notifications = False
            for n in range(16):
                self.fake.create_record(self.base, "Signals", {"Title": "r%d" % n})
            hook.notifications = True
        body = self.fake.ping_body(self.base, hook.id)
        self.fake.send_ping(self.ping_url(), body, airtable_fake.mac_header(hook.secret, body))
        self.assertEqual(len(events.recv_n(16, timeout=30)), 16)
        count, span = self.fake.request_rate(started)
        self.assertGreaterEqual(count, 10)
        # Spacing is kept by the plugin, so load only makes the rate lower.
        self.assertLessEqual((count - 1) / span, 2.2, "%d requests in %.2f s" % (count, span))
        self.assertEqual(sum(1 for _, _, s in self.fake.requests if s == 429), 0)

    def test_a_renamed_mapped_field_goes_out_under_its_new_name(self):
        hub = self.start_hub()
        self.wait_hook()
        events = hub.subscriber("signal:")
        signal = self.fake.create_record(self.base, "Signals", {
            "Title": "T", "Visibility": "Public", "Status": "Draft"})
        self.assertEqual(events.recv()["data"]["fields"]["Status"], "Draft")
        self.fake.rename_field(self.base, "Signals", "Status", "State")
        self.fake.update_record(self.base, signal, {"State": "Published"})
        updated = events.recv()
        self.assertEqual(updated["type"], "signal:updated")
        self.assertEqual(updated["data"]["changed"], ["State"])
        self.assertEqual(updated["data"]["fields"],
                         {"Title": "T", "Visibility": "Public", "State": "Published"})
        self.assertEqual(updated["data"]["previous"], {"State": "Draft"})
        self.assertEqual(updated["to"], ["public"], "the map's rules still apply")
        hub.wait_log("field 'Status' of table 'Signals' is now named 'State'")

    def test_a_hook_made_without_table_fields_is_read_then_replaced(self):
        hub = self.start_hub(lifecycle_interval=1)
        hook = self.wait_hook()
        events = hub.subscriber("signal:")
        self.wait_first_drain()
        with self.fake.lock:  # as an older version of the plugin made it
            hook.spec["options"]["filters"]["dataTypes"] = ["tableData"]
            records = self.mute_and_fill(hook, ["old"])
        replaced = wait_for(lambda: [h for h in self.fake.hooks(self.base) if h.id != hook.id],
                            what="a new webhook")[0]
        self.assertIn("tableFields", replaced.spec["options"]["filters"]["dataTypes"])
        self.assertEqual([e["data"]["record"] for e in events.recv_n(1)], records, "read first")
        hub.wait_log("was made without tableFields")

    def test_payloads_lost_to_retention_are_announced_and_counted(self):
        hub = self.start_hub()
        hook = self.wait_hook()
        events = hub.subscriber("signal:")
        self.wait_first_drain()
        with self.fake.lock:
            hook.notifications = False
            records = [self.fake.create_record(self.base, "Signals", {"Title": "r%d" % n})
                       for n in range(5)]
            self.fake.age_payloads(self.base, hook.id, 3)
            hook.notifications = True
        body = self.fake.ping_body(self.base, hook.id)
        self.fake.send_ping(self.ping_url(), body, airtable_fake.mac_header(hook.secret, body))
        got = [e["data"]["record"] for e in events.recv_n(2)]
        self.assertEqual(got, records[3:])
        gap = hub.replay(0, prefixes=["sync:gap"])[2]
        self.assertEqual(len(gap), 1)
        self.assertEqual((gap[0]["data"]["from"], gap[0]["data"]["to"], gap[0]["data"]["missed"],
                          gap[0]["data"]["reason"], gap[0]["to"]), (1, 3, 3, "retention", ["admin"]))
        self.assertEqual(self.metric(hub, "livehub_airtable_payloads_lost_total"), 3)
        hub.wait_log("payloads 1..3 of webhook %s (3): deleted by Airtable" % hook.id)
