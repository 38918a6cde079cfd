// The relay's public HTTP API, as curl and the agent use it. The token lives in this
// origin's localStorage only and goes out as "Authorization: Bearer"; WebSockets cannot send
// headers, so there it is ntfy's ?auth= (base64 of the header).

const TOKEN_KEY = "edgepush.token";

export function token() {
  return localStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(value) {
  if (value) localStorage.setItem(TOKEN_KEY, value);
  else localStorage.removeItem(TOKEN_KEY);
}

export function headers(extra = {}) {
  const h = { ...extra };
  const t = token();
  if (t) h.Authorization = "Bearer " + t;
  return h;
}

export class ApiError extends Error {
  constructor(status, text) {
    super(text);
    this.status = status;
  }
}

export async function request(method, path, { body, headers: extra, json } = {}) {
  const h = headers(extra);
  if (json !== undefined) {
    h["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  }
  const resp = await fetch(path, { method, headers: h, body });
  const text = await resp.text();
  let data = text;
  try {
    data = JSON.parse(text);
  } catch {
    /* not JSON: keep the text */
  }
  if (!resp.ok) {
    const why = data && typeof data === "object" && data.error ? data.error : resp.statusText;
    throw new ApiError(resp.status, String(why));
  }
  return data;
}

export const get = (path) => request("GET", path);

// RFC 2047 for header values that are not Latin-1: fetch() refuses them, the relay decodes
// "=?UTF-8?B?...?=" as ntfy does.
export function headerValue(text) {
  // eslint-disable-next-line no-control-regex
  if (/^[\x20-\x7e]*$/.test(text)) return text;
  const bytes = new TextEncoder().encode(text);
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return "=?UTF-8?B?" + btoa(bin) + "?=";
}

export function wsUrl(topic, since) {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  let url = `${proto}//${location.host}/${encodeURIComponent(topic)}/ws?since=${encodeURIComponent(since)}`;
  const t = token();
  if (t) url += "&auth=" + encodeURIComponent(btoa("Bearer " + t).replace(/=+$/, ""));
  return url;
}

export function checkTopic(topic) {
  return get(`/${encodeURIComponent(topic)}/auth`);
}

export function account() {
  return get("/v1/account");
}

export async function markRead(ids) {
  if (!token() || ids.length === 0) return null;
  const items = ids.slice(0, 1000).map((id) => ({ id, state: "read", device: "web" }));
  return request("POST", "/v1/receipts", { json: items });
}
