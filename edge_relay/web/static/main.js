// Boot: the pages register themselves (pages/index.js), the streams start, the router shows
// the page the URL names. A browser that opened http://relay/<topic> gets that topic's page.

import * as admin from "./admin.js";
import * as app from "./app.js";
import "./pages/index.js";
import { go, href, navPages, onRoute, route, start } from "./router.js";
import * as store from "./store.js";
import { h } from "./render.js";

function fromPath() {
  const name = location.pathname.replace(/^\/+|\/+$/g, "");
  if (!location.hash && name && store.TOPIC_RE.test(name)) {
    history.replaceState(null, "", "/#/t/" + encodeURIComponent(name));
    app.follow(name);
  }
}

function renderNav() {
  const nav = document.getElementById("nav");
  const cur = route() || { id: "", arg: "" };
  const pages = h("ul", { class: "pages" });
  for (const p of navPages()) {
    const a = h("a", { href: href(p.id), text: p.title || "Topics" });
    if (cur.id === p.id) a.setAttribute("aria-current", "page");
    pages.append(h("li", {}, a));
  }
  const topics = h("ul", { class: "topics", "aria-label": "Subscribed topics" });
  for (const t of store.topics()) {
    const n = store.unread(t);
    const a = h("a", { href: href("t", t), "data-topic": t },
      h("span", { class: "name", text: t }),
      n ? h("span", { class: "badge", "aria-label": `${n} unread`, text: String(n) }) : null,
      h("span", { class: "dot " + app.status(t), "aria-hidden": "true" }));
    if (cur.id === "t" && cur.arg === t) a.setAttribute("aria-current", "page");
    topics.append(h("li", {}, a));
  }
  nav.replaceChildren(pages, topics);
  const total = store.totalUnread();
  const base = document.title.replace(/^\(\d+\) /, "");
  document.title = total ? `(${total}) ${base}` : base;
}

function renderConn() {
  const topics = store.topics();
  const down = topics.filter((t) => app.status(t) !== "open");
  const conn = document.getElementById("conn");
  conn.textContent = topics.length === 0 ? "" : down.length === 0 ? "live" : "reconnecting…";
  conn.className = "conn " + (down.length ? "down" : "up");
}

let navTimer = null;
function soon() {
  if (navTimer === null) {
    navTimer = setTimeout(() => {
      navTimer = null;
      renderNav();
      renderConn();
    }, 50);
  }
}

for (const ev of ["messages", "change", "read", "topics", "status", "role"]) store.bus.addEventListener(ev, soon);
onRoute(() => renderNav());
app.setNotificationClick((msg) => go("t", msg.topic));

fromPath();
admin.refresh(); // the admin pages join the navigation when the token is an admin's
app.startAll();
start(document.getElementById("main"));
renderNav();
renderConn();
