// "#/dashboard": the relay's owner's view (admin token): health, upstream and outbox, open
// streams and devices, messages per hour, and per topic the delivery funnel (published →
// delivered → displayed → clicked) with click-through rate and time to click. Numbers come
// from /v1/health, /v1/admin/overview and /v1/stats?since= (the same the CLI prints).
import * as admin from "../admin.js";
import * as api from "../api.js";
import { barChart, funnelChart } from "../charts.js";
import { register } from "../router.js";
import { formatTime, h } from "../render.js";

const WINDOWS = [["1d", "24 hours"], ["7d", "7 days"], ["30d", "30 days"]];
const STEPS = ["published", "delivered", "displayed", "clicked"];
const REFRESH_MS = 10000;
// SVG text scales with the chart: on a phone a narrower drawing keeps its labels readable
const chartWidth = () => (window.innerWidth < 700 ? 360 : 640);

function cell(key, value, text) {
  return h("td", { "data-k": key, "data-value": value === null ? "" : String(value), text: text ?? String(value) });
}

function healthBox(health, overview) {
  const up = overview.upstream;
  const items = [
    ["Status", health.healthy ? "healthy" : "unhealthy"],
    ["Version", health.version],
    ["Uptime", admin.duration(health.uptime)],
    ["Subscribers", String(overview.subscribers)],
    ["Stored messages", String(overview.store.messages)],
    ["Upstream", up.url ? `${up.state} (${up.url})` : "none"],
    ["Outbox", String(up.outbox)],
  ];
  if (up.last_error) items.push(["Upstream error", up.last_error]);
  return h("section", { class: "card health", "aria-labelledby": "dash-health" },
    h("h2", { id: "dash-health", text: "Relay" }),
    h("dl", { class: "facts" }, ...items.flatMap(([k, v]) => [h("dt", { text: k }), h("dd", { "data-k": k, text: v })])));
}

function hourBars(overview) {
  const byHour = new Map(overview.messages_per_hour.map((x) => [x.hour, x.messages]));
  const now = Math.floor(overview.time / 3600) * 3600;
  const bars = [];
  for (let i = 23; i >= 0; i--) {
    const hour = now - i * 3600;
    const d = new Date(hour * 1000);
    bars.push({ label: `${String(d.getHours()).padStart(2, "0")}h`, value: byHour.get(hour) || 0 });
  }
  const total = bars.reduce((a, b) => a + b.value, 0);
  return h("section", { class: "card", "aria-labelledby": "dash-hours" },
    h("h2", { id: "dash-hours", text: "Messages per hour (last 24 hours)" }),
    barChart(bars, { name: `Messages per hour, ${total} in the last 24 hours`, width: chartWidth(),
      every: chartWidth() < 640 ? 6 : 3 }),
    h("p", { class: "note", "data-k": "hour-total", text: `${total} messages in the last 24 hours` }));
}

function table(caption, heads, rows, empty) {
  if (rows.length === 0) return h("p", { class: "empty", text: empty });
  return h("table", {}, h("caption", { class: "sr-only", text: caption }),
    h("thead", {}, h("tr", {}, ...heads.map((x) => h("th", { scope: "col", text: x })))),
    h("tbody", {}, ...rows));
}

function connected(overview) {
  const streams = overview.streams.map((s) => h("tr", { "data-name": s.name },
    h("td", { text: s.name }), cell("streams", s.streams),
    h("td", { text: Object.entries(s.topics).map(([t, n]) => (n > 1 ? `${t} ×${n}` : t)).join(", ") })));
  const devices = overview.devices.map((d) => h("tr", {},
    h("td", { text: d.owner }), h("td", { text: d.device_name || d.device || "(unnamed)", title: d.device }),
    h("td", { text: formatTime(d.last_seen) }), cell("receipts", d.receipts)));
  return h("section", { class: "card", "aria-labelledby": "dash-conn" },
    h("h2", { id: "dash-conn", text: "Connected" }),
    h("h3", { text: "Open streams by token" }),
    table("Open streams", ["Token", "Streams", "Topics"], streams, "No open streams."),
    h("h3", { text: "Devices reporting (last 24 hours)" }),
    table("Devices", ["Token", "Device", "Last receipt", "Receipts"], devices, "No receipts in the last 24 hours."));
}

function funnelRow(topic, row) {
  return h("tr", { "data-topic": topic }, h("th", { scope: "row", text: topic }),
    ...STEPS.map((k) => cell(k, row[k])), cell("dismissed", row.dismissed),
    cell("ctr", row.ctr, admin.percent(row.ctr)),
    cell("median_click_seconds", row.median_click_seconds, admin.duration(row.median_click_seconds)));
}

function funnels(stats, since) {
  const topics = Object.entries(stats.analytics.topics);
  const box = h("section", { class: "card", "aria-labelledby": "dash-funnel" },
    h("h2", { id: "dash-funnel", text: "Delivery per topic" }));
  if (topics.length === 0) {
    box.append(h("p", { class: "empty", text: "No messages in this window." }));
    return box;
  }
  box.append(table(`Delivery funnel, since ${since}`,
    ["Topic", "Published", "Delivered", "Displayed", "Clicked", "Dismissed", "Click-through", "Time to click"],
    topics.map(([t, e]) => funnelRow(t, e.total)), ""));
  for (const [t, e] of topics) {
    const r = e.total;
    box.append(h("figure", { class: "funnel", "data-topic": t },
      funnelChart(STEPS.map((k) => ({ label: k, value: r[k] })), { name: `${t}: delivery funnel`, width: chartWidth() }),
      h("figcaption", { text: `${t}: click-through ${admin.percent(r.ctr)}, median time to click ${admin.duration(r.median_click_seconds)}` })));
  }
  return box;
}

function render(main) {
  const select = h("select", { id: "dash-since" },
    ...WINDOWS.map(([v, label]) => h("option", { value: v, text: label, selected: v === "7d" })));
  const note = h("p", { class: "note", role: "status" });
  const body = h("div", { class: "dash" });
  main.append(h("div", { class: "topichead" }, h("h1", { text: "Dashboard" }),
    h("div", { class: "tools" }, h("label", { for: "dash-since", text: "Window" }), select)), note, body);
  let alive = true;
  const load = async () => {
    try {
      const since = select.value;
      const [health, overview, stats] = await Promise.all([
        api.get("/v1/health"), api.get("/v1/admin/overview"),
        api.get(`/v1/stats?since=${encodeURIComponent(since)}`)]);
      if (!alive) return;
      body.replaceChildren(healthBox(health, overview), hourBars(overview), connected(overview),
        funnels(stats, since));
      note.textContent = `Updated ${formatTime(Math.floor(Date.now() / 1000))}`;
      main.dataset.loaded = since;
    } catch (err) {
      if (!alive) return;
      note.textContent = err.status === 401 || err.status === 403
        ? `The dashboard needs an admin token (edge-relay token add NAME --admin), set in Settings: ${err.message}`
        : `Cannot load the dashboard: ${err.message}`;
    }
  };
  select.addEventListener("change", load);
  load();
  const timer = setInterval(load, REFRESH_MS);
  return () => {
    alive = false;
    clearInterval(timer);
  };
}

register({ id: "dashboard", title: "Dashboard", nav: true, visible: admin.isAdmin, render });
