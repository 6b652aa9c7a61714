"""The journal and history keep their promises: an event a client received or a publisher was told
was accepted survives a kill -9 of the hub, no id is ever given to two events (ephemeral ones
included), history is bounded in bytes as well as count, and the default conf's metrics:update
events are not kept for resume."""
import http.client
import json
import os
import re
import signal
import subprocess
import threading
import time
import unittest

import zmq

import hubtest

from hubtest import (CONTEXT, LIVEHUBD, PLUGIN_DIR, Hub, HubTestCase, free_port, pack_event,
                     unpack)

ROUNDS = 8
ROUND_EVENTS_MAX = 6000  # per producer per round
ROUND_SECONDS_MAX = 30.0


def replay_all(hub, epoch):
    """Every event history holds, as {id: (topic, body bytes)}, through batched REPLAY."""
    events, since = {}, 0
    for _ in range(1000):
        reply = hub.control(b"REPLAY", epoch, since, 10000, timeout=20.0)
        status, meta = reply[0].decode(), json.loads(reply[1])
        if status != "OK":
            raise AssertionError("REPLAY from %d answered %s %s" % (since, status, meta))
        for topic, body in zip(reply[2::2], reply[3::2]):
            event_id = unpack(body)["id"]
            if event_id in events:
                raise AssertionError("id %d replayed twice" % event_id)
            events[event_id] = (topic, body)
        since = meta["scanned_to"]
        if not meta["more"]:
            return events
    raise AssertionError("REPLAY never finished")


HTTP_KEY = "durability-key-0123456789"
HTTP_CHAIN = """
chain = backend
    source = api
        plugin = http_publish
        listen = 127.0.0.1:%d
        keys = env:LIVEHUB_DURABILITY_KEYS
"""


class Round:
    """One life of the hub under load: a SUB recording what it receives, a control DEALER
    publishing with up to 4 requests in flight and an HTTP client POSTing to http_publish (the
    lh_io_publish path), both recording what was acknowledged, and a PUSH producer mixing
    journaled and ephemeral events."""

    def __init__(self, hub, number, http_port):
        self.hub, self.number, self.http_port = hub, number, http_port
        self.stop = threading.Event()
        self.received = []  # (id, topic, body bytes) in arrival order
        self.acked = {}  # id -> data sent
        self.subscriber = hub.subscriber("durable:", "tick:")
        self.threads = [threading.Thread(target=self.receive), threading.Thread(target=self.publish),
                        threading.Thread(target=self.push), threading.Thread(target=self.post)]
        self.deadline = time.time() + ROUND_SECONDS_MAX
        for thread in self.threads:
            thread.start()

    def receive(self):
        socket = self.subscriber.socket
        while not self.stop.is_set() and time.time() < self.deadline:
            if not socket.poll(50):
                continue
            topic, body = socket.recv_multipart()
            if not topic.startswith(b"$"):
                self.received.append((unpack(body)["id"], topic, body))

    def publish(self):
        dealer = CONTEXT.socket(zmq.DEALER)
        dealer.linger = 0
        dealer.connect(self.hub.control_endpoint)
        sent, in_flight = 0, []
        while not self.stop.is_set() and time.time() < self.deadline:
            while len(in_flight) < 4 and sent < ROUND_EVENTS_MAX:
                data = {"round": self.number, "acked": sent}
                dealer.send_multipart([b"PUBLISH", b"durable:acked",
                                       pack_event("durable:acked", data)])
                in_flight.append(data)
                sent += 1
            if not dealer.poll(50):
                continue
            reply = dealer.recv_multipart()
            data = in_flight.pop(0)
            if reply[0] == b"OK":
                self.acked[int(reply[1])] = data
        dealer.close(linger=0)

    def push(self):
        push = CONTEXT.socket(zmq.PUSH)
        push.linger = 0
        push.sndhwm = 1000
        push.connect(self.hub.ingress)
        for n in range(ROUND_EVENTS_MAX):
            if self.stop.is_set() or time.time() > self.deadline:
                break
            # three ephemeral events for one journaled: the newest id at the kill is often one
            topic = "durable:pushed" if n % 4 == 0 else "tick:beat"
            try:
                push.send_multipart([topic.encode(), pack_event(topic, {"round": self.number,
                                                                        "pushed": n})],
                                    zmq.NOBLOCK)
            except zmq.Again:
                time.sleep(0.001)
            if n % 4 == 3:
                time.sleep(0.001)  # a paced stream the subscriber keeps up with, so that what
                # it has received at the kill reaches the router's newest events
        push.close(linger=0)

    def post(self):
        headers = {"Authorization": "Bearer " + HTTP_KEY, "Content-Type": "application/json"}
        connection, sent = None, 0
        while not self.stop.is_set() and time.time() < self.deadline and sent < ROUND_EVENTS_MAX:
            events = [{"type": "durable:http", "data": {"round": self.number, "http": sent + i}}
                      for i in range(4)]
            try:
                if connection is None:
                    connection = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=5)
                connection.request("POST", "/v1/publish", body=json.dumps(events), headers=headers)
                response = connection.getresponse()
                answer = json.loads(response.read())
            except (OSError, http.client.HTTPException, ValueError):
                if connection is not None:
                    connection.close()
                connection = None  # not up yet, or killed: nothing was acknowledged
                time.sleep(0.01)
                continue
            if response.status == 200:
                for event_id, event in zip(answer["ids"], events):
                    self.acked[event_id] = event["data"]
            sent += len(events)
            time.sleep(0.002)
        if connection is not None:
            connection.close()

    def wait_received(self, count):
        while len(self.received) < count:
            if time.time() > self.deadline:
                raise AssertionError("round %d: only %d of %d events received"
                                     % (self.number, len(self.received), count))
            time.sleep(0.002)

    def finish(self):
        self.stop.set()
        for thread in self.threads:
            thread.join()
        self.subscriber.close()


class DurabilityTest(HubTestCase):
    def test_kill_9_mid_burst_loses_no_delivered_or_acked_event_and_reuses_no_id(self):
        hub = self.hub(start=False, env={"LIVEHUB_DURABILITY_KEYS": HTTP_KEY})
        journal = os.path.join(hub.dir, "journal")
        http_port = free_port()
        base_extra = "journal = %s\nhistory = 400000\nephemeral = tick:" % journal
        hub.hub_extra = base_extra
        hub.write_conf(HTTP_CHAIN % http_port)
        hub.start()
        epoch = hub.status()["epoch"]
        seen = {}  # id -> body: every event any client saw, over every round
        ephemeral_ids = set()
        acked_data = []
        for number in range(ROUNDS):
            this_round = Round(hub, number, http_port)
            this_round.wait_received(300 + 400 * number)
            hub.process.send_signal(signal.SIGKILL)  # mid-burst: the producers are still going
            hub.process.wait()
            this_round.finish()
            hub.log_file.close()
            # every other life syncs each batch (journal_sync = batch, which also takes bigger
            # batches): a process crash must lose nothing under either policy
            hub.hub_extra = base_extra + ("\njournal_sync = batch" if number % 2 == 0 else "")
            hub.write_conf(HTTP_CHAIN % http_port)
            hub.start()
            self.assertEqual(hub.status()["epoch"], epoch, "the journal keeps the epoch")
            kept = replay_all(hub, epoch)
            for event_id, topic, body in this_round.received:
                if event_id in seen:
                    self.assertEqual(seen[event_id], body,
                                     "round %d: id %d was given to two events" % (number, event_id))
                seen[event_id] = body
                if topic == b"tick:beat":
                    ephemeral_ids.add(event_id)
                    self.assertFalse(event_id in kept, "an ephemeral event's id holds no event")
                else:
                    self.assertTrue(event_id in kept, "round %d: delivered event %d is not in the "
                                  "journal after kill -9" % (number, event_id))
                    self.assertEqual(kept[event_id][1], body, "identical content")
            acked_data += this_round.acked.values()
            for event_id, data in this_round.acked.items():
                self.assertTrue(event_id in kept, "round %d: acknowledged event %d is not in the "
                              "journal after kill -9" % (number, event_id))
                self.assertEqual(unpack(kept[event_id][1])["data"], data)
            for event_id, (topic, body) in kept.items():
                if event_id in seen:
                    self.assertEqual(seen[event_id], body, "id %d reused after a restart"
                                     % event_id)
                self.assertFalse(event_id in ephemeral_ids, "id %d of an ephemeral event reused"
                                 % event_id)
        self.assertGreater(len(ephemeral_ids), 0)
        self.assertTrue(any(data.get("http") is not None for data in acked_data),
                        "http_publish acknowledged events")
        hub.stop()

    def test_a_journal_that_cannot_be_written_refuses_the_batch_and_keeps_the_file_whole(self):
        hub = self.hub(start=False)
        journal = os.path.join(hub.dir, "journal")
        hub.hub_extra = "journal = %s" % journal
        hub.write_conf("")
        # the hub under a 64 KiB file size limit: a write past it fails with EFBIG, as on a full
        # disk (SIGXFSZ ignored, so the write returns the error instead of ending the process)
        wrapper = os.path.join(hub.dir, "livehubd-fsize")
        with open(wrapper, "w") as script:
            script.write("#!/usr/bin/python3\nimport os, resource, signal, sys\n"
                         "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
                         "resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))\n"
                         "os.execv(%r, [%r] + sys.argv[1:])\n" % (LIVEHUBD, LIVEHUBD))
        os.chmod(wrapper, 0o755)
        hubtest.LIVEHUBD = wrapper
        try:
            hub.start()
        finally:
            hubtest.LIVEHUBD = LIVEHUBD
        subscriber = hub.subscriber("note:")
        acked, refusal = [], None
        for n in range(200):  # 1 KiB each: the limit is reached within about 64
            reply = hub.control(b"PUBLISH", b"note:big", pack_event("note:big", {"n": n,
                                                                               "pad": "x" * 1024}))
            if reply[0] != b"OK":
                refusal = reply[1].decode()
                break
            acked.append(int(reply[1]))
        self.assertEqual(refusal, "journal: cannot write: File too large")
        self.assertGreater(len(acked), 10)
        delivered = [e["id"] for e in subscriber.recv_n(len(acked) + 1, timeout=3)]
        self.assertEqual(delivered, acked, "the refused event was not delivered")
        self.assertEqual(metric(hub, "livehub_journal_refused_events_total"), 1)
        self.assertIn("journal: cannot write: File too large", hub.log())
        status, _, kept = hub.replay(0)
        self.assertEqual([e["id"] for e in kept], acked, "nor kept in history")
        hub.stop()
        hub.start()  # without the limit
        self.assertNotIn("cutting a torn", hub.log(), "the failed batch was cut off the file")
        self.assertEqual([e["id"] for e in hub.replay(0)[2]], acked)
        self.assertGreater(hub.publish("note:after"), acked[-1])

    def test_a_version_1_journal_is_read_and_upgraded(self):
        hub = self.hub(start=False)
        journal = os.path.join(hub.dir, "journal")
        hub.hub_extra = "journal = %s" % journal
        hub.write_conf("")
        hub.start()
        ids = [hub.publish("note:kept", {"n": n}) for n in range(3)]
        hub.stop()
        with open(journal, "r+b") as file:
            header = file.readline()
            self.assertTrue(header.startswith(b"livehub-journal 2 "), header)
            file.seek(len(b"livehub-journal "))
            file.write(b"1")  # what a hub before id marks wrote: the same records
        hub.start()
        self.assertEqual([e["id"] for e in hub.replay(0)[2]], ids)
        self.assertEqual(hub.publish("note:next"), ids[-1] + 1)
        with open(journal, "rb") as file:
            self.assertTrue(file.readline().startswith(b"livehub-journal 2 "))


def metric(hub, name):
    return hub.status()["metrics"][name]


class HistoryBytesTest(HubTestCase):
    def push_big_events(self, hub, count, size):
        push = hub.pusher()
        for n in range(count):
            push.send_multipart([b"big:event", pack_event("big:event", {"n": n,
                                                                        "blob": bytes(size)})])
        deadline = time.time() + 60
        while hub.status()["last_id"] < count:
            if time.time() > deadline:
                raise AssertionError("only %d of %d events accepted" % (hub.status()["last_id"],
                                                                        count))
            time.sleep(0.05)

    def assert_newest_kept(self, hub, count):
        kept = int(metric(hub, "livehub_history_events"))
        self.assertLess(kept, count)
        self.assertEqual(hub.replay(0)[0], "RESET", "the oldest events were evicted")
        status, _, events = hub.replay(count - kept)
        self.assertEqual(status, "OK")
        self.assertEqual([e["data"]["n"] for e in events], list(range(count - kept, count)))
        return kept

    def test_history_is_bounded_in_bytes_by_default(self):
        hub = self.hub()
        self.push_big_events(hub, 300, 240000)  # 72 MB, over the default 64 MiB
        self.assertLessEqual(metric(hub, "livehub_history_bytes"), 64 * 1024 * 1024)
        kept = self.assert_newest_kept(hub, 300)
        self.assertGreaterEqual(kept, 64 * 1024 * 1024 // 241000, "the bound is bytes, not less")

    def test_history_bytes_bounds_history_and_the_journal_restores_as_much(self):
        hub = self.hub(start=False)
        journal = os.path.join(hub.dir, "journal")
        hub.hub_extra = "history_bytes = 1048576\njournal = %s" % journal
        hub.write_conf("")
        hub.start()
        self.push_big_events(hub, 40, 200000)
        self.assertLessEqual(metric(hub, "livehub_history_bytes"), 1048576)
        history = hub.status()["history"]
        self.assertEqual(history["bytes_capacity"], 1048576)
        self.assertLessEqual(history["bytes"], 1048576)
        kept = self.assert_newest_kept(hub, 40)
        self.assertEqual(kept, 5)
        hub.stop()
        hub.start()
        self.assertEqual(self.assert_newest_kept(hub, 40), kept)

    def test_bad_history_bytes_is_refused_with_the_reason(self):
        hub = self.hub(start=False)
        for value, reason in [("65536", "history_bytes: 65536 is less than max_event_size"),
                              ("lots", "history_bytes: 'lots' is not a decimal integer")]:
            hub.hub_extra = "history_bytes = %s" % value
            hub.write_conf("")
            check = subprocess.run([LIVEHUBD, "--check", hub.conf_path], capture_output=True,
                                   text=True, timeout=30)
            self.assertEqual(check.returncode, 1, value)
            self.assertIn(reason, check.stderr)


class DefaultConfTest(HubTestCase):
    def test_default_conf_keeps_metrics_updates_out_of_history(self):
        source = os.path.join(os.environ.get("LIVEHUB_SOURCE_DIR", "../.."), "conf",
                              "livehub.conf")
        with open(source) as conf:
            text = conf.read()
        hub = self.hub(start=False, env={"LIVEHUB_PLUGIN_DIR": PLUGIN_DIR})
        # the default conf on free ports and this test's control endpoint, metrics every second
        for port in ("8080", "8081", "8082", "9464"):
            text = text.replace(":%s" % port, ":%d" % free_port())
        text = text.replace("tcp://127.0.0.1:7500", hub.ingress)
        text = text.replace("tcp://127.0.0.1:7501", hub.egress)
        text = text.replace("    name = livehub\n",
                            "    name = livehub\n    control = %s\n" % hub.control_endpoint)
        text = re.sub(r"interval = 5\b", "interval = 1", text)
        with open(hub.conf_path, "w") as conf:
            conf.write(text)
        hub.start()
        subscriber = hub.subscriber("metrics:")
        update = subscriber.recv(timeout=30)
        self.assertIsNotNone(update, "a metrics:update was routed")
        self.assertEqual(update["type"], "metrics:update")
        status, _, events = hub.replay(0)
        self.assertEqual(status, "OK")
        self.assertNotIn("metrics:update", [e["type"] for e in events])
        self.assertNotIn(update["id"], [e["id"] for e in events])
        self.assertEqual(hub.replay(0, prefixes=("metrics:",))[2], [])


if __name__ == "__main__":
    unittest.main()
