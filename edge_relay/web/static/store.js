// What the page knows: the subscribed topics (localStorage), each topic's messages (memory,
// deduplicated by id), and which of them the user has read (localStorage).
//
// Read state per topic is a watermark time (everything at or before it is read) plus the ids
// read after it, so "mark all read" on 10,000 messages stores one number.

const TOPICS_KEY = "edgepush.topics";
const READ_PREFIX = "edgepush.read.";
const MAX_READ_IDS = 2000;

export const bus = new EventTarget();

function load(key, fallback) {
  try {
    const v = JSON.parse(localStorage.getItem(key));
    return v === null ? fallback : v;
  } catch {
    return fallback;
  }
}

export function topics() {
  const list = load(TOPICS_KEY, []);
  return Array.isArray(list) ? list.filter((t) => typeof t === "string") : [];
}

export const TOPIC_RE = /^[-_A-Za-z0-9]{1,64}$/;

export function subscribe(topic) {
  const list = topics();
  if (!list.includes(topic)) {
    list.push(topic);
    localStorage.setItem(TOPICS_KEY, JSON.stringify(list));
    // a new subscription starts with the cache read: unread means "arrived since" (times
    // are whole seconds: one published in this second is new)
    saveRead(topic, { upto: Math.floor(Date.now() / 1000) - 1, ids: [] });
    readCache.delete(topic);
    bus.dispatchEvent(new CustomEvent("topics"));
  }
}

export function unsubscribe(topic) {
  localStorage.setItem(TOPICS_KEY, JSON.stringify(topics().filter((t) => t !== topic)));
  localStorage.removeItem(READ_PREFIX + topic);
  readCache.delete(topic);
  messages.delete(topic);
  bus.dispatchEvent(new CustomEvent("topics"));
}

// --- messages -------------------------------------------------------------------------

class TopicMessages {
  constructor() {
    this.byId = new Map();
    this.list = []; // oldest first
    this.bySequence = new Map();
  }

  // Adds a message; false for one already held (a replay after a reconnect).
  add(msg) {
    if (this.byId.has(msg.id)) return false;
    const seq = msg.sequence_id;
    if (seq && this.bySequence.has(seq)) this.remove(this.bySequence.get(seq));
    this.byId.set(msg.id, msg);
    if (seq) this.bySequence.set(seq, msg.id);
    const list = this.list;
    if (list.length === 0 || list[list.length - 1].time <= msg.time) list.push(msg);
    else {
      let i = list.length - 1;
      while (i > 0 && list[i - 1].time > msg.time) i--;
      list.splice(i, 0, msg);
    }
    return true;
  }

  remove(id) {
    const msg = this.byId.get(id);
    if (!msg) return;
    this.byId.delete(id);
    if (msg.sequence_id && this.bySequence.get(msg.sequence_id) === id) {
      this.bySequence.delete(msg.sequence_id);
    }
    const i = this.list.indexOf(msg);
    if (i >= 0) this.list.splice(i, 1);
  }
}

const messages = new Map();

export function of(topic) {
  let m = messages.get(topic);
  if (!m) {
    m = new TopicMessages();
    messages.set(topic, m);
  }
  return m;
}

// --- read state -----------------------------------------------------------------------

function readState(topic) {
  const r = load(READ_PREFIX + topic, null);
  if (!r || typeof r.upto !== "number" || !Array.isArray(r.ids)) return { upto: 0, ids: [] };
  return r;
}

function saveRead(topic, r) {
  localStorage.setItem(READ_PREFIX + topic, JSON.stringify(r));
}

const readCache = new Map();

function reads(topic) {
  let c = readCache.get(topic);
  if (!c) {
    const r = readState(topic);
    c = { upto: r.upto, ids: new Set(r.ids) };
    readCache.set(topic, c);
  }
  return c;
}

export function isRead(topic, msg) {
  const r = reads(topic);
  return msg.time <= r.upto || r.ids.has(msg.id);
}

export function markRead(topic, ids) {
  const r = reads(topic);
  let changed = false;
  for (const id of ids) {
    const msg = of(topic).byId.get(id);
    if (!msg || isRead(topic, msg)) continue;
    r.ids.add(id);
    changed = true;
  }
  if (!changed) return false;
  if (r.ids.size > MAX_READ_IDS) r.ids = new Set([...r.ids].slice(-MAX_READ_IDS));
  saveRead(topic, { upto: r.upto, ids: [...r.ids] });
  bus.dispatchEvent(new CustomEvent("read", { detail: { topic, ids } }));
  return true;
}

export function markAllRead(topic) {
  const list = of(topic).list;
  const unread = list.filter((m) => !isRead(topic, m)).map((m) => m.id);
  const r = reads(topic);
  r.upto = Math.max(r.upto, list.length ? list[list.length - 1].time : 0);
  r.ids = new Set();
  saveRead(topic, { upto: r.upto, ids: [] });
  bus.dispatchEvent(new CustomEvent("read", { detail: { topic, ids: unread } }));
  return unread;
}

export function unread(topic) {
  let n = 0;
  const list = of(topic).list;
  const r = reads(topic);
  for (let i = list.length - 1; i >= 0; i--) {
    const m = list[i];
    if (m.time <= r.upto) break; // oldest first: everything before is read
    if (!r.ids.has(m.id)) n++;
  }
  return n;
}

export function totalUnread() {
  return topics().reduce((n, t) => n + unread(t), 0);
}
