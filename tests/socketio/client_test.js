// The same socket.io-client script runs against livehub and against reference_server.js: the
// script is the constant. Environment: SIO_URL (http://host:port), ADMIN_TOKEN, CLIENT_TOKEN
// (HS256, roles admin and startup), PUBLISH_URL (POST {type, data, to} publishes one event) and
// HISTORY (how many events the server remembers for recovery).
"use strict";
const assert = require("node:assert/strict");
const { io } = require("socket.io-client");

const URL = process.env.SIO_URL;
const ADMIN = process.env.ADMIN_TOKEN;
const CLIENT = process.env.CLIENT_TOKEN;
const PUBLISH_URL = process.env.PUBLISH_URL;
const HISTORY = Number(process.env.HISTORY || 8);
const sockets = [];

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function connect(namespace, token, options = {}) {
  const socket = io(URL + namespace, { forceNew: true, auth: { token }, ...options });
  socket.received = [];
  socket.onAny((name, ...args) => {
    // the recovery offset comes as an extra trailing string argument
    socket.received.push({ name, data: args[0], offset: args[args.length - 1], args });
  });
  sockets.push(socket);
  return socket;
}

function once(emitter, event, ms = 8000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("timed out waiting for " + event)), ms);
    emitter.once(event, (...args) => {
      clearTimeout(timer);
      resolve(args);
    });
  });
}

async function until(what, predicate, ms = 8000) {
  const deadline = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error("timed out waiting for " + what);
    await sleep(20);
  }
}

async function publish(type, data, to) {
  const response = await fetch(PUBLISH_URL, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ type, data, to }),
  });
  assert.equal(response.status, 200, "publish " + type);
}

const named = (socket, name) => socket.received.filter((e) => e.name === name);

const steps = [];
const step = (name, fn) => steps.push({ name, fn });

step("websocket only: connect, receive an event with its name, payload and an offset", async () => {
  const socket = connect("/client", CLIENT, { transports: ["websocket"] });
  await once(socket, "connect");
  assert.equal(socket.io.engine.transport.name, "websocket");
  assert.equal(socket.recovered, false);
  await publish("signal:created", { id: 7, symbol: "EURUSD" });
  await until("signal:created", () => named(socket, "signal:created").length === 1);
  const [event] = named(socket, "signal:created");
  assert.deepEqual(event.data, { id: 7, symbol: "EURUSD" });
  assert.equal(typeof event.offset, "string");
  assert.equal(event.args.length, 2);
});

step("polling, then the upgrade to websocket", async () => {
  const socket = connect("/client", CLIENT);
  let first;
  const upgraded = new Promise((resolve) => socket.io.once("open", () => {
    first = socket.io.engine.transport.name; // the handshake's transport
    socket.io.engine.once("upgrade", resolve);
  }));
  await once(socket, "connect");
  await upgraded;
  assert.equal(first, "polling");
  assert.equal(socket.io.engine.transport.name, "websocket");
  await publish("signal:created", { id: 8 });
  await until("event after upgrade", () => named(socket, "signal:created").length === 1);
  assert.deepEqual(named(socket, "signal:created")[0].data, { id: 8 });
});

step("polling only: events and acks over long-polling", async () => {
  const socket = connect("/client", CLIENT, { transports: ["polling"] });
  await once(socket, "connect");
  await publish("signal:created", { id: 9 });
  await until("event over polling", () => named(socket, "signal:created").length === 1);
  assert.deepEqual(named(socket, "signal:created")[0].data, { id: 9 });
  assert.deepEqual(await socket.timeout(5000).emitWithAck("subscribe", "assignment:*"), {
    types: ["*", "assignment:*"],
  });
  assert.equal(socket.io.engine.transport.name, "polling");
});

step("/admin with an admin token, /client multiplexed on the same connection", async () => {
  const admin = connect("/admin", ADMIN, { transports: ["websocket"] });
  await once(admin, "connect");
  const client = connect("/client", CLIENT, { transports: ["websocket"] });
  await once(client, "connect");
  // the same Manager: a second namespace over the one Engine.IO connection (connects itself)
  const multiplexed = admin.io.socket("/client", { auth: { token: ADMIN } });
  multiplexed.received = [];
  multiplexed.onAny((name, ...args) => multiplexed.received.push({ name, data: args[0] }));
  sockets.push(multiplexed);
  await once(multiplexed, "connect");
  assert.equal(multiplexed.io, admin.io);
  await publish("assignment:created", { id: 1 }, ["admin"]); // admins only
  await publish("signal:created", { id: 2 }); // public
  await until("admin events", () => admin.received.length === 2);
  assert.deepEqual(admin.received.map((e) => [e.name, e.data.id]),
                   [["assignment:created", 1], ["signal:created", 2]]);
  await until("client event", () => client.received.length === 1);
  await until("multiplexed events", () => multiplexed.received.length >= 2);
  await sleep(200);
  assert.deepEqual(multiplexed.received.map((e) => [e.name, e.data.id]),
                   [["assignment:created", 1], ["signal:created", 2]]);
  assert.deepEqual(client.received.map((e) => [e.name, e.data.id]), [["signal:created", 2]]);
});

step("a client token on /admin reaches connect_error with message and data", async () => {
  const socket = connect("/admin", CLIENT, { transports: ["websocket"] });
  const [error] = await once(socket, "connect_error");
  assert.match(error.message, /^forbidden/);
  assert.deepEqual(error.data, { code: 4003 });
  assert.equal(socket.connected, false);
  const bad = connect("/client", "not-a-token", { transports: ["websocket"] });
  const [unauthorized] = await once(bad, "connect_error");
  assert.match(unauthorized.message, /^unauthorized/);
  assert.deepEqual(unauthorized.data, { code: 4001 });
});

step("acks of client emits: subscribe and unsubscribe narrow the stream", async () => {
  const socket = connect("/client", CLIENT, { transports: ["websocket"] });
  await once(socket, "connect");
  assert.deepEqual(await socket.timeout(5000).emitWithAck("unsubscribe", ["*"]), { types: [] });
  assert.deepEqual(await socket.timeout(5000).emitWithAck("subscribe", ["assignment:*"]),
                   { types: ["assignment:*"] });
  assert.deepEqual(await socket.timeout(5000).emitWithAck("dance", 1), { error: "unknown_event" });
  await publish("signal:created", { id: 10 });
  await publish("assignment:created", { id: 11 });
  await until("assignment", () => socket.received.length === 1);
  await sleep(200);
  assert.deepEqual(socket.received.map((e) => [e.name, e.data.id]), [["assignment:created", 11]]);
});

step("the root namespace, which is not served, reaches connect_error (issue 21 #12)", async () => {
  // polling first, as io(url + "/") does by default, then websocket only
  for (const options of [{}, { transports: ["websocket"] }]) {
    const socket = connect("/", CLIENT, { reconnection: false, ...options });
    const [error] = await once(socket, "connect_error");
    assert.equal(error.message, "Invalid namespace");
    assert.equal(socket.connected, false);
  }
});

const reconnecting = { transports: ["websocket"], reconnectionDelay: 1500,
                       reconnectionDelayMax: 1500, randomizationFactor: 0 };

step("recovery after a forced transport close: recovered, nothing missed or repeated", async () => {
  const socket = connect("/client", CLIENT, reconnecting);
  await once(socket, "connect");
  const sid = socket.id;
  await publish("signal:tick", { n: 0 });
  await until("tick 0", () => named(socket, "signal:tick").length === 1);
  const disconnected = once(socket, "disconnect");
  socket.io.engine.close();
  await disconnected;
  for (let n = 1; n <= 3; n++) await publish("signal:tick", { n }); // missed while away
  await once(socket, "connect");
  assert.equal(socket.recovered, true);
  assert.equal(socket.id, sid);
  await publish("signal:tick", { n: 4 });
  await until("ticks", () => named(socket, "signal:tick").length >= 5);
  await sleep(300);
  assert.deepEqual(named(socket, "signal:tick").map((e) => e.data.n), [0, 1, 2, 3, 4]);
});

step("a fresh session when the gap is older than history", async () => {
  const socket = connect("/client", CLIENT, reconnecting);
  await once(socket, "connect");
  const sid = socket.id;
  await publish("signal:tock", { n: 0 });
  await until("tock 0", () => named(socket, "signal:tock").length === 1);
  const disconnected = once(socket, "disconnect");
  socket.io.engine.close();
  await disconnected;
  for (let n = 1; n <= HISTORY + 4; n++) await publish("signal:tock", { n });
  await once(socket, "connect");
  assert.equal(socket.recovered, false);
  assert.notEqual(socket.id, sid);
  await publish("signal:tock", { n: 100 });
  await until("live tock", () => named(socket, "signal:tock").length >= 2);
  await sleep(300);
  // never a partial replay: only what came before the gap, then live events
  assert.deepEqual(named(socket, "signal:tock").map((e) => e.data.n), [0, 100]);
});

(async () => {
  let failed = 0;
  for (const { name, fn } of steps) {
    try {
      await fn();
      console.log("ok   " + name);
    } catch (error) {
      failed++;
      console.log("FAIL " + name + "\n     " + (error && error.stack || error));
    }
    while (sockets.length) sockets.pop().disconnect();
  }
  console.log(failed ? failed + " of " + steps.length + " failed" : "all " + steps.length + " passed");
  process.exit(failed ? 1 : 0);
})();
