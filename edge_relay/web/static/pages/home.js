// "#/": the subscribed topics with their unread counts, and the form to subscribe.
import * as api from "../api.js";
import * as app from "../app.js";
import { go, href, register } from "../router.js";
import { h } from "../render.js";
import * as store from "../store.js";

function row(topic) {
  const n = store.unread(topic);
  return h("li", { class: "sub" },
    h("a", { href: href("t", topic), text: topic }),
    h("span", { class: "count", text: n ? `${n} unread` : "no unread" }),
    h("span", { class: "state", text: app.statusText(topic) }),
    h("button", { type: "button", class: "quiet", "aria-label": `Unsubscribe from ${topic}`,
      text: "Unsubscribe", onclick: () => app.unfollow(topic) }));
}

function render(main) {
  const input = h("input", { id: "sub-topic", name: "topic", required: true, autocomplete: "off",
    pattern: "[A-Za-z0-9_\\-]{1,64}", placeholder: "e.g. alerts" });
  const note = h("p", { class: "note", role: "status" });
  const form = h("form", { class: "subscribe", "aria-labelledby": "sub-h" },
    h("h2", { id: "sub-h", text: "Subscribe to a topic" }),
    h("label", { for: "sub-topic", text: "Topic" }), input,
    h("button", { type: "submit", text: "Subscribe" }), note);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const topic = input.value.trim();
    if (!store.TOPIC_RE.test(topic)) {
      note.textContent = "A topic is 1-64 letters, digits, - or _.";
      return;
    }
    try {
      await api.checkTopic(topic);
    } catch (err) {
      note.textContent = err.status === 401 || err.status === 403
        ? `Not allowed to read ${topic}: set a token in Settings (${err.message}).`
        : `Cannot subscribe: ${err.message}`;
      return;
    }
    app.follow(topic);
    go("t", topic);
  });
  const list = h("ul", { class: "subs", "aria-label": "Your topics" });
  const fill = () => {
    const topics = store.topics();
    list.replaceChildren(...(topics.length ? topics.map(row)
      : [h("li", { class: "empty", text: "No topics yet: subscribe to one above." })]));
  };
  fill();
  main.append(h("h1", { text: "Topics" }), form, list);
  let t = null;
  const refresh = () => {
    if (t === null) t = setTimeout(() => { t = null; fill(); }, 100);
  };
  const events = ["messages", "read", "topics", "status", "change"];
  for (const ev of events) store.bus.addEventListener(ev, refresh);
  return () => {
    clearTimeout(t);
    for (const ev of events) store.bus.removeEventListener(ev, refresh);
  };
}

register({ id: "", title: "Topics", nav: true, render });
