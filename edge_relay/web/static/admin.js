// Whether the token in this browser holds the relay's admin grant: /v1/account answers
// role "admin" for one (as ntfy's does for its admins). The dashboard and tokens pages ask
// isAdmin() to appear in the navigation; their API calls are refused with 403 otherwise.
import * as api from "./api.js";
import * as store from "./store.js";

let role = "";

export function isAdmin() {
  return role === "admin";
}

export async function refresh() {
  try {
    role = (await api.account()).role || "";
  } catch {
    role = "";
  }
  store.bus.dispatchEvent(new CustomEvent("role")); // the navigation repaints (main.js)
  return role;
}

// "3 h 12 min", "45 s": a duration for people.
export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const s = Math.round(seconds);
  if (s < 90) return `${s} s`;
  const m = Math.round(s / 60);
  if (m < 90) return `${m} min`;
  const hrs = Math.floor(m / 60);
  if (hrs < 48) return `${hrs} h ${m % 60} min`;
  return `${Math.floor(hrs / 24)} d ${hrs % 24} h`;
}

export function percent(rate) {
  return rate === null || rate === undefined ? "–" : `${(100 * rate).toFixed(1)} %`;
}
