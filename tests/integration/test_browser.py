"""The browser client and dashboard in a real browser: boots a hub with the websocket sink (which
serves plugins/websocket/www) and the polling sink, then runs tests/browser/dashboard.test.mjs
(node:test + playwright-core driving Debian's chromium) against it. A missing chromium or
tests/browser/node_modules is a failure (scripts/dev deps installs both)."""
import os
import subprocess
import unittest

from hubtest import BUILD_DIR, LIVEHUB_CLI, SOURCE_DIR, HubTestCase, free_port
from test_websocket import mint

SECRET = "browser-test-secret-0123456789"
BROWSER_DIR = os.path.join(SOURCE_DIR, "tests", "browser")


class BrowserTest(HubTestCase):
    def test_client_state_machine(self):
        """livehub.js's unit tests in Node (fake transports), no browser needed."""
        result = subprocess.run(["node", "--test", os.path.join(BROWSER_DIR, "unit.test.mjs")],
                                cwd=BROWSER_DIR, timeout=60, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
        output = result.stdout.decode(errors="replace")
        self.assertEqual(result.returncode, 0, output)

    def test_dashboard_in_chromium(self):
        if not os.path.exists("/usr/bin/chromium"):
            self.fail("no /usr/bin/chromium: run scripts/dev deps")
        if not os.path.isdir(os.path.join(BROWSER_DIR, "node_modules", "playwright-core")):
            self.fail("no tests/browser/node_modules: run scripts/dev deps")
        ws_port, poll_port = free_port(), free_port()
        chains = """
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
        stats = /stats
""" % (poll_port, ws_port, ws_port)
        hub = self.hub(chains, hub_extra="token_secret = env:LIVEHUB_BROWSER_SECRET",
                       env={"LIVEHUB_BROWSER_SECRET": SECRET})
        hub.wait_running("ws")
        hub.wait_running("poll")
        shots = os.path.join(os.path.abspath(BUILD_DIR), "screenshots")
        os.makedirs(shots, exist_ok=True)
        env = dict(os.environ,
                   LH_HTTP="http://127.0.0.1:%d" % ws_port,
                   LH_POLL="http://127.0.0.1:%d" % poll_port,
                   LH_CLI=os.path.abspath(LIVEHUB_CLI),
                   LH_CONTROL=hub.control_endpoint,
                   LH_CONF=hub.conf_path,
                   LH_SHOTS=shots)
        env["LH_TOKEN_CLIENT7"] = mint("7", "startup", secret=SECRET)
        env["LH_TOKEN_CLIENT8"] = mint("8", "startup", secret=SECRET)
        env["LH_TOKEN_ADMIN"] = mint("1", "admin", secret=SECRET)
        result = subprocess.run(["node", "--test", "--test-reporter=spec",
                                 os.path.join(BROWSER_DIR, "dashboard.test.mjs")],
                                cwd=BROWSER_DIR, env=env, timeout=150,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        output = result.stdout.decode(errors="replace")
        print(output)
        self.assertEqual(result.returncode, 0, output + "\n--- hub log ---\n" + hub.log()[-4000:])


if __name__ == "__main__":
    unittest.main()
