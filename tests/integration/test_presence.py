"""Presence and client-originated events (docs/PRESENCE.md): a real hub with the websocket sink and
the presence tracker, browsers played by python3-websockets clients (and a raw socket for a peer
that dies without closing), events checked on the WebSockets, the egress and the hub's history."""
import asyncio
import http.client
import json
import os
import socket
import subprocess
import threading
import time
import unittest

import websockets

from hubtest import BUILD_DIR, LIVEHUB_CLI, SOURCE_DIR, HubTestCase, free_port
from test_polling import SSE
from test_websocket import RawClient, SECRET_ENV, closed_with, mint, recv_json, run

MARK = "mark:"


class PresenceTest(HubTestCase):
    PUBLISH = "admin=typing:started,typing:stopped startup=assignment:viewed"

    def start(self, grace=2, ws_options="", hub_extra="", journal=None, publish=PUBLISH):
        """A hub with a websocket sink and the presence tracker; returns (hub, port)."""
        self.port = port = free_port()
        self.poll_port = free_port()
        self.grace = grace
        self.ws_options = ws_options
        self.publish = publish
        extra = ("token_secret = env:LIVEHUB_WS_TEST_SECRET\n"
                 "ephemeral = typing: presence:\n" + hub_extra)
        if journal:
            extra += "journal = %s\n" % journal
        hub = self.hub(chains=self.chains(), hub_extra=extra, env=SECRET_ENV)
        hub.wait_running("ws")
        hub.wait_running("tracker")
        return hub, port

    def chains(self, ws_extra="", tracker_extra=""):
        return ("chain = web\n"
                "    sink = ws\n"
                "        plugin = websocket\n"
                "        listen = 127.0.0.1:%d\n"
                "        heartbeat = 1\n"
                "        idle_timeout = 6\n"
                "        presence = true\n"
                "        publish = %s\n"
                "        publish_burst = 3\n"
                "        publish_rate = 1\n"
                "        publish_max_data = 256\n"
                "%s%s"
                "    filter = tracker\n"
                "        plugin = presence\n"
                "        subscribe = presence:\n"
                "        grace = %d\n%s"
                "    sink = poll\n"
                "        plugin = polling\n"
                "        listen = 127.0.0.1:%d\n"
                "        presence = true\n"
                % (self.port, self.publish, "".join("        %s\n" % line for line in
                                      self.ws_options.split("\n") if line.strip()),
                   ws_extra, self.grace, tracker_extra, self.poll_port))

    def connect(self, sub, role, path=None):
        path = path or ("/ws/admin" if role == "admin" else "/ws/client")
        url = "ws://127.0.0.1:%d%s?access_token=%s" % (self.port, path, mint(sub, role))
        return websockets.connect(url, ping_interval=None, max_size=None, close_timeout=2)

    async def ready(self, ws, types=("presence:*", MARK + "*")):
        """Waits for the welcome, then subscribes."""
        welcome = await recv_json(ws)
        assert welcome["op"] == "welcome", welcome
        await ws.send(json.dumps({"op": "subscribe", "types": list(types)}))
        while (await recv_json(ws))["op"] != "subscribed":
            pass
        return welcome

    async def next_event(self, ws, match, timeout=20.0, seen=None):
        """The next event for which match(frame) is true; every event read is kept in seen."""
        deadline = time.monotonic() + timeout
        while True:
            frame = await recv_json(ws, max(0.01, deadline - time.monotonic()))
            if frame["op"] != "event":
                continue
            if seen is not None:
                seen.append(frame)
            if match(frame):
                return frame

    async def until_mark(self, hub, ws, to="admin"):
        """Every event ws receives before a marker published now (so: everything routed before
        it) -- the way to show that something did not happen."""
        name = MARK + str(time.monotonic_ns())
        await asyncio.get_running_loop().run_in_executor(None, hub.publish, name, {}, [to])
        seen = []
        await self.next_event(ws, lambda f: f["type"] == name, seen=seen)
        return seen[:-1]

    async def query(self, ws):
        await ws.send(json.dumps({"op": "presence"}))
        while True:
            frame = await recv_json(ws, 10)
            if frame["op"] == "presence":
                return {u["user"]: u for u in frame["users"]}

    async def wait_query(self, ws, predicate, timeout=20.0):
        deadline = time.monotonic() + timeout
        while True:
            users = await self.query(ws)
            if predicate(users) or time.monotonic() > deadline:
                return users
            await asyncio.sleep(0.1)

    @staticmethod
    def online(user, count=None):
        return lambda f: (f["type"] == "presence:online" and f["data"]["user"] == user and
                          (count is None or f["data"]["connections"] == count))

    @staticmethod
    def offline(user):
        return lambda f: f["type"] == "presence:offline" and f["data"]["user"] == user

    # ---- presence ------------------------------------------------------------------------------

    def test_two_users_appear_and_disappear_with_their_tabs(self):
        hub, port = self.start()

        async def scenario():
            async with self.connect("boss", "admin") as admin:
                await self.ready(admin)
                # (its own presence:online may come before the subscription: ephemeral events
                # reach live connections only, they are not replayed)
                await self.wait_query(admin, lambda users: "boss" in users)
                async with self.connect("s1", "startup") as tab1:
                    await self.ready(tab1)
                    event = await self.next_event(admin, self.online("s1", {"websocket": 1}))
                    self.assertEqual(event["data"]["role"], "startup")
                    async with self.connect("s1", "startup") as tab2, \
                            self.connect("s2", "startup") as other:
                        await self.ready(tab2)
                        await self.ready(other)
                        await self.next_event(admin, self.online("s1", {"websocket": 2}))
                        await self.next_event(admin, self.online("s2", {"websocket": 1}))
                        users = await self.query(admin)
                        self.assertEqual(sorted(users), ["boss", "s1", "s2"])
                        self.assertEqual(users["s1"]["connections"], {"websocket": 2})
                        self.assertEqual(users["s1"]["role"], "startup")
                        # a startup sees nobody by default: only admins assigned to it
                        self.assertEqual(await self.query(other), {})
                    # s1 still has a tab; s2 has none and goes offline after the grace period
                    await self.next_event(admin, self.offline("s2"))
                    users = await self.query(admin)
                    self.assertEqual(users["s1"]["connections"], {"websocket": 1})
                    self.assertNotIn("s2", users)
                await self.next_event(admin, self.offline("s1"))
                self.assertEqual(sorted(await self.query(admin)), ["boss"])

        run(scenario(), timeout=60)

    def test_a_reload_within_the_grace_period_does_not_flap(self):
        hub, port = self.start(grace=4)

        async def scenario():
            async with self.connect("boss", "admin") as admin:
                await self.ready(admin)
                async with self.connect("s1", "startup") as tab:
                    await self.ready(tab)
                    await self.next_event(admin, self.online("s1"))
                async with self.connect("s1", "startup") as tab:  # the page reloaded
                    await self.ready(tab)
                    await asyncio.sleep(self.grace + 1)  # past the grace period of the close
                    seen = await self.until_mark(hub, admin)
                    self.assertEqual([f for f in seen if f["data"].get("user") == "s1"], [])
                    self.assertIn("s1", await self.query(admin))

        run(scenario(), timeout=60)

    def test_a_killed_connection_is_found_by_the_heartbeat(self):
        hub, port = self.start(grace=1)

        async def scenario():
            async with self.connect("boss", "admin") as admin:
                await self.ready(admin)
                # a peer that never answers pings and never closes: its process was killed
                loop = asyncio.get_running_loop()
                raw = await loop.run_in_executor(None, lambda: RawClient(
                    port, "/ws/client?access_token=" + mint("ghost", "startup")))
                try:
                    self.assertEqual(raw.status, 101)
                    await self.next_event(admin, self.online("ghost"))
                    event = await self.next_event(admin, self.offline("ghost"), timeout=30)
                    self.assertEqual(event["data"], {"user": "ghost", "role": "startup"})
                finally:
                    raw.close()
            self.assertEqual(hub.stage("ws")["workers"][0]["state"], "running")

        run(scenario(), timeout=60)

    def test_the_set_stays_right_across_a_websocket_stage_restart(self):
        hub, port = self.start(grace=8)

        async def reconnecting(sub, role, stop, counts):
            """A client that reconnects at once when the server closes it (as livehub.js does)."""
            while not stop.is_set():
                try:
                    async with self.connect(sub, role) as ws:
                        await self.ready(ws)
                        counts[sub] = counts.get(sub, 0) + 1
                        while not stop.is_set():
                            try:
                                await asyncio.wait_for(ws.recv(), 0.2)
                            except asyncio.TimeoutError:
                                pass
                except (websockets.ConnectionClosed, OSError):
                    await asyncio.sleep(0.1)

        async def scenario():
            stop, counts = asyncio.Event(), {}
            clients = [asyncio.create_task(reconnecting(s, "startup", stop, counts))
                       for s in ("s1", "s2")]
            try:
                async with self.connect("boss", "admin") as admin:
                    await self.ready(admin)
                    users = await self.wait_query(admin, lambda u: "s1" in u and "s2" in u)
                    self.assertEqual(users["s1"]["connections"], {"websocket": 1})
                # the stage restarts: a reload that changes it starts a new instance
                self.ws_options = "max_errors = 11"
                hub.write_conf(self.chains())
                loop = asyncio.get_running_loop()
                self.assertEqual(await loop.run_in_executor(None, hub.control, b"RELOAD"),
                                 [b"OK", b"reloaded"])
                deadline = time.monotonic() + 20
                while (counts.get("s1", 0) < 2 or counts.get("s2", 0) < 2) and \
                        time.monotonic() < deadline:
                    await asyncio.sleep(0.1)
                self.assertGreaterEqual(counts.get("s1", 0), 2, "s1 did not reconnect")
                async with self.connect("boss", "admin") as admin:
                    await self.ready(admin)
                    users = await self.query(admin)
                    # one tab each: the old instance's connections are not counted twice
                    self.assertEqual(users["s1"]["connections"], {"websocket": 1}, users)
                    self.assertEqual(users["s2"]["connections"], {"websocket": 1}, users)
                    # and nobody flapped offline, though every connection was closed once
                    seen = await self.until_mark(hub, admin)
                    self.assertEqual([f for f in seen if f["type"] == "presence:offline"], [])
            finally:
                stop.set()
                await asyncio.gather(*clients)

        run(scenario(), timeout=90)

    def test_a_restarted_tracker_learns_everyone_again(self):
        hub, port = self.start()

        async def scenario():
            async with self.connect("boss", "admin") as admin:
                await self.ready(admin)
                tab = await self.connect("s1", "startup")
                await self.ready(tab)
                await self.next_event(admin, self.online("s1"))
                hub.write_conf(self.chains(tracker_extra="        audiences = admin role:mentor\n"))
                loop = asyncio.get_running_loop()
                self.assertEqual(await loop.run_in_executor(None, hub.control, b"RELOAD"),
                                 [b"OK", b"reloaded"])
                # the new tracker asks the sinks to re-announce: s1 is online again, once
                await self.next_event(admin, self.online("s1", {"websocket": 1}))
                users = await self.wait_query(admin, lambda u: "s1" in u)
                self.assertEqual(users["s1"]["connections"], {"websocket": 1})
                await tab.close()

        run(scenario(), timeout=60)

    def test_assigned_admins_are_visible_to_their_startups_only(self):
        hub, port = self.start()

        async def scenario():
            async with self.connect("s1", "startup") as s1, \
                    self.connect("s2", "startup") as s2:
                await self.ready(s1)
                await self.ready(s2)
                loop = asyncio.get_running_loop()
                await loop.run_in_executor(None, lambda: hub.publish(
                    "presence:assign", {"admin": "boss", "users": ["s1"]}, ["hub:presence"]))
                async with self.connect("boss", "admin") as admin:
                    await self.ready(admin)
                    event = await self.next_event(s1, self.online("boss"))
                    self.assertEqual(event["data"]["role"], "admin")
                    self.assertIn("boss", await self.query(s1))
                    self.assertEqual(await self.query(s2), {})
                    seen = await self.until_mark(hub, s2, to="role:startup")
                    self.assertEqual([f for f in seen if f["type"].startswith("presence:")], [])
                await self.next_event(s1, self.offline("boss"))

        run(scenario(), timeout=60)

    def http_presence(self, token=None):
        connection = http.client.HTTPConnection("127.0.0.1", self.poll_port, timeout=10)
        try:
            headers = {"Authorization": "Bearer " + token} if token else {}
            connection.request("GET", "/v1/presence", headers=headers)
            reply = connection.getresponse()
            return reply.status, json.loads(reply.read())
        finally:
            connection.close()

    def long_poll(self, sub, role):
        """A long poll left waiting (its answer never read); close() ends it."""
        sock = socket.create_connection(("127.0.0.1", self.poll_port), timeout=5)
        sock.sendall(("GET /v1/events?wait=60 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      "Authorization: Bearer %s\r\n\r\n" % mint(sub, role)).encode())
        return sock

    def test_sse_and_long_polls_count_and_a_switch_to_polling_does_not_flap(self):
        hub, port = self.start(grace=4)
        hub.wait_running("poll")
        loop = None

        async def scenario():
            loop = asyncio.get_running_loop()
            async with self.connect("boss", "admin") as admin:
                await self.ready(admin)
                async with self.connect("s1", "startup") as tab:
                    await self.ready(tab)
                    await self.next_event(admin, self.online("s1", {"websocket": 1}))
                    stream = await loop.run_in_executor(None, lambda: SSE(
                        self.poll_port, "/v1/stream", {"Authorization": "Bearer " +
                                                       mint("s1", "startup")}))
                    self.assertEqual(stream.status, 200)
                    await self.next_event(admin, self.online("s1", {"websocket": 1, "sse": 1}))
                # the WebSocket went down, the page fell back to SSE: still online
                await self.next_event(admin, self.online("s1", {"sse": 1}))
                stream.close()
                poll = await loop.run_in_executor(None, self.long_poll, "s1", "startup")
                await self.next_event(admin, self.online("s1", {"longpoll": 1}))
                # The polling sink answers from its own copy, fed by the tracker's events like
                # the admin's socket but through another pipe: it may lag a moment behind.
                for _ in range(100):
                    status, body = await loop.run_in_executor(None, self.http_presence,
                                                              mint("boss", "admin"))
                    self.assertEqual(status, 200)
                    users = {u["user"]: u for u in body["users"]}
                    if users.get("s1", {}).get("connections") == {"longpoll": 1}:
                        break
                    await asyncio.sleep(0.1)
                self.assertEqual(users["s1"]["connections"], {"longpoll": 1})
                await asyncio.sleep(self.grace + 1)
                seen = await self.until_mark(hub, admin)
                self.assertEqual([f for f in seen if f["type"] == "presence:offline"], [])
                poll.close()
                await self.next_event(admin, self.offline("s1"))

        run(scenario(), timeout=90)
        # the HTTP query: a token is needed, and a startup sees only its assigned admins
        self.assertEqual(self.http_presence()[0], 401)
        status, body = self.http_presence(mint("s1", "startup"))
        self.assertEqual((status, body), (200, {"users": []}))

    def test_an_admin_long_polling_beside_its_websocket_tab_is_no_presence_storm(self):
        """Issue 21, finding 8: one admin with a WebSocket tab and a long-polling tab made 537 ids,
        146 polls and 9 HTTP 429 in 5 s on an idle hub: each poll joined and left, the tracker
        announced presence:online to the admins, which woke that admin's own long poll at once,
        which started the next poll. A long-polling client is now one connection across its
        consecutive polls (presence_linger): the tab polls as seldom as nothing happens."""
        hub, port = self.start(grace=2)
        hub.wait_running("poll")
        token = mint("boss", "admin")
        record = {"polls": 0, "codes": []}
        stop = threading.Event()
        connection = http.client.HTTPConnection("127.0.0.1", self.poll_port, timeout=30)

        def polling_tab():
            """The page's long-poll loop (livehub.js): since=next, wait=25, again at once; after
            an error it waits Retry-After. Bounded: 60 polls or 20 s, or until stopped."""
            since, deadline = None, time.monotonic() + 20
            headers = {"Authorization": "Bearer " + token}
            while not stop.is_set() and record["polls"] < 60 and time.monotonic() < deadline:
                path = "/v1/events?types=presence:*,mark:*"
                if since is not None:
                    path += "&since=%d&wait=25" % since
                try:
                    connection.request("GET", path, headers=headers)
                    response = connection.getresponse()
                    body = json.loads(response.read())
                except (OSError, http.client.HTTPException, ValueError):
                    return  # the test closed the connection
                record["polls"] += 1
                record["codes"].append(response.status)
                if response.status == 200:
                    since = body["next"]
                else:
                    stop.wait(float(response.getheader("Retry-After") or 1))

        tab = threading.Thread(target=polling_tab, daemon=True)

        async def scenario():
            loop = asyncio.get_running_loop()
            async with self.connect("boss", "admin") as admin:
                await self.ready(admin)
                users = await self.wait_query(admin, lambda users: "boss" in users)
                self.assertEqual(users["boss"]["connections"], {"websocket": 1})
                first_id = (await loop.run_in_executor(None, hub.status))["last_id"]
                tab.start()
                await self.next_event(admin, self.online("boss", {"websocket": 1,
                                                                  "longpoll": 1}))
                await asyncio.sleep(4)  # the window the storm filled: polls, ids, 429s
                polls, codes = record["polls"], list(record["codes"])
                ids = (await loop.run_in_executor(None, hub.status))["last_id"] - first_id
                # the polling tab is online all along, not only while a poll waits
                users = await self.query(admin)
                self.assertEqual(users["boss"]["connections"], {"websocket": 1, "longpoll": 1})
                return polls, codes, ids

        try:
            polls, codes, ids = run(scenario(), timeout=60)
        finally:
            stop.set()
            if connection.sock:
                connection.sock.shutdown(socket.SHUT_RDWR)
            tab.join(10)
            connection.close()
        self.assertNotIn(429, codes)
        # the first poll (where to start), one woken by its own arrival, the one now waiting
        self.assertLessEqual(polls, 5, codes)
        self.assertLessEqual(ids, 8, "presence events for one tab's arrival, no more")

    def test_typing_indicator_and_who_is_online_in_chromium(self):
        """tests/browser/presence.test.mjs: three dashboards in Debian's chromium."""
        browser_dir = os.path.join(SOURCE_DIR, "tests", "browser")
        if not os.path.exists("/usr/bin/chromium"):
            self.fail("no /usr/bin/chromium: run scripts/dev deps")
        if not os.path.isdir(os.path.join(browser_dir, "node_modules", "playwright-core")):
            self.fail("no playwright-core in tests/browser/node_modules: run scripts/dev deps")
        hub, port = self.start(grace=1)
        hub.publish("presence:assign", {"admin": "boss", "users": ["s1"]}, ["hub:presence"])
        shots = os.path.join(os.path.abspath(BUILD_DIR), "screenshots")
        os.makedirs(shots, exist_ok=True)
        env = dict(os.environ, LH_HTTP="http://127.0.0.1:%d" % port,
                   LH_CLI=os.path.abspath(LIVEHUB_CLI), LH_CONTROL=hub.control_endpoint,
                   LH_SHOTS=shots, LH_TOKEN_ADMIN=mint("boss", "admin"),
                   LH_TOKEN_S1=mint("s1", "startup"), LH_TOKEN_S2=mint("s2", "startup"))
        result = subprocess.run(["node", "--test", "--test-reporter=spec",
                                 os.path.join(browser_dir, "presence.test.mjs")],
                                cwd=browser_dir, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, timeout=180)
        output = result.stdout.decode(errors="replace")
        self.assertEqual(result.returncode, 0, output + "\n--- hub log ---\n" + hub.log()[-4000:])

    # ---- client-originated events ------------------------------------------------------------

    def test_typing_reaches_the_addressed_startup_only_stamped_with_the_sender(self):
        hub, port = self.start()
        egress = hub.subscriber("typing:", MARK)

        async def scenario():
            async with self.connect("boss", "admin") as admin, \
                    self.connect("s1", "startup") as s1, \
                    self.connect("s2", "startup") as s2:
                for ws in (admin, s1, s2):
                    await self.ready(ws, types=("typing:*", "assignment:*", MARK + "*"))
                await admin.send(json.dumps({"op": "publish", "type": "typing:started",
                                             "data": {"assignment": "A-7"}, "to": ["user:s1"]}))
                ack = await recv_json(admin)
                self.assertEqual(ack, {"op": "published", "type": "typing:started"})
                event = await self.next_event(s1, lambda f: f["type"] == "typing:started")
                self.assertEqual(event["src"], "user:boss")
                self.assertEqual(event["data"], {"assignment": "A-7"})
                seen = await self.until_mark(hub, s2, to="role:startup")
                self.assertEqual(seen, [])
                # a startup says it viewed an assignment: admins get it, from that startup
                await s1.send(json.dumps({"op": "publish", "type": "assignment:viewed",
                                          "data": {"assignment": "A-7"}}))
                event = await self.next_event(admin, lambda f: f["type"] == "assignment:viewed")
                self.assertEqual(event["src"], "user:s1")

        run(scenario(), timeout=60)
        event = egress.recv(timeout=10)
        self.assertEqual((event["type"], event["src"], event["to"]),
                         ("typing:started", "user:boss", ["user:s1"]))
        # typing is ephemeral: routed live, never replayed; assignment:viewed is kept
        status, meta, events = hub.replay(0)
        types = [e["type"] for e in events]
        self.assertNotIn("typing:started", types)
        self.assertIn("assignment:viewed", types)

    def test_bad_publications_are_refused_and_change_nothing(self):
        # a wide pattern (pr*) still never lets a browser speak for presence
        hub, port = self.start(ws_options="max_errors = 100",
                               publish=self.PUBLISH.replace("stopped", "stopped,pr*"))
        egress = hub.subscriber("typing:", "assignment:", MARK)

        async def scenario():
            async with self.connect("boss", "admin") as admin, \
                    self.connect("s1", "startup") as s1, \
                    self.connect("s2", "startup") as s2:
                for ws in (admin, s1, s2):
                    await self.ready(ws, types=("typing:*", "assignment:*", MARK + "*"))
                cases = [
                    (s1, {"type": "typing:started", "to": ["admin"]}, "forbidden_type"),
                    (admin, {"type": "signal:created"}, "forbidden_type"),
                    (admin, {"type": "$gap"}, "forbidden_type"),
                    (admin, {"type": "presence:online", "to": ["admin"],
                             "data": {"user": "ghost", "role": "admin", "connections": {}}},
                     "forbidden_type"),
                    (s1, {"type": "assignment:viewed", "src": "user:boss"}, "forbidden_src"),
                    (s1, {"type": "assignment:viewed", "to": ["user:s2"]}, "forbidden_to"),
                    (s1, {"type": "assignment:viewed", "to": ["role:startup"]}, "forbidden_to"),
                    (admin, {"type": "typing:started", "to": ["public"]}, "forbidden_to"),
                    (admin, {"type": "typing:started", "to": []}, "bad_request"),
                    (admin, {"type": "typing:started", "id": 5}, "bad_request"),
                    (admin, {"type": 7}, "bad_request"),
                    (admin, {"type": "typing:started", "to": ["user:s1"],
                             "data": {"text": "x" * 300}}, "too_large"),
                ]
                for ws, fields, code in cases:
                    await ws.send(json.dumps(dict(op="publish", **fields)))
                    frame = await recv_json(ws)
                    self.assertEqual((frame["op"], frame["code"]), ("error", code), fields)
                    self.assertTrue(frame["message"], fields)
                # a flood: the burst passes, the rest is refused, the connection stays usable
                codes = []
                for n in range(8):
                    await admin.send(json.dumps({"op": "publish", "type": "typing:stopped",
                                                 "to": ["user:s2"], "data": {"n": n}}))
                    frame = await recv_json(admin)
                    codes.append(frame.get("code", frame["op"]))
                self.assertEqual(codes[:3], ["published"] * 3)
                self.assertEqual(set(codes[3:]), {"rate_limited"})
                got = []
                for _ in range(3):
                    got.append((await self.next_event(s2, lambda f: f["type"] == "typing:stopped"))
                               ["data"]["n"])
                self.assertEqual(got, [0, 1, 2])
                # nothing else went anywhere: s1 and the egress saw none of it
                self.assertEqual(await self.until_mark(hub, s1, to="role:startup"), [])
                # presence without a token
                async with websockets.connect("ws://127.0.0.1:%d/ws/client" % port,
                                              ping_interval=None) as anonymous:
                    await anonymous.send(json.dumps({"op": "presence"}))
                    self.assertEqual(await closed_with(anonymous),
                                     (4001, "unauthorized: send auth first"))
                # a frame over max_frame closes that connection only
                await s1.send(json.dumps({"op": "publish", "type": "assignment:viewed",
                                          "data": "y" * 10000}))
                self.assertEqual((await closed_with(s1))[0], 1009)
                await admin.send(json.dumps({"op": "ping"}))
                self.assertEqual((await recv_json(admin))["op"], "pong")

        run(scenario(), timeout=60)
        topics = [(event["type"], event["src"]) for event in iter(lambda: egress.recv(1), None)]
        self.assertEqual([t for t in topics if not t[0].startswith(MARK)],
                         [("typing:stopped", "user:boss")] * 3)

    def test_presence_query_needs_a_token(self):
        hub, port = self.start(ws_options="anonymous = true")

        async def scenario():
            async with websockets.connect("ws://127.0.0.1:%d/ws/client" % port,
                                          ping_interval=None) as anonymous:
                self.assertEqual((await recv_json(anonymous))["op"], "welcome")
                await anonymous.send(json.dumps({"op": "presence"}))
                frame = await recv_json(anonymous)
                self.assertEqual((frame["op"], frame["code"]), ("error", "forbidden"))
                await anonymous.send(json.dumps({"op": "publish", "type": "typing:started"}))
                frame = await recv_json(anonymous)
                self.assertEqual((frame["op"], frame["code"]), ("error", "forbidden"))
                await anonymous.send(json.dumps({"op": "ping"}))
                self.assertEqual((await recv_json(anonymous))["op"], "pong")

        run(scenario())

    def test_a_stage_without_presence_announces_nothing(self):
        self.port = port = free_port()
        self.poll_port = free_port()
        hub = self.hub(chains="chain = web\n    sink = ws\n        plugin = websocket\n"
                              "        listen = 127.0.0.1:%d\n"
                              "    sink = poll\n        plugin = polling\n"
                              "        listen = 127.0.0.1:%d\n" % (port, self.poll_port),
                       hub_extra="token_secret = env:LIVEHUB_WS_TEST_SECRET\n", env=SECRET_ENV)
        hub.wait_running("ws")
        hub.wait_running("poll")
        status, body = self.http_presence(mint("boss", "admin"))
        self.assertEqual((status, body["error"]), (404, "presence_off"))

        async def scenario():
            async with self.connect("boss", "admin") as admin:
                self.assertEqual((await recv_json(admin))["op"], "welcome")
                await admin.send(json.dumps({"op": "presence"}))
                frame = await recv_json(admin)
                self.assertEqual((frame["op"], frame["code"]), ("error", "presence_off"))

        run(scenario())
        self.assertEqual(hub.status()["counters"]["accepted"], 0)

    def test_publish_rules_are_checked_with_the_conf(self):
        hub = self.hub(start=False)
        from hubtest import LIVEHUBD
        import subprocess
        for rule, reason in [("admin", "publish: 'admin' is not role=pattern"),
                             ("admin=typing:*x", "is not role=pattern"),
                             ("admin=presence:online", "presence: are the hub's own"),
                             ("admin=$gap", "$ types")]:
            hub.write_conf("chain = web\n    sink = ws\n        plugin = websocket\n"
                           "        publish = %s\n" % rule)
            check = subprocess.run([LIVEHUBD, "--check", hub.conf_path], capture_output=True,
                                   text=True, timeout=30)
            self.assertEqual(check.returncode, 1, rule)
            self.assertIn(reason, check.stderr, rule)
        for option, reason in [("audiences = everyone", "audiences: 'everyone' is not an audience"),
                               ("admin_visibility = none assigned", "none stands alone")]:
            hub.write_conf("chain = p\n    filter = tracker\n        plugin = presence\n"
                           "        %s\n" % option)
            check = subprocess.run([LIVEHUBD, "--check", hub.conf_path], capture_output=True,
                                   text=True, timeout=30)
            self.assertEqual(check.returncode, 1, option)
            self.assertIn(reason, check.stderr, option)

    # ---- the ephemeral flag in history and the journal -----------------------------------------

    def test_ephemeral_events_keep_ids_but_are_never_replayed_even_after_a_restart(self):
        journal = os.path.join(self.hub(start=False).dir, "journal")
        hub, port = self.start(journal=journal)
        first = hub.publish("note:a", {"n": 1})
        typing = hub.publish("typing:started", {"n": 2}, ["admin"])
        last = hub.publish("note:b", {"n": 3})
        # The hub's own events (the tracker's) may take ids in between: only the order matters.
        self.assertLess(first, typing)
        self.assertLess(typing, last)
        status, meta, events = hub.replay(first - 1, prefixes=("note:", "typing:"))
        self.assertEqual([e["type"] for e in events], ["note:a", "note:b"])
        status, meta, events = hub.replay(typing, prefixes=("note:",))
        self.assertEqual((status, [e["id"] for e in events]), ("OK", [last]))
        hub.stop()
        again = self.hub(chains=self.chains(),
                         hub_extra="token_secret = env:LIVEHUB_WS_TEST_SECRET\n"
                                   "ephemeral = typing: presence:\njournal = %s\n" % journal,
                         env=SECRET_ENV)
        status, meta, events = again.replay(first - 1, epoch=meta["epoch"],
                                            prefixes=("note:", "typing:"))
        self.assertEqual((status, [e["type"] for e in events]), ("OK", ["note:a", "note:b"]))
        # a client whose last id was the ephemeral event resumes without a reset
        status, meta, events = again.replay(typing, epoch=meta["epoch"], prefixes=("note:",))
        self.assertEqual((status, [e["id"] for e in events]), ("OK", [last]))
        self.assertGreater(again.publish("note:c"), last)


if __name__ == "__main__":
    unittest.main()
