// The message list: rendering messages (bodies with links and mentions, attachments,
// read marks, day separators, pending sends from the outbox), keeping it in step with
// the client's view, scrolling, loading older messages and marking them read.

import { h, icon, safeUrl, spans } from "../dom.js";
import { formatted, hasBlocks, plainText } from "../markup.js";
import * as fmt from "../format.js";
import { moreButton, toggleReaction } from "./actions.js";
import { deleteMessage, startEdit } from "./composer.js";
import { soon, toast } from "./helpers.js";
import { $, client, current, isGroup, me, nameOf, names, ui, usernames } from "./shared.js";

export const rendered = new Map(); // message list key -> {el, sig}

export function isAtBottom() {
  const box = ui.messages;
  return box.scrollHeight - box.scrollTop - box.clientHeight < 48;
}

export function scrollToBottom() {
  ui.messages.scrollTop = ui.messages.scrollHeight;
  ui.jump.hidden = true;
}

/**
 * The members who left the open group (or were removed) and how far they had read, by
 * their departure's system message (`system.read_seq`): a reader who left still read it.
 */
function departures() {
  return client
    .view(current)
    .filter((m) => m.kind === "system" && ["left", "removed"].includes(m.system?.event) && Number.isInteger(m.system.read_seq))
    .map((m) => ({ seq: m.seq, user: m.system.users?.[0], read_seq: m.system.read_seq }));
}

function markState(message, departed = []) {
  const c = client.conversation(current);
  const members = client.members.get(current);
  if (!members || !c) return { state: "sent" };
  if (c.kind === "direct") {
    const peer = members.get(c.peer);
    if (!peer || c.peer === me.id) return { state: "sent" };
    if (peer.read_seq >= message.seq) return { state: "read" };
    if (peer.delivered_seq >= message.seq) return { state: "delivered" };
    return { state: "sent" };
  }
  const others = [...members.values()].filter((m) => m.id !== me.id);
  // Who read it and left since still counts, in both numbers (unless back in the group).
  const gone = new Set(
    departed
      .filter((d) => d.seq > message.seq && d.read_seq >= message.seq && d.user !== me.id && !members.has(d.user))
      .map((d) => d.user),
  );
  const read = others.filter((m) => m.read_seq >= message.seq).length + gone.size;
  const of = others.length + gone.size;
  return { state: read === of && of ? "read" : "sent", read, of };
}

function marksEl(marks) {
  if (!marks) return null;
  if (marks.of !== undefined) {
    return h("span", { class: "marks group", "data-state": marks.state, text: `Read by ${marks.read} of ${marks.of}` });
  }
  const labels = { sent: "Sent", delivered: "Delivered", read: "Read", pending: "Sending", failed: "Not sent" };
  const icons = { sent: "check", delivered: "checks", read: "checks", pending: "clock", failed: "alert" };
  return h(
    "span",
    { class: "marks", "data-state": marks.state, title: labels[marks.state] },
    icon(icons[marks.state], "icon mark-icon"),
    h("span", { class: "visually-hidden", text: labels[marks.state] }),
  );
}

// A thumbnail the worker is still making answers 404 `thumbnail_pending`: show the file
// meanwhile and try the preview again a few times (docs/protocol.md, Attachments).
const THUMBNAIL_RETRY_MS = 2000;
const THUMBNAIL_TRIES = 15;
const MEDIA = /^(audio|video)\//;

function imageEl(url, thumb, a, m) {
  const time = m?.created_at;
  return h(
    "a",
    {
      class: "attachment image",
      href: url,
      target: "_blank",
      rel: "noopener",
      "aria-label": `${a.filename || "image"}: open in the viewer`,
      dataset: { name: a.filename || "image", sender: m ? nameOf(m.sender) : "", time: time || "" },
    },
    h("img", { src: thumb, alt: a.filename || "image", loading: "lazy", decoding: "async" }),
  );
}

function fileEl(url, a) {
  return h(
    "a",
    { class: "attachment file", href: url, download: a.filename || "file" },
    icon("file"),
    h("span", { class: "file-name", text: a.filename || "file" }),
    h("span", { class: "file-size", text: fmt.fileSize(a.size) }),
  );
}

function previewWhenReady(el, url, thumb, a, m, tries = 0) {
  setTimeout(() => {
    if (!el.isConnected) return; // the message was re-rendered, or the conversation left
    const probe = new Image();
    probe.onload = () => el.replaceWith(imageEl(url, thumb, a, m));
    probe.onerror = () => {
      if (tries + 1 < THUMBNAIL_TRIES) previewWhenReady(el, url, thumb, a, m, tries + 1);
    };
    probe.src = thumb;
  }, THUMBNAIL_RETRY_MS);
}

/** Audio and video play inline with the browser's own controls; a voice message says so. */
function mediaEl(url, a) {
  const audio = (a.content_type || "").startsWith("audio/");
  const name = a.voice ? "Voice message" : a.filename || (audio ? "Audio" : "Video");
  const length = fmt.duration(a.duration_ms);
  const label = length ? `${name}, ${length}` : name;
  return h(
    "figure",
    { class: `attachment media ${audio ? "audio" : "video"}${a.voice ? " voice" : ""}` },
    h(audio ? "audio" : "video", { controls: true, preload: "metadata", src: url, "aria-label": label }),
    h(
      "figcaption",
      {},
      h("span", { class: "media-name", text: name }),
      length ? h("span", { class: "media-length", text: length }) : null,
      h("a", { class: "media-download", href: url, download: a.filename || "media", "aria-label": `Download ${label}` }, "Download"),
    ),
  );
}

function attachmentEl(a, m = null) {
  const url = safeUrl(a.url);
  if (url && MEDIA.test(a.content_type || "")) return mediaEl(url, a);
  const thumb = a.thumbnail_url ? safeUrl(a.thumbnail_url) : null;
  if (thumb && /^image\//.test(a.content_type || "")) {
    if (a.thumbnail !== "pending") return imageEl(url, thumb, a, m);
    const el = fileEl(url, a);
    previewWhenReady(el, url, thumb, a, m);
    return el;
  }
  return fileEl(url, a);
}

/**
 * The members a message mentions, by lower-cased username. Only the ids the server
 * found (`mentions`) count, so the highlight never claims a mention it did not notify;
 * a name shows once its member's username is known (the member list loads on open).
 */
function mentionedNames(m) {
  const byName = new Map();
  for (const id of m.mentions || []) {
    const username = usernames.get(id);
    if (username) byName.set(username.toLowerCase(), id);
  }
  return byName;
}

/** A message body as nodes: links, and each mention a `span.mention` (`mention-me`: of me). */
function bodyNodes(m) {
  const byName = mentionedNames(m);
  if (!byName.size) return formatted(m.body);
  return formatted(m.body, (text) =>
    spans(
      text,
      fmt.findMentions(text, (name) => byName.has(name)).map(({ start, end, name }) => ({
        start,
        end,
        class: byName.get(name) === me.id ? "mention mention-me" : "mention",
      })),
    ),
  );
}

/** The message `m` replies to, as a button that shows it (my copy of it if I have one). */
function replyEl(m) {
  const quoted = m.reply_to;
  const mine = client.stateOf(m.conversation).get(quoted.id);
  const deleted = mine ? mine.deleted : quoted.deleted;
  const sender = mine ? mine.sender : quoted.sender;
  const text = deleted ? "Deleted message" : mine ? plainText(mine.body).slice(0, 100) : quoted.preview;
  const who = sender === null ? "" : sender === me.id ? "You" : nameOf(sender);
  return h(
    "button",
    {
      type: "button",
      class: `reply-quote${deleted ? " deleted" : ""}`,
      "aria-label": `In reply to ${who || "a message"}: ${text}. Show it`,
      onclick: () => {
        if (quoted.seq === null || deleted) toast("That message is no longer available.");
        else revealMessage(m.conversation, { id: quoted.id, seq: quoted.seq });
      },
    },
    who ? h("span", { class: "reply-sender", dir: "auto", text: who }) : null,
    h("span", { class: "reply-preview", dir: "auto", text: text || "Attachment" }),
  );
}

/** The reactions under a bubble: one button per emoji (pressed: mine), which toggles it. */
function reactionsEl(m) {
  return h(
    "div",
    { class: "reactions", role: "group", "aria-label": "Reactions" },
    m.reactions.map((r) => {
      const mine = r.users.includes(me.id);
      const who = r.users.map((id) => (id === me.id ? "you" : nameOf(id))).join(", ");
      return h(
        "button",
        {
          type: "button",
          class: `reaction${mine ? " mine" : ""}`,
          "data-action": `react:${r.emoji}`, // focused again after a redraw
          "aria-pressed": mine ? "true" : "false",
          "aria-label": `${r.emoji} ${r.count}: ${who}`,
          title: who,
          onclick: () => toggleReaction(m, r.emoji),
        },
        h("span", { class: "reaction-emoji", "aria-hidden": "true", text: r.emoji }),
        h("span", { class: "reaction-count", "aria-hidden": "true", text: String(r.count) }),
      );
    }),
  );
}

/** The body's element: a paragraph, or a block when it has lists, quotes or code. */
function bodyEl(text, nodes) {
  return h(hasBlocks(text) ? "div" : "p", { class: "body", dir: "auto" }, nodes);
}

function messageEl(m, { run, marks }) {
  if (m.kind === "system") {
    return h("li", { class: "msg system", "data-id": m.id, "data-seq": m.seq }, h("span", { text: m.body }));
  }
  const own = m.sender === me.id;
  const group = isGroup(current);
  const li = h("li", {
    class: `msg ${own ? "own" : "other"}${run ? " run" : ""}${m.deleted ? " deleted" : ""}`,
    "data-id": m.id,
    "data-seq": m.seq,
    id: `msg-${m.id}`,
    tabindex: "-1",
  });
  if (!own && group) {
    if (!run) li.append(h("p", { class: "sender", dir: "auto", "aria-hidden": "true", text: nameOf(m.sender) }));
  }
  const bubble = h("div", { class: "bubble" }, h("span", { class: "visually-hidden", text: `${nameOf(m.sender)}: ` }));
  if (m.deleted) {
    bubble.append(h("p", { class: "body deleted-text", text: "This message was deleted." }));
  } else {
    if (m.reply_to) bubble.append(replyEl(m));
    if (m.body) bubble.append(bodyEl(m.body, bodyNodes(m)));
    if (m.attachments?.length) bubble.append(h("div", { class: "attachments" }, m.attachments.map((a) => attachmentEl(a, m))));
  }
  const date = fmt.toDate(m.created_at);
  bubble.append(
    h(
      "p",
      { class: "meta" },
      m.edited_at && !m.deleted ? h("span", { class: "edited", text: "edited" }) : null,
      date ? h("time", { datetime: m.created_at, title: fmt.fullDate(date), text: fmt.clock(date) }) : null,
      marksEl(marks),
    ),
  );
  if (!m.deleted && m.reactions?.length) bubble.append(reactionsEl(m));
  li.append(bubble);
  if (!m.deleted) {
    li.append(
      h(
        "div",
        { class: "actions" },
        own ? h("button", { type: "button", class: "icon-button small", "data-action": "edit", "aria-label": "Edit message", title: "Edit", onclick: () => startEdit(m) }, icon("edit")) : null,
        own ? h("button", { type: "button", class: "icon-button small", "data-action": "delete", "aria-label": "Delete message", title: "Delete", onclick: () => deleteMessage(m) }, icon("delete")) : null,
        moreButton(m), // the action menu (actions.js)
      ),
    );
  }
  return li;
}

function pendingEl(entry) {
  const failed = entry.status === "failed";
  const waiting = !client.connected;
  const li = h("li", {
    class: `msg own pending${failed ? " failed" : ""}`,
    "data-client-msg-id": entry.client_msg_id,
  });
  const bubble = h("div", { class: "bubble" });
  if (entry.body) bubble.append(bodyEl(entry.body, formatted(entry.body)));
  if (entry.attachment_meta?.length) bubble.append(h("div", { class: "attachments" }, entry.attachment_meta.map((a) => attachmentEl(a))));
  const date = fmt.toDate(entry.created_at);
  bubble.append(
    h(
      "p",
      { class: "meta" },
      h("span", { class: "pending-label", text: failed ? `Not sent: ${entry.error?.message || "error"}` : waiting ? "Waiting for connection" : "Sending…" }),
      date ? h("time", { datetime: entry.created_at, text: fmt.clock(date) }) : null,
      marksEl({ state: failed ? "failed" : "pending" }),
    ),
  );
  li.append(bubble);
  if (!failed) {
    // Until it is sent, an edit changes the message waiting in the outbox.
    const edit = () => startEdit({ id: entry.client_msg_id, body: entry.body });
    li.append(h("div", { class: "actions" }, h("button", { type: "button", class: "icon-button small", "data-action": "edit", "aria-label": "Edit message", title: "Edit", onclick: edit }, icon("edit"))));
  }
  if (failed) {
    li.append(
      h(
        "div",
        { class: "actions visible" },
        h("button", { type: "button", class: "button small", "data-action": "retry", onclick: () => client.retry(entry.client_msg_id) }, "Retry"),
        h("button", { type: "button", class: "button small ghost", "data-action": "discard", onclick: () => client.discard(entry.client_msg_id) }, "Discard"),
      ),
    );
  }
  return li;
}

function unreadDivider(count) {
  const text = `${count} unread message${count === 1 ? "" : "s"}`;
  return h("li", { class: "unread-divider", id: "unread-divider" }, h("span", { text }));
}

// The "N unread messages" divider: set when a conversation is opened with unread
// messages, above the first of them, for as long as it stays open. While the view is
// being placed at it, nothing is marked read.
let divider = null; // {conversation, after (read_seq at open), count}
let positioning = null; // the conversation being placed at its first unread message

/** Remember, on opening `id`, what was unread then (`after` = its read marker). */
export function beginUnread(id, after, count) {
  divider = count > 0 ? { conversation: id, after, count } : null;
  positioning = divider ? id : null;
  return Boolean(divider);
}

/** Load back to the first unread message, show it under the divider, then mark what is visible. */
export async function showFirstUnread(id) {
  try {
    if (!divider || divider.conversation !== id) return;
    const state = client.stateOf(id);
    for (let pages = 0; pages < 40 && current === id && client.connected; pages += 1) {
      if (!state.hasOlder || (state.oldestSeq !== null && state.oldestSeq <= divider.after + 1)) break;
      if (!(await loadOlder())) break;
    }
    if (current !== id) return;
    renderMessages();
    const el = $("unread-divider");
    if (el) ui.messages.scrollTop += el.getBoundingClientRect().top - ui.messages.getBoundingClientRect().top - 8;
    ui.jump.hidden = isAtBottom();
  } finally {
    if (positioning === id) positioning = null;
  }
}

/** The seq of the last message shown whole (or 0): what the reader has seen. */
function lastVisibleSeq() {
  const view = ui.messages.getBoundingClientRect();
  const all = ui.messageList.querySelectorAll(".msg[data-seq]");
  for (let i = all.length - 1; i >= 0; i -= 1) {
    const box = all[i].getBoundingClientRect();
    if (box.bottom <= view.bottom + 1) return box.bottom > view.top ? Number(all[i].dataset.seq) : 0;
  }
  return 0;
}

function daySeparator(date) {
  return h("li", { class: "day" }, h("span", { text: fmt.dayLabel(date) }));
}

/**
 * Bring the message list in line with the client's view: elements are keyed (message
 * id, pending client_msg_id, day), rebuilt only when what they show changed, and moved
 * into order; so focus and scroll survive live updates.
 */
export function renderMessages({ stick = false, prepend = false } = {}) {
  if (current === null) return;
  const box = ui.messages;
  const atBottom = stick || isAtBottom();
  const oldHeight = box.scrollHeight;
  const oldTop = box.scrollTop;
  const state = client.stateOf(current);
  const items = [];
  let lastDay = null;
  let prev = null;
  const departed = isGroup(current) ? departures() : [];
  let dividing = divider && divider.conversation === current;
  const addDay = (date) => {
    const key = fmt.dayKey(date);
    if (key === lastDay) return false;
    lastDay = key;
    items.push({ key: `d${key}`, sig: fmt.dayLabel(date), make: () => daySeparator(date) });
    return true;
  };
  for (const m of client.view(current)) {
    const date = fmt.toDate(m.created_at) || new Date();
    if (dividing && m.seq > divider.after && m.kind === "text" && m.sender !== me.id) {
      const count = divider.count;
      items.push({ key: "unread", sig: String(count), make: () => unreadDivider(count) });
      dividing = false;
    }
    const newDay = addDay(date);
    const run =
      !newDay &&
      prev !== null &&
      prev.kind === "text" &&
      m.kind === "text" &&
      prev.sender === m.sender &&
      date - fmt.toDate(prev.created_at) < 5 * 60_000;
    const marks = m.sender === me.id && m.kind === "text" && !m.deleted ? markState(m, departed) : null;
    const mentioned = [...mentionedNames(m).keys()].join(" ");
    // A reply shows its quoted message as I have it: drawn again when that one changes.
    const quoted = m.reply_to ? client.stateOf(m.conversation).get(m.reply_to.id)?.version : "";
    const sig = `${m.version}|${m.pending ? `${m.pending}:${m.body}` : ""}|${run}|${JSON.stringify(marks)}|${names.get(m.sender) || ""}|${mentioned}|${quoted ?? ""}`;
    items.push({ key: `m${m.id}`, sig, make: () => pendingChange(messageEl(m, { run, marks }), m) });
    prev = m;
  }
  const online = client.connected;
  for (const entry of client.outbox(current)) {
    addDay(fmt.toDate(entry.created_at) || new Date());
    const sig = `${entry.status}|${entry.error?.code || ""}|${online}|${entry.body}`;
    items.push({ key: `p${entry.client_msg_id}`, sig, make: () => pendingEl(entry) });
  }

  const list = ui.messageList;
  const seen = new Set();
  items.forEach((item, position) => {
    seen.add(item.key);
    let entry = rendered.get(item.key);
    if (!entry || entry.sig !== item.sig) {
      const el = item.make();
      if (entry) {
        const old = entry.el;
        const focused = old.contains(document.activeElement) ? document.activeElement : null;
        const highlighted = old.classList.contains("highlight");
        old.replaceWith(el);
        if (highlighted) el.classList.add("highlight");
        // The same button again; or the message itself (it had the focus, or the button
        // is gone: a message just deleted).
        const action = focused && focused !== old ? focused.dataset.action : null;
        if (focused) ((action && el.querySelector(`[data-action="${CSS.escape(action)}"]`)) || el).focus({ preventScroll: true });
      }
      entry = { el, sig: item.sig };
      rendered.set(item.key, entry);
    }
    if (list.children[position] !== entry.el) list.insertBefore(entry.el, list.children[position] || null);
  });
  for (const [key, entry] of rendered) {
    if (!seen.has(key)) {
      entry.el.remove();
      rendered.delete(key);
    }
  }
  ui.older.hidden = !(state.loaded && state.hasOlder);
  if (prepend) box.scrollTop = box.scrollHeight - oldHeight + oldTop;
  else if (atBottom) scrollToBottom();
}

/** An edit or delete made offline: shown at once, pending until the server has it. */
function pendingChange(el, m) {
  if (m.pending) {
    el.classList.add("pending");
    el.querySelector(".meta")?.prepend(h("span", { class: "pending-label", text: m.pending === "delete" ? "deleting… " : "saving… " }));
  }
  return el;
}

/** Mark read what was shown: all at the bottom, else up to the last message in view. */
export function markRead() {
  if (current === null || positioning === current || document.visibilityState !== "visible") return;
  const state = client.stateOf(current);
  if (!state.loaded) return;
  if (isAtBottom()) client.markRead(current, state.cursor);
  else {
    const seq = lastVisibleSeq();
    if (seq) client.markRead(current, seq);
  }
}

let loadingOlder = false;
async function loadOlder() {
  if (loadingOlder || current === null) return false;
  const state = client.stateOf(current);
  if (!state.loaded || !state.hasOlder) return false;
  loadingOlder = true;
  ui.loadOlder.textContent = "Loading…";
  try {
    return await client.loadOlder(current);
  } catch {
    toast("Could not load older messages.");
    return false;
  } finally {
    loadingOlder = false;
    ui.loadOlder.textContent = "Load older messages";
  }
}

// How far back a quoted message may be loaded to show it (the browser holds every
// message between it and the newest); past that, search finds it.
const REVEAL_MAX_MESSAGES = 20_000;

/** Load back until the message is in the window, then show it highlighted. */
export async function revealMessage(id, message) {
  const state = client.stateOf(id);
  if (!state.get(message.id) && state.oldestSeq !== null && state.oldestSeq > message.seq) {
    if (state.oldestSeq - message.seq > REVEAL_MAX_MESSAGES) {
      toast("That message is too far back to show here; search for its words to find it.");
      return;
    }
    loadingOlder = true;
    ui.loadOlder.textContent = "Loading…";
    try {
      await client.loadThrough(id, message.seq, {
        shouldStop: () => current !== id,
        onProgress: (loaded) => {
          ui.loadOlder.textContent = `Loading… (${loaded} older messages)`;
        },
      });
    } catch {
      toast("Could not load older messages.");
    } finally {
      loadingOlder = false;
      ui.loadOlder.textContent = "Load older messages";
    }
  }
  if (current !== id) return;
  renderMessages();
  const el = $(`msg-${message.id}`);
  if (!el) {
    toast("That message is no longer available.");
    return;
  }
  el.scrollIntoView({ block: "center" });
  el.classList.add("highlight");
  el.focus({ preventScroll: true });
}

// A message shown by `revealMessage` stays highlighted for as long as the focus stays on
// it (or in its actions), through redraws; its ring fades (app.css) from when it is first
// painted, so a page busy drawing a long history cannot spend the highlight unseen. It
// ends when the focus moves on: to another message, the composer, anywhere else. (The
// window losing the focus keeps it: the message is still the document's active element.)
function endHighlight(event) {
  const msg = event.target.closest?.(".msg.highlight");
  if (!msg) return;
  setTimeout(() => {
    if (!msg.contains(document.activeElement)) msg.classList.remove("highlight");
  });
}

export function install() {
  client.addEventListener("reset", ({ detail }) => {
    if (detail.conversation !== current) return;
    rendered.clear();
    ui.messageList.replaceChildren();
    renderMessages({ stick: true });
  });

  client.addEventListener("receipt", ({ detail }) => {
    if (Number(detail.conversation) === current) soon(renderMessages);
  });

  ui.messages.addEventListener(
    "scroll",
    () => {
      if (isAtBottom()) ui.jump.hidden = true;
      markRead();
      if (ui.messages.scrollTop < 80) loadOlder();
    },
    { passive: true },
  );
  ui.jump.addEventListener("click", () => {
    scrollToBottom();
    markRead();
  });

  ui.loadOlder.addEventListener("click", loadOlder);
  ui.messageList.addEventListener("focusout", endHighlight);

  // The keyboard: in the message list Up and Down (Home, End) move from message to
  // message, Tab reaches the focused message's actions, Escape goes back to writing.
  ui.messages.addEventListener("keydown", (event) => {
    const here = event.target.closest?.(".msg");
    if (event.key === "Escape" && (here || event.target === ui.messages)) {
      event.preventDefault();
      ui.input.focus();
      return;
    }
    if (!["ArrowUp", "ArrowDown", "Home", "End"].includes(event.key)) return;
    if (event.target !== ui.messages && event.target !== here) return; // keys of a button or link
    const all = [...ui.messageList.querySelectorAll(".msg[tabindex]")];
    if (!all.length) return;
    const at = here ? all.indexOf(here) : -1;
    const moves = { ArrowUp: at < 0 ? all.length - 1 : at - 1, ArrowDown: at + 1, Home: 0, End: all.length - 1 };
    const next = all[Math.max(0, Math.min(all.length - 1, moves[event.key]))];
    event.preventDefault();
    next.focus();
    next.scrollIntoView({ block: "nearest" });
    if (next === all[0] && event.key !== "ArrowDown") loadOlder();
  });
}
