"""Process isolation (`isolate = process`, docs/PLUGINS.md): a stage whose plugin segfaults or
aborts runs in a child process (livehub-stage-host), so the crash ends only that child. Browsers on
other stages see nothing of it (no close, every event, in order); status, the log and the metrics
name the signal; the child is restarted with back-off and serves again; the plugin API keeps
working across the process boundary (commands, token secret, last_id, replay, emit, publish,
metrics, log); stop, reload and a hub killed with -9 leave no child behind. Without isolation a
segfault still takes the whole hub down, as documented.

The crasher test plugin (tests/plugins/crasher.c) dies by a real SIGSEGV or SIGABRT on its N-th
event and answers `info`, `replay`, `emit` and `publish` commands."""
import asyncio
import glob
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import tempfile
import time
import unittest
import urllib.request

import websockets

import hubtest
from hubtest import LIVEHUB_CLI, LIVEHUBD, HubTestCase, free_port


def wait_until(condition, timeout=20.0, what="condition"):
    deadline = time.time() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.time() > deadline:
            raise AssertionError("%s not reached in %ss" % (what, timeout))
        time.sleep(0.05)


def process_gone(pid):
    """True when pid has exited (absent, or a zombie nobody reaped yet)."""
    try:
        with open("/proc/%d/stat" % pid) as status:
            return status.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def read_lines(path):
    if not os.path.exists(path):
        return []
    with open(path) as text:
        return [line.split() for line in text.read().splitlines() if line]


def scrape(port):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as reply:
        return reply.read().decode()


def metric_value(text, name, **labels):
    """The value of the series name{labels...} (labels in any order), or None."""
    for line in text.splitlines():
        match = re.match(r"^%s\{([^}]*)\} (\S+)$" % re.escape(name), line)
        if not match:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
        if all(have.get(key) == value for key, value in labels.items()):
            return float(match.group(2))
    return None


def crasher(name="boom", crash_on=100, how="SIGSEGV", output=None, isolate="process", extra=""):
    text = ("    filter = %s\n        plugin = crasher\n        subscribe = boom\n"
            "        crash_on = %d\n        signal = %s\n" % (name, crash_on, how))
    if isolate:
        text += "        isolate = %s\n" % isolate
    if output:
        text += "        output = %s\n" % output
    return text + extra


class IsolationTest(HubTestCase):
    def command(self, hub, stage, name, arg=None):
        """`livehub stage STAGE NAME [ARG]` through the CLI; returns the parsed JSON answer."""
        argv = [LIVEHUB_CLI, "--control", hub.control_endpoint, "stage", stage, name]
        if arg is not None:
            argv.append(str(arg))
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        self.assertEqual(done.returncode, 0, done.stderr + hub.log())
        return json.loads(done.stdout)

    def worker(self, hub, stage):
        return hub.stage(stage)["workers"][0]

    def wait_crash(self, hub, stage, restarts):
        return wait_until(lambda: self.worker(hub, stage)["restarts"] >= restarts
                          and self.worker(hub, stage)["state"] == "running"
                          and self.worker(hub, stage),
                          what="stage %s restarted %d times and running" % (stage, restarts))

    def test_segfault_on_the_100th_event_is_contained_and_browsers_see_nothing(self):
        work = tempfile.mkdtemp(prefix="livehub-isolation-")
        ws_port, metrics_port = free_port(), free_port()
        boom_out = os.path.join(work, "boom.txt")
        chains = ("chain = web\n    sink = ws\n        plugin = websocket\n"
                  "        listen = 127.0.0.1:%d\n        anonymous = true\n"
                  "    source = metrics\n        plugin = metrics\n        listen = 127.0.0.1:%d\n"
                  "chain = risky\n%s" % (ws_port, metrics_port, crasher(output=boom_out)))
        hub = self.hub(chains=chains)
        hub.wait_running("ws")
        hub.wait_running("boom")
        first_pid = self.command(hub, "boom", "info")["pid"]
        self.assertNotEqual(first_pid, hub.process.pid, "the plugin runs in a child process")
        self.assertEqual(os.readlink("/proc/%d/exe" % first_pid).rsplit("/", 1)[1],
                         "livehub-stage-host")
        burst, later = 150, 50

        async def browsers():
            url = "ws://127.0.0.1:%d/ws/client?types=*" % ws_port
            clients = [await websockets.connect(url, ping_interval=None, max_size=None)
                       for _ in range(3)]
            for ws in clients:
                self.assertEqual(json.loads(await ws.recv())["op"], "welcome")
            # the burst crashes the child on its 100th event; the browsers keep reading meanwhile
            sent = await asyncio.to_thread(
                lambda: [hub.publish("boom:tick", {"n": n}) for n in range(burst)])
            await asyncio.to_thread(self.wait_crash, hub, "boom", 1)
            sent += await asyncio.to_thread(
                lambda: [hub.publish("boom:tick", {"n": n}) for n in range(burst, burst + later)])
            for ws in clients:
                got = []
                while len(got) < len(sent):
                    frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
                    if frame["op"] == "event":
                        got.append(frame)
                self.assertEqual([e["id"] for e in got], sent, "every event, in order")
                self.assertEqual([e["data"]["n"] for e in got], list(range(burst + later)))
                self.assertIsNone(ws.close_code, "the browser was not disconnected")
                pong = await ws.ping()
                await asyncio.wait_for(pong, 5)
                await ws.close()
            return sent

        sent = asyncio.run(asyncio.wait_for(browsers(), 120))

        worker = self.worker(hub, "boom")
        self.assertEqual(worker["last_error"], "killed by SIGSEGV")
        self.assertEqual(worker["restarts"], 1)
        log = hub.log()
        self.assertIn("[boom] crashing on purpose (invalid pointer) on event 100", log)
        self.assertRegex(log, r"filter boom \(plugin crasher\) worker 0 stopped unexpectedly: "
                              r"killed by SIGSEGV; restarting in \d+ ms")
        self.assertTrue(process_gone(first_pid))
        text = scrape(metrics_port)
        self.assertEqual(metric_value(text, "livehub_stage_crashes_total", stage="boom",
                                      signal="SIGSEGV"), 1)
        self.assertEqual(metric_value(text, "livehub_stage_restarts_total", stage="boom"), 1)

        # the restarted child serves again: it records the events sent after its restart
        second_pid = self.command(hub, "boom", "info")["pid"]
        self.assertNotIn(second_pid, (first_pid, hub.process.pid))
        # status names the isolation and the child an operator would look for
        stage = next(s for s in hub.status()["stages"] if s["name"] == "boom")
        self.assertEqual(stage["isolate"], "process")
        self.assertEqual(stage["workers"][0]["pid"], second_pid)
        lines = wait_until(lambda: [l for l in read_lines(boom_out) if int(l[2]) == second_pid]
                           if len([l for l in read_lines(boom_out)
                                   if int(l[2]) == second_pid and l[1] == "boom:tick"]) >= later
                           else None, what="the restarted child recording the later events")
        ids = [int(l[0]) for l in lines if l[1] == "boom:tick"]
        self.assertEqual(ids[-later:], sent[-later:])
        # the first child recorded its first 99 events before dying on the 100th
        self.assertEqual([int(l[0]) for l in read_lines(boom_out) if int(l[2]) == first_pid],
                         sent[:99])
        # the hub itself never stopped serving: same process, every event accepted
        self.assertIsNone(hub.process.poll())
        self.assertEqual(hub.status()["last_id"], sent[-1])

    def test_abort_is_contained_and_reported_with_its_signal(self):
        metrics_port = free_port()
        chains = ("chain = risky\n%s    source = metrics\n        plugin = metrics\n"
                  "        listen = 127.0.0.1:%d\n" % (crasher(crash_on=3, how="SIGABRT"),
                                                        metrics_port))
        hub = self.hub(chains=chains)
        hub.wait_running("boom")
        for n in range(3):
            hub.publish("boom:tick", {"n": n})
        worker = self.wait_crash(hub, "boom", 1)
        self.assertEqual(worker["last_error"], "killed by SIGABRT")
        self.assertIn("crashing on purpose (abort) on event 3", hub.log())
        self.assertEqual(metric_value(scrape(metrics_port), "livehub_stage_crashes_total",
                                      stage="boom", signal="SIGABRT"), 1)
        # crashes again on its 3rd event, restarted after a longer back-off
        for n in range(3):
            hub.publish("boom:tick", {"n": n})
        worker = self.wait_crash(hub, "boom", 2)
        delays = [int(d) for d in re.findall(r"killed by SIGABRT; restarting in (\d+) ms",
                                             hub.log())]
        self.assertEqual(len(delays), 2)
        self.assertLess(delays[0], delays[1], "exponential back-off")

    def test_plugin_api_works_across_the_process_boundary(self):
        work = tempfile.mkdtemp(prefix="livehub-isolation-")
        secret_path = os.path.join(work, "secret")
        secret = b"isolation-secret-0123456789abcdef"
        with open(secret_path, "wb") as out:
            out.write(secret)
        metrics_port = free_port()
        chains = ("chain = risky\n%s    source = metrics\n        plugin = metrics\n"
                  "        listen = 127.0.0.1:%d\n" % (crasher(crash_on=0), metrics_port))
        hub = self.hub(chains=chains, hub_extra="token_secret = file:%s\n" % secret_path)
        hub.wait_running("boom")
        subscriber = hub.subscriber("crasher:")
        ids = [hub.publish("boom:tick", {"n": n}) for n in range(20)]

        info = self.command(hub, "boom", "info")
        self.assertNotEqual(info["pid"], hub.process.pid)
        expected_sum = 0
        for byte in secret:
            expected_sum = (expected_sum * 31 + byte) % (1 << 32)
        self.assertEqual((info["secret_size"], info["secret_sum"]), (len(secret), expected_sum))
        self.assertEqual(info["epoch"], hub.status()["epoch"])
        self.assertEqual(info["last_id"], ids[-1])
        # the secret never travels in argv or the environment
        for part in ("cmdline", "environ"):
            with open("/proc/%d/%s" % (info["pid"], part), "rb") as data:
                self.assertNotIn(secret, data.read())
        self.assertNotIn(secret.decode(), hub.log())

        # replay is served from the hub's history, in pages (more than one page of 256)
        more = [hub.publish("boom:tick", {"n": n}) for n in range(300)]
        replay = self.command(hub, "boom", "replay", 0)
        self.assertEqual(replay, {"result": 0, "count": 320, "last_id": more[-1]})
        self.assertEqual(self.command(hub, "boom", "replay", more[-1] + 5)["result"], 2)

        emitted = self.command(hub, "boom", "emit")
        self.assertTrue(emitted["ok"])
        published = self.command(hub, "boom", "publish")["id"]
        got = subscriber.recv_n(2)
        self.assertEqual(sorted(e["type"] for e in got), ["crasher:emitted", "crasher:published"])
        self.assertIn(published, [e["id"] for e in got])
        self.assertTrue(all(e["src"] == "boom" for e in got))

        # metrics the child registers reach the hub's exporter, and keep counting across a restart
        wait_until(lambda: metric_value(scrape(metrics_port), "crasher_events_total",
                                        stage="boom") == 320,
                   what="crasher_events_total forwarded")
        self.assertIsNotNone(metric_value(scrape(metrics_port), "livehub_stage_emitted_total",
                                          stage="boom"))

    def test_random_token_secret_reaches_the_child_without_argv_or_env(self):
        hub = self.hub(chains="chain = risky\n%s" % crasher(crash_on=0),
                       hub_extra="token_secret = random\n")
        hub.wait_running("boom")
        info = self.command(hub, "boom", "info")
        self.assertEqual(info["secret_size"], 32)
        again = self.command(hub, "boom", "info")
        self.assertEqual(again["secret_sum"], info["secret_sum"])

    def test_stop_reload_and_kill_9_leave_no_child_behind(self):
        hub = self.hub(chains="chain = risky\n%s" % crasher(crash_on=0, extra=(
            "        workers = 2\n        delivery = queue\n")))
        hub.wait_running("boom")
        run_dirs = glob.glob("/tmp/livehub-%d-*" % hub.process.pid) + glob.glob(
            os.path.join(os.environ.get("XDG_RUNTIME_DIR") or os.environ.get("TMPDIR") or "/tmp",
                         "livehub-%d-*" % hub.process.pid))
        self.assertTrue(run_dirs, "the runtime directory of the ipc endpoints")
        self.assertEqual(stat.S_IMODE(os.stat(run_dirs[0]).st_mode), 0o700)

        def children():
            out = subprocess.run(["pgrep", "-P", str(hub.process.pid)], capture_output=True,
                                 text=True).stdout.split()
            return sorted(int(pid) for pid in out if not process_gone(int(pid)))

        old = wait_until(lambda: len(children()) == 2 and children(), what="two children")
        # reload with a changed stage: the old children stop, new ones start
        hub.write_conf("chain = risky\n%s" % crasher(crash_on=5, extra=(
            "        workers = 2\n        delivery = queue\n")))
        self.assertEqual(hub.control(b"RELOAD")[0], b"OK")
        wait_until(lambda: all(process_gone(pid) for pid in old), what="old children gone")
        hub.wait_running("boom")
        new = wait_until(lambda: len(children()) == 2 and children(), what="new children")
        self.assertFalse(set(new) & set(old))
        self.assertNotIn("killing it", hub.log(), "they stopped when asked")
        # a clean stop ends them and removes the runtime directory
        hub.stop()
        self.assertTrue(all(process_gone(pid) for pid in new))
        self.assertFalse(os.path.exists(run_dirs[0]))

        # a hub killed with -9 cannot stop them: they notice and exit by themselves
        killed = self.hub(chains="chain = risky\n%s" % crasher(crash_on=0))
        killed.wait_running("boom")
        pid = self.command(killed, "boom", "info")["pid"]
        killed.process.send_signal(signal.SIGKILL)
        killed.process.wait()
        wait_until(lambda: process_gone(pid), what="the orphaned child exiting")
        killed.process = None  # nothing left to stop
        killed.log_file.close()

    def test_an_installed_hub_finds_the_host_in_libexec(self):
        """bin/livehubd runs libexec/livehub/livehub-stage-host of its own prefix."""
        prefix = tempfile.mkdtemp(prefix="livehub-isolation-prefix-")
        os.makedirs(os.path.join(prefix, "bin"))
        os.makedirs(os.path.join(prefix, "libexec", "livehub"))
        daemon = os.path.join(prefix, "bin", "livehubd")
        host = os.path.join(prefix, "libexec", "livehub", "livehub-stage-host")
        shutil.copy2(LIVEHUBD, daemon)
        shutil.copy2(os.path.join(os.path.dirname(LIVEHUBD), "livehub-stage-host"), host)
        original = hubtest.LIVEHUBD
        hubtest.LIVEHUBD = daemon
        try:
            hub = self.hub(chains="chain = risky\n%s" % crasher(crash_on=0))
        finally:
            hubtest.LIVEHUBD = original
        hub.wait_running("boom")
        pid = self.command(hub, "boom", "info")["pid"]
        self.assertEqual(os.readlink("/proc/%d/exe" % pid), host)

    def test_ready_timeout_restarts_the_child_and_a_deaf_child_is_killed_at_stop(self):
        hub = self.hub(chains=(
            "chain = slow\n"
            "    sink = sluggish\n        plugin = slowstart\n        isolate = process\n"
            "        delay_ms = 60000\n        ready_timeout = 200\n"
            "    sink = deaf\n        plugin = slowstart\n        isolate = process\n"
            "        delay_ms = 60000\n        stuck = true\n        ready_timeout = 600000\n"))
        hub.wait_log("sink sluggish (plugin slowstart) worker 0 stopped unexpectedly: did not "
                     "signal ready within 200 ms")
        worker = self.worker(hub, "sluggish")
        self.assertEqual(worker["last_error"], "did not signal ready within 200 ms")
        deaf = wait_until(lambda: [int(p) for p in subprocess.run(
            ["pgrep", "-P", str(hub.process.pid), "-f", "livehub-stage-host deaf"],
            capture_output=True, text=True).stdout.split()], what="the deaf child")
        # once it runs the plugin it never reads its pipe: the stop waits for it, then kills it
        wait_until(lambda: any("slowstart.so" in line for line in open("/proc/%d/maps" % deaf[0])),
                   what="the deaf child running its plugin")
        hub.stop()  # and the hub still exits 0
        self.assertTrue(all(process_gone(pid) for pid in deaf))
        # (a child that had not even connected its pipe yet is killed at once)
        self.assertRegex(hub.log(), "stage deaf worker 0 did not stop within 10000 ms; killing it"
                                    "|sink deaf .* ended while stopping: killed by SIGKILL")

    def test_isolate_key_is_checked(self):
        hub = self.hub(chains="chain = risky\n%s" % crasher(isolate="sandbox"), start=False)
        check = subprocess.run([LIVEHUB_CLI, "check", hub.conf_path], capture_output=True,
                               text=True, timeout=30)
        self.assertNotEqual(check.returncode, 0)
        self.assertIn("isolate: 'sandbox' is neither thread", check.stdout + check.stderr)

    def test_without_isolation_a_segfault_still_takes_the_hub_down(self):
        """As docs/PLUGINS.md says: an in-process plugin shares the hub's fate."""
        hub = self.hub(chains="chain = risky\n%s" % crasher(crash_on=1, isolate=None))
        hub.wait_running("boom")
        try:
            hub.publish("boom:tick")
        except Exception:
            pass  # the hub may die before it answers
        code = hub.process.wait(30)
        self.assertNotEqual(code, 0)
        # killed by SIGSEGV, or (sanitizer build) reported by ASan, which then exits 1
        self.assertTrue(code == -signal.SIGSEGV or "AddressSanitizer: SEGV" in hub.log(),
                        (code, hub.log()))
        self.hubs.remove(hub)
        hub.log_file.close()


if __name__ == "__main__":
    unittest.main()
