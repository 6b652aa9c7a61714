"""Socket.IO compatibility of the websocket sink (docs/SOCKETIO.md), proven with the real
socket.io-client 4.x: tests/socketio/client_test.js runs against the hub, and the very same
script runs against a reference socket.io 4.x server (tests/socketio/reference_server.js) with
the same namespaces, auth and history semantics, so the script is the constant."""
import asyncio
import http.server
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import threading
import time
import unittest
import urllib.error
import urllib.request

import websockets

from hubtest import HubTestCase, free_port
from test_websocket import SECRET, SECRET_ENV, mint

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SIO_DIR = os.path.join(ROOT, "tests", "socketio")
NODE = shutil.which("node")
HISTORY = 8


def node_ready():
    return NODE and os.path.isdir(os.path.join(SIO_DIR, "node_modules", "socket.io-client"))


class PublishServer:
    """POST {type, data, to} -> hub.publish: how client_test.js makes the hub emit events."""

    def __init__(self, hub):
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                hub.publish(body["type"], body.get("data"), to=body.get("to") or None)
                self.send_response(200)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d/publish" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def run_script(url, publish_url):
    env = dict(os.environ, SIO_URL=url, PUBLISH_URL=publish_url, HISTORY=str(HISTORY),
               ADMIN_TOKEN=mint("1", "admin"), CLIENT_TOKEN=mint("7", "startup"))
    return subprocess.run([NODE, os.path.join(SIO_DIR, "client_test.js")], env=env,
                          capture_output=True, text=True, timeout=120)


class EngineIOWireTest(HubTestCase):
    """Engine.IO bytes without a client library: open packet, JSON errors, batches, 413."""

    def test_polling_wire_format(self):
        port = free_port()
        self.hub(chains="chain = web\n    sink = ws\n        plugin = websocket\n"
                 "        listen = 127.0.0.1:%d\n" % port, env=SECRET_ENV,
                 hub_extra="token_secret = env:LIVEHUB_WS_TEST_SECRET").wait_running("ws")

        def request(path, data=None):
            try:
                with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), data=data,
                                            timeout=5) as response:
                    return response.status, response.headers["content-type"], response.read()
            except urllib.error.HTTPError as error:
                return error.code, error.headers["content-type"], error.read()

        json_type = "application/json"
        self.assertEqual(request("/socket.io/?transport=polling"),
                         (400, json_type, b'{"code":5,"message":"Unsupported protocol version"}'))
        self.assertEqual(request("/socket.io/?EIO=4&transport=polling&sid=nope"),
                         (400, json_type, b'{"code":1,"message":"Session ID unknown"}'))
        self.assertEqual(request("/socket.io/?EIO=4&transport=carrier-pigeon"),
                         (400, json_type, b'{"code":0,"message":"Transport unknown"}'))
        status, content_type, body = request("/socket.io/?EIO=4&transport=polling&t=x")
        self.assertEqual((status, content_type), (200, "text/plain; charset=UTF-8"))
        self.assertEqual(body[:1], b"0")
        opened = json.loads(body[1:])
        self.assertEqual(list(opened), ["sid", "upgrades", "pingInterval", "pingTimeout",
                                        "maxPayload"])
        self.assertEqual(opened["upgrades"], ["websocket"])
        query = "/socket.io/?EIO=4&transport=polling&sid=" + opened["sid"]
        self.assertEqual(request(query, b'40/nope,\x1e40/admin,{"token":"x"}'),
                         (200, "text/html", b"ok"))
        self.assertEqual(request(query)[2],
                         b'44/nope,{"message":"Invalid namespace"}\x1e44/admin,{"message":'
                         b'"unauthorized: malformed token: expected header.payload.signature",'
                         b'"data":{"code":4001}}')
        self.assertEqual(request(query, b"4" * 9000)[0], 413)  # over maxPayload (max_frame)

    def test_root_namespace_overlapping_polls_and_refused_upgrades(self):
        """Issue 21 #12, on the wire: the root namespace's refusal has no prefix (it was
        44//,... which socket.io-parser reads as namespace "//"); a second GET while one is held
        ends the session and the held one gets the close packet (it got no HTTP answer at
        all); a refused upgrade gets the reference server's JSON error body (it got text)."""
        port = free_port()
        self.hub(chains="chain = web\n    sink = ws\n        plugin = websocket\n"
                 "        listen = 127.0.0.1:%d\n" % port, env=SECRET_ENV,
                 hub_extra="token_secret = env:LIVEHUB_WS_TEST_SECRET").wait_running("ws")

        def raw(request_text, timeout=10):
            """(status, content type, body) of one raw HTTP request on its own connection."""
            with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
                sock.sendall(request_text.encode())
                data = b""
                while True:
                    head, _, body = data.partition(b"\r\n\r\n")
                    size = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
                    if _ and size and len(body) >= int(size.group(1)):
                        break
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            if not head:
                return None, None, b""
            kind = re.search(rb"(?i)\r\ncontent-type: *([^\r]*)", head)
            return int(head.split(b" ")[1]), kind and kind.group(1).decode(), body

        def get(path):
            return raw("GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path)

        def post(path, body):
            return raw("POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
                       "Content-Length: %d\r\n\r\n%s" % (path, len(body), body))

        sid = json.loads(get("/socket.io/?EIO=4&transport=polling")[2][1:])["sid"]
        query = "/socket.io/?EIO=4&transport=polling&sid=" + sid
        self.assertEqual(post(query, "40")[2], b"ok")
        self.assertEqual(get(query)[2], b'44{"message":"Invalid namespace"}')
        # two GETs at once: whichever comes second gets 400, the held one the close packet
        answers = []
        threads = [threading.Thread(target=lambda: answers.append(get(query)))
                   for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        self.assertEqual(sorted((status, body) for status, _, body in answers),
                         [(200, b"1"), (400, b'{"code":3,"message":"Bad request"}')])
        self.assertEqual(get(query)[2], b'{"code":1,"message":"Session ID unknown"}')
        # refused upgrades: the reference server's codes and messages, as JSON
        upgrade = ("GET /socket.io/?%s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                   "Sec-WebSocket-Version: 13\r\n\r\n")
        json_type = "application/json"
        self.assertEqual(raw(upgrade % "EIO=4&transport=websocket&sid=nope"),
                         (400, json_type, b'{"code":1,"message":"Session ID unknown"}'))
        self.assertEqual(raw(upgrade % "EIO=3&transport=websocket"),
                         (400, json_type, b'{"code":5,"message":"Unsupported protocol version"}'))
        self.assertEqual(raw(upgrade % "EIO=4&transport=polling"),
                         (400, json_type, b'{"code":0,"message":"Transport unknown"}'))


    def test_empty_post_and_token_exp_near_int64_max(self):
        """Issue 21 #7: an empty POST reached memcpy(dst, NULL, 0), and a token with exp near
        INT64_MAX overflowed expires + clock_skew (UB: the sanitizer build aborted; the
        optimised one disconnected the socket at the next check)."""
        port = free_port()
        hub = self.hub(chains="chain = web\n    sink = ws\n        plugin = websocket\n"
                       "        listen = 127.0.0.1:%d\n        socketio_ping_interval = 1\n"
                       % port, env=SECRET_ENV,
                       hub_extra="token_secret = env:LIVEHUB_WS_TEST_SECRET")
        hub.wait_running("ws")

        def request(path, data=None):
            with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), data=data,
                                        timeout=10) as response:
                return response.status, response.read()

        status, body = request("/socket.io/?EIO=4&transport=polling")
        query = "/socket.io/?EIO=4&transport=polling&sid=" + json.loads(body[1:])["sid"]
        self.assertEqual(request(query, b""), (200, b"ok"))
        far = 2 ** 63 - 1
        token = mint("9", "startup", ttl=far - int(time.time()))
        self.assertEqual(request(query, b'40/client,{"token":"%s"}' % token.encode()),
                         (200, b"ok"))
        self.assertTrue(request(query)[1].startswith(b'40/client,{"sid":'))
        # each Engine.IO ping comes from the once-a-second check that also tests expiry
        pings = 0
        while pings < 2:
            packets = request(query)[1].split(b"\x1e")
            self.assertNotIn(b"41/client,", packets)
            if b"2" in packets:
                pings += 1
                self.assertEqual(request(query, b"3"), (200, b"ok"))
        event_id = hub.publish("signal:created", {"n": 1})
        packets = []
        while not any(p.startswith(b"42/client,") for p in packets):
            packets = request(query)[1].split(b"\x1e")
            self.assertNotIn(b"41/client,", packets)
        self.assertIn(b'"%d"]' % event_id, b"".join(packets))


    def test_ping_frames_beyond_ping_rate_end_the_session(self):
        """Issue 21 #7: ping frames on the Engine.IO WebSocket transport were answered without
        bound (libwebsockets answers them itself); over ping_rate the session ends."""
        port = free_port()
        self.hub(chains="chain = web\n    sink = ws\n        plugin = websocket\n"
                 "        listen = 127.0.0.1:%d\n        ping_rate = 10\n" % port, env=SECRET_ENV,
                 hub_extra="token_secret = env:LIVEHUB_WS_TEST_SECRET").wait_running("ws")
        url = "ws://127.0.0.1:%d/socket.io/?EIO=4&transport=websocket" % port

        async def scenario():
            async with websockets.connect(url, ping_interval=None, close_timeout=2) as ws:
                self.assertTrue((await asyncio.wait_for(ws.recv(), 10)).startswith("0{"))
                deadline, waiters = time.monotonic() + 10, []
                while not ws.closed and time.monotonic() < deadline and len(waiters) < 200000:
                    try:
                        waiters.append(await ws.ping(struct.pack(">I", len(waiters))))
                    except websockets.ConnectionClosed:
                        break
                    if len(waiters) % 100 == 0:
                        await asyncio.sleep(0)
                try:
                    while True:
                        await asyncio.wait_for(ws.recv(), 10)
                except websockets.ConnectionClosed:
                    pass
                except asyncio.TimeoutError:
                    self.fail("%d ping frames and the session goes on" % len(waiters))
                for waiter in waiters:
                    if waiter.done() and not waiter.cancelled():
                        waiter.exception()
            # a session within the rate goes on
            async with websockets.connect(url, ping_interval=None, close_timeout=2) as ws:
                await asyncio.wait_for(ws.recv(), 10)
                await ws.send('40/client,{"token":"%s"}' % mint("7", "startup"))
                self.assertTrue((await asyncio.wait_for(ws.recv(), 10))
                                .startswith('40/client,{"sid":'))
                for n in range(8):
                    await asyncio.wait_for(await ws.ping(struct.pack(">Q", n)), 5)
                    await asyncio.sleep(0.25)
                self.assertFalse(ws.closed)

        asyncio.run(asyncio.wait_for(scenario(), 60))


class SocketIOTest(HubTestCase):
    def setUp(self):
        super().setUp()
        if not node_ready():  # a missing client is a failure, not a skip (as test_browser)
            self.fail("no node or tests/socketio/node_modules: run scripts/dev deps")

    def test_socketio_client_against_livehub(self):
        port = free_port()
        chains = ("chain = web\n    sink = ws\n        plugin = websocket\n"
                  "        listen = 127.0.0.1:%d\n" % port)
        hub = self.hub(chains=chains, env=SECRET_ENV,
                       hub_extra="token_secret = env:LIVEHUB_WS_TEST_SECRET\nhistory = %d"
                       % HISTORY)
        hub.wait_running("ws")
        publisher = PublishServer(hub)
        try:
            result = run_script("http://127.0.0.1:%d" % port, publisher.url)
        finally:
            publisher.close()
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr + hub.log()[-4000:])
        self.assertIn("all 9 passed", result.stdout)

    def test_same_script_against_reference_socketio_server(self):
        server = subprocess.Popen([NODE, os.path.join(SIO_DIR, "reference_server.js")],
                                  env=dict(os.environ, SECRET=SECRET, HISTORY=str(HISTORY)),
                                  stdout=subprocess.PIPE, text=True)
        try:
            line = server.stdout.readline()
            self.assertTrue(line.startswith("listening "), line)
            url = "http://127.0.0.1:%d" % int(line.split()[1])
            result = run_script(url, url + "/publish")
        finally:
            server.terminate()
            server.wait(10)
            server.stdout.close()
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn("all 9 passed", result.stdout)


if __name__ == "__main__":
    unittest.main()
