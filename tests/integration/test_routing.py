"""Events flow from producers to subscribers in order, stamped, routed by topic prefix, replayed
exactly on resume, and de-duplicated by idempotency key."""
import time
import unittest

from hubtest import HubTestCase, pack_event


class RoutingTest(HubTestCase):
    def test_external_push_reaches_subscribers_in_order_with_ids(self):
        hub = self.hub()
        everything = hub.subscriber()
        push = hub.pusher()
        for n in range(500):
            push.send_multipart([b"signal:created", pack_event("signal:created", {"n": n})])
        events = everything.recv_n(500)
        self.assertEqual([e["data"]["n"] for e in events], list(range(500)))
        ids = [e["id"] for e in events]
        self.assertEqual(ids, list(range(ids[0], ids[0] + 500)), "ids strictly increasing, no gap")
        epoch = everything.hello["epoch"]
        for event in events:
            self.assertEqual(event["v"], 1)
            self.assertEqual(event["epoch"], epoch)
            self.assertEqual(event["to"], ["public"], "default audience")
            self.assertTrue(event["src"].startswith("ext:"), event["src"])
            self.assertGreater(event["ts"], 1_600_000_000_000_000, "ts in microseconds")
        self.assertTrue(all(a["ts"] <= b["ts"] for a, b in zip(events, events[1:])))
        push.close()

    def test_prefix_subscriptions_route_by_topic(self):
        hub = self.hub()
        assignments = hub.subscriber("assignment:")
        created = hub.subscriber("signal:created")
        both = hub.subscriber("assignment:created", "connection:")
        types = ["assignment:created", "signal:created", "signal:updated",
                 "assignment:responseChanged", "connection:statusChanged", "metrics:update"]
        for type_ in types * 3:
            hub.publish(type_, {"t": type_}, to=["admin"])
        want = {
            assignments: [t for t in types * 3 if t.startswith("assignment:")],
            created: [t for t in types * 3 if t == "signal:created"],
            both: [t for t in types * 3 if t in ("assignment:created", "connection:statusChanged")],
        }
        for subscriber, expected in want.items():
            got = [e["type"] for e in subscriber.recv_n(len(expected))]
            self.assertEqual(got, expected)
            self.assertIsNone(subscriber.recv(0.3), "nothing beyond the subscribed prefixes")

    def test_audiences_and_key_are_kept(self):
        hub = self.hub()
        sub = hub.subscriber("assignment:")
        hub.publish("assignment:created", {"signalIdentifier": "S-7"}, to=["user:42", "admin"],
                    key="rec123:v1")
        event = sub.recv()
        self.assertEqual(event["to"], ["user:42", "admin"])
        self.assertEqual(event["key"], "rec123:v1")
        self.assertEqual(event["data"], {"signalIdentifier": "S-7"})

    def test_duplicate_key_is_dropped_within_the_window(self):
        hub = self.hub()
        sub = hub.subscriber()
        first = hub.publish("signal:updated", {"n": 1}, key="airtable:act1")
        self.assertGreater(first, 0)
        self.assertEqual(hub.publish("signal:updated", {"n": 2}, key="airtable:act1"), 0)
        second = hub.publish("signal:updated", {"n": 3}, key="airtable:act2")
        self.assertEqual([e["data"]["n"] for e in sub.recv_n(2)], [1, 3])
        self.assertIsNone(sub.recv(0.3))
        self.assertEqual(second, first + 1, "a dropped duplicate takes no id")
        self.assertEqual(hub.status()["counters"]["duplicates"], 1)

    def test_key_window_follows_history(self):
        hub = self.hub(hub_extra="history = 3")
        hub.publish("signal:updated", {}, key="k-old")
        for n in range(3):
            hub.publish("signal:updated", {"n": n})
        self.assertGreater(hub.publish("signal:updated", {}, key="k-old"), 0,
                           "a key older than the history window is accepted again")

    def test_replay_since_returns_exactly_the_missed_events(self):
        hub = self.hub()
        ids = [hub.publish("signal:created" if n % 2 else "assignment:created", {"n": n})
               for n in range(20)]
        status, meta, events = hub.replay(ids[9])
        self.assertEqual(status, "OK")
        self.assertEqual([e["id"] for e in events], ids[10:])
        self.assertEqual(meta["newest"], ids[-1])
        self.assertFalse(meta["more"])
        status, meta, events = hub.replay(ids[9], prefixes=["assignment:"])
        self.assertEqual([e["data"]["n"] for e in events], [10, 12, 14, 16, 18])
        status, meta, events = hub.replay(0, batch=7)
        self.assertEqual([e["id"] for e in events], ids[:7])
        self.assertTrue(meta["more"])
        self.assertEqual(meta["scanned_to"], ids[6])
        status, meta, events = hub.replay(ids[-1])
        self.assertEqual((status, events), ("OK", []))

    def test_replay_resets_when_history_lost_the_events_or_epoch_differs(self):
        hub = self.hub(hub_extra="history = 5")
        ids = [hub.publish("signal:created", {"n": n}) for n in range(12)]
        status, meta, events = hub.replay(ids[2])
        self.assertEqual((status, events), ("RESET", []), "older than history: reset, no partial")
        status, _, events = hub.replay(ids[6])
        self.assertEqual((status, [e["id"] for e in events]), ("OK", ids[7:]))
        status, meta, events = hub.replay(ids[8], epoch="another-epoch")
        self.assertEqual((status, events), ("RESET", []))
        status, meta, _ = hub.replay(ids[8], epoch=meta["epoch"])
        self.assertEqual(status, "OK")
        status, _, _ = hub.replay(ids[-1] + 10)
        self.assertEqual(status, "FUTURE")

    def test_history_ages_out(self):
        hub = self.hub(hub_extra="history_age = 1")
        first = hub.publish("signal:created", {})
        time.sleep(2.2)
        hub.publish("signal:created", {})
        status, _, _ = hub.replay(first - 1)
        self.assertEqual(status, "RESET")
        self.assertEqual(hub.status()["history"]["events"], 1)

    def test_resume_while_publishing_has_no_gap_and_no_duplicate(self):
        hub = self.hub()
        before = [hub.publish("signal:created", {"n": n}) for n in range(50)]
        push = hub.pusher()
        sub = hub.subscriber("signal:")
        for n in range(50, 300):
            push.send_multipart([b"signal:created", pack_event("signal:created", {"n": n})])
        # replay from the middle of the first batch, then merge with live by id
        seen, last = [], before[24]
        status, meta, replayed = hub.replay(last)
        while True:
            self.assertEqual(status, "OK")
            for event in replayed:
                seen.append(event["data"]["n"])
                last = event["id"]
            if not meta["more"]:
                break
            status, meta, replayed = hub.replay(meta["scanned_to"])
        for event in sub.recv_n(300):
            if event["id"] > last:
                seen.append(event["data"]["n"])
                last = event["id"]
        self.assertEqual(seen, list(range(25, 300)))
        push.close()


if __name__ == "__main__":
    unittest.main()
