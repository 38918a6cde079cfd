// Markdown for messages published with "Markdown: yes" (content_type text/markdown): a small
// subset turned straight into DOM nodes. There is no HTML in or out: text only ever becomes
// text nodes, and the only elements made are the allow-listed ones below. Links keep an
// http(s) or mailto URL; any other (javascript:, data:, relative) shows as plain text.
//
// Blocks: paragraphs, # headings (shown as h3-h5 inside a message), - * + and 1. lists,
// > quotes, ``` fenced code, --- rules. Inline: `code`, **bold**, *em* / _em_,
// ~~strike~~, [text](url), <http://autolink> and bare http(s) URLs.

export function safeUrl(url, { mailto = true } = {}) {
  if (typeof url !== "string") return null;
  const trimmed = url.trim();
  let parsed;
  try {
    parsed = new URL(trimmed);
  } catch {
    return null;
  }
  const ok = parsed.protocol === "http:" || parsed.protocol === "https:" ||
    (mailto && parsed.protocol === "mailto:");
  return ok ? parsed.href : null;
}

function el(tag, children) {
  const e = document.createElement(tag);
  for (const c of children) e.append(c);
  return e;
}

const INLINE = [
  // [pattern, build(match) -> Node]
  [/`([^`]+)`/, (m) => el("code", [m[1]])],
  [/\*\*(.+?)\*\*/, (m) => el("strong", inline(m[1]))],
  [/__(.+?)__/, (m) => el("strong", inline(m[1]))],
  [/~~(.+?)~~/, (m) => el("del", inline(m[1]))],
  [/\*([^*\s][^*]*?)\*/, (m) => el("em", inline(m[1]))],
  [/(?<![\w])_([^_\s][^_]*?)_(?![\w])/, (m) => el("em", inline(m[1]))],
  [/\[([^\]]+)\]\(([^)\s]+)\)/, (m) => link(m[2], inline(m[1]), m[0])],
  [/<((?:https?|mailto):[^>\s]+)>/, (m) => link(m[1], [m[1]], m[0])],
  [/https?:\/\/[^\s<>()]+[^\s<>().,;:!?'"]/, (m) => link(m[0], [m[0]], m[0])],
];

function link(url, children, original) {
  const href = safeUrl(url);
  if (!href) return document.createTextNode(original);
  const a = el("a", children);
  a.href = href;
  a.rel = "noopener noreferrer nofollow";
  a.target = "_blank";
  return a;
}

export function inline(text) {
  const out = [];
  let rest = text;
  while (rest) {
    let best = null;
    for (const [re, build] of INLINE) {
      const m = re.exec(rest);
      if (m && (!best || m.index < best.m.index)) best = { m, build };
    }
    if (!best) {
      out.push(rest);
      break;
    }
    if (best.m.index > 0) out.push(rest.slice(0, best.m.index));
    out.push(best.build(best.m));
    rest = rest.slice(best.m.index + best.m[0].length);
  }
  return out;
}

const LIST_ITEM = /^\s{0,3}(?:([-*+])|(\d{1,9})[.)])\s+(.*)$/;

export function render(text) {
  const root = document.createElement("div");
  root.className = "md";
  const lines = String(text).replace(/\r\n?/g, "\n").split("\n");
  let i = 0;
  let para = [];
  const flush = () => {
    if (para.length) root.append(el("p", inline(para.join(" "))));
    para = [];
  };
  while (i < lines.length) {
    const line = lines[i];
    let m;
    if (/^\s*```/.test(line)) {
      flush();
      const code = [];
      i++;
      while (i < lines.length && !/^\s*```/.test(lines[i])) code.push(lines[i++]);
      i++;
      root.append(el("pre", [el("code", [code.join("\n")])]));
      continue;
    }
    if ((m = /^\s{0,3}(#{1,3})\s+(.*)$/.exec(line))) {
      flush();
      root.append(el("h" + (m[1].length + 2), inline(m[2])));
    } else if (/^\s{0,3}([-*_])(\s*\1){2,}\s*$/.test(line)) {
      flush();
      root.append(document.createElement("hr"));
    } else if (/^\s{0,3}>/.test(line)) {
      flush();
      const quoted = [];
      while (i < lines.length && /^\s{0,3}>/.test(lines[i])) {
        quoted.push(lines[i++].replace(/^\s{0,3}>\s?/, ""));
      }
      root.append(el("blockquote", inline(quoted.join(" "))));
      continue;
    } else if ((m = LIST_ITEM.exec(line))) {
      flush();
      const list = document.createElement(m[1] ? "ul" : "ol");
      while (i < lines.length && (m = LIST_ITEM.exec(lines[i]))) {
        list.append(el("li", inline(m[3])));
        i++;
      }
      root.append(list);
      continue;
    } else if (!line.trim()) {
      flush();
    } else {
      para.push(line.trim());
    }
    i++;
  }
  flush();
  return root;
}
