"""The control endpoint serves the hub's own user only (issue 21, finding 9): its default socket is
in a directory only that user can enter, and over ipc every request's peer credentials must carry
the hub's uid. Another user is played by `nobody` through setpriv (the tests run as root)."""
import os
import shutil
import socket
import stat
import subprocess
import tempfile
import unittest

from hubtest import LIVEHUB_CLI, SANITIZER_MARKS, HubTestCase, free_port, pack_event

OTHER_UID = 65534  # nobody
AS_OTHER_USER = ["setpriv", "--reuid=%d" % OTHER_UID, "--regid=%d" % OTHER_UID, "--clear-groups"]

# Run as the other user: connects to the control socket and tries what a stranger would. Prints one
# line per attempt: "connect: OK" or the errno name, then each request's reply frames.
STRANGER = r"""
import errno, socket, sys, zmq
endpoint = sys.argv[1]
path = endpoint[len("ipc://"):]
probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    probe.connect("\0" + path[1:] if path.startswith("@") else path)
    print("connect: OK")
except OSError as error:
    print("connect: " + errno.errorcode.get(error.errno, str(error.errno)))
    sys.exit(0)
finally:
    probe.close()
context = zmq.Context()
for frames in ([b"PUBLISH", b"stranger:said", bytes.fromhex(sys.argv[2])], [b"RELOAD"],
               [b"STAGE", b"any", b"ping"], [b"STATUS"]):
    dealer = context.socket(zmq.DEALER)
    dealer.linger = 0
    dealer.connect(endpoint)
    dealer.send_multipart(frames)
    if dealer.poll(20000):
        print(frames[0].decode() + ": " + " | ".join(f.decode(errors="replace")
                                                      for f in dealer.recv_multipart()))
    else:
        print(frames[0].decode() + ": no reply")
    dealer.close()
"""


def as_stranger(endpoint):
    """What the other user got from the control endpoint, as {attempt: result}."""
    result = subprocess.run(AS_OTHER_USER + ["/usr/bin/python3", "-c", STRANGER, endpoint,
                                             pack_event("stranger:said", {"x": 1}).hex()],
                            capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise AssertionError("the stranger's client failed:\n" + result.stderr)
    return dict(line.split(": ", 1) for line in result.stdout.splitlines())


class ControlAuthTest(HubTestCase):
    def private_runtime_dir(self):
        """An XDG_RUNTIME_DIR of our own, as a login session would have."""
        run = tempfile.mkdtemp(prefix="livehub-run-")
        self.addCleanup(shutil.rmtree, run, True)
        return run

    def default_control_hub(self, run, name="test", start=True):
        """A hub with no control key: it takes the default socket under run (XDG_RUNTIME_DIR)."""
        hub = self.hub(start=False, env={"XDG_RUNTIME_DIR": run})
        hub.control_endpoint = "ipc://%s/livehub/%s.control" % (run, name)
        with open(hub.conf_path, "w") as conf:
            conf.write("".join(line + "\n" for line in hub.conf_text("").splitlines()
                               if not line.strip().startswith("control =")
                               and line.strip() != "name = test")
                       .replace("hub\n", "hub\n    name = %s\n" % name, 1))
        if start:
            hub.start()
        return hub

    def assert_start_refused(self, hub, reason):
        """The hub exits at start with reason in its log (and no sanitizer report)."""
        hub.start(wait=False)
        hub.process.wait(timeout=60)
        self.hubs.remove(hub)
        code = hub.stop(check=False)
        log = hub.log()
        self.assertNotEqual(code, 0, log)
        self.assertIn(reason, log)
        self.assertFalse([mark for mark in SANITIZER_MARKS if mark in log], log)

    def test_the_default_socket_is_private_to_the_hubs_user(self):
        run = self.private_runtime_dir()
        os.chmod(run, 0o755)  # even when the runtime directory itself is open to all
        hub = self.default_control_hub(run)
        directory = os.path.join(run, "livehub")
        info = os.lstat(directory)
        self.assertTrue(stat.S_ISDIR(info.st_mode))
        self.assertEqual(stat.S_IMODE(info.st_mode), 0o700)
        self.assertEqual(stat.S_IMODE(os.stat(os.path.join(directory, "test.control")).st_mode),
                         0o600)
        # The kernel refuses the stranger before ZeroMQ sees anything.
        self.assertEqual(as_stranger(hub.control_endpoint), {"connect": "EACCES"})
        # The hub's own user finds the same default through the CLI, by the hub's name.
        mine = subprocess.run([LIVEHUB_CLI, "--hub", "test", "pub", "note:mine", "{}"],
                              capture_output=True, text=True, timeout=60,
                              env=dict(os.environ, XDG_RUNTIME_DIR=run))
        self.assertEqual(mine.returncode, 0, mine.stderr)
        self.assertEqual(int(mine.stdout), hub.status()["last_id"])
        self.assertIn("control ipc://%s/livehub/test.control" % run, hub.log())
        # a clean stop takes the socket file away (libzmq would leave it behind)
        self.hubs.remove(hub)
        self.assertEqual(hub.stop(), 0)
        self.assertFalse(os.path.exists(os.path.join(directory, "test.control")))

    def test_another_uid_is_refused_even_when_it_can_reach_the_socket(self):
        # An operator's own path, with permissions that let everyone connect: the peer
        # credential check still refuses every request from another uid.
        open_dir = tempfile.mkdtemp(prefix="livehub-open-")
        self.addCleanup(shutil.rmtree, open_dir, True)
        os.chmod(open_dir, 0o755)
        hub = self.hub(start=False)
        hub.control_endpoint = "ipc://%s/control" % open_dir
        hub.write_conf("")
        hub.start()
        os.chmod(os.path.join(open_dir, "control"), 0o777)
        got = as_stranger(hub.control_endpoint)
        self.assertEqual(got["connect"], "OK")
        refusal = "ERR | refused: this control endpoint serves uid %d only, not uid %d" % (
            os.geteuid(), OTHER_UID)
        for attempt in ("PUBLISH", "RELOAD", "STAGE", "STATUS"):
            self.assertEqual(got[attempt], refusal, got)
        cli = subprocess.run(AS_OTHER_USER + [LIVEHUB_CLI, "--control", hub.control_endpoint,
                                              "reload"], capture_output=True, text=True,
                             timeout=60)
        self.assertEqual(cli.returncode, 1)
        self.assertIn("refused: this control endpoint serves uid", cli.stderr)
        self.assertNotIn("reloaded", hub.log())
        # nothing the stranger sent was accepted; the hub's own user is served as before
        self.assertEqual(hub.status()["last_id"], 0)
        self.assertEqual(hub.publish("note:mine", {}), 1)

    def test_a_tcp_control_without_curve_is_served_with_a_warning(self):
        # as before this change, but the log says who can use it
        hub = self.hub(start=False)
        hub.control_endpoint = "tcp://127.0.0.1:%d" % free_port()
        hub.write_conf("")
        hub.start()
        self.assertIn("control %s has no CURVE: every local user can use it"
                      % hub.control_endpoint, hub.log())

    def test_two_hubs_of_one_name_do_not_share_a_socket(self):
        run = self.private_runtime_dir()
        first = self.default_control_hub(run)
        second = self.default_control_hub(run, start=False)
        self.assert_start_refused(
            second, "is in use by another process (another hub with the same name?")
        self.assertEqual(first.control(b"PING"), [b"PONG"])
        other = self.default_control_hub(run, name="other")
        self.assertEqual(other.control(b"PING"), [b"PONG"])
        self.assertEqual(first.control(b"PING"), [b"PONG"])

    def test_a_default_directory_others_could_use_is_refused(self):
        run = self.private_runtime_dir()
        for make in (lambda path: os.mkdir(path, 0o755),
                     lambda path: os.symlink(tempfile.gettempdir(), path)):
            directory = os.path.join(run, "livehub")
            make(directory)
            os.chmod(directory, 0o755) if not os.path.islink(directory) else None
            hub = self.default_control_hub(run, start=False)
            self.assert_start_refused(
                hub, "control directory %s is not a private directory" % directory)
            # the CLI will not talk to whatever waits in such a directory either
            cli = subprocess.run([LIVEHUB_CLI, "--hub", "test", "status"], capture_output=True,
                                 text=True, timeout=60, env=dict(os.environ, XDG_RUNTIME_DIR=run))
            self.assertEqual(cli.returncode, 1)
            self.assertIn("is not a private directory", cli.stderr)
            if os.path.islink(directory):
                os.unlink(directory)
            else:
                os.rmdir(directory)


if __name__ == "__main__":
    unittest.main()
