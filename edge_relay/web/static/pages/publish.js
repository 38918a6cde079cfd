// The publish form (also inside each topic's page) and its own page, "#/publish".
// Without a file: POST / with ntfy's JSON message. With one: PUT /<topic> with the file as
// the body and the options as headers (Filename, Title, X-Message...), as ntfy's clients do.
import * as api from "../api.js";
import { register } from "../router.js";
import { h, PRIORITY } from "../render.js";
import * as store from "../store.js";

let seq = 0;

function field(id, label, input) {
  input.id = id;
  return h("div", { class: "field" }, h("label", { for: id, text: label }), input);
}

function values(form) {
  const get = (n) => form.elements[n].value.trim();
  return {
    topic: get("topic"), title: get("title"), message: form.elements.message.value,
    priority: Number(get("priority")), click: get("click"), delay: get("delay"),
    markdown: form.elements.markdown.checked,
    tags: get("tags").split(",").map((t) => t.trim()).filter(Boolean),
    file: form.elements.file.files[0] || null,
  };
}

async function send(v) {
  if (v.file) {
    const headers = { Filename: api.headerValue(v.file.name) };
    const opt = { Title: v.title, "X-Message": v.message, Tags: v.tags.join(","), Click: v.click, Delay: v.delay };
    for (const [k, val] of Object.entries(opt)) if (val) headers[k] = api.headerValue(val);
    if (v.priority !== 3) headers.Priority = String(v.priority);
    if (v.markdown) headers.Markdown = "yes";
    return api.request("PUT", "/" + encodeURIComponent(v.topic), { body: v.file, headers });
  }
  const json = { topic: v.topic, message: v.message };
  for (const k of ["title", "click", "delay"]) if (v[k]) json[k] = v[k];
  if (v.tags.length) json.tags = v.tags;
  if (v.priority !== 3) json.priority = v.priority;
  if (v.markdown) json.markdown = true;
  return api.request("POST", "/", { json });
}

export function publishForm(topic) {
  const n = ++seq;
  const id = (s) => `pub${n}-${s}`;
  const prio = h("select", { name: "priority" },
    ...[5, 4, 3, 2, 1].map((p) => h("option", { value: p, selected: p === 3, text: `${p} ${PRIORITY[p]}` })));
  const note = h("p", { class: "note", role: "status" });
  const topicInput = h("input", { name: "topic", required: true, pattern: "[A-Za-z0-9_\\-]{1,64}", value: topic || "", autocomplete: "off" });
  const form = h("form", { class: "publish" },
    topic ? h("input", { type: "hidden", name: "topic", value: topic }) : field(id("topic"), "Topic", topicInput),
    field(id("title"), "Title", h("input", { name: "title", autocomplete: "off" })),
    field(id("message"), "Message", h("textarea", { name: "message", rows: 3 })),
    h("div", { class: "row" },
      field(id("priority"), "Priority", prio),
      field(id("tags"), "Tags (comma separated)", h("input", { name: "tags", autocomplete: "off", placeholder: "warning,door" }))),
    h("div", { class: "row" },
      field(id("click"), "Click URL", h("input", { name: "click", type: "url", placeholder: "https://" })),
      field(id("delay"), "Delay", h("input", { name: "delay", placeholder: "30m, 9am, tomorrow" }))),
    h("div", { class: "row" },
      field(id("file"), "Attachment", h("input", { name: "file", type: "file" })),
      h("div", { class: "field check" },
        h("input", { id: id("md"), name: "markdown", type: "checkbox" }),
        h("label", { for: id("md"), text: "Markdown" }))),
    h("button", { type: "submit", text: "Publish" }), note);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const v = values(form);
    if (!store.TOPIC_RE.test(v.topic)) {
      note.textContent = "A topic is 1-64 letters, digits, - or _.";
      return;
    }
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    note.textContent = "Publishing…";
    try {
      const out = await send(v);
      note.textContent = v.delay ? `Scheduled for ${new Date(out.time * 1000).toLocaleString()}.` : "Published.";
      for (const name of ["title", "message", "tags", "click", "delay", "file"]) form.elements[name].value = "";
    } catch (err) {
      note.textContent = `Not published: ${err.message}`;
    } finally {
      button.disabled = false;
    }
  });
  return form;
}

register({
  id: "publish", title: "Publish", nav: true,
  render(main) {
    main.append(h("h1", { text: "Publish" }), publishForm(""));
  },
});
