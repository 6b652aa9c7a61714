"""Chains that chain (docs/CHAINS.md): in-line filters between a chain's sources (and the external
entries it claims) and the router; the built-in keep, drop, redact, route and rename; their
counters; `livehub check` on every example conf; and the acceptance contract of
conf/examples/redact.conf, run exactly as a user would (fixed ports 7500/7501: this test runs
serially, ctest RESOURCE_LOCK livehub_ports_7500)."""
import glob
import os
import subprocess
import tempfile
import time
import unittest

import zmq

from hubtest import (CONTEXT, LIVEHUB_CLI, LIVEHUBD, SANITIZER_MARKS, SOURCE_DIR, HubTestCase,
                     Subscriber, free_port, pack_event, unpack)

CLEAN = """
chain = cleaned
    entries = ingress control
    filter = no-debug
        plugin = drop
        types = debug:* trace:*
    filter = small-only
        plugin = drop
        types = order:*
        where = data.total > 100; data.currency in EUR,USD
    filter = no-secrets
        plugin = redact
        fields = data.password data.*.token data.list.*.secret
    filter = names
        plugin = rename
        map = airtable:Assignments:created=assignment:created legacy:*=modern:*
    filter = to-assignee
        plugin = route
        types = assignment:*
        to = user:{data.assigneeId} role:{data.role} admin
"""


def collect(subscriber, last_type, timeout=20.0):
    """Every event up to and including the first of last_type."""
    events, deadline = [], time.time() + timeout
    while time.time() < deadline:
        event = subscriber.recv(max(0.0, deadline - time.time()))
        if event is None:
            break
        events.append(event)
        if event["type"] == last_type:
            return events
    raise AssertionError("%s never came; got %s" % (last_type, events))


class BuiltinFilterTests(HubTestCase):
    def test_each_builtin_filter_in_line_before_the_router(self):
        hub = self.hub(CLEAN)
        sub = hub.subscriber()
        push = hub.pusher()
        sent = [
            ("user:login", {"name": "ann", "password": "pw",
                            "session": {"token": "t1", "ttl": 5},
                            "list": [{"secret": 1, "keep": 2}]}),
            ("debug:cache", {"hit": True}),
            ("trace:span", {}),
            ("order:placed", {"total": 150, "currency": "EUR"}),   # dropped: both conditions
            ("order:placed", {"total": 150, "currency": "GBP"}),   # kept
            ("order:placed", {"total": 50, "currency": "EUR"}),    # kept
            ("assignment:created", {"assigneeId": "42", "role": "client"}),
            ("airtable:Assignments:created", {"assigneeId": 7}),
            ("legacy:thing", {"x": 1}),
            ("end", None),
        ]
        for type_, data in sent:
            push.send_multipart([type_.encode(), pack_event(type_, data, to=None)])
        events = collect(sub, "end")
        types = [event["type"] for event in events]
        self.assertEqual(types, ["user:login", "order:placed", "order:placed",
                                 "assignment:created", "assignment:created", "modern:thing", "end"])
        login = events[0]["data"]
        self.assertEqual(login, {"name": "ann", "session": {"ttl": 5}, "list": [{"keep": 2}]})
        self.assertEqual([e["data"]["currency"] for e in events[1:3]], ["GBP", "EUR"])
        self.assertEqual(events[3]["to"], ["user:42", "role:client", "admin"])
        self.assertEqual(events[4]["to"], ["user:7", "admin"])  # no data.role: that one is left out
        self.assertEqual(events[4]["data"], {"assigneeId": 7})

        # dropped events never reach history; the counters say what each filter did
        status, meta, replayed = hub.replay(0)
        self.assertEqual([e["type"] for e in replayed], types)
        filters = {f["name"]: f for f in hub.status()["filters"]}
        self.assertEqual(filters["no-debug"]["dropped"], 2)
        self.assertEqual(filters["small-only"]["dropped"], 1)
        self.assertEqual(filters["no-secrets"]["changed"], 1)
        self.assertEqual(filters["names"]["changed"], 2)
        self.assertEqual(filters["to-assignee"]["changed"], 2)
        self.assertEqual(filters["to-assignee"]["passed"], 5)
        self.assertEqual(filters["no-debug"]["chain"], "cleaned")

    def test_cli_pub_goes_through_the_chain_and_unclaimed_entries_do_not(self):
        # the control entry is claimed, the tcp ingress is not
        hub = self.hub(CLEAN.replace("entries = ingress control", "entries = control"))
        sub = hub.subscriber()
        self.assertEqual(hub.publish("debug:x", {}), 0)  # dropped: no id
        self.assertGreater(hub.publish("user:x", {"password": "p", "a": 1}), 0)
        push = hub.pusher()
        push.send_multipart([b"debug:raw", pack_event("debug:raw", {})])
        push.send_multipart([b"end", pack_event("end", None)])
        events = collect(sub, "end")
        self.assertEqual([(e["type"], e["data"]) for e in events],
                         [("user:x", {"a": 1}), ("debug:raw", {}), ("end", None)])

    def test_a_stage_of_the_chain_is_a_source_of_it(self):
        hub = self.hub("""
chain = produced
    source = gen
        plugin = emitter
        count = 3
        type = debug:tick
    filter = no-debug
        plugin = drop
        types = debug:*
chain = other
    source = gen2
        plugin = emitter
        count = 2
        type = debug:other
""")
        sub = hub.subscriber("debug:")
        deadline = time.time() + 20
        while hub.status()["counters"]["accepted"] < 2 and time.time() < deadline:
            time.sleep(0.05)
        filters = {f["name"]: f for f in hub.status()["filters"]}
        while filters["no-debug"]["dropped"] < 3 and time.time() < deadline:
            time.sleep(0.05)
            filters = {f["name"]: f for f in hub.status()["filters"]}
        self.assertEqual(filters["no-debug"]["dropped"], 3)
        status, meta, replayed = hub.replay(0)
        self.assertEqual({e["type"] for e in replayed}, {"debug:other"})
        sub.close()

    def test_http_publish_is_a_source_of_its_chain(self):
        """http_publish answers asynchronously (lh_io_publish_send); its events pass its chain's
        filters before they get ids: a dropped one is answered with id 0."""
        import http.client
        import json
        port, key = free_port(), "chains-key-0123456789abcdef"
        hub = self.hub("""
chain = backend
    source = api
        plugin = http_publish
        listen = 127.0.0.1:%d
        keys = env:LIVEHUB_CHAINS_KEYS
    filter = no-debug
        plugin = drop
        types = debug:*
    filter = no-secrets
        plugin = redact
        fields = data.password
""" % port, env={"LIVEHUB_CHAINS_KEYS": key})
        hub.wait_running("api")
        sub = hub.subscriber("order:")
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            connection.request("POST", "/v1/publish", body=json.dumps(
                [{"type": "debug:x", "data": 1},
                 {"type": "order:new", "data": {"n": 1, "password": "p"}}]),
                headers={"Authorization": "Bearer " + key, "Content-Type": "application/json"})
            response = connection.getresponse()
            answer = json.loads(response.read())
        finally:
            connection.close()
        self.assertEqual(response.status, 200, answer)
        self.assertEqual(len(answer["ids"]), 2, answer)
        self.assertIsNone(answer["ids"][0])  # not published, as a duplicate is answered
        self.assertGreater(answer["ids"][1], 0)
        event = sub.recv()
        self.assertEqual((event["type"], event["data"], event["id"]),
                         ("order:new", {"n": 1}, answer["ids"][1]))

    def test_one_event_becomes_several_and_each_passes_the_filters_below(self):
        hub = self.hub("""
chain = c
    entries = control
    filter = split
        plugin = splitter
    filter = no-secrets
        plugin = redact
        fields = data.password
""")
        sub = hub.subscriber("item:")
        first = hub.publish("batch:item:new", [{"n": 1, "password": "a"}, {"n": 2}, {"n": 3}])
        events = sub.recv_n(3)
        self.assertEqual([e["data"] for e in events], [{"n": 1}, {"n": 2}, {"n": 3}])
        self.assertEqual([e["id"] for e in events], [first, first + 1, first + 2])
        # a filter's further events are bounded: 64 per incoming event, then it is an error
        self.assertEqual(hub.publish("batch:item:many", [{"n": i} for i in range(65)]), 0)
        filters = {f["name"]: f for f in hub.status()["filters"]}
        self.assertEqual((filters["split"]["dropped"], filters["split"]["errors"]), (1, 1))
        self.assertEqual(filters["no-secrets"]["changed"], 1)

    def test_rename_moves_fields(self):
        hub = self.hub("""
chain = c
    entries = control
    filter = fields
        plugin = rename
        move = data.assignee=data.assigneeId data.meta.at=data.when data.gone=data.nowhere
""")
        sub = hub.subscriber("a:")
        hub.publish("a:b", {"assignee": 42, "meta": {"at": 5, "by": "x"}, "keep": 1})
        event = sub.recv()
        self.assertEqual(event["data"], {"assigneeId": 42, "meta": {"by": "x"}, "when": 5,
                                         "keep": 1})
        hub.publish("a:c", {"keep": 2})  # nothing to move: passed untouched
        self.assertEqual(sub.recv()["data"], {"keep": 2})
        (entry,) = hub.status()["filters"]
        self.assertEqual((entry["changed"], entry["passed"]), (1, 1))

    def test_reload_remakes_the_filters_and_a_bad_one_keeps_the_running_chain(self):
        hub = self.hub(CLEAN)
        self.assertEqual(hub.publish("debug:x", {}), 0)
        hub.write_conf(CLEAN.replace("types = debug:* trace:*", "types = trace:*"))
        self.assertEqual(hub.control(b"RELOAD")[0], b"OK")
        self.assertGreater(hub.publish("debug:x", {}), 0)  # no longer dropped
        self.assertEqual(hub.publish("trace:x", {}), 0)
        hub.write_conf(CLEAN.replace("to = user:{data.assigneeId}", "to = user:{data.id"))
        reply = hub.control(b"RELOAD")
        self.assertEqual(reply[0], b"ERR", reply)
        self.assertIn(b"has an unclosed {", reply[1])
        self.assertEqual(hub.publish("trace:x", {}), 0)  # the running chain stays
        self.assertGreater(hub.publish("debug:x", {}), 0)

    def test_deprecated_filter_role_for_a_processor_still_runs_with_a_warning(self):
        hub = self.hub("""
chain = c
    filter = presence
        plugin = presence
        subscribe = presence:
""")
        hub.wait_log("`filter =` naming a processor is deprecated")
        self.assertEqual(hub.stage("presence")["role"], "processor")


class CheckTests(unittest.TestCase):
    def check(self, text):
        with tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False) as conf:
            conf.write(text)
        try:
            return subprocess.run([LIVEHUB_CLI, "check", conf.name], capture_output=True,
                                  text=True, timeout=60), conf.name
        finally:
            pass

    def test_bad_filter_options_are_named_with_file_and_line(self):
        cases = [
            ("chain = c\n    filter = f\n        plugin = drop\n",
             ":2: set types or where"),
            ("chain = c\n    filter = f\n        plugin = drop\n        where = data.x ~ 3\n",
             ":2: where: 'data.x ~ 3' needs PATH OP [VALUE]"),
            ("chain = c\n    filter = f\n        plugin = keep\n        where = data.n > lots\n",
             "is not a number"),
            ("chain = c\n    filter = f\n        plugin = redact\n        fields = data..x\n",
             "is not a path"),
            ("chain = c\n    filter = f\n        plugin = route\n        to = user:{data.id\n",
             "has an unclosed {"),
            ("chain = c\n    filter = f\n        plugin = rename\n        map = a\n",
             "must be FROM=TO"),
            ("chain = c\n    filter = f\n        plugin = rename\n        move = type=data.t\n",
             "move: 'type=data.t' must be data.FROM=data.TO"),
            ("chain = c\n    filter = f\n        plugin = rename\n",
             "name at least one map FROM=TO or move"),
            ("chain = c\n    filter = f\n        plugin = rename\n        map = a=b\n"
             "        subscribe = x\n", ":5: subscribe: a filter runs in-line"),
            ("chain = c\n    entries = ingress nowhere\n    filter = f\n        plugin = drop\n"
             "        types = x\n", ":2: entries: 'nowhere' is not an external entry"),
            ("chain = c\n    entries = ingress\n    filter = f\n        plugin = drop\n"
             "        types = x\nchain = d\n    entries = ingress\n    filter = g\n"
             "        plugin = drop\n        types = y\n",
             ":7: entries: ingress already goes through chain 'c'"),
            ("chain = c\n    filter = f\n        plugin = redact\n        fieldz = data.x\n",
             ":4: fieldz: unknown key 'fieldz' for plugin 'redact'"),
        ]
        for text, expected in cases:
            result, path = self.check(text)
            os.unlink(path)
            self.assertEqual(result.returncode, 1, (text, result.stdout, result.stderr))
            self.assertIn(expected, result.stderr, text)
            self.assertTrue(result.stderr.startswith(path + ":"), result.stderr)

    def test_every_example_conf_passes_check(self):
        confs = sorted(glob.glob(os.path.join(SOURCE_DIR, "conf", "examples", "*.conf")))
        confs.append(os.path.join(SOURCE_DIR, "conf", "livehub.conf"))
        self.assertIn("redact.conf", [os.path.basename(c) for c in confs])
        for conf in confs:
            result = subprocess.run([LIVEHUB_CLI, "check", conf], capture_output=True, text=True,
                                    timeout=60)
            self.assertEqual(result.returncode, 0, (conf, result.stderr))
            self.assertIn("OK", result.stdout)
            self.assertNotIn("deprecated", result.stderr + result.stdout, conf)


class RedactExampleAcceptance(unittest.TestCase):
    """The acceptance contract of issue 15, literally: `livehubd conf/examples/redact.conf`."""

    def test_redact_example(self):
        conf = os.path.join(SOURCE_DIR, "conf", "examples", "redact.conf")
        with tempfile.TemporaryDirectory() as runtime:
            # nothing but a private runtime directory for the control socket, so that a hub
            # another test left running cannot answer for this one
            env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "XDG_RUNTIME_DIR": runtime}
            for name in ("ASAN_OPTIONS", "LSAN_OPTIONS", "UBSAN_OPTIONS"):
                if name in os.environ:
                    env[name] = os.environ[name]
            log_path = os.path.join(runtime, "livehubd.log")
            with open(log_path, "wb") as log:
                hub = subprocess.Popen([LIVEHUBD, conf], stdout=log, stderr=subprocess.STDOUT,
                                       env=env)
            try:
                self.run_contract(runtime)
            finally:
                hub.terminate()
                code = hub.wait(60)
                with open(log_path, errors="replace") as log:
                    text = log.read()
                self.assertEqual(code, 0, text)
                self.assertFalse([m for m in SANITIZER_MARKS if m in text], text)

    def run_contract(self, runtime):
        sub = Subscriber("tcp://127.0.0.1:7501", hello_timeout=30)
        push = CONTEXT.socket(zmq.PUSH)
        push.linger = 5000
        push.connect("tcp://127.0.0.1:7500")
        try:
            expected = []
            for n in range(50):
                key = "k%d" % (n - 1 if n % 10 == 9 else n)  # one in ten reuses a key
                if n % 5 == 0:
                    type_, data = "user:updated", {"n": n, "password": "hunter2", "email": "a@b"}
                elif n % 5 == 1:
                    type_, data = "debug:trace", {"n": n}
                elif n % 5 == 2:
                    type_, data = "assignment:created", {"n": n, "assigneeId": "42"}
                elif n % 5 == 3:
                    type_, data = "airtable:Assignments:created", {"n": n, "assigneeId": "7"}
                else:
                    type_, data = "note:added", {"n": n}
                push.send_multipart([type_.encode(), pack_event(type_, data, key=key)])
                if n % 10 != 9 and not type_.startswith("debug:"):
                    expected.append(n)
            push.send_multipart([b"end", pack_event("end", None)])
            events = collect(sub, "end", timeout=60)[:-1]
            self.assertEqual([e["data"]["n"] for e in events], expected)  # each key once
            for event in events:
                n = event["data"]["n"]
                self.assertFalse(event["type"].startswith("debug:"))
                if n % 5 == 0:
                    self.assertEqual(event["data"], {"n": n, "email": "a@b"})
                if n % 5 == 2:
                    self.assertEqual(event["type"], "assignment:created")
                    self.assertIn("user:42", event["to"])
                if n % 5 == 3:  # the topic frame equals type: Subscriber.recv asserts it
                    self.assertEqual(event["type"], "assignment:created")
                    self.assertIn("user:7", event["to"])
            # not in history either: ask the hub over its control socket in this runtime dir
            dealer = CONTEXT.socket(zmq.DEALER)
            dealer.linger = 0
            dealer.connect("ipc://%s/livehub/redact.control" % runtime)
            dealer.send_multipart([b"REPLAY", b"", b"0", b"1000"])
            self.assertTrue(dealer.poll(10000), "no REPLAY answer")
            reply = dealer.recv_multipart()
            dealer.close()
            self.assertEqual(reply[0], b"OK", reply[:2])
            replayed = [unpack(body) for body in reply[3::2]]
            self.assertEqual([e["type"] for e in replayed], [e["type"] for e in events] + ["end"])
        finally:
            sub.close()
            push.close()


if __name__ == "__main__":
    unittest.main()
