// One WebSocket per subscribed topic (GET /<topic>/ws), resumed with since=<last id> after
// any disconnect (a sleeping tab, Wi-Fi, a relay restart), with backoff. Each message is
// handed on once: the store drops ids it already holds.

import { wsUrl } from "./api.js";

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
    if (this.ws) this.ws.close();
    this.ws = null;
  }

  connect() {
    clearTimeout(this.timer);
    this.timer = null;
    this.onStatus("connecting");
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
      let ev;
      try {
        ev = JSON.parse(e.data);
      } catch {
        return;
      }
      if (!ev || typeof ev !== "object" || typeof ev.event !== "string") return;
      if (STORED.has(ev.event) && typeof ev.id === "string") this.since = ev.id;
      this.onEvent(ev);
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

  feed() {
    clearTimeout(this.watchdog);
    this.watchdog = setTimeout(() => this.ws && this.ws.close(), SILENCE_MS);
  }
}
