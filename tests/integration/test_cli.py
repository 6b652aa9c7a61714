"""The `livehub` command line: pub, sub (with --since resume), status, check, token, plugins."""
import base64
import hashlib
import hmac
import json
import os
import subprocess
import time
import unittest

from hubtest import LIVEHUB_CLI, LIVEHUBD, PLUGIN_DIR, HubTestCase


def b64url_decode(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class CliTest(HubTestCase):
    def cli(self, hub, *args, timeout=30, env=None):
        command = [LIVEHUB_CLI]
        if hub:
            command += ["--control", hub.control_endpoint, "--egress", hub.egress]
        return subprocess.run(command + list(args), capture_output=True, text=True,
                              timeout=timeout, env=dict(os.environ, **(env or {})))

    def test_pub_then_sub_since_replays_then_follows_live(self):
        hub = self.hub()
        first = self.cli(hub, "pub", "assignment:created", '{"signalIdentifier":"S-1"}',
                         "--to", "user:42", "--key", "k1")
        self.assertEqual(first.returncode, 0, first.stderr)
        first_id = int(first.stdout)
        second_id = hub.publish("signal:created", {"n": 2})
        third_id = hub.publish("assignment:responseChanged", {"n": 3})
        sub = subprocess.Popen([LIVEHUB_CLI, "--control", hub.control_endpoint, "--egress",
                                hub.egress, "sub", "assignment:", "--since", "0", "--count", "3",
                                "--timeout", "20"], stdout=subprocess.PIPE, text=True)
        time.sleep(1.0)
        fourth_id = hub.publish("assignment:created", {"n": 4})
        out, _ = sub.communicate(timeout=30)
        self.assertEqual(sub.returncode, 0)
        events = [json.loads(line) for line in out.splitlines()]
        self.assertEqual([e["id"] for e in events], [first_id, third_id, fourth_id])
        self.assertNotIn(second_id, [e["id"] for e in events])
        self.assertEqual(events[0]["to"], ["user:42"])
        self.assertEqual(events[0]["key"], "k1")
        self.assertEqual(events[0]["data"], {"signalIdentifier": "S-1"})

    def test_pub_reports_refusals_and_duplicates(self):
        hub = self.hub()
        bad_json = self.cli(hub, "pub", "signal:created", "{not json")
        self.assertEqual(bad_json.returncode, 1)
        self.assertIn("JSON", bad_json.stderr)
        reserved = self.cli(hub, "pub", "$hello", "{}")
        self.assertEqual(reserved.returncode, 1)
        self.assertIn("reserved", reserved.stderr)
        self.assertEqual(self.cli(hub, "pub", "a:b", "{}", "--key", "same").returncode, 0)
        again = self.cli(hub, "pub", "a:b", "{}", "--key", "same")
        self.assertEqual(again.returncode, 0)
        self.assertIn("duplicate", again.stderr)

    def test_sub_reports_reset_for_a_lost_epoch(self):
        hub = self.hub()
        hub.publish("signal:created", {})
        result = self.cli(hub, "sub", "--since", "1", "--epoch", "gone", "--timeout", "1")
        line = json.loads(result.stdout.splitlines()[0])
        self.assertEqual(line["type"], "$reset")

    def test_status(self):
        hub = self.hub("chain = c\n    sink = console\n        plugin = log\n"
                       "        output = %s/out.jsonl\n" % "/tmp")
        result = self.cli(hub, "status")
        self.assertEqual(result.returncode, 0, result.stderr)
        status = json.loads(result.stdout)
        self.assertEqual(status["stages"][0]["plugin"], "log")
        self.assertEqual(status["stages"][0]["workers"][0]["state"], "running")
        self.assertEqual(status["metrics"]['livehub_stage_restarts_total{stage="console"}'], 0)
        self.assertIn('livehub_log_lines_total{stage="console"}', status["metrics"],
                      "plugins' own metrics are in the status too")

    def test_log_sink_type_patterns_include_and_exclude(self):
        out = os.path.join(self.hub(start=False).dir, "out.jsonl")
        hub = self.hub("chain = c\n    sink = console\n        plugin = log\n"
                       "        output = %s\n        types = signal:* note:* !signal:secret*\n"
                       "    sink = rest\n        plugin = log\n        output = %s.rest\n"
                       "        types = !signal:*\n" % (out, out))
        for type_ in ("signal:created", "signal:secretChanged", "note:a", "other:x"):
            hub.publish(type_, {})
        last = hub.publish("note:end", {})

        def types_in(path):
            deadline = time.time() + 10
            while time.time() < deadline:
                with open(path) as lines:
                    seen = [json.loads(line) for line in lines]
                if seen and seen[-1]["id"] == last:
                    return [event["type"] for event in seen]
                time.sleep(0.05)
            self.fail("%s never got event %d" % (path, last))

        self.assertEqual(types_in(out), ["signal:created", "note:a", "note:end"])
        self.assertEqual(types_in(out + ".rest"), ["note:a", "other:x", "note:end"])

    def test_no_hub_is_a_clear_error(self):
        result = self.cli(None, "--control", "ipc:///nonexistent/livehub-nobody-here.control", "status", timeout=60)
        self.assertEqual(result.returncode, 1)
        self.assertIn("is livehubd running?", result.stderr)

    def test_check(self):
        hub = self.hub(start=False)
        good = self.cli(None, "check", os.path.join(os.environ.get("LIVEHUB_SOURCE_DIR", "../.."),
                                                    "conf", "livehub.conf"),
                        env={"LIVEHUB_PLUGIN_DIR": PLUGIN_DIR})
        self.assertEqual(good.returncode, 0, good.stderr)
        self.assertIn("OK", good.stdout)
        with open(hub.conf_path, "w") as conf:
            conf.write("chain = c\n    sink = s\n        plugin = nosuchplugin\n")
        bad = self.cli(None, "check", hub.conf_path, env={"LIVEHUB_PLUGIN_DIR": PLUGIN_DIR})
        self.assertEqual(bad.returncode, 1)
        self.assertIn("livehub.conf:3: plugin: cannot use plugin 'nosuchplugin': no plugin file "
                      "nosuchplugin.so", bad.stderr)
        daemon = subprocess.run([LIVEHUBD, "--check", hub.conf_path], capture_output=True,
                                text=True, env=dict(os.environ, LIVEHUB_PLUGIN_DIR=PLUGIN_DIR))
        self.assertEqual(daemon.returncode, 1)
        self.assertIn("nosuchplugin", daemon.stderr)

    def test_token_is_a_verifiable_hs256_jwt(self):
        secret = "test-secret-123"
        result = self.cli(None, "token", "--sub", "42", "--role", "startup", "--ttl", "60",
                          "--secret", "env:LIVEHUB_TEST_SECRET",
                          env={"LIVEHUB_TEST_SECRET": secret})
        self.assertEqual(result.returncode, 0, result.stderr)
        token = result.stdout.strip()
        self.assertNotIn(secret, result.stdout + result.stderr)
        header, payload, signature = token.split(".")
        expected = hmac.new(secret.encode(), (header + "." + payload).encode(),
                            hashlib.sha256).digest()
        self.assertEqual(b64url_decode(signature), expected)
        self.assertEqual(json.loads(b64url_decode(header)), {"alg": "HS256", "typ": "JWT"})
        claims = json.loads(b64url_decode(payload))
        self.assertEqual((claims["sub"], claims["role"]), ("42", "startup"))
        self.assertAlmostEqual(claims["exp"] - time.time(), 60, delta=5)
        refused = self.cli(None, "token", "--sub", "42", "--role", "x", "--secret", "inline")
        self.assertEqual(refused.returncode, 1)
        self.assertIn("env:NAME or file:PATH", refused.stderr)
        # The default conf's token_secret is random: only the hub knows it, so the CLI says so.
        default_conf = os.path.join(os.environ["LIVEHUB_SOURCE_DIR"], "conf", "livehub.conf")
        random_secret = self.cli(None, "--conf", default_conf, "token", "--sub", "1",
                                 "--role", "admin")
        self.assertEqual(random_secret.returncode, 2)
        self.assertIn("token_secret is random", random_secret.stderr)
        self.assertEqual(random_secret.stdout, "")

    def test_plugins_lists_options(self):
        result = self.cli(None, "plugins", env={"LIVEHUB_PLUGIN_DIR": PLUGIN_DIR})
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("log 1.0", result.stdout)
        self.assertIn("bridge 1.0", result.stdout)
        self.assertIn("connect", result.stdout)


if __name__ == "__main__":
    unittest.main()
