// "#/tokens": the relay's access tokens (admin token): list, add with read/write patterns
// (the secret is shown once, here), revoke with a second click to confirm. Speaks
// /v1/tokens, which refuses every token without the admin grant.
import * as admin from "../admin.js";
import * as api from "../api.js";
import { register } from "../router.js";
import { formatTime, h } from "../render.js";

function patterns(text) {
  return text.split(/[\s,]+/).map((p) => p.trim()).filter(Boolean);
}

function revokeButton(name, note, reload) {
  const b = h("button", { type: "button", class: "quiet revoke", "data-name": name, text: "Revoke",
    "aria-label": `Revoke ${name}` });
  let armed = false;
  b.addEventListener("click", async () => {
    if (!armed) { // a second click confirms: no window.confirm (blocked, and not accessible)
      armed = true;
      b.textContent = `Really revoke ${name}?`;
      return;
    }
    b.disabled = true;
    try {
      await api.request("DELETE", `/v1/tokens/${encodeURIComponent(name)}`);
      note.textContent = `Token ${name} revoked.`;
      reload();
    } catch (err) {
      note.textContent = `Cannot revoke ${name}: ${err.message}`;
      b.disabled = false;
    }
  });
  b.addEventListener("blur", () => {
    armed = false;
    b.textContent = "Revoke";
  });
  return b;
}

function listing(data, note, reload) {
  const rows = data.tokens.map((t) => h("tr", { "data-name": t.name },
    h("th", { scope: "row", text: t.name }),
    h("td", { text: t.read.join(", ") || "–" }), h("td", { text: t.write.join(", ") || "–" }),
    h("td", { text: t.admin ? "admin" : "" }),
    h("td", { text: t.created ? formatTime(t.created) : "" }),
    h("td", {}, revokeButton(t.name, note, reload))));
  const anon = data.anonymous;
  return h("section", { class: "card", "aria-labelledby": "tok-list" },
    h("h2", { id: "tok-list", text: "Tokens" }),
    rows.length ? h("table", { class: "tokens" },
      h("thead", {}, h("tr", {}, ...["Name", "Read", "Write", "Admin", "Created", ""].map((x) => h("th", { scope: "col", text: x })))),
      h("tbody", {}, ...rows)) : h("p", { class: "empty", text: "No tokens." }),
    h("p", { class: "note", text: `Without a token: read ${anon.read.join(", ") || "nothing"}, write ${anon.write.join(", ") || "nothing"}.` }));
}

function addForm(note, reload) {
  const field = (id, label, input, hint) => h("div", { class: "field" },
    h("label", { for: id, text: label }), Object.assign(input, { id }), hint ? h("p", { class: "note", text: hint }) : null);
  const secret = h("output", { id: "tok-secret", class: "secret", "aria-live": "polite" });
  const form = h("form", { class: "token add", "aria-labelledby": "tok-add" },
    h("h2", { id: "tok-add", text: "Add a token" }),
    field("tok-name", "Name", h("input", { name: "name", required: true, autocomplete: "off", pattern: "[A-Za-z0-9_\\-]{1,64}" })),
    h("div", { class: "row" },
      field("tok-read", "Read topics", h("input", { name: "read", autocomplete: "off", placeholder: "home*, alerts" }), "Patterns, * matches any characters"),
      field("tok-write", "Write topics", h("input", { name: "write", autocomplete: "off" }))),
    h("div", { class: "field check" }, h("input", { id: "tok-admin", name: "admin", type: "checkbox" }),
      h("label", { for: "tok-admin", text: "Admin (may manage tokens and see the dashboard)" })),
    h("button", { type: "submit", text: "Add token" }), secret);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const el = form.elements;
    const body = { name: el.name.value.trim(), read: patterns(el.read.value), write: patterns(el.write.value), admin: el.admin.checked };
    try {
      const made = await api.request("POST", "/v1/tokens", { json: body });
      secret.replaceChildren(h("span", { text: `Token for ${made.name} (shown only now): ` }),
        h("code", { class: "value", text: made.token }));
      note.textContent = `Token ${made.name} added.`;
      form.reset();
      reload();
    } catch (err) {
      secret.replaceChildren();
      note.textContent = `Cannot add the token: ${err.message}`;
    }
  });
  return form;
}

function render(main) {
  const note = h("p", { class: "note", role: "status", id: "tok-note" });
  const list = h("div", {});
  let alive = true;
  const reload = async () => {
    try {
      const data = await api.get("/v1/tokens");
      if (alive) list.replaceChildren(listing(data, note, reload));
    } catch (err) {
      if (alive) note.textContent = err.status === 401 || err.status === 403
        ? `Managing tokens needs an admin token, set in Settings: ${err.message}`
        : `Cannot list tokens: ${err.message}`;
    }
  };
  main.append(h("h1", { text: "Tokens" }), addForm(note, reload), note, list);
  reload();
  return () => { alive = false; };
}

register({ id: "tokens", title: "Tokens", nav: true, visible: admin.isAdmin, render });
