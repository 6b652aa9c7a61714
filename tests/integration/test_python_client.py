"""The Python example client (examples/python/livehub_client.py) against the real hub: its CLI and
its module API publish, follow live events, resume from an id without gap or duplicate while
events keep coming, and report a reset when continuity is lost (docs/PROTOCOL.md)."""
import json
import os
import select
import subprocess
import sys
import threading
import time
import unittest

import hubtest
from hubtest import HubTestCase

PYTHON = "/usr/bin/python3"  # Debian's, with python3-zmq and python3-msgpack
EXAMPLE_DIR = os.path.abspath(os.path.join(hubtest.SOURCE_DIR, "examples", "python"))
CLIENT = os.path.join(EXAMPLE_DIR, "livehub_client.py")
sys.path.insert(0, EXAMPLE_DIR)
import livehub_client  # noqa: E402  (the module under test)

FOREIGN_EPOCH = "0123456789abcdef"


class CliSubscriber:
    """`livehub_client.py subscribe ...` as a child process, known to be subscribed once built
    (the client reports the $hello answer on stderr)."""

    def __init__(self, args, timeout=15.0):
        self.process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True)
        ready, _, _ = select.select([self.process.stderr], [], [], timeout)
        line = self.process.stderr.readline() if ready else ""
        if not line.startswith("subscribed: "):
            self.process.kill()
            out, err = self.process.communicate()
            raise AssertionError("subscriber not ready: %r %r %r" % (line, out, err))
        self.hello = json.loads(line[len("subscribed: "):])

    def events(self, timeout=60.0):
        """Waits for the exit (the subscriber was given --count and --idle); returns the printed
        events and the exit status."""
        try:
            out, err = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, err = self.process.communicate()
            raise AssertionError("subscriber did not finish: %r %r" % (out, err))
        return [json.loads(line) for line in out.splitlines()], self.process.returncode, err

    def kill(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate()


class PythonClientTest(HubTestCase):
    def setUp(self):
        super().setUp()
        self.hub_ = self.hub(start=False)
        self.log_path = os.path.join(self.hub_.dir, "events.jsonl")
        self.hub_.write_conf("chain = c\n    sink = out\n        plugin = log\n"
                             "        output = %s\n" % self.log_path)
        self.hub_.start()
        self.hub_.wait_running("out")
        self.epoch = self.hub_.status()["epoch"]
        self.client = livehub_client.Client(self.hub_.ingress, self.hub_.egress,
                                            self.hub_.control_endpoint)
        self.addCleanup(self.client.close)

    # ---- helpers ---------------------------------------------------------------------------

    def cli(self, *args):
        return [PYTHON, CLIENT, "--ingress", self.hub_.ingress, "--egress", self.hub_.egress,
                "--control", self.hub_.control_endpoint] + [str(a) for a in args]

    def run_cli(self, *args):
        return subprocess.run(self.cli(*args), capture_output=True, text=True, timeout=30)

    def subscriber(self, *args):
        sub = CliSubscriber(self.cli("subscribe", *args))
        self.addCleanup(sub.kill)
        return sub

    def wait_last_id(self, at_least, timeout=20.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            last_id = self.hub_.status()["last_id"]
            if last_id >= at_least:
                return last_id
            time.sleep(0.01)
        self.fail("the hub never reached id %d: %s" % (at_least, self.hub_.status()))

    def logged(self, count, timeout=20.0):
        """The first count lines the log sink wrote."""
        deadline = time.time() + timeout
        lines = []
        while time.time() < deadline:
            if os.path.exists(self.log_path):
                with open(self.log_path) as log:
                    lines = log.read().splitlines()
                if len(lines) >= count:
                    return [json.loads(line) for line in lines[:count]]
            time.sleep(0.05)
        self.fail("the log sink wrote %d of %d lines" % (len(lines), count))

    def publish_ticks(self, first, count, pause_every=0):
        """count events tick:a / tick:b (by parity of n) with data {"n": n} over the ingress PUSH,
        from a thread-own client (ZeroMQ sockets stay in their thread)."""
        client = livehub_client.Client(self.hub_.ingress, self.hub_.egress,
                                       self.hub_.control_endpoint)
        try:
            for n in range(first, first + count):
                client.publish("tick:a" if n % 2 == 0 else "tick:b", {"n": n})
                if pause_every and n % pause_every == 0:
                    time.sleep(0.01)
        finally:
            client.close()

    # ---- the CLI ---------------------------------------------------------------------------

    def test_cli_publishes_and_subscribes_live(self):
        sub = self.subscriber("signal:", "assignment:created", "--count", 3, "--idle", 20)
        self.assertEqual(sub.hello, {"epoch": self.epoch, "last_id": 0})
        published = [("signal:created", {"n": 1}, []),
                     ("metrics:update", {"queue": 3}, []),
                     ("assignment:created", {"signalIdentifier": "S-7"},
                      ["--to", "user:42", "--to", "admin", "--key", "rec1:v1"]),
                     ("signal:updated", {"n": 2, "ok": True, "list": [1, "two", None]}, [])]
        for number, (type_, data, extra) in enumerate(published, 1):
            result = self.run_cli("publish", type_, json.dumps(data), *extra)
            self.assertEqual((result.returncode, result.stdout, result.stderr), (0, "", ""))
            self.wait_last_id(number)  # one at a time: PUSH connections are fair-queued
        events, code, err = sub.events()
        self.assertEqual(code, 0, err)
        self.assertEqual([(e["type"], e["data"]) for e in events],
                         [(t, d) for t, d, _ in published if t != "metrics:update"])
        self.assertEqual([e["id"] for e in events], [1, 3, 4])
        self.assertEqual([e["to"] for e in events], [["public"], ["user:42", "admin"], ["public"]])
        self.assertEqual([e.get("key") for e in events], [None, "rec1:v1", None])
        for event in events:
            self.assertEqual(event["v"], 1)
            self.assertEqual(event["epoch"], self.epoch)
            self.assertTrue(event["src"].startswith("ext:127.0.0.1"), event["src"])
        # The same events went through the hub's own log sink, metrics:update included.
        logged = self.logged(4)
        self.assertEqual([(e["id"], e["type"], e["data"]) for e in logged],
                         [(n, t, d) for n, (t, d, _) in enumerate(published, 1)])

    def test_cli_confirmed_publish_prints_the_id_or_the_refusal(self):
        first = self.run_cli("publish", "signal:created", '{"n": 1}', "--key", "k1", "--confirm")
        self.assertEqual((first.returncode, first.stdout), (0, "1\n"), first.stderr)
        again = self.run_cli("publish", "signal:created", '{"n": 1}', "--key", "k1", "--confirm")
        self.assertEqual((again.returncode, again.stdout), (0, "0\n"), "a repeated key is dropped")
        refused = self.run_cli("publish", "$hello", "null", "--confirm")
        self.assertEqual(refused.returncode, 1)
        self.assertIn("reserved for the hub", refused.stderr)
        counters = self.hub_.status()["counters"]
        self.assertEqual((counters["accepted"], counters["duplicates"],
                          counters["rejected"]["malformed"]), (1, 1, 1))

    def test_cli_since_replays_exactly_the_missed_events(self):
        ids = [self.client.publish("tick:a" if n % 2 == 0 else "tick:b", {"n": n}, confirm=True)
               for n in range(6)]
        self.assertEqual(ids, [1, 2, 3, 4, 5, 6])
        everything = self.subscriber("--since", 2, "--epoch", self.epoch, "--count", 4,
                                     "--idle", 5)
        events, code, err = everything.events()
        self.assertEqual(code, 0, err)
        self.assertEqual([(e["id"], e["type"], e["data"]["n"]) for e in events],
                         [(3, "tick:a", 2), (4, "tick:b", 3), (5, "tick:a", 4), (6, "tick:b", 5)])
        only_a = self.subscriber("tick:a", "--since", 1, "--count", 2, "--idle", 5)
        events, code, err = only_a.events()
        self.assertEqual(code, 0, err)
        self.assertEqual([e["id"] for e in events], [3, 5])
        # Then live: nothing was missed, nothing repeats.
        live = self.subscriber("tick:", "--since", 6, "--epoch", self.epoch, "--count", 1,
                               "--idle", 10)
        self.client.publish("tick:b", {"n": 7}, confirm=True)
        events, code, err = live.events()
        self.assertEqual((code, [e["id"] for e in events]), (0, [7]), err)

    def test_cli_reports_reset_and_future(self):
        for n in range(3):
            self.client.publish("tick:a", {"n": n}, confirm=True)
        foreign = self.subscriber("--since", 1, "--epoch", FOREIGN_EPOCH, "--count", 1,
                                  "--idle", 5)
        events, code, err = foreign.events()
        self.assertEqual(code, 0, err)
        self.assertEqual(events, [{"type": "$reset", "reason": "RESET", "epoch": self.epoch,
                                   "newest": 3}])
        future = self.subscriber("--since", 50, "--count", 1, "--idle", 5)
        events, code, err = future.events()
        self.assertEqual(events, [{"type": "$reset", "reason": "FUTURE", "epoch": self.epoch,
                                   "newest": 3}])

    # ---- the module ------------------------------------------------------------------------

    def test_module_publish_replay_and_subscribe(self):
        self.assertEqual(self.client.publish("signal:created", {"n": 0}, to=["admin"],
                                             key="once", confirm=True), 1)
        self.assertEqual(self.client.publish("signal:created", {"n": 0}, key="once",
                                             confirm=True), 0)
        with self.assertRaises(livehub_client.LivehubError) as refused:
            self.client.publish("signal:created", {"n": 0}, to=[], confirm=True)
        self.assertIn("to must be an array", str(refused.exception))
        status, meta, events = self.client.replay(0, self.epoch)
        self.assertEqual((status, meta), ("OK", {"epoch": self.epoch, "scanned_to": 1,
                                                 "newest": 1, "more": False}))
        self.assertEqual([(e["id"], e["to"], e["key"]) for e in events], [(1, ["admin"], "once")])

        hellos = []

        def on_ready(hello):  # subscribed: publish now, every event must arrive
            hellos.append(hello)
            for n in range(1, 4):
                self.client.publish("signal:updated", {"n": n, "bin": b"\x00\xff"})
            self.client.publish("other:x", {"n": 99})

        got = []
        for event in self.client.subscribe(["signal:"], idle=10, on_ready=on_ready):
            got.append(event)
            if len(got) == 3:
                break
        self.assertEqual(hellos, [{"epoch": self.epoch, "last_id": 1}])
        self.assertEqual([(e["id"], e["type"], e["data"]) for e in got],
                         [(n + 1, "signal:updated", {"n": n, "bin": b"\x00\xff"})
                          for n in range(1, 4)])

    def test_resume_has_no_gap_nor_duplicate_while_events_keep_coming(self):
        self.publish_ticks(0, 300)
        self.wait_last_id(300)
        since, total = 100, 2300
        publisher = threading.Thread(target=self.publish_ticks, args=(300, total - 300, 10))
        publisher.start()
        self.addCleanup(publisher.join, 60)
        self.wait_last_id(400)  # the publisher is running: the resume races it
        # The CLI, tick:a only (even n, so odd ids), in a child process...
        cli = self.subscriber("tick:a", "--since", since, "--epoch", self.epoch,
                              "--count", (total - since) // 2, "--idle", 20)
        # ... and the module, every type, with small REPLAY batches so the replay takes rounds.
        self.client.batch = 50
        hellos, ids, numbers = [], [], []
        deadline = time.time() + 60
        for event in self.client.subscribe(["tick:"], since=since, epoch=self.epoch, idle=20,
                                           on_ready=hellos.append):
            self.assertNotEqual(event["type"], "$reset", event)
            ids.append(event["id"])
            numbers.append(event["data"]["n"])
            if event["id"] >= total or time.time() > deadline:
                break
        publisher.join(60)
        self.assertLess(hellos[0]["last_id"], total, "the resume began while publishing")
        self.assertEqual(ids, list(range(since + 1, total + 1)), "each missed id once, in order")
        self.assertEqual(numbers, [i - 1 for i in ids])
        events, code, err = cli.events()
        self.assertEqual(code, 0, err)
        self.assertLess(cli.hello["last_id"], total)
        self.assertEqual([e["id"] for e in events], list(range(since + 1, total + 1, 2)))
        self.assertEqual({e["type"] for e in events}, {"tick:a"})

    def test_hub_restart_is_reported_as_a_reset(self):
        self.client.publish("signal:created", {"n": 0}, confirm=True)
        events = self.client.subscribe(["signal:"], since=0, epoch=self.epoch, idle=20)
        self.assertEqual(next(events)["id"], 1)
        self.hub_.stop()
        self.hub_.start()  # same endpoints, new epoch, ids from 1 again
        new_epoch = self.hub_.status()["epoch"]
        self.assertNotEqual(new_epoch, self.epoch)
        # The client sees its $hello answered again on the new connection; its replay from id 1
        # of the old epoch can only be refused.
        reset = next(events)
        self.assertEqual(reset, {"type": "$reset", "reason": "RESET", "epoch": new_epoch,
                                 "newest": 0})
        new_id = self.client.publish("signal:created", {"n": 2}, confirm=True)
        event = next(events)
        self.assertEqual((event["id"], event["epoch"], event["data"]), (new_id, new_epoch,
                                                                        {"n": 2}))
        events.close()


if __name__ == "__main__":
    unittest.main()
