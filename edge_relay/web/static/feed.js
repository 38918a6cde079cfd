// A topic's messages as a paged list: newest first, PAGE cards at a time (10,000 messages
// are 10,000 objects in memory but never more than PAGE nodes), filtered by search words,
// live messages put on top one by one, and a replay's many batches painted at most once
// each REPAINT_MS.
import * as app from "./app.js";
import { h, messageCard } from "./render.js";
import * as store from "./store.js";

export const PAGE = 50;
const REPAINT_MS = 200;
const BURST_MS = 16; // more than PAGE cards inserted within this: a replay, repaint instead

export function matches(msg, words) {
  const hay = [msg.title, msg.message, ...(Array.isArray(msg.tags) ? msg.tags : [])]
    .filter((x) => typeof x === "string").join("\n").toLowerCase();
  return words.every((w) => hay.includes(w));
}

export class FeedView {
  constructor(topic) {
    this.topic = topic;
    this.msgs = store.of(topic);
    this.page = 0;
    this.words = [];
    this.el = h("div", { class: "feed", role: "feed", "aria-label": `Messages in ${topic}` });
    this.info = h("p", { class: "pageinfo", "aria-live": "polite" });
    this.newer = h("button", { type: "button", class: "quiet", text: "← Newer", onclick: () => this.turn(-1) });
    this.older = h("button", { type: "button", class: "quiet", text: "Older →", onclick: () => this.turn(1) });
    this.pager = h("nav", { class: "pager", "aria-label": "Pages of messages" }, this.newer, this.info, this.older);
    this.timers = { repaint: null, frame: null, burst: null };
    this.lastPaint = 0;
    this.inserted = 0;
  }

  items() {
    return this.words.length ? this.msgs.list.filter((m) => matches(m, this.words)) : this.msgs.list;
  }

  card(m) {
    return messageCard(m, { read: store.isRead(this.topic, m), onRead: (x) => app.markRead(this.topic, [x.id]) });
  }

  search(text) {
    this.words = text.toLowerCase().split(/\s+/).filter(Boolean);
    this.page = 0;
    this.paint();
  }

  turn(by) {
    this.page += by;
    this.paint();
  }

  counts(total, shown) {
    const matching = this.words.length ? " matching" : "";
    this.info.textContent = total ? `${this.page * PAGE + 1}–${this.page * PAGE + shown} of ${total}${matching}` : "";
  }

  paint() {
    const all = this.items();
    const pages = Math.max(1, Math.ceil(all.length / PAGE));
    this.page = Math.max(0, Math.min(this.page, pages - 1));
    const end = all.length - this.page * PAGE;
    const slice = all.slice(Math.max(0, end - PAGE), end).reverse();
    this.el.replaceChildren(...slice.map((m) => this.card(m)));
    if (!slice.length) {
      this.el.append(h("p", { class: "empty", text: this.words.length ? "No message matches." : "No messages yet." }));
    }
    this.counts(all.length, slice.length);
    this.newer.disabled = this.page === 0;
    this.older.disabled = this.page >= pages - 1;
  }

  repaint() {
    if (this.timers.repaint !== null || this.timers.frame !== null) return;
    const wait = Math.max(0, this.lastPaint + REPAINT_MS - performance.now());
    this.timers.repaint = setTimeout(() => {
      this.timers.repaint = null;
      this.timers.frame = requestAnimationFrame(() => {
        this.timers.frame = null;
        this.lastPaint = performance.now();
        this.paint();
      });
    }, wait);
  }

  // a "messages" batch from app.js
  added(batch) {
    const added = this.words.length ? batch.filter((m) => matches(m, this.words)) : batch;
    if (!added.length) return;
    const ordered = added.every((m, i) => i === 0 || m.time >= added[i - 1].time);
    const newest = this.msgs.list[this.msgs.list.length - 1];
    const burst = this.inserted + added.length > PAGE;
    if (this.page !== 0 || burst || !ordered || added[added.length - 1] !== newest) {
      if (this.page === 0) this.repaint();
      else this.info.textContent = this.info.textContent.replace(/ of \d+/, ` of ${this.items().length}`);
      return;
    }
    // the common live case: a few new messages on top, the oldest of the page drop off
    const empty = this.el.querySelector(".empty");
    if (empty) empty.remove();
    for (const m of added) this.el.prepend(this.card(m));
    this.inserted += added.length;
    if (this.timers.burst === null) {
      this.timers.burst = setTimeout(() => { this.timers.burst = null; this.inserted = 0; }, BURST_MS);
    }
    while (this.el.childElementCount > PAGE) this.el.lastElementChild.remove();
    const total = this.items().length;
    this.counts(total, Math.min(PAGE, total));
    this.older.disabled = total <= PAGE;
  }

  // ids read (all unread cards when ids is empty): their cards redrawn as read
  read(ids) {
    const set = new Set(ids);
    for (const el of this.el.querySelectorAll("article.unread")) {
      if (set.size && !set.has(el.dataset.id)) continue;
      const m = this.msgs.byId.get(el.dataset.id);
      if (m) el.replaceWith(this.card(m));
    }
  }

  close() {
    clearTimeout(this.timers.repaint);
    clearTimeout(this.timers.burst);
    if (this.timers.frame !== null) cancelAnimationFrame(this.timers.frame);
  }
}
