// Formatting for the UI: times, day separators, names, sizes, presence.

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const dayFormat = new Intl.DateTimeFormat(undefined, {
  weekday: "long",
  day: "numeric",
  month: "long",
  year: "numeric",
});
const shortDayFormat = new Intl.DateTimeFormat(undefined, { day: "numeric", month: "short" });
const fullFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "full", timeStyle: "short" });

export const toDate = (iso) => (iso ? new Date(iso) : null);

export function dayKey(date) {
  return `${date.getFullYear()}-${date.getMonth()}-${date.getDate()}`;
}

function daysAgo(date) {
  const start = (d) => new Date(d.getFullYear(), d.getMonth(), d.getDate()).getTime();
  return Math.round((start(new Date()) - start(date)) / 86_400_000);
}

/** "Today", "Yesterday", or the full date: the text of a day separator. */
export function dayLabel(date) {
  const ago = daysAgo(date);
  if (ago === 0) return "Today";
  if (ago === 1) return "Yesterday";
  return dayFormat.format(date);
}

export const clock = (date) => timeFormat.format(date);
export const fullDate = (date) => fullFormat.format(date);

/** The time shown in the conversation list: a clock today, else a short date. */
export function listTime(iso) {
  const date = toDate(iso);
  if (!date) return "";
  const ago = daysAgo(date);
  if (ago === 0) return clock(date);
  if (ago === 1) return "Yesterday";
  return shortDayFormat.format(date);
}

export function initials(name) {
  const words = String(name || "?").trim().split(/\s+/).filter(Boolean);
  const letters = words.length > 1 ? [words[0], words[words.length - 1]] : [words[0] || "?"];
  return letters.map((w) => [...w][0] || "").join("").toUpperCase().slice(0, 2) || "?";
}

/** One of eight avatar colours, stable per id (all pass AA with white text). */
export const avatarHue = (id) => `hue-${Math.abs(Number(id) || 0) % 8}`;

/** A media length for people: "0:07", "12:03", "1:02:03" (null for an unknown one). */
export function duration(ms) {
  if (!Number.isFinite(ms) || ms < 0) return null;
  const total = Math.round(ms / 1000);
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = String(total % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
}

export function fileSize(bytes) {
  if (!(bytes >= 0)) return "";
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(bytes < 10240 ? 1 : 0)} KB`;
  return `${(bytes / (1024 * 1024)).toFixed(1)} MB`;
}

export const PRESENCE_LABELS = {
  online: "Online",
  away: "Away",
  busy: "Busy (do not disturb)",
  offline: "Offline",
};

export function presenceText(entry) {
  if (!entry) return "";
  if (entry.state === "offline" && entry.last_seen) {
    const seen = toDate(entry.last_seen);
    const ago = daysAgo(seen);
    if (ago === 0) return `Last seen today at ${clock(seen)}`;
    if (ago === 1) return `Last seen yesterday at ${clock(seen)}`;
    return `Last seen ${shortDayFormat.format(seen)}`;
  }
  return PRESENCE_LABELS[entry.state] || "";
}

// Mentions, by the server's rule (messaging/mentions.py): an `@` that does not follow a
// username character, then the longest run of username characters (they include `.`,
// `+`, `-` and `@`). A trailing `.`, `-` or `+` may end the sentence instead, so the name
// is also tried without it.
const MENTION_RE = /(?<![A-Za-z0-9_.+@-])@([A-Za-z0-9_.+@-]{1,150})/g;
// The `@word` being typed right before the caret (empty after a bare `@`).
const TYPING_MENTION_RE = /(?<![A-Za-z0-9_.+@-])@([A-Za-z0-9_.+@-]{0,150})$/;

/**
 * Find the mentions in `text` of the names `isName(lower-cased name)` accepts; answer
 * `[{start, end, name}]` (`end` leaves out a trailing `.`, `-` or `+` not in the name).
 */
export function findMentions(text, isName) {
  const found = [];
  if (!text.includes("@")) return found;
  for (const match of text.matchAll(MENTION_RE)) {
    let name = match[1].toLowerCase();
    if (!isName(name)) {
      const trimmed = name.replace(/[.+-]+$/, "");
      if (!trimmed || trimmed === name || !isName(trimmed)) continue;
      name = trimmed;
    }
    found.push({ start: match.index, end: match.index + 1 + name.length, name });
  }
  return found;
}

/** The mention being typed at the end of `before` (the text up to the caret): `{start, query}` or null. */
export function typingMention(before) {
  const match = TYPING_MENTION_RE.exec(before);
  return match ? { start: match.index, query: match[1] } : null;
}

// Characters as the server counts them (code points): an emoji is one, though it takes
// two of JavaScript's UTF-16 units.
export function characterCount(text) {
  let count = 0;
  for (const _ of text) count += 1;
  return count;
}
