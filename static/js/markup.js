// Message formatting: a small, safe Markdown subset, rendered by building DOM nodes.
//
// Blocks: ``` code blocks ```, "> " quotes, "- " / "* " bullet lists, "1. " numbered
// lists; the rest is text (line breaks kept). Inline: `code`, *bold* or **bold**, _italic_,
// ~strike~ or ~~strike~~, and links: http(s) URLs and addresses without a scheme
// (www.example.com, example.org/path?q=1; shown as written, opened over https). Text is
// only ever put in text nodes: no user text is parsed as HTML, no attribute but a link's
// checked href is set from it, and only http(s) URLs become links.
//
// The work is bounded for the longest message (100,000 characters): every pass is one
// scan, closing markers are found by binary search over positions gathered in one pass,
// and formatting nests at most MAX_DEPTH deep.

import { h, safeUrl } from "./dom.js";

const MAX_DEPTH = 3;
const FENCE = "```";

// Emphasis: the marker, the element it makes. Doubled markers are tried first.
const MARKERS = [
  ["**", "strong"],
  ["~~", "s"],
  ["*", "strong"],
  ["_", "em"],
  ["~", "s"],
];
const BOUNDARY = /[\s\p{P}\p{S}]/u;
const SPACE = /\s/u;

// Links: with a scheme, from www., or a bare domain of a common top-level domain.
const TLDS =
  "com|org|net|edu|gov|io|dev|app|co|me|info|biz|ai|eu|uk|de|fr|es|it|nl|be|ch|at|se|no|dk|fi|pl|pt|ru|jp|cn|in|br|ca|au|us|tv|xyz|site|online|tech|blog|news|page";
const LINK = new RegExp(
  String.raw`\bhttps?:\/\/[^\s<>"']+[^\s<>"'.,;:!?)\]}*_~]` +
    String.raw`|\bwww\.[a-z0-9-]+(?:\.[a-z0-9-]+)+(?:[/?#][^\s<>"']*[^\s<>"'.,;:!?)\]}*_~])?` +
    String.raw`|\b[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*\.(?:${TLDS})\b(?![@.\w])(?:[/?#][^\s<>"']*[^\s<>"'.,;:!?)\]}*_~])?`,
  "giu",
);
// Embeddings and overrides (U+202A-U+202E) make text show in another order than it is
// written: each is shown as a visible mark instead of acting.
const BIDI_OVERRIDE = /([\u202a-\u202e])/;

const textNodes = (text) => (text ? [document.createTextNode(text)] : []);

/**
 * Return the nodes of a message body. `leaf` turns plain text (outside code and links)
 * into nodes, e.g. to highlight mentions; the default makes text nodes.
 */
export function formatted(text, leaf = textNodes) {
  const nodes = [];
  for (const block of blocks(String(text))) {
    if (block.kind === "code") {
      nodes.push(h("pre", { class: "md-pre" }, h("code", { text: block.text })));
    } else if (block.kind === "quote") {
      nodes.push(h("blockquote", { class: "md-quote" }, inline(block.text, leaf)));
    } else if (block.kind === "ul" || block.kind === "ol") {
      const props = block.kind === "ol" && block.start !== 1 ? { start: String(block.start) } : {};
      nodes.push(h(block.kind, props, ...block.items.map((item) => h("li", {}, inline(item, leaf)))));
    } else {
      nodes.push(...inline(block.text, leaf));
    }
  }
  return nodes;
}

/** Return the inline formatting of a fragment (a search snippet's part), blocks ignored. */
export function inlineFormatted(text) {
  return inline(String(text), textNodes);
}

/** Return whether a body has block formatting (so it needs a block container). */
export function hasBlocks(text) {
  return blocks(String(text)).some((b) => b.kind !== "text");
}

// A preview shows the start of a body: parse only that much of a long one (the list is
// drawn again on every event, and a body may have 100,000 characters).
const PREVIEW_SOURCE = 1000;

/** Return the start of a body as plain text: markers and fences taken away (previews). */
export function plainText(text) {
  const parts = [];
  for (const block of blocks(String(text ?? "").slice(0, PREVIEW_SOURCE))) {
    if (block.kind === "ul" || block.kind === "ol") parts.push(block.items.map(stripInline).join("\n"));
    else if (block.kind === "code") parts.push(block.text);
    else parts.push(stripInline(block.text));
  }
  return parts.join("\n");
}

function stripInline(text) {
  const out = [];
  const walk = (nodes) => {
    for (const node of nodes) {
      if (node.nodeType === Node.TEXT_NODE) out.push(node.textContent);
      else if (node.tagName === "SPAN" && node.classList.contains("bidi-control")) out.push(node.textContent);
      else walk([...node.childNodes]);
    }
  };
  walk(inline(text, textNodes));
  return out.join("");
}

// --- blocks ---------------------------------------------------------------------------

const QUOTE_LINE = /^> ?(.*)$/;
const BULLET_LINE = /^[-*•] +(.*)$/;
const NUMBER_LINE = /^(\d{1,9})[.)] +(.*)$/;

function blocks(text) {
  const lines = text.split("\n");
  const out = [];
  let plain = [];
  const flush = () => {
    if (plain.length) out.push({ kind: "text", text: plain.join("\n") });
    plain = [];
  };
  for (let i = 0; i < lines.length; ) {
    const line = lines[i];
    if (line.startsWith(FENCE)) {
      const end = lines.findIndex((l, j) => j > i && l.trimEnd() === FENCE);
      if (end !== -1) {
        flush();
        const first = line.slice(FENCE.length);
        const body = (first.trim() ? [first] : []).concat(lines.slice(i + 1, end));
        out.push({ kind: "code", text: body.join("\n") });
        i = end + 1;
        continue;
      }
    }
    const group = (re, make) => {
      const items = [];
      let j = i;
      for (; j < lines.length; j++) {
        const m = re.exec(lines[j]);
        if (!m) break;
        items.push(m);
      }
      flush();
      out.push(make(items));
      i = j;
    };
    if (QUOTE_LINE.test(line)) group(QUOTE_LINE, (ms) => ({ kind: "quote", text: ms.map((m) => m[1]).join("\n") }));
    else if (BULLET_LINE.test(line)) group(BULLET_LINE, (ms) => ({ kind: "ul", items: ms.map((m) => m[1]) }));
    else if (NUMBER_LINE.test(line))
      group(NUMBER_LINE, (ms) => ({ kind: "ol", start: Number(ms[0][1]), items: ms.map((m) => m[2]) }));
    else {
      plain.push(line);
      i++;
    }
  }
  flush();
  return out;
}

// --- inline ---------------------------------------------------------------------------

/** Inline nodes of one block's text: direction marks, code spans, links, emphasis. */
function inline(text, leaf) {
  if (!BIDI_OVERRIDE.test(text)) return codeSpans(text, leaf);
  return text.split(BIDI_OVERRIDE).flatMap((part, i) => {
    if (i % 2 === 0) return codeSpans(part, leaf);
    const code = `U+${part.codePointAt(0).toString(16).toUpperCase()}`;
    return [h("span", { class: "bidi-control", title: `A direction-changing character (${code}) was here`, text: `[${code}]` })];
  });
}

function codeSpans(text, leaf) {
  const nodes = [];
  let last = 0;
  let open = text.indexOf("`");
  while (open !== -1) {
    const close = text.indexOf("`", open + 1);
    if (close === -1) break;
    const newline = text.indexOf("\n", open + 1);
    if (close > open + 1 && (newline === -1 || newline > close)) {
      nodes.push(...links(text.slice(last, open), leaf));
      nodes.push(h("code", { class: "md-code", text: text.slice(open + 1, close) }));
      last = close + 1;
      open = text.indexOf("`", last);
    } else {
      open = newline !== -1 && newline < close ? text.indexOf("`", newline) : close;
    }
  }
  nodes.push(...links(text.slice(last), leaf));
  return nodes;
}

/** Return the https URL a found link opens, or null (not http(s), or not a URL). */
function linkTarget(found) {
  const withScheme = /^https?:\/\//i.test(found) ? found : `https://${found}`;
  return safeUrl(withScheme);
}

function links(text, leaf) {
  if (!text) return [];
  const nodes = [];
  let last = 0;
  for (const match of text.matchAll(LINK)) {
    const href = linkTarget(match[0]);
    if (!href) continue;
    if (match.index > last) nodes.push(...emphasis(text.slice(last, match.index), leaf, 0));
    nodes.push(h("a", { href, target: "_blank", rel: "noopener noreferrer nofollow", text: match[0] }));
    last = match.index + match[0].length;
  }
  if (last < text.length) nodes.push(...emphasis(text.slice(last), leaf, 0));
  return nodes;
}

/** The positions where each marker may close: after a non-space, before a boundary. */
function closers(text) {
  const found = new Map(MARKERS.map(([marker]) => [marker, []]));
  for (let j = 1; j < text.length; j++) {
    const c = text[j];
    if (c !== "*" && c !== "_" && c !== "~") continue;
    for (const [marker] of MARKERS) {
      if (!text.startsWith(marker, j)) continue;
      const after = text[j + marker.length];
      const before = text[j - 1];
      if (SPACE.test(before) || before === c) continue;
      if (after === undefined || (after !== c && BOUNDARY.test(after))) found.get(marker).push(j);
    }
  }
  return found;
}

function firstAfter(sorted, position) {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (sorted[mid] < position) lo = mid + 1;
    else hi = mid;
  }
  return lo < sorted.length ? sorted[lo] : -1;
}

function emphasis(text, leaf, depth) {
  if (depth >= MAX_DEPTH || !/[*_~]/.test(text)) return leaf(text);
  const ends = closers(text);
  const nodes = [];
  let last = 0;
  let lineEnd = -1;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c !== "*" && c !== "_" && c !== "~") continue;
    if (i > 0 && !BOUNDARY.test(text[i - 1])) continue;
    const entry = MARKERS.find(([marker]) => text.startsWith(marker, i));
    const [marker, tag] = entry;
    const from = i + marker.length;
    if (from >= text.length || SPACE.test(text[from]) || text[from] === c) continue;
    if (lineEnd < from) {
      lineEnd = text.indexOf("\n", from);
      if (lineEnd === -1) lineEnd = text.length;
    }
    const close = firstAfter(ends.get(marker), from);
    if (close === -1 || close > lineEnd) continue;
    if (i > last) nodes.push(...leaf(text.slice(last, i)));
    nodes.push(h(tag, { class: "md" }, emphasis(text.slice(from, close), leaf, depth + 1)));
    last = close + marker.length;
    i = last - 1;
  }
  if (last < text.length) nodes.push(...leaf(text.slice(last)));
  return nodes;
}
