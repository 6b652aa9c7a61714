#!/usr/bin/python3
"""A small livehub client: publish events and follow them without gaps (docs/PROTOCOL.md).

Needs Debian's python3-zmq and python3-msgpack. As a module:

    client = Client()
    client.publish("signal:created", {"id": "S-1"}, to=["admin"])       # fire and forget
    event_id = client.publish("signal:created", {"id": "S-2"}, confirm=True)
    for event in client.subscribe(["signal:"], since=41, epoch="9f2c..."):
        print(event["id"], event["type"], event["data"])

As a program:  livehub_client.py publish TYPE [JSON] [--to A]... [--key K] [--confirm]
               livehub_client.py subscribe [PREFIX]... [--since ID --epoch E] [--count N]
"""
import argparse
import base64
import json
import os
import sys
import uuid

import msgpack
import zmq
from zmq.utils.monitor import recv_monitor_message

INGRESS = "tcp://127.0.0.1:7500"    # PULL: producers PUSH [topic][body] here
EGRESS = "tcp://127.0.0.1:7501"     # XPUB: subscribers SUB here with topic prefixes


def default_control(hub_name="livehub"):
    """The control socket a hub called hub_name binds when its conf sets no `control`: in a
    directory only this user can enter (README, `control`)."""
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if runtime.startswith("/"):
        directory = runtime + "/livehub"
    elif os.geteuid() == 0:
        directory = "/run/livehub"
    else:
        directory = "/tmp/livehub-%d" % os.geteuid()
    return "ipc://%s/%s.control" % (directory, hub_name)


CONTROL = default_control()  # ROUTER: PING, STATUS, PUBLISH, REPLAY, RELOAD


class LivehubError(Exception):
    """The hub answered ERR, or did not answer in time."""


def pack(type_, data=None, to=None, key=None):
    """The body a producer sends: v and type always, to and key only when given."""
    body = {"v": 1, "type": type_, "data": data}
    if to is not None:
        body["to"] = list(to)        # 1..64 audiences; the hub defaults to ["public"]
    if key is not None:
        body["key"] = key            # idempotency key: a repeat within the history is dropped
    return msgpack.packb(body, use_bin_type=True)


def unpack(body):
    # data may carry integer map keys and bin values; keep them as Python ints and bytes.
    return msgpack.unpackb(body, raw=False, strict_map_key=False)


class Client:
    def __init__(self, ingress=INGRESS, egress=EGRESS, control=CONTROL, timeout=5.0):
        self.ingress, self.egress, self.control = ingress, egress, control
        self.timeout = timeout       # seconds to wait for a control reply or for $hello
        self.batch = 1000            # events per REPLAY reply (the hub caps it at 10000)
        self.context = zmq.Context.instance()
        self._push = None

    def request(self, *frames):
        """One control request on a fresh DEALER (so a late reply never meets the next
        request); returns the reply frames, the first being the status word."""
        dealer = self.context.socket(zmq.DEALER)
        dealer.linger = 0
        try:
            dealer.connect(self.control)
            dealer.send_multipart([f if isinstance(f, bytes) else str(f).encode() for f in frames])
            if not dealer.poll(int(self.timeout * 1000)):
                raise LivehubError("no answer from %s" % self.control)
            return dealer.recv_multipart()
        finally:
            dealer.close()

    def publish(self, type_, data=None, to=None, key=None, confirm=False):
        """Publishes one event. Over the ingress PUSH by default: fast, but silent (a refused
        event is only counted by the hub). With confirm=True over control PUBLISH: returns the
        new id (0 when the key was a repeat) or raises LivehubError with the hub's reason."""
        body = pack(type_, data, to, key)
        if confirm:
            reply = self.request(b"PUBLISH", type_.encode(), body)
            if reply[0] != b"OK":
                raise LivehubError(reply[-1].decode())
            return int(reply[1])
        if self._push is None:
            self._push = self.context.socket(zmq.PUSH)
            self._push.linger = 5000     # close() waits up to 5 s for queued events to leave
            self._push.connect(self.ingress)
        self._push.send_multipart([type_.encode(), body])
        return None

    def replay(self, since, epoch="", prefixes=()):
        """REPLAY -> (status, meta, events): status OK, RESET or FUTURE."""
        reply = self.request(b"REPLAY", epoch, since, self.batch, *prefixes)
        if reply[0] == b"ERR":
            raise LivehubError(reply[1].decode())
        return reply[0].decode(), json.loads(reply[1]), [unpack(b) for b in reply[3::2]]

    def subscribe(self, prefixes=("",), since=None, epoch=None, idle=None, on_ready=None):
        """Yields events whose type starts with one of prefixes ("" = all), in id order, each
        once. With since (the last id you saw, and its epoch) the missed events come first. A
        {"type": "$reset", ...} item means continuity is lost (history too short, other epoch,
        hub restarted): refetch your state, then carry on. Stops after idle seconds without a
        message (None: never). on_ready(hello) runs once the subscription is active."""
        prefixes = list(prefixes) or [""]
        sub = self.context.socket(zmq.SUB)
        sub.linger = 0
        sub.rcvhwm = 1000000         # live events wait here while we replay
        monitor = sub.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        for prefix in prefixes:
            sub.subscribe(prefix.encode())
        # A unique $hello topic, subscribed last: the hub answers it on each connection once the
        # subscriptions before it are active, so every event after its last_id arrives live.
        hello_topic = ("$hello/" + uuid.uuid4().hex).encode()
        sub.subscribe(hello_topic)
        sub.connect(self.egress)
        poller = zmq.Poller()
        poller.register(monitor, zmq.POLLIN)
        poller.register(sub, zmq.POLLIN)
        state, waiting = None, True  # waiting: for a $hello; events before it may have gaps
        try:
            while True:
                wait = self.timeout if state is None else idle
                ready = dict(poller.poll(None if wait is None else int(wait * 1000)))
                if not ready and state is None:
                    raise LivehubError("no $hello answer from %s" % self.egress)
                if not ready:
                    return
                if monitor in ready:  # connection lost (checked first: it precedes anything
                    recv_monitor_message(monitor)  # the next connection delivers)
                    waiting = True
                    continue
                topic, body = sub.recv_multipart()
                if topic == hello_topic:
                    hello, waiting = unpack(body)["data"], False
                    if state is None:  # the first answer: where do we start?
                        if on_ready:
                            on_ready(hello)
                        state = {"epoch": epoch or hello["epoch"],
                                 "last": hello["last_id"] if since is None else since}
                        if since is None:
                            continue
                    # Replay what we missed, up to what the live stream now guarantees.
                    yield from self._catch_up(state, hello["last_id"], prefixes)
                elif not waiting and not topic.startswith(b"$"):  # (others' $hello answers)
                    event = unpack(body)
                    if event["id"] > state["last"]:  # else the replay already gave it
                        state["last"] = event["id"]
                        yield event
        finally:
            sub.disable_monitor()
            monitor.close()
            sub.close()

    def _catch_up(self, state, upto, prefixes):
        """REPLAY batches after state["last"] (at least one, which checks the epoch) until the
        scan reaches `upto`, whose successors are queued on the SUB socket, or history ends."""
        while True:
            status, meta, events = self.replay(state["last"], state["epoch"], prefixes)
            if status != "OK":       # RESET or FUTURE: nothing can be replayed exactly
                state.update(epoch=meta["epoch"], last=meta["newest"])
                yield {"type": "$reset", "reason": status, "epoch": meta["epoch"],
                       "newest": meta["newest"]}
                return
            for event in events:
                if event["id"] > state["last"]:
                    state["last"] = event["id"]
                    yield event
            state["last"] = max(state["last"], meta["scanned_to"])
            if not meta["more"] or state["last"] >= upto:
                return

    def close(self):
        if self._push is not None:
            self._push.close()
            self._push = None


def _json(value):
    """JSON for the CLI: bin becomes base64, as the hub's own converter does."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False,
                      default=lambda b: base64.b64encode(b).decode())


def main(argv=None):
    parser = argparse.ArgumentParser(description="livehub client (docs/PROTOCOL.md)")
    parser.add_argument("--ingress", default=INGRESS)
    parser.add_argument("--egress", default=EGRESS)
    parser.add_argument("--control", default=CONTROL)
    commands = parser.add_subparsers(dest="command", required=True)
    pub = commands.add_parser("publish", help="publish one event")
    pub.add_argument("type")
    pub.add_argument("data", nargs="?", default="null", help="JSON (default null)")
    pub.add_argument("--to", action="append", help="audience (repeatable)")
    pub.add_argument("--key", help="idempotency key")
    pub.add_argument("--confirm", action="store_true", help="publish over control, print the id")
    sub = commands.add_parser("subscribe", help="print events as JSON lines")
    sub.add_argument("prefixes", nargs="*", default=[""])
    sub.add_argument("--since", type=int, help="last id seen: replay the missed events first")
    sub.add_argument("--epoch", help="the epoch of --since")
    sub.add_argument("--count", type=int, help="exit after this many lines")
    sub.add_argument("--idle", type=float, help="exit after this many seconds without events")
    args = parser.parse_args(argv)
    client = Client(args.ingress, args.egress, args.control)
    try:
        if args.command == "publish":
            event_id = client.publish(args.type, json.loads(args.data), args.to, args.key,
                                      confirm=args.confirm)
            if event_id is not None:
                print(event_id)
            return 0
        ready = lambda hello: print("subscribed: " + _json(hello), file=sys.stderr, flush=True)
        printed = 0
        for event in client.subscribe(args.prefixes, args.since, args.epoch, args.idle, ready):
            print(_json(event), flush=True)
            printed += 1
            if args.count is not None and printed >= args.count:
                break
        return 0 if args.count is None or printed >= args.count else 1
    except LivehubError as error:
        print("livehub_client: %s" % error, file=sys.stderr)
        return 1
    finally:
        client.close()


if __name__ == "__main__":
    sys.exit(main())
