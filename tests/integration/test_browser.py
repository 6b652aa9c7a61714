"""The browser client and dashboard in a real browser: boots a hub with the websocket sink (which
serves plugins/websocket/www, with the dev login on), a second websocket stage with it off, the
polling sink and the metrics source, then runs tests/browser/dashboard.test.mjs (node:test +
playwright-core driving Debian's chromium) against it. A missing chromium or
tests/browser/node_modules is a failure (scripts/dev deps installs both). The dev login's refusals
are tested here with plain HTTP requests too."""
import http.client
import json
import os
import subprocess
import tempfile
import unittest

from hubtest import BUILD_DIR, LIVEHUB_CLI, LIVEHUBD, SOURCE_DIR, HubTestCase, free_port
from test_websocket import mint

SECRET = "browser-test-secret-0123456789"
BROWSER_DIR = os.path.join(SOURCE_DIR, "tests", "browser")


def get(port, path, headers=None):
    """GET path from 127.0.0.1:port: (status, decoded JSON body or text)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        body = response.read().decode()
        try:
            return response.status, json.loads(body)
        except ValueError:
            return response.status, body
    finally:
        connection.close()


def dev_login_chain(port, dev_login):
    return """
chain = web%d
    sink = web%d
        plugin = websocket
        listen = 127.0.0.1:%d
        anonymous = true
        dev_login = %s
""" % (port, port, port, "true" if dev_login else "false")


class BrowserTest(HubTestCase):
    def test_client_state_machine(self):
        """livehub.js's unit tests in Node (fake transports), no browser needed."""
        result = subprocess.run(["node", "--test", os.path.join(BROWSER_DIR, "unit.test.mjs")],
                                cwd=BROWSER_DIR, timeout=60, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
        output = result.stdout.decode(errors="replace")
        self.assertEqual(result.returncode, 0, output)

    def test_dev_login_mints_for_loopback_and_refuses_otherwise(self):
        on, off = free_port(), free_port()
        hub = self.hub(dev_login_chain(on, True) + dev_login_chain(off, False),
                       hub_extra="token_secret = env:LIVEHUB_BROWSER_SECRET",
                       env={"LIVEHUB_BROWSER_SECRET": SECRET})
        hub.wait_running("web%d" % on)
        hub.wait_running("web%d" % off)
        status, body = get(on, "/dev/token?sub=7&role=startup")
        self.assertEqual(status, 200, body)
        self.assertEqual((body["sub"], body["role"]), ("7", "startup"))
        self.assertEqual(body["token"].count("."), 2)
        self.assertNotIn(body["token"], hub.log(), "a token must never be logged")
        status, body = get(off, "/dev/token?sub=7&role=startup")
        self.assertEqual((status, body["error"]), (403, "disabled"), body)
        refusals = [
            ("/dev/token?sub=7", {}, 400, "bad_request"),
            ("/dev/token?sub=a%20b&role=startup", {}, 400, "bad_request"),
            ("/dev/token?sub=" + "x" * 33 + "&role=admin", {}, 400, "bad_request"),
            ("/dev/token?sub=1&role=admin", {"Host": "evil.example:%d" % on}, 403, "not_loopback"),
            ("/dev/token?sub=1&role=admin", {"Origin": "http://evil.example"}, 403, "cross_site"),
            ("/dev/token?sub=1&role=admin", {"Sec-Fetch-Site": "cross-site"}, 403, "cross_site"),
            ("/dev/token?sub=1&role=admin", {"X-Forwarded-For": "192.0.2.7"}, 403, "proxied"),
            ("/dev/token?sub=1&role=admin", {"Forwarded": "for=192.0.2.7"}, 403, "proxied"),
        ]
        for path, headers, want_status, want_error in refusals:
            status, body = get(on, path, headers)
            self.assertEqual((status, body.get("error")), (want_status, want_error),
                             "%s %s: %s" % (path, headers, body))
            self.assertNotIn("token", body)
        status, body = get(on, "/dev/token?sub=1&role=admin",
                           {"Host": "localhost:%d" % on, "Origin": "http://localhost:%d" % on,
                            "Sec-Fetch-Site": "same-origin"})
        self.assertEqual(status, 200, body)

    def test_dev_login_without_a_token_secret_says_why(self):
        port = free_port()
        hub = self.hub(dev_login_chain(port, True))
        hub.wait_running("web%d" % port)
        status, body = get(port, "/dev/token?sub=7&role=startup")
        self.assertEqual((status, body["error"]), (503, "no_secret"), body)
        self.assertIn("token_secret", body["message"])

    def test_dev_login_needs_a_loopback_listen(self):
        with tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False) as out:
            out.write("hub\n    name = t\n    control = ipc:///tmp/livehub-devlogin-%d.control\n"
                      "chain = web\n    sink = web\n        plugin = websocket\n"
                      "        listen = 0.0.0.0:%d\n        public = true\n"
                      "        dev_login = true\n" % (os.getpid(), free_port()))
        try:
            result = subprocess.run([LIVEHUBD, "--check", out.name], stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, timeout=30)
        finally:
            os.unlink(out.name)
        output = result.stdout.decode(errors="replace")
        self.assertNotEqual(result.returncode, 0, output)
        self.assertIn("dev_login: needs a loopback listen", output)

    def test_dashboard_in_chromium(self):
        if not os.path.exists("/usr/bin/chromium"):
            self.fail("no /usr/bin/chromium: run scripts/dev deps")
        for package in ("playwright-core", "react", "react-dom"):
            if not os.path.isdir(os.path.join(BROWSER_DIR, "node_modules", package)):
                self.fail("no %s in tests/browser/node_modules: run scripts/dev deps "
                          "(npm ci --prefix tests/browser)" % package)
        ws_port, poll_port, plain_port, metrics_port = (free_port(), free_port(), free_port(),
                                                         free_port())
        # The browsers chain comes last: the polling test drops it (and only it) with a reload.
        chains = """
chain = observability
    source = metrics
        plugin = metrics
        listen = 127.0.0.1:%d
        interval = 1
chain = plain
    sink = plain
        plugin = websocket
        listen = 127.0.0.1:%d
        anonymous = true
chain = polling
    sink = poll
        plugin = polling
        listen = 127.0.0.1:%d
        anonymous = true
        origins = http://127.0.0.1:%d
        rate = 0
chain = browsers
    sink = ws
        plugin = websocket
        listen = 127.0.0.1:%d
        anonymous = true
        dev_login = true
        stats = /stats
""" % (metrics_port, plain_port, poll_port, ws_port, ws_port)
        hub = self.hub(chains, hub_extra="token_secret = env:LIVEHUB_BROWSER_SECRET",
                       env={"LIVEHUB_BROWSER_SECRET": SECRET})
        for stage in ("ws", "poll", "plain", "metrics"):
            hub.wait_running(stage)
        shots = os.path.join(os.path.abspath(BUILD_DIR), "screenshots")
        os.makedirs(shots, exist_ok=True)
        env = dict(os.environ,
                   LH_HTTP="http://127.0.0.1:%d" % ws_port,
                   LH_HTTP_PLAIN="http://127.0.0.1:%d" % plain_port,
                   LH_POLL="http://127.0.0.1:%d" % poll_port,
                   LH_CLI=os.path.abspath(LIVEHUB_CLI),
                   LH_CONTROL=hub.control_endpoint,
                   LH_CONF=hub.conf_path,
                   LH_SHOTS=shots)
        env["LH_TOKEN_CLIENT7"] = mint("7", "startup", secret=SECRET)
        env["LH_TOKEN_CLIENT8"] = mint("8", "startup", secret=SECRET)
        env["LH_TOKEN_ADMIN"] = mint("1", "admin", secret=SECRET)
        # Output goes to a file, so a run that has to be killed still shows how far it got.
        with tempfile.TemporaryFile() as output_file:
            process = subprocess.Popen(["node", "--test", "--test-reporter=spec",
                                        "--test-timeout=120000",
                                        os.path.join(BROWSER_DIR, "dashboard.test.mjs")],
                                       cwd=BROWSER_DIR, env=env, stdout=output_file,
                                       stderr=subprocess.STDOUT)
            try:
                returncode = process.wait(timeout=540)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                returncode = "killed after 540 s"
            output_file.seek(0)
            output = output_file.read().decode(errors="replace")
        print(output)
        self.assertEqual(returncode, 0, output + "\n--- hub log ---\n" + hub.log()[-4000:])

if __name__ == "__main__":
    unittest.main()
