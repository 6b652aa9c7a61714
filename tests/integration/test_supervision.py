"""Plugin supervision: queue delivery across workers, plugin sources and prefix-subscribed sinks,
crashes and ready time-outs reported and restarted with back-off without losing queued events,
refusal of broken plugin libraries with clear messages, and drops + "$gap" for a slow sink.

The test plugins live in tests/plugins (recorder, emitter, slowstart, and libraries the hub must
refuse). The recorder appends "id type worker" per event and "$gap from to" per gap to a file."""
import datetime
import os
import re
import subprocess
import time
import unittest

from hubtest import LIVEHUBD, PLUGIN_DIR, TEST_PLUGIN_DIR, Hub, HubTestCase, pack_event


def stage(role, name, plugin, **keys):
    """A stage block for a chain; keys become `key = value` lines (underscores kept)."""
    text = "    %s = %s\n        plugin = %s\n" % (role, name, plugin)
    for key, value in keys.items():
        text += "        %s = %s\n" % (key, value)
    return text


def read_records(path):
    """The recorder's lines: ("event", id, type, worker) or ("gap", from, to)."""
    if not os.path.exists(path):
        return []
    records = []
    with open(path) as text:
        lines = text.readlines()
    if lines and not lines[-1].endswith("\n"):
        lines.pop()  # a worker is writing it right now: read it next time
    for line in lines:
        words = line.split()
        if words[0] == "$gap":
            records.append(("gap", int(words[1]), int(words[2])))
        else:
            records.append(("event", int(words[0]), words[1], int(words[2])))
    return records


def event_ids(records):
    return [r[1] for r in records if r[0] == "event"]


def wait_records(path, done, timeout=15.0, what="records"):
    """Polls the recorder's file until done(records) holds; fails after timeout."""
    deadline = time.time() + timeout
    while True:
        records = read_records(path)
        if done(records):
            return records
        if time.time() > deadline:
            raise AssertionError("%s: %s not reached in %ss; have %d lines, last %r"
                                 % (path, what, timeout, len(records), records[-3:]))
        time.sleep(0.05)


def log_times(log, text):
    """Times (seconds since the epoch) of the hub's log lines that contain text."""
    times = []
    for line in log.splitlines():
        if text in line:
            stamp = datetime.datetime.strptime(line.split(" ", 1)[0], "%Y-%m-%dT%H:%M:%S.%fZ")
            times.append(stamp.replace(tzinfo=datetime.timezone.utc).timestamp())
    return times


def wait_until(condition, timeout=10.0, what="condition"):
    deadline = time.time() + timeout
    while not condition():
        if time.time() > deadline:
            raise AssertionError("%s not reached in %ss" % (what, timeout))
        time.sleep(0.05)


class SupervisionTest(HubTestCase):
    def new_hub(self, chains_fn, **kwargs):
        """A hub whose conf is chains_fn(dir) (so stage outputs go into its own directory)."""
        hub = self.hub(start=False, **kwargs)
        hub.write_conf(chains_fn(hub.dir))
        hub.start()
        return hub

    def test_queue_delivery_hands_each_event_to_exactly_one_worker(self):
        out = {}

        def chains(d):
            out["path"] = os.path.join(d, "queue.txt")
            return "chain = q\n" + stage("sink", "workers", "recorder", output=out["path"],
                                         workers=3, delivery="queue")
        hub = self.new_hub(chains)
        hub.wait_running("workers")
        first = hub.status()["last_id"] + 1
        push = hub.pusher()
        total = 3000
        for n in range(total):
            push.send_multipart([b"job:run", pack_event("job:run", {"n": n})])
        expected = set(range(first, first + total))
        wait_records(out["path"], lambda r: len(r) >= total, what="%d lines" % total)
        push.close()
        hub.stop()  # drains the queues: anything delivered twice would show up now
        records = read_records(out["path"])
        ids = event_ids(records)
        self.assertEqual(len(ids), total, "no event recorded twice, none lost")
        self.assertEqual(set(ids), expected)
        self.assertFalse([r for r in records if r[0] == "gap"])
        per_worker = {}
        for record in records:
            per_worker[record[3]] = per_worker.get(record[3], 0) + 1
        self.assertTrue(set(per_worker) <= {0, 1, 2}, per_worker)
        self.assertGreaterEqual(len(per_worker), 2, "queue delivery spreads over the workers: %s"
                                % per_worker)
        for worker in per_worker:  # each worker sees its share in hub order
            mine = [r[1] for r in records if r[3] == worker]
            self.assertEqual(mine, sorted(mine), "worker %d out of order" % worker)

    def test_plugin_source_feeds_sinks_and_subscribers_in_order(self):
        out = {}
        count = 150

        def chains(d):
            out["path"] = os.path.join(d, "ticks.txt")
            return ("chain = ticks\n"
                    + stage("source", "ticker", "emitter", count=count, type="tick:beat",
                            interval_ms=10)
                    + stage("sink", "ticklog", "recorder", output=out["path"], subscribe="tick:"))
        hub = self.new_hub(chains)
        subscriber = hub.subscriber("tick:")
        records = wait_records(out["path"], lambda r: len(r) >= count, what="%d ticks" % count)
        ids = event_ids(records)
        self.assertEqual(len(records), count, "exactly count events, no gap: %r" % records[-3:])
        self.assertEqual(ids, list(range(ids[0], ids[0] + count)), "in order, consecutive ids")
        self.assertEqual({r[2] for r in records}, {"tick:beat"})
        # The subscriber joined while the emitter ran: it sees a contiguous tail of the stream.
        seen = []
        while True:
            event = subscriber.recv(timeout=3.0)
            if event is None:
                break
            seen.append(event)
            if event["data"]["n"] == count - 1:
                break
        self.assertGreaterEqual(len(seen), 10, "the subscriber got the emitted events")
        ns = [e["data"]["n"] for e in seen]
        self.assertEqual(ns, list(range(ns[0], count)), "a contiguous, ordered tail")
        for event in seen:
            self.assertEqual(event["type"], "tick:beat")
            self.assertEqual(event["src"], "ticker", "stamped with the source stage's name")
            self.assertEqual(event["id"], ids[event["data"]["n"]], "same id as the sink saw")
        ticker = hub.stage("ticker")
        self.assertEqual(ticker["workers"][0]["state"], "running",
                         "a source idling after its last event is not a crashed one")
        self.assertEqual(ticker["restarts"], 0)
        self.assertEqual(hub.stage("ticklog")["delivered"], count)

    def test_prefix_subscriptions_give_each_sink_exactly_its_events(self):
        out = {}

        def chains(d):
            out["a"] = os.path.join(d, "assignments.txt")
            out["s"] = os.path.join(d, "created.txt")
            out["all"] = os.path.join(d, "all.txt")
            return ("chain = c\n"
                    + stage("sink", "assignments", "recorder", output=out["a"],
                            subscribe="assignment:")
                    + stage("sink", "created", "recorder", output=out["s"],
                            subscribe="signal:created")
                    + stage("sink", "everything", "recorder", output=out["all"]))
        hub = self.new_hub(chains)
        types = ["assignment:created", "signal:created", "signal:updated", "xassignment:created",
                 "assignment:responseChanged", "signal:createdLate", "signal:", "metrics:update"]
        published = [(hub.publish(t, {"t": t}), t) for t in types * 3]
        # End markers: each sink gets its marker after everything published before it.
        published += [(hub.publish(t, {}), t) for t in ("assignment:end", "signal:created")]
        want = {
            out["a"]: [(i, t) for i, t in published if t.startswith("assignment:")],
            out["s"]: [(i, t) for i, t in published if t.startswith("signal:created")],
            out["all"]: published,
        }
        for path, expected in want.items():
            last_id = expected[-1][0]
            records = wait_records(path, lambda r, last=last_id: last in event_ids(r))
            self.assertEqual([(r[1], r[2]) for r in records], expected, path)
        self.assertEqual(hub.stage("created")["delivered"], len(want[out["s"]]))
        self.assertEqual(hub.stage("assignments")["delivered"], len(want[out["a"]]))

    def test_crashing_sink_is_restarted_with_backoff_and_loses_nothing(self):
        out = {}

        def chains(d):
            out["crashy"] = os.path.join(d, "crashy.txt")
            out["steady"] = os.path.join(d, "steady.txt")
            return ("chain = c\n"
                    + stage("sink", "crashy", "recorder", output=out["crashy"], crash_after=10)
                    + stage("sink", "steady", "recorder", output=out["steady"]))
        hub = self.new_hub(chains)
        hub.wait_running("crashy")
        subscriber = hub.subscriber("work:")
        published = [hub.publish("work:item", {"n": n}) for n in range(10)]
        hub.wait_log("sink crashy (plugin recorder) worker 0 stopped unexpectedly: "
                     "run() returned an error; restarting in 500 ms")
        # Published while the worker is down: they must wait in its queue, not be lost.
        published += [hub.publish("work:item", {"n": n}) for n in range(10, 25)]
        down = hub.stage("crashy")
        self.assertEqual(down["workers"][0]["state"], "backoff",
                         "still in its 500 ms back-off while we published")
        self.assertEqual(down["restarts"], 1)
        self.assertEqual(down["workers"][0]["restarts"], 1)
        self.assertEqual(down["workers"][0]["last_error"], "run() returned an error")
        # The hub keeps serving others meanwhile.
        self.assertEqual([e["id"] for e in subscriber.recv_n(25)], published)
        wait_records(out["steady"], lambda r: len(r) >= 25)
        self.assertEqual(event_ids(read_records(out["steady"])), published)

        # The second instance records 11..20 (from the queue) and crashes too: back-off doubles.
        hub.wait_log("worker 0 stopped unexpectedly: run() returned an error; restarting in "
                     "1000 ms")
        wait_records(out["crashy"], lambda r: len(r) >= 25, timeout=10)
        time.sleep(0.3)  # a duplicate would arrive right behind
        records = read_records(out["crashy"])
        self.assertEqual(event_ids(records), published,
                         "every event exactly once, in order, across two crashes")
        hub.wait_running("crashy")
        crashy = hub.stage("crashy")
        self.assertEqual(crashy["restarts"], 2)
        self.assertEqual(crashy["workers"][0]["restarts"], 2)
        self.assertEqual(crashy["workers"][0]["last_error"], "run() returned an error")
        self.assertEqual(crashy["delivered"], 25)
        self.assertEqual(crashy["dropped"], 0)
        self.assertEqual(hub.stage("steady")["restarts"], 0)
        log = hub.log()
        crashes = log_times(log, "sink crashy (plugin recorder) worker 0 stopped unexpectedly")
        readies = log_times(log, "sink crashy (plugin recorder) worker 0 ready")
        self.assertEqual((len(crashes), len(readies)), (2, 3), log)
        # Each restart waits out its back-off (500 ms, then 1000 ms), and not much longer.
        for crash, ready, backoff in zip(crashes, readies[1:], (0.5, 1.0)):
            self.assertGreaterEqual(ready - crash, backoff - 0.002, log)
            self.assertLess(ready - crash, backoff + 1.0, log)
        self.assertLess(log.index("restarting in 500 ms"), log.index("restarting in 1000 ms"))

    def test_ready_timeout_is_reported_and_restarted_while_others_serve(self):
        out = {}

        def chains(d):
            out["path"] = os.path.join(d, "ok.txt")
            return ("chain = c\n"
                    + stage("sink", "sluggish", "slowstart", delay_ms=5000, ready_timeout=200)
                    + stage("sink", "prompt", "slowstart", delay_ms=100, ready_timeout=3000)
                    + stage("sink", "ok", "recorder", output=out["path"]))
        hub = self.new_hub(chains)
        hub.wait_log("sink sluggish worker 0 did not signal ready within 200 ms; stopping it")
        hub.wait_log("sink sluggish (plugin slowstart) worker 0 stopped unexpectedly: did not "
                     "signal ready within 200 ms; restarting in 500 ms")
        # Restarted after its back-off, it times out again: counted each time.
        wait_until(lambda: hub.stage("sluggish")["restarts"] >= 2, timeout=5,
                   what="a second ready time-out")
        hub.wait_log("restarting in 1000 ms")
        sluggish = hub.stage("sluggish")
        self.assertEqual(sluggish["workers"][0]["last_error"],
                         "did not signal ready within 200 ms")
        self.assertGreaterEqual(sluggish["workers"][0]["restarts"], 2)
        self.assertNotEqual(sluggish["workers"][0]["state"], "running")
        # A slow start within its ready_timeout is fine; other stages serve throughout.
        hub.wait_running("prompt")
        self.assertEqual(hub.stage("prompt")["restarts"], 0)
        published = [hub.publish("signal:created", {"n": n}) for n in range(20)]
        wait_records(out["path"], lambda r: len(r) >= 20)
        self.assertEqual(event_ids(read_records(out["path"])), published)
        self.assertEqual(hub.stage("ok")["restarts"], 0)
        self.assertFalse(log_times(hub.log(), "sink sluggish (plugin slowstart) worker 0 ready"),
                         "never counted as ready")

    def test_instance_after_a_ready_timeout_starts_clean(self):
        """An instance that timed out and then failed without ever reading the hub's "$TERM"
        must not leave that "$TERM" to stop its successor (a spurious crash, "stopped")."""
        hub = self.new_hub(lambda d: "chain = c\n" + stage(
            "sink", "hung", "slowstart", delay_ms=600, stuck="true", slow_instances=1,
            ready_timeout=200))
        hub.wait_log("sink hung (plugin slowstart) worker 0 stopped unexpectedly: did not signal "
                     "ready within 200 ms; restarting in 500 ms")
        hub.wait_running("hung")
        time.sleep(0.5)  # a spurious stop of the new instance shows well within this
        hung = hub.stage("hung")
        self.assertEqual(hub.log().count("stopped unexpectedly"), 1,
                         "the successor was stopped by its predecessor's stale $TERM:\n"
                         + hub.log())
        self.assertEqual(hung["restarts"], 1, hung)
        self.assertEqual(hung["workers"][0]["last_error"], "did not signal ready within 200 ms")
        self.assertEqual(hung["workers"][0]["state"], "running")

    def test_slow_sink_gets_drops_counted_and_a_gap_event(self):
        out = {}

        def chains(d):
            out["slow"] = os.path.join(d, "slow.txt")
            out["fast"] = os.path.join(d, "fast.txt")
            return ("chain = c\n"
                    + stage("sink", "slow", "recorder", output=out["slow"], delay_ms=30)
                    + stage("sink", "fast", "recorder", output=out["fast"]))
        hub = self.new_hub(chains, hub_extra="hwm = 10")
        hub.wait_running("slow")
        subscriber = hub.subscriber("load:")
        published = [hub.publish("load:tick", {"n": n}) for n in range(200)]
        hub.wait_log("stage slow is not keeping up: dropping events from id")
        # Let the slow sink drain what was queued, then one more event carries the gap to it.
        slow = hub.stage("slow")
        self.assertGreater(slow["dropped"], 0)
        wait_records(out["slow"], lambda r: len(r) >= slow["delivered"], timeout=20,
                     what="the queued events")
        published.append(hub.publish("load:tick", {"n": 200}))
        records = wait_records(out["slow"], lambda r: published[-1] in event_ids(r))
        slow = hub.stage("slow")
        ids = event_ids(records)
        gaps = [r for r in records if r[0] == "gap"]
        self.assertTrue(gaps, "a $gap event announced the dropped ids")
        missed = []
        for position, record in enumerate(records):
            if record[0] != "gap":
                continue
            self.assertLessEqual(record[1], record[2])
            missed += range(record[1], record[2] + 1)
            self.assertLess(position + 1, len(records), "a $gap precedes the next event")
            self.assertEqual(records[position + 1][0], "event")
            self.assertEqual(records[position + 1][1], record[2] + 1,
                             "the gap ends right before the next event it receives")
        self.assertEqual(sorted(ids + missed), published,
                         "recorded and announced-missed ids together are every id, once")
        self.assertEqual(ids, sorted(ids))
        self.assertEqual(slow["dropped"], len(missed), "every drop counted in STATUS")
        self.assertEqual(slow["delivered"], len(ids))
        # The others were unaffected.
        self.assertEqual([e["id"] for e in subscriber.recv_n(len(published))], published)
        wait_records(out["fast"], lambda r: len(r) >= len(published))
        self.assertEqual(event_ids(read_records(out["fast"])), published)
        fast = hub.stage("fast")
        self.assertEqual((fast["dropped"], fast["delivered"]), (0, len(published)))


class RefusalTest(unittest.TestCase):
    """livehubd refuses broken plugins before it starts anything: exit 1, reason on stderr."""

    def conf(self, plugin):
        hub = Hub(start=False)  # only its conf file is used: it is never started
        hub.write_conf("chain = c\n" + stage("sink", "broken", plugin))
        with open(hub.conf_path) as conf:
            line = next(n for n, text in enumerate(conf, 1) if "sink = broken" in text)
        return hub.conf_path, line

    def assert_refused(self, plugin, *fragments):
        path, line = self.conf(plugin)
        for args in (["--check", path], [path]):
            with self.subTest(plugin=plugin, args=args[:-1]):
                try:
                    result = subprocess.run([LIVEHUBD] + args, capture_output=True, text=True,
                                            timeout=15)
                except subprocess.TimeoutExpired:
                    self.fail("livehubd %s started with plugin %s instead of refusing it"
                              % (args, plugin))
                self.assertEqual(result.returncode, 1, result.stderr + result.stdout)
                self.assertTrue(result.stderr.startswith("livehubd: %s:" % path), result.stderr)
                for fragment in fragments:
                    self.assertIn(fragment.format(path=path, line=line), result.stderr)
                self.assertEqual(result.stderr.count("\n"), 1, "one clear line")
        return path, line

    def test_descriptor_of_another_abi(self):
        self.assert_refused("badabi", "'badabi'", "ABI 2", "ABI 1")

    def test_library_built_for_another_abi_only(self):
        self.assert_refused("v2only", "'v2only' is built for ABI 2", "lh_plugin_v2")

    def test_library_without_livehub_symbol(self):
        self.assert_refused("notaplugin", "notaplugin.so is not a livehub plugin",
                            "lh_plugin_v1")

    def test_validate_failure_names_file_line_and_key(self):
        self.assert_refused("failvalidate", "{path}:{line}: limit: 5 is refused")

    def test_descriptor_name_must_match_file_name(self):
        self.assert_refused("badname", "badname.so holds plugin 'othername'")

    def test_unknown_plugin_name(self):
        self.assert_refused("nosuchplugin", "no plugin file nosuchplugin.so in",
                            TEST_PLUGIN_DIR, PLUGIN_DIR)

    def test_plugin_line_is_named(self):
        path, line = self.conf("badabi")
        result = subprocess.run([LIVEHUBD, "--check", path], capture_output=True, text=True,
                                timeout=15)
        self.assertRegex(result.stderr, r"^livehubd: %s:%d: plugin: " % (re.escape(path), line + 1))

    def test_good_plugins_pass_the_check(self):
        hub = Hub(start=False)
        hub.write_conf("chain = c\n" + stage("source", "e", "emitter")
                       + stage("sink", "r", "recorder", output=os.path.join(hub.dir, "r.txt"))
                       + stage("sink", "s", "slowstart"))
        result = subprocess.run([LIVEHUBD, "--check", hub.conf_path], capture_output=True,
                                text=True, timeout=15)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("OK (3 stages)", result.stdout)


if __name__ == "__main__":
    unittest.main()
