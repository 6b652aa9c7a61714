// The dashboard and livehub.js in Debian's chromium (playwright-core), against a real hub started
// by tests/integration/test_browser.py, which passes the URLs, tokens and control endpoint in the
// environment. Events are published with the livehub CLI; the WebSocket is made unreachable by a
// hub reload that removes the websocket stage (the polling stage stays), then brought back.
import {test, before, after} from "node:test";
import assert from "node:assert/strict";
import {execFileSync} from "node:child_process";
import fs from "node:fs";
import path from "node:path";
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
  await page.screenshot({path: path.join(E.LH_SHOTS, `${name}.png`), fullPage: false});
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
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"]});
});
after(async () => { if (browser) await browser.close(); });

test("live, then polling while the WebSocket is gone, then live: every event once, in order",
  {timeout: 60000}, async () => {
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
    assert.match(await page.textContent(`.toast[data-id="${first}"]`), /S-7/);
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

test("offline when neither sink answers", {timeout: 30000}, async () => {
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

test("two tabs of one context share one WebSocket; both show events", {timeout: 30000}, async () => {
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

test("a client never sees another user's events; an admin sees admin events", {timeout: 30000},
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
