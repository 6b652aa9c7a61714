"""Operator commands for a running stage: `livehub stage NAME COMMAND [ARG]` and the control
request STAGE behind it, forwarded to every running worker over its pipe and answered with what
the plugin said. The recorder test plugin takes `echo` and `sleep`; log and abi10 (a plugin
described as ABI 1.0) take no commands."""
import json
import os
import shutil
import subprocess
import tempfile
import time
import unittest

from hubtest import LIVEHUB_CLI, HubTestCase


def recorder(name, path, **options):
    lines = ["    sink = %s" % name, "        plugin = recorder", "        output = %s" % path]
    lines += ["        %s = %s" % item for item in options.items()]
    return "\n".join(lines) + "\n"


def read(path):
    if not os.path.exists(path):
        return ""
    with open(path) as text:
        return text.read()


class StageCommandTest(HubTestCase):
    def cli(self, hub, *args, timeout=30):
        return subprocess.run([LIVEHUB_CLI, "--control", hub.control_endpoint] + list(args),
                              capture_output=True, text=True, timeout=timeout)

    def recorder_hub(self, extra=""):
        self.out = os.path.join(self.hub_dir, "rec.txt")
        self.out2 = os.path.join(self.hub_dir, "pair.txt")
        hub = self.hub("chain = c\n" + recorder("rec", self.out)
                       + recorder("pair", self.out2, delivery="queue", workers=2)
                       + "    sink = console\n        plugin = log\n"
                       + "        output = %s\n" % os.path.join(self.hub_dir, "log.txt")
                       + extra)
        for stage in ("rec", "pair", "console"):
            hub.wait_running(stage)
        return hub

    def setUp(self):
        super().setUp()
        self.hub_dir = tempfile.mkdtemp(prefix="livehub-stage-")
        self.addCleanup(shutil.rmtree, self.hub_dir, True)

    def test_command_reaches_every_worker_and_the_reply_comes_back(self):
        hub = self.recorder_hub()
        run = self.cli(hub, "stage", "rec", "echo", '{"a": [1, 2]}')
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertEqual(json.loads(run.stdout), {"worker": 0, "args": {"a": [1, 2]}})
        bare = self.cli(hub, "stage", "rec", "echo", "on")
        self.assertEqual(json.loads(bare.stdout)["args"], "on", "a bare word is a JSON string")
        none = self.cli(hub, "stage", "rec", "echo")
        self.assertIsNone(json.loads(none.stdout)["args"], "no ARG is null")
        both = self.cli(hub, "stage", "pair", "echo", "7")
        self.assertEqual(both.returncode, 0, both.stderr)
        self.assertEqual([json.loads(line) for line in both.stdout.splitlines()],
                         [{"worker": 0, "args": 7}, {"worker": 1, "args": 7}],
                         "one line per worker, in worker order")
        # The raw control request, as any ZeroMQ client sends it.
        self.assertEqual(hub.control(b"STAGE", b"rec", b"echo", b'"x"'),
                         [b"OK", b'{"worker":0,"args":"x"}'])
        # Events still flow to the stage around the commands.
        event_id = hub.publish("t:1", {})
        deadline = time.time() + 10
        while time.time() < deadline and not read(self.out).strip():
            time.sleep(0.05)
        self.assertEqual(read(self.out), "%d t:1 0\n" % event_id)

    def test_bad_requests_get_clear_errors(self):
        hub = self.recorder_hub()
        unknown = self.cli(hub, "stage", "nope", "echo")
        self.assertEqual(unknown.returncode, 1)
        self.assertIn("no stage 'nope' (stages: rec, pair, console)", unknown.stderr)
        refused = self.cli(hub, "stage", "rec", "launch", "1")
        self.assertEqual(refused.returncode, 1)
        self.assertIn("unknown command 'launch' (echo, sleep)", refused.stderr)
        two = self.cli(hub, "stage", "pair", "launch")
        self.assertIn("worker 0: unknown command 'launch' (echo, sleep); worker 1: unknown",
                      two.stderr)
        bad_arg = self.cli(hub, "stage", "rec", "echo", "{oops")
        self.assertEqual(bad_arg.returncode, 2)
        self.assertIn("ARG is neither JSON nor a bare word", bad_arg.stderr)
        self.assertEqual(hub.control(b"STAGE", b"rec", b"echo", b"{oops")[0], b"ERR")
        self.assertIn(b"args: not JSON", hub.control(b"STAGE", b"rec", b"echo", b"{oops")[1])
        self.assertEqual(hub.control(b"STAGE", b"rec", b"bad name"),
                         [b"ERR", b"a command name is 1..64 letters, digits, '_', '.', ':' or '-'"])
        self.assertEqual(hub.control(b"STAGE", b"rec"),
                         [b"ERR", b"STAGE takes [stage][command][args JSON]"])
        self.assertEqual(hub.control(b"STAGE", b"rec", b"echo", b"1", b"2"),
                         [b"ERR", b"STAGE takes [stage][command][args JSON]"])
        self.assertEqual(hub.control(b"NOPE")[1],
                         b"unknown command (PING, STATUS, PUBLISH, REPLAY, RELOAD, STAGE)")
        # Nothing of that disturbed the stages.
        self.assertEqual(json.loads(self.cli(hub, "stage", "rec", "echo", "1").stdout)["args"], 1)

    def test_plugins_without_commands_say_so(self):
        hub = self.recorder_hub("    sink = old\n        plugin = abi10\n")
        hub.wait_running("old")  # a plugin built against ABI 1.0 still loads and runs
        for stage, plugin in (("console", "log"), ("old", "abi10")):
            run = self.cli(hub, "stage", stage, "dnd", "on")
            self.assertEqual(run.returncode, 1)
            self.assertIn("stage '%s' (plugin %s) does not take commands" % (stage, plugin),
                          run.stderr)
        hub.publish("t:1", {})
        self.assertEqual(hub.stage("old")["workers"][0]["state"], "running")

    def test_stage_not_running(self):
        # A recorder that cannot open its file fails in create() and waits out back-offs.
        hub = self.hub("chain = c\n" + recorder("broken", "/nonexistent/dir/out.txt"))
        deadline = time.time() + 10
        while hub.stage("broken")["workers"][0]["state"] != "backoff":
            self.assertLess(time.time(), deadline, "the stage never failed")
            time.sleep(0.05)
        run = self.cli(hub, "stage", "broken", "echo")
        self.assertEqual(run.returncode, 1)
        self.assertRegex(run.stderr, r"stage 'broken' is not running \(worker 0: "
                                     r"(backoff|starting)\)")

    def test_a_plugin_that_does_not_answer_times_out_and_routing_goes_on(self):
        hub = self.recorder_hub()
        slow = subprocess.Popen([LIVEHUB_CLI, "--control", hub.control_endpoint, "stage", "rec",
                                 "sleep", "7000"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        time.sleep(0.5)
        # While the hub waits for the stage, it keeps answering and routing.
        self.assertGreater(hub.publish("t:during", {}), 0)
        self.assertEqual(json.loads(self.cli(hub, "stage", "pair", "echo", "1").stdout.split()[0]),
                         {"worker": 0, "args": 1})
        out, err = slow.communicate(timeout=30)
        self.assertEqual(slow.returncode, 1)
        self.assertIn("livehub: stage rec sleep: no answer within 5000 ms", err)
        hub.wait_log("stage rec: a command got no answer within 5000 ms")
        # The late answer is dropped; the next command gets its own answer.
        time.sleep(2.5)
        run = self.cli(hub, "stage", "rec", "echo", "2")
        self.assertEqual(json.loads(run.stdout), {"worker": 0, "args": 2})


if __name__ == "__main__":
    unittest.main()
