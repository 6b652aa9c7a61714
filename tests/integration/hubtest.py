"""Test fixture: boots a real livehubd on loopback with a generated conf and talks to it as any
ZeroMQ client would (pyzmq + msgpack from Debian). Used by every integration test."""
import itertools
import json
import os
import random
import signal
import socket
import subprocess
import tempfile
import time
import unittest

import msgpack
import zmq

BUILD_DIR = os.environ.get("LIVEHUB_BUILD_DIR", os.path.join(os.path.dirname(__file__), "../../build"))
SOURCE_DIR = os.environ.get("LIVEHUB_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "../.."))
LIVEHUBD = os.path.join(BUILD_DIR, "core", "livehubd")
LIVEHUB_CLI = os.path.join(BUILD_DIR, "core", "livehub")
PLUGIN_DIR = os.path.join(BUILD_DIR, "plugins-out")
TEST_PLUGIN_DIR = os.path.join(BUILD_DIR, "tests", "plugins-out")
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")

_counter = itertools.count()
CONTEXT = zmq.Context.instance()


def free_port():
    """A port that is free now, drawn at random below the kernel's ephemeral range: ports the kernel
    hands out (port 0, client connections) are what parallel tests would collide with."""
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(20000, 32000)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port found")


def pack_event(type_, data=None, to=None, key=None, **extra):
    """The body an external producer sends (DESIGN §3)."""
    body = {"v": 1, "type": type_, "data": data}
    if to is not None:
        body["to"] = to
    if key is not None:
        body["key"] = key
    body.update(extra)
    return msgpack.packb(body, use_bin_type=True)


def unpack(body):
    return msgpack.unpackb(body, raw=False)


class Subscriber:
    """A SUB on the hub's egress whose subscriptions are known to be active (the $hello
    handshake), so no event published after construction can be missed."""

    def __init__(self, endpoint, prefixes=("",), curve=None, hello_timeout=10.0):
        self.socket = CONTEXT.socket(zmq.SUB)
        self.socket.linger = 0
        self.socket.rcvhwm = 1000000
        if curve:
            public, secret, server = curve
            self.socket.curve_publickey, self.socket.curve_secretkey = public, secret
            self.socket.curve_serverkey = server
        for prefix in prefixes:
            self.socket.setsockopt(zmq.SUBSCRIBE, prefix.encode())
        self.hello_topic = "$hello/test/%d" % next(_counter)
        self.socket.setsockopt(zmq.SUBSCRIBE, self.hello_topic.encode())
        self.socket.connect(endpoint)
        self.hello = None
        deadline = time.time() + hello_timeout
        while self.hello is None:
            if not self.socket.poll(max(0, int((deadline - time.time()) * 1000))):
                self.socket.close()
                raise AssertionError("no $hello answer from the hub's egress")
            topic, body = self.socket.recv_multipart()
            if topic.decode() == self.hello_topic:
                self.hello = unpack(body)["data"]

    def recv(self, timeout=5.0):
        """The next non-$ event as a dict, or None on timeout."""
        deadline = time.time() + timeout
        while True:
            remaining = deadline - time.time()
            if remaining <= 0 or not self.socket.poll(int(remaining * 1000)):
                return None
            topic, body = self.socket.recv_multipart()
            if topic.startswith(b"$"):
                continue
            event = unpack(body)
            assert event["type"] == topic.decode()
            return event

    def recv_n(self, count, timeout=10.0):
        events, deadline = [], time.time() + timeout
        while len(events) < count:
            event = self.recv(max(0.0, deadline - time.time()))
            if event is None:
                break
            events.append(event)
        return events

    def close(self):
        self.socket.close()


class Hub:
    """One livehubd process with its own conf, endpoints and log."""

    def __init__(self, chains="", hub_extra="", plugin_dirs=None, env=None, ingress=True,
                 egress=True, start=True):
        self.dir = tempfile.mkdtemp(prefix="livehub-test-")
        self.ingress = "tcp://127.0.0.1:%d" % free_port() if ingress else None
        self.egress = "tcp://127.0.0.1:%d" % free_port() if egress else None
        self.control_endpoint = "ipc://%s/control" % self.dir  # a 0700 directory (mkdtemp)
        self.plugin_dirs = plugin_dirs or [PLUGIN_DIR, TEST_PLUGIN_DIR]
        self.hub_extra = hub_extra
        self.conf_path = os.path.join(self.dir, "livehub.conf")
        self.log_path = os.path.join(self.dir, "livehubd.log")
        self.env = dict(os.environ, **(env or {}))
        self.process = None
        self.sockets = []  # closed by stop()
        self.write_conf(chains)
        if start:
            self.start()

    def conf_text(self, chains):
        lines = ["hub", "    name = test",
                 "    control = %s" % self.control_endpoint,
                 "    plugin_dir = %s" % ":".join(self.plugin_dirs)]
        if self.ingress:
            lines.append("    ingress = %s" % self.ingress)
        if self.egress:
            lines.append("    egress = %s" % self.egress)
        lines += ["    " + line for line in self.hub_extra.strip("\n").splitlines() if line.strip()]
        return "\n".join(lines) + "\n" + chains.strip("\n") + "\n"

    def write_conf(self, chains):
        with open(self.conf_path, "w") as conf:
            conf.write(self.conf_text(chains))

    def start(self, wait=True):
        self.log_file = open(self.log_path, "ab")
        self.process = subprocess.Popen([LIVEHUBD, self.conf_path], stdout=self.log_file,
                                        stderr=subprocess.STDOUT, env=self.env)
        if wait:
            deadline = time.time() + 20
            while True:
                if self.process.poll() is not None:
                    raise AssertionError("livehubd exited with %s:\n%s"
                                         % (self.process.returncode, self.log()))
                try:
                    if self.control(b"PING", timeout=0.5) == [b"PONG"]:
                        break
                except TimeoutError:
                    pass
                if time.time() > deadline:
                    raise AssertionError("livehubd did not answer PING:\n" + self.log())

    def log(self):
        with open(self.log_path, "rb") as log:
            return log.read().decode(errors="replace")

    def wait_log(self, text, timeout=10.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if text in self.log():
                return True
            time.sleep(0.05)
        raise AssertionError("%r never appeared in the hub's log:\n%s" % (text, self.log()))

    def control(self, *frames, timeout=5.0):
        dealer = CONTEXT.socket(zmq.DEALER)
        dealer.linger = 0
        dealer.connect(self.control_endpoint)
        try:
            dealer.send_multipart([f if isinstance(f, bytes) else str(f).encode() for f in frames])
            if not dealer.poll(int(timeout * 1000)):
                raise TimeoutError("no control reply")
            return dealer.recv_multipart()
        finally:
            dealer.close()

    def status(self):
        reply = self.control(b"STATUS")
        assert reply[0] == b"OK", reply
        return json.loads(reply[1])

    def stage(self, name):
        return next(s for s in self.status()["stages"] if s["name"] == name)

    def wait_running(self, stage, timeout=10.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if all(w["state"] == "running" for w in self.stage(stage)["workers"]):
                return
            time.sleep(0.05)
        raise AssertionError("stage %s not running: %s" % (stage, self.stage(stage)))

    def publish(self, type_, data=None, to=None, key=None):
        """PUBLISH through the control endpoint; returns the new id (0: duplicate dropped)."""
        reply = self.control(b"PUBLISH", type_.encode(), pack_event(type_, data, to, key))
        if reply[0] != b"OK":
            raise ValueError(reply[1].decode())
        return int(reply[1])

    def pusher(self, curve=None):
        push = CONTEXT.socket(zmq.PUSH)
        push.linger = 5000
        if curve:
            public, secret, server = curve
            push.curve_publickey, push.curve_secretkey = public, secret
            push.curve_serverkey = server
        push.connect(self.ingress)
        self.sockets.append(push)
        return push

    def subscriber(self, *prefixes, curve=None, hello_timeout=10.0):
        subscriber = Subscriber(self.egress, prefixes or ("",), curve=curve,
                                hello_timeout=hello_timeout)
        self.sockets.append(subscriber.socket)
        return subscriber

    def replay(self, since, epoch="", prefixes=(), batch=1000):
        reply = self.control(b"REPLAY", epoch, since, batch, *prefixes)
        status, meta = reply[0].decode(), json.loads(reply[1]) if len(reply) > 1 else None
        events = [unpack(body) for body in reply[3::2]]
        return status, meta, events

    def signal(self, signum):
        self.process.send_signal(signum)

    def stop(self, timeout=30.0, check=True):
        """SIGTERM, wait, and insist on a clean exit: status 0 and no sanitizer report."""
        for sock in self.sockets:
            sock.close(linger=0)
        self.sockets = []
        if self.process is None:
            return 0  # never started
        if self.process.poll() is not None:
            code = self.process.returncode
        else:
            self.process.send_signal(signal.SIGTERM)
            try:
                code = self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AssertionError("livehubd did not stop within %ss:\n%s" % (timeout, self.log()))
        self.log_file.close()
        log = self.log()
        if check:
            marks = [mark for mark in SANITIZER_MARKS if mark in log]
            if code != 0 or marks:
                raise AssertionError("livehubd exited %s %s:\n%s" % (code, marks, log))
        return code


class HubTestCase(unittest.TestCase):
    """Starts hubs through self.hub(...) and stops every one cleanly at the end of the test."""

    def setUp(self):
        self.hubs = []

    def hub(self, *args, **kwargs):
        hub = Hub(*args, **kwargs)
        self.hubs.append(hub)
        return hub

    def tearDown(self):
        errors = []
        for hub in self.hubs:
            try:
                hub.stop()
            except AssertionError as error:
                errors.append(str(error))
        if errors:
            self.fail("\n".join(errors))
