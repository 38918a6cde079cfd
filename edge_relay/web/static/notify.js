// Browser notifications (the Notification API) while the page is open, for messages that
// arrive live, once the user has switched them on (permission needs a click).

import { splitTags } from "./emoji.js";
import { safeUrl } from "./markdown.js";

const KEY = "edgepush.notify";

export function supported() {
  return typeof Notification !== "undefined";
}

export function enabled() {
  return supported() && Notification.permission === "granted" && localStorage.getItem(KEY) !== "off";
}

export async function enable() {
  if (!supported()) return false;
  const answer = await Notification.requestPermission();
  localStorage.setItem(KEY, answer === "granted" ? "on" : "off");
  return answer === "granted";
}

export function disable() {
  localStorage.setItem(KEY, "off");
}

export function show(msg, onClick) {
  if (!enabled()) return null;
  const [icons] = splitTags(msg.tags);
  const title = (icons.length ? icons.join("") + " " : "") + (msg.title || msg.topic);
  const options = { body: String(msg.message || ""), tag: msg.sequence_id || msg.id };
  const icon = safeUrl(msg.icon, { mailto: false });
  if (icon) options.icon = icon;
  if (msg.priority >= 5) options.requireInteraction = true;
  if (msg.priority <= 1) options.silent = true;
  try {
    const n = new Notification(title, options);
    n.onclick = () => {
      window.focus();
      if (onClick) onClick(msg);
      n.close();
    };
    return n;
  } catch {
    return null; // some mobile browsers allow notifications only from a service worker
  }
}
