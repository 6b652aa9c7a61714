// Unit tests of livehub.js's state machine in Node, with fake transports (a fake WebSocket class,
// a fake fetch answering like the polling sink, fake timers). The real transports are tested in
// a real browser by dashboard.test.mjs.
import {test} from "node:test";
import assert from "node:assert/strict";
import {connect, matches, backoff, tokenClaims, describeEvent, toastTemplates, fillTemplate,
  humanizeType} from "../../plugins/websocket/www/livehub.js";

class FakeTimers {
  constructor() { this.now = 0; this.queue = []; this.seq = 0; }
  setTimeout(fn, ms) { const id = ++this.seq; this.queue.push({id, at: this.now + (ms || 0), fn}); return id; }
  clearTimeout(id) { this.queue = this.queue.filter((t) => t.id !== id); }
  async advance(ms) {
    const end = this.now + ms;
    for (let guard = 0; guard < 1000; guard++) {
      this.queue.sort((a, b) => a.at - b.at);
      const next = this.queue[0];
      if (!next || next.at > end) break;
      this.queue.shift();
      this.now = next.at;
      next.fn();
      await flush();
    }
    this.now = end;
    await flush();
  }
}

const flush = async () => { for (let i = 0; i < 20; i++) await Promise.resolve(); };

function fakeWsClass(server) {
  return class FakeWebSocket {
    constructor(url) {
      this.url = url; this.readyState = 0; this.sent = [];
      server.sockets.push(this);
      queueMicrotask(() => {
        if (!server.up) { this.readyState = 3; this.onclose && this.onclose({code: 1006, reason: ""}); return; }
        this.readyState = 1;
        this.onopen && this.onopen();
        this.frame({op: "welcome", epoch: server.epoch, last_id: server.last, heartbeat: 25,
          expires: null, refreshed: false});
      });
    }
    send(text) {
      const frame = JSON.parse(text);
      this.sent.push(frame);
      if (frame.op === "resume") {
        this.since = frame.since;
        if (frame.epoch !== server.epoch) { this.since = server.last; this.frame({op: "reset", epoch: server.epoch, last_id: server.last, reason: "epoch"}); }
      }
      if (frame.op === "subscribe") {
        if (this.since === undefined) this.since = server.last;
        for (const e of server.events.filter((e) => e.id > this.since)) this.frame({op: "event", ...e});
        this.started = true;
      }
    }
    frame(f) { this.onmessage && this.onmessage({data: JSON.stringify(f)}); }
    drop(code = 1006) { this.readyState = 3; this.onclose && this.onclose({code, reason: ""}); }
    close() { this.readyState = 3; }
  };
}

function makeServer() {
  const server = {up: true, pollUp: true, epoch: "e1", last: 0, events: [], sockets: [], polls: []};
  server.publish = (type, data) => {
    const event = {id: ++server.last, type, ts: 1, data};
    server.events.push(event);
    for (const ws of server.sockets) if (ws.readyState === 1 && ws.started) ws.frame({op: "event", ...event});
    return event.id;
  };
  server.fetch = async (url) => {
    const u = new URL(url);
    server.polls.push(u);
    if (!server.pollUp) throw new TypeError("fetch failed");
    const since = u.searchParams.get("since");
    const epoch = u.searchParams.get("epoch");
    let body;
    if (epoch && epoch !== server.epoch) body = {epoch: server.epoch, reset: true, reason: "epoch", events: [], next: server.last};
    else if (since === null) body = {epoch: server.epoch, events: [], next: server.last};
    else body = {epoch: server.epoch, events: server.events.filter((e) => e.id > Number(since)), next: server.last};
    return {ok: true, status: 200, json: async () => body};
  };
  return server;
}

function client(server, timers, extra = {}) {
  return connect({url: "ws://h", pollUrl: "http://p", share: false, WebSocket: fakeWsClass(server),
    fetch: server.fetch, timers, random: () => 0.5, pollWait: 0, pollInterval: 1, ...extra});
}

test("matches, backoff, tokenClaims", () => {
  assert.ok(matches("*", "a:b"));
  assert.ok(matches("assignment:*", "assignment:created"));
  assert.ok(!matches("assignment:*", "signal:created"));
  assert.ok(matches("signal:created", "signal:created"));
  assert.ok(!matches("signal:created", "signal:created2"));
  assert.equal(backoff(0, 500, 30000, () => 0), 250);
  assert.equal(backoff(3, 500, 30000, () => 1), 4000);
  assert.equal(backoff(20, 500, 30000, () => 1), 30000);
  for (let i = 0; i < 50; i++) {
    const d = backoff(i % 12, 500, 30000);
    assert.ok(d >= 0 && d <= 30000);
  }
  const payload = Buffer.from(JSON.stringify({sub: "7", role: "startup"})).toString("base64url");
  assert.deepEqual(tokenClaims(`x.${payload}.y`), {sub: "7", role: "startup"});
  assert.equal(tokenClaims("garbage"), null);
});

test("live: welcome then events delivered once, in order, by pattern", async () => {
  const server = makeServer(), timers = new FakeTimers();
  server.publish("old:event", {});  // before connect: not replayed
  const hub = client(server, timers);
  const seen = [], states = [];
  hub.on("$state", (s) => states.push(s));
  hub.on("signal:*", (data, e) => seen.push(e.id));
  await flush();
  assert.equal(hub.state, "live");
  assert.deepEqual(states, ["live"]);
  assert.equal(hub.lastId, 1);
  server.publish("signal:created", {n: 1});
  server.publish("other:x", {});
  server.publish("signal:updated", {n: 2});
  assert.deepEqual(seen, [2, 4]);
  assert.equal(hub.lastId, 4);
  hub.close();
  assert.equal(hub.state, "offline");
});

test("ws down: polling carries the stream, back to live with resume, nothing lost or doubled", async () => {
  const server = makeServer(), timers = new FakeTimers();
  const hub = client(server, timers);
  const ids = [], states = [];
  hub.on("*", (data, e) => ids.push(e.id));
  hub.on("$state", (s) => states.push(s));
  await flush();
  server.publish("a", 1);
  server.up = false;
  server.sockets.at(-1).drop();
  await flush();
  assert.equal(hub.state, "polling");
  server.publish("a", 2);
  server.publish("a", 3);
  await timers.advance(1000);
  assert.deepEqual(ids, [1, 2, 3]);
  server.publish("a", 4);  // published while the WebSocket comes back: the resume brings it
  server.up = true;
  await timers.advance(30000);
  assert.equal(hub.state, "live");
  const resume = server.sockets.at(-1).sent.find((f) => f.op === "resume");
  assert.ok(resume && resume.epoch === "e1");
  server.publish("a", 5);
  await timers.advance(5000);  // any late poll must not deliver again
  assert.deepEqual(ids, [1, 2, 3, 4, 5]);
  assert.deepEqual(states, ["live", "offline", "polling", "live"]);  // offline until the first poll answers
  hub.close();
});

test("nothing reachable: offline, retries with back-off, then polling then live", async () => {
  const server = makeServer(), timers = new FakeTimers();
  server.up = false; server.pollUp = false;
  const hub = client(server, timers, {backoffMin: 100, backoffMax: 1000});
  await flush();
  assert.equal(hub.state, "offline");
  await timers.advance(5000);
  const attempts = server.sockets.length;
  assert.ok(attempts >= 4 && attempts <= 40, `ws attempts ${attempts}`);
  server.pollUp = true;
  await timers.advance(2000);
  assert.equal(hub.state, "polling");
  server.up = true;
  await timers.advance(2000);
  assert.equal(hub.state, "live");
  hub.close();
});

test("epoch change becomes a $reset with the new position", async () => {
  const server = makeServer(), timers = new FakeTimers();
  const hub = client(server, timers);
  const resets = [];
  hub.on("$reset", (r) => resets.push(r));
  await flush();
  server.publish("a", 1);
  server.up = false;
  server.sockets.at(-1).drop();
  await flush();
  server.epoch = "e2"; server.last = 100; server.events = [];
  server.up = true;
  await timers.advance(31000);
  assert.equal(hub.state, "live");
  assert.ok(resets.length >= 1);
  assert.equal(hub.epoch, "e2");
  assert.equal(hub.lastId, 100);
  hub.close();
});

test("token expiry (4009) asks getToken for a fresh token and reconnects at once", async () => {
  const server = makeServer(), timers = new FakeTimers();
  let calls = 0;
  const hub = client(server, timers, {getToken: async () => `t${++calls}`});
  await flush();
  assert.equal(server.sockets[0].sent[0].token, "t1");
  server.sockets[0].drop(4009);
  await timers.advance(10);
  assert.equal(calls, 2);
  assert.equal(server.sockets.at(-1).sent[0].token, "t2");
  assert.equal(hub.state, "live");
  hub.close();
});

test("shared: one leader connection, followers get events and take over", async () => {
  const server = makeServer(), timers = new FakeTimers();
  const channels = new Map();
  class Channel {
    constructor(name) { this.name = name; if (!channels.has(name)) channels.set(name, new Set()); channels.get(name).add(this); }
    postMessage(m) { for (const c of channels.get(this.name)) if (c !== this && c.onmessage) { const data = structuredClone(m); queueMicrotask(() => c.onmessage({data})); } }
    close() { channels.get(this.name).delete(this); }
  }
  const held = new Map();
  const locks = {request(name, fn) {
    const q = held.get(name) || []; held.set(name, q);
    const run = () => fn().then(() => { q.shift(); if (q.length) q[0](); });
    q.push(run); if (q.length === 1) run();
  }};
  const make = () => client(server, timers, {share: true, BroadcastChannel: Channel, locks});
  const a = make(), b = make();
  const seenA = [], seenB = [];
  a.on("*", (d, e) => seenA.push(e.id));
  b.on("*", (d, e) => seenB.push(e.id));
  await flush();
  assert.equal(server.sockets.length, 1);
  assert.equal(a.role, "leader"); assert.equal(b.role, "follower");
  assert.equal(b.state, "live");
  server.publish("x", 1); server.publish("x", 2);
  await flush();
  assert.deepEqual(seenA, [1, 2]); assert.deepEqual(seenB, [1, 2]);
  a.close();
  await flush();
  assert.equal(b.role, "leader");
  assert.equal(server.sockets.length, 2);
  server.publish("x", 3);
  await flush();
  assert.deepEqual(seenB, [1, 2, 3]);
  b.close();
});

test("toast texts: the product's templates, a readable fallback, never a JSON dump", () => {
  const d = (type, data) => describeEvent({id: 1, type, ts: 0, data});
  assert.deepEqual(d("assignment:created", {signalIdentifier: "S-7"}),
    {title: "New Signal Assignment", body: "You've been assigned: S-7", tone: "chime"});
  assert.equal(d("assignment:created", {}).body, "You've been assigned: New Signal");
  assert.equal(d("assignment:created", {fields: {Signal: ["S-9"]}}).body, "You've been assigned: S-9");
  assert.deepEqual(d("assignment:responseChanged", {signalIdentifier: "S-7", response: "interested"}),
    {title: "Assignment updated", body: "S-7: interested", tone: "ping"});
  assert.equal(d("signal:published", {title: "Water grant"}).title, "Signal published");
  assert.equal(d("signal:published", {title: "Water grant"}).body, "Water grant is now in the Signal Pool");
  assert.equal(d("signal:created", {fields: {Title: "Grid study", Status: "Open"}}).body, "Grid study was added");
  const status = d("connection:statusChanged",
    {field: "Status", value: "Accepted", previousValue: "Pending", fields: {Name: "Acme"}});
  assert.deepEqual([status.title, status.body], ["Connection Accepted", "Acme: Pending → Accepted"]);
  assert.equal(d("sync:error", {error: "rate_limited", message: "429 from Airtable"}).body, "429 from Airtable");
  // an unknown type: humanised title, a short key: value summary, no braces or quotes of JSON
  const unknown = d("admin:auditLogExported", {action: "export", user: {name: "Ann", id: 3},
    rows: 12, nested: {deep: {x: 1}}, tags: ["a", "b"]});
  assert.equal(unknown.title, "Admin audit log exported");
  assert.equal(unknown.body, "Action: export · User: Ann · Rows: 12 · Tags: a, b");
  assert.doesNotMatch(unknown.body, /[{}"]/);
  assert.equal(d("demo:hello", "hi").body, "hi");
  assert.equal(d("x", null).body, "");
  assert.ok(d("bulk:data", {text: "y".repeat(500)}).body.length <= 120);
  assert.equal(humanizeType("sync:recovered"), "Sync recovered");
});

test("toast templates: pages extend the table; placeholders, defaults, braces, functions", () => {
  const event = {id: 9, type: "invoice:paid", ts: 0, data: {number: "INV-1", customer: {name: "Acme"}}};
  assert.equal(describeEvent(event).title, "Invoice paid");  // fallback before extending
  toastTemplates.unshift({pattern: "invoice:*", title: "Invoice {verb}",
    body: (data) => `${data.number} from ${data.customer.name}`, tone: "chime"});
  try {
    assert.deepEqual(describeEvent(event), {title: "Invoice paid", body: "INV-1 from Acme", tone: "chime"});
  } finally {
    toastTemplates.shift();
  }
  assert.equal(fillTemplate("#{id} {{literal}} {missing|customer.name} {nope|'none'} {nope}", event),
    "#9 {literal} Acme none ");
  const own = [{pattern: "*", title: "{type}", body: "{number}"}];
  assert.deepEqual(describeEvent(event, own), {title: "invoice:paid", body: "INV-1", tone: "ping"});
});
