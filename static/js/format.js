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
