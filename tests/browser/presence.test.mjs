// Presence and the typing indicator in Debian's chromium (playwright-core), against a real hub that
// tests/integration/test_presence.py starts with the websocket sink (presence, publish) and the
// presence tracker, admin "boss" assigned to startup "s1". Three dashboards, each in its own
// browser context: boss (admin), s1 and s2 (startups). Screenshots go to $LH_SHOTS.
import {test, before, after} from "node:test";
import assert from "node:assert/strict";
import {execFileSync} from "node:child_process";
import path from "node:path";
import {chromium} from "playwright-core";

const E = process.env;
let browser;

function pub(type, data, ...to) {
  const args = ["--control", E.LH_CONTROL, "pub", type, JSON.stringify(data)];
  for (const audience of to) args.push("--to", audience);
  return Number(execFileSync(E.LH_CLI, args, {timeout: 10000}).toString().trim());
}

async function open(ns, token) {
  const context = await browser.newContext({viewport: {width: 1280, height: 800}});
  const page = await context.newPage();
  page.errors = [];
  page.on("pageerror", (error) => page.errors.push(String(error)));
  await page.goto(`${E.LH_HTTP}/?ns=${ns}&poll=none&token=${token}`);
  await page.waitForFunction(() => document.getElementById("badge").dataset.state === "live",
    null, {timeout: 120000});
  // every typing event this page's client delivers, to show what did not arrive
  await page.evaluate(() => {
    window.typingSeen = [];
    window.livehubClient.on("typing:*", (data, event) => window.typingSeen.push(event));
  });
  return page;
}

const online = (page) => page.$$eval("#online li", (items) => items.map((li) => li.dataset.user));
const shot = (page, name) => page.screenshot({path: path.join(E.LH_SHOTS, `${name}.png`),
  animations: "disabled"});

before(async () => {
  browser = await chromium.launch({executablePath: "/usr/bin/chromium", headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync"]});
});
after(async () => { if (browser) await browser.close(); });

test("who is online, and an admin's typing reaches the assigned startup's page only",
  {timeout: 120000}, async () => {
    const admin = await open("admin", E.LH_TOKEN_ADMIN);
    const s1 = await open("client", E.LH_TOKEN_S1);
    const s2 = await open("client", E.LH_TOKEN_S2);

    // the admin sees everyone; s1 sees its assigned admin; s2 sees nobody
    await admin.waitForSelector('#online li[data-user="s1"]', {timeout: 120000});
    await admin.waitForSelector('#online li[data-user="s2"]', {timeout: 120000});
    assert.match(await admin.textContent('#online li[data-user="s1"]'), /User s1.*websocket/);
    await s1.waitForSelector('#online li[data-user="boss"]', {timeout: 120000});
    assert.deepEqual(await online(s1), ["boss"]);
    assert.deepEqual(await online(s2), []);
    assert.equal(await s2.evaluate(() => window.livehubClient.presence.size), 0);
    assert.equal(await s1.isHidden("#compose"), true, "only admins write to users");
    assert.equal(await admin.isVisible("#compose"), true);
    await shot(admin, "presence-admin");

    // the admin writes to s1: s1's page says so, with the admin's user id from the hub's src
    await admin.fill("#compose-to", "s1");
    await admin.type("#compose-text", "Hello there", {delay: 20});
    await s1.waitForSelector("#typing:not([hidden])", {timeout: 120000});
    assert.equal(await s1.textContent("#typing"), "boss is typing…");
    const started = await s1.evaluate(() => window.typingSeen[0]);
    assert.equal(started.type, "typing:started");
    assert.equal(started.src, "user:boss");
    await shot(s1, "presence-typing");

    // s2 got nothing: a marker published after the typing reaches it, the typing never did
    const mark = pub("mark:after-typing", {}, "role:startup");
    await s2.waitForFunction((id) => window.livehubSeen.includes(id), mark, {timeout: 120000});
    assert.deepEqual(await s2.evaluate(() => window.typingSeen), []);
    assert.equal(await s2.isHidden("#typing"), true);
    // nor did the admin's own page, or anyone's stream list
    assert.deepEqual(await admin.evaluate(() => window.typingSeen), []);
    assert.equal(await s1.$$eval('#stream li[data-type^="typing:"]', (items) => items.length), 0);

    // the admin stops (the field loses focus): the indicator goes away
    await admin.click("#online");
    await s1.waitForFunction(() => document.getElementById("typing").hidden, null,
      {timeout: 120000});
    assert.equal((await s1.evaluate(() => window.typingSeen.map((e) => e.type))).at(-1),
      "typing:stopped");

    // publish() is refused for what the role may not publish, with the server's code
    const refused = await s2.evaluate(() => window.livehubClient.publish("typing:started", {},
      "user:s1").then(() => "published", (error) => error.code));
    assert.equal(refused, "forbidden_type");

    // s2 leaves: after the grace period the admin's list drops it
    await s2.context().close();
    await admin.waitForFunction(() => !document.querySelector('#online li[data-user="s2"]'), null,
      {timeout: 120000});
    assert.deepEqual((await online(admin)).sort(), ["boss", "s1"]);
    for (const page of [admin, s1]) assert.deepEqual(page.errors, []);
  });
