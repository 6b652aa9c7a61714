// The dashboard, livehub.js and its React hook in Debian's chromium (playwright-core), against a
// real hub started by tests/integration/test_browser.py, which passes the URLs, tokens and control
// endpoint in the environment. Events are published with the livehub CLI; the WebSocket is made
// unreachable by a hub reload that removes the websocket stage (the polling stage stays), then
// brought back. Screenshots of each state go to $LH_SHOTS.
import {test, before, after} from "node:test";
import assert from "node:assert/strict";
import {execFileSync} from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import http from "node:http";
import {fileURLToPath} from "node:url";
import {chromium} from "playwright-core";

const E = process.env;
const HTTP = E.LH_HTTP, POLL = E.LH_POLL;
let browser;

function pub(type, data, ...to) {
  const args = ["--control", E.LH_CONTROL, "pub", type, JSON.stringify(data)];
  for (const audience of to) args.push("--to", audience);
  return Number(execFileSync(E.LH_CLI, args, {timeout: 10000}).toString().trim());
}

function reload(text) {
  fs.writeFileSync(E.LH_CONF, text);
  execFileSync(E.LH_CLI, ["--control", E.LH_CONTROL, "reload"], {timeout: 10000});
}

async function shot(page, name) {
  // animations finished (a toast mid-slide is half transparent), so the picture shows the state
  await page.screenshot({path: path.join(E.LH_SHOTS, `${name}.png`), fullPage: false,
    animations: "disabled"});
}

async function badge(page, state, timeout = 20000) {
  await page.waitForFunction((s) => document.getElementById("badge").dataset.state === s, state,
    {timeout});
  assert.equal(await page.textContent("#badge-text"),
    {live: "Live", polling: "Polling", offline: "Offline"}[state]);
}

async function waitSeen(page, ids, timeout = 15000) {
  await page.waitForFunction((want) => want.every((id) => window.livehubSeen.includes(id)), ids,
    {timeout});
}

const seen = (page) => page.evaluate(() => window.livehubSeen.slice());
const dashboard = (ns, token, extra = "") =>
  `${HTTP}/?ns=${ns}&poll=${encodeURIComponent(POLL)}${token ? `&token=${token}` : ""}${extra}`;

before(async () => {
  browser = await chromium.launch({executablePath: "/usr/bin/chromium", headless: true,
    // the user-gesture rule for audio as desktop Chrome applies it, so the sound test means something
    args: ["--no-sandbox", "--disable-gpu", "--autoplay-policy=user-gesture-required", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"]});
});
after(async () => { if (browser) await browser.close(); });

test("live, then polling while the WebSocket is gone, then live: every event once, in order",
  {timeout: 120000}, async () => {
    const context = await browser.newContext({viewport: {width: 1280, height: 800}});
    const page = await context.newPage();
    const errors = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    await page.goto(dashboard("client", E.LH_TOKEN_CLIENT7));
    await badge(page, "live");
    const first = pub("assignment:created", {signalIdentifier: "S-7"}, "user:7");
    await waitSeen(page, [first]);
    await page.waitForSelector(`#stream li[data-id="${first}"]`);
    await page.waitForSelector(`.toast[data-id="${first}"]`);
    assert.equal(await page.textContent(`.toast[data-id="${first}"] .toast-title`), "New Signal Assignment");
    assert.equal(await page.textContent(`.toast[data-id="${first}"] .toast-body`), "You've been assigned: S-7");
    await shot(page, "live");

    const conf = fs.readFileSync(E.LH_CONF, "utf8");
    const withoutWs = conf.slice(0, conf.indexOf("chain = browsers"));
    const ids = [first];
    reload(withoutWs);
    ids.push(pub("signal:created", {n: 1}));  // published while the WebSocket is going away
    await badge(page, "polling");
    for (let i = 2; i <= 4; i++) ids.push(pub("signal:created", {n: i}));
    await waitSeen(page, ids);
    await page.waitForSelector(`#stream li[data-id="${ids.at(-1)}"]`);
    await shot(page, "polling");

    reload(conf);
    ids.push(pub("signal:updated", {n: 5}));  // during the switch back
    await badge(page, "live", 40000);
    ids.push(pub("signal:updated", {n: 6}));
    await waitSeen(page, ids);
    await new Promise((r) => setTimeout(r, 500));  // a late duplicate would show by now
    assert.deepEqual(await seen(page), ids);
    const listed = await page.$$eval("#stream li[data-id]", (lis) => lis.map((li) => Number(li.dataset.id)));
    assert.deepEqual(listed, ids.slice().reverse());
    assert.deepEqual(errors, []);
    await context.close();
  });

test("offline when neither sink answers", {timeout: 120000}, async () => {
  const context = await browser.newContext({viewport: {width: 1280, height: 800}});
  const page = await context.newPage();
  await page.goto(`${HTTP}/?ns=client&poll=${encodeURIComponent("http://127.0.0.1:9")}`);
  await badge(page, "live");
  await page.routeWebSocket(/.*/, (ws) => ws.close({code: 1006}));
  await page.evaluate(() => window.livehubClient.ws.close());
  await badge(page, "offline");
  await shot(page, "offline");
  await context.close();
});

test("two tabs of one context share one WebSocket; both show events", {timeout: 120000}, async () => {
  const context = await browser.newContext({viewport: {width: 1000, height: 700}});
  const opened = [];
  const tabA = await context.newPage();
  tabA.on("websocket", (ws) => opened.push(["a", ws.url()]));
  await tabA.goto(dashboard("client", E.LH_TOKEN_CLIENT7));
  await badge(tabA, "live");
  const tabB = await context.newPage();
  tabB.on("websocket", (ws) => opened.push(["b", ws.url()]));
  await tabB.goto(dashboard("client", E.LH_TOKEN_CLIENT7));
  await badge(tabB, "live");
  const id = pub("connection:updated", {status: "accepted"}, "user:7");
  await waitSeen(tabA, [id]);
  await waitSeen(tabB, [id]);
  assert.equal(await tabB.evaluate(() => window.livehubClient.role), "follower");
  assert.equal(opened.length, 1, JSON.stringify(opened));
  const stats = await (await fetch(`${HTTP}/stats`)).text();
  assert.match(stats, /"(livehub_ws_)?connections"\s*:\s*1\b/, stats);
  await context.close();
});

test("a client never sees another user's events; an admin sees admin events", {timeout: 120000},
  async () => {
    const client = await browser.newContext({viewport: {width: 1280, height: 800}});
    const admin = await browser.newContext({viewport: {width: 1280, height: 800}});
    const phone = await browser.newContext({viewport: {width: 390, height: 844}, isMobile: true});
    const p7 = await client.newPage(), pa = await admin.newPage(), pp = await phone.newPage();
    await p7.goto(dashboard("client", E.LH_TOKEN_CLIENT7));
    await pa.goto(dashboard("admin", E.LH_TOKEN_ADMIN));
    await pp.goto(dashboard("client", E.LH_TOKEN_CLIENT7));
    await badge(p7, "live"); await badge(pa, "live"); await badge(pp, "live");
    const private8 = pub("assignment:created", {signalIdentifier: "S-8 secret"}, "user:8");
    const adminOnly = pub("admin:audit", {action: "export"}, "admin");
    const mine = pub("assignment:created", {signalIdentifier: "S-7b"}, "user:7");
    const everyone = pub("signal:created", {title: "Public signal"});
    await waitSeen(p7, [mine, everyone]);
    await waitSeen(pa, [adminOnly, everyone]);
    const s7 = await seen(p7);
    assert.ok(!s7.includes(private8) && !s7.includes(adminOnly), JSON.stringify(s7));
    assert.ok(!(await seen(pa)).includes(private8));
    assert.ok(!(await p7.textContent("#stream")).includes("secret"));
    await pa.click("#bell");
    await shot(pa, "admin");
    await shot(p7, "client");
    await waitSeen(pp, [mine, everyone]);
    await shot(pp, "client-phone");
    await client.close(); await admin.close(); await phone.close();
  });

test("toasts use the event's template, or a readable fallback for unknown types", {timeout: 120000},
  async () => {
    const context = await browser.newContext({viewport: {width: 1280, height: 800}});
    const page = await context.newPage();
    await page.goto(dashboard("client", E.LH_TOKEN_CLIENT7));
    await badge(page, "live");
    const published = pub("signal:published", {title: "Water infrastructure grant", signalIdentifier: "S-12"});
    const status = pub("connection:statusChanged", {field: "Status", value: "Accepted",
      previousValue: "Pending", fields: {Name: "Acme Robotics"}}, "user:7");
    const unknown = pub("demo:deployFinished", {service: "api", version: "1.4.2", took_ms: 5300,
      details: {nested: {deep: true}}});
    await waitSeen(page, [published, status, unknown]);
    const text = async (id) => page.$eval(`.toast[data-id="${id}"]`, (div) => ({
      title: div.querySelector(".toast-title").textContent,
      body: div.querySelector(".toast-body")?.textContent ?? ""}));
    await page.waitForSelector(`.toast[data-id="${unknown}"]`);
    assert.deepEqual(await text(published), {title: "Signal published",
      body: "Water infrastructure grant is now in the Signal Pool"});
    assert.deepEqual(await text(status), {title: "Connection Accepted",
      body: "Acme Robotics: Pending → Accepted"});
    assert.deepEqual(await text(unknown), {title: "Demo deploy finished",
      body: "Service: api · Version: 1.4.2 · Took ms: 5300"});
    for (const id of [published, status, unknown]) {
      assert.doesNotMatch(await page.textContent(`.toast[data-id="${id}"]`), /[{}"]/);
    }
    await shot(page, "toast");
    // the notification centre lists the same texts, newest first
    await page.click("#bell");
    const history = await page.$$eval("#history li b", (bs) => bs.map((b) => b.textContent));
    assert.deepEqual(history.slice(0, 3), ["Demo deploy finished", "Connection Accepted", "Signal published"]);
    await context.close();
  });

test("sound plays only after a user gesture: an Enable sound button, no autoplay errors",
  {timeout: 120000}, async () => {
    const context = await browser.newContext({viewport: {width: 1280, height: 800}});
    // count what the page asks of Web Audio: contexts made, and tones started
    await context.addInitScript(() => {
      window.audioLog = {contexts: 0, tones: 0};
      const Original = window.AudioContext;
      window.AudioContext = class extends Original {
        constructor(...args) { super(...args); window.audioLog.contexts++; window.audioLog.last = this; }
      };
      const start = OscillatorNode.prototype.start;
      OscillatorNode.prototype.start = function (...args) {
        window.audioLog.tones++;
        window.audioLog.state = this.context.state;
        return start.apply(this, args);
      };
    });
    const page = await context.newPage();
    const warnings = [];
    page.on("console", (m) => { if (/audio|autoplay|gesture/i.test(m.text())) warnings.push(m.text()); });
    page.on("pageerror", (e) => warnings.push(String(e)));
    await page.goto(dashboard("client", E.LH_TOKEN_CLIENT7));
    await badge(page, "live");
    // sound was turned on in an earlier visit: the page may not play until the person acts
    await page.evaluate(() => localStorage.setItem("livehub.sound", "on"));
    await page.reload();
    await badge(page, "live");
    assert.equal(await page.getAttribute("#sound", "data-sound"), "locked");
    assert.equal(await page.textContent("#sound-text"), "Enable sound");
    const before = pub("assignment:created", {signalIdentifier: "S-20"}, "user:7");
    await page.waitForSelector(`.toast[data-id="${before}"]`);
    assert.deepEqual(await page.evaluate(() => [window.audioLog.contexts, window.audioLog.tones]), [0, 0]);
    await shot(page, "sound-locked");

    await page.click("#sound");  // the gesture
    await page.waitForFunction(() => document.getElementById("sound").dataset.sound === "on");
    await page.waitForFunction(() => window.audioLog.tones >= 1);  // the confirmation ping
    const afterClick = await page.evaluate(() => window.audioLog.tones);
    const after = pub("assignment:created", {signalIdentifier: "S-21"}, "user:7");
    await page.waitForSelector(`.toast[data-id="${after}"]`);
    await page.waitForFunction((n) => window.audioLog.tones >= n + 2, afterClick);  // the chime
    assert.equal(await page.evaluate(() => window.audioLog.state), "running");
    assert.equal(await page.evaluate(() => window.audioLog.contexts), 1);
    // a type whose preference has no sound stays silent
    const quiet = pub("signal:created", {title: "Quiet"});
    await page.waitForSelector(`.toast[data-id="${quiet}"]`);
    assert.equal(await page.evaluate(() => window.audioLog.tones), afterClick + 2);
    // muting: no tone afterwards
    await page.click("#sound");
    assert.equal(await page.getAttribute("#sound", "data-sound"), "off");
    const muted = pub("assignment:created", {signalIdentifier: "S-22"}, "user:7");
    await page.waitForSelector(`.toast[data-id="${muted}"]`);
    assert.equal(await page.evaluate(() => window.audioLog.tones), afterClick + 2);
    assert.deepEqual(warnings, []);
    await context.close();
  });

test("dev login: Admin gets the admin view with live hub metrics; Client user gets theirs",
  {timeout: 120000}, async () => {
    const context = await browser.newContext({viewport: {width: 1280, height: 800}});
    const page = await context.newPage();
    await page.goto(dashboard("client", ""));
    await badge(page, "live");
    assert.equal(await page.textContent("#who-name"), "anonymous");
    await shot(page, "signed-out");
    await page.click("#login-admin");
    await page.waitForURL(/ns=admin/);
    await badge(page, "live");
    assert.equal(await page.textContent("#who-name"), "Admin · dev login");
    // metrics:update from the metrics stage (interval 1 s) fills the Hub card ...
    await page.waitForFunction(() => /^\d+$/.test(document.getElementById("m-last").textContent),
      null, {timeout: 60000});
    // the first snapshot may predate this page's connection: the next one counts it
    await page.waitForFunction(() => Number(document.getElementById("m-conn").textContent) >= 1,
      null, {timeout: 60000});
    // ... and its numbers follow traffic: 40 events make the rate and the newest id move
    const ids = [];
    for (let i = 0; i < 40; i++) ids.push(pub("admin:audit", {action: "export", n: i}, "admin"));
    await waitSeen(page, ids);
    await page.waitForFunction((last) => Number(document.getElementById("m-last").textContent) >= last &&
      Number(document.getElementById("m-eps").textContent) > 0, ids.at(-1), {timeout: 120000});
    await page.waitForSelector(`#stream li[data-id="${ids.at(-1)}"]`);
    // a burst of one type is one toast with the newest text, not a wall of toasts
    assert.equal((await page.$$('.toast[data-type="admin:audit"]')).length, 1);
    assert.equal(await page.textContent('.toast[data-type="admin:audit"] .toast-body'), "Action: export · N: 39");
    await shot(page, "admin-metrics");

    // sign out, then a client user with id 7: sees user:7 events, not user:8's
    await page.click("#sign-out");
    await page.waitForFunction(() => document.getElementById("who-name").textContent === "anonymous");
    await page.fill("#login-sub", "7");
    await page.click("#login-client");
    await page.waitForURL(/ns=client/);
    await badge(page, "live");
    assert.equal(await page.textContent("#who-name"), "Client user 7 (startup) · dev login");
    const other = pub("assignment:created", {signalIdentifier: "S-8 secret"}, "user:8");
    const mine = pub("assignment:created", {signalIdentifier: "S-7 dev"}, "user:7");
    await waitSeen(page, [mine]);
    assert.ok(!(await seen(page)).includes(other));
    assert.equal(await page.$("#metrics:not([hidden])"), null, "no Hub card for a client");
    // a bad user id is refused in the page, nothing changes
    await page.fill("#login-sub", "a b");
    await page.click("#login-client");
    assert.match(await page.textContent("#login-error"), /user id/);
    assert.match(page.url(), /ns=client/);
    await context.close();
  });

test("a pasted token signs in; a stage without dev_login refuses the dev login", {timeout: 120000},
  async () => {
    const context = await browser.newContext({viewport: {width: 1280, height: 800}});
    const page = await context.newPage();
    await page.goto(dashboard("client", ""));
    await badge(page, "live");
    await page.click("#paste summary");
    await page.fill("#token", "not-a-token");
    await page.click("#token-form button");
    assert.match(await page.textContent("#login-error"), /not a token/);
    await page.fill("#token", E.LH_TOKEN_CLIENT8);
    await page.click("#token-form button");
    await page.waitForFunction(() => document.getElementById("who-name").textContent === "Client user 8 (startup)");
    await badge(page, "live");
    const mine = pub("connection:statusChanged", {value: "Accepted", fields: {Name: "Grid Co"}}, "user:8");
    await waitSeen(page, [mine]);

    const plain = await context.newPage();
    await plain.goto(`${E.LH_HTTP_PLAIN}/?ns=client&poll=none`);
    await badge(plain, "live");
    await plain.click("#login-admin");
    await plain.waitForSelector("#login-error:not([hidden])");
    assert.match(await plain.textContent("#login-error"), /dev login is off/);
    assert.match(plain.url(), /ns=client/);
    assert.equal(await plain.textContent("#who-name"), "anonymous");
    await shot(plain, "dev-login-refused");
    await context.close();
  });

// A page built like the seed's: React (from npm, served from tests/browser/node_modules by a local
// HTTP server, no CDN) with useLivehub from react.js.
function serveReactPage() {
  const www = fileURLToPath(new URL("../../plugins/websocket/www/", import.meta.url));
  const modules = fileURLToPath(new URL("./node_modules/", import.meta.url));
  const files = {
    "/react.js": path.join(www, "react.js"),
    "/livehub.js": path.join(www, "livehub.js"),
    "/vendor/react.js": path.join(modules, "react/umd/react.production.min.js"),
    "/vendor/react-dom.js": path.join(modules, "react-dom/umd/react-dom.production.min.js"),
  };
  const page = `<!doctype html><meta charset="utf-8"><title>useLivehub</title>
<div id="root"></div>
<script src="/vendor/react.js"></script><script src="/vendor/react-dom.js"></script>
<script type="module">
import {makeUseLivehub} from "/react.js";
const useLivehub = makeUseLivehub(React);
const h = React.createElement;
const params = new URLSearchParams(location.search);
window.clients = [];
window.renders = 0;
function Feed({tick}) {
  const [items, setItems] = React.useState([]);
  window.renders++;
  const {state, client} = useLivehub({url: params.get("ws"), namespace: "client",
    token: params.get("token"), share: false},
    {"signal:*": (data, event) => setItems((list) => [...list, event.id])});
  React.useEffect(() => { if (client) window.clients.push(client); }, [client]);
  return h("div", null, h("b", {id: "state"}, state), h("span", {id: "tick"}, tick),
    h("ol", {id: "items"}, items.map((id) => h("li", {key: id}, id))));
}
function App() {
  const [shown, setShown] = React.useState(true);
  const [tick, setTick] = React.useState(0);
  window.unmountFeed = () => setShown(false);
  window.rerender = () => setTick((t) => t + 1);
  return shown ? h(Feed, {tick}) : h("p", {id: "gone"}, "unmounted");
}
ReactDOM.createRoot(document.getElementById("root")).render(h(App));
</script>`;
  const server = http.createServer((request, response) => {
    const url = new URL(request.url, "http://x");
    if (url.pathname === "/") {
      response.writeHead(200, {"content-type": "text/html; charset=utf-8"});
      response.end(page);
    } else if (files[url.pathname]) {
      response.writeHead(200, {"content-type": "text/javascript; charset=utf-8"});
      response.end(fs.readFileSync(files[url.pathname]));
    } else {
      response.writeHead(404);
      response.end();
    }
  });
  server.unref();  // a failed test must not keep the test process alive
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(server)));
}

async function wsConnections() {
  const stats = JSON.parse(await (await fetch(`${HTTP}/stats`)).text());
  return stats.livehub_ws_connections;
}

test("useLivehub in React: subscribes in an effect, exposes state, cleans up on unmount",
  {timeout: 120000}, async () => {
    const server = await serveReactPage();
    const context = await browser.newContext({viewport: {width: 800, height: 600}});
    // connections other tests may still hold (a failed test can leave its page open)
    const before = await wsConnections();
    try {
      const page = await context.newPage();
      const errors = [];
      page.on("pageerror", (e) => errors.push(String(e)));
      const sockets = [];
      page.on("websocket", (ws) => sockets.push(ws));
      const wsUrl = HTTP.replace(/^http/, "ws");
      await page.goto(`http://127.0.0.1:${server.address().port}/?ws=${encodeURIComponent(wsUrl)}` +
        `&token=${E.LH_TOKEN_CLIENT7}`);
      await page.waitForFunction(() => document.getElementById("state")?.textContent === "live",
        null, {timeout: 60000});
      const signal = pub("signal:created", {title: "From React"});
      const other = pub("connection:updated", {status: "x"}, "user:7");
      const signal2 = pub("signal:updated", {title: "Again"});
      await page.waitForFunction((id) => [...document.querySelectorAll("#items li")]
        .some((li) => li.textContent === String(id)), signal2);
      const items = await page.$$eval("#items li", (lis) => lis.map((li) => Number(li.textContent)));
      assert.deepEqual(items, [signal, signal2], `not ${other}: the handler is for signal:* only`);
      // re-renders with new handler objects keep the one connection
      for (let i = 1; i <= 3; i++) await page.evaluate(() => window.rerender());
      await page.waitForFunction(() => document.getElementById("tick").textContent === "3");
      assert.equal(sockets.length, 1);
      assert.equal(await page.evaluate(() => window.clients.length), 1);
      const closed = sockets[0].waitForEvent("close", {timeout: 120000});
      await page.evaluate(() => window.unmountFeed());
      await page.waitForSelector("#gone");
      await closed;  // the WebSocket is gone ...
      const client = await page.evaluate(() => ({role: window.clients[0].role,
        state: window.clients[0].state, listeners: window.clients[0].listeners.size,
        ws: window.clients[0].ws}));
      assert.deepEqual(client, {role: "closed", state: "offline", listeners: 0, ws: null});  // ... and so are the listeners
      const late = pub("signal:created", {title: "After unmount"});
      assert.ok(late > signal2);
      for (let i = 0; i < 100 && await wsConnections() !== before; i++) await new Promise((r) => setTimeout(r, 100));
      assert.equal(await wsConnections(), before, "the hub saw the connection close");
      assert.deepEqual(errors, []);
    } finally {
      await context.close();
      server.closeAllConnections();
      server.close();
    }
  });

test("an EventSource on the polling sink: events in order, resumed with Last-Event-ID across an outage",
  {timeout: 120000}, async () => {
    const context = await browser.newContext();
    const page = await context.newPage();
    const errors = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    const conf = fs.readFileSync(E.LH_CONF, "utf8");
    try {
      // a page of the websocket sink's origin, which the polling sink's CORS list allows
      await page.goto(`${HTTP}/`);
      await page.evaluate(({poll, token}) => {
        window.sse = {events: [], opens: 0, errors: 0};
        const source = new EventSource(`${poll}/v1/stream?types=sse:*&access_token=${token}`);
        source.onopen = () => window.sse.opens++;
        source.onerror = () => window.sse.errors++;
        source.addEventListener("sse:tick", (e) => {
          const body = JSON.parse(e.data);
          window.sse.events.push({id: Number(e.lastEventId), bodyId: body.id, n: body.data.n,
            to: body.to || null});
        });
        window.sseSource = source;
      }, {poll: POLL, token: E.LH_TOKEN_CLIENT7});
      await page.waitForFunction(() => window.sse.opens === 1, null, {timeout: 60000});
      const sent = [];
      for (let n = 0; n < 5; n++) sent.push(pub("sse:tick", {n}));
      sent.push(pub("sse:tick", {n: 5}, "user:7"));   // the token's own audience
      pub("sse:tick", {n: -1}, "user:8");               // someone else's: never shown
      const count = (n) => page.waitForFunction((k) => window.sse.events.length >= k, n,
        {timeout: 120000});
      await count(sent.length);

      // The polling stage goes away (a reload without its chain) and events go on being published;
      // when it is back the browser reconnects by itself (retry: 2000) sending Last-Event-ID.
      const start = conf.indexOf("chain = polling"), end = conf.indexOf("chain = browsers");
      reload(conf.slice(0, start) + conf.slice(end));
      await page.waitForFunction(() => window.sse.errors >= 1, null, {timeout: 60000});
      for (let n = 6; n < 12; n++) sent.push(pub("sse:tick", {n}));
      reload(conf);
      await page.waitForFunction(() => window.sse.opens >= 2, null, {timeout: 60000});
      for (let n = 12; n < 15; n++) sent.push(pub("sse:tick", {n}));
      await count(sent.length);
      await new Promise((r) => setTimeout(r, 500));  // room for a duplicate to show itself
      const got = await page.evaluate(() => window.sse.events);
      assert.deepEqual(got.map((e) => e.id), sent, "every event once, in order, none of user:8's");
      assert.ok(got.every((e) => e.id === e.bodyId && e.to === null), "id: is the event id; no audiences leak");
      assert.deepEqual(got.map((e) => e.n), [...Array(15).keys()]);
      assert.deepEqual(errors, []);
      await page.evaluate(() => window.sseSource.close());
    } finally {
      if (fs.readFileSync(E.LH_CONF, "utf8") !== conf) reload(conf);
      await context.close();
    }
  });
