// One WebSocket per subscribed topic (GET /<topic>/ws), resumed with since=<last id> after
// any disconnect (a sleeping tab, Wi-Fi, a relay restart), with backoff. Each message is
// handed on once: the store drops ids it already holds.
//
// The cache comes first as one poll (GET /<topic>/json?poll=1&since=all), then the socket
// opens with since=<the poll's last id>, so nothing falls between them: 10,000 cached
// messages are one response parsed at once (measured ~0.45 s in chromium) instead of 10,000
// WebSocket frames (2-4 s on the same box; bench/web_app.py).

import { headers, wsUrl } from "./api.js";

const BACKOFF = { first: 500, factor: 2, cap: 15000 };
const SILENCE_MS = 100000; // no frame (not even a keepalive) for this long: reconnect
const STORED = new Set(["message", "message_clear", "message_delete"]);

export function* backoff({ first, factor, cap } = BACKOFF) {
  let delay = first;
  for (;;) {
    yield delay / 2 + Math.random() * (delay / 2); // jitter over the upper half
    delay = Math.min(cap, delay * factor);
  }
}

export class TopicStream {
  // onEvent(ev, live) for every event; onStatus("connecting"|"open"|"closed", detail)
  constructor(topic, { onEvent, onStatus }) {
    this.topic = topic;
    this.onEvent = onEvent;
    this.onStatus = onStatus || (() => {});
    this.since = "all";
    this.ws = null;
    this.timer = null;
    this.watchdog = null;
    this.stopped = false;
    this.delays = backoff();
    this.opened = 0;
    this.polled = false;
    this.wake = () => {
      if (!this.stopped && !this.ws) this.connect();
    };
  }

  start() {
    window.addEventListener("online", this.wake);
    document.addEventListener("visibilitychange", this.wake);
    this.connect();
    return this;
  }

  stop() {
    this.stopped = true;
    window.removeEventListener("online", this.wake);
    document.removeEventListener("visibilitychange", this.wake);
    clearTimeout(this.timer);
    clearTimeout(this.watchdog);
    if (this.ws && this.ws !== "polling") this.ws.close();
    this.ws = null;
  }

  async connect() {
    clearTimeout(this.timer);
    this.timer = null;
    this.onStatus("connecting");
    if (!this.polled) {
      this.polled = true;
      this.ws = "polling"; // wake() must not open a second connection meanwhile
      try {
        await this.poll();
      } catch (e) {
        console.warn(`poll of ${this.topic}: ${e.message}; the WebSocket replays instead`);
      }
      this.ws = null;
      if (this.stopped) return;
    }
    const ws = new WebSocket(wsUrl(this.topic, this.since));
    this.ws = ws;
    ws.onopen = () => {
      this.delays = backoff();
      this.opened++;
      this.onStatus("open");
      this.feed();
    };
    ws.onmessage = (e) => {
      this.feed();
      this.take(e.data);
    };
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ws = null;
      clearTimeout(this.watchdog);
      if (this.stopped) return;
      const delay = this.delays.next().value;
      this.onStatus("closed", delay);
      this.timer = setTimeout(() => this.connect(), delay);
    };
  }

  take(text) {
    let ev;
    try {
      ev = JSON.parse(text);
    } catch {
      return;
    }
    if (!ev || typeof ev !== "object" || typeof ev.event !== "string") return;
    if (STORED.has(ev.event) && typeof ev.id === "string") this.since = ev.id;
    this.onEvent(ev);
  }

  async poll() {
    const url = `/${encodeURIComponent(this.topic)}/json?poll=1&since=${encodeURIComponent(this.since)}`;
    const resp = await fetch(url, { headers: headers() });
    if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
    const text = await resp.text();
    if (this.stopped) return;
    for (const line of text.split("\n")) if (line) this.take(line);
  }

  feed() {
    clearTimeout(this.watchdog);
    this.watchdog = setTimeout(() => this.ws && this.ws.close(), SILENCE_MS);
  }
}
