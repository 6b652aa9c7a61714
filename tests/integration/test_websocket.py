"""The websocket sink, driven the way browsers and other clients use it: a real hub with the
plugin on a free loopback port, events published through the hub, WebSocket clients from
python3-websockets (and raw sockets where a client must misbehave). Protocol: docs/WEBSOCKET.md."""
import asyncio
import base64
import hashlib
import hmac
import json
import os
import random
import socket
import ssl
import struct
import subprocess
import tempfile
import threading
import time
import unittest
import urllib.request

import websockets

from hubtest import LIVEHUBD, HubTestCase, free_port, pack_event

SECRET = "test-secret-0123456789abcdef"
SECRET_ENV = {"LIVEHUB_WS_TEST_SECRET": SECRET}


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def mint(sub, role, ttl=3600, secret=SECRET, alg="HS256", now=None):
    """An HS256 JWT as the team's backend would mint it (alg "none" leaves the signature out)."""
    now = int(time.time()) if now is None else now
    header = b64url(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    payload = b64url(json.dumps({"sub": sub, "role": role, "iat": now, "exp": now + ttl}).encode())
    signing_input = ("%s.%s" % (header, payload)).encode()
    signature = "" if alg == "none" else b64url(
        hmac.new(secret.encode(), signing_input, hashlib.sha256).digest())
    return "%s.%s.%s" % (header, payload, signature)


def run(coroutine, timeout=30):
    return asyncio.run(asyncio.wait_for(coroutine, timeout))


async def recv_json(ws, timeout=5.0):
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def recv_op(ws, op, timeout=5.0):
    """The next frame with the given op, skipping events."""
    deadline = time.monotonic() + timeout
    while True:
        frame = await recv_json(ws, max(0.01, deadline - time.monotonic()))
        if frame["op"] == op:
            return frame
        if frame["op"] != "event":
            raise AssertionError("expected %s, got %s" % (op, frame))


async def closed_with(ws, timeout=8.0):
    """Reads until the server closes; returns (code, reason)."""
    try:
        while True:
            await asyncio.wait_for(ws.recv(), timeout)
    except websockets.ConnectionClosed:
        pass
    return ws.close_code, ws.close_reason


async def events_until(ws, count, timeout=10.0):
    events, deadline = [], time.monotonic() + timeout
    while len(events) < count:
        frame = await recv_json(ws, max(0.01, deadline - time.monotonic()))
        if frame["op"] == "event":
            events.append(frame)
    return events


async def no_more_events(ws, wait=0.3):
    try:
        while True:
            frame = await recv_json(ws, wait)
            if frame["op"] == "event":
                return frame
    except asyncio.TimeoutError:
        return None


class RawClient:
    """A WebSocket client on a plain socket, for peers that misbehave on purpose."""

    def __init__(self, port, path, headers="", rcvbuf=None, timeout=5.0):
        self.sock = socket.socket()
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(("GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
                           "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                           "Sec-WebSocket-Version: 13\r\n%s\r\n" % (path, port, key, headers))
                          .encode())
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(4096)
            if not chunk:
                break
            self.buffer += chunk
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        self.status = int(head.split(b" ", 2)[1]) if head else 0

    def _need(self, size):
        while len(self.buffer) < size:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError
            self.buffer += chunk

    def frame(self):
        """(opcode, payload) of the next server frame."""
        self._need(2)
        opcode, size = self.buffer[0] & 0x0F, self.buffer[1] & 0x7F
        offset = 2
        if size == 126:
            self._need(4)
            size, offset = struct.unpack(">H", self.buffer[2:4])[0], 4
        elif size == 127:
            self._need(10)
            size, offset = struct.unpack(">Q", self.buffer[2:10])[0], 10
        self._need(offset + size)
        payload = self.buffer[offset:offset + size]
        self.buffer = self.buffer[offset + size:]
        return opcode, payload

    def send_text(self, text):
        """A masked text frame, as a client must send it."""
        payload, mask = text.encode(), os.urandom(4)
        size = len(payload)
        head = bytes([0x81]) + (bytes([0x80 | size]) if size < 126 else
                                bytes([0x80 | 126]) + struct.pack(">H", size))
        self.sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def close(self):
        self.sock.close()


def http_get(port, path, timeout=5.0):
    """(status, content type, body) of a raw GET: the path is sent exactly as given."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n" % path)
                     .encode())
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode(errors="replace").split("\r\n")
    status = int(lines[0].split(" ")[1]) if lines and " " in lines[0] else 0
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    content_type = next((v for k, v in headers.items() if k.lower() == "content-type"), None)
    return status, content_type, body


class Slowloris:
    """count hostile connections that never finish a request: half stay silent, half send a
    request header one byte every half second. Each one the server closes is reopened at once.
    Bounded: at most max_seconds, and at most 20 * count connections opened in all."""

    REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "

    def __init__(self, port, count, max_seconds=90.0):
        self.port, self.count, self.max_seconds = port, count, max_seconds
        self.opened = self.closed_by_server = 0
        self.connected = threading.Event()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _open(self, index):
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", self.port))
        self.opened += 1
        return {"sock": sock, "sent": 0, "dribble": index % 2 == 1}

    def _run(self):
        import selectors
        deadline = time.monotonic() + self.max_seconds
        selector = selectors.DefaultSelector()
        peers = {}
        for index in range(self.count):
            peer = self._open(index)
            peers[peer["sock"]] = (index, peer)
            selector.register(peer["sock"], selectors.EVENT_READ)
        # loopback connects complete in the kernel's backlog, accepted or not
        self.connected.set()
        next_byte = time.monotonic()
        while not self.stopping.is_set() and time.monotonic() < deadline:
            for key, _ in selector.select(0.1):
                index, peer = peers.pop(key.fileobj)
                selector.unregister(key.fileobj)
                try:
                    key.fileobj.recv(65536)
                except OSError:
                    pass
                key.fileobj.close()
                self.closed_by_server += 1
                if self.opened < 20 * self.count:
                    peer = self._open(index)
                    peers[peer["sock"]] = (index, peer)
                    selector.register(peer["sock"], selectors.EVENT_READ)
            if time.monotonic() >= next_byte:
                next_byte = time.monotonic() + 0.5
                for index, peer in peers.values():
                    if peer["dribble"]:
                        request = self.REQUEST + b"a" * 4096
                        try:
                            peer["sock"].send(request[peer["sent"]:peer["sent"] + 1])
                            peer["sent"] += 1
                        except OSError:
                            pass
        for sock in peers:
            sock.close()
        selector.close()

    def stop(self):
        self.stopping.set()
        self.thread.join(10)


class WebSocketTest(HubTestCase):
    def start(self, options="", hub_extra="", secret=True, stats=True):
        """A hub with one websocket sink on a free port; returns (hub, port)."""
        port = free_port()
        lines = ["listen = 127.0.0.1:%d" % port]
        if stats:
            lines.append("stats = /stats")
        lines += [line.strip() for line in options.strip().splitlines() if line.strip()]
        chains = "chain = web\n    sink = ws\n        plugin = websocket\n" + "".join(
            "        %s\n" % line for line in lines)
        extra = ("token_secret = env:LIVEHUB_WS_TEST_SECRET\n" if secret else "") + hub_extra
        hub = self.hub(chains=chains, hub_extra=extra, env=SECRET_ENV)
        hub.wait_running("ws")
        return hub, port

    def url(self, port, path="/ws/client", **query):
        text = "&".join("%s=%s" % (k, v) for k, v in query.items())
        return "ws://127.0.0.1:%d%s%s" % (port, path, "?" + text if text else "")

    def connect(self, port, path="/ws/client", token=None, header_token=None, **query):
        if token:
            query["access_token"] = token
        headers = {"Authorization": "Bearer " + header_token} if header_token else None
        return websockets.connect(self.url(port, path, **query), extra_headers=headers,
                                  ping_interval=None, max_size=None, close_timeout=2)

    def stats(self, port):
        with urllib.request.urlopen("http://127.0.0.1:%d/stats" % port, timeout=5) as reply:
            return json.loads(reply.read())

    def test_conf_mistakes_are_refused_naming_the_key(self):
        cases = [
            ("listen = 10.1.2.3:8080", "listen: 10.1.2.3:8080 is not a loopback address"),
            ("namespaces = client bad-name", "namespaces: 'bad-name'"),
            ("namespaces = client client", "namespaces: 'client' must be unique"),
            ("tls_cert = /etc/hostname", "tls_cert and tls_key go together"),
            ("heartbeat = 30\nidle_timeout = 30", "idle_timeout: must be longer than heartbeat"),
            ("stats = metrics", "stats: a URL path"),
            ("www = /nonexistent/folder", "www: '/nonexistent/folder' is not a folder"),
            ("max_queue = 0", "max_queue"),
            ("max_connections = 100\nmax_sockets = 50", "max_sockets: must be at least"),
            ("header_pool = 2", "header_pool"),
            ("colour = blue", "colour"),
        ]
        hub = self.hub(start=False)
        for option, reason in cases:
            hub.write_conf("chain = web\n    sink = ws\n        plugin = websocket\n" + "".join(
                "        %s\n" % line for line in option.split("\n")))
            check = subprocess.run([LIVEHUBD, "--check", hub.conf_path], capture_output=True,
                                   text=True, timeout=30)
            self.assertEqual(check.returncode, 1, option)
            self.assertIn(reason, check.stderr, option)

    # ---- who sees what ---------------------------------------------------------------------

    def test_token_grants_audiences_and_events_reach_only_them(self):
        hub, port = self.start()

        async def scenario():
            async with self.connect(port, header_token=mint("7", "startup")) as ws:
                welcome = await recv_json(ws)
                self.assertEqual(welcome["op"], "welcome")
                self.assertEqual(welcome["audiences"], ["public", "role:startup", "user:7"])
                self.assertEqual(welcome["namespace"], "client")
                self.assertEqual(welcome["epoch"], hub.status()["epoch"])
                self.assertEqual(welcome["heartbeat"], 25)
                self.assertGreater(welcome["expires"], time.time())
                await ws.send(json.dumps({"op": "subscribe", "types": ["*"]}))
                self.assertEqual((await recv_op(ws, "subscribed"))["types"], ["*"])
                sent = [
                    hub.publish("signal:created", {"n": 1}),
                    hub.publish("assignment:created", {"signalIdentifier": "S-7"}, to=["user:7"]),
                    hub.publish("assignment:created", {"n": 3}, to=["user:8"]),
                    hub.publish("connection:updated", {"n": 4}, to=["admin"]),
                    hub.publish("signal:updated", {"n": 5}, to=["role:startup"]),
                    hub.publish("metrics:update", {"n": 6}, to=["role:admin", "user:7"]),
                ]
                got = await events_until(ws, 4)
                self.assertEqual([e["id"] for e in got], [sent[0], sent[1], sent[4], sent[5]])
                first = got[1]
                self.assertEqual(set(first), {"op", "id", "type", "ts", "data"},
                                 "no audiences leak")
                self.assertEqual((first["type"], first["data"]),
                                 ("assignment:created", {"signalIdentifier": "S-7"}))
                self.assertGreater(first["ts"], 1_600_000_000_000_000)
                self.assertIsNone(await no_more_events(ws))

        run(scenario())
        stats = self.stats(port)
        self.assertEqual(stats["livehub_ws_events_total"], 4)
        self.assertEqual(stats["livehub_ws_accepted_total"], 1)

    def test_token_in_query_or_first_frame_and_anonymous_access(self):
        hub, port = self.start("anonymous = true\nauth_timeout = 1")

        async def scenario():
            async with self.connect(port, token=mint("q", "startup"), types="*") as ws:
                self.assertIn("user:q", (await recv_json(ws))["audiences"])
            async with self.connect(port, path="/ws/client") as anonymous:
                welcome = await recv_json(anonymous)
                self.assertEqual((welcome["audiences"], welcome["expires"]), (["public"], None))
                # an anonymous connection may still authenticate with a first-class token
                await anonymous.send(json.dumps({"op": "auth", "token": mint("f", "startup")}))
                refreshed = await recv_op(anonymous, "welcome")
                self.assertTrue(refreshed["refreshed"])
                self.assertIn("user:f", refreshed["audiences"])
            async with self.connect(port, path="/ws/admin") as waiting:
                # no anonymous access to /admin: the first frame must be auth, in time
                self.assertEqual(await closed_with(waiting),
                                 (4001, "unauthorized: no auth in time"))

        run(scenario())

    def test_auth_frame_flow_and_ops_before_auth(self):
        hub, port = self.start()

        async def scenario():
            async with self.connect(port) as ws:
                await ws.send(json.dumps({"op": "ping"}))
                self.assertEqual((await recv_json(ws))["op"], "pong", "ping works before auth")
                await ws.send(json.dumps({"op": "auth", "token": mint("9", "startup")}))
                self.assertEqual((await recv_json(ws))["audiences"],
                                 ["public", "role:startup", "user:9"])
            async with self.connect(port) as ws:
                await ws.send(json.dumps({"op": "subscribe", "types": ["*"]}))
                self.assertEqual(await closed_with(ws), (4001, "unauthorized: send auth first"))

        run(scenario())

    def test_admin_namespace_refuses_other_roles(self):
        hub, port = self.start()

        async def scenario():
            async with self.connect(port, path="/ws/admin", token=mint("a", "admin"),
                                    types="*") as admin:
                welcome = await recv_json(admin)
                self.assertEqual(welcome["audiences"], ["public", "role:admin", "user:a", "admin"])
                ids = [hub.publish("connection:statusChanged", {}, to=["admin"]),
                       hub.publish("assignment:created", {}, to=["user:5"]),
                       hub.publish("metrics:update", {}, to=["role:admin"])]
                self.assertEqual([e["id"] for e in await events_until(admin, 2)],
                                 [ids[0], ids[2]])
            async with self.connect(port, path="/ws/admin", token=mint("5", "startup")) as ws:
                self.assertEqual(await closed_with(ws),
                                 (4003, "forbidden: /ws/admin needs role admin"))
            async with self.connect(port, path="/ws/nope", token=mint("5", "startup")) as ws:
                self.assertEqual(await closed_with(ws), (4004, "unknown namespace"))
            with self.assertRaises(websockets.InvalidStatusCode) as refused:
                async with websockets.connect("ws://127.0.0.1:%d/elsewhere" % port):
                    pass
            self.assertEqual(refused.exception.status_code, 404)

        run(scenario())

    def test_forged_expired_and_none_tokens_are_refused(self):
        hub, port = self.start()
        cases = [
            (mint("1", "startup", secret="wrong-secret"), 4001, "unauthorized: "),
            (mint("1", "startup", ttl=-120), 4009, "token expired: "),
            (mint("1", "admin", alg="none"), 4001, "unauthorized: "),
            (mint("1", "admin").rsplit(".", 1)[0] + "." + b64url(b"x" * 32), 4001, "unauthorized"),
            ("not-a-token", 4001, "unauthorized: "),
            ("x" * 5000, 4001, "unauthorized: "),
        ]

        async def scenario():
            for token, code, reason in cases:
                async with self.connect(port, header_token=token) as ws:
                    got_code, got_reason = await closed_with(ws)
                    self.assertEqual(got_code, code, (token[:40], got_reason))
                    self.assertTrue(got_reason.startswith(reason), got_reason)
                    self.assertNotIn(SECRET, got_reason)

        run(scenario())
        self.assertEqual(self.stats(port)["livehub_ws_closes_unauthorized_total"], 5)

    def test_token_with_exp_near_int64_max_stays_valid(self):
        """Issue 21 #7: expires + clock_skew overflowed for exp near INT64_MAX (UB: the sanitizer
        build aborted; the optimised one closed the session with 4009 at the next tick)."""
        hub, port = self.start("heartbeat = 1\nidle_timeout = 30")
        far = 2 ** 63 - 1
        token = mint("9", "startup", ttl=far - int(time.time()))
        client = RawClient(port, "/ws/client?types=*&access_token=" + token)
        self.assertEqual(client.status, 101)
        opcode, payload = client.frame()
        welcome = json.loads(payload)
        self.assertEqual((opcode, welcome["op"], welcome["expires"]), (1, "welcome", far))
        # each server ping comes from the once-a-second check that also tests expiry
        pings = 0
        while pings < 2:
            opcode, payload = client.frame()
            self.assertNotEqual(opcode, 8, "closed: %r" % payload)
            pings += opcode == 9
        event_id = hub.publish("signal:created", {"n": 1})
        while True:
            opcode, payload = client.frame()
            self.assertNotEqual(opcode, 8, "closed: %r" % payload)
            if opcode == 1:
                self.assertEqual(json.loads(payload)["id"], event_id)
                break
        client.close()

    def test_url_token_longer_than_a_token_is_refused_not_anonymous(self):
        """Issue 21 #7: an access_token longer than the 4 KB argument buffer was silently
        ignored, and with anonymous = true the client became anonymous instead of refused."""
        hub, port = self.start("anonymous = true")

        async def scenario():
            for size in (4200, 6000):
                async with self.connect(port, token="x" * size) as ws:
                    self.assertEqual(await closed_with(ws), (4001, "unauthorized: token too long"))
            async with self.connect(port, header_token="x" * 6000) as ws:
                self.assertEqual(await closed_with(ws), (4001, "unauthorized: token too long"))
            # types longer than the old 1 KB buffer are read, not skipped
            types = ",".join("t%03d:*" % n for n in range(32))
            async with self.connect(port, types=types + ",signal:" + "x" * 900) as ws:
                self.assertEqual(await closed_with(ws), (4400, "bad request: types"))

        run(scenario())

    def test_pings_beyond_ping_rate_close_the_connection(self):
        """Issue 21 #7: every WebSocket ping was answered, without bound (9.6 M in one test).
        Ping frames (answered by libwebsockets itself) and ping ops are bounded per second."""
        hub, port = self.start("anonymous = true\nping_rate = 10")

        async def scenario():
            async with self.connect(port) as ws:
                await recv_json(ws)
                deadline, waiters = time.monotonic() + 10, []
                while not ws.closed and time.monotonic() < deadline and len(waiters) < 200000:
                    try:
                        waiters.append(await ws.ping(struct.pack(">I", len(waiters))))
                    except websockets.ConnectionClosed:
                        break
                    if len(waiters) % 100 == 0:
                        await asyncio.sleep(0)
                # the hub closes with 4400, but a peer still flooding may see its close frame
                # lost to the reset its unread pings cause: the counter says why
                self.assertIn((await closed_with(ws))[0], (4400, 1006))
                answered = sum(1 for w in waiters if w.done() and not w.exception())
                print("\n  ping flood: %d ping frames sent, %d answered before the close"
                      % (len(waiters), answered))
            deadline = time.monotonic() + 10
            while self.stats(port)["livehub_ws_closes_bad_request_total"] != 1:
                self.assertLess(time.monotonic(), deadline, self.stats(port))
                await asyncio.sleep(0.05)
            async with self.connect(port) as ws:
                await recv_json(ws)
                pongs = 0
                try:
                    for _ in range(30):
                        await ws.send('{"op":"ping"}')
                    while True:
                        pongs += (await recv_json(ws))["op"] == "pong"
                except websockets.ConnectionClosed:
                    pass
                self.assertIn(ws.close_code, (4400, 1006))
                self.assertLessEqual(pongs, 11)
            while self.stats(port)["livehub_ws_closes_bad_request_total"] != 2:
                self.assertLess(time.monotonic(), deadline + 10, self.stats(port))
                await asyncio.sleep(0.05)
            # a client within the rate keeps its connection: 4 ping frames and 4 ping ops a
            # second, over 3 of the hub's once-a-second checks
            async with self.connect(port) as ws:
                await recv_json(ws)
                for n in range(12):
                    await asyncio.wait_for(await ws.ping(struct.pack(">Q", n)), 5)
                    await ws.send('{"op":"ping"}')
                    self.assertEqual((await recv_json(ws))["op"], "pong")
                    await asyncio.sleep(0.25)
                self.assertFalse(ws.closed)

        run(scenario(), timeout=60)
        self.assertEqual(self.stats(port)["livehub_ws_closes_bad_request_total"], 2)

    def test_hub_without_token_secret_refuses_tokens(self):
        hub, port = self.start(secret=False)

        async def scenario():
            async with self.connect(port, token=mint("1", "startup")) as ws:
                code, reason = await closed_with(ws)
                self.assertEqual((code, reason),
                                 (4001, "unauthorized: this hub has no token_secret"))

        run(scenario())

    def test_random_token_secret_serves_dev_login_tokens_of_this_process_only(self):
        """token_secret = random (the default conf's): the dev login mints tokens the hub accepts;
        a token signed with any other secret, or minted by another hub process, is refused."""
        hubs = [self.start("dev_login = true", hub_extra="token_secret = random\n", secret=False)
                for _ in range(2)]
        (_, port), (_, other_port) = hubs
        status, _, body = http_get(port, "/dev/token?sub=9&role=admin")
        self.assertEqual(status, 200, body)
        token = json.loads(body)["token"]

        async def scenario():
            async with self.connect(port, path="/ws/admin", token=token) as ws:
                welcome = await recv_json(ws)
                self.assertEqual(welcome["op"], "welcome")
                self.assertIn("user:9", welcome["audiences"])
            for where, forged in ((other_port, token), (port, mint("9", "admin"))):
                async with self.connect(where, path="/ws/admin", token=forged) as ws:
                    code, _ = await closed_with(ws)
                    self.assertEqual(code, 4001)

        run(scenario())

    def test_expiry_while_connected_and_token_refresh(self):
        hub, port = self.start("clock_skew = 0")

        async def scenario():
            async with self.connect(port, token=mint("r", "startup", ttl=2)) as ws:
                await recv_json(ws)
                await ws.send(json.dumps({"op": "auth", "token": mint("r", "startup", ttl=600)}))
                refreshed = await recv_op(ws, "welcome")
                self.assertTrue(refreshed["refreshed"])
                await asyncio.sleep(3.2)  # the first token has expired by now: no close
                await ws.send(json.dumps({"op": "ping"}))
                await recv_op(ws, "pong")
                await ws.send(json.dumps({"op": "auth", "token": mint("other", "startup")}))
                self.assertEqual((await closed_with(ws))[0], 4003, "a refresh keeps the sub")
            started = time.monotonic()
            async with self.connect(port, token=mint("e", "startup", ttl=2)) as ws:
                self.assertEqual(await closed_with(ws), (4009, "token expired"))
                self.assertLess(time.monotonic() - started, 4.5)

        run(scenario())

    def test_subscriptions_filter_types(self):
        hub, port = self.start("anonymous = true")

        async def scenario():
            async with self.connect(port) as ws:
                await recv_json(ws)
                await ws.send(json.dumps({"op": "subscribe", "types": ["assignment:*",
                                                                       "signal:created"]}))
                self.assertEqual((await recv_op(ws, "subscribed"))["types"],
                                 ["assignment:*", "signal:created"])
                for type_ in ("assignment:created", "signal:updated", "signal:created",
                              "connection:created", "assignment:responseChanged"):
                    hub.publish(type_, {})
                self.assertEqual([e["type"] for e in await events_until(ws, 3)],
                                 ["assignment:created", "signal:created",
                                  "assignment:responseChanged"])
                await ws.send(json.dumps({"op": "unsubscribe", "types": ["assignment:*"]}))
                self.assertEqual((await recv_op(ws, "subscribed"))["types"], ["signal:created"])
                hub.publish("assignment:created", {})
                last = hub.publish("signal:created", {})
                self.assertEqual([e["id"] for e in await events_until(ws, 1)], [last])
                self.assertIsNone(await no_more_events(ws))

        run(scenario())

    # ---- bad input ---------------------------------------------------------------------------

    def test_bad_frames_get_error_frames_then_4400(self):
        hub, port = self.start("max_errors = 6")

        async def scenario():
            async with self.connect(port, token=mint("b", "startup"), types="*") as ws:
                await recv_json(ws)
                expect = [
                    ("{not json", "bad_json"),
                    ("[1, 2]", "bad_request"),
                    (json.dumps({"op": 7}), "bad_request"),
                    (json.dumps({"op": "dance"}), "unknown_op"),
                    (json.dumps({"op": "subscribe", "types": "assignment:*"}), "bad_request"),
                    (json.dumps({"op": "subscribe", "types": ["a*b"]}), "bad_pattern"),
                ]
                for text, code in expect:
                    await ws.send(text)
                    frame = await recv_op(ws, "error")
                    self.assertEqual(frame["code"], code, frame)
                    self.assertTrue(frame["message"])
                    if code == "bad_pattern":
                        await recv_op(ws, "subscribed")
                # the connection still works between errors
                event_id = hub.publish("signal:created", {"ok": True})
                self.assertEqual((await events_until(ws, 1))[0]["id"], event_id)
                await ws.send("{}")
                self.assertEqual(await closed_with(ws), (4400, "bad request: too many errors"))

        run(scenario())

    def test_oversized_binary_and_non_utf8_frames_close_the_connection(self):
        hub, port = self.start("max_frame = 1024\nanonymous = true")

        async def scenario():
            async with self.connect(port) as ws:
                await recv_json(ws)
                await ws.send(json.dumps({"op": "ping", "pad": "x" * 900}))  # assembled, fits
                await recv_op(ws, "pong")
                await ws.send(json.dumps({"op": "ping", "pad": "x" * 5000}))
                self.assertEqual(await closed_with(ws), (1009, "frame too big"))
            async with self.connect(port) as ws:
                await recv_json(ws)
                await ws.send(b"\x00\x01binary")
                self.assertEqual(await closed_with(ws), (1003, "binary frames are not supported"))
            async with self.connect(port, types="a**") as ws:
                self.assertEqual(await closed_with(ws), (4400, "bad request: types"))
            async with self.connect(port, types="*") as ws:  # others unaffected
                await recv_json(ws)
                event_id = hub.publish("signal:created", {})
                self.assertEqual((await events_until(ws, 1))[0]["id"], event_id)

        run(scenario())
        raw = RawClient(port, "/ws/client")
        raw.frame()  # welcome
        mask, payload = b"\x01\x02\x03\x04", b"\xff\xfe not UTF-8"
        raw.sock.sendall(bytes([0x81, 0x80 | len(payload)]) + mask +
                         bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
        opcode, data = raw.frame()
        self.assertEqual((opcode, struct.unpack(">H", data[:2])[0]), (8, 1007))
        raw.close()
        stats = self.stats(port)
        self.assertEqual((stats["livehub_ws_closes_too_big_total"],
                          stats["livehub_ws_closes_binary_total"]), (1, 1))

    def test_connection_flood_beyond_max_connections_is_refused_cleanly(self):
        hub, port = self.start("max_connections = 5\nanonymous = true")

        async def scenario():
            kept = [await self.connect(port, types="*") for _ in range(5)]
            for ws in kept:
                await recv_json(ws)

            async def attempt():
                try:
                    async with websockets.connect(self.url(port), open_timeout=5):
                        return "accepted"
                except websockets.InvalidStatusCode as error:
                    return error.status_code

            results = await asyncio.gather(*(attempt() for _ in range(60)))
            self.assertEqual(results, [503] * 60)
            event_id = hub.publish("signal:created", {})
            for ws in kept:
                self.assertEqual((await events_until(ws, 1))[0]["id"], event_id)
            await kept.pop().close()
            await asyncio.sleep(0.2)
            async with self.connect(port) as ws:
                self.assertEqual((await recv_json(ws))["op"], "welcome", "room again")
            for ws in kept:
                await ws.close()

        run(scenario())
        self.assertEqual(self.stats(port)["livehub_ws_refused_total"], 60)

    def test_slowloris_sockets_do_not_shut_out_honest_clients(self):
        """Finding 1 of issue 21: 32 idle sockets held every header slot (max_http_header_pool
        32, 10 s), and a client reopening them kept every new WebSocket and file out."""
        hub, port = self.start("anonymous = true")
        hostile = Slowloris(port, 256)
        try:
            self.assertTrue(hostile.connected.wait(30))

            async def honest():
                async with websockets.connect(self.url(port, types="*"), open_timeout=15,
                                              close_timeout=2, ping_interval=None) as ws:
                    self.assertEqual((await recv_json(ws, 15))["op"], "welcome")
                    event_id = hub.publish("signal:created", {"n": 1})
                    self.assertEqual((await events_until(ws, 1, 15))[0]["id"], event_id)

            def served():
                run(honest(), timeout=20)
                status, _, body = http_get(port, "/", timeout=15)
                self.assertEqual(status, 200)
                self.assertIn(b"livehub", body)

            served()
            # header_timeout (5 s) is a deadline for the whole header, so even the dribbling
            # sockets are dropped; once every hostile socket was dropped and reopened, honest
            # clients are still served
            deadline = time.monotonic() + 60
            while hostile.closed_by_server < 256:
                self.assertLess(time.monotonic(), deadline, "hostile sockets never dropped")
                time.sleep(0.1)
            served()
        finally:
            hostile.stop()
        print("\n  slowloris: 256 hostile sockets, %d opened, %d closed by the hub"
              % (hostile.opened, hostile.closed_by_server))

    def test_max_sockets_bounds_the_listener_and_sheds_waiting_sockets(self):
        """Issue 21 #1: beyond the header pool, connections waited in an unbounded line (each one
        a descriptor). max_sockets bounds the listener: at the bound a new connection closes the
        oldest one that has sent no request yet, and gets a clear 503 when every one is busy."""
        hub, port = self.start("anonymous = true\nmax_connections = 16\nmax_sockets = 16\n"
                               "header_pool = 16", stats=False)
        fd_dir = "/proc/%d/fd" % hub.process.pid
        baseline = len(os.listdir(fd_dir))
        hostile = Slowloris(port, 100)
        try:
            self.assertTrue(hostile.connected.wait(30))
            deadline = time.monotonic() + 30
            while hostile.closed_by_server < 84:  # shed to make room for the newer ones
                self.assertLess(time.monotonic(), deadline, hostile.closed_by_server)
                time.sleep(0.05)
            # the hub's descriptors: max_sockets, once those it closed are gone
            while len(os.listdir(fd_dir)) > baseline + 16 + 2:
                self.assertLess(time.monotonic(), deadline, len(os.listdir(fd_dir)) - baseline)
                time.sleep(0.05)

            async def honest():
                async with websockets.connect(self.url(port, types="*"), open_timeout=15,
                                              close_timeout=2, ping_interval=None) as ws:
                    self.assertEqual((await recv_json(ws, 15))["op"], "welcome")
                    event_id = hub.publish("signal:created", {"n": 1})
                    self.assertEqual((await events_until(ws, 1, 15))[0]["id"], event_id)

            run(honest(), timeout=20)
            self.assertEqual(http_get(port, "/", timeout=15)[0], 200)
        finally:
            hostile.stop()

        async def busy():
            # 16 WebSockets: every connection busy, so the 17th is refused, and told so
            kept = [await self.connect(port, types="*") for _ in range(16)]
            for ws in kept:
                await recv_json(ws)
            status, _, body = await asyncio.get_running_loop().run_in_executor(
                None, http_get, port, "/")
            self.assertEqual((status, body), (503, b"too many connections"))
            for ws in kept:
                await ws.close()

        run(busy())

    def test_origin_allow_list(self):
        hub, port = self.start("origins = https://app.example http://localhost:3000\n"
                               "anonymous = true")

        async def scenario():
            async with websockets.connect(self.url(port), origin="https://app.example") as ws:
                self.assertEqual((await recv_json(ws))["op"], "welcome")
            async with websockets.connect(self.url(port)) as ws:  # not a browser: no Origin
                self.assertEqual((await recv_json(ws))["op"], "welcome")
            with self.assertRaises(websockets.InvalidStatusCode) as refused:
                async with websockets.connect(self.url(port), origin="https://evil.example"):
                    pass
            self.assertEqual(refused.exception.status_code, 403)

        run(scenario())

    # ---- resume --------------------------------------------------------------------------------

    def test_resume_replays_exactly_the_allowed_events_after_an_id(self):
        hub, port = self.start("anonymous = true", hub_extra="history = 30")
        ids = [hub.publish("signal:created" if n % 3 else "assignment:created", {"n": n},
                           to=None if n % 2 else ["user:x"]) for n in range(20)]
        visible = [i for n, i in enumerate(ids) if n % 2]
        epoch = hub.status()["epoch"]

        async def scenario():
            # in the URL: replay then live, no gap, no duplicate
            async with self.connect(port, since=ids[5], epoch=epoch, types="*") as ws:
                welcome = await recv_json(ws)
                self.assertEqual(welcome["last_id"], ids[-1])
                resumed = await recv_json(ws)
                self.assertEqual((resumed["op"], resumed["since"], resumed["last_id"]),
                                 ("resumed", ids[5], ids[-1]))
                live = hub.publish("signal:created", {"n": 20})
                got = [e["id"] for e in await events_until(ws, len(visible) - 3 + 1)]
                self.assertEqual(got, [i for i in visible if i > ids[5]] + [live])
                self.assertIsNone(await no_more_events(ws))
            # as ops: resume before subscribe, and only the subscribed types come back
            async with self.connect(port) as ws:
                await recv_json(ws)
                await ws.send(json.dumps({"op": "resume", "since": ids[0], "epoch": epoch}))
                self.assertEqual((await recv_json(ws))["op"], "resumed")
                await ws.send(json.dumps({"op": "subscribe", "types": ["assignment:*"]}))
                await recv_op(ws, "subscribed")
                want = [i for n, i in enumerate(ids) if n % 2 and n % 3 == 0 and i > ids[0]]
                self.assertEqual([e["id"] for e in await events_until(ws, len(want))], want)
                self.assertIsNone(await no_more_events(ws))
                # on a started stream, resume rewinds: the events after since come again
                await ws.send(json.dumps({"op": "resume", "since": want[-3]}))
                self.assertEqual((await recv_json(ws))["op"], "resumed")
                self.assertEqual([e["id"] for e in await events_until(ws, 2)], want[-2:])
                self.assertIsNone(await no_more_events(ws))
                # an id from the future is an error, and changes nothing
                await ws.send(json.dumps({"op": "resume", "since": live + 1000}))
                error = await recv_op(ws, "error")
                self.assertEqual(error["code"], "resume_future")
            # too old for history, or another epoch: reset, then live
            live = [hub.publish("signal:created", {}) for _ in range(15)][-1]
            for query in ({"since": 0}, {"since": ids[-1], "epoch": "another-epoch"}):
                async with self.connect(port, types="*", **query) as ws:
                    await recv_json(ws)
                    reset = await recv_json(ws)
                    self.assertEqual((reset["op"], reset["last_id"], reset["epoch"]),
                                     ("reset", live, epoch))
                    self.assertEqual(reset["reason"], "history" if "epoch" not in query
                                     else "epoch")
                    after = hub.publish("signal:created", {})
                    self.assertEqual([e["id"] for e in await events_until(ws, 1)], [after])
                    live = after
            async with self.connect(port, since="12abc") as ws:
                self.assertEqual(await closed_with(ws), (4400, "bad request: since must be an id"))

        run(scenario())

    def test_resume_after_forced_disconnects_loses_and_duplicates_nothing(self):
        hub, port = self.start()
        token = mint("7", "startup")
        total, expected, done = 900, [], threading.Event()
        push = hub.pusher()

        rng = random.Random(7)

        def publisher():
            for n in range(total):
                to = rng.choice([["user:7"], ["user:8"], None, ["admin"], ["user:7", "admin"]])
                if to is None or "user:7" in to:
                    expected.append(n)
                push.send_multipart([b"assignment:created",
                                     pack_event("assignment:created", {"n": n}, to=to)])
                if n % 10 == 0:
                    time.sleep(0.005)
            done.set()

        async def scenario():
            seen, last, epoch = [], None, None
            thread = threading.Thread(target=publisher)
            for cycle in range(4):
                query = {"types": "*"}
                if last is not None:
                    query.update(since=last, epoch=epoch)
                ws = await self.connect(port, token=token, **query)
                welcome = await recv_json(ws)
                epoch = welcome["epoch"]
                if cycle == 0:
                    self.assertEqual(welcome["last_id"], 0)
                    thread.start()
                budget = 60 if cycle < 3 else None
                while budget is None or budget > 0:
                    if budget is None and done.is_set() and len(seen) >= len(expected):
                        self.assertIsNone(await no_more_events(ws))
                        break
                    frame = await recv_json(ws, 5.0)
                    if frame["op"] == "event":
                        seen.append(frame["data"]["n"])
                        last = frame["id"]
                        budget = budget - 1 if budget is not None else None
                    else:
                        self.assertIn(frame["op"], ("resumed",), frame)
                ws.transport.abort()  # a forced disconnect: no close frame
                await asyncio.sleep(0.2)
            thread.join()
            self.assertTrue(done.is_set())
            self.assertEqual(len(seen), len(set(seen)), "no duplicate")
            self.assertEqual(seen, expected, "nothing lost, in order")

        run(scenario(), timeout=40)

    def test_sink_gap_is_replayed_from_history(self):
        # a tiny high-water mark makes the hub drop events for the sink; it then replays the
        # "$gap" from history so clients still get every event, in order
        hub, port = self.start("anonymous = true", hub_extra="hwm = 2")
        push = hub.pusher()

        async def scenario():
            async with self.connect(port, types="*") as ws:
                await recv_json(ws)
                for n in range(3000):
                    push.send_multipart([b"signal:created", pack_event("signal:created",
                                                                       {"n": n})])
                got = [e["data"]["n"] for e in await events_until(ws, 3000, timeout=20)]
                self.assertEqual(got, list(range(3000)))

        run(scenario())
        dropped = hub.stage("ws")["dropped"]
        print("\n  events the hub dropped for the sink and the sink replayed: %d" % dropped)

    # ---- many users, slow readers ----------------------------------------------------------

    def test_200_users_each_get_exactly_their_events(self):
        hub, port = self.start()
        users = 200
        push = hub.pusher()
        rng = random.Random(42)
        plan = []  # (n, type, to)
        for n in range(3000):
            kind = rng.random()
            if kind < 0.70:
                to, type_ = ["user:u%d" % rng.randrange(users)], "assignment:created"
            elif kind < 0.80:
                to, type_ = None, "signal:created"
            elif kind < 0.85:
                to, type_ = ["role:startup"], "signal:updated"
            elif kind < 0.95:
                to, type_ = ["admin"], "connection:statusChanged"
            else:
                to, type_ = ["role:admin", "user:u%d" % rng.randrange(users)], \
                    "assignment:responseChanged"
            plan.append((n, type_, to))

        def wanted(grants):
            return [n for n, _, to in plan if any(a in grants for a in (to or ["public"]))]

        async def client(sub, role, path="/ws/client"):
            ws = await self.connect(port, path=path, token=mint(sub, role), types="*")
            welcome = await recv_json(ws, 20)
            return ws, welcome["audiences"]

        async def collect(ws, count):
            got = [e["data"]["n"] for e in await events_until(ws, count, timeout=40)]
            extra = await no_more_events(ws, 0.5)
            await ws.close()
            return got, extra

        def rss_kib():
            with open("/proc/%d/status" % hub.process.pid) as status:
                return next(int(line.split()[1]) for line in status if line.startswith("VmRSS"))

        def cpu_seconds():
            with open("/proc/%d/stat" % hub.process.pid) as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

        async def scenario():
            before = rss_kib()
            connected = await asyncio.gather(*(client("u%d" % i, "startup")
                                               for i in range(users)))
            connected.append(await client("boss", "admin", "/ws/admin"))
            print("\n  hub RSS %d KiB before, %d KiB with %d connections (%.1f KiB each)"
                  % (before, rss_kib(), users + 1, (rss_kib() - before) / (users + 1)), end="")
            cpu = cpu_seconds()
            for n, type_, to in plan:
                push.send_multipart([type_.encode(), pack_event(type_, {"n": n}, to=to)])
            started = time.monotonic()
            results = await asyncio.gather(*(collect(ws, len(wanted(grants)))
                                             for ws, grants in connected))
            elapsed = time.monotonic() - started
            leaks = 0
            for (ws, grants), (got, extra) in zip(connected, results):
                self.assertIsNone(extra, "an event %s got nothing to do with" % grants)
                self.assertEqual(got, wanted(grants), grants)
                leaks += len(set(got) - set(wanted(grants)))
            delivered = sum(len(got) for got, _ in results)
            cpu_per_delivery = (cpu_seconds() - cpu) * 1e6 / delivered
            print("\n  %d users + 1 admin: %d events, %d deliveries in %.2f s, 0 leaks; hub CPU "
                  "%.1f us per delivery (routing included)"
                  % (users, len(plan), delivered, elapsed, cpu_per_delivery))
            self.assertEqual(leaks, 0)

        run(scenario(), timeout=60)

    def test_stalled_reader_is_cut_while_a_fast_reader_keeps_up(self):
        # send_buffer: the kernel's autotuned buffer could take a good part of the 4 MB burst
        hub, port = self.start("anonymous = true\nmax_queue = 100\nmax_queue_bytes = 262144\n"
                               "close_timeout = 1\nsend_buffer = 65536")
        push = hub.pusher()
        stalled = RawClient(port, "/ws/client?types=*", rcvbuf=4096)
        self.assertEqual(stalled.status, 101)
        count, payload = 2000, "x" * 2000

        def publisher():
            for n in range(count):
                push.send_multipart([b"signal:created", pack_event(
                    "signal:created", {"n": n, "pad": payload})])
                if n % 20 == 19:
                    time.sleep(0.02)

        async def scenario():
            async with self.connect(port, types="*") as fast:
                await recv_json(fast)
                thread = threading.Thread(target=publisher)
                thread.start()
                latencies, got = [], []
                while len(got) < count:
                    frame = await recv_json(fast, 10)
                    if frame["op"] == "event":  # ts: when the hub accepted the event
                        latencies.append(time.time() - frame["ts"] / 1e6)
                        got.append(frame["data"]["n"])
                thread.join()
                self.assertEqual(got, list(range(count)))
                return latencies

        latencies = run(scenario())
        latencies.sort()
        p50, p99 = latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.99)]
        print("\n  fast reader beside a stalled one: %d events, latency p50 %.2f ms, "
              "p99 %.2f ms, max %.2f ms" % (len(latencies), p50 * 1e3, p99 * 1e3,
                                            latencies[-1] * 1e3))
        # Speed is measured by bench/ws_fanout, not here: a latency bound failed on a loaded
        # machine with the sanitizer build (p99 7 s, the hub itself behind the publisher). The
        # conditions are that the fast reader got every event, in order, and was not cut, while
        # the stalled one was.
        # The stalled peer's queue overflowed (4008) long before the fast one got everything,
        # but its close is counted when the connection ends: after close_timeout, as it never
        # reads its close frame; on a loaded machine that can come after the fast reader's last
        # event (issue 21 #11). Wait for it.
        deadline = time.monotonic() + 15
        stats = self.stats(port)
        while stats["livehub_ws_connections"] != 0 or \
                stats["livehub_ws_closes_too_slow_total"] == 0:
            self.assertLess(time.monotonic(), deadline, stats)
            time.sleep(0.05)
            stats = self.stats(port)
        self.assertEqual(stats["livehub_ws_closes_too_slow_total"], 1)
        self.assertGreater(stats["livehub_ws_queue_drops_total"], 0)
        # the stalled peer finds its stream ended once it reads again
        deadline = time.monotonic() + 5
        with self.assertRaises((EOFError, ConnectionResetError)):
            while time.monotonic() < deadline:
                stalled.frame()
        stalled.close()

    def test_slow_reader_that_wakes_up_sees_4008_and_resumes(self):
        hub, port = self.start("anonymous = true\nmax_queue = 50\nclose_timeout = 5\n"
                               "send_buffer = 65536")
        push = hub.pusher()
        reader = RawClient(port, "/ws/client?types=*", rcvbuf=4096)
        welcome = json.loads(reader.frame()[1])
        for n in range(1500):
            push.send_multipart([b"signal:created",
                                 pack_event("signal:created", {"n": n, "pad": "y" * 1000})])
        deadline = time.monotonic() + 10
        while self.stats(port)["livehub_ws_closes_too_slow_total"] == 0:
            self.assertLess(time.monotonic(), deadline)
            time.sleep(0.05)
        events, close = [], None
        while close is None:
            opcode, data = reader.frame()
            if opcode == 8:
                close = (struct.unpack(">H", data[:2])[0], data[2:].decode())
            elif opcode == 1:
                events.append(json.loads(data))
        reader.close()
        self.assertEqual(close, (4008, "too slow"))
        ns = [e["data"]["n"] for e in events if e["op"] == "event"]
        self.assertEqual(ns, list(range(len(ns))), "what arrived came in order")
        last = [e for e in events if e["op"] == "event"][-1]["id"]

        async def resume():
            async with self.connect(port, types="*", since=last, epoch=welcome["epoch"]) as ws:
                await recv_json(ws)
                self.assertEqual((await recv_json(ws))["op"], "resumed")
                rest = [e["data"]["n"] for e in await events_until(ws, 1500 - len(ns))]
                self.assertEqual(rest, list(range(len(ns), 1500)))

        run(resume())

    def test_garbage_requests_are_dropped_without_flooding_the_log(self):
        hub, port = self.start("anonymous = true")
        junk = [b"GET /ws/client HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                b"Connection: nope\r\nSec-WebSocket-Key: abc\r\nSec-WebSocket-Version: 13\r\n\r\n",
                b"\x16\x03\x01\x00\xff" * 10, b"GARBAGE\r\n\r\n",
                b"GET / HTTP/1.1\r\nHost: " + b"a" * 20000 + b"\r\n\r\n"] * 10
        for request in junk:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(request)
                try:
                    self.assertFalse(sock.recv(200).startswith(b"HTTP/1.1 200"))
                except ConnectionResetError:
                    pass

        async def scenario():
            async with self.connect(port, types="*") as ws:
                await recv_json(ws)
                event_id = hub.publish("signal:created", {})
                self.assertEqual((await events_until(ws, 1))[0]["id"], event_id)

        run(scenario())
        self.assertLessEqual(hub.log().count("libwebsockets:"), 3, hub.log())

    # ---- heartbeats ----------------------------------------------------------------------------

    def test_heartbeats_keep_live_peers_and_close_dead_ones(self):
        hub, port = self.start("anonymous = true\nheartbeat = 1\nidle_timeout = 3")

        async def live_peer():
            # websockets answers pings by itself, like a browser: the connection stays
            async with self.connect(port) as ws:
                self.assertEqual((await recv_json(ws))["heartbeat"], 1)
                await asyncio.sleep(4.0)
                await ws.send(json.dumps({"op": "ping"}))
                self.assertEqual((await recv_op(ws, "pong"))["op"], "pong")

        dead = RawClient(port, "/ws/client")
        started = time.monotonic()
        run(live_peer())
        opcodes, close = [], None
        while close is None:
            opcode, data = dead.frame()
            opcodes.append(opcode)
            if opcode == 8:
                close = (struct.unpack(">H", data[:2])[0], data[2:].decode())
        dead.close()
        self.assertEqual(close, (4000, "idle timeout"))
        self.assertIn(9, opcodes, "the server pinged before giving up")
        self.assertLess(time.monotonic() - started, 8)

    # ---- HTTP --------------------------------------------------------------------------------

    def test_write_latency_histogram_counts_live_frames_of_both_protocols(self):
        """livehub_ws_write_latency_seconds observes each live event frame written to a socket,
        native and Socket.IO over an Engine.IO WebSocket; replayed events are not timed."""
        hub, port = self.start("anonymous = true")
        sent = 20

        async def scenario():
            async with self.connect(port, types="*") as native, websockets.connect(
                    "ws://127.0.0.1:%d/socket.io/?EIO=4&transport=websocket" % port,
                    ping_interval=None, close_timeout=2) as sio:
                self.assertEqual((await recv_json(native))["op"], "welcome")
                self.assertTrue((await asyncio.wait_for(sio.recv(), 5)).startswith("0{"))
                await sio.send("40/client,")
                self.assertTrue((await asyncio.wait_for(sio.recv(), 5)).startswith("40/client,"))
                ids = [hub.publish("signal:created", {"n": n}) for n in range(sent)]
                self.assertEqual([e["id"] for e in await events_until(native, sent)], ids)
                packets = []
                while len(packets) < sent:
                    packet = await asyncio.wait_for(sio.recv(), 5)
                    if packet.startswith("42/client,"):
                        packets.append(packet)
            # a resume replays them all from history: delivered, but not timed
            async with self.connect(port, types="*", since=0) as resumed:
                self.assertEqual((await recv_json(resumed))["op"], "welcome")
                self.assertEqual(len(await events_until(resumed, sent)), sent)

        run(scenario())
        deadline = time.time() + 5
        while True:  # observed right after the write, which the client may have read already
            stats = self.stats(port)
            if stats["livehub_ws_write_latency_seconds_count"] == 2 * sent:
                break
            self.assertLess(time.time(), deadline, stats)
            time.sleep(0.05)
        self.assertEqual(stats["livehub_ws_events_total"], 2 * sent + sent)
        self.assertTrue(0 < stats["livehub_ws_write_latency_seconds_sum"] < 2 * sent, stats)

    def test_static_files_with_content_types_and_no_traversal(self):
        www = tempfile.mkdtemp(prefix="livehub-www-")
        files = {"index.html": "text/html; charset=utf-8", "livehub.js": "text/javascript",
                 "app.css": "text/css; charset=utf-8", "data.json": "application/json",
                 "logo.svg": "image/svg+xml", "blob.bin": "application/octet-stream"}
        for name in files:
            with open(os.path.join(www, name), "w") as out:
                out.write("content of %s\n" % name)
        os.mkdir(os.path.join(www, "sub"))
        with open(os.path.join(www, "sub", "index.html"), "w") as out:
            out.write("sub index\n")
        with open(os.path.join(www, ".secret"), "w") as out:
            out.write("hidden\n")
        os.symlink("/etc/passwd", os.path.join(www, "passwd"))
        hub, port = self.start("www = %s" % www)
        for name, content_type in files.items():
            status, got_type, body = http_get(port, "/" + name)
            self.assertEqual(status, 200, name)
            self.assertTrue(got_type.startswith(content_type), (name, got_type))
            self.assertEqual(body.decode(), "content of %s\n" % name)
        self.assertEqual(http_get(port, "/")[2].decode(), "content of index.html\n")
        self.assertEqual(http_get(port, "/sub/")[2].decode(), "sub index\n")
        for path in ("/../../../../etc/passwd", "/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
                     "/..%2f..%2f..%2fetc%2fpasswd", "/sub/../../../etc/passwd", "/passwd",
                     "/.secret", "/%2esecret", "//etc/passwd", "/sub/..%5c..%5cetc/passwd",
                     "/nothing-here", "/ws/client"):
            status, _, body = http_get(port, path)
            self.assertIn(status, (400, 403, 404), path)
            self.assertNotIn(b"root:", body, path)
            self.assertNotIn(b"hidden", body, path)

    def test_bundled_page_is_served_by_default(self):
        hub, port = self.start(stats=False)
        status, content_type, body = http_get(port, "/")
        self.assertEqual((status, content_type), (200, "text/html; charset=utf-8"))
        self.assertIn(b"livehub", body)
        self.assertEqual(http_get(port, "/stats")[0], 404, "no stats unless configured")

    def test_tls(self):
        folder = tempfile.mkdtemp(prefix="livehub-tls-")
        cert, key = os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                        "-subj", "/CN=127.0.0.1", "-keyout", key, "-out", cert],
                       check=True, capture_output=True)
        hub, port = self.start("tls_cert = %s\ntls_key = %s\nanonymous = true" % (cert, key))
        context = ssl.create_default_context(cafile=cert)
        context.check_hostname = False

        async def scenario():
            async with websockets.connect("wss://127.0.0.1:%d/ws/client?types=*" % port,
                                          ssl=context) as ws:
                self.assertEqual((await recv_json(ws))["op"], "welcome")
                event_id = hub.publish("signal:created", {"secure": True})
                self.assertEqual((await events_until(ws, 1))[0]["id"], event_id)

        run(scenario())

    def test_reload_hands_over_without_losing_events(self):
        hub, port = self.start("anonymous = true")
        push = hub.pusher()
        sent, done = [], threading.Event()

        def publisher():
            for n in range(400):
                push.send_multipart([b"signal:created", pack_event("signal:created", {"n": n})])
                sent.append(n)
                time.sleep(0.002)
            done.set()

        async def scenario():
            ws = await self.connect(port, types="*")
            welcome = await recv_json(ws)
            thread = threading.Thread(target=publisher)
            thread.start()
            got, last = [], None
            while len(got) < 50:
                frame = await recv_json(ws)
                got.append(frame["data"]["n"])
                last = frame["id"]
            # a changed option restarts the stage; the new instance listens beside the old one
            # (SO_REUSEPORT) until the old one has closed its connections with 1001
            with open(hub.conf_path) as conf:
                text = conf.read()
            with open(hub.conf_path, "w") as conf:
                conf.write(text.replace("anonymous = true", "anonymous = true\n"
                                                            "        heartbeat = 20"))
            self.assertEqual(hub.control(b"RELOAD")[0], b"OK")
            try:
                while True:
                    frame = await recv_json(ws)
                    got.append(frame["data"]["n"])
                    last = frame["id"]
            except websockets.ConnectionClosed:
                self.assertEqual((ws.close_code, ws.close_reason), (1001, "going away"))
            for attempt in range(50):  # a connection may land on the stopping instance
                try:
                    ws = await self.connect(port, types="*", since=last, epoch=welcome["epoch"])
                    if (await recv_json(ws))["heartbeat"] == 20:
                        break
                except (websockets.InvalidStatusCode, websockets.ConnectionClosed, OSError):
                    pass
                await asyncio.sleep(0.05)
            await loop_run(thread.join)
            while len(got) < 400:
                frame = await recv_json(ws)
                if frame["op"] == "event":
                    got.append(frame["data"]["n"])
            self.assertEqual(got, list(range(400)))
            await ws.close()

        async def loop_run(fn):
            await asyncio.get_running_loop().run_in_executor(None, fn)

        run(scenario())

    # ---- stop ----------------------------------------------------------------------------------

    def test_stop_flushes_and_closes_every_websocket_with_1001(self):
        hub, port = self.start("anonymous = true")

        async def scenario():
            clients = [await self.connect(port, types="*") for _ in range(5)]
            for ws in clients:
                await recv_json(ws)
            ids = [hub.publish("signal:created", {"n": n}) for n in range(50)]
            stopper = threading.Thread(target=hub.stop)
            stopper.start()
            for ws in clients:
                got = []
                try:
                    while True:
                        frame = await recv_json(ws, 10)
                        got.append(frame["id"])
                except websockets.ConnectionClosed:
                    pass
                self.assertEqual(got, ids, "everything routed before the stop is flushed")
                self.assertEqual((ws.close_code, ws.close_reason), (1001, "going away"))
            await asyncio.get_running_loop().run_in_executor(None, stopper.join)

        run(scenario())
        self.assertEqual(hub.process.returncode, 0)
        self.assertIn("closing 5 WebSocket(s) with 1001", hub.log())


if __name__ == "__main__":
    unittest.main()
