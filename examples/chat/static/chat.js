// The chat page: pick a name and a room, then talk over one WebSocket that reconnects
// with exponential backoff (and jitter) whenever the server goes away.
"use strict";

const $ = (id) => document.getElementById(id);
const roomMatch = location.pathname.match(/^\/rooms\/([-a-zA-Z0-9_]+)\/$/);
const room = roomMatch ? roomMatch[1] : null;
const params = new URLSearchParams(location.search);
let myName = params.get("name") || localStorage.getItem("kanal-chat-name") || "";

const BACKOFF_START_MS = 500;
const BACKOFF_MAX_MS = 10000;
let backoff = BACKOFF_START_MS;
let socket = null;
let welcomed = false;

// Recovery (docs/history.md): every line and notice of the room carries its position
// ("<epoch>:<offset>"); the page keeps the last one and reconnects with ?since= it, and the
// server first writes what was sent meanwhile, each line once.
let lastPosition = null;

function remember(event) {
  if (typeof event.position !== "string") return;
  const cut = event.position.lastIndexOf(":");
  const seen = { epoch: event.position.slice(0, cut), offset: Number(event.position.slice(cut + 1)) };
  // A new epoch (the room's history was lost) replaces the old one; within one, the latest.
  if (!lastPosition || lastPosition.epoch !== seen.epoch || seen.offset > lastPosition.offset) {
    lastPosition = seen;
  }
}

function sinceParameter() {
  return lastPosition ? `&since=${encodeURIComponent(`${lastPosition.epoch}:${lastPosition.offset}`)}` : "";
}

function setStatus(kind, text) {
  const status = $("status");
  status.className = `status ${kind}`;
  status.textContent = text;
  const online = kind === "online";
  $("message-input").disabled = !online;
  $("send").disabled = !online;
}

function addLine(className, parts) {
  const list = $("messages");
  const item = document.createElement("li");
  item.className = className;
  for (const [cls, text] of parts) {
    const span = document.createElement("span");
    span.className = cls;
    span.textContent = text; // never innerHTML: names and lines come from other users
    item.appendChild(span);
  }
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  list.appendChild(item);
  if (atBottom) list.scrollTop = list.scrollHeight;
}

function clock(seconds) {
  const date = seconds ? new Date(seconds * 1000) : new Date();
  return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function onEvent(event) {
  remember(event);
  switch (event.kind) {
    case "welcome": {
      const again = welcomed;
      welcomed = true;
      myName = event.name;
      const text = again ? `Reconnected as ${event.name}.` : `You are ${event.name} in #${event.room}.`;
      addLine("notice", [["time", clock()], ["text", text]]);
      break;
    }
    case "message":
      addLine(event.name === myName ? "message mine" : "message",
        [["time", clock(event.time)], ["name", event.name], ["text", event.text]]);
      break;
    case "join":
    case "leave": {
      // Several people within a moment come as one notice: "names" (the first few) and "count".
      const names = event.names ? event.names.filter((name) => name !== myName) : [event.name];
      if (!event.names && event.name === myName && event.kind === "join") break;
      const others = event.names ? event.count - event.names.length : 0;
      if (!names.length && !others) break;
      const who = names.join(", ") + (others > 0 ? ` and ${others} others` : "");
      addLine("notice", [["time", clock()], ["text", `${who} ${event.kind === "join" ? "joined" : "left"}`]]);
      break;
    }
    case "error":
      addLine("error", [["text", event.error]]);
      break;
    case "unavailable":
      addLine("error", [["time", clock()], ["text", event.error]]);
      break;
    case "missed":
      addLine("error", [["time", clock()], ["text", "Some lines sent while you were away are no longer kept."]]);
      break;
  }
}

// Who is online: name -> {connection: meta}, from the snapshot sent on connecting and the
// presence diffs after it (a diff's leaves first, then its joins).
let present = {};

function applyPresenceDiff(diff) {
  for (const [name, refs] of Object.entries(diff.leaves)) {
    for (const ref of Object.keys(refs)) delete (present[name] || {})[ref];
    if (present[name] && !Object.keys(present[name]).length) delete present[name];
  }
  for (const [name, refs] of Object.entries(diff.joins)) {
    present[name] = Object.assign(present[name] || {}, refs);
  }
  renderOnline();
}

function renderOnline() {
  const list = $("online-list");
  list.replaceChildren();
  for (const name of Object.keys(present).sort()) {
    const item = document.createElement("li");
    // One line per name however many tabs it has open (a crashed server's connections
    // linger until their presence lapses: counting them would show ghosts meanwhile).
    const tabs = Object.keys(present[name]).length;
    item.textContent = name;
    item.title = tabs > 1 ? `${tabs} connections` : "1 connection";
    if (name === myName) item.className = "me";
    list.appendChild(item);
  }
  $("online-count").textContent = String(Object.keys(present).length);
}

function onFrame(data) {
  const event = JSON.parse(data);
  if (event.type === "presence.diff") applyPresenceDiff(event);
  else if (event.kind === "presence") { present = event.state; renderOnline(); }
  else onEvent(event);
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const url = `${scheme}://${location.host}/ws/chat/${room}/?name=${encodeURIComponent(myName)}&presence=1${sinceParameter()}`;
  setStatus("connecting", "connecting…");
  socket = new WebSocket(url);
  socket.onopen = () => {
    backoff = BACKOFF_START_MS;
    setStatus("online", "online");
  };
  socket.onmessage = (message) => onFrame(message.data);
  socket.onclose = () => {
    // Full jitter keeps a restarted server from being hit by every tab at the same moment.
    const delay = Math.round(backoff / 2 + Math.random() * backoff / 2);
    backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
    setStatus("offline", `offline, retrying in ${(delay / 1000).toFixed(1)} s`);
    setTimeout(connect, delay);
  };
}

$("send-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = $("message-input");
  const text = input.value.trim();
  if (text && socket && socket.readyState === WebSocket.OPEN) {
    socket.send(JSON.stringify({ text }));
    input.value = "";
  }
});

$("join-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const name = $("name-input").value.trim();
  const target = $("room-input").value.trim() || "lobby";
  localStorage.setItem("kanal-chat-name", name);
  location.href = `/rooms/${encodeURIComponent(target)}/`;
});

if (room && myName) {
  $("room-label").textContent = `#${room}`;
  $("chat").hidden = false;
  $("online").hidden = false;
  connect();
  $("message-input").focus();
} else {
  $("join-form").hidden = false;
  $("name-input").value = myName;
  if (room) $("room-input").value = room;
  setStatus("offline", "not connected");
}
