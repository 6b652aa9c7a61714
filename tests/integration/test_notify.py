"""The notify sink against real desktop components: a private dbus-daemon session bus with a small
real org.freedesktop.Notifications server (python3-dbus) that records every Notify call, and a
private PulseAudio daemon with a null sink whose monitor is recorded with parec to prove a sound
was really played."""
import array
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest
import wave

from hubtest import HubTestCase, LIVEHUB_CLI, LIVEHUBD

PYTHON = "/usr/bin/python3"

# The notification server, run as its own process on the private bus. It records each call as a
# JSON line, answers GetActive for org.freedesktop.ScreenSaver from a flag file, and "clicks" the
# default action of a notification offering one when a click flag file exists.
SERVER = r'''
import json, os, sys
import dbus, dbus.service, dbus.mainloop.glib
from gi.repository import GLib

record, flags = sys.argv[1], sys.argv[2]
dbus.mainloop.glib.DBusGMainLoop(set_as_default=True)
bus = dbus.bus.BusConnection(os.environ["DBUS_SESSION_BUS_ADDRESS"])

def hint(value):
    if isinstance(value, dbus.Boolean):  # an int subclass in python3-dbus
        return bool(value)
    return int(value) if isinstance(value, int) else str(value)

class Notifications(dbus.service.Object):
    def __init__(self):
        super().__init__(bus, "/org/freedesktop/Notifications")
        self.last = 0

    @dbus.service.method("org.freedesktop.Notifications", in_signature="susssasa{sv}i",
                         out_signature="u")
    def Notify(self, app, replaces, icon, summary, body, actions, hints, expire):
        if replaces:
            nid = int(replaces)
        else:
            self.last += 1
            nid = self.last
        with open(record, "a") as out:
            out.write(json.dumps({"id": nid, "app": str(app), "replaces": int(replaces),
                                  "icon": str(icon), "summary": str(summary), "body": str(body),
                                  "actions": [str(a) for a in actions],
                                  "hints": {str(k): hint(v) for k, v in hints.items()},
                                  "expire": int(expire)}) + "\n")
        if "default" in actions and os.path.exists(os.path.join(flags, "click")):
            GLib.timeout_add(50, lambda: self.ActionInvoked(nid, "default") and False)
        return nid

    @dbus.service.signal("org.freedesktop.Notifications", signature="us")
    def ActionInvoked(self, nid, key):
        pass

    @dbus.service.method("org.freedesktop.Notifications", out_signature="as")
    def GetCapabilities(self):
        return ["body", "body-markup", "actions"]

    @dbus.service.method("org.freedesktop.Notifications", out_signature="ssss")
    def GetServerInformation(self):
        return ["livehub-test", "livehub", "1", "1.2"]

class ScreenSaver(dbus.service.Object):
    def __init__(self):
        super().__init__(bus, "/org/freedesktop/ScreenSaver")

    @dbus.service.method("org.freedesktop.ScreenSaver", out_signature="b")
    def GetActive(self):
        return os.path.exists(os.path.join(flags, "screensaver"))

names = [dbus.service.BusName(n, bus) for n in
         ("org.freedesktop.Notifications", "org.freedesktop.ScreenSaver")]
objects = [Notifications(), ScreenSaver()]
open(os.path.join(flags, "ready"), "w").close()
GLib.MainLoop().run()
'''


def wait_for(predicate, timeout=10.0, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out waiting for " + what)


class Desktop:
    """A private session bus with the recording notification server, and a private PulseAudio
    with a null sink. Either half can be started late (to test recovery) and everything stops in
    stop()."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="livehub-notify-")
        self.bus_path = os.path.join(self.dir, "bus")
        self.bus_address = "unix:path=" + self.bus_path
        self.pulse_path = os.path.join(self.dir, "pulse", "native")
        self.record = os.path.join(self.dir, "notifications.jsonl")
        self.processes = []
        # libpulse must never spawn a daemon of its own for the hub.
        self.client_conf = os.path.join(self.dir, "client.conf")
        with open(self.client_conf, "w") as conf:
            conf.write("autospawn = no\n")

    def env(self):
        return {"DBUS_SESSION_BUS_ADDRESS": self.bus_address,
                "PULSE_SERVER": "unix:" + self.pulse_path,
                "PULSE_CLIENTCONFIG": self.client_conf}

    def _spawn(self, argv, env=None):
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   env=dict(os.environ, **(env or {})))
        self.processes.append(process)
        return process

    def start_bus(self, server=True):
        # A session bus without service directories: no notification daemon installed on the
        # machine (dunst has an activation file) may be started behind the test's back.
        config = os.path.join(self.dir, "bus.conf")
        with open(config, "w") as out:
            out.write('<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration '
                      '1.0//EN" "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">\n'
                      "<busconfig><type>session</type><listen>%s</listen><auth>EXTERNAL</auth>"
                      '<policy context="default"><allow send_destination="*" eavesdrop="true"/>'
                      '<allow eavesdrop="true"/><allow own="*"/></policy></busconfig>\n'
                      % self.bus_address)
        self._spawn(["dbus-daemon", "--config-file=" + config, "--nofork", "--nopidfile"])
        wait_for(lambda: os.path.exists(self.bus_path), what="dbus-daemon socket")
        if server:
            self.start_server()

    def start_server(self):
        """The notification server: until it runs, nobody owns org.freedesktop.Notifications."""
        self._spawn([PYTHON, "-c", SERVER, self.record, self.dir],
                    env={"DBUS_SESSION_BUS_ADDRESS": self.bus_address})
        wait_for(lambda: os.path.exists(os.path.join(self.dir, "ready")),
                 what="the notification server")

    def start_audio(self):
        runtime = os.path.dirname(self.pulse_path)
        os.makedirs(runtime, exist_ok=True)
        self._spawn(["pulseaudio", "--daemonize=no", "--exit-idle-time=-1", "--system=false", "-n",
                     "--load=module-null-sink sink_name=desk",
                     "--load=module-native-protocol-unix auth-anonymous=1 socket="
                     + self.pulse_path],
                    env={"HOME": self.dir, "XDG_RUNTIME_DIR": runtime,
                         "XDG_CONFIG_HOME": self.dir, "DBUS_SESSION_BUS_ADDRESS": ""})
        wait_for(lambda: subprocess.run(["pactl", "info"], env=dict(os.environ, **self.env()),
                                        capture_output=True).returncode == 0,
                 what="pulseaudio")
        # Record the null sink's monitor: whatever the hub plays ends up here.
        self.recording = os.path.join(self.dir, "monitor.raw")
        self.recorder = open(self.recording, "wb")
        # A short latency, or parec hands samples over in 2 s fragments.
        process = subprocess.Popen(["parec", "-d", "desk.monitor", "--raw", "--format=s16le",
                                    "--channels=1", "--rate=8000", "--latency-msec=50"],
                                   stdout=self.recorder, stderr=subprocess.DEVNULL,
                                   env=dict(os.environ, **self.env()))
        self.processes.append(process)

    def notifications(self):
        if not os.path.exists(self.record):
            return []
        with open(self.record) as record:
            return [json.loads(line) for line in record if line.strip()]

    def wait_notifications(self, count, timeout=10.0):
        return wait_for(lambda: len(self.notifications()) >= count and self.notifications(),
                        timeout, "%d notifications" % count)

    def samples(self):
        """What the monitor recorded so far: signed 16-bit samples at 8000 Hz."""
        with open(self.recording, "rb") as raw:
            data = raw.read()
        return array.array("h", data[:len(data) // 2 * 2])

    def peak(self):
        """The loudest sample recorded on the monitor so far."""
        return max((abs(s) for s in self.samples()), default=0)

    def pitch(self, threshold=200):
        """The frequency (Hz) of the loudest stretch recorded, from its zero crossings."""
        samples = self.samples()
        loud = [i for i, s in enumerate(samples) if abs(s) > threshold]
        if len(loud) < 2:
            return 0.0
        stretch = samples[loud[0]:loud[-1] + 1]
        crossings = sum(1 for a, b in zip(stretch, stretch[1:]) if (a < 0) != (b < 0))
        return crossings / 2.0 / (len(stretch) / 8000.0)

    def flag(self, name, on=True):
        path = os.path.join(self.dir, name)
        if on:
            open(path, "w").close()
        elif os.path.exists(path):
            os.unlink(path)
        return path

    def stop(self):
        for process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        if hasattr(self, "recorder"):
            self.recorder.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def notify_chain(**options):
    lines = ["chain = alerts", "    sink = desk", "        plugin = notify",
             "        delivery = queue"]
    options.setdefault("coalesce", 800)
    lines += ["        %s = %s" % (key, value) for key, value in options.items()]
    return "\n".join(lines) + "\n"


class NotifyTest(HubTestCase):
    def setUp(self):
        super().setUp()
        self.desktop = Desktop()
        self.addCleanup(self.desktop.stop)

    def metric(self, hub, name):
        """livehub_notify_<name>_total; "suppressed_dnd" is suppressed_total{reason="dnd"}."""
        metrics = hub.status()["metrics"]
        for family in ("suppressed", "failures"):
            if name.startswith(family + "_"):
                return metrics.get('livehub_notify_%s_total{stage="desk",reason="%s"}'
                                   % (family, name[len(family) + 1:]))
        return metrics.get('livehub_notify_%s_total{stage="desk"}' % name)

    def wait_metric(self, hub, name, value, timeout=10.0):
        wait_for(lambda: (self.metric(hub, name) or 0) >= value, timeout,
                 "%s >= %s (now %s)" % (name, value, self.metric(hub, name)))

    def test_assignment_shows_template_and_plays_a_sound(self):
        self.desktop.start_bus()
        self.desktop.start_audio()
        hub = self.hub(notify_chain(), env=self.desktop.env())
        hub.wait_running("desk")
        time.sleep(0.3)
        self.assertLess(self.desktop.peak(), 20, "the monitor is silent before any event")
        hub.publish("assignment:created", {"signalIdentifier": "S-7 <b>R&D</b>"}, to=["user:42"])
        [shown] = self.desktop.wait_notifications(1)
        self.assertEqual(shown["summary"], "New Signal Assignment")
        self.assertEqual(shown["body"], "You've been assigned: S-7 &lt;b&gt;R&amp;D&lt;/b&gt;",
                         "event data is escaped for the body markup")
        self.assertEqual(shown["app"], "livehub")
        self.assertEqual(shown["replaces"], 0)
        self.assertEqual(shown["hints"]["urgency"], 1)
        self.assertEqual(shown["hints"]["category"], "im.received")
        self.assertIs(shown["hints"]["suppress-sound"], True, "we play the sound, not the server")
        self.assertEqual(shown["expire"], -1)
        wait_for(lambda: self.desktop.peak() > 100, 10, "message-new-instant on the null sink")
        self.wait_metric(hub, "sent", 1)
        self.assertEqual(self.metric(hub, "sounds"), 1)
        hub.publish("metrics:update", {"x": 1})  # no rule covers it: silently ignored
        hub.publish("connection:statusChanged", {"status": "active"})
        second = self.desktop.wait_notifications(2)[1]
        self.assertEqual((second["summary"], second["hints"]["urgency"]), ("Connection active", 0))
        self.assertEqual(len(self.desktop.notifications()), 2)

    def test_burst_becomes_one_updated_notification_and_one_sound(self):
        self.desktop.start_bus()
        self.desktop.start_audio()
        hub = self.hub(notify_chain(coalesce=1500), env=self.desktop.env())
        hub.wait_running("desk")
        for n in range(20):
            hub.publish("assignment:created", {"signalIdentifier": "S-%d" % n})
        first, update = self.desktop.wait_notifications(2)
        self.assertEqual(first["body"], "You've been assigned: S-0")
        self.assertEqual(update["replaces"], first["id"], "the burst updates the first toast")
        self.assertEqual(update["summary"], "20 new assignments")
        self.assertEqual(update["body"], "Latest: S-19")
        self.assertIs(update["hints"]["suppress-sound"], True)
        time.sleep(2.0)
        self.assertEqual(len(self.desktop.notifications()), 2, "nothing more after the burst")
        self.assertEqual(self.metric(hub, "coalesced"), 19)
        self.assertEqual(self.metric(hub, "sounds"), 1, "one sound for the whole burst")
        # After the window a new event is a new notification again.
        hub.publish("assignment:created", {"signalIdentifier": "S-new"})
        third = self.desktop.wait_notifications(3)[2]
        self.assertEqual((third["replaces"], third["body"]), (0, "You've been assigned: S-new"))

    def test_rules_file_urgency_action_opener_and_disabled_type(self):
        self.desktop.start_bus()
        opened = os.path.join(self.desktop.dir, "opened")
        opener = os.path.join(self.desktop.dir, "opener.sh")
        with open(opener, "w") as script:
            script.write('#!/bin/sh\nprintf "%%s\\n" "$1" >> %s\n' % opened)
        os.chmod(opener, 0o755)
        rules = os.path.join(self.desktop.dir, "rules.json")
        with open(rules, "w") as out:
            json.dump({"signal:assigned": {"summary": "Signal {data.signal.name}",
                                           "body": "<b>{who}</b> took it",
                                           "urgency": "critical", "icon": "dialog-warning",
                                           "url": "https://app.example/signals/{data.signal.id}",
                                           "expire": 0, "sound": ""},
                       "signal:*": {"enabled": False}}, out)
        self.desktop.flag("click")
        hub = self.hub(notify_chain(rules=rules, opener=opener), env=self.desktop.env())
        hub.wait_running("desk")
        hub.publish("signal:updated", {"n": 1})
        hub.publish("signal:assigned", {"signal": {"name": "Grant 9", "id": "rec 1/2"},
                                        "who": "Ada & Bo"})
        [shown] = self.desktop.wait_notifications(1)
        self.assertEqual(shown["summary"], "Signal Grant 9")
        self.assertEqual(shown["body"], "<b>Ada &amp; Bo</b> took it", "template markup kept")
        self.assertEqual((shown["hints"]["urgency"], shown["icon"], shown["expire"]),
                         (2, "dialog-warning", 0))
        self.assertEqual(shown["actions"], ["default", "Open"])
        wait_for(lambda: os.path.exists(opened) and os.path.getsize(opened), 10, "the opener")
        with open(opened) as urls:
            url = urls.read()
        self.assertEqual(url, "https://app.example/signals/rec%201%2F2\n")
        self.wait_metric(hub, "actions", 1)
        self.assertEqual(self.metric(hub, "suppressed_disabled"), 1)
        self.assertEqual(self.metric(hub, "sounds"), 0, "the rule's sound is empty")

    def test_bad_rules_are_refused_with_the_rule_named(self):
        bad = os.path.join(self.desktop.dir, "bad.json")
        with open(bad, "w") as out:
            json.dump({"assignment:created": {"summary": "Hi {name"}}, out)
        hub = self.hub(notify_chain(rules=bad), start=False)
        check = subprocess.run([LIVEHUBD, "--check", hub.conf_path], capture_output=True,
                               text=True, timeout=20)
        self.assertNotEqual(check.returncode, 0)
        self.assertIn("rule 'assignment:created': summary", check.stderr + check.stdout)
        self.assertIn("has no '}'", check.stderr + check.stdout)

    def test_quiet_hours_idle_and_do_not_disturb_suppress(self):
        self.desktop.start_bus()
        dnd = self.desktop.flag("dnd", on=False)
        hub = self.hub(notify_chain(quiet_when_idle="yes", dnd_file=dnd, coalesce=0),
                       env=self.desktop.env())
        quiet = self.hub(notify_chain(quiet_hours="00:00-24:00", coalesce=0),
                         env=self.desktop.env())
        hub.wait_running("desk")
        quiet.wait_running("desk")
        quiet.publish("assignment:created", {"signalIdentifier": "Q"})
        self.wait_metric(quiet, "suppressed_quiet", 1)
        self.desktop.flag("dnd")
        hub.publish("assignment:created", {"signalIdentifier": "D"})
        self.wait_metric(hub, "suppressed_dnd", 1)
        self.desktop.flag("dnd", on=False)
        self.desktop.flag("screensaver")
        hub.publish("assignment:created", {"signalIdentifier": "I"})
        self.wait_metric(hub, "suppressed_quiet", 1)
        self.desktop.flag("screensaver", on=False)
        hub.publish("assignment:created", {"signalIdentifier": "back"})
        [shown] = self.desktop.wait_notifications(1)
        self.assertEqual(shown["body"], "You've been assigned: back", "only the last one shows")
        time.sleep(0.3)
        self.assertEqual(len(self.desktop.notifications()), 1)

    def test_missing_bus_and_audio_degrade_then_recover(self):
        hub = self.hub(notify_chain(retry=300, coalesce=0), env=self.desktop.env())
        hub.wait_running("desk")
        hub.publish("assignment:created", {"signalIdentifier": "lost"})
        self.wait_metric(hub, "failures_bus", 1)
        self.wait_metric(hub, "failures_audio", 1)
        hub.wait_log("session bus unavailable, carrying on without it")
        hub.wait_log("audio unavailable, carrying on without it")
        self.assertEqual(hub.log().count("session bus unavailable"), 1, "logged once")
        self.desktop.start_bus()
        self.desktop.start_audio()
        time.sleep(0.4)  # past the retry interval
        hub.publish("assignment:created", {"signalIdentifier": "found"})
        [shown] = self.desktop.wait_notifications(1)
        self.assertEqual(shown["body"], "You've been assigned: found")
        wait_for(lambda: self.desktop.peak() > 100, 10, "a sound after audio came back")
        hub.wait_log("session bus available again")
        hub.wait_log("audio available again")
        self.assertEqual(hub.stage("desk")["workers"][0]["state"], "running")

    def stage_command(self, hub, *args):
        """`livehub stage ...` as a person types it; returns (exit code, stdout, stderr)."""
        run = subprocess.run([LIVEHUB_CLI, "--control", hub.control_endpoint, "stage"]
                             + list(args), capture_output=True, text=True, timeout=30)
        return run.returncode, run.stdout, run.stderr

    def test_do_not_disturb_by_command_suppresses_then_restores(self):
        self.desktop.start_bus()
        self.desktop.start_audio()
        hub = self.hub(notify_chain(coalesce=0), env=self.desktop.env())
        hub.wait_running("desk")
        code, out, err = self.stage_command(hub, "desk", "dnd", "status")
        self.assertEqual((code, json.loads(out)),
                         (0, {"dnd": False, "dnd_file": None, "suppressed": 0}), err)
        code, out, err = self.stage_command(hub, "desk", "dnd", "on")
        self.assertEqual((code, json.loads(out)["dnd"]), (0, True), err)
        hub.wait_log("do not disturb on by command")
        hub.publish("assignment:created", {"signalIdentifier": "hush"})
        hub.publish("assignment:created", {"signalIdentifier": "hush again"})
        self.wait_metric(hub, "suppressed_dnd", 2)
        time.sleep(0.5)
        self.assertEqual(self.desktop.notifications(), [], "no toast while do not disturb")
        self.assertLess(self.desktop.peak(), 20, "and no sound")
        self.assertEqual(self.metric(hub, "sounds"), 0)
        code, out, err = self.stage_command(hub, "desk", "dnd", "status")
        self.assertEqual(json.loads(out), {"dnd": True, "dnd_file": None, "suppressed": 2})
        # Bad arguments and commands change nothing.
        code, out, err = self.stage_command(hub, "desk", "dnd", "maybe")
        self.assertEqual(code, 1)
        self.assertIn("dnd takes on, off or status", err)
        code, out, err = self.stage_command(hub, "desk", "snooze", "10")
        self.assertEqual(code, 1)
        self.assertIn("unknown command 'snooze' (notify takes: dnd on|off|status)", err)
        code, out, err = self.stage_command(hub, "dsk", "dnd", "on")
        self.assertEqual(code, 1)
        self.assertIn("no stage 'dsk' (stages: desk)", err)
        self.assertTrue(json.loads(self.stage_command(hub, "desk", "dnd")[1])["dnd"])
        code, out, err = self.stage_command(hub, "desk", "dnd", "off")
        self.assertEqual((code, json.loads(out)["dnd"]), (0, False), err)
        hub.publish("assignment:created", {"signalIdentifier": "S-back"})
        [shown] = self.desktop.wait_notifications(1)
        self.assertEqual(shown["body"], "You've been assigned: S-back")
        wait_for(lambda: self.desktop.peak() > 100, 10, "the sound once do not disturb is off")
        self.assertEqual(self.metric(hub, "suppressed_dnd"), 2)

    def test_do_not_disturb_command_with_a_dnd_file_outlives_a_restart(self):
        self.desktop.start_bus()
        dnd = os.path.join(self.desktop.dir, "dnd")
        hub = self.hub(notify_chain(coalesce=0, dnd_file=dnd), env=self.desktop.env())
        hub.wait_running("desk")
        code, out, err = self.stage_command(hub, "desk", "dnd", "on")
        self.assertEqual((code, json.loads(out)),
                         (0, {"dnd": True, "dnd_file": dnd, "suppressed": 0}), err)
        self.assertTrue(os.path.exists(dnd), "the command switched the file")
        # A changed conf restarts the stage: do not disturb stays on, the file says so.
        hub.write_conf(notify_chain(coalesce=0, dnd_file=dnd, app_name="desk"))
        self.assertEqual(hub.control(b"RELOAD")[0], b"OK")
        hub.wait_log("reloaded")
        hub.wait_running("desk")
        hub.publish("assignment:created", {"signalIdentifier": "after restart"})
        self.wait_metric(hub, "suppressed_dnd", 1)
        self.assertTrue(json.loads(self.stage_command(hub, "desk", "dnd")[1])["dnd"])
        # `rm` by hand ends it as well as the command does.
        os.unlink(dnd)
        self.assertFalse(json.loads(self.stage_command(hub, "desk", "dnd")[1])["dnd"])
        self.stage_command(hub, "desk", "dnd", "on")
        code, out, err = self.stage_command(hub, "desk", "dnd", "off")
        self.assertEqual((code, json.loads(out)["dnd"], os.path.exists(dnd)), (0, False, False))
        hub.publish("assignment:created", {"signalIdentifier": "back"})
        [shown] = self.desktop.wait_notifications(1)
        self.assertEqual((shown["app"], shown["body"]), ("desk", "You've been assigned: back"))
        # A dnd_file that cannot be created: refused, and nothing changes.
        broken = self.hub(notify_chain(dnd_file="/nonexistent/dir/dnd"), env=self.desktop.env())
        broken.wait_running("desk")
        code, out, err = self.stage_command(broken, "desk", "dnd", "on")
        self.assertEqual(code, 1)
        self.assertIn("cannot create dnd_file /nonexistent/dir/dnd: No such file or directory",
                      err)
        self.assertFalse(json.loads(self.stage_command(broken, "desk", "dnd")[1])["dnd"])

    def test_no_notification_server_degrades_then_recovers(self):
        self.desktop.start_bus(server=False)  # a bus where nobody owns the Notifications name
        self.desktop.start_audio()
        hub = self.hub(notify_chain(coalesce=0), env=self.desktop.env())
        hub.wait_running("desk")
        hub.publish("assignment:created", {"signalIdentifier": "lost 1"})
        hub.publish("assignment:created", {"signalIdentifier": "lost 2"})
        self.wait_metric(hub, "failures_server", 2)
        hub.wait_log("notification server unavailable, carrying on without it")
        self.assertEqual(hub.log().count("notification server unavailable"), 1, "logged once")
        self.assertIn("org.freedesktop.DBus.Error.ServiceUnknown", hub.log(),
                      "the line says why")
        self.assertEqual(self.metric(hub, "failures_bus"), 0, "the bus itself was fine")
        self.assertEqual(hub.stage("desk")["workers"][0]["state"], "running")
        self.assertGreater(hub.publish("signal:created", {"n": 1}), 0, "the hub keeps serving")
        self.desktop.start_server()
        hub.publish("assignment:created", {"signalIdentifier": "found"})
        [shown] = self.desktop.wait_notifications(1)
        self.assertEqual((shown["summary"], shown["body"]),
                         ("New Signal Assignment", "You've been assigned: found"))
        hub.wait_log("notification server available again")
        self.assertEqual(self.metric(hub, "failures_server"), 2)

    def test_no_audio_device_still_shows_the_notification(self):
        self.desktop.start_bus()  # no PulseAudio: PULSE_SERVER points at nothing
        hub = self.hub(notify_chain(coalesce=0), env=self.desktop.env())
        hub.wait_running("desk")
        hub.publish("assignment:created", {"signalIdentifier": "S-mute"})
        [shown] = self.desktop.wait_notifications(1)
        self.assertEqual(shown["body"], "You've been assigned: S-mute")
        self.wait_metric(hub, "failures_audio", 1)
        hub.wait_log("audio unavailable, carrying on without it")
        hub.publish("assignment:created", {"signalIdentifier": "S-mute 2"})
        self.desktop.wait_notifications(2)
        self.wait_metric(hub, "failures_audio", 2)
        self.assertEqual(hub.log().count("audio unavailable"), 1, "logged once")
        self.assertEqual((self.metric(hub, "sent"), self.metric(hub, "sounds")), (2, 0))

    def write_tone(self, name, frequency, seconds=0.6, rate=44100):
        """A WAV file of a sine tone at half scale."""
        path = os.path.join(self.desktop.dir, name)
        frames = array.array("h", (int(16000 * math.sin(2 * math.pi * frequency * n / rate))
                                   for n in range(int(seconds * rate))))
        with wave.open(path, "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(rate)
            out.writeframes(frames.tobytes())
        return path

    def test_sound_file_per_type_is_played(self):
        self.desktop.start_bus()
        self.desktop.start_audio()
        tone = self.write_tone("tone.wav", 1000)  # message-new-instant measures about 470 Hz
        rules = os.path.join(self.desktop.dir, "rules.json")
        with open(rules, "w") as out:
            json.dump({"assignment:created": {"summary": "Assigned", "body": "{signalIdentifier}",
                                              "sound_file": tone},
                       "signal:assigned": {"summary": "Taken",
                                           "sound_file": os.path.join(self.desktop.dir, "no.wav")}},
                      out)
        hub = self.hub(notify_chain(rules=rules, coalesce=0), env=self.desktop.env())
        hub.wait_running("desk")
        time.sleep(0.3)
        self.assertLess(self.desktop.peak(), 20, "the monitor is silent before any event")
        hub.publish("assignment:created", {"signalIdentifier": "S-tone"})
        self.desktop.wait_notifications(1)
        wait_for(lambda: self.desktop.peak() > 1000, 10, "the WAV file on the null sink")
        time.sleep(1.0)  # the whole tone
        pitch = self.desktop.pitch()
        self.assertTrue(950 < pitch < 1050, "the recorded tone is the file's 1000 Hz, not a theme "
                        "sound (measured %.0f Hz)" % pitch)
        self.assertEqual(self.metric(hub, "sounds"), 1)
        # A rule whose file is missing: counted and logged, and the toast still shows.
        hub.publish("signal:assigned", {})
        second = self.desktop.wait_notifications(2)[1]
        self.assertEqual(second["summary"], "Taken")
        self.wait_metric(hub, "failures_audio", 1)
        hub.wait_log("sound file %s is not readable" % os.path.join(self.desktop.dir, "no.wav"))

    def test_sound_via_server_leaves_the_sound_to_the_server(self):
        self.desktop.start_bus()
        self.desktop.start_audio()
        hub = self.hub(notify_chain(sound_via="server", coalesce=800), env=self.desktop.env())
        hub.wait_running("desk")
        hub.publish("assignment:created", {"signalIdentifier": "S-1"})
        hub.publish("assignment:created", {"signalIdentifier": "S-2"})
        first, update = self.desktop.wait_notifications(2)
        self.assertEqual(first["hints"]["sound-name"], "message-new-instant")
        self.assertIs(first["hints"]["suppress-sound"], False, "the server may play it")
        self.assertNotIn("sound-name", update["hints"], "a coalesced update makes no sound")
        self.assertIs(update["hints"]["suppress-sound"], True)
        time.sleep(0.5)
        self.assertLess(self.desktop.peak(), 20, "the plugin itself played nothing")
        self.assertEqual(self.metric(hub, "sounds"), 0)
        bad = self.hub(notify_chain(sound_via="speaker"), start=False)
        check = subprocess.run([LIVEHUBD, "--check", bad.conf_path], capture_output=True,
                               text=True, timeout=20)
        self.assertNotEqual(check.returncode, 0)
        self.assertIn("sound_via: 'speaker' is neither canberra nor server", check.stderr)


if __name__ == "__main__":
    unittest.main()
