// The livehub dashboard (docs/CLIENT.md): live stream, Live/Polling/Offline badge, toasts, sound,
// notification centre with unread count, per-type preferences (localStorage), hub metrics, and a
// sign-in: the dev login (a short-lived token from the websocket sink, loopback only, when its
// dev_login option is on) or a pasted token.
// URL parameters: ns=client|admin, token=<jwt>, poll=<polling sink URL> (default: this host,
// port 8081; poll=none for no fallback), ws=<websocket sink URL> (default: this page's origin).
import {connect, matches, tokenClaims, describeEvent} from "./livehub.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const ns = params.get("ns") === "admin" ? "admin" : "client";
const TOKEN_KEY = `livehub.token.${ns}`, DEV_KEY = `livehub.dev.${ns}`;
if (params.get("token")) {
  localStorage.setItem(TOKEN_KEY, params.get("token"));
  localStorage.removeItem(DEV_KEY);
}
const pollParam = params.get("poll");
const pollUrl = pollParam === "none" ? undefined
  : (pollParam || `${location.protocol}//${location.hostname}:8081`);
const wsUrl = params.get("ws") || undefined;
const LABELS = {live: "Live", polling: "Polling", offline: "Offline"};
const PREFS_KEY = "livehub.prefs";
const DEFAULT_PREFS = [{pattern: "assignment:*", toast: true, sound: true},
  {pattern: "signal:*", toast: true, sound: false},
  {pattern: "connection:*", toast: true, sound: false},
  {pattern: "sync:error", toast: true, sound: true},
  {pattern: "sync:recovered", toast: true, sound: false},
  {pattern: "admin:*", toast: true, sound: false},
  {pattern: "demo:*", toast: true, sound: false}];

let prefs = JSON.parse(localStorage.getItem(PREFS_KEY) || "null") || DEFAULT_PREFS;
const history = [];
let unread = 0;
window.livehubSeen = [];  // every delivered event id, for tests and debugging

/** A dev-login token for {sub, role} from this sink; throws with the sink's reason. */
async function devToken(who) {
  const query = new URLSearchParams({sub: who.sub, role: who.role});
  const response = await fetch(`/dev/token?${query}`, {cache: "no-store"});
  const body = await response.json().catch(() => ({}));
  if (!response.ok || !body.token) throw new Error(body.message || `HTTP ${response.status}`);
  return body.token;
}

function showLoginError(text) {
  $("login-error").textContent = text;
  $("login-error").hidden = !text;
}

const devWho = JSON.parse(localStorage.getItem(DEV_KEY) || "null");
let token = localStorage.getItem(TOKEN_KEY) || "";
if (devWho) {
  try {
    token = await devToken(devWho);
  } catch (error) {
    token = "";
    showLoginError(`Dev login failed: ${error.message}`);
  }
}
const claims = token ? tokenClaims(token) : null;
const whoText = !claims ? "anonymous"
  : claims.role === "admin" ? (claims.sub === "admin" ? "Admin" : `Admin ${claims.sub}`)
    : `Client user ${claims.sub} (${claims.role})`;

$(`view-${ns}`).classList.add("active");
$("f-ns").textContent = ns;
$("who").textContent = claims ? whoText : "anonymous · public events";
$("who-name").textContent = whoText + (devWho && claims ? " · dev login" : "");
$("sign-out").hidden = !token && !devWho;
$("token").value = devWho ? "" : token;
if (ns === "admin" && !token) {
  $("empty").textContent = "The admin view needs a sign-in: choose Admin in the Sign in card, " +
    "or paste an admin token.";
}

const hub = connect({url: wsUrl, pollUrl, namespace: ns, token: token || undefined,
  getToken: devWho ? () => devToken(devWho) : undefined});  // also retries a failed dev login
window.livehubClient = hub;

function setBadge(state) {
  $("badge").dataset.state = state;
  $("badge-text").textContent = LABELS[state];
  $("f-transport").textContent = state === "live" ? "WebSocket" : state === "polling" ? "HTTP long poll" : "none (retrying)";
  $("f-role").textContent = hub.role === "follower" ? "shares another tab's connection" : "holds the connection";
}
setBadge(hub.state);
hub.on("$state", setBadge);

function summary(data) {
  if (data === null || data === undefined) return "";
  const text = typeof data === "string" ? data : JSON.stringify(data);
  return text.length > 300 ? text.slice(0, 300) + "…" : text;
}

function pref(type) {
  return prefs.find((p) => matches(p.pattern, type));
}

function timeOf(event) {
  return new Date(event.ts ? event.ts / 1000 : Date.now()).toLocaleTimeString();
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function addToStream(event) {
  $("empty").hidden = true;
  const li = element("li", "event fresh");
  li.dataset.id = event.id;
  li.dataset.type = event.type;
  const body = element("span", "ev-type", event.type);
  body.appendChild(element("span", "ev-data", summary(event.data)));
  li.append(element("span", "ev-id", `#${event.id}`), body, element("span", "ev-time", timeOf(event)));
  const stream = $("stream");
  stream.prepend(li);
  while (stream.children.length > 500) stream.lastChild.remove();
}

// A burst of one type shows as one toast with the newest text and a count, not a wall of toasts.
function toast(event, text) {
  const same = [...$("toasts").children].find((div) => div.dataset.type === event.type);
  const count = same ? Number(same.dataset.count) + 1 : 1;
  if (same) {
    clearTimeout(Number(same.dataset.timer));
    same.remove();
  }
  const div = element("div", same ? "toast again" : "toast");
  div.dataset.id = event.id;
  div.dataset.type = event.type;
  div.dataset.count = String(count);
  div.setAttribute("role", "status");
  const close = element("button", "toast-close", "×");
  close.setAttribute("aria-label", "dismiss");
  close.addEventListener("click", () => div.remove());
  div.append(element("b", "toast-title", text.title), close);
  if (text.body) div.append(element("span", "toast-body", text.body));
  div.append(element("span", "toast-meta",
    `${event.type} · ${timeOf(event)}${count > 1 ? ` · ${count} events` : ""}`));
  $("toasts").prepend(div);
  while ($("toasts").children.length > 4) $("toasts").lastChild.remove();
  div.dataset.timer = String(setTimeout(() => div.remove(), 6000));
}

// Sound. Browsers start audio only from a user gesture, so the AudioContext is made in one (the
// sound button, or the first click or key on the page once sound was turned on before); until
// then the button says "Enable sound" and nothing tries to play, so no autoplay error either.
let soundOn = localStorage.getItem("livehub.sound") === "on";
let audio = null;

function unlockAudio() {
  const Context = window.AudioContext || window.webkitAudioContext;
  if (!Context) return;
  audio = audio || new Context();
  if (audio.state !== "running") audio.resume().then(renderSound, () => {});
}

function audible() {
  return soundOn && audio !== null && audio.state === "running";
}

/** Plays a tone ("chime": two rising notes, "ping": one) when sound is on and unlocked. */
function playTone(tone) {
  if (!audible()) return false;
  const notes = tone === "chime" ? [660, 880] : [880];
  notes.forEach((frequency, index) => {
    const start = audio.currentTime + index * 0.14;
    const osc = audio.createOscillator(), gain = audio.createGain();
    osc.type = "sine";
    osc.frequency.value = frequency;
    gain.gain.setValueAtTime(0.0001, start);
    gain.gain.exponentialRampToValueAtTime(0.2, start + 0.02);
    gain.gain.exponentialRampToValueAtTime(0.0001, start + 0.35);
    osc.connect(gain).connect(audio.destination);
    osc.start(start);
    osc.stop(start + 0.4);
  });
  return true;
}

const SPEAKER = '<svg width="16" height="16" viewBox="0 0 24 24" fill="none" stroke="currentColor" ' +
  'stroke-width="2" stroke-linecap="round" stroke-linejoin="round" aria-hidden="true">' +
  '<path d="M11 5 6 9H2v6h4l5 4z"/>';
function renderSound() {
  const state = !soundOn ? "off" : audible() ? "on" : "locked";
  const button = $("sound");
  button.dataset.sound = state;
  button.setAttribute("aria-pressed", String(state === "on"));
  button.title = {off: "Sound is off: click to play a sound with toasts",
    locked: "The browser needs a click before it plays sound", on: "Sound is on: click to mute"}[state];
  $("sound-text").textContent = {off: "Sound off", locked: "Enable sound", on: "Sound on"}[state];
  button.querySelector(".sound-icon").innerHTML = SPEAKER + (state === "on"
    ? '<path d="M15.5 8.5a5 5 0 0 1 0 7"/><path d="M19 5a10 10 0 0 1 0 14"/>'
    : '<path d="m22 9-6 6"/><path d="m16 9 6 6"/>') + "</svg>";
}
$("sound").addEventListener("click", () => {
  if (audible()) {
    soundOn = false;
  } else {
    soundOn = true;
    unlockAudio();
    if (audio) audio.resume().then(() => { renderSound(); playTone("ping"); }, () => {});
  }
  localStorage.setItem("livehub.sound", soundOn ? "on" : "off");
  renderSound();
});
// a stored "on" needs a first gesture on the page to unlock audio
for (const name of ["pointerdown", "keydown"]) {
  document.addEventListener(name, (e) => {
    if (soundOn && !audible() && !$("sound").contains(e.target)) unlockAudio();
  }, {capture: true});
}
renderSound();

function renderUnread() {
  $("unread").hidden = unread === 0;
  $("unread").textContent = unread > 99 ? "99+" : String(unread);
}

function notify(event, text) {
  history.unshift({event, text, read: !$("center").hidden});
  if (history.length > 200) history.pop();
  if ($("center").hidden) unread++;
  renderUnread();
  renderHistory();
}

function renderHistory() {
  const list = $("history");
  if (!history.length) {
    list.replaceChildren(element("li", "history-empty", "Nothing yet: toasts land here too."));
    return;
  }
  list.replaceChildren(...history.map(({event, text, read}) => {
    const li = element("li", read ? "" : "unread-item");
    li.dataset.id = event.id;
    li.append(element("b", "", text.title));
    if (text.body) li.append(element("span", "history-body", text.body));
    li.append(element("span", "toast-meta", `${event.type} · #${event.id} · ${timeOf(event)}`));
    return li;
  }));
}
renderHistory();

hub.on("$event", (event) => {
  window.livehubSeen.push(event.id);
  $("f-last").textContent = String(hub.lastId);
  if (event.type.startsWith("presence:") || event.type.startsWith("typing:")) return;  // the Online card
  if (event.type === "metrics:update") {
    showMetrics(event.data || {});
    return;
  }
  addToStream(event);
  const p = pref(event.type);
  if (!p || !(p.toast || p.sound)) return;
  const text = describeEvent(event);
  notify(event, text);
  if (p.toast) toast(event, text);
  if (p.sound) playTone(text.tone);
});

hub.on("$reset", () => {
  const li = document.createElement("li");
  li.className = "event";
  li.textContent = "— the hub could not resume this stream: data refetched —";
  $("stream").prepend(li);
});

function showMetrics(data) {
  $("metrics").hidden = false;
  $("m-eps").textContent = data.events_per_second !== undefined ? Number(data.events_per_second).toFixed(1) : "–";
  const c = data.connections || {};
  const total = (c.websocket || 0) + (c.sse || 0) + (c.long_poll || 0);
  $("m-conn").textContent = String(total);
  $("m-last").textContent = data.last_id !== undefined ? String(data.last_id) : "–";
}
if (ns === "admin") $("metrics").hidden = false;

$("bell").addEventListener("click", () => {
  const open = $("center").hidden;
  $("center").hidden = !open;
  $("bell").setAttribute("aria-expanded", String(open));
  if (open) { unread = 0; renderUnread(); }
  else { history.forEach((h) => { h.read = true; }); renderHistory(); }
});
$("mark-read").addEventListener("click", () => {
  history.forEach((h) => { h.read = true; });
  unread = 0; renderUnread(); renderHistory();
});
$("clear").addEventListener("click", () => { $("stream").replaceChildren(); $("empty").hidden = false; });

function savePrefs() { localStorage.setItem(PREFS_KEY, JSON.stringify(prefs)); renderPrefs(); }
function renderPrefs() {
  const body = $("prefs").querySelector("tbody");
  body.replaceChildren(...prefs.map((p, index) => {
    const tr = document.createElement("tr");
    const name = document.createElement("td"); name.textContent = p.pattern;
    tr.append(name);
    for (const key of ["toast", "sound"]) {
      const td = document.createElement("td");
      const box = document.createElement("input");
      box.type = "checkbox"; box.checked = !!p[key];
      box.setAttribute("aria-label", `${key} for ${p.pattern}`);
      box.addEventListener("change", () => { p[key] = box.checked; savePrefs(); });
      td.append(box); tr.append(td);
    }
    const td = document.createElement("td");
    const remove = document.createElement("button");
    remove.className = "remove"; remove.textContent = "✕"; remove.title = "remove";
    remove.addEventListener("click", () => { prefs.splice(index, 1); savePrefs(); });
    td.append(remove); tr.append(td);
    return tr;
  }));
}
$("pref-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const pattern = $("pref-pattern").value.trim();
  if (pattern) { prefs.push({pattern, toast: true, sound: false}); $("pref-pattern").value = ""; savePrefs(); }
});
renderPrefs();

function reopen(view) {
  const url = new URL(location.href);
  url.searchParams.delete("token");
  url.searchParams.set("ns", view);
  location.href = url.toString();
}

async function devLogin(view, who) {
  showLoginError("");
  try {
    await devToken(who);  // refused (off, not loopback, no secret): say why and stay
  } catch (error) {
    showLoginError(`Dev login refused: ${error.message}`);
    return;
  }
  localStorage.setItem(`livehub.dev.${view}`, JSON.stringify(who));
  localStorage.removeItem(`livehub.token.${view}`);
  reopen(view);
}
$("login-admin").addEventListener("click", () => devLogin("admin", {sub: "admin", role: "admin"}));
$("login-client").addEventListener("click", () => {
  const sub = $("login-sub").value.trim();
  if (!/^[A-Za-z0-9_.@-]{1,32}$/.test(sub)) {
    showLoginError("A user id is 1 to 32 letters, digits or _ . @ -");
    return;
  }
  devLogin("client", {sub, role: "startup"});
});
$("sign-out").addEventListener("click", () => {
  localStorage.removeItem(TOKEN_KEY);
  localStorage.removeItem(DEV_KEY);
  reopen(ns);
});
$("token-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const value = $("token").value.trim();
  const pasted = value ? tokenClaims(value) : null;
  if (value && !pasted) {
    showLoginError("That is not a token (a JWT has three dot-separated parts).");
    return;
  }
  const view = pasted ? (pasted.role === "admin" ? "admin" : "client") : ns;
  localStorage.removeItem(`livehub.dev.${view}`);
  if (value) localStorage.setItem(`livehub.token.${view}`, value);
  else localStorage.removeItem(`livehub.token.${view}`);
  reopen(view);
});

// ---- presence: who is online, who is typing (docs/PRESENCE.md) --------------------------------

function transports(connections) {
  return Object.entries(connections || {}).map(([via, count]) => (count > 1 ? `${via} ×${count}` : via))
    .join(", ");
}

function renderOnline() {
  const users = hub.presence.list().sort((a, b) => a.user.localeCompare(b.user));
  $("online").replaceChildren(...users.map((entry) => {
    const li = element("li", "", `${entry.role === "admin" ? "Admin" : "User"} ${entry.user}`);
    li.dataset.user = entry.user;
    li.append(element("span", "via", transports(entry.connections)));
    return li;
  }));
  $("online-count").textContent = users.length ? `${users.length} online` : "nobody";
}

const typing = new Map();  // user id -> timer: typing:started shows until stopped, or 8 s
function renderTyping() {
  const names = [...typing.keys()];
  $("typing").hidden = !names.length;
  $("typing").textContent = !names.length ? ""
    : `${names.join(", ")} ${names.length > 1 ? "are" : "is"} typing…`;
}

hub.on("typing:*", (data, event) => {
  const who = event.src && event.src.startsWith("user:") ? event.src.slice(5) : null;
  if (!who || (claims && who === String(claims.sub))) return;
  clearTimeout(typing.get(who));
  if (event.type === "typing:started") {
    typing.set(who, setTimeout(() => { typing.delete(who); renderTyping(); }, 8000));
  } else {
    typing.delete(who);
  }
  renderTyping();
});

if (claims) {
  $("presence").hidden = false;
  hub.presence.on(renderOnline);
  renderOnline();
}

// An admin writing to a client user: the user's page shows "… is typing" meanwhile.
if (claims && claims.role === "admin") {
  $("compose").hidden = false;
  let sentAt = 0, idle = null, to = null;
  const stop = () => {
    clearTimeout(idle);
    if (to) hub.publish("typing:stopped", {}, to).catch(() => {});
    to = null;
    sentAt = 0;
  };
  $("compose-text").addEventListener("input", () => {
    const user = $("compose-to").value.trim();
    if (!user) return;
    if (to && to !== `user:${user}`) stop();
    to = `user:${user}`;
    if (Date.now() - sentAt > 3000) {  // within the server's rate limit
      sentAt = Date.now();
      hub.publish("typing:started", {}, to).catch((error) => showLoginError(`Typing: ${error.message}`));
    }
    clearTimeout(idle);
    idle = setTimeout(stop, 2500);
  });
  $("compose-text").addEventListener("blur", stop);
  $("compose").addEventListener("submit", (event) => { event.preventDefault(); stop(); });
}
