"""CURVE on the tcp endpoints: a client whose public key is in the hub's client directory gets
in; an unknown key is refused at the handshake, for producers and subscribers alike."""
import os
import time
import unittest

import zmq

from hubtest import HubTestCase, pack_event


def write_cert(path, public, secret=None):
    """A certificate in czmq's zcert format (ZPL), as `zcert_save` writes it."""
    with open(path, "w") as cert:
        cert.write("#   ZeroMQ CURVE Certificate\nmetadata\ncurve\n")
        cert.write('    public-key = "%s"\n' % public.decode())
        if secret:
            cert.write('    secret-key = "%s"\n' % secret.decode())


class CurveTest(HubTestCase):
    def setUp(self):
        super().setUp()
        self.server_public, self.server_secret = zmq.curve_keypair()
        self.known_public, self.known_secret = zmq.curve_keypair()
        self.unknown_public, self.unknown_secret = zmq.curve_keypair()

    def secure_hub(self):
        hub = self.hub(start=False)
        server_cert = os.path.join(hub.dir, "server.cert_secret")
        write_cert(server_cert, self.server_public, self.server_secret)
        clients = os.path.join(hub.dir, "clients")
        os.mkdir(clients)
        write_cert(os.path.join(clients, "known.cert"), self.known_public)
        hub.hub_extra = "curve\n    server_cert = %s\n    clients = %s" % (server_cert, clients)
        hub.write_conf("")
        hub.start()
        return hub

    def test_known_client_publishes_and_subscribes(self):
        hub = self.secure_hub()
        known = (self.known_public, self.known_secret, self.server_public)
        sub = hub.subscriber("signal:", curve=known)
        push = hub.pusher(curve=known)
        push.send_multipart([b"signal:created", pack_event("signal:created", {"n": 1})])
        event = sub.recv()
        self.assertEqual(event["data"], {"n": 1})
        self.assertTrue(event["src"].startswith("ext:127.0.0.1"), event["src"])

    def test_unknown_client_is_refused(self):
        hub = self.secure_hub()
        unknown = (self.unknown_public, self.unknown_secret, self.server_public)
        with self.assertRaises(AssertionError):
            hub.subscriber(curve=unknown, hello_timeout=2.0)
        push = hub.pusher(curve=unknown)
        push.send_multipart([b"signal:created", pack_event("signal:created", {"n": 1})])
        time.sleep(1.0)
        self.assertEqual(hub.status()["counters"]["accepted"], 0)

    def test_plain_client_is_refused(self):
        hub = self.secure_hub()
        with self.assertRaises(AssertionError):
            hub.subscriber(hello_timeout=2.0)
        push = hub.pusher()
        push.send_multipart([b"signal:created", pack_event("signal:created")])
        time.sleep(1.0)
        self.assertEqual(hub.status()["counters"]["accepted"], 0)


if __name__ == "__main__":
    unittest.main()
