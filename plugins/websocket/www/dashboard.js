// The livehub dashboard (docs/CLIENT.md): live stream, Live/Polling/Offline badge, toasts, sound,
// notification centre with unread count, per-type preferences (localStorage), hub metrics.
// URL parameters: ns=client|admin, token=<jwt>, poll=<polling sink URL> (default: this host,
// port 8081; poll=none for no fallback), ws=<websocket sink URL> (default: this page's origin).
import {connect, matches, tokenClaims} from "./livehub.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const ns = params.get("ns") === "admin" ? "admin" : "client";
if (params.get("token")) localStorage.setItem(`livehub.token.${ns}`, params.get("token"));
const token = localStorage.getItem(`livehub.token.${ns}`) || "";
const pollParam = params.get("poll");
const pollUrl = pollParam === "none" ? undefined
  : (pollParam || `${location.protocol}//${location.hostname}:8081`);
const wsUrl = params.get("ws") || undefined;
const LABELS = {live: "Live", polling: "Polling", offline: "Offline"};
const PREFS_KEY = "livehub.prefs";
const DEFAULT_PREFS = [{pattern: "assignment:*", toast: true, sound: true},
  {pattern: "signal:*", toast: true, sound: false},
  {pattern: "connection:*", toast: true, sound: false},
  {pattern: "admin:*", toast: true, sound: false},
  {pattern: "demo:*", toast: true, sound: false}];

let prefs = JSON.parse(localStorage.getItem(PREFS_KEY) || "null") || DEFAULT_PREFS;
const history = [];
let unread = 0;
let audio = null;
let soundOn = localStorage.getItem("livehub.sound") === "on";
window.livehubSeen = [];  // every delivered event id, for tests and debugging

$(`view-${ns}`).classList.add("active");
$("f-ns").textContent = ns;
const claims = token ? tokenClaims(token) : null;
$("who").textContent = claims ? `${claims.role} · ${claims.sub}` : "anonymous · public events";
$("token").value = token;

const hub = connect({url: wsUrl, pollUrl, namespace: ns, token: token || undefined});
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

function addToStream(event) {
  $("empty").hidden = true;
  const li = document.createElement("li");
  li.className = "event fresh";
  li.dataset.id = event.id;
  li.dataset.type = event.type;
  const id = document.createElement("span"); id.className = "ev-id"; id.textContent = `#${event.id}`;
  const body = document.createElement("span"); body.className = "ev-type"; body.textContent = event.type;
  const data = document.createElement("span"); data.className = "ev-data"; data.textContent = summary(event.data);
  body.appendChild(data);
  const time = document.createElement("span"); time.className = "ev-time";
  time.textContent = new Date(event.ts ? event.ts / 1000 : Date.now()).toLocaleTimeString();
  li.append(id, body, time);
  const stream = $("stream");
  stream.prepend(li);
  while (stream.children.length > 500) stream.lastChild.remove();
}

function toast(event) {
  const div = document.createElement("div");
  div.className = "toast";
  div.dataset.id = event.id;
  const title = document.createElement("b"); title.textContent = event.type;
  const text = document.createElement("span"); text.textContent = summary(event.data);
  div.append(title, text);
  $("toasts").prepend(div);
  while ($("toasts").children.length > 4) $("toasts").lastChild.remove();
  setTimeout(() => div.remove(), 6000);
}

function beep() {
  if (!soundOn || !audio || audio.state !== "running") return;
  const osc = audio.createOscillator(), gain = audio.createGain();
  osc.frequency.value = 880;
  gain.gain.setValueAtTime(0.15, audio.currentTime);
  gain.gain.exponentialRampToValueAtTime(0.001, audio.currentTime + 0.3);
  osc.connect(gain).connect(audio.destination);
  osc.start(); osc.stop(audio.currentTime + 0.3);
}

function renderUnread() {
  $("unread").hidden = unread === 0;
  $("unread").textContent = unread > 99 ? "99+" : String(unread);
}

function notify(event) {
  history.unshift({event, read: !$("center").hidden});
  if (history.length > 200) history.pop();
  if ($("center").hidden) unread++;
  renderUnread();
  renderHistory();
}

function renderHistory() {
  const list = $("history");
  list.replaceChildren(...history.map(({event, read}) => {
    const li = document.createElement("li");
    if (!read) li.className = "unread-item";
    li.textContent = `#${event.id} ${event.type} ${summary(event.data)}`;
    return li;
  }));
}

hub.on("$event", (event) => {
  window.livehubSeen.push(event.id);
  $("f-last").textContent = String(hub.lastId);
  if (event.type === "metrics:update") {
    showMetrics(event.data || {});
    return;
  }
  addToStream(event);
  const p = pref(event.type);
  if (p && (p.toast || p.sound)) notify(event);
  if (p && p.toast) toast(event);
  if (p && p.sound) beep();
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

// sound: browsers start audio only after a user gesture, so the button is that gesture
function renderSound() {
  $("sound").innerHTML = '<svg width="18" height="18" viewBox="0 0 24 24" fill="none" stroke="currentColor" ' +
    'stroke-width="2" stroke-linecap="round" stroke-linejoin="round" aria-hidden="true">' +
    '<path d="M11 5 6 9H2v6h4l5 4z"/>' + (soundOn
    ? '<path d="M15.5 8.5a5 5 0 0 1 0 7"/><path d="M19 5a10 10 0 0 1 0 14"/>'
    : '<path d="m22 9-6 6"/><path d="m16 9 6 6"/>') + "</svg>";
  $("sound").setAttribute("aria-pressed", String(soundOn));
}
$("sound").addEventListener("click", async () => {
  soundOn = !soundOn;
  localStorage.setItem("livehub.sound", soundOn ? "on" : "off");
  if (soundOn) {
    audio = audio || new (window.AudioContext || window.webkitAudioContext)();
    try { await audio.resume(); } catch (error) { /* still locked */ }
  }
  renderSound();
});
// a stored "on" needs any first gesture on the page to unlock audio
document.addEventListener("pointerdown", () => {
  if (soundOn && !audio) { audio = new (window.AudioContext || window.webkitAudioContext)(); audio.resume(); }
}, {once: true});
renderSound();

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

$("token-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const value = $("token").value.trim();
  if (value) localStorage.setItem(`livehub.token.${ns}`, value);
  else localStorage.removeItem(`livehub.token.${ns}`);
  const url = new URL(location.href);
  url.searchParams.delete("token");
  location.href = url.toString();
});
