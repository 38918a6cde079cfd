// The page's live state: one TopicStream per subscribed topic feeding the store, and the
// events pages listen to on store.bus:
//   "messages" {topic, added: [msg...], fresh: [msg...]}  batched, at most one per task
//   "change"   {topic}                                      messages removed or replaced
//   "read"     {topic, ids}                                 (from store.js)
//   "status"   {topic, state}                               a stream's connection state
//   "topics"                                                subscriptions changed

import * as api from "./api.js";
import { TopicStream } from "./live.js";
import * as notify from "./notify.js";
import * as store from "./store.js";

const streams = new Map();
const states = new Map();
const pending = new Map(); // topic -> {added, fresh}
let flushTimer = null;
const FRESH_SLACK = 5; // s: a message this much older than the stream's start is history

export let onNotificationClick = null;
export function setNotificationClick(fn) {
  onNotificationClick = fn;
}

function emit(name, detail) {
  store.bus.dispatchEvent(new CustomEvent(name, { detail }));
}

export function status(topic) {
  return states.get(topic) || "closed";
}

const SHOWN = { open: "live", connecting: "connecting…", closed: "reconnecting…" };

// a stream's state in words for the page
export function statusText(topic) {
  return SHOWN[status(topic)];
}

function queue(topic, msg, fresh) {
  let p = pending.get(topic);
  if (!p) pending.set(topic, (p = { topic, added: [], fresh: [] }));
  p.added.push(msg);
  if (fresh) p.fresh.push(msg);
  if (flushTimer === null) flushTimer = setTimeout(flush, 0);
}

function flush() {
  flushTimer = null;
  const batches = [...pending.values()];
  pending.clear();
  for (const b of batches) {
    emit("messages", b);
    for (const msg of b.fresh.slice(-3)) {
      if (!store.isRead(b.topic, msg)) notifyOf(b.topic, msg);
    }
    announce(b);
  }
}

function notifyOf(topic, msg) {
  const here = location.hash === "#/t/" + encodeURIComponent(topic);
  if (here && document.visibilityState === "visible" && document.hasFocus()) return;
  notify.show(msg, onNotificationClick);
}

function announce(batch) {
  const region = document.getElementById("announce");
  if (!region || batch.fresh.length === 0) return;
  const last = batch.fresh[batch.fresh.length - 1];
  const what = String(last.title || last.message || "").slice(0, 140);
  const n = batch.fresh.length;
  const line = document.createElement("p");
  line.textContent = n === 1
    ? `New message in ${batch.topic}: ${what}`
    : `${n} new messages in ${batch.topic}, the last: ${what}`;
  region.append(line);
  while (region.childElementCount > 3) region.firstElementChild.remove();
}

function onEvent(topic, stream, ev) {
  const msgs = store.of(topic);
  switch (ev.event) {
    case "message": {
      if (msgs.add(ev)) queue(topic, ev, ev.time >= stream.startedAt - FRESH_SLACK);
      break;
    }
    case "message_delete": {
      const id = ev.sequence_id && msgs.bySequence.get(ev.sequence_id);
      if (id) {
        msgs.remove(id);
        emit("change", { topic });
      }
      break;
    }
    case "message_clear": {
      const id = ev.sequence_id && msgs.bySequence.get(ev.sequence_id);
      if (id) store.markRead(topic, [id]);
      break;
    }
    case "message_state": {
      // the sync API's event: another device of this user read (or clicked) a message
      const target = [ev.message_id, ev.target, ev.ref].find((x) => typeof x === "string");
      if (target && ["read", "clicked", "dismissed"].includes(ev.state)) store.markRead(topic, [target]);
      break;
    }
    default:
      break; // open, keepalive, poll_request
  }
}

function start(topic) {
  if (streams.has(topic)) return;
  const stream = new TopicStream(topic, {
    onEvent: (ev) => onEvent(topic, stream, ev),
    onStatus: (state) => {
      states.set(topic, state);
      emit("status", { topic, state });
    },
  });
  stream.startedAt = Date.now() / 1000;
  streams.set(topic, stream);
  stream.start();
}

export function follow(topic) {
  store.subscribe(topic);
  start(topic);
}

export function unfollow(topic) {
  const s = streams.get(topic);
  if (s) s.stop();
  streams.delete(topic);
  states.delete(topic);
  store.unsubscribe(topic);
}

export function startAll() {
  for (const t of store.topics()) start(t);
}

// Marks read here, and on the relay when there is a token (the user's agents see it there).
export function markRead(topic, ids) {
  store.markRead(topic, ids);
  api.markRead(ids).catch((e) => console.warn("receipts:", e.message));
}

export function markAllRead(topic) {
  const ids = store.markAllRead(topic);
  api.markRead(ids).catch((e) => console.warn("receipts:", e.message));
}

export function streamCount() {
  return streams.size;
}
