// SVG charts, built as DOM (no innerHTML): a bar chart over time and a horizontal funnel.
// Every number drawn is also in the chart's <title> and in a table beside it, so a screen
// reader and the tests read the same values.

const NS = "http://www.w3.org/2000/svg";

function svg(tag, attrs = {}, ...children) {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  for (const c of children) if (c) e.append(c);
  return e;
}

function title(text) {
  const t = svg("title");
  t.textContent = text;
  return t;
}

function label(x, y, text, cls, anchor = "start") {
  const t = svg("text", { x, y, class: cls, "text-anchor": anchor });
  t.textContent = text;
  return t;
}

// bars: [{label, value}] in time order; labels shown every `every` bars.
export function barChart(bars, { name, width = 640, height = 180, every = 3 } = {}) {
  const pad = { l: 36, r: 8, t: 10, b: 24 };
  const max = Math.max(1, ...bars.map((b) => b.value));
  const w = (width - pad.l - pad.r) / Math.max(1, bars.length);
  const inner = height - pad.t - pad.b;
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart bars", role: "img",
    "aria-label": name });
  root.append(title(name));
  root.append(svg("line", { x1: pad.l, y1: pad.t + inner, x2: width - pad.r, y2: pad.t + inner, class: "axis" }));
  root.append(label(pad.l - 4, pad.t + 8, String(max), "tick", "end"));
  root.append(label(pad.l - 4, pad.t + inner, "0", "tick", "end"));
  bars.forEach((b, i) => {
    const bh = (b.value / max) * inner;
    const x = pad.l + i * w;
    root.append(svg("rect", { x: x + 1, y: pad.t + inner - bh, width: Math.max(1, w - 2), height: bh,
      class: "bar", "data-value": b.value }, title(`${b.label}: ${b.value}`)));
    if (i % every === 0) root.append(label(x + w / 2, height - 6, b.label, "tick", "middle"));
  });
  return root;
}

// steps: [{label, value}] from the widest (published) down.
export function funnelChart(steps, { name, width = 640, row = 30 } = {}) {
  const pad = { l: 90, r: 70 };
  const height = steps.length * row + 6;
  const max = Math.max(1, ...steps.map((s) => s.value));
  const inner = width - pad.l - pad.r;
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart funnel", role: "img",
    "aria-label": name });
  root.append(title(name));
  steps.forEach((s, i) => {
    const y = 3 + i * row;
    const bw = (s.value / max) * inner;
    root.append(label(pad.l - 8, y + row / 2 + 4, s.label, "step", "end"));
    root.append(svg("rect", { x: pad.l, y: y + 3, width: Math.max(bw, 1), height: row - 8,
      class: `bar step${i}`, "data-step": s.label, "data-value": s.value }, title(`${s.label}: ${s.value}`)));
    root.append(label(pad.l + bw + 6, y + row / 2 + 4, String(s.value), "value"));
  });
  return root;
}
