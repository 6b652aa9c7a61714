// A reference socket.io 4.x server with livehub's semantics, so that client_test.js can be shown
// to pass against both: namespaces /admin and /client, an HS256 token in `auth` (role admin for
// /admin), connect_error {message, data: {code}} as livehub's close codes, audiences as rooms,
// subscribe/unsubscribe acks, connection state recovery with a history of HISTORY events.
// Environment: SECRET, HISTORY; prints "listening <port>". POST /publish {type, data, to}.
"use strict";
const http = require("node:http");
const crypto = require("node:crypto");
const { Server } = require("socket.io");

const SECRET = process.env.SECRET;
const HISTORY = Number(process.env.HISTORY || 8);

function verify(token) {
  const [header, payload, signature] = String(token || "").split(".");
  if (!payload) throw new Error("not a token");
  const expected = crypto.createHmac("sha256", SECRET).update(header + "." + payload)
    .digest("base64url");
  if (signature !== expected) throw new Error("bad signature");
  const claims = JSON.parse(Buffer.from(payload, "base64url"));
  if (claims.exp < Date.now() / 1000) throw new Error("expired");
  return claims;
}

const wants = (patterns, type) =>
  patterns.some((p) => (p.endsWith("*") ? type.startsWith(p.slice(0, -1)) : p === type));

const refusal = (message, code) => Object.assign(new Error(message), { data: { code } });

let sequence = 0;
const seqOf = new WeakMap();
const server = http.createServer((request, response) => {
  if (request.method !== "POST" || request.url !== "/publish") {
    response.writeHead(404).end();
    return;
  }
  let body = "";
  request.on("data", (chunk) => (body += chunk));
  request.on("end", () => {
    const { type, data, to } = JSON.parse(body);
    const seq = ++sequence;
    for (const nsp of namespaces) {
      // audiences are rooms; connected sockets that did not subscribe to the type are excluded
      const skip = [...nsp.sockets.values()].filter((s) => !wants(s.data.patterns, type))
        .map((s) => s.id);
      nsp.to(to && to.length ? to : ["public"]).except(skip).emit(type, data);
      const packets = nsp.adapter.packets;
      for (const packet of packets) if (!seqOf.has(packet)) seqOf.set(packet, seq);
      // history: the last HISTORY events, as livehub's `history` option
      while (packets.length && seqOf.get(packets[0]) <= seq - HISTORY) packets.shift();
    }
    response.writeHead(200).end("ok");
  });
});

const io = new Server(server, {
  connectionStateRecovery: { maxDisconnectionDuration: 120000, skipMiddlewares: true },
});
// livehub serves no root namespace: refuse it as it does (socket.io serves "/" by default)
io.of("/").use((socket, next) => next(new Error("Invalid namespace")));
const namespaces = ["admin", "client"].map((name) => {
  const nsp = io.of("/" + name);
  nsp.use((socket, next) => {
    let claims;
    try {
      claims = verify(socket.handshake.auth.token);
    } catch (error) {
      return next(refusal("unauthorized: " + error.message, 4001));
    }
    if (name === "admin" && claims.role !== "admin")
      return next(refusal("forbidden: /admin needs role admin", 4003));
    socket.data.claims = claims;
    next();
  });
  nsp.on("connection", (socket) => {
    if (!socket.recovered) {
      const { sub, role } = socket.data.claims;
      socket.data.patterns = ["*"];
      socket.join(["public", "role:" + role, "user:" + sub].concat(role === "admin" ? ["admin"] : []));
    }
    const change = (add) => (arg, ack) => {
      const list = typeof arg === "string" ? [arg] : arg;
      for (const pattern of list) {
        const at = socket.data.patterns.indexOf(pattern);
        if (add && at < 0) socket.data.patterns.push(pattern);
        if (!add && at >= 0) socket.data.patterns.splice(at, 1);
      }
      if (typeof ack === "function") ack({ types: socket.data.patterns });
    };
    socket.on("subscribe", change(true));
    socket.on("unsubscribe", change(false));
    socket.onAny((event, ...args) => {
      const ack = args[args.length - 1];
      if (event !== "subscribe" && event !== "unsubscribe" && typeof ack === "function")
        ack({ error: "unknown_event" });
    });
  });
  return nsp;
});

server.listen(Number(process.env.PORT || 0), "127.0.0.1", () => {
  console.log("listening " + server.address().port);
});
