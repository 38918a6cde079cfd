// "#/t/<topic>": one topic's messages (feed.js), live as they come, searchable over
// everything the relay's cache sent (since=all), with the publish form.
import * as app from "../app.js";
import { FeedView } from "../feed.js";
import { go, register } from "../router.js";
import { h } from "../render.js";
import * as store from "../store.js";
import { publishForm } from "./publish.js";

function header(topic) {
  const state = h("span", { class: "state", role: "status", text: app.statusText(topic) });
  const head = h("div", { class: "topichead" },
    h("h1", {}, h("bdi", { text: topic })), state,
    h("button", { type: "button", class: "quiet", text: "Mark all read", onclick: () => app.markAllRead(topic) }));
  return { head, state };
}

function searchBox(feed) {
  const input = h("input", { id: "search", type: "search", autocomplete: "off", placeholder: "words in title, message or tags" });
  let typing = null;
  input.addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(() => feed.search(input.value), 150);
  });
  const box = h("div", { class: "tools" }, h("label", { for: "search", text: "Search" }), input);
  return { box, stop: () => clearTimeout(typing) };
}

function render(main, topic) {
  if (!store.TOPIC_RE.test(topic)) {
    go("");
    return null;
  }
  if (!store.topics().includes(topic)) app.follow(topic);
  const feed = new FeedView(topic);
  const { head, state } = header(topic);
  const search = searchBox(feed);
  const pub = h("details", { class: "pubbox" }, h("summary", { text: "Publish to " + topic }), publishForm(topic));
  main.append(head, pub, search.box, feed.pager, feed.el);
  feed.paint();
  const mine = (fn) => (e) => e.detail.topic === topic && fn(e.detail);
  const on = [
    ["messages", mine((d) => feed.added(d.added))],
    ["read", mine((d) => feed.read(d.ids))],
    ["change", mine(() => feed.paint())],
    ["status", mine(() => { state.textContent = app.statusText(topic); })],
  ];
  for (const [ev, fn] of on) store.bus.addEventListener(ev, fn);
  return () => {
    search.stop();
    feed.close();
    for (const [ev, fn] of on) store.bus.removeEventListener(ev, fn);
  };
}

register({ id: "t", title: "Topic", nav: false, render });
