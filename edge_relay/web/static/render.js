// One message as DOM. Every field the publisher chose is set as text (textContent, attribute
// values); markdown goes through markdown.js; URLs are used only if they are http(s) (or
// mailto for links), so a javascript: click, icon or action URL is refused, shown as text.

import { splitTags } from "./emoji.js";
import { render as markdown, safeUrl } from "./markdown.js";
import { headerValue } from "./api.js";

export const PRIORITY = { 1: "min", 2: "low", 3: "default", 4: "high", 5: "urgent" };
const PRIORITY_MARK = { 1: "⇊", 2: "↓", 4: "↑", 5: "‼" };
const IMAGE = /\.(png|jpe?g|gif|webp|avif|bmp|svg)$/i;

export function h(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) if (c !== null && c !== undefined && c !== false) e.append(c);
  return e;
}

function text(value) {
  return typeof value === "string" ? value : value === undefined || value === null ? "" : String(value);
}

// Intl formatters are slow to make (toLocaleTimeString builds one per call): made once
const TIME = new Intl.DateTimeFormat([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
const DATE_TIME = new Intl.DateTimeFormat([], { dateStyle: "short", timeStyle: "short" });

export function formatTime(unix) {
  const d = new Date(unix * 1000);
  const sameDay = d.toDateString() === new Date().toDateString();
  return (sameDay ? TIME : DATE_TIME).format(d);
}

function isImage(att) {
  return (typeof att.type === "string" && att.type.startsWith("image/")) ||
    IMAGE.test(text(att.name));
}

function attachment(att) {
  if (!att || typeof att !== "object") return null;
  const url = safeUrl(att.url, { mailto: false });
  const name = text(att.name) || "attachment";
  const box = h("div", { class: "attachment" });
  if (url && isImage(att)) {
    box.append(h("img", { src: url, alt: name, loading: "lazy", referrerpolicy: "no-referrer" }));
  }
  const size = typeof att.size === "number" ? ` (${Math.ceil(att.size / 1024)} KB)` : "";
  box.append(url
    ? h("a", { href: url, target: "_blank", rel: "noopener noreferrer", text: name + size })
    : h("span", { text: name + size }));
  return box;
}

async function httpAction(action, button) {
  const url = safeUrl(action.url, { mailto: false });
  if (!url) return;
  button.disabled = true;
  const headers = {};
  if (action.headers && typeof action.headers === "object") {
    for (const [k, v] of Object.entries(action.headers)) headers[text(k)] = headerValue(text(v));
  }
  const method = text(action.method) || "POST";
  try {
    const resp = await fetch(url, { method, headers, body: method === "GET" ? undefined : text(action.body) });
    button.dataset.result = resp.ok ? "ok" : "failed";
    button.title = resp.ok ? "Done" : `Failed: HTTP ${resp.status}`;
  } catch (e) {
    button.dataset.result = "failed";
    button.title = "Failed: " + e.message;
  } finally {
    button.disabled = false;
  }
}

function actionButton(action) {
  if (!action || typeof action !== "object") return null;
  const label = text(action.label) || text(action.action);
  if (action.action === "view") {
    const url = safeUrl(action.url);
    if (!url) return h("span", { class: "refused", title: "URL refused (not http, https or mailto)", text: label });
    return h("a", { class: "button", href: url, target: "_blank", rel: "noopener noreferrer", text: label });
  }
  if (action.action === "http") {
    if (!safeUrl(action.url, { mailto: false })) {
      return h("span", { class: "refused", title: "URL refused (not http or https)", text: label });
    }
    const b = h("button", { type: "button", text: label });
    b.addEventListener("click", () => httpAction(action, b));
    return b;
  }
  return null; // broadcast and others: for Android apps only
}

export function messageCard(msg, { read, onRead }) {
  const [icons, tags] = splitTags(msg.tags);
  const prio = PRIORITY_MARK[msg.priority];
  const title = text(msg.title);
  const card = h("article", {
    class: "msg" + (read ? "" : " unread") + (msg.priority >= 4 ? " prio-high" : ""),
    "data-id": text(msg.id),
    "aria-label": (title || text(msg.topic)) + (read ? "" : ", unread"),
  });
  const icon = safeUrl(msg.icon, { mailto: false });
  const head = h("header", {},
    icon ? h("img", { class: "icon", src: icon, alt: "", referrerpolicy: "no-referrer" }) : null,
    h("div", { class: "head" },
      h("h2", { class: "title", dir: "auto" },
        prio ? h("span", { class: "prio", role: "img", "aria-label": `priority ${PRIORITY[msg.priority]}`, text: prio }) : null,
        icons.length ? h("span", { class: "emoji", "aria-hidden": "true", text: icons.join("") + " " }) : null,
        h("bdi", { text: title || text(msg.topic) })),
      h("time", { datetime: new Date(msg.time * 1000).toISOString(), text: formatTime(msg.time) })));
  card.append(head);
  const body = text(msg.message);
  if (msg.content_type === "text/markdown") card.append(markdown(body));
  else card.append(h("p", { class: "body", dir: "auto", text: body }));
  const att = attachment(msg.attachment);
  if (att) card.append(att);
  if (tags.length) {
    card.append(h("ul", { class: "tags", "aria-label": "tags" },
      ...tags.map((t) => h("li", { dir: "auto" }, h("bdi", { text: t })))));
  }
  const row = h("div", { class: "actions" });
  for (const a of Array.isArray(msg.actions) ? msg.actions.slice(0, 3) : []) {
    const b = actionButton(a);
    if (b) row.append(b);
  }
  if (msg.click !== undefined && msg.click !== "") {
    const click = safeUrl(msg.click);
    row.append(click
      ? h("a", { class: "button", href: click, target: "_blank", rel: "noopener noreferrer", text: "Open link" })
      : h("span", { class: "refused", title: "click URL refused", text: "link refused" }));
  }
  if (!read && onRead) {
    row.append(h("button", { type: "button", class: "mark", text: "Mark read", onclick: () => onRead(msg) }));
  }
  if (row.childElementCount) card.append(row);
  return card;
}
