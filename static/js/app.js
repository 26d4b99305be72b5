// The web app: renders what the ChatClient (client.js) holds and turns clicks and keys
// into its requests (WebSocket) or REST calls (api.js). Every user-provided string is
// rendered with textContent or as a text node (dom.js); nothing is parsed as HTML.

import { ApiError, api, query, uploadAttachment } from "./api.js";
import { AUTH_FAILED, ChatClient, EVICTED } from "./client.js";
import { clear, h, icon, linkified, safeUrl, snippetNodes, spans } from "./dom.js";
import * as fmt from "./format.js";
import * as attention from "./notify.js";
import { OutboxStore } from "./outbox.js";

const boot = JSON.parse(document.getElementById("bootstrap").textContent);
const me = boot.user;
const $ = (id) => document.getElementById(id);

const ui = {
  shell: $("shell"),
  conn: $("conn-status"),
  meAvatar: $("me-avatar"),
  busy: $("busy-toggle"),
  list: $("conversation-list"),
  emptyList: $("empty-list"),
  conversations: $("conversations"),
  welcome: $("welcome"),
  chat: $("chat-view"),
  back: $("back"),
  chatAvatar: $("chat-avatar"),
  title: $("chat-title"),
  subtitle: $("chat-subtitle"),
  membersButton: $("members-button"),
  notifyWrap: $("notify-wrap"),
  notifyButton: $("notify-button"),
  notifyMenu: $("notify-menu"),
  muteItem: $("mute-item"),
  leaveButton: $("leave-button"),
  messages: $("messages"),
  messageList: $("message-list"),
  older: $("older"),
  loadOlder: $("load-older"),
  jump: $("jump"),
  typing: $("typing"),
  offlineNote: $("offline-note"),
  composer: $("composer"),
  input: $("composer-input"),
  editing: $("editing"),
  cancelEdit: $("cancel-edit"),
  tray: $("tray"),
  mentionList: $("mention-list"),
  fileInput: $("file-input"),
  attach: $("attach"),
  dropZone: $("drop-zone"),
  searchForm: $("search-form"),
  searchInput: $("search-input"),
  searchResults: $("search-results"),
  searchList: $("search-list"),
  searchStatus: $("search-status"),
  notifyBanner: $("notify-banner"),
  toast: $("toast"),
};

const names = new Map([[me.id, me.display_name]]); // user id -> display name
const usernames = new Map([[me.id, me.username]]); // user id -> username (for mentions)
const presence = new Map(); // user id -> {state, last_seen}
const typing = new Map(); // conversation -> Map(user id -> expiry timer)
const drafts = new Map(); // conversation -> unsent text
const rendered = new Map(); // message list key -> {el, sig}
let current = null; // the open conversation
let editing = null; // {conversation, id, body}
let uploads = []; // attachments being uploaded for the next message
let myStatus = me.status;
let subscribed = "";

const store = new OutboxStore(me.id);
const client = new ChatClient({
  url: `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws/v1/?device=${deviceId()}`,
  user: me,
  store,
});

function deviceId() {
  // Stable per browser and user: the server keys receipts and presence by device.
  const key = `chat.device.${me.id}`;
  let id = localStorage.getItem(key);
  if (!id || !/^[A-Za-z0-9_-]{1,64}$/.test(id)) {
    const bytes = crypto.getRandomValues(new Uint8Array(8));
    id = `web-${[...bytes].map((b) => b.toString(16).padStart(2, "0")).join("")}`;
    localStorage.setItem(key, id);
  }
  return id;
}

// ---------------------------------------------------------------- small helpers

const nameOf = (id) => (id === me.id ? "You" : names.get(id) || "Someone");

/** Remember the names of users an answer listed (members, people found). */
function learnPeople(users) {
  for (const u of users || []) {
    names.set(u.id, u.display_name);
    if (u.username) usernames.set(u.id, u.username);
  }
}

function avatar(name, id, className = "avatar") {
  return h("span", { class: `${className} ${fmt.avatarHue(id)}`, "aria-hidden": "true", text: fmt.initials(name) });
}

function paintAvatar(el, name, id) {
  el.className = `avatar ${fmt.avatarHue(id)}`;
  el.textContent = fmt.initials(name);
}

function presenceDot(userId) {
  const entry = presence.get(userId) || { state: "offline" };
  return h(
    "span",
    { class: "presence", "data-user": userId, "data-state": entry.state, title: fmt.presenceText(entry) },
    h("span", { class: "visually-hidden", text: fmt.PRESENCE_LABELS[entry.state] || "" }),
  );
}

let toastTimer = null;
function toast(message) {
  ui.toast.textContent = message;
  ui.toast.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => (ui.toast.hidden = true), 5000);
}

function problem(error) {
  if (error instanceof ApiError || error?.code) return error.message || "Something went wrong.";
  return "Something went wrong; try again.";
}

function debounce(fn, ms) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

const queued = new Set();
function soon(work) {
  // Coalesce renders within one task. Not requestAnimationFrame: it does not run in a
  // hidden tab, and the title badge must count while the tab is hidden.
  if (queued.has(work)) return;
  queued.add(work);
  queueMicrotask(() => {
    queued.delete(work);
    work();
  });
}

const isGroup = (id) => client.conversation(id)?.kind === "group";

function confirmDialog(title, text, ok = "OK") {
  const dialog = $("dialog-confirm");
  $("confirm-title").textContent = title;
  $("confirm-text").textContent = text;
  $("confirm-ok").textContent = ok;
  dialog.returnValue = "";
  dialog.showModal();
  $("confirm-ok").focus();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
  });
}

// ---------------------------------------------------------------- connection status

const STATUS_TEXT = {
  connecting: "Connecting…",
  reconnecting: "Reconnecting…",
  online: "Online",
  offline: "Offline",
  stopped: "Disconnected",
};

client.addEventListener("status", ({ detail }) => {
  ui.conn.dataset.state = detail.state;
  ui.conn.textContent = STATUS_TEXT[detail.state] || detail.state;
  ui.offlineNote.hidden = detail.state !== "offline";
  if (current !== null) soon(renderMessages);
});

client.addEventListener("stopped", ({ detail }) => {
  if (detail.code === AUTH_FAILED) {
    ui.conn.textContent = "Signed out: log in again";
    location.assign(`/accounts/login/?next=${encodeURIComponent(location.pathname + location.hash)}`);
  } else if (detail.code === EVICTED) {
    ui.conn.textContent = "Open in too many windows: reload to reconnect";
  }
});

client.addEventListener("ready", ({ detail }) => {
  if (detail.status) {
    myStatus = detail.status;
    renderStatus();
  }
  subscribed = ""; // a new connection follows nobody yet
  updatePresenceSubscription();
  prefetchDetails();
});

// ---------------------------------------------------------------- status (busy)

function renderStatus() {
  const busy = myStatus === "busy";
  ui.busy.setAttribute("aria-pressed", String(busy));
  ui.busy.dataset.state = busy ? "busy" : "available";
  ui.busy.querySelector(".status-label").textContent = busy ? "Busy" : "Available";
}

ui.busy.addEventListener("click", async () => {
  const next = myStatus === "busy" ? "available" : "busy";
  try {
    if (client.connected) await client.setStatus(next);
    else await api("/api/v1/users/me", { method: "PATCH", body: { status: next } });
    myStatus = next;
    renderStatus();
  } catch (error) {
    toast(`Could not change your status: ${problem(error)}`);
  }
});

// ---------------------------------------------------------------- conversation list

function previewText(conversation) {
  const id = conversation.id;
  const waiting = client.outbox(id);
  const typers = [...(typing.get(id)?.keys() || [])];
  if (typers.length && id !== current) return `${nameOf(typers[0])} is typing…`;
  if (waiting.length) {
    const last = waiting[waiting.length - 1];
    return `${last.status === "failed" ? "Not sent" : "Sending"}: ${last.body || "attachment"}`;
  }
  const m = conversation.last;
  if (!m) return conversation.last_seq > 0 ? "" : "No messages yet";
  if (m.kind === "system") return m.body;
  if (m.deleted) return "Message deleted";
  const text = m.body || (m.attachments?.length ? `📎 ${m.attachments[0].filename}` : "");
  if (m.sender === me.id) return `You: ${text}`;
  const sender = names.get(m.sender);
  return conversation.kind === "group" && sender ? `${sender}: ${text}` : text;
}

function conversationItem(id) {
  const c = client.conversation(id);
  const title = c.title || "Conversation";
  const unread = c.unread || 0;
  const pic = h("span", { class: "avatar-wrap" }, avatar(title, c.kind === "direct" ? c.peer : id));
  if (c.kind === "group") pic.append(h("span", { class: "kind-icon", "aria-hidden": "true" }, icon("group")));
  if (c.kind === "direct" && c.peer !== undefined && c.peer !== me.id) pic.append(presenceDot(c.peer));
  const state = c.kind === "direct" && c.peer !== me.id ? presence.get(c.peer)?.state : null;
  const label = [title, state ? fmt.PRESENCE_LABELS[state] : null, c.muted ? "muted" : null, unread ? `${unread} unread` : null]
    .filter(Boolean)
    .join(", ");
  const button = h(
    "button",
    {
      type: "button",
      class: `conv${unread ? " has-unread" : ""}`,
      "data-id": id,
      "aria-current": id === current ? "page" : null,
      "aria-label": label,
      "aria-describedby": `conv-preview-${id}`,
      onclick: () => openConversation(id),
    },
    pic,
    h(
      "span",
      { class: "conv-main" },
      h(
        "span",
        { class: "conv-top" },
        h("span", { class: "conv-title", text: title }),
        h("time", { class: "conv-time", datetime: c.last_activity_at || null, text: fmt.listTime(c.last_activity_at) }),
      ),
      h(
        "span",
        { class: "conv-bottom" },
        h("span", { class: "conv-preview", id: `conv-preview-${id}`, text: previewText(c) }),
        c.muted ? h("span", { class: "muted-mark", title: "Muted" }, icon("bell-off"), h("span", { class: "visually-hidden", text: "Muted" })) : null,
        unread
          ? h("span", { class: "badge" }, String(unread > 99 ? "99+" : unread), h("span", { class: "visually-hidden", text: " unread" }))
          : null,
      ),
    ),
  );
  return h("li", { "data-id": id }, button);
}

function renderList() {
  const ids = client.conversationIds();
  const focused = document.activeElement?.closest?.("#conversation-list .conv")?.dataset.id;
  ui.list.replaceChildren(...ids.map(conversationItem));
  ui.emptyList.hidden = ids.length > 0;
  if (focused) ui.list.querySelector(`.conv[data-id="${Number(focused)}"]`)?.focus();
  attention.setTitleCount(client.totalUnread());
  for (const id of ids) {
    const c = client.conversation(id);
    if (c.kind === "direct" && c.peer !== undefined) names.set(c.peer, c.title);
  }
  updatePresenceSubscription();
}

client.addEventListener("conversations", () => {
  soon(renderList);
  if (current !== null) {
    if (!client.active.has(current) && client.connected) closeConversation();
    else soon(renderHeader);
  }
});

// ---------------------------------------------------------------- presence

function presenceTargets() {
  const users = new Set();
  for (const id of client.active) {
    const c = client.conversation(id);
    if (c?.kind === "direct" && c.peer && c.peer !== me.id) users.add(c.peer);
  }
  if (current !== null && isGroup(current)) {
    for (const id of client.members.get(current)?.keys() || []) if (id !== me.id) users.add(id);
  }
  return [...users].slice(0, 1000);
}

const updatePresenceSubscription = debounce(() => {
  if (!client.connected) return;
  const users = presenceTargets().sort((a, b) => a - b);
  const key = users.join(",");
  if (key === subscribed) return;
  subscribed = key;
  client.subscribePresence(users).catch(() => (subscribed = ""));
}, 200);

client.addEventListener("presence", ({ detail }) => {
  const user = Number(detail.user);
  presence.set(user, { state: detail.state, last_seen: detail.last_seen });
  if (user === me.id) {
    myStatus = detail.state === "busy" ? "busy" : "available";
    renderStatus();
  }
  for (const dot of document.querySelectorAll(`.presence[data-user="${user}"]`)) {
    dot.dataset.state = detail.state;
    dot.title = fmt.presenceText(presence.get(user));
    dot.firstChild.textContent = fmt.PRESENCE_LABELS[detail.state] || "";
  }
  if (current !== null) soon(renderHeader);
});

// ---------------------------------------------------------------- opening a conversation

async function openConversation(id, { reveal = null } = {}) {
  if (current !== null && current !== id) {
    saveDraft();
    stopTyping();
  }
  const switching = current !== id;
  current = id;
  if (switching) {
    closeNotifyMenu();
    closeMentions();
    cancelEdit();
    rendered.clear();
    // The whole history is not news: keep screen readers quiet while it is drawn.
    ui.messageList.setAttribute("aria-busy", "true");
    ui.messageList.replaceChildren();
    ui.input.value = drafts.get(id) || "";
    autosize();
    clearUploads();
  }
  history.replaceState(null, "", `#c${id}`);
  ui.shell.dataset.pane = "chat";
  ui.welcome.hidden = true;
  ui.chat.hidden = false;
  renderHeader();
  renderMessages({ stick: true });
  renderTyping();
  soon(renderList);
  // Wide screens: straight to writing. Phones: to the heading (no keyboard popping up).
  if (matchMedia("(min-width: 48em)").matches) ui.input.focus({ preventScroll: true });
  else ui.title.focus({ preventScroll: true });
  loadDetails(id);
  attention.dismissShown(`conversation-${id}`); // it is in front of the user now
  await client.open(id);
  if (current !== id) return;
  renderMessages({ stick: reveal === null });
  setTimeout(() => ui.messageList.setAttribute("aria-busy", "false"), 0);
  if (reveal) await revealMessage(id, reveal);
  markRead();
}

function closeConversation() {
  closeNotifyMenu();
  closeMentions();
  saveDraft();
  stopTyping();
  current = null;
  client.focused = null;
  history.replaceState(null, "", location.pathname);
  ui.chat.hidden = true;
  ui.welcome.hidden = false;
  ui.shell.dataset.pane = "list";
  soon(renderList);
}

ui.back.addEventListener("click", () => {
  const id = current;
  closeConversation();
  ui.list.querySelector(`.conv[data-id="${id}"]`)?.focus();
});

async function loadDetails(id) {
  try {
    const detail = await api(`/api/v1/conversations/${id}`);
    learnPeople(detail.members);
    client.setMembers(id, detail.members || []);
    soon(renderList);
    if (current === id) {
      renderHeader();
      renderMessages();
      updatePresenceSubscription();
    }
  } catch (error) {
    if (error instanceof ApiError && error.status === 403) {
      client.forget(id);
      if (current === id) closeConversation();
    }
    // offline: the header and marks fill in when the details can be read
  }
}
const reloadDetails = debounce((id) => loadDetails(id), 300);

let prefetched = false;
/** Read the members of the most recent groups once, for sender names in previews. */
async function prefetchDetails() {
  if (prefetched) return;
  prefetched = true;
  const groups = client.conversationIds().filter((id) => isGroup(id) && !client.members.has(id));
  for (const id of groups.slice(0, 30)) await loadDetails(id);
}

function renderHeader() {
  if (current === null) return;
  const c = client.conversation(current);
  if (!c) return;
  ui.title.textContent = c.title || "Conversation";
  paintAvatar(ui.chatAvatar, c.title, c.kind === "direct" ? c.peer : c.id);
  ui.leaveButton.hidden = c.kind !== "group";
  ui.membersButton.hidden = c.kind !== "group";
  renderNotifyMenu(c);
  const members = client.members.get(current);
  if (c.kind === "direct") {
    ui.subtitle.textContent = c.peer === me.id ? "Notes to yourself" : fmt.presenceText(presence.get(c.peer)) || "";
  } else if (members) {
    const online = [...members.keys()].filter((u) => u !== me.id && ["online", "away", "busy"].includes(presence.get(u)?.state)).length;
    const count = members.size;
    ui.subtitle.textContent = `${count} member${count === 1 ? "" : "s"}${online ? `, ${online} online` : ""}${c.public ? " · public" : ""}`;
  } else {
    ui.subtitle.textContent = c.public ? "Public group" : "Group";
  }
}

// ---------------------------------------------------------------- messages

function isAtBottom() {
  const box = ui.messages;
  return box.scrollHeight - box.scrollTop - box.clientHeight < 48;
}

function scrollToBottom() {
  ui.messages.scrollTop = ui.messages.scrollHeight;
  ui.jump.hidden = true;
}

function markState(message) {
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
  const read = others.filter((m) => m.read_seq >= message.seq).length;
  return { state: read === others.length && others.length ? "read" : "sent", read, of: others.length };
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

function attachmentEl(a) {
  const url = safeUrl(a.url);
  const thumb = a.thumbnail_url ? safeUrl(a.thumbnail_url) : null;
  if (thumb && /^image\//.test(a.content_type || "")) {
    return h(
      "a",
      { class: "attachment image", href: url, target: "_blank", rel: "noopener" },
      h("img", { src: thumb, alt: a.filename || "image", loading: "lazy", decoding: "async" }),
    );
  }
  return h(
    "a",
    { class: "attachment file", href: url, download: a.filename || "file" },
    icon("file"),
    h("span", { class: "file-name", text: a.filename || "file" }),
    h("span", { class: "file-size", text: fmt.fileSize(a.size) }),
  );
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
  if (!byName.size) return linkified(m.body);
  return linkified(m.body, (text) =>
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
    if (!run) li.append(h("p", { class: "sender", "aria-hidden": "true", text: nameOf(m.sender) }));
  }
  const bubble = h("div", { class: "bubble" }, h("span", { class: "visually-hidden", text: `${nameOf(m.sender)}: ` }));
  if (m.deleted) {
    bubble.append(h("p", { class: "body deleted-text", text: "This message was deleted." }));
  } else {
    if (m.body) bubble.append(h("p", { class: "body" }, bodyNodes(m)));
    if (m.attachments?.length) bubble.append(h("div", { class: "attachments" }, m.attachments.map(attachmentEl)));
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
  li.append(bubble);
  if (own && !m.deleted) {
    li.append(
      h(
        "div",
        { class: "actions" },
        h("button", { type: "button", class: "icon-button small", "data-action": "edit", "aria-label": "Edit message", title: "Edit", onclick: () => startEdit(m) }, icon("edit")),
        h("button", { type: "button", class: "icon-button small", "data-action": "delete", "aria-label": "Delete message", title: "Delete", onclick: () => deleteMessage(m) }, icon("delete")),
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
  if (entry.body) bubble.append(h("p", { class: "body" }, linkified(entry.body)));
  if (entry.attachment_meta?.length) bubble.append(h("div", { class: "attachments" }, entry.attachment_meta.map(attachmentEl)));
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

function daySeparator(date) {
  return h("li", { class: "day", role: "separator" }, h("span", { text: fmt.dayLabel(date) }));
}

/**
 * Bring the message list in line with the client's view: elements are keyed (message
 * id, pending client_msg_id, day), rebuilt only when what they show changed, and moved
 * into order; so focus and scroll survive live updates.
 */
function renderMessages({ stick = false, prepend = false } = {}) {
  if (current === null) return;
  const box = ui.messages;
  const atBottom = stick || isAtBottom();
  const oldHeight = box.scrollHeight;
  const oldTop = box.scrollTop;
  const state = client.stateOf(current);
  const items = [];
  let lastDay = null;
  let prev = null;
  const addDay = (date) => {
    const key = fmt.dayKey(date);
    if (key === lastDay) return false;
    lastDay = key;
    items.push({ key: `d${key}`, sig: fmt.dayLabel(date), make: () => daySeparator(date) });
    return true;
  };
  for (const m of client.view(current)) {
    const date = fmt.toDate(m.created_at) || new Date();
    const newDay = addDay(date);
    const run =
      !newDay &&
      prev !== null &&
      prev.kind === "text" &&
      m.kind === "text" &&
      prev.sender === m.sender &&
      date - fmt.toDate(prev.created_at) < 5 * 60_000;
    const marks = m.sender === me.id && m.kind === "text" && !m.deleted ? markState(m) : null;
    const mentioned = [...mentionedNames(m).keys()].join(" ");
    const sig = `${m.version}|${run}|${JSON.stringify(marks)}|${names.get(m.sender) || ""}|${mentioned}`;
    items.push({ key: `m${m.id}`, sig, make: () => messageEl(m, { run, marks }) });
    prev = m;
  }
  const online = client.connected;
  for (const entry of client.outbox(current)) {
    addDay(fmt.toDate(entry.created_at) || new Date());
    const sig = `${entry.status}|${entry.error?.code || ""}|${online}`;
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
        const focusedAction = entry.el.contains(document.activeElement) ? document.activeElement.dataset.action : null;
        entry.el.replaceWith(el);
        if (focusedAction) el.querySelector(`[data-action="${focusedAction}"]`)?.focus();
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

client.addEventListener("messages", ({ detail }) => {
  const id = detail.conversation;
  soon(renderList); // previews, unread badges, order by activity
  const fresh = detail.messages.filter((m) => m.sender !== me.id && m.kind === "text");
  if (fresh.length) client.markDelivered(id, client.stateOf(id).cursor);
  for (const m of detail.messages) {
    if (m.kind === "system" && id === current && m.system) reloadDetails(id);
    if (m.sender !== me.id) clearTyping(id, m.sender);
  }
  if (detail.via === "live") notifyAbout(id, fresh.filter((m) => m.version === m.seq && !m.deleted));
  if (id !== current) return;
  const wasAtBottom = isAtBottom();
  if (detail.via === "older") renderMessages({ prepend: true });
  else renderMessages();
  if (!wasAtBottom && fresh.length && detail.via !== "older") ui.jump.hidden = false;
  markRead();
});

client.addEventListener("reset", ({ detail }) => {
  if (detail.conversation !== current) return;
  rendered.clear();
  ui.messageList.replaceChildren();
  renderMessages({ stick: true });
});

client.addEventListener("outbox", ({ detail }) => {
  if (detail.conversation === current) renderMessages({ stick: true });
  soon(renderList);
});

client.addEventListener("receipt", ({ detail }) => {
  if (Number(detail.conversation) === current) soon(renderMessages);
});

client.addEventListener("membership", ({ detail }) => {
  if ((detail.reason === "left" || detail.reason === "removed") && detail.conversation === current) {
    closeConversation();
    toast(detail.reason === "removed" ? "You were removed from the group." : "You left the group.");
  }
});

client.addEventListener("error", ({ detail }) => {
  if (detail.error.code === "rate_limited") toast("Slow down a little.");
});

function markRead() {
  if (current === null || document.visibilityState !== "visible" || !isAtBottom()) return;
  const state = client.stateOf(current);
  if (!state.loaded) return;
  client.markRead(current, state.cursor);
}

ui.messages.addEventListener(
  "scroll",
  () => {
    if (isAtBottom()) {
      ui.jump.hidden = true;
      markRead();
    }
    if (ui.messages.scrollTop < 80) loadOlder();
  },
  { passive: true },
);
ui.jump.addEventListener("click", () => {
  scrollToBottom();
  markRead();
});

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
ui.loadOlder.addEventListener("click", loadOlder);

/** Scroll back until the message is loaded, then show it highlighted. */
async function revealMessage(id, message) {
  const state = client.stateOf(id);
  for (let pages = 0; pages < 40 && current === id; pages += 1) {
    if (state.get(message.id) || !state.hasOlder || (state.oldestSeq !== null && state.oldestSeq <= message.seq)) break;
    await loadOlder();
  }
  renderMessages();
  const el = $(`msg-${message.id}`);
  if (!el) {
    toast("That message is no longer available.");
    return;
  }
  el.scrollIntoView({ block: "center" });
  el.classList.add("highlight");
  el.focus({ preventScroll: true });
  setTimeout(() => el.classList.remove("highlight"), 4000);
}

// ---------------------------------------------------------------- typing

function renderTyping() {
  const users = current === null ? [] : [...(typing.get(current)?.keys() || [])];
  const who = users.map(nameOf);
  ui.typing.textContent =
    who.length === 0
      ? ""
      : who.length === 1
        ? `${who[0]} is typing…`
        : who.length === 2
          ? `${who[0]} and ${who[1]} are typing…`
          : `${who.length} people are typing…`;
}

function clearTyping(conversation, user) {
  const users = typing.get(conversation);
  if (!users?.has(user)) return;
  clearTimeout(users.get(user));
  users.delete(user);
  if (conversation === current) renderTyping();
  soon(renderList);
}

client.addEventListener("typing", ({ detail }) => {
  const conversation = Number(detail.conversation);
  const user = Number(detail.user);
  if (user === me.id) return;
  if (detail.state === "start") {
    if (!typing.has(conversation)) typing.set(conversation, new Map());
    const users = typing.get(conversation);
    clearTimeout(users.get(user));
    // A start expires after 10 s without a refresh (PROTOCOL.md section 3).
    users.set(user, setTimeout(() => clearTyping(conversation, user), 10_000));
    if (conversation === current) renderTyping();
    soon(renderList);
  } else {
    clearTyping(conversation, user);
  }
});

let typingSentAt = 0;
let typingIn = null;
let typingStopTimer = null;
function noteTyping() {
  if (current === null || editing) return;
  if (!ui.input.value.trim()) {
    stopTyping();
    return;
  }
  const now = Date.now();
  if (typingIn !== current || now - typingSentAt > 3000) {
    client.typing(current, "start");
    typingSentAt = now;
    typingIn = current;
  }
  clearTimeout(typingStopTimer);
  typingStopTimer = setTimeout(stopTyping, 5000);
}

function stopTyping() {
  clearTimeout(typingStopTimer);
  if (typingIn !== null) client.typing(typingIn, "stop");
  typingIn = null;
  typingSentAt = 0;
}

// ---------------------------------------------------------------- composing

function autosize() {
  ui.input.style.height = "auto";
  ui.input.style.height = `${Math.min(ui.input.scrollHeight, 180)}px`;
}

function saveDraft() {
  if (current === null || editing) return;
  if (ui.input.value) drafts.set(current, ui.input.value);
  else drafts.delete(current);
}

ui.input.addEventListener("input", () => {
  autosize();
  noteTyping();
  updateMentions();
});

ui.input.addEventListener("keydown", (event) => {
  if (mentionKey(event)) return;
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    ui.composer.requestSubmit();
  } else if (event.key === "Escape" && editing) {
    event.preventDefault();
    cancelEdit();
  } else if (event.key === "ArrowUp" && !ui.input.value && !editing && current !== null) {
    const mine = client.view(current).filter((m) => m.sender === me.id && m.kind === "text" && !m.deleted);
    if (mine.length) {
      event.preventDefault();
      startEdit(mine[mine.length - 1]);
    }
  }
});

ui.input.addEventListener("blur", () => {
  saveDraft();
  closeMentions();
});

ui.composer.addEventListener("submit", async (event) => {
  event.preventDefault();
  if (current === null) return;
  const text = ui.input.value;
  if (editing) {
    await finishEdit(text);
    return;
  }
  if (uploads.some((u) => u.status === "uploading")) {
    toast("Wait until the files have finished uploading.");
    return;
  }
  const ready = uploads.filter((u) => u.status === "done");
  if (!text.trim() && !ready.length) return;
  if (text.length > boot.max_message_length) {
    toast(`A message can have at most ${boot.max_message_length.toLocaleString()} characters.`);
    return;
  }
  const conversation = current;
  ui.input.value = "";
  autosize();
  drafts.delete(conversation);
  stopTyping();
  const attachments = ready.map((u) => u.attachment);
  clearUploads();
  try {
    await client.send(conversation, text, attachments);
  } catch (error) {
    toast(`Could not queue the message: ${problem(error)}`);
    ui.input.value = text;
  }
  scrollToBottom();
  ui.input.focus();
});

function startEdit(message) {
  if (current === null) return;
  saveDraft();
  editing = { conversation: current, id: message.id, body: message.body };
  ui.editing.hidden = false;
  ui.composer.classList.add("is-editing");
  ui.input.value = message.body;
  autosize();
  ui.input.focus();
  ui.input.setSelectionRange(ui.input.value.length, ui.input.value.length);
}

function cancelEdit() {
  if (!editing) return;
  const conversation = editing.conversation;
  editing = null;
  ui.editing.hidden = true;
  ui.composer.classList.remove("is-editing");
  ui.input.value = conversation === current ? drafts.get(conversation) || "" : ui.input.value;
  autosize();
}

async function finishEdit(text) {
  const target = editing;
  if (!text.trim()) {
    toast("A message cannot be empty; delete it instead.");
    return;
  }
  cancelEdit();
  if (text === target.body) return;
  try {
    await client.edit(target.conversation, target.id, text);
  } catch (error) {
    toast(`Could not edit the message: ${problem(error)}`);
  }
}

ui.cancelEdit.addEventListener("click", () => {
  cancelEdit();
  ui.input.focus();
});

async function deleteMessage(message) {
  const ok = await confirmDialog("Delete message?", "It will be removed for everyone in this conversation.", "Delete");
  if (!ok) return;
  try {
    await client.delete(message.conversation, message.id);
  } catch (error) {
    toast(`Could not delete the message: ${problem(error)}`);
  }
}

// ---------------------------------------------------------------- mention autocomplete

// The composer is an ARIA combobox: typing `@` and letters lists matching members of
// the open conversation; Up/Down choose, Enter or Tab insert `@username `, Escape closes.
const MAX_MENTION_OPTIONS = 8;
const mention = { start: -1, options: [], active: 0, dismissed: -1 };

/** Members of the open conversation whose username or a word of whose name starts with `q`. */
function mentionCandidates(q) {
  const members = current === null ? null : client.members.get(current);
  if (!members) return [];
  const needle = q.toLowerCase();
  const ranked = [];
  for (const m of members.values()) {
    if (m.id === me.id || !m.username) continue;
    const name = (m.display_name || "").toLowerCase();
    const rank = m.username.toLowerCase().startsWith(needle)
      ? 0
      : name.split(/\s+/).some((word) => word.startsWith(needle))
        ? 1
        : -1;
    if (rank >= 0) ranked.push({ rank, m });
  }
  ranked.sort((a, b) => a.rank - b.rank || a.m.username.localeCompare(b.m.username));
  return ranked.slice(0, MAX_MENTION_OPTIONS).map(({ m }) => m);
}

function updateMentions() {
  const caret = ui.input.selectionStart;
  const typed = ui.input.selectionEnd === caret ? fmt.typingMention(ui.input.value.slice(0, caret)) : null;
  if (!typed) mention.dismissed = -1; // Escape holds only while that `@word` is typed
  if (!typed || typed.start === mention.dismissed) {
    closeMentions();
    return;
  }
  const previous = mention.options[mention.active]?.id;
  mention.start = typed.start;
  mention.options = mentionCandidates(typed.query);
  // Keep the chosen member chosen while the list narrows.
  mention.active = Math.max(0, mention.options.findIndex((m) => m.id === previous));
  renderMentions();
}

function closeMentions() {
  if (!mention.options.length && ui.mentionList.hidden) return;
  mention.options = [];
  mention.active = 0;
  renderMentions();
}

function renderMentions() {
  const open = mention.options.length > 0;
  ui.mentionList.hidden = !open;
  ui.input.setAttribute("aria-expanded", String(open));
  if (!open) {
    ui.input.removeAttribute("aria-activedescendant");
    ui.mentionList.replaceChildren();
    return;
  }
  ui.mentionList.replaceChildren(
    ...mention.options.map((m, index) =>
      h(
        "li",
        {
          role: "option",
          id: `mention-option-${m.id}`,
          class: "mention-option",
          "aria-selected": String(index === mention.active),
          // Keep the focus (and the caret) in the composer while clicking.
          onmousedown: (event) => event.preventDefault(),
          onclick: () => insertMention(m),
        },
        avatar(m.display_name, m.id, "avatar tiny"),
        h("span", { class: "mention-name", text: m.display_name }),
        h("span", { class: "mention-username", text: `@${m.username}` }),
      ),
    ),
  );
  const active = ui.mentionList.children[mention.active];
  ui.input.setAttribute("aria-activedescendant", active.id);
  active.scrollIntoView({ block: "nearest" });
}

function insertMention(member) {
  const end = ui.input.selectionStart;
  const spaced = /\s/.test(ui.input.value.charAt(end));
  ui.input.setRangeText(`@${member.username}${spaced ? "" : " "}`, mention.start, end, "end");
  if (spaced) ui.input.setSelectionRange(ui.input.selectionEnd + 1, ui.input.selectionEnd + 1);
  closeMentions();
  autosize();
  noteTyping();
  ui.input.focus();
}

/** Handle a key of the composer while the list is open; answer whether it was used. */
function mentionKey(event) {
  if (ui.mentionList.hidden || event.isComposing) return false;
  const count = mention.options.length;
  if (event.key === "ArrowDown" || event.key === "ArrowUp") {
    mention.active = (mention.active + (event.key === "ArrowDown" ? 1 : count - 1)) % count;
    renderMentions();
  } else if ((event.key === "Enter" && !event.shiftKey) || (event.key === "Tab" && !event.shiftKey)) {
    insertMention(mention.options[mention.active]);
  } else if (event.key === "Escape") {
    mention.dismissed = mention.start;
    closeMentions();
  } else {
    return false;
  }
  event.preventDefault();
  return true;
}

// The caret moved without typing (arrows, click): the `@word` at it may have changed.
ui.input.addEventListener("click", updateMentions);
ui.input.addEventListener("keyup", (event) => {
  if (["ArrowLeft", "ArrowRight", "Home", "End"].includes(event.key)) updateMentions();
});

// ---------------------------------------------------------------- attachments

let uploadKeys = 0;

function renderTray() {
  ui.tray.hidden = uploads.length === 0;
  ui.tray.replaceChildren(
    ...uploads.map((u) => {
      const label = u.status === "error" ? `Failed: ${u.error}` : u.status === "done" ? fmt.fileSize(u.file.size) : `${Math.round(u.progress * 100)}%`;
      return h(
        "li",
        { class: `tray-item ${u.status}`, "data-key": u.key },
        u.preview ? h("img", { src: u.preview, alt: "" }) : icon("file", "icon tray-icon"),
        h(
          "span",
          { class: "tray-text" },
          h("span", { class: "file-name", text: u.file.name }),
          h("span", { class: "tray-state", text: label }),
          u.status === "uploading"
            ? h("progress", { max: "1", value: String(u.progress), "aria-label": `Uploading ${u.file.name}` })
            : null,
        ),
        h(
          "button",
          { type: "button", class: "icon-button small", "aria-label": `Remove ${u.file.name}`, onclick: () => removeUpload(u) },
          icon("close"),
        ),
      );
    }),
  );
}

function updateUpload(u) {
  const item = ui.tray.querySelector(`[data-key="${u.key}"]`);
  const bar = item?.querySelector("progress");
  if (bar && u.status === "uploading") {
    bar.value = u.progress;
    item.querySelector(".tray-state").textContent = `${Math.round(u.progress * 100)}%`;
  } else {
    renderTray();
  }
}

function removeUpload(u) {
  if (u.status === "uploading") u.abort();
  if (u.preview) URL.revokeObjectURL(u.preview);
  uploads = uploads.filter((x) => x !== u);
  renderTray();
  ui.input.focus();
}

function clearUploads() {
  for (const u of uploads) if (u.preview) URL.revokeObjectURL(u.preview);
  uploads = [];
  renderTray();
}

function addFiles(files) {
  if (current === null) return;
  for (const file of files) {
    if (uploads.length >= boot.max_attachments) {
      toast(`At most ${boot.max_attachments} files per message.`);
      break;
    }
    if (file.size > boot.max_upload_bytes) {
      toast(`${file.name} is larger than ${fmt.fileSize(boot.max_upload_bytes)}.`);
      continue;
    }
    const u = { key: `u${++uploadKeys}`, file, progress: 0, status: "uploading", attachment: null, error: "" };
    if (/^image\/(png|jpeg|gif|webp)$/.test(file.type)) u.preview = URL.createObjectURL(file);
    const upload = uploadAttachment(file, (fraction) => {
      u.progress = fraction;
      updateUpload(u);
    });
    u.abort = upload.abort;
    uploads.push(u);
    upload.promise.then(
      (attachment) => {
        u.status = "done";
        u.attachment = attachment;
        renderTray();
      },
      (error) => {
        if (!uploads.includes(u)) return;
        u.status = "error";
        u.error = problem(error);
        renderTray();
      },
    );
  }
  renderTray();
}

ui.attach.addEventListener("click", () => ui.fileInput.click());
ui.fileInput.addEventListener("change", () => {
  addFiles([...ui.fileInput.files]);
  ui.fileInput.value = "";
  ui.input.focus();
});

let dragDepth = 0;
const hasFiles = (event) => [...(event.dataTransfer?.types || [])].includes("Files");
ui.chat.addEventListener("dragenter", (event) => {
  if (!hasFiles(event)) return;
  event.preventDefault();
  dragDepth += 1;
  ui.dropZone.hidden = false;
});
ui.chat.addEventListener("dragover", (event) => {
  if (!hasFiles(event)) return;
  event.preventDefault();
  event.dataTransfer.dropEffect = "copy";
});
ui.chat.addEventListener("dragleave", () => {
  dragDepth = Math.max(0, dragDepth - 1);
  if (dragDepth === 0) ui.dropZone.hidden = true;
});
ui.chat.addEventListener("drop", (event) => {
  if (!hasFiles(event)) return;
  event.preventDefault();
  dragDepth = 0;
  ui.dropZone.hidden = true;
  addFiles([...event.dataTransfer.files]);
});
ui.input.addEventListener("paste", (event) => {
  const files = [...(event.clipboardData?.files || [])];
  if (files.length) {
    event.preventDefault();
    addFiles(files);
  }
});

// ---------------------------------------------------------------- notifications

/** Whether a new message notifies me, by the server's rule: muted, then the level. */
function notifies(c, m) {
  if (c.muted) return false;
  if (c.notify === "none") return false;
  if (c.notify === "mentions") return (m.mentions || []).includes(me.id);
  return true;
}

function notifyAbout(id, messages) {
  const c = client.conversation(id);
  if (!c || myStatus === "busy") return;
  const notifying = messages.filter((m) => notifies(c, m));
  if (!notifying.length) return;
  const m = notifying[notifying.length - 1];
  const text = m.body || (m.attachments?.length ? `📎 ${m.attachments[0].filename}` : "New message");
  attention.notify({
    title: c.kind === "group" ? `${nameOf(m.sender)} in ${c.title}` : c.title,
    body: text.length > 200 ? `${text.slice(0, 200)}…` : text,
    tag: `conversation-${id}`,
    onClick: () => openConversation(id),
  });
}

function renderNotifyBanner() {
  const dismissed = localStorage.getItem("chat.notify.dismissed") === "1";
  ui.notifyBanner.hidden = !attention.notificationsSupported() || attention.notificationPermission() !== "default" || dismissed;
}

async function enableNotifications() {
  const permission = await attention.requestNotifications();
  renderNotifyBanner();
  if (permission === "granted") attention.subscribePush(boot.vapid_public_key);
  else toast("Notifications stay off. You can allow them in the browser's site settings.");
}

$("enable-notifications").addEventListener("click", enableNotifications);
$("dismiss-notifications").addEventListener("click", () => {
  localStorage.setItem("chat.notify.dismissed", "1");
  renderNotifyBanner();
});

document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible") markRead();
  idleTouch();
});
addEventListener("focus", () => markRead());

// Idle: tell the server after five minutes without input (presence `away`).
let idle = false;
let idleTimer = null;
function idleTouch() {
  clearTimeout(idleTimer);
  if (idle) {
    idle = false;
    client.activity(false);
  }
  idleTimer = setTimeout(() => {
    idle = true;
    client.activity(true);
  }, 5 * 60_000);
}
for (const type of ["keydown", "pointerdown", "wheel", "touchstart"]) {
  addEventListener(type, idleTouch, { passive: true });
}

// ---------------------------------------------------------------- notification settings of a conversation

// The header's "Notifications" menu (ARIA menu button): what notifies me while I am
// away (all messages, only @mentions, nothing) and Mute. The server answers the
// conversation, and the UI shows what it answered.
const NOTIFY_LABELS = { all: "All messages", mentions: "Only @mentions", none: "Nothing" };
const menuItems = () => [...ui.notifyMenu.querySelectorAll('[role^="menuitem"]')];

function renderNotifyMenu(c) {
  const level = c.notify || "all";
  for (const item of ui.notifyMenu.querySelectorAll("[data-notify]")) {
    item.setAttribute("aria-checked", String(item.dataset.notify === level));
  }
  ui.muteItem.setAttribute("aria-checked", String(Boolean(c.muted)));
  ui.notifyButton.dataset.state = c.muted ? "muted" : level;
  ui.notifyButton.title = c.muted ? "Notifications: muted" : `Notifications: ${NOTIFY_LABELS[level] || level}`;
  const bell = c.muted || level === "none" ? "bell-off" : "bell";
  if (ui.notifyButton.dataset.icon !== bell) {
    ui.notifyButton.dataset.icon = bell;
    ui.notifyButton.querySelector(".icon").replaceWith(icon(bell));
  }
}

function openNotifyMenu(focus = "checked") {
  ui.notifyMenu.hidden = false;
  ui.notifyButton.setAttribute("aria-expanded", "true");
  const items = menuItems();
  const target =
    focus === "last" ? items[items.length - 1] : focus === "first" ? items[0] : items.find((i) => i.getAttribute("aria-checked") === "true");
  (target || items[0]).focus();
}

function closeNotifyMenu({ refocus = false } = {}) {
  if (ui.notifyMenu.hidden) return;
  ui.notifyMenu.hidden = true;
  ui.notifyButton.setAttribute("aria-expanded", "false");
  if (refocus) ui.notifyButton.focus();
}

async function changeNotifications(change) {
  if (current === null) return;
  const id = current;
  try {
    const conversation = await api(`/api/v1/conversations/${id}`, { method: "PATCH", body: change });
    learnPeople(conversation.members);
    client.adopt(conversation); // redraws the header, the list and the title's count
  } catch (error) {
    toast(`Could not change notifications: ${problem(error)}`);
  }
}

ui.notifyButton.addEventListener("click", () => {
  if (ui.notifyMenu.hidden) openNotifyMenu();
  else closeNotifyMenu();
});
ui.notifyButton.addEventListener("keydown", (event) => {
  if (event.key === "ArrowDown" || event.key === "ArrowUp") {
    event.preventDefault();
    openNotifyMenu(event.key === "ArrowDown" ? "first" : "last");
  }
});

ui.notifyMenu.addEventListener("click", (event) => {
  const item = event.target.closest('[role^="menuitem"]');
  if (!item) return;
  closeNotifyMenu({ refocus: true });
  if (item === ui.muteItem) changeNotifications({ muted: item.getAttribute("aria-checked") !== "true" });
  else changeNotifications({ notify: item.dataset.notify });
});

ui.notifyMenu.addEventListener("keydown", (event) => {
  const items = menuItems();
  const at = items.indexOf(document.activeElement);
  const moves = { ArrowDown: at + 1, ArrowUp: at - 1 + items.length, Home: 0, End: items.length - 1 };
  if (event.key in moves) {
    event.preventDefault();
    items[moves[event.key] % items.length].focus();
  } else if (event.key === "Escape") {
    event.preventDefault();
    closeNotifyMenu({ refocus: true });
  } else if (event.key === "Tab") {
    closeNotifyMenu(); // and let the focus move on
  }
});

// A click anywhere else, or the focus leaving, closes the menu.
document.addEventListener("pointerdown", (event) => {
  if (!ui.notifyWrap.contains(event.target)) closeNotifyMenu();
});
ui.notifyWrap.addEventListener("focusout", (event) => {
  if (event.relatedTarget && !ui.notifyWrap.contains(event.relatedTarget)) closeNotifyMenu();
});

// ---------------------------------------------------------------- notification settings (email, browser)

const settings = {
  dialog: $("dialog-settings"),
  form: $("settings-form"),
  status: $("settings-status"),
  email: $("settings-email"),
  emailField: $("settings-email-field"),
  emailError: $("settings-email-error"),
  emailNotifications: $("settings-email-notifications"),
  browser: $("settings-browser"),
  enableBrowser: $("settings-browser-enable"),
  error: $("settings-error"),
  save: $("settings-save"),
};

function showSettingsError(error) {
  const onEmail = error?.details?.field === "email";
  settings.emailError.textContent = onEmail ? problem(error) : "";
  settings.emailError.hidden = !onEmail;
  settings.emailField.classList.toggle("has-error", onEmail);
  if (onEmail) settings.email.setAttribute("aria-invalid", "true");
  else settings.email.removeAttribute("aria-invalid");
  settings.error.textContent = error && !onEmail ? problem(error) : "";
  settings.error.hidden = !error || onEmail;
  if (onEmail) settings.email.focus();
}

function renderBrowserNotifications() {
  const permission = attention.notificationPermission();
  settings.browser.textContent = !attention.notificationsSupported()
    ? "This browser cannot show notifications."
    : permission === "granted"
      ? "Browser notifications are on for this browser."
      : permission === "denied"
        ? "Browser notifications are blocked: allow them in the browser's site settings."
        : "Browser notifications are off for this browser.";
  settings.enableBrowser.hidden = permission !== "default" || !attention.notificationsSupported();
}

$("settings-button").addEventListener("click", async () => {
  showSettingsError(null);
  renderBrowserNotifications();
  settings.form.inert = true; // until the current values are in
  settings.status.textContent = "Loading…";
  settings.dialog.showModal();
  try {
    const profile = await api("/api/v1/users/me");
    settings.email.value = profile.email || "";
    settings.emailNotifications.checked = Boolean(profile.email_notifications);
    settings.status.textContent = "";
    settings.form.inert = false;
    settings.email.focus();
  } catch (error) {
    settings.status.textContent = problem(error);
    settings.form.inert = false;
    settings.save.disabled = true;
    $("settings-cancel").focus();
    return;
  }
  settings.save.disabled = false;
});

settings.form.addEventListener("submit", async (event) => {
  event.preventDefault();
  settings.save.disabled = true;
  try {
    await api("/api/v1/users/me", {
      method: "PATCH",
      body: { email: settings.email.value.trim(), email_notifications: settings.emailNotifications.checked },
    });
    settings.dialog.close();
    toast("Notification settings saved.");
  } catch (error) {
    showSettingsError(error);
  } finally {
    settings.save.disabled = false;
  }
});
settings.email.addEventListener("input", () => {
  if (!settings.emailError.hidden) showSettingsError(null);
});
$("settings-cancel").addEventListener("click", () => settings.dialog.close());
settings.enableBrowser.addEventListener("click", async () => {
  await enableNotifications();
  renderBrowserNotifications();
});

// ---------------------------------------------------------------- dialogs: people and groups

function personButton(user, onPick, extra = null) {
  return h(
    "li",
    {},
    h(
      "button",
      { type: "button", class: "pick", onclick: () => onPick(user) },
      avatar(user.display_name, user.id),
      h(
        "span",
        { class: "pick-text" },
        h("span", { class: "pick-name", text: user.id === me.id ? `${user.display_name} (you)` : user.display_name }),
        h("span", { class: "pick-sub", text: `@${user.username}` }),
      ),
      extra,
    ),
  );
}

async function findUsers(q, statusEl) {
  statusEl.textContent = "Searching…";
  try {
    const page = await api(`/api/v1/users?${query({ q, limit: 20 })}`);
    learnPeople(page.results);
    statusEl.textContent = page.results.length ? "" : "Nobody found.";
    return page.results;
  } catch (error) {
    statusEl.textContent = problem(error);
    return [];
  }
}

const newChat = {
  dialog: $("dialog-new-chat"),
  input: $("new-chat-query"),
  results: $("new-chat-results"),
  status: $("new-chat-status"),
};

const searchPeople = debounce(async () => {
  const users = await findUsers(newChat.input.value.trim(), newChat.status);
  newChat.results.replaceChildren(...users.map((u) => personButton(u, startDirect)));
}, 250);

$("new-chat").addEventListener("click", () => {
  newChat.input.value = "";
  newChat.results.replaceChildren();
  newChat.status.textContent = "";
  newChat.dialog.showModal();
  newChat.input.focus();
  searchPeople();
});
newChat.input.addEventListener("input", searchPeople);

async function startDirect(user) {
  try {
    const conversation = await api("/api/v1/conversations", { method: "POST", body: { kind: "direct", user: user.id } });
    client.adopt(conversation);
    newChat.dialog.close();
    openConversation(conversation.id);
  } catch (error) {
    newChat.status.textContent = problem(error);
  }
}

const newGroup = {
  dialog: $("dialog-new-group"),
  title: $("group-title"),
  input: $("group-query"),
  results: $("group-results"),
  chips: $("group-members"),
  public: $("group-public"),
  error: $("new-group-error"),
  picked: new Map(),
};

function renderChips() {
  newGroup.chips.replaceChildren(
    ...[...newGroup.picked.values()].map((u) =>
      h(
        "li",
        { class: "chip" },
        h("span", { text: u.display_name }),
        h(
          "button",
          {
            type: "button",
            class: "chip-remove",
            "aria-label": `Remove ${u.display_name}`,
            onclick: () => {
              newGroup.picked.delete(u.id);
              renderChips();
              newGroup.input.focus();
            },
          },
          icon("close"),
        ),
      ),
    ),
  );
}

const searchGroupPeople = debounce(async () => {
  const q = newGroup.input.value.trim();
  if (!q) {
    newGroup.results.replaceChildren();
    return;
  }
  const users = (await findUsers(q, newGroup.error)).filter((u) => u.id !== me.id);
  newGroup.error.hidden = !newGroup.error.textContent;
  newGroup.results.replaceChildren(
    ...users.map((u) =>
      personButton(u, (picked) => {
        newGroup.picked.set(picked.id, picked);
        renderChips();
        newGroup.input.value = "";
        newGroup.results.replaceChildren();
        newGroup.input.focus();
      }),
    ),
  );
}, 250);

$("new-group").addEventListener("click", () => {
  newGroup.title.value = "";
  newGroup.input.value = "";
  newGroup.public.checked = false;
  newGroup.picked.clear();
  newGroup.error.hidden = true;
  newGroup.results.replaceChildren();
  renderChips();
  newGroup.dialog.showModal();
  newGroup.title.focus();
});
newGroup.input.addEventListener("input", searchGroupPeople);

$("create-group").addEventListener("click", async () => {
  const title = newGroup.title.value.trim();
  if (!title) {
    newGroup.error.textContent = "Give the group a name.";
    newGroup.error.hidden = false;
    newGroup.title.focus();
    return;
  }
  try {
    const conversation = await api("/api/v1/conversations", {
      method: "POST",
      body: { kind: "group", title, members: [...newGroup.picked.keys()], public: newGroup.public.checked },
    });
    client.adopt(conversation);
    newGroup.dialog.close();
    openConversation(conversation.id);
  } catch (error) {
    newGroup.error.textContent = problem(error);
    newGroup.error.hidden = false;
  }
});

const browse = {
  dialog: $("dialog-browse"),
  input: $("browse-query"),
  results: $("browse-results"),
  status: $("browse-status"),
};

const searchGroups = debounce(async () => {
  browse.status.textContent = "Loading…";
  try {
    const page = await api(`/app/public-groups?${query({ q: browse.input.value.trim() })}`);
    browse.status.textContent = page.results.length ? "" : "No public groups found.";
    browse.results.replaceChildren(
      ...page.results.map((g) =>
        h(
          "li",
          { class: "group-row" },
          avatar(g.title, g.id),
          h(
            "span",
            { class: "pick-text" },
            h("span", { class: "pick-name", text: g.title }),
            h("span", { class: "pick-sub", text: g.last_activity_at ? `Active ${fmt.listTime(g.last_activity_at)}` : "" }),
          ),
          g.joined
            ? h("button", { type: "button", class: "button small", onclick: () => { browse.dialog.close(); openConversation(g.id); } }, "Open")
            : h("button", { type: "button", class: "button small primary", "aria-label": `Join ${g.title}`, onclick: () => joinGroup(g) }, "Join"),
        ),
      ),
    );
  } catch (error) {
    browse.status.textContent = problem(error);
  }
}, 250);

$("browse-groups").addEventListener("click", () => {
  browse.input.value = "";
  browse.results.replaceChildren();
  browse.dialog.showModal();
  browse.input.focus();
  searchGroups();
});
browse.input.addEventListener("input", searchGroups);

async function joinGroup(group) {
  try {
    const conversation = await api(`/api/v1/conversations/${group.id}/members`, { method: "POST", body: {} });
    client.adopt(conversation);
    browse.dialog.close();
    openConversation(conversation.id);
  } catch (error) {
    browse.status.textContent = problem(error);
  }
}

// ---------------------------------------------------------------- members and leaving

ui.membersButton.addEventListener("click", async () => {
  if (current === null) return;
  const dialog = $("dialog-members");
  const list = $("member-list");
  const status = $("members-status");
  status.textContent = "Loading…";
  list.replaceChildren();
  dialog.showModal();
  try {
    const detail = await api(`/api/v1/conversations/${current}`);
    client.setMembers(current, detail.members || []);
    status.textContent = `${detail.members.length} member${detail.members.length === 1 ? "" : "s"}`;
    list.replaceChildren(
      ...detail.members.map((m) => {
        learnPeople([m]);
        const entry = presence.get(m.id);
        return h(
          "li",
          { class: "member" },
          h("span", { class: "avatar-wrap" }, avatar(m.display_name, m.id), m.id !== me.id ? presenceDot(m.id) : null),
          h(
            "span",
            { class: "pick-text" },
            h("span", { class: "pick-name", text: m.id === me.id ? `${m.display_name} (you)` : m.display_name }),
            h("span", { class: "pick-sub", text: m.id === me.id ? `@${m.username}` : `@${m.username} · ${fmt.presenceText(entry) || "Offline"}` }),
          ),
          m.role !== "member" ? h("span", { class: "role", text: m.role }) : null,
        );
      }),
    );
    updatePresenceSubscription();
  } catch (error) {
    status.textContent = problem(error);
  }
});

ui.leaveButton.addEventListener("click", async () => {
  if (current === null) return;
  const id = current;
  const c = client.conversation(id);
  const ok = await confirmDialog(`Leave ${c?.title || "this group"}?`, "You will stop getting its messages. You can rejoin a public group later.", "Leave");
  if (!ok) return;
  try {
    await api(`/api/v1/conversations/${id}/members/${me.id}`, { method: "DELETE" });
    client.forget(id);
    if (current === id) closeConversation();
  } catch (error) {
    toast(`Could not leave: ${problem(error)}`);
  }
});

// ---------------------------------------------------------------- search

async function runSearch(q) {
  ui.searchResults.hidden = false;
  ui.conversations.hidden = true;
  ui.searchStatus.textContent = "Searching…";
  ui.searchList.replaceChildren();
  try {
    const page = await api(`/api/v1/search?${query({ q })}`);
    ui.searchStatus.textContent = page.results.length
      ? `${page.results.length}${page.next ? "+" : ""} result${page.results.length === 1 ? "" : "s"}`
      : "No messages match.";
    ui.searchList.replaceChildren(
      ...page.results.map(({ message, snippet }) => {
        const c = client.conversation(message.conversation);
        const date = fmt.toDate(message.created_at);
        return h(
          "li",
          {},
          h(
            "button",
            { type: "button", class: "result", "data-conversation": message.conversation, "data-message": message.id, onclick: () => openResult(message) },
            h(
              "span",
              { class: "result-top" },
              h("span", { class: "result-title", text: c?.title || "Conversation" }),
              date ? h("time", { datetime: message.created_at, text: fmt.listTime(message.created_at) }) : null,
            ),
            h("span", { class: "result-sender", text: nameOf(message.sender) }),
            h("span", { class: "result-snippet" }, snippetNodes(snippet)),
          ),
        );
      }),
    );
  } catch (error) {
    ui.searchStatus.textContent = problem(error);
  }
}

function closeSearch() {
  ui.searchResults.hidden = true;
  ui.conversations.hidden = false;
}

function openResult(message) {
  if (!client.active.has(message.conversation)) {
    toast("You are no longer in that conversation.");
    return;
  }
  openConversation(message.conversation, { reveal: message });
}

ui.searchForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const q = ui.searchInput.value.trim();
  if (q) runSearch(q);
  else closeSearch();
});
ui.searchInput.addEventListener("keydown", (event) => {
  if (event.key === "Escape") {
    ui.searchInput.value = "";
    closeSearch();
  }
});
$("close-search").addEventListener("click", () => {
  closeSearch();
  ui.searchInput.focus();
});

// ---------------------------------------------------------------- log out

$("logout-form").addEventListener("submit", async (event) => {
  const form = event.currentTarget;
  if (form.dataset.confirmed) return;
  event.preventDefault();
  const unsent = client.entries.size;
  if (unsent) {
    const ok = await confirmDialog("Log out?", `${unsent} unsent message${unsent === 1 ? "" : "s"} will be discarded.`, "Log out");
    if (!ok) return;
  }
  client.stop();
  attention.forgetCachedApp();
  await store.clear().catch(() => {});
  form.dataset.confirmed = "1";
  form.submit();
});

// ---------------------------------------------------------------- start

function routeFromHash() {
  const match = /^#c(\d+)$/.exec(location.hash);
  if (match) {
    const id = Number(match[1]);
    if (client.active.has(id) && id !== current) openConversation(id);
  }
}

addEventListener("hashchange", routeFromHash);
navigator.serviceWorker?.addEventListener("message", (event) => {
  if (event.data?.type === "open" && event.data.conversation) openConversation(Number(event.data.conversation));
  // A push arrived: the worker shows no notification for what is on screen here.
  if (event.data?.type === "showing") {
    event.ports[0]?.postMessage({ conversation: document.visibilityState === "visible" ? current : null });
  }
});

paintAvatar(ui.meAvatar, me.display_name, me.id);
renderStatus();
renderNotifyBanner();
for (const conversation of boot.conversations) client.adopt(conversation);
renderList();
routeFromHash();
idleTouch();
client.start().then(() => {
  if (current !== null) renderMessages({ stick: true });
});
attention.registerServiceWorker().then(() => {
  if (attention.notificationPermission() === "granted") attention.subscribePush(boot.vapid_public_key);
});
window.chat = { client }; // for the browser console and tests
