// The conversation list: one row per conversation (avatar, title, time, preview,
// unread badge), drawn again whenever the client's conversations change. A conversation
// with a draft (other than the open one) shows "Draft: <text>" instead of its preview.
// Each conversation keeps its row: a redraw updates it in place and moves only the rows
// whose place changed, so a click that spans a redraw (a message arriving) is not lost.

import { Rows, h, icon } from "../dom.js";
import * as fmt from "../format.js";
import { plainText } from "../markup.js";
import * as attention from "../notify.js";
import { openConversation } from "./conversation.js";
import { drafts } from "./composer.js";
import { avatar } from "./helpers.js";
import { presence, presenceDot, updatePresenceSubscription } from "./presence.js";
import { client, current, me, nameOf, names, ui } from "./shared.js";
import { typing } from "./typing.js";

function previewText(conversation) {
  const id = conversation.id;
  const waiting = client.outbox(id);
  const typers = [...(typing.get(id)?.keys() || [])];
  if (typers.length && id !== current) return `${nameOf(typers[0])} is typing…`;
  if (waiting.length) {
    const last = waiting[waiting.length - 1];
    return `${last.status === "failed" ? "Not sent" : "Sending"}: ${plainText(last.body) || "attachment"}`;
  }
  const m = conversation.last;
  if (!m) return conversation.last_seq > 0 ? "" : "No messages yet";
  if (m.kind === "system") return m.body;
  if (m.deleted) return "Message deleted";
  const file = m.attachments?.[0];
  const text = plainText(m.body) || (file ? (file.voice ? "🎤 Voice message" : `📎 ${file.filename}`) : "");
  if (m.sender === me.id) return `You: ${text}`;
  const sender = names.get(m.sender);
  return conversation.kind === "group" && sender ? `${sender}: ${text}` : text;
}

/** The preview line: the draft, marked, or what previewText says. */
function preview(c) {
  const typers = typing.get(c.id)?.size;
  const draft = c.id !== current && !typers ? drafts.get(c.id).trim() : "";
  if (!draft) return h("span", { class: "conv-preview", id: `conv-preview-${c.id}`, text: previewText(c) });
  return h(
    "span",
    { class: "conv-preview has-draft", id: `conv-preview-${c.id}` },
    h("span", { class: "draft-label", text: "Draft:" }),
    ` ${draft.split("\n")[0]}`,
  );
}

function conversationItem(id) {
  const c = client.conversation(id);
  const title = c.title || "Conversation";
  const unread = c.unread || 0;
  const pic = h("span", { class: "avatar-wrap" }, c.kind === "direct" ? avatar(title, c.peer, "avatar", c.peer_avatar_url) : avatar(title, id, "avatar", c.picture_url));
  if (c.kind === "group") pic.append(h("span", { class: "kind-icon", "aria-hidden": "true" }, icon("group")));
  if (c.kind === "direct" && c.peer !== undefined && c.peer !== me.id) pic.append(presenceDot(c.peer));
  const state = c.kind === "direct" && c.peer !== me.id ? presence.get(c.peer)?.state : null;
  const label = [title, c.request ? "message request" : null, state ? fmt.PRESENCE_LABELS[state] : null, c.muted ? "muted" : null, unread ? `${unread} unread` : null]
    .filter(Boolean)
    .join(", ");
  const button = h(
    "button",
    {
      type: "button",
      class: `conv${unread ? " has-unread" : ""}${c.request ? " request" : ""}`,
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
        h("span", { class: "conv-title", dir: "auto", text: title }),
        h("time", { class: "conv-time", datetime: c.last_activity_at || null, text: fmt.listTime(c.last_activity_at) }),
      ),
      h(
        "span",
        { class: "conv-bottom" },
        preview(c),
        c.request ? h("span", { class: "request-mark", text: "Request" }) : null,
        c.muted ? h("span", { class: "muted-mark", title: "Muted" }, icon("bell-off"), h("span", { class: "visually-hidden", text: "Muted" })) : null,
        unread
          ? h("span", { class: "badge" }, String(unread > 99 ? "99+" : unread), h("span", { class: "visually-hidden", text: " unread" }))
          : null,
      ),
    ),
  );
  return h("li", { "data-id": id }, button);
}

/**
 * Move the focus between the `selector` items of `container` with Up and Down (Home,
 * End); Up on the first goes to `above` if given. Answer whether the key was used.
 */
export function arrowKeys(event, container, selector, above = null) {
  const moves = { ArrowUp: -1, ArrowDown: 1, Home: -Infinity, End: Infinity };
  if (!(event.key in moves) || !event.target.matches(selector) || event.altKey || event.ctrlKey || event.metaKey) return false;
  const all = [...container.querySelectorAll(selector)];
  const at = all.indexOf(event.target) + moves[event.key];
  event.preventDefault();
  if (at < 0 && above && event.key === "ArrowUp") above.focus();
  else all[Math.max(0, Math.min(all.length - 1, at))].focus();
  return true;
}

/** Up and Down (Home, End) move between the conversations; Tab leaves the list. */
export function install() {
  ui.list.addEventListener("keydown", (event) => arrowKeys(event, ui.list, ".conv"));
}

/** Each conversation's row, kept from one redraw to the next. */
const rows = new Rows(ui.list);

export function renderList() {
  const ids = client.conversationIds();
  const focused = document.activeElement?.closest?.("#conversation-list .conv")?.dataset.id;
  rows.draw(ids, conversationItem);
  ui.emptyList.hidden = ids.length > 0;
  if (focused) ui.list.querySelector(`.conv[data-id="${Number(focused)}"]`)?.focus();
  attention.setTitleCount(client.totalUnread());
  for (const id of ids) {
    const c = client.conversation(id);
    if (c.kind === "direct" && c.peer !== undefined) names.set(c.peer, c.title);
  }
  updatePresenceSubscription();
}
