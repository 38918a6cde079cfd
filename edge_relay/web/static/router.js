// A small hash router. Each page is one module under pages/ that calls register():
//   register({ id, title, nav, render(main, arg) })
// "#/<id>/<arg>" shows page <id> with <arg> (URI-decoded); "#/" shows the page with id "".
// render() builds the page into <main> and may return a cleanup function, called when the
// user leaves the page. nav: true lists the page in the navigation; visible() (optional)
// hides it there when it returns false (an admin-only page for a non-admin token).

const pages = new Map();
let current = null;
let cleanup = null;
const listeners = new Set();

export function register(page) {
  pages.set(page.id, page);
}

export function navPages() {
  return [...pages.values()].filter((p) => p.nav && (!p.visible || p.visible()));
}

export function parse(hash) {
  const path = (hash || "").replace(/^#\/?/, "");
  const slash = path.indexOf("/");
  const id = slash < 0 ? path : path.slice(0, slash);
  let arg = slash < 0 ? "" : path.slice(slash + 1);
  try {
    arg = decodeURIComponent(arg);
  } catch {
    arg = "";
  }
  return { id, arg };
}

export function href(id, arg) {
  return "#/" + id + (arg ? "/" + encodeURIComponent(arg) : "");
}

export function go(id, arg) {
  location.hash = href(id, arg);
}

export function onRoute(fn) {
  listeners.add(fn);
}

export function route() {
  return current;
}

let shown = 0;

function show(main) {
  const { id, arg } = parse(location.hash);
  const page = pages.get(id) || pages.get("");
  if (cleanup) cleanup();
  cleanup = null;
  main.replaceChildren();
  current = { id: page.id, arg };
  document.title = (page.title ? page.title + " · " : "") + "edgepush";
  cleanup = page.render(main, arg) || null;
  for (const fn of listeners) fn(current);
  // after a navigation (not on the first load), a screen reader starts at the new heading
  const heading = main.querySelector("h1");
  if (heading && shown++ > 0) {
    heading.tabIndex = -1;
    heading.focus();
  }
}

export function start(main) {
  window.addEventListener("hashchange", () => show(main));
  show(main);
}
