// Building DOM without HTML strings: every user-provided string goes in as a text node
// (or through textContent); nothing here parses markup (no innerHTML anywhere).

const SVG = "http://www.w3.org/2000/svg";

/**
 * Create an element: `h("button", {class: "x", type: "button", onclick: fn}, "text", node)`.
 * Attributes are set with setAttribute (so `href`/`src` need safeUrl first); `on*`
 * keys add listeners; `text` sets textContent; children strings become text nodes.
 */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "text") el.textContent = String(value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on")) {
      if (typeof value === "function") el.addEventListener(key.slice(2), value); // never a string handler
    }
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/**
 * Make `el` look like `fresh` (an element of the same tag), keeping every node of `el`
 * that has a counterpart in the same place: attributes and text change in place. A
 * press on a row drawn again between the button going down and up must still click it,
 * and the browser clicks only when both land on nodes still in the page. The event
 * listeners of `fresh`'s descendants are not carried over (only nodes that are new are
 * taken, with theirs).
 */
export function morph(el, fresh) {
  for (const name of el.getAttributeNames()) if (!fresh.hasAttribute(name)) el.removeAttribute(name);
  for (const name of fresh.getAttributeNames()) {
    const value = fresh.getAttribute(name);
    if (el.getAttribute(name) !== value) el.setAttribute(name, value);
  }
  const have = [...el.childNodes];
  const want = [...fresh.childNodes];
  want.forEach((node, at) => {
    const old = have[at];
    if (!old) el.append(node);
    else if (old.nodeName !== node.nodeName) old.replaceWith(node);
    else if (node.nodeType === Node.ELEMENT_NODE) morph(old, node);
    else if (old.nodeValue !== node.nodeValue) old.nodeValue = node.nodeValue;
  });
  for (const old of have.slice(want.length)) old.remove();
  return el;
}

/** Make `container`'s children exactly `items`, in order, moving only those out of place. */
export function placeChildren(container, items) {
  let node = container.firstChild;
  for (const item of items) {
    if (item === node) node = node.nextSibling;
    else container.insertBefore(item, node);
  }
  while (node) {
    const next = node.nextSibling;
    node.remove();
    node = next;
  }
}

/**
 * The rows of a list drawn again and again (conversations, a group's members): each key
 * keeps its row, changed in place by `morph`, so a click that spans a redraw is not
 * lost. A row's own listeners stay those it was first drawn with: act on its key, or
 * listen on the container.
 */
export class Rows {
  #drawn = new Map();

  constructor(container) {
    this.container = container;
  }

  /** Show a row for each of `keys`, in order; `make(key)` draws it afresh. */
  draw(keys, make) {
    const rows = keys.map((key) => {
      const fresh = make(key);
      const row = this.#drawn.get(key);
      if (row && row.nodeName === fresh.nodeName) return morph(row, fresh);
      this.#drawn.set(key, fresh);
      return fresh;
    });
    const kept = new Set(keys);
    for (const key of this.#drawn.keys()) if (!kept.has(key)) this.#drawn.delete(key);
    placeChildren(this.container, rows);
  }

  clear() {
    this.#drawn.clear();
    this.container.replaceChildren();
  }
}

export function clear(el) {
  el.replaceChildren();
  return el;
}

/** Return `url` if it is an http(s) URL (or a same-origin path), else null. */
export function safeUrl(url) {
  try {
    const parsed = new URL(url, location.origin);
    return parsed.protocol === "http:" || parsed.protocol === "https:" ? parsed.href : null;
  } catch {
    return null;
  }
}

const ICONS = {
  send: "M3.4 20.4 21 12 3.4 3.6 3.4 10.1 15.9 12 3.4 13.9z",
  attach:
    "M16.5 6.8v10.6a4.5 4.5 0 0 1-9 0V5.8a3 3 0 0 1 6 0v10.5a1.5 1.5 0 0 1-3 0V6.8H9v9.5a3 3 0 0 0 6 0V5.8a4.5 4.5 0 0 0-9 0v11.6a6 6 0 0 0 12 0V6.8z",
  back: "M20 11H7.8l5.6-5.6L12 4l-8 8 8 8 1.4-1.4L7.8 13H20z",
  search: "M15.5 14h-.8l-.3-.3A6.5 6.5 0 1 0 14 15.5l.3.3v.8l5 5 1.5-1.5zm-6 0a4.5 4.5 0 1 1 0-9 4.5 4.5 0 0 1 0 9z",
  edit: "M3 17.2V21h3.8L17.8 10 14 6.2zM20.7 7a1 1 0 0 0 0-1.4l-2.3-2.3a1 1 0 0 0-1.4 0l-1.8 1.8 3.7 3.8z",
  delete: "M6 19a2 2 0 0 0 2 2h8a2 2 0 0 0 2-2V7H6zM19 4h-3.5l-1-1h-5l-1 1H5v2h14z",
  people:
    "M16 11a3 3 0 1 0 0-6 3 3 0 0 0 0 6zm-8 0a3 3 0 1 0 0-6 3 3 0 0 0 0 6zm0 2c-2.3 0-7 1.2-7 3.5V19h14v-2.5C15 14.2 10.3 13 8 13zm8 0h-1c1.2.9 2 2 2 3.5V19h6v-2.5c0-2.3-4.7-3.5-7-3.5z",
  leave: "M10.1 15.6 11.5 17l5-5-5-5-1.4 1.4 2.6 2.6H3v2h9.7zM19 3H5a2 2 0 0 0-2 2v4h2V5h14v14H5v-4H3v4a2 2 0 0 0 2 2h14a2 2 0 0 0 2-2V5a2 2 0 0 0-2-2z",
  chat: "M20 2H4a2 2 0 0 0-2 2v18l4-4h14a2 2 0 0 0 2-2V4a2 2 0 0 0-2-2z",
  group:
    "M12 12.8c1.6 0 3-.4 4.2-.9A2 2 0 0 1 17.5 14v1.5h-11V14a2 2 0 0 1 1.3-2.1c1.2.5 2.6.9 4.2.9zM12 4a3.5 3.5 0 1 1 0 7 3.5 3.5 0 0 1 0-7zM4 13a2 2 0 1 0 0-4 2 2 0 0 0 0 4zm16 0a2 2 0 1 0 0-4 2 2 0 0 0 0 4z",
  compass: "M12 2a10 10 0 1 0 0 20 10 10 0 0 0 0-20zm2.2 12.2L6 18l3.8-8.2L18 6z",
  bell: "M12 22a2 2 0 0 0 2-2h-4a2 2 0 0 0 2 2zm6-6v-5c0-3.1-1.6-5.6-4.5-6.3V4a1.5 1.5 0 0 0-3 0v.7C7.6 5.4 6 7.9 6 11v5l-2 2v1h16v-1z",
  "bell-off":
    "M20 18.7 7.8 6.1 5.3 3.5 4 4.8l2.8 2.8A7.3 7.3 0 0 0 6 11v5l-2 2v1h13.7l2 2 1.3-1.3zM12 22a2 2 0 0 0 2-2h-4a2 2 0 0 0 2 2zm6-7.3V11c0-3.1-1.6-5.6-4.5-6.3V4a1.5 1.5 0 0 0-3 0v.7c-.5.1-1 .3-1.4.5z",
  settings:
    "M19.1 12.9a7.3 7.3 0 0 0 0-1.9l2.1-1.6a.5.5 0 0 0 .1-.6l-1.9-3.3a.5.5 0 0 0-.6-.2l-2.4 1a7 7 0 0 0-1.6-1l-.4-2.5a.5.5 0 0 0-.5-.4h-3.8a.5.5 0 0 0-.5.4l-.4 2.5a7 7 0 0 0-1.6 1l-2.4-1a.5.5 0 0 0-.6.2L2.7 8.9a.5.5 0 0 0 .1.6l2.1 1.6a7.3 7.3 0 0 0 0 1.9l-2.1 1.6a.5.5 0 0 0-.1.6l1.9 3.3c.1.2.4.3.6.2l2.4-1c.5.4 1 .7 1.6 1l.4 2.5c0 .2.2.4.5.4h3.8c.2 0 .4-.2.5-.4l.4-2.5c.6-.2 1.1-.6 1.6-1l2.4 1c.2.1.5 0 .6-.2l1.9-3.3a.5.5 0 0 0-.1-.6zM12 15.6a3.6 3.6 0 1 1 0-7.2 3.6 3.6 0 0 1 0 7.2z",
  close: "M19 6.4 17.6 5 12 10.6 6.4 5 5 6.4 10.6 12 5 17.6 6.4 19 12 13.4 17.6 19 19 17.6 13.4 12z",
  check: "M9 16.2 4.8 12l-1.4 1.4L9 19 21 7l-1.4-1.4z",
  checks: "M18 7l-1.4-1.4-6.3 6.3 1.4 1.4zm4.2-1.4L11.7 16.2 7.5 12l-1.4 1.4 5.6 5.6 12-12zM.4 13.4 6 19l1.4-1.4L1.8 12z",
  clock: "M12 2a10 10 0 1 0 0 20 10 10 0 0 0 0-20zm0 18a8 8 0 1 1 0-16 8 8 0 0 1 0 16zm.5-13H11v6l5.2 3.2.8-1.3-4.5-2.7z",
  alert: "M1 21h22L12 2zm12-3h-2v-2h2zm0-4h-2v-4h2z",
  file: "M14 2H6a2 2 0 0 0-2 2v16a2 2 0 0 0 2 2h12a2 2 0 0 0 2-2V8zm-1 7V3.5L18.5 9z",
  logout: "M17 7l-1.4 1.4 2.6 2.6H8v2h10.2l-2.6 2.6L17 17l5-5zM4 5h8V3H4a2 2 0 0 0-2 2v14a2 2 0 0 0 2 2h8v-2H4z",
};

/** Return an inline SVG icon (decorative: hidden from assistive technology). */
export function icon(name, className = "icon") {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("class", className);
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("focusable", "false");
  const path = document.createElementNS(SVG, "path");
  path.setAttribute("d", ICONS[name] || "");
  svg.append(path);
  return svg;
}

/** Decode the five entities Python's html.escape produces (search snippets). */
function unescapeHtml(text) {
  return text.replace(/&(amp|lt|gt|quot|#x27);/g, (_, e) => ({ amp: "&", lt: "<", gt: ">", quot: '"', "#x27": "'" })[e]);
}

/**
 * Render a search snippet (escaped text with <mark> around matches) as nodes without
 * parsing HTML: split on the two literal tags, decode the escapes, and make each part's
 * nodes with `format` (text nodes by default; the search formats them like messages).
 */
export function snippetNodes(snippet, format = (text) => [document.createTextNode(text)]) {
  const nodes = [];
  const parts = String(snippet).split(/(<mark>|<\/mark>)/);
  let marked = false;
  for (const part of parts) {
    if (part === "<mark>") marked = true;
    else if (part === "</mark>") marked = false;
    else if (part) nodes.push(marked ? h("mark", {}, format(unescapeHtml(part))) : format(unescapeHtml(part)));
  }
  return nodes;
}

/** Return `text` as text nodes, each of `ranges` ([{start, end, class}], in order) a span. */
export function spans(text, ranges) {
  const nodes = [];
  let last = 0;
  for (const range of ranges) {
    if (range.start > last) nodes.push(document.createTextNode(text.slice(last, range.start)));
    nodes.push(h("span", { class: range.class, text: text.slice(range.start, range.end) }));
    last = range.end;
  }
  if (last < text.length) nodes.push(document.createTextNode(text.slice(last)));
  return nodes;
}
