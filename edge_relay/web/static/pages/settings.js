// "#/settings": the access token (kept in this origin's localStorage, sent as Bearer) and
// browser notifications.
import * as admin from "../admin.js";
import * as api from "../api.js";
import * as notify from "../notify.js";
import { register } from "../router.js";
import { h } from "../render.js";

function tokenForm() {
  const input = h("input", { id: "token", type: "password", autocomplete: "off", spellcheck: "false", value: api.token() });
  const note = h("p", { class: "note", role: "status" });
  const check = async () => {
    try {
      const acc = await api.account();
      note.textContent = acc.role === "anonymous" ? "No token: anonymous access." : `Signed in as ${acc.username} (${acc.role}).`;
    } catch (err) {
      note.textContent = `The relay refused the token: ${err.message}`;
    }
  };
  const form = h("form", { class: "token" },
    h("h2", { text: "Access token" }),
    h("p", { text: "An edge-relay token (edge-relay token add NAME). It stays in this browser, for this relay only." }),
    h("label", { for: "token", text: "Token" }), input,
    h("div", { class: "buttons" },
      h("button", { type: "submit", text: "Save" }),
      h("button", { type: "button", class: "quiet", text: "Forget", onclick: () => { input.value = ""; api.setToken(""); note.textContent = "Token removed."; admin.refresh(); } })),
    note);
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    api.setToken(input.value.trim());
    check();
    admin.refresh();
  });
  return form;
}

function notifyBox() {
  const note = h("p", { class: "note", role: "status" });
  const button = h("button", { type: "button" });
  const paint = () => {
    if (!notify.supported()) {
      button.disabled = true;
      button.textContent = "Not supported by this browser";
      return;
    }
    button.textContent = notify.enabled() ? "Turn notifications off" : "Turn notifications on";
    note.textContent = Notification.permission === "denied" ? "The browser blocks notifications for this site." : "";
  };
  button.addEventListener("click", async () => {
    if (notify.enabled()) notify.disable();
    else await notify.enable();
    paint();
  });
  paint();
  return h("section", { class: "notify" }, h("h2", { text: "Notifications" }),
    h("p", { text: "Show a notification for each new message while this page is open." }), button, note);
}

register({
  id: "settings", title: "Settings", nav: true,
  render(main) {
    main.append(h("h1", { text: "Settings" }), tokenForm(), notifyBox());
  },
});
