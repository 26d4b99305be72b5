// Screen-reader announcements of new messages: one polite live region (#announcer,
// visually hidden). A message from someone else in the open conversation is read out
// ("Bo Berg: see you at noon"); in any other conversation a summary per conversation
// ("3 new messages from Bo Berg", "2 new messages in Book club"; the count is all that is
// unread there), leaving out muted ones. Only live events count (`via: "live"`): the pages a catch-up fetch brings after
// a reconnect (`via: "fetch"`), older pages and my own sends are not news, so they are
// never read out as a flood. Events that arrive together are gathered for a moment and
// announced as one text, so a burst is not cut off by the next announcement.

import { plainText } from "../markup.js";
import { client, current, me, nameOf } from "./shared.js";

const GATHER_MS = 400;
const MAX_SPOKEN = 300; // characters of one message body read out

const region = document.getElementById("announcer");
let queued = []; // {conversation, sender, text}
let timer = null;

function spoken(m) {
  const text = plainText(m.body) || (m.attachments?.length ? `sent ${m.attachments.length === 1 ? "a file" : `${m.attachments.length} files`}` : "");
  return text.length > MAX_SPOKEN ? `${text.slice(0, MAX_SPOKEN)}…` : text;
}

function plural(n) {
  return `${n} new message${n === 1 ? "" : "s"}`;
}

/** The text for what was gathered: the open conversation's messages, then a summary per other one. */
export function announcementText(items, open) {
  const parts = [];
  const others = new Map(); // conversation id -> {count, senders}
  for (const item of items) {
    if (item.conversation === open) {
      parts.push(`${nameOf(item.sender)}: ${item.text}`);
      continue;
    }
    const entry = others.get(item.conversation) || { count: 0, senders: new Set() };
    entry.count += 1;
    entry.senders.add(item.sender);
    others.set(item.conversation, entry);
  }
  for (const [id, { count: gathered, senders }] of others) {
    const c = client.conversation(id);
    const title = c?.title || "a conversation";
    // All that is unread there: a burst split over two announcements ends with the total.
    const count = Math.max(gathered, c?.unread || 0);
    if (c?.kind === "group") {
      const from = senders.size === 1 ? ` from ${nameOf([...senders][0])}` : "";
      parts.push(`${plural(count)}${from} in ${title}`);
    } else {
      parts.push(`${plural(count)} from ${title}`);
    }
  }
  return parts.join(". ");
}

function flush() {
  timer = null;
  const text = announcementText(queued, current);
  queued = [];
  if (!text) return;
  // Emptied first: the same text twice in a row is announced twice.
  region.textContent = "";
  setTimeout(() => {
    region.textContent = text;
  }, 50);
}

export function install() {
  if (!region) return;
  client.addEventListener("messages", ({ detail }) => {
    if (detail.via !== "live") return;
    const id = detail.conversation;
    const c = client.conversation(id);
    if (id !== current && c?.muted) return;
    for (const m of detail.messages) {
      // New text messages only: an edit or a delete comes with a version past its seq.
      if (m.sender === me.id || m.kind !== "text" || m.deleted || m.version !== m.seq) continue;
      queued.push({ conversation: id, sender: m.sender, text: spoken(m) });
    }
    if (queued.length && timer === null) timer = setTimeout(flush, GATHER_MS);
  });
}
