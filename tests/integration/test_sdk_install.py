"""The SDK as a third-party plugin author gets it: `cmake --install` the build into a temporary
prefix, build examples/plugin (the counter plugin) out of tree with pkg-config and nothing else
from this repository, then run it inside the *installed* livehubd and ask the installed CLI
about it."""
import filecmp
import glob
import os
import re
import shutil
import subprocess
import tempfile
import time
import unittest

import hubtest

BUILD_DIR = os.path.realpath(hubtest.BUILD_DIR)
SOURCE_DIR = os.path.realpath(hubtest.SOURCE_DIR)
CMAKE = os.environ.get("LIVEHUB_CMAKE_COMMAND", "cmake")
COUNTER_OPTIONS = {"every": "int", "interval": "int", "type": "string", "to": "string",
                   "reset": "bool", "max_types": "int"}


def run(args, env=None, cwd=None, check=True, timeout=300):
    result = subprocess.run(args, env=env, cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError("%s exited %d:\n%s" % (" ".join(args), result.returncode,
                                                     result.stdout))
    return result


class Sdk:
    """One installation of the build tree, and the example plugin built against it."""

    def __init__(self):
        self.tmp = tempfile.mkdtemp(prefix="livehub-sdk-")
        self.prefix = os.path.join(self.tmp, "prefix")
        run([CMAKE, "--install", BUILD_DIR, "--prefix", self.prefix])
        # GNUInstallDirs may pick lib, lib64 or lib/<multiarch>: find where the .pc went.
        pcs = glob.glob(os.path.join(self.prefix, "**", "pkgconfig", "livehub.pc"), recursive=True)
        if len(pcs) != 1:
            raise AssertionError("expected one installed livehub.pc, found %s" % pcs)
        self.pc_dir = os.path.dirname(pcs[0])
        self.libdir = os.path.dirname(self.pc_dir)
        self.plugin_dir = os.path.join(self.libdir, "livehub", "plugins")
        self.livehubd = os.path.join(self.prefix, "bin", "livehubd")
        self.cli = os.path.join(self.prefix, "bin", "livehub")
        # The author's environment: the SDK through pkg-config, the installed library at run time.
        self.env = dict(os.environ, PKG_CONFIG_PATH=self.pc_dir)
        self.env.pop("PKG_CONFIG_LIBDIR", None)
        self.run_env = {"LD_LIBRARY_PATH": ":".join(
            filter(None, [self.libdir, os.environ.get("LD_LIBRARY_PATH")]))}

        # A copy of the example, as an author's own checkout would be: nothing from this
        # repository is reachable next to it.
        self.example_src = os.path.join(self.tmp, "counter-src")
        shutil.copytree(os.path.join(SOURCE_DIR, "examples", "plugin"), self.example_src)
        self.example_build = os.path.join(self.tmp, "counter-build")
        run([CMAKE, "-S", self.example_src, "-B", self.example_build,
             "-DCMAKE_EXPORT_COMPILE_COMMANDS=ON"], env=self.env)
        run([CMAKE, "--build", self.example_build], env=self.env)
        # Its install rule puts it beside the SDK's plugins (pkg-config's plugindir).
        run([CMAKE, "--install", self.example_build], env=self.env)
        self.make_build = os.path.join(self.tmp, "counter-make")
        os.mkdir(self.make_build)
        run(["make", "-f", os.path.join(self.example_src, "Makefile")], env=self.env,
            cwd=self.make_build)

    def pkg_config(self, *args):
        return run(["pkg-config"] + list(args) + ["livehub"], env=self.env).stdout.strip()

    def cli_run(self, *args, env=None, check=True):
        return run([self.cli] + list(args), env=dict(self.env, **self.run_env, **(env or {})),
                   check=check, timeout=60)

    def remove(self):
        shutil.rmtree(self.tmp, ignore_errors=True)


class InstalledHub(hubtest.Hub):
    """hubtest.Hub running the installed livehubd instead of the build tree's."""

    livehubd = None

    def start(self, wait=True):
        saved = hubtest.LIVEHUBD
        hubtest.LIVEHUBD = self.livehubd
        try:
            super().start(wait)
        finally:
            hubtest.LIVEHUBD = saved

    def mapped_files(self):
        with open("/proc/%d/maps" % self.process.pid) as maps:
            return {line.split()[-1] for line in maps if "/" in line}


class SdkInstallTest(hubtest.HubTestCase):
    sdk = None

    @classmethod
    def setUpClass(cls):
        cls.sdk = Sdk()
        InstalledHub.livehubd = cls.sdk.livehubd

    @classmethod
    def tearDownClass(cls):
        if cls.sdk and not os.environ.get("LIVEHUB_KEEP_TMP"):
            cls.sdk.remove()

    def hub(self, chains, **kwargs):
        hub = InstalledHub(chains, plugin_dirs=[self.sdk.plugin_dir],
                           env=self.sdk.run_env, **kwargs)
        self.hubs.append(hub)
        return hub

    # ---- the installation ----------------------------------------------------------------

    def test_install_layout(self):
        sdk = self.sdk
        for program in (sdk.livehubd, sdk.cli):
            self.assertTrue(os.access(program, os.X_OK), program)
        self.assertTrue(os.path.exists(os.path.join(sdk.libdir, "liblivehub.so")))
        self.assertTrue(glob.glob(os.path.join(sdk.libdir, "liblivehub.so.*")))
        for plugin in ("log", "bridge"):
            self.assertTrue(os.path.exists(os.path.join(sdk.plugin_dir, plugin + ".so")), plugin)
        headers = sorted(os.listdir(os.path.join(SOURCE_DIR, "include", "livehub")))
        self.assertIn("plugin.h", headers)
        for header in headers:
            installed = os.path.join(sdk.prefix, "include", "livehub", header)
            self.assertTrue(filecmp.cmp(os.path.join(SOURCE_DIR, "include", "livehub", header),
                                        installed, shallow=False), installed)

    def test_pkg_config_points_into_the_prefix(self):
        sdk = self.sdk
        with open(os.path.join(SOURCE_DIR, "CMakeLists.txt")) as lists:
            version = re.search(r"project\(livehub VERSION (\S+)", lists.read()).group(1)
        self.assertEqual(sdk.pkg_config("--modversion"), version)
        cflags = sdk.pkg_config("--cflags").split()
        self.assertIn("-fvisibility=hidden", cflags)
        includes = [os.path.realpath(flag[2:]) for flag in cflags if flag.startswith("-I")]
        self.assertIn(os.path.realpath(os.path.join(sdk.prefix, "include")), includes)
        libs = sdk.pkg_config("--libs").split()
        self.assertIn("-llivehub", libs)
        self.assertIn(os.path.realpath(sdk.libdir),
                      [os.path.realpath(flag[2:]) for flag in libs if flag.startswith("-L")])
        # The headers include msgpack.h and jansson.h, so their flags must come along.
        for library in ("-lzmq", "-ljansson"):
            self.assertIn(library, libs)
        self.assertEqual(os.path.realpath(sdk.pkg_config("--variable=plugindir")),
                         os.path.realpath(sdk.plugin_dir))

    # ---- the example, built from the SDK only ------------------------------------------------

    def test_example_builds_from_the_sdk_only(self):
        sdk = self.sdk
        with open(os.path.join(sdk.example_build, "compile_commands.json")) as commands:
            text = commands.read()
        self.assertIn("counter.c", text)
        self.assertNotIn(SOURCE_DIR, text)
        self.assertNotIn(BUILD_DIR, text)
        installed = os.path.join(sdk.plugin_dir, "counter.so")
        for module in (os.path.join(sdk.example_build, "counter.so"), installed,
                       os.path.join(sdk.make_build, "counter.so")):
            self.assertTrue(os.path.exists(module), module)
            # -fvisibility=hidden from pkg-config: the descriptor function is the only export.
            symbols = run(["nm", "-D", "--defined-only", module]).stdout.split()
            exported = {name for name in symbols[2::3] if name not in ("_init", "_fini")}
            self.assertEqual(exported, {"lh_plugin_v1"}, module)

    def test_cli_lists_the_example_and_its_options(self):
        sdk = self.sdk
        for directory in (sdk.plugin_dir, sdk.make_build):
            out = sdk.cli_run("plugins", env={"LIVEHUB_PLUGIN_DIR": directory}).stdout
            self.assertIn("counter 1.0: counts events per type", out)
            block = out[out.index("counter 1.0:"):].split("\n\n")[0]
            for option, type_ in COUNTER_OPTIONS.items():
                self.assertRegex(block, r"\n    %s +%s " % (option, type_))
            self.assertIn("[default: stats:counts", block)
        out = sdk.cli_run("plugins", env={"LIVEHUB_PLUGIN_DIR": sdk.plugin_dir}).stdout
        for plugin in ("log 1.0:", "bridge 1.0:"):
            self.assertIn(plugin, out)

    def test_check_refuses_bad_options(self):
        """Unknown keys are refused by the options table, impossible values by validate()."""
        cases = [("every = 0\n        interval = 0", "every, interval: both are 0"),
                 ("evry = 5", "unknown key 'evry' for plugin 'counter' (known: every, interval"),
                 ("every = -1", "every"),
                 ("type = $mine", "type: '$mine' starts with '$'")]
        for options, message in cases:
            conf = os.path.join(self.sdk.tmp, "bad.conf")
            with open(conf, "w") as out:
                out.write("hub\n    plugin_dir = %s\nchain = c\n    processor = counts\n"
                          "        plugin = counter\n        %s\n" % (self.sdk.plugin_dir, options))
            result = self.sdk.cli_run("check", conf, check=False)
            self.assertEqual(result.returncode, 1, result.stdout)
            self.assertIn(message, result.stdout)

    # ---- the example, running in the installed hub -----------------------------------------

    def test_counts_and_reports_every_n_events(self):
        hub = self.hub("""
chain = stats
    processor = counts
        plugin = counter
        subscribe = order: payment:
        every = 5
""")
        hub.wait_running("counts")
        hub.wait_log("[counts] counting; reports as stats:counts every 5 events / 0 ms")
        # The installed hub, library and plugin are the ones running, not the build tree's.
        mapped = hub.mapped_files()
        prefix = os.path.realpath(self.sdk.prefix)
        self.assertTrue(any(p.startswith(prefix) and "liblivehub.so" in p for p in mapped), mapped)
        self.assertIn(os.path.realpath(os.path.join(self.sdk.plugin_dir, "counter.so")),
                      {os.path.realpath(p) for p in mapped})
        self.assertFalse([p for p in mapped if p.startswith(BUILD_DIR)])

        sub = hub.subscriber("stats:")
        types = ["order:created", "order:paid", "payment:failed"]
        for i in range(12):
            hub.publish(types[i % 3], {"n": i})
            hub.publish("noise:tick", {"n": i})  # not subscribed: never counted
        reports = sub.recv_n(2)
        self.assertEqual(len(reports), 2, hub.log())
        first, second = (report["data"] for report in reports)
        for report in reports:
            self.assertEqual(report["type"], "stats:counts")
            self.assertEqual(report["src"], "counts")
        self.assertEqual(first["counts"],
                         {"order:created": 2, "order:paid": 2, "payment:failed": 1})
        self.assertEqual(first["total"], 5)
        self.assertEqual(second["counts"],
                         {"order:created": 4, "order:paid": 3, "payment:failed": 3})
        self.assertEqual((second["total"], second["other"], second["missed"]), (10, 0, 0))
        # The plugin's metrics (lh_io_counter, lh_io_gauge) read back through the registry.
        metrics = second["metrics"]
        self.assertEqual(metrics["livehub_counter_events_total"], 10)
        self.assertEqual(metrics["livehub_counter_reports_total"], 1)
        self.assertEqual(metrics["livehub_counter_types"], 3)
        self.assertGreaterEqual(metrics["livehub_stage_delivered_total"], 10)
        # Two more counted events are below `every`: no third report.
        self.assertIsNone(sub.recv(timeout=0.5))
        sub.close()

        deadline = time.time() + 10
        while hub.stage("counts")["delivered"] < 12 and time.time() < deadline:
            time.sleep(0.05)
        stage = hub.stage("counts")
        self.assertEqual((stage["role"], stage["plugin"], stage["delivered"]),
                         ("processor", "counter", 12))
        self.assertEqual(stage["workers"][0]["state"], "running")
        self.assertEqual(stage["restarts"], 0)

    def test_the_example_filter_masks_addresses_in_line(self):
        """examples/plugin/email_mask.c, an ABI 1.2 in-line filter built from the SDK only, in
        front of the control entry: the address never reaches a subscriber nor history."""
        for module in (os.path.join(self.sdk.plugin_dir, "email_mask.so"),
                       os.path.join(self.sdk.make_build, "email_mask.so")):
            symbols = run(["nm", "-D", "--defined-only", module]).stdout.split()
            self.assertEqual({n for n in symbols[2::3] if n not in ("_init", "_fini")},
                             {"lh_plugin_v1"}, module)
        out = self.sdk.cli_run("plugins", env={"LIVEHUB_PLUGIN_DIR": self.sdk.plugin_dir}).stdout
        self.assertIn("email_mask 1.0: in-line filter", out)
        self.assertIn("roles: filter", out)
        hub = self.hub("""
chain = backend
    entries = control
    filter = no-emails
        plugin = email_mask
        mask = [email]
""")
        sub = hub.subscriber("contact:")
        self.assertGreater(hub.publish("contact:added", {"who": {"email": "ann@example.org",
                                                                   "name": "Ann"},
                                                           "cc": ["bob@example.org", "x"]}), 0)
        event = sub.recv()
        self.assertEqual(event["data"], {"who": {"email": "[email]", "name": "Ann"},
                                         "cc": ["[email]", "x"]})
        status, meta, replayed = hub.replay(0)
        self.assertNotIn("example.org", repr(replayed))
        (entry,) = hub.status()["filters"]
        self.assertEqual((entry["name"], entry["changed"]), ("no-emails", 1))

    def test_interval_reports_with_reset_and_audience(self):
        hub = self.hub("""
chain = stats
    filter = ticker
        plugin = counter
        subscribe = order:
        every = 0
        interval = 200
        reset = true
        type = stats:window
        to = admin
""")
        hub.wait_running("ticker")
        sub = hub.subscriber("stats:")

        def windows(type_, count):
            """Reports until they hold count events (an interval may split a burst)."""
            got, total = [], 0
            while total < count:
                window = sub.recv(timeout=5)
                self.assertIsNotNone(window, hub.log())
                self.assertEqual((window["type"], window["to"]), ("stats:window", ["admin"]))
                # reset = true: each window holds only what arrived since the previous one.
                self.assertEqual(window["data"]["counts"], {type_: window["data"]["total"]})
                total += window["data"]["total"]
                got.append(window)
            self.assertEqual(total, count)
            return got

        for i in range(3):
            hub.publish("order:created", {"n": i})
        windows("order:created", 3)
        for i in range(2):
            hub.publish("order:paid", {"n": i})
        windows("order:paid", 2)
        # Nothing counted, nothing reported: several idle intervals stay quiet.
        self.assertIsNone(sub.recv(timeout=0.8))
        sub.close()

if __name__ == "__main__":
    unittest.main()
