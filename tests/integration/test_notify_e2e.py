"""The seed's story end to end, as deployed: an admin's `livehub pub assignment:created ...` on the
team's hub A; a person's own hub B whose `bridge` source subscribes to A's egress, chained into
`notify`; on B's desktop (a private session bus with the recording notification server, and
PulseAudio with a null sink whose monitor is recorded) the toast appears and the sound plays."""
import json
import os
import signal
import subprocess
import time
import unittest

import dbus

from hubtest import HubTestCase, LIVEHUB_CLI
from test_notify import Desktop, wait_for


class NotifyEndToEndTest(HubTestCase):
    def setUp(self):
        super().setUp()
        self.desktop = Desktop()
        self.addCleanup(self.desktop.stop)

    def start_dunst(self):
        """A real desktop's notification daemon: dunst on its own Xvfb display, on the private
        bus. Returns the environment that reaches it (for dunstctl)."""
        read_end, write_end = os.pipe()
        xvfb = subprocess.Popen(["Xvfb", "-displayfd", str(write_end), "-screen", "0",
                                 "640x240x24", "-nolisten", "tcp"], pass_fds=(write_end,),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(write_end)
        self.addCleanup(self.stop_process, xvfb)
        # Xvfb writes "N\n" once it serves; read to the newline before closing our end, or its
        # write of the newline fails and it exits.
        display = b""
        while not display.endswith(b"\n"):
            chunk = os.read(read_end, 16)
            if not chunk:
                break
            display += chunk
        os.close(read_end)
        display = display.decode().strip()
        self.assertTrue(display.isdigit(), "Xvfb did not start")
        env = dict(os.environ, DISPLAY=":" + display, **self.desktop.env())
        dunst = subprocess.Popen(["dunst"], env=env, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        self.addCleanup(self.stop_process, dunst)
        # Talk to dunst's own D-Bus interface (what dunstctl does, without needing busctl).
        bus = dbus.bus.BusConnection(self.desktop.bus_address)
        self.addCleanup(bus.close)
        wait_for(lambda: bus.name_has_owner("org.freedesktop.Notifications"), 20, "dunst")
        return dbus.Interface(bus.get_object("org.freedesktop.Notifications",
                                             "/org/freedesktop/Notifications"),
                              "org.dunstproject.cmd0")

    @staticmethod
    def stop_process(process):
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def bridged_hubs(self):
        """Hub A (the team's) and hub B (a desktop's: bridge from A into notify), with the
        bridge's subscription known to be active."""
        team = self.hub()
        desk = self.hub("chain = alerts\n"
                        "    source = team\n"
                        "        plugin = bridge\n"
                        "        connect = %s\n"
                        "        topics = assignment:\n"
                        "    sink = desk\n"
                        "        plugin = notify\n"
                        "        subscribe = assignment:\n"
                        "        delivery = queue\n" % team.egress, env=self.desktop.env())
        desk.wait_running("team")
        desk.wait_running("desk")
        # The bridge's SUB joins A's egress asynchronously: publish an event no rule notifies
        # until one arrives on B, so nothing published later can fall before the subscription.
        deadline = time.time() + 20
        while desk.status()["last_id"] == 0:
            self.assertLess(time.time(), deadline, "the bridge never joined the team hub")
            team.publish("assignment:warmup", {})
            time.sleep(0.2)
        return team, desk

    def test_a_real_notification_daemon_shows_it(self):
        self.desktop.start_bus(server=False)
        dunst = self.start_dunst()
        team, desk = self.bridged_hubs()
        pub = subprocess.run([LIVEHUB_CLI, "--control", team.control_endpoint, "pub",
                              "assignment:created", '{"signalIdentifier":"S-7 <R&D>"}'],
                             capture_output=True, text=True, timeout=30)
        self.assertEqual(pub.returncode, 0, pub.stderr)
        wait_for(lambda: desk.status()["metrics"].get('livehub_notify_sent_total{stage="desk"}'),
                 20, "dunst to take the notification")
        # dunst keeps what it showed in its history once closed.
        dunst.NotificationCloseAll()

        def history():
            return [{str(key): str(value) for key, value in entry.items()}
                    for entry in dunst.NotificationListHistory()]
        [shown] = wait_for(history, 20, "the notification in dunst's history")
        self.assertEqual((shown["appname"], shown["summary"]), ("livehub", "New Signal Assignment"))
        # The body as sent: event data escaped for the spec's markup, which dunst renders.
        self.assertEqual(shown["body"], "You've been assigned: S-7 &lt;R&amp;D&gt;")
        self.assertEqual(shown["category"], "im.received")

    def test_pub_on_the_team_hub_notifies_and_sounds_on_the_desktop_hub(self):
        self.desktop.start_bus()
        self.desktop.start_audio()
        team, desk = self.bridged_hubs()
        time.sleep(0.3)
        self.assertLess(self.desktop.peak(), 20, "the desktop is silent before the assignment")
        self.assertEqual(self.desktop.notifications(), [])
        pub = subprocess.run([LIVEHUB_CLI, "--control", team.control_endpoint, "pub",
                              "assignment:created", '{"signalIdentifier":"S-42"}',
                              "--to", "user:42", "--key", "rec42:v1"],
                             capture_output=True, text=True, timeout=30)
        self.assertEqual(pub.returncode, 0, pub.stderr)
        [shown] = self.desktop.wait_notifications(1, timeout=20)
        self.assertEqual((shown["summary"], shown["body"]),
                         ("New Signal Assignment", "You've been assigned: S-42"))
        self.assertEqual((shown["app"], shown["hints"]["urgency"], shown["hints"]["category"]),
                         ("livehub", 1, "im.received"))
        wait_for(lambda: self.desktop.peak() > 100, 20, "the assignment sound on the null sink")
        # B re-stamped the event: it came through the bridge stage, with the key kept.
        [event] = [e for e in desk.replay(0)[2] if e["type"] == "assignment:created"]
        self.assertEqual((event["src"], event["key"], event["data"], event["to"]),
                         ("team", "rec42:v1", {"signalIdentifier": "S-42"}, ["user:42"]))
        metrics = desk.status()["metrics"]
        self.assertEqual(metrics['livehub_notify_sent_total{stage="desk"}'], 1)
        self.assertEqual(metrics['livehub_notify_sounds_total{stage="desk"}'], 1)
        # The desk's person mutes it from their own hub; the team hub is unaffected.
        dnd = subprocess.run([LIVEHUB_CLI, "--control", desk.control_endpoint, "stage", "desk",
                              "dnd", "on"], capture_output=True, text=True, timeout=30)
        self.assertEqual(json.loads(dnd.stdout)["dnd"], True, dnd.stderr)
        team.publish("assignment:created", {"signalIdentifier": "S-43"})
        wait_for(lambda: desk.status()["metrics"].get(
            'livehub_notify_suppressed_total{stage="desk",reason="dnd"}') == 1, 20,
            "the second assignment suppressed on the desk")
        self.assertEqual(len(self.desktop.notifications()), 1)


if __name__ == "__main__":
    unittest.main()
