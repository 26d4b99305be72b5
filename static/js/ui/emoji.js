// Emoji: the picker beside the composer (a search box over a grid of emoji, the recently
// used ones first) and the `:shortcode:` completion the composer offers while typing
// (`shortcodes`, one of its completion sources; a whole `:smile:` becomes 😄 by itself).
//
// The picker is a non-modal dialog: its search box has the focus when it opens; Down (or
// Tab) goes to the grid, a listbox whose active emoji the arrow keys move (Up, Down by
// rows as drawn; Home, End); Enter (or a click) inserts it at the composer's caret and
// closes; Escape closes; either way the focus is back in the composer. Typing a letter in
// the grid goes back to the search box. The recent emoji are kept per user in
// localStorage; the data (static/js/emoji-data.js) is static, nothing is fetched.

import { h } from "../dom.js";
import { EMOJI_GROUPS } from "../emoji-data.js";
import { $, me, ui } from "./shared.js";

/** Every emoji: {char, name, codes, group}, in the picker's order. */
export const EMOJI = EMOJI_GROUPS.flatMap((group) => group.emoji.map(([char, name, codes]) => ({ char, name, codes, group: group.name })));
const byCode = new Map(EMOJI.flatMap((e) => e.codes.map((code) => [code, e])));
const byChar = new Map(EMOJI.map((e) => [e.char, e]));

// ---------------------------------------------------------------- recently used

const RECENT_KEY = `chat.emoji.recent.${me.id}`;
const MAX_RECENT = 16;

export function recentEmoji() {
  try {
    const stored = JSON.parse(localStorage.getItem(RECENT_KEY) || "[]");
    return Array.isArray(stored) ? stored.map((char) => byChar.get(char)).filter(Boolean).slice(0, MAX_RECENT) : [];
  } catch {
    return [];
  }
}

function noteUsed(e) {
  const chars = [e.char, ...recentEmoji().map((r) => r.char).filter((c) => c !== e.char)].slice(0, MAX_RECENT);
  try {
    localStorage.setItem(RECENT_KEY, JSON.stringify(chars));
  } catch {
    // storage full or refused: recents are a convenience
  }
}

// ---------------------------------------------------------------- search

/**
 * Emoji whose shortcode or name matches `q`: a shortcode starting with it first, then a
 * word of the name starting with it, then either containing it; recent ones first within
 * each rank.
 */
export function matchEmoji(q, limit = Infinity) {
  const needle = q.trim().toLowerCase().replace(/^:+|:+$/g, "");
  if (!needle) return [];
  const recent = new Map(recentEmoji().map((e, index) => [e.char, index]));
  const ranked = [];
  EMOJI.forEach((e, order) => {
    const rank = e.codes.some((code) => code.startsWith(needle))
      ? 0
      : e.name.split(/[\s-]+/).some((word) => word.startsWith(needle))
        ? 1
        : e.codes.some((code) => code.includes(needle)) || e.name.includes(needle)
          ? 2
          : -1;
    if (rank >= 0) ranked.push({ rank, recent: recent.has(e.char) ? recent.get(e.char) : MAX_RECENT, order, e });
  });
  ranked.sort((a, b) => a.rank - b.rank || a.recent - b.recent || a.order - b.order);
  return ranked.slice(0, limit).map(({ e }) => e);
}

const optionId = (prefix, e) => `${prefix}-${[...e.char].map((c) => c.codePointAt(0).toString(16)).join("-")}`;

// ---------------------------------------------------------------- `:shortcode:` completion

// `:` after the start, a space or an opening bracket, then two or more shortcode characters.
const TYPING_SHORTCODE_RE = /(?:^|[\s([{])(:([a-z0-9_+-]{2,40}))$/i;
const TYPED_SHORTCODE_RE = /(?:^|[\s([{])(:([a-z0-9_+-]+):)$/i;

/** A completion source of the composer (see composer.js): emoji by shortcode. */
export const shortcodes = {
  label: "Emoji",
  find(before) {
    const match = TYPING_SHORTCODE_RE.exec(before);
    return match ? { start: before.length - match[1].length, query: match[2] } : null;
  },
  options: (q) => matchEmoji(q, 8),
  key: (e) => e.char,
  id: (e) => optionId("emoji-option", e),
  // The shortcode shown is the one typed so far (`:thu` shows `:thumbsup:`, not `:+1:`).
  render: (e, q) => [
    h("span", { class: "emoji-char", "aria-hidden": "true", text: e.char }),
    h("span", { class: "mention-name", text: `:${e.codes.find((c) => c.startsWith(q.toLowerCase())) || e.codes[0]}:` }),
    h("span", { class: "mention-username", text: e.name }),
  ],
  text: (e) => e.char,
  spaced: false,
  picked: noteUsed,
};

/** A whole known `:shortcode:` just typed at the end of `before`: {start, end, char}, or null. */
export function typedShortcode(before) {
  const match = TYPED_SHORTCODE_RE.exec(before);
  const e = match && byCode.get(match[2].toLowerCase());
  return e ? { start: before.length - match[1].length, end: before.length, char: e.char, e } : null;
}

/** Replace a whole `:shortcode:` just typed before the caret by its emoji; answer whether it did. */
export function replaceTypedShortcode() {
  const caret = ui.input.selectionStart;
  if (ui.input.selectionEnd !== caret) return false;
  const typed = typedShortcode(ui.input.value.slice(0, caret));
  if (!typed) return false;
  ui.input.setRangeText(typed.char, typed.start, typed.end, "end");
  noteUsed(typed.e);
  return true;
}

// ---------------------------------------------------------------- the picker

const picker = {
  button: $("emoji-button"),
  panel: $("emoji-picker"),
  search: $("emoji-search"),
  grid: $("emoji-grid"),
  empty: $("emoji-empty"),
  options: [], // the emoji shown, in order (an emoji may be in "Recently used" too)
  active: 0,
};

export const pickerOpen = () => !picker.panel.hidden;

function option(e, index) {
  return h("span", {
    role: "option",
    class: "emoji-option",
    id: `emoji-pick-${index}`,
    "aria-label": e.name,
    title: `${e.name} :${e.codes[0]}:`,
    "aria-selected": String(index === picker.active),
    "data-index": index,
    text: e.char,
  });
}

function renderPicker() {
  const q = picker.search.value;
  const groups = q.trim()
    ? [{ name: "Search results", emoji: matchEmoji(q) }]
    : [{ name: "Recently used", emoji: recentEmoji() }, ...EMOJI_GROUPS.map((g) => ({ name: g.name, emoji: EMOJI.filter((e) => e.group === g.name) }))];
  picker.options = [];
  const nodes = [];
  for (const group of groups) {
    if (!group.emoji.length) continue;
    const start = picker.options.length;
    picker.options.push(...group.emoji);
    nodes.push(h("div", { role: "group", class: "emoji-group", "aria-label": group.name }, group.emoji.map((e, i) => option(e, start + i))));
  }
  picker.active = Math.min(picker.active, Math.max(0, picker.options.length - 1));
  picker.grid.replaceChildren(...nodes);
  picker.empty.hidden = picker.options.length > 0;
  markActive();
}

function markActive() {
  const previous = picker.grid.querySelector('[aria-selected="true"]');
  previous?.setAttribute("aria-selected", "false");
  const active = picker.grid.querySelector(`[data-index="${picker.active}"]`);
  if (!active) {
    picker.grid.removeAttribute("aria-activedescendant");
    return;
  }
  active.setAttribute("aria-selected", "true");
  picker.grid.setAttribute("aria-activedescendant", active.id);
  active.scrollIntoView({ block: "nearest" });
}

export function openPicker() {
  picker.search.value = "";
  picker.active = 0;
  picker.panel.hidden = false;
  picker.button.setAttribute("aria-expanded", "true");
  renderPicker();
  picker.grid.scrollTop = 0;
  picker.search.focus();
}

export function closePicker({ refocus = false } = {}) {
  if (picker.panel.hidden) return;
  picker.panel.hidden = true;
  picker.button.setAttribute("aria-expanded", "false");
  if (refocus) ui.input.focus();
}

function insert(e) {
  if (!e) return;
  // The composer keeps its selection while the picker has the focus: insert there.
  const start = ui.input.selectionStart;
  const end = ui.input.selectionEnd;
  closePicker({ refocus: true });
  ui.input.setRangeText(e.char, start, end, "end");
  noteUsed(e);
  ui.input.dispatchEvent(new Event("input", { bubbles: true })); // size, draft, typing
}

/** The option drawn in the next row up (-1) or down (+1), nearest in x; null at the edge. */
function optionInRow(direction) {
  const all = [...picker.grid.querySelectorAll(".emoji-option")];
  const here = all[picker.active]?.getBoundingClientRect();
  if (!here) return null;
  const rows = all.map((el) => ({ el, box: el.getBoundingClientRect() }));
  const beyond = rows.filter(({ box }) => (direction > 0 ? box.top > here.top + here.height / 2 : box.top < here.top - here.height / 2));
  if (!beyond.length) return null;
  const rowTop = direction > 0 ? Math.min(...beyond.map(({ box }) => box.top)) : Math.max(...beyond.map(({ box }) => box.top));
  const row = beyond.filter(({ box }) => Math.abs(box.top - rowTop) < here.height / 2);
  const x = here.left + here.width / 2;
  row.sort((a, b) => Math.abs(a.box.left + a.box.width / 2 - x) - Math.abs(b.box.left + b.box.width / 2 - x));
  return Number(row[0].el.dataset.index);
}

function gridKey(event) {
  const count = picker.options.length;
  let next = null;
  if (event.key === "ArrowRight") next = Math.min(count - 1, picker.active + 1);
  else if (event.key === "ArrowLeft") next = Math.max(0, picker.active - 1);
  else if (event.key === "Home") next = 0;
  else if (event.key === "End") next = count - 1;
  else if (event.key === "ArrowDown" || event.key === "ArrowUp") {
    next = optionInRow(event.key === "ArrowDown" ? 1 : -1);
    if (next === null && event.key === "ArrowUp") {
      event.preventDefault();
      picker.search.focus();
      return;
    }
    if (next === null) next = picker.active;
  } else if (event.key === "Enter" || event.key === " ") {
    event.preventDefault();
    insert(picker.options[picker.active]);
    return;
  } else if (event.key === "Escape") {
    event.preventDefault();
    closePicker({ refocus: true });
    return;
  } else if ((event.key?.length === 1 || event.key === "Backspace") && !event.ctrlKey && !event.metaKey && !event.altKey) {
    picker.search.focus(); // the key goes on into the search box
    return;
  } else {
    return;
  }
  event.preventDefault();
  if (count === 0) return;
  picker.active = next;
  markActive();
}

function searchKey(event) {
  if (event.isComposing) return;
  if (event.key === "Enter") {
    event.preventDefault(); // not the composer's submit
    insert(picker.options[picker.active]);
  } else if (event.key === "ArrowDown" && picker.options.length) {
    event.preventDefault();
    picker.grid.focus();
  } else if (event.key === "Escape") {
    event.preventDefault();
    closePicker({ refocus: true });
  }
}

export function install() {
  picker.button.addEventListener("click", () => {
    if (pickerOpen()) closePicker({ refocus: true });
    else openPicker();
  });
  picker.search.addEventListener("input", () => {
    picker.active = 0;
    renderPicker();
    picker.grid.scrollTop = 0;
  });
  picker.search.addEventListener("keydown", searchKey);
  picker.grid.addEventListener("keydown", gridKey);
  picker.grid.addEventListener("focus", markActive);
  picker.grid.addEventListener("click", (event) => {
    const chosen = event.target.closest(".emoji-option");
    if (chosen) insert(picker.options[Number(chosen.dataset.index)]);
  });
  // A click elsewhere, or the focus leaving it, closes the picker.
  document.addEventListener("pointerdown", (event) => {
    if (pickerOpen() && !picker.panel.contains(event.target) && !picker.button.contains(event.target)) closePicker();
  });
  picker.panel.addEventListener("focusout", (event) => {
    const to = event.relatedTarget;
    if (to && !picker.panel.contains(to) && to !== picker.button && to !== ui.input) closePicker();
  });
}
