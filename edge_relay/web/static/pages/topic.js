// "#/t/<topic>": one topic's messages, newest first, a page of PAGE cards at a time (10,000
// messages are 10,000 objects in memory but never more than PAGE nodes), live as they come,
// searchable over everything the relay's cache sent (since=all), with the publish form.
import * as app from "../app.js";
import { go, register } from "../router.js";
import { h, messageCard } from "../render.js";
import * as store from "../store.js";
import { publishForm } from "./publish.js";

export const PAGE = 50;

function matches(msg, words) {
  const hay = [msg.title, msg.message, ...(Array.isArray(msg.tags) ? msg.tags : [])]
    .filter((x) => typeof x === "string").join("\n").toLowerCase();
  return words.every((w) => hay.includes(w));
}

function render(main, topic) {
  if (!store.TOPIC_RE.test(topic)) {
    go("");
    return null;
  }
  if (!store.topics().includes(topic)) app.follow(topic);
  const msgs = store.of(topic);
  let page = 0;
  let words = [];
  const feed = h("div", { class: "feed", role: "feed", "aria-label": `Messages in ${topic}`, "aria-busy": "false" });
  const info = h("p", { class: "pageinfo", "aria-live": "polite" });
  const newer = h("button", { type: "button", class: "quiet", text: "← Newer" });
  const older = h("button", { type: "button", class: "quiet", text: "Older →" });
  const search = h("input", { id: "search", type: "search", autocomplete: "off", placeholder: "words in title, message or tags" });
  const state = h("span", { class: "state", role: "status", text: app.statusText(topic) });

  const items = () => (words.length ? msgs.list.filter((m) => matches(m, words)) : msgs.list);
  const card = (m) => messageCard(m, { read: store.isRead(topic, m), onRead: (x) => app.markRead(topic, [x.id]) });

  function paint() {
    const all = items();
    const pages = Math.max(1, Math.ceil(all.length / PAGE));
    page = Math.min(page, pages - 1);
    const end = all.length - page * PAGE;
    const slice = all.slice(Math.max(0, end - PAGE), end).reverse();
    feed.replaceChildren(...slice.map(card));
    if (!slice.length) feed.append(h("p", { class: "empty", text: words.length ? "No message matches." : "No messages yet." }));
    info.textContent = all.length
      ? `${page * PAGE + 1}–${page * PAGE + slice.length} of ${all.length}${words.length ? " matching" : ""}`
      : "";
    newer.disabled = page === 0;
    older.disabled = page >= pages - 1;
  }

  // a replay (since=all on 10,000 messages) comes in many batches: the first paint at the
  // next frame, then at most one each REPAINT_MS while they keep coming
  const REPAINT_MS = 200;
  let lastPaint = 0;
  let waiting = false;
  let timer = null;
  let frame = null;
  let inserted = 0; // cards inserted one by one in the last 16 ms
  let insertTimer = null;
  function repaint() {
    if (waiting) return;
    waiting = true;
    const wait = Math.max(0, lastPaint + REPAINT_MS - performance.now());
    timer = setTimeout(() => {
      timer = null;
      frame = requestAnimationFrame(() => {
        frame = null;
        waiting = false;
        lastPaint = performance.now();
        paint();
      });
    }, wait);
  }

  function onMessages(e) {
    if (e.detail.topic !== topic) return;
    const added = words.length ? e.detail.added.filter((m) => matches(m, words)) : e.detail.added;
    if (!added.length) return;
    const ordered = added.every((m, i) => i === 0 || m.time >= added[i - 1].time);
    const newest = msgs.list[msgs.list.length - 1];
    const burst = inserted + added.length > PAGE; // a replay: cards a frame would not show
    if (page !== 0 || burst || !ordered || added[added.length - 1] !== newest) {
      if (page === 0) repaint();
      else info.textContent = info.textContent.replace(/ of \d+/, ` of ${items().length}`);
      return;
    }
    // the common live case: a few new messages on top, the oldest of the page drop off
    const empty = feed.querySelector(".empty");
    if (empty) empty.remove();
    for (const m of added) feed.prepend(card(m));
    inserted += added.length;
    if (insertTimer === null) insertTimer = setTimeout(() => { insertTimer = null; inserted = 0; }, 16);
    while (feed.childElementCount > PAGE) feed.lastElementChild.remove();
    const total = items().length;
    info.textContent = `1–${Math.min(PAGE, total)} of ${total}${words.length ? " matching" : ""}`;
    older.disabled = total <= PAGE;
  }

  function onRead(e) {
    if (e.detail.topic !== topic) return;
    const ids = new Set(e.detail.ids);
    for (const el of feed.querySelectorAll("article.unread")) {
      if (ids.has(el.dataset.id) || ids.size === 0) {
        const m = msgs.byId.get(el.dataset.id);
        if (m) el.replaceWith(card(m));
      }
    }
  }

  const onChange = (e) => e.detail.topic === topic && paint();
  const onStatus = (e) => {
    if (e.detail.topic === topic) state.textContent = app.statusText(topic);
  };
  newer.addEventListener("click", () => { page--; paint(); });
  older.addEventListener("click", () => { page++; paint(); });
  let typing = null;
  search.addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(() => {
      words = search.value.toLowerCase().split(/\s+/).filter(Boolean);
      page = 0;
      paint();
    }, 150);
  });

  const pub = h("details", { class: "pubbox" }, h("summary", { text: "Publish to " + topic }), publishForm(topic));
  main.append(
    h("div", { class: "topichead" },
      h("h1", {}, h("bdi", { text: topic })), state,
      h("button", { type: "button", class: "quiet", text: "Mark all read", onclick: () => app.markAllRead(topic) })),
    pub,
    h("div", { class: "tools" },
      h("label", { for: "search", text: "Search" }), search),
    h("nav", { class: "pager", "aria-label": "Pages of messages" }, newer, info, older),
    feed);
  paint();
  const on = [["messages", onMessages], ["read", onRead], ["change", onChange], ["status", onStatus]];
  for (const [ev, fn] of on) store.bus.addEventListener(ev, fn);
  return () => {
    clearTimeout(typing);
    clearTimeout(timer);
    if (frame !== null) cancelAnimationFrame(frame);
    clearTimeout(insertTimer);
    for (const [ev, fn] of on) store.bus.removeEventListener(ev, fn);
  };
}

register({ id: "t", title: "Topic", nav: false, render });
