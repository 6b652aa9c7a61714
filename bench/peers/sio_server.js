// The Socket.IO 4.x peer that bench/run measures: namespace /client (anonymous, like livehub's
// anonymous websocket sink), connection state recovery on (livehub keeps a history too), and
// POST /publish?event=TYPE with a JSON body that is emitted to every socket of /client.
// Usage: node sio_server.js PORT   (binds 127.0.0.1 only)
"use strict";
const http = require("http");
const { Server } = require("socket.io");

const port = Number(process.argv[2]);
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  console.error("usage: node sio_server.js PORT");
  process.exit(2);
}

let io;
const server = http.createServer((req, res) => {
  if (req.method !== "POST" || !req.url.startsWith("/publish")) {
    res.writeHead(404).end();
    return;
  }
  const event = new URL(req.url, "http://127.0.0.1").searchParams.get("event") || "bench:tick";
  const chunks = [];
  req.on("data", (chunk) => chunks.push(chunk));
  req.on("end", () => {
    let data;
    try {
      data = JSON.parse(Buffer.concat(chunks).toString("utf8"));
    } catch (err) {
      res.writeHead(400, { "Content-Type": "text/plain" }).end("bad json\n");
      return;
    }
    io.of("/client").emit(event, data);
    res.writeHead(204).end();
  });
});
// the publisher's keep-alive connections may wait idle while 10,000 clients connect
server.keepAliveTimeout = 600000;
server.headersTimeout = 0;
server.requestTimeout = 0;

io = new Server(server, {
  cors: { origin: "*" },
  connectionStateRecovery: { maxDisconnectionDuration: 120000 },
});
io.of("/client").on("connection", () => {});

server.listen(port, "127.0.0.1", () => console.log(`sio_server listening on 127.0.0.1:${port}`));
process.on("SIGTERM", () => process.exit(0));
