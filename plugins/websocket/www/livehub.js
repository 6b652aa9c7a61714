// livehub.js: the browser client of livehub (docs/CLIENT.md). A plain ES module, no dependencies.
//
//   import {connect} from "/livehub.js";
//   const hub = connect({url: "ws://127.0.0.1:8080", pollUrl: "http://127.0.0.1:8081",
//                        namespace: "client", getToken: async () => fetchMyToken()});
//   hub.on("assignment:*", (data, event) => ...);
//   hub.on("$state", (state) => ...);           // "live" | "polling" | "offline"
//   hub.on("$reset", (info) => refetchEverything());
//
// WebSocket first (docs/WEBSOCKET.md); while it cannot connect, the polling sink (long polls on
// /v1/events, docs/POLLING.md) carries the stream and the WebSocket is retried with exponential
// back-off and jitter. Every switch resumes from lastId, and events are delivered only when their
// id is above lastId, so the page sees each event it may see once, in order. Tabs of one origin
// that use the same hub, namespace and identity share one connection: the tab holding a Web Lock
// leads, the others get its events through a BroadcastChannel.

const STATES = ["live", "polling", "offline"];

/** True when an event type matches a pattern: exact, a prefix ending in "*", or "*". */
export function matches(pattern, type) {
  if (pattern === "*") return true;
  if (pattern.endsWith("*")) return type.startsWith(pattern.slice(0, -1));
  return pattern === type;
}

/** The claims of a JWT, unverified (identity for tab sharing only), or null. */
export function tokenClaims(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const text = (typeof atob === "function") ? atob(part) : Buffer.from(part, "base64").toString();
    return JSON.parse(text);
  } catch (error) {
    return null;
  }
}

/** Back-off delay (ms) of attempt n (0-based): min·2^n capped at max, with "equal jitter". */
export function backoff(attempt, min = 500, max = 30000, random = Math.random) {
  const ceiling = Math.min(max, min * Math.pow(2, Math.min(attempt, 30)));
  return Math.round(ceiling / 2 + random() * ceiling / 2);
}

// ---- toast texts ---------------------------------------------------------------------------
// What a person reads for an event: a title and a one-line body per type pattern, first match
// wins. The vocabulary is the product's (the seed's toasts and the notify sink's built-in rules);
// pages add their own with toastTemplates.unshift({pattern, title, body}) or pass their own list
// to describeEvent. A template is a string with {path} placeholders looked up in the event's data
// ({fields.Title} reads data.fields.Title; {type}, {id} read the event), alternatives separated by
// "|" and a quoted default last: {signalIdentifier|fields.Title|'New Signal'}. It may also be a
// function (data, event) => string. tone names the sound ("chime" for what needs attention).

export const toastTemplates = [
  {pattern: "assignment:created", title: "New Signal Assignment",
    body: "You've been assigned: {signalIdentifier|fields.Signal|fields.Title|'New Signal'}",
    tone: "chime"},
  {pattern: "assignment:responseChanged", title: "Assignment updated",
    body: "{signalIdentifier|fields.Signal|'An assignment'}: {response|value|fields.Response|'response changed'}"},
  {pattern: "assignment:*", title: "Assignment {verb}",
    body: "{signalIdentifier|fields.Signal|fields.Title|'An assignment'}"},
  {pattern: "signal:assigned", title: "Signal assigned",
    body: "{signalIdentifier|fields.Title|title|'A signal'} was assigned", tone: "chime"},
  {pattern: "signal:published", title: "Signal published",
    body: "{title|fields.Title|signalIdentifier|'A new signal'} is now in the Signal Pool"},
  {pattern: "signal:created", title: "New signal",
    body: "{title|fields.Title|signalIdentifier|'A new signal'} was added"},
  {pattern: "signal:updated", title: "Signal updated",
    body: "{title|fields.Title|signalIdentifier|'A signal'} changed"},
  {pattern: "signal:deleted", title: "Signal removed",
    body: "{title|fields.Title|signalIdentifier|'A signal'} was removed"},
  {pattern: "connection:statusChanged", title: "Connection {status|value|fields.Status|'status changed'}",
    body: "{name|startupName|fields.Name|'A connection'}: {previousStatus|previousValue|'before'} → {status|value|fields.Status|'now'}"},
  {pattern: "connection:created", title: "New connection",
    body: "{name|startupName|fields.Name|'A new connection'}"},
  {pattern: "connection:*", title: "Connection {verb}",
    body: "{name|startupName|fields.Name|'A connection'}"},
  {pattern: "sync:error", title: "Airtable sync error",
    body: "{message|error|'the sync failed'}", tone: "chime"},
  {pattern: "sync:recovered", title: "Airtable sync recovered", body: "Changes are flowing again"},
  {pattern: "sync:completed", title: "Airtable sync", body: "{events|'0'} changes from {payloads|'0'} payloads"},
];

/** "assignment:responseChanged" → "Assignment response changed". */
export function humanizeType(type) {
  const words = String(type).replace(/([a-z0-9])([A-Z])/g, "$1 $2").split(/[:._\-\s]+/)
    .filter(Boolean).map((word) => word.toLowerCase());
  const text = words.join(" ");
  return text ? text[0].toUpperCase() + text.slice(1) : "Event";
}

function lookupPath(path, event) {
  const data = event.data;
  if (path === "type" || path === "id") return event[path];
  if (path === "verb") return humanizeType(event.type.split(":").slice(1).join(" ") || "event").toLowerCase();
  let value = data;
  for (const key of path.replace(/^data\./, "").split(".")) {
    if (value === null || typeof value !== "object") return undefined;
    value = value[key];
  }
  return value;
}

function plainText(value) {
  if (value === null || value === undefined || value === "") return undefined;
  if (Array.isArray(value)) return value.map((item) => plainText(item) ?? "").filter(Boolean).join(", ") || undefined;
  if (typeof value === "object") return value.name ?? value.title ?? value.id ?? undefined;
  return String(value);
}

/** Fills {a|b|'default'} placeholders from an event; "{{" and "}}" are literal braces. */
export function fillTemplate(template, event) {
  if (typeof template === "function") return String(template(event.data, event) ?? "");
  return String(template).replace(/\{\{|\}\}|\{([^{}]*)\}/g, (whole, inner) => {
    if (inner === undefined) return whole[0];
    for (const choice of inner.split("|").map((part) => part.trim())) {
      const quoted = /^'(.*)'$/.exec(choice);
      if (quoted) return quoted[1];
      const text = plainText(lookupPath(choice, event));
      if (text !== undefined) return text;
    }
    return "";
  });
}

/** A short "key: value · key: value" line of an event's data; never a JSON dump. */
export function summarize(data, max = 120) {
  let text;
  if (data === null || data === undefined) text = "";
  else if (typeof data !== "object") text = String(data);
  else {
    const fields = data.fields && typeof data.fields === "object" && !Array.isArray(data.fields)
      ? data.fields : data;
    const parts = [];
    for (const [key, value] of Object.entries(fields)) {
      const shown = plainText(value);
      if (shown !== undefined) parts.push(`${humanizeType(key)}: ${shown}`);
      if (parts.length === 4) break;
    }
    text = parts.join(" · ");
  }
  return text.length > max ? text.slice(0, max - 1) + "…" : text;
}

/** {title, body, tone} for an event: the first matching template, else the type humanised and
 *  a short summary of its data. */
export function describeEvent(event, templates = toastTemplates) {
  const template = templates.find((t) => matches(t.pattern, event.type));
  if (!template) return {title: humanizeType(event.type), body: summarize(event.data), tone: "ping"};
  return {
    title: fillTemplate(template.title ?? humanizeType(event.type), event),
    body: template.body === undefined ? summarize(event.data) : fillTemplate(template.body, event),
    tone: template.tone || "ping",
  };
}

function trimSlash(text) {
  return String(text || "").replace(/\/+$/, "");
}

/** Error codes the server answers a refused publish with (docs/PRESENCE.md §5). */
const PUBLISH_ERRORS = ["forbidden", "forbidden_type", "forbidden_src", "forbidden_to",
  "bad_request", "too_large", "rate_limited", "busy"];

/**
 * Who is online (docs/PRESENCE.md): a live set of {user, role, connections} by user id, filled by
 * the presence query after every (re)connection and kept by presence:online / presence:offline
 * events. on(handler) calls handler({type: "online" | "offline" | "snapshot", user}, presence).
 */
export class Presence {
  constructor() {
    this.users = new Map();
    this.listeners = new Set();
  }

  get size() { return this.users.size; }
  has(user) { return this.users.has(String(user)); }
  get(user) { return this.users.get(String(user)); }
  list() { return Array.from(this.users.values()); }

  on(handler) {
    this.listeners.add(handler);
    return () => this.listeners.delete(handler);
  }

  _changed(change) {
    for (const handler of Array.from(this.listeners)) {
      try {
        handler(change, this);
      } catch (error) {
        if (globalThis.console) console.error("livehub presence handler", error);
      }
    }
  }

  _replace(users) {
    this.users = new Map((users || []).map((entry) => [entry.user, entry]));
    this._changed({type: "snapshot", user: null});
  }

  /** Applies a presence:online / presence:offline event; true when it was one. */
  _event(event) {
    const data = event.data || {};
    if (typeof data.user !== "string") return false;
    if (event.type === "presence:online") {
      const entry = {user: data.user, role: data.role, connections: data.connections || {}};
      this.users.set(data.user, entry);
      this._changed({type: "online", user: entry});
      return true;
    }
    if (event.type === "presence:offline" && this.users.has(data.user)) {
      this.users.delete(data.user);
      this._changed({type: "offline", user: {user: data.user, role: data.role}});
      return true;
    }
    return false;
  }
}

class Client {
  constructor(options) {
    const g = globalThis;
    this.options = options;
    this.namespace = options.namespace || "client";
    this.types = (options.types && options.types.length) ? options.types.slice() : ["*"];
    this.wsBase = trimSlash(options.url || (g.location ?
      (g.location.protocol === "https:" ? "wss://" : "ws://") + g.location.host : ""));
    this.pollBase = options.pollUrl === undefined ? null : trimSlash(options.pollUrl);
    this.WebSocket = options.WebSocket || g.WebSocket;
    this.fetch = options.fetch || (g.fetch ? g.fetch.bind(g) : null);
    this.timers = options.timers || {setTimeout: g.setTimeout.bind(g),
      clearTimeout: g.clearTimeout.bind(g)};
    this.random = options.random || Math.random;
    this.backoffMin = options.backoffMin ?? 500;
    this.backoffMax = options.backoffMax ?? 30000;
    this.pollWait = options.pollWait ?? 25;          // long poll seconds; 0: interval polling
    this.pollInterval = options.pollInterval ?? 30;  // seconds between short polls (pollWait 0)
    this.token = options.token || null;
    this.getToken = options.getToken || null;
    this.listeners = new Map();
    this.state = "offline";
    this.role = "connecting";  // leader | follower | connecting | closed
    this.lastId = options.lastId || 0;
    this.epoch = options.epoch || null;
    this.ws = null;
    this.wsAttempt = 0;
    this.wsTimer = null;
    this.pollGen = 0;
    this.pollAttempt = 0;
    this.pollTimer = null;
    this.pollAbort = null;
    this.pollOk = false;
    this.refreshTimer = null;
    this.pingTimer = null;
    this.closed = false;
    this.channel = null;
    this.stats = {wsOpened: 0, polls: 0, delivered: 0, duplicates: 0};
    this.presence = new Presence();
    this.wantsPresence = options.presence ?? true;
    if (this.wantsPresence && !this.types.some((type) => matches(type, "presence:online"))) {
      this.types.push("presence:*");
    }
    this.publishing = [];          // publishes sent on the WebSocket, answered in order
    this.forwarded = new Map();    // a follower's publishes, answered by the leader
    this.publishSeq = 0;
    this._start();
  }

  // ---- public API -------------------------------------------------------------------------

  on(pattern, handler) {
    if (!this.listeners.has(pattern)) this.listeners.set(pattern, new Set());
    this.listeners.get(pattern).add(handler);
    return () => this.off(pattern, handler);
  }

  off(pattern, handler) {
    const set = this.listeners.get(pattern);
    if (set) {
      set.delete(handler);
      if (!set.size) this.listeners.delete(pattern);
    }
  }

  /**
   * Publishes an event as this token's user (docs/PRESENCE.md §5): the types the server's
   * `publish` option allows the role, e.g. typing:started. to: an audience or an array of them
   * (default the server's: admin). Resolves when the server took it; rejects with an Error whose
   * code is the server's (forbidden_type, rate_limited, ...) or "not_live" without a WebSocket.
   */
  publish(type, data = null, to = undefined) {
    const frame = {op: "publish", type, data};
    if (to !== undefined) frame.to = Array.isArray(to) ? to : [to];
    if (this.role === "follower" && this.channel) {
      const id = `${Math.floor(this.random() * 1e9)}-${++this.publishSeq}`;
      return new Promise((resolve, reject) => {
        this.forwarded.set(id, {resolve, reject});
        this.channel.postMessage({t: "publish", id, frame});
      });
    }
    return this._publishHere(frame);
  }

  _publishHere(frame) {
    if (!this.ws || this.ws.readyState !== 1 || this.state !== "live") {
      const error = new Error("publishing needs the WebSocket (the client is not live)");
      error.code = "not_live";
      return Promise.reject(error);
    }
    return new Promise((resolve, reject) => {
      this.publishing.push({resolve, reject});
      this._wsSend(frame);
    });
  }

  _failPublishing(code, message) {
    for (const pending of this.publishing.splice(0)) {
      const error = new Error(message);
      error.code = code;
      pending.reject(error);
    }
  }

  /** Replaces the token (the next connection and an open WebSocket use it). */
  setToken(token) {
    this.token = token;
    if (this.ws && this.ws.readyState === 1 && token) this._wsSend({op: "auth", token});
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    this._stopTransports();
    if (this.channel) {
      try { this.channel.close(); } catch (error) { /* ignore */ }
    }
    if (this.releaseLock) this.releaseLock();
    this.role = "closed";
    this._setState("offline");
  }

  // ---- start: lead alone, or share through a lock and a BroadcastChannel -------------------

  _start() {
    const g = globalThis;
    const share = this.options.share ?? true;
    const Channel = this.options.BroadcastChannel || g.BroadcastChannel;
    const locks = this.options.locks || (g.navigator && g.navigator.locks);
    if (!share || !Channel || !locks) {
      this._lead();
      return;
    }
    const claims = this.token ? tokenClaims(this.token) : null;
    const who = claims ? `${claims.sub}|${claims.role}` : (this.token || this.getToken ? "token" : "anon");
    this.key = `livehub|${this.wsBase}|${this.pollBase}|${this.namespace}|${who}`;
    this.channel = new Channel(this.key);
    this.channel.onmessage = (message) => this._onChannel(message.data);
    this.role = "follower";
    this.channel.postMessage({t: "join", types: this.types});
    locks.request(this.key, () => new Promise((resolve) => {
      this.releaseLock = resolve;
      if (this.closed) {
        resolve();
        return;
      }
      this._lead();
    }));
  }

  _lead() {
    if (this.closed) return;
    this.role = "leader";
    this._connectWs();
  }

  _onChannel(message) {
    if (!message || this.closed) return;
    if (this.role === "leader") {
      if (message.t === "publish") {
        this._publishHere(message.frame).then(
          () => this.channel.postMessage({t: "published", id: message.id}),
          (error) => this.channel.postMessage({t: "published", id: message.id,
            code: error.code, message: error.message}));
        return;
      }
      if (message.t === "join") {
        this.channel.postMessage({t: "presence", users: this.presence.list()});
        const added = (message.types || []).filter((type) => !this.types.includes(type));
        if (added.length) {
          this.types.push(...added);
          if (this.state === "live") this._wsSend({op: "subscribe", types: added});
        }
        this.channel.postMessage({t: "state", state: this.state, lastId: this.lastId,
          epoch: this.epoch});
      }
      return;
    }
    // follower
    if (message.t === "presence") {
      this.presence._replace(message.users);
    } else if (message.t === "published") {
      const pending = this.forwarded.get(message.id);
      if (!pending) return;
      this.forwarded.delete(message.id);
      if (!message.code) {
        pending.resolve();
      } else {
        const error = new Error(message.message);
        error.code = message.code;
        pending.reject(error);
      }
    } else if (message.t === "event") {
      this._deliver(message.event);
    } else if (message.t === "state") {
      if (message.epoch && this.epoch && message.epoch !== this.epoch) {
        this.epoch = message.epoch;
      }
      if (!this.lastId || message.lastId > this.lastId) {
        if (!this.lastId) this.lastId = message.lastId;
      }
      if (!this.epoch) this.epoch = message.epoch;
      this._setState(message.state);
    } else if (message.t === "position") {
      if (message.lastId > this.lastId) this.lastId = message.lastId;
      this.epoch = message.epoch;
    } else if (message.t === "reset") {
      this._reset(message.info, false);
    }
  }

  _broadcast(message) {
    if (this.channel && this.role === "leader") this.channel.postMessage(message);
  }

  // ---- delivery ---------------------------------------------------------------------------

  _emit(name, ...args) {
    const set = this.listeners.get(name);
    if (!set) return;
    for (const handler of Array.from(set)) {
      try {
        handler(...args);
      } catch (error) {
        if (globalThis.console) console.error("livehub handler", error);
      }
    }
  }

  _deliver(event) {
    if (event.id <= this.lastId) {
      this.stats.duplicates++;
      return;
    }
    this.lastId = event.id;
    this.stats.delivered++;
    this._broadcast({t: "event", event});
    if (event.type.startsWith("presence:") && !event.src) this.presence._event(event);
    for (const [pattern, set] of this.listeners) {
      if (pattern.startsWith("$") || !matches(pattern, event.type)) continue;
      for (const handler of Array.from(set)) {
        try {
          handler(event.data, event);
        } catch (error) {
          if (globalThis.console) console.error("livehub handler", error);
        }
      }
    }
    this._emit("$event", event);
  }

  _position(lastId, epoch) {
    if (epoch) this.epoch = epoch;
    if (lastId > this.lastId) this.lastId = lastId;
    this._broadcast({t: "position", lastId: this.lastId, epoch: this.epoch});
  }

  _reset(info, broadcast = true) {
    this.epoch = info.epoch || this.epoch;
    this.lastId = info.last_id ?? info.next ?? this.lastId;
    if (broadcast) this._broadcast({t: "reset", info});
    this._emit("$reset", info);
  }

  _setState(state) {
    if (!STATES.includes(state) || state === this.state) return;
    this.state = state;
    this._broadcast({t: "state", state, lastId: this.lastId, epoch: this.epoch});
    this._emit("$state", state);
  }

  async _token(fresh) {
    if (this.getToken && (fresh || !this.token)) {
      try {
        this.token = await this.getToken();
      } catch (error) {
        this._emit("$error", {code: "token", message: String(error)});
      }
    }
    return this.token;
  }

  // ---- WebSocket ----------------------------------------------------------------------------

  _stopTransports() {
    this.timers.clearTimeout(this.wsTimer);
    this.timers.clearTimeout(this.refreshTimer);
    this.timers.clearTimeout(this.pingTimer);
    this._stopPolling();
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      try { ws.close(1000); } catch (error) { /* ignore */ }
    }
  }

  _wsSend(frame) {
    if (this.ws && this.ws.readyState === 1) this.ws.send(JSON.stringify(frame));
  }

  async _connectWs(freshToken = false) {
    if (this.closed || !this.WebSocket) {
      if (!this.WebSocket) this._startPolling();
      return;
    }
    const token = await this._token(freshToken);
    if (this.closed) return;
    const ws = new this.WebSocket(`${this.wsBase}/ws/${this.namespace}`);
    this.ws = ws;
    this.stats.wsOpened++;
    let welcomed = false;
    let lastFrame = Date.now();
    ws.onopen = () => {
      if (token) ws.send(JSON.stringify({op: "auth", token}));
    };
    ws.onmessage = (message) => {
      if (this.ws !== ws) return;
      lastFrame = Date.now();
      let frame;
      try {
        frame = JSON.parse(message.data);
      } catch (error) {
        return;
      }
      switch (frame.op) {
      case "welcome":
        if (frame.refreshed) {
          this._scheduleRefresh(frame.expires);
          break;
        }
        welcomed = true;
        this.wsAttempt = 0;
        this._stopPolling();  // the WebSocket takes over from lastId
        if (this.lastId && this.epoch) {
          ws.send(JSON.stringify({op: "resume", since: this.lastId, epoch: this.epoch}));
        } else {
          this._position(frame.last_id, frame.epoch);
        }
        this.epoch = this.epoch || frame.epoch;
        ws.send(JSON.stringify({op: "subscribe", types: this.types}));
        this._scheduleRefresh(frame.expires);
        this._schedulePing(ws, (frame.heartbeat || 25) * 1000, () => lastFrame);
        if (this.wantsPresence && frame.expires !== null) ws.send(JSON.stringify({op: "presence"}));
        this._setState("live");
        break;
      case "event": {
        const event = {id: frame.id, type: frame.type, ts: frame.ts, data: frame.data};
        if (frame.src) event.src = frame.src;  // a client-originated event: who sent it
        this._deliver(event);
        break;
      }
      case "presence":
        this.presence._replace(frame.users);
        this._broadcast({t: "presence", users: frame.users});
        break;
      case "published": {
        const pending = this.publishing.shift();
        if (pending) pending.resolve();
        break;
      }
      case "resumed":
        this._position(0, this.epoch);
        break;
      case "reset":
        this._reset(frame);
        break;
      case "error":
        if (frame.code === "resume_future") {
          // our lastId is from somewhere else: start from the hub's newest instead
          this._reset({epoch: this.epoch, last_id: 0, reason: "future"});
        }
        if (PUBLISH_ERRORS.includes(frame.code) && this.publishing.length) {
          const error = new Error(frame.message);
          error.code = frame.code;
          this.publishing.shift().reject(error);
        }
        this._emit("$error", frame);
        break;
      default:
        break;
      }
    };
    ws.onerror = () => {};
    ws.onclose = (event) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this._failPublishing("not_live", "the WebSocket closed before the server answered");
      this.timers.clearTimeout(this.pingTimer);
      this.timers.clearTimeout(this.refreshTimer);
      if (this.closed) return;
      const code = event ? event.code : 1006;
      this._emit("$close", {code, reason: event ? event.reason : ""});
      let delay = backoff(this.wsAttempt++, this.backoffMin, this.backoffMax, this.random);
      let fresh = false;
      if (code === 4009 || ((code === 4001 || code === 4003) && this.getToken)) {
        fresh = true;  // expired or refused: ask for a new token first
        if (code === 4009) delay = 0;
      }
      if (!this.pollActive) this._startPolling();
      this.wsTimer = this.timers.setTimeout(() => this._connectWs(fresh), delay);
    };
  }

  _schedulePing(ws, interval, lastFrame) {
    this.timers.clearTimeout(this.pingTimer);
    const tick = () => {
      if (this.ws !== ws) return;
      if (Date.now() - lastFrame() > 2 * interval + 1000) {
        try { ws.close(4000); } catch (error) { /* ignore */ }
        ws.onclose({code: 1006, reason: "no pong"});
        return;
      }
      this._wsSend({op: "ping"});
      this.pingTimer = this.timers.setTimeout(tick, interval);
    };
    this.pingTimer = this.timers.setTimeout(tick, interval);
  }

  _scheduleRefresh(expires) {
    this.timers.clearTimeout(this.refreshTimer);
    if (!expires || !this.getToken) return;
    const delay = Math.max(1000, (expires - 60) * 1000 - Date.now());
    this.refreshTimer = this.timers.setTimeout(async () => {
      const token = await this._token(true);
      if (token) this._wsSend({op: "auth", token});
    }, Math.min(delay, 2147483647));
  }

  // ---- polling --------------------------------------------------------------------------------

  _stopPolling() {
    this.pollGen++;
    this.pollActive = false;
    this.timers.clearTimeout(this.pollTimer);
    this.pollTimer = null;
    if (this.pollAbort) {
      try { this.pollAbort.abort(); } catch (error) { /* ignore */ }
      this.pollAbort = null;
    }
  }

  _startPolling() {
    this._stopPolling();
    if (this.closed || this.pollBase === null || !this.fetch) {
      this._setState("offline");
      return;
    }
    const gen = this.pollGen;
    this.pollActive = true;
    if (this.state === "live") this._setState(this.pollOk ? "polling" : "offline");
    this._pollOnce(gen, false);
    if (this.wantsPresence) this._fetchPresence(gen);
  }

  /** Polling: the presence set comes from GET /v1/presence (a token is needed). */
  async _fetchPresence(gen) {
    const token = await this._token(false);
    if (!token || gen !== this.pollGen || this.closed) return;
    try {
      const response = await this.fetch(`${this.pollBase}/v1/presence`,
        {headers: {Authorization: `Bearer ${token}`}, cache: "no-store"});
      if (!response.ok) return;
      const body = await response.json();
      if (gen !== this.pollGen || !Array.isArray(body.users)) return;
      this.presence._replace(body.users);
      this._broadcast({t: "presence", users: body.users});
    } catch (error) {
      /* the polling sink may not track presence: the set stays as it was */
    }
  }

  async _pollOnce(gen, freshToken) {
    if (gen !== this.pollGen || this.closed) return;
    const token = await this._token(freshToken);
    if (gen !== this.pollGen || this.closed) return;
    const params = new URLSearchParams();
    if (this.lastId) params.set("since", String(this.lastId));
    if (this.epoch) params.set("epoch", this.epoch);
    params.set("types", this.types.join(","));
    if (this.pollWait > 0 && this.lastId) params.set("wait", String(this.pollWait));
    const headers = {};
    if (token) headers.Authorization = `Bearer ${token}`;
    const Abort = globalThis.AbortController;
    const abort = Abort ? new Abort() : null;
    this.pollAbort = abort;
    let retryIn = 0;
    let refresh = false;
    this.stats.polls++;
    try {
      const response = await this.fetch(`${this.pollBase}/v1/events?${params}`,
        {headers, signal: abort ? abort.signal : undefined, cache: "no-store"});
      if (gen !== this.pollGen) return;
      if (response.status === 401 && this.getToken) {
        refresh = true;
        throw new Error("unauthorized");
      }
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const body = await response.json();
      if (gen !== this.pollGen) return;
      this.pollOk = true;
      this.pollAttempt = 0;
      this._setState("polling");
      if (body.reset) {
        this._reset({epoch: body.epoch, last_id: body.next, reason: body.reason});
      } else {
        if (this.epoch && body.epoch !== this.epoch) {
          this._reset({epoch: body.epoch, last_id: body.next, reason: "epoch"});
        } else {
          for (const event of body.events || []) this._deliver(event);
          this._position(body.next, body.epoch);
        }
      }
      retryIn = this.pollWait > 0 ? 0 : this.pollInterval * 1000;
    } catch (error) {
      if (gen !== this.pollGen) return;
      this.pollOk = false;
      this._setState("offline");
      retryIn = backoff(this.pollAttempt++, this.backoffMin, this.backoffMax, this.random);
    }
    if (gen !== this.pollGen || this.closed) return;
    this.pollTimer = this.timers.setTimeout(() => this._pollOnce(gen, refresh), retryIn);
  }
}

/**
 * Opens a client. Options: url (ws[s]://host:port, default the page's origin), pollUrl
 * (http[s]://host:port of the polling sink; leave out for no fallback), namespace ("client"),
 * token or getToken (async, called again when the server says the token expired), types (["*"]),
 * share (true), pollWait (25 s long polls; 0 for interval polling every pollInterval s),
 * backoffMin / backoffMax (ms), lastId / epoch (resume a stored position), presence (true: keep
 * client.presence, the live set of who is online; adds "presence:*" to types).
 * client.publish(type, data, to) publishes as the token's user (docs/PRESENCE.md).
 */
export function connect(options = {}) {
  return new Client(options);
}

export default {connect, matches, backoff, tokenClaims, describeEvent, toastTemplates, fillTemplate,
  humanizeType, summarize, Presence};
