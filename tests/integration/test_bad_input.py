"""Bad input from producers is refused, counted and logged (rate-limited); nothing else is
affected and the hub never crashes (the suite also runs under ASan/UBSan)."""
import struct
import time
import unittest

import msgpack
import zmq

from hubtest import CONTEXT, HubTestCase, pack_event


def counters(hub):
    return hub.status()["counters"]


class BadInputTest(HubTestCase):
    def assert_still_serving(self, hub, sub, push):
        push.send_multipart([b"signal:created", pack_event("signal:created", {"ok": True})])
        event = sub.recv()
        self.assertIsNotNone(event, "a valid event after the bad ones still flows")
        self.assertEqual(event["data"], {"ok": True})

    def send_bad(self, hub, frames):
        push = hub.pusher()
        push.send_multipart(frames)
        return push

    def test_each_bad_body_is_rejected_and_counted(self):
        hub = self.hub(hub_extra="max_event_size = 4096")
        sub = hub.subscriber()
        push = hub.pusher()
        topic = b"signal:created"
        good = {"v": 1, "type": "signal:created", "data": {}}
        deep = 1
        for _ in range(40):
            deep = [deep]
        bad_bodies = {
            "not msgpack at all": b"\xc1garbage",
            "truncated map": pack_event("signal:created", {"a": "b" * 20})[:-5],
            "array32 of 4G elements in 5 bytes": b"\xdd\xff\xff\xff\xff",
            "str32 of 4 GiB": b"\x81\xa4data\xdb\xff\xff\xff\xff",
            "map with trailing bytes": pack_event("signal:created") + b"\x00",
            "not a map": msgpack.packb(["v", 1]),
            "nesting 40 deep": msgpack.packb(dict(good, data=deep)),
            "type differs from topic": pack_event("signal:updated"),
            "unknown version": msgpack.packb(dict(good, v=2)),
            "missing version": msgpack.packb({"type": "signal:created", "data": {}}),
            "unknown key": msgpack.packb(dict(good, colour="red")),
            "to not a list": msgpack.packb(dict(good, to="admin")),
            "empty audience": msgpack.packb(dict(good, to=[""])),
            "to with a number": msgpack.packb(dict(good, to=[7])),
            "key not a string": msgpack.packb(dict(good, key=5)),
            "duplicate key in map": b"\x83\xa1v\x01\xa4type\xaesignal:created\xa1v\x01",
            "non-string map key": b"\x82\xa1v\x01\x01\x02",
            "invalid UTF-8 audience": msgpack.packb(dict(good, to=[b"\xff\xfe".decode("latin1")]))
            .replace(b"\xc3\xbf\xc3\xbe", b"\xff\xfe"),
        }
        for reason, body in bad_bodies.items():
            push.send_multipart([topic, body])
        time.sleep(0.5)
        self.assert_still_serving(hub, sub, push)
        self.assertEqual(counters(hub)["rejected"]["malformed"], len(bad_bodies))
        self.assertEqual(counters(hub)["accepted"], 1, "no bad event got through")

    def test_bad_topics(self):
        hub = self.hub()
        sub = hub.subscriber()
        push = hub.pusher()
        push.send_multipart([b"\xff\xfe:created", msgpack.packb(
            {"v": 1, "type": b"\xff\xfe:created", "data": None}, use_bin_type=False)])
        push.send_multipart([b"$hello/forged", pack_event("$hello/forged")])
        push.send_multipart([b"", pack_event("")])
        push.send_multipart([b"x" * 300, pack_event("x" * 300)])
        time.sleep(0.3)
        self.assert_still_serving(hub, sub, push)
        self.assertEqual(counters(hub)["rejected"]["malformed"], 4)

    def test_wrong_frame_counts(self):
        hub = self.hub()
        sub = hub.subscriber()
        push = hub.pusher()
        push.send_multipart([b"signal:created"])
        push.send_multipart([b"signal:created", pack_event("signal:created"), b"extra"])
        push.send_multipart([b"a", b"b", b"c", b"d", b"e"])
        time.sleep(0.3)
        self.assert_still_serving(hub, sub, push)
        self.assertEqual(counters(hub)["rejected"]["frames"], 3)

    def test_oversized_events(self):
        hub = self.hub(hub_extra="max_event_size = 2048")
        sub = hub.subscriber()
        push = hub.pusher()
        push.send_multipart([b"signal:created", pack_event("signal:created", "x" * 3000)])
        time.sleep(0.3)
        self.assertEqual(counters(hub)["rejected"]["oversized"], 1)
        # far over the limit: libzmq drops the producer's connection before buffering it
        huge = hub.pusher()
        huge.send_multipart([b"signal:created", b"\x00" * (4 * 1024 * 1024)])
        time.sleep(0.5)
        self.assert_still_serving(hub, sub, push)
        self.assertEqual(counters(hub)["accepted"], 1)

    def test_rejections_are_logged_once_per_interval_per_peer(self):
        hub = self.hub()
        push = hub.pusher()
        for _ in range(200):
            push.send_multipart([b"signal:created", b"\xc1"])
        time.sleep(0.5)
        self.assertEqual(counters(hub)["rejected"]["malformed"], 200)
        self.assertEqual(hub.log().count("rejected an event from ext:"), 1)

    def test_control_endpoint_rejects_bad_requests(self):
        hub = self.hub()
        self.assertEqual(hub.control(b"NOPE")[0], b"ERR")
        self.assertEqual(hub.control(b"PUBLISH", b"signal:created")[0], b"ERR")
        reply = hub.control(b"PUBLISH", b"signal:created", b"\x81\xa4data\xdb\xff\xff\xff\xff")
        self.assertEqual(reply[0], b"ERR")
        self.assertIn(b"exceeds", reply[1])
        self.assertEqual(hub.control(b"REPLAY", b"", b"-1", b"10")[0], b"ERR")
        self.assertEqual(hub.control(b"REPLAY", b"", b"abc", b"10")[0], b"ERR")
        self.assertEqual(hub.control(*([b"PING"] * 100))[0], b"ERR")
        req = CONTEXT.socket(zmq.REQ)  # REQ peers get their delimiter back
        req.linger = 0
        req.connect(hub.control_endpoint)
        req.send(b"PING")
        self.assertTrue(req.poll(5000))
        self.assertEqual(req.recv_multipart(), [b"PONG"])
        req.close()
        self.assertGreater(hub.publish("signal:created", {}), 0)

    def test_a_flood_of_garbage_leaves_valid_events_intact(self):
        hub = self.hub()
        sub = hub.subscriber()
        push = hub.pusher()
        expected = []
        for n in range(2000):
            if n % 3 == 0:
                push.send_multipart([b"signal:created", pack_event("signal:created", {"n": n})])
                expected.append(n)
            else:
                push.send_multipart([b"signal:created", struct.pack("<I", n * 2654435761 % 2**32)])
        got = [e["data"]["n"] for e in sub.recv_n(len(expected))]
        self.assertEqual(got, expected)


if __name__ == "__main__":
    unittest.main()
