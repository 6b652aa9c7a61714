"""SIGHUP / RELOAD apply a changed conf without losing events (unchanged stages keep running,
changed ones restart), a bad conf is refused while the old one keeps serving, and SIGTERM drains
every accepted event to the sinks before exiting 0."""
import json
import os
import signal
import subprocess
import threading
import time
import unittest

from hubtest import LIVEHUB_CLI, LIVEHUBD, HubTestCase, pack_event


def log_sink(name, path, subscribe=None, extra=""):
    text = "    sink = %s\n        plugin = log\n        output = %s\n" % (name, path)
    if subscribe:
        text += "        subscribe = %s\n" % subscribe
    return text + extra


def read_ids(*paths):
    ids = []
    for path in paths:
        if os.path.exists(path):
            with open(path) as lines:
                ids += [json.loads(line)["id"] for line in lines if line.strip()]
    return ids


class ReloadStopTest(HubTestCase):
    def paths(self, hub, *names):
        return [os.path.join(hub.dir, name + ".jsonl") for name in names]

    def publish_continuously(self, hub, stop, published):
        while not stop.is_set() and len(published) < 5000:
            published.append(hub.publish("signal:created", {"n": len(published)}))
            time.sleep(0.001)

    def test_reload_keeps_unchanged_stages_and_loses_nothing(self):
        hub = self.hub(start=False)
        kept, changed_old, changed_new, added = self.paths(hub, "kept", "old", "new", "added")
        hub.write_conf("chain = c\n" + log_sink("kept", kept) + log_sink("changing", changed_old))
        hub.start()
        stop, published = threading.Event(), []
        producer = threading.Thread(target=self.publish_continuously, args=(hub, stop, published))
        producer.start()
        time.sleep(0.3)
        hub.write_conf("chain = c\n" + log_sink("kept", kept) + log_sink("changing", changed_new)
                       + "chain = d\n" + log_sink("added", added))
        hub.signal(signal.SIGHUP)
        hub.wait_log("1 stages kept, 2 started, 1 stopped")
        time.sleep(0.3)
        stop.set()
        producer.join()
        time.sleep(0.5)
        self.assertEqual(read_ids(kept), published, "the kept stage saw every event once")
        self.assertEqual(sorted(read_ids(changed_old, changed_new)), published,
                         "old and new instances of a changed stage together saw every event once")
        self.assertTrue(read_ids(changed_new), "the changed stage runs with its new conf")
        added_ids = read_ids(added)
        self.assertTrue(added_ids and added_ids == published[published.index(added_ids[0]):])
        stage = hub.stage("kept")
        self.assertEqual(stage["workers"][0]["restarts"], 0)
        self.assertEqual([s["name"] for s in hub.status()["stages"]], ["kept", "changing", "added"])

    def test_bad_reload_is_refused_and_the_running_conf_stays(self):
        hub = self.hub(start=False)
        (out,) = self.paths(hub, "out")
        hub.write_conf("chain = c\n" + log_sink("out", out))
        hub.start()
        hub.write_conf("chain = c\n" + log_sink("out", out) + "        colour = red\n")
        reply = hub.control(b"RELOAD")
        self.assertEqual(reply[0], b"ERR")
        self.assertIn(b"colour", reply[1])
        with open(hub.conf_path) as conf:
            line = [l.strip() for l in conf].index("colour = red") + 1
        self.assertIn(b"livehub.conf:%d: colour:" % line, reply[1], "the error names the line")
        hub.signal(signal.SIGHUP)
        hub.wait_log("reload refused, the running conf stays")
        first = hub.publish("signal:created", {})
        time.sleep(0.3)
        self.assertEqual(read_ids(out), [first])

    def test_cli_reload(self):
        hub = self.hub(start=False)
        one, two = self.paths(hub, "one", "two")
        hub.write_conf("chain = c\n" + log_sink("one", one))
        hub.start()
        hub.write_conf("chain = c\n" + log_sink("two", two))
        result = subprocess.run([LIVEHUB_CLI, "--control", hub.control_endpoint, "reload"],
                                capture_output=True, text=True, timeout=30)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual([s["name"] for s in hub.status()["stages"]], ["two"])
        event_id = hub.publish("signal:created", {})
        time.sleep(0.3)
        self.assertEqual(read_ids(two), [event_id])

    def test_sigterm_drains_every_accepted_event(self):
        hub = self.hub(start=False)
        fast, only_assignments = self.paths(hub, "fast", "assignments")
        hub.write_conf("chain = c\n" + log_sink("fast", fast)
                       + log_sink("assignments", only_assignments, subscribe="assignment:"))
        hub.start()
        ids = [hub.publish("assignment:created" if n % 2 else "signal:created", {"n": n})
               for n in range(3000)]
        self.assertEqual(hub.stop(), 0)
        self.assertEqual(read_ids(fast), ids)
        self.assertEqual(read_ids(only_assignments), ids[1::2])
        self.assertIn("stopped after 3000 events", hub.log())


if __name__ == "__main__":
    unittest.main()


class JournalTest(HubTestCase):
    def journaled_hub(self, path, **kwargs):
        return self.hub(hub_extra="journal = %s\nhistory = 50" % path, **kwargs)

    def test_restart_keeps_epoch_ids_history_and_keys(self):
        first = self.hub(start=False)
        path = os.path.join(first.dir, "journal")
        hub = self.journaled_hub(path)
        ids = [hub.publish("signal:created", {"n": n}, key="k%d" % n) for n in range(10)]
        epoch = hub.replay(0)[1]["epoch"]
        hub.stop()
        again = self.journaled_hub(path)
        status, meta, events = again.replay(ids[4])
        self.assertEqual((status, meta["epoch"]), ("OK", epoch), "the epoch survives a restart")
        self.assertEqual([e["id"] for e in events], ids[5:])
        self.assertEqual([e["data"]["n"] for e in events], list(range(5, 10)))
        self.assertEqual(again.publish("signal:created", {}, key="k3"), 0, "keys still dedup")
        self.assertEqual(again.publish("signal:created", {}), ids[-1] + 1, "ids continue")
        self.assertIn("continues after id %d" % ids[-1], again.log())

    def test_torn_tail_is_cut_and_the_rest_kept(self):
        first = self.hub(start=False)
        path = os.path.join(first.dir, "journal")
        hub = self.journaled_hub(path)
        ids = [hub.publish("signal:created", {"n": n}) for n in range(5)]
        hub.stop()
        with open(path, "ab") as journal:
            journal.write(b"\x06\x00\x00\x00\x00\x00\x00\x00torn")
        again = self.journaled_hub(path)
        self.assertIn("cutting a torn or corrupt tail", again.log())
        status, _, events = again.replay(0)
        self.assertEqual([e["id"] for e in events], ids)
        self.assertEqual(again.publish("signal:created", {}), ids[-1] + 1)

    def test_journal_is_compacted_to_the_history_size(self):
        first = self.hub(start=False)
        path = os.path.join(first.dir, "journal")
        hub = self.journaled_hub(path)
        push = hub.pusher()
        for n in range(3000):
            push.send_multipart([b"signal:created", pack_event("signal:created", {"n": n})])
        deadline = time.time() + 20
        while hub.status()["last_id"] < 3000 and time.time() < deadline:
            time.sleep(0.1)
        hub.stop()
        record = 140  # bytes of one journaled event of this test, roughly
        self.assertLess(os.path.getsize(path), 1101 * record, "compacted: not all 3000 kept")
        again = self.journaled_hub(path)
        status, _, events = again.replay(2950)
        self.assertEqual([e["data"]["n"] for e in events], list(range(2950, 3000)))

    def test_a_file_that_is_not_a_journal_is_refused(self):
        hub = self.hub(start=False)
        path = os.path.join(hub.dir, "precious.txt")
        with open(path, "w") as other:
            other.write("do not overwrite me\n")
        hub.hub_extra = "journal = %s" % path
        hub.write_conf("")
        result = subprocess.run([LIVEHUBD, hub.conf_path], capture_output=True, text=True,
                                timeout=30)
        self.assertEqual(result.returncode, 1)
        self.assertIn("not a livehub journal", result.stderr)
        with open(path) as other:
            self.assertEqual(other.read(), "do not overwrite me\n")
