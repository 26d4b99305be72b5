// The open conversation: opening and closing it (the URL hash, the panes, the draft),
// its header (title, avatar, subtitle) and its members' details (read on open, for
// names, read marks and presence).

import { ApiError, api } from "../api.js";
import * as fmt from "../format.js";
import * as attention from "../notify.js";
import { autosize, cancelEdit, cancelReply, clearUploads, closeMentions, drafts, saveDraft } from "./composer.js";
import { debounce, paintAvatar, soon, toast } from "./helpers.js";
import { renderList } from "./list.js";
import { beginUnread, markRead, renderMessages, rendered, revealMessage, showFirstUnread } from "./messages.js";
import { closeNotifyMenu, renderNotifyMenu } from "./notifications.js";
import { presence, resubscribePresence, updatePresenceSubscription } from "./presence.js";
import { $, client, current, isGroup, learnPeople, me, setCurrent, ui } from "./shared.js";
import { renderTyping, stopTyping } from "./typing.js";
import { renderBlock } from "./blocking.js";

export async function openConversation(id, { reveal = null } = {}) {
  if (current !== null && current !== id) {
    saveDraft();
    stopTyping();
  }
  const switching = current !== id;
  // What is unread now: shown under a divider, from the first of them (not the newest).
  const info = client.conversation(id);
  const unread = switching && beginUnread(id, info?.read_seq || 0, reveal ? 0 : info?.unread || 0);
  setCurrent(id);
  if (switching) {
    closeNotifyMenu();
    closeMentions();
    cancelEdit();
    cancelReply();
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
  renderMessages({ stick: !unread });
  renderTyping();
  soon(renderList);
  // Wide screens: straight to writing. Phones: to the heading (no keyboard popping up).
  if (matchMedia("(min-width: 48em)").matches) ui.input.focus({ preventScroll: true });
  else ui.title.focus({ preventScroll: true });
  loadDetails(id);
  attention.dismissShown(id); // it is in front of the user now
  await client.open(id);
  if (current !== id) return;
  renderMessages({ stick: reveal === null && !unread });
  setTimeout(() => ui.messageList.setAttribute("aria-busy", "false"), 0);
  if (reveal) await revealMessage(id, reveal);
  else if (unread) await showFirstUnread(id);
  markRead();
}

export function closeConversation() {
  closeNotifyMenu();
  closeMentions();
  saveDraft();
  stopTyping();
  setCurrent(null);
  client.focused = null;
  history.replaceState(null, "", location.pathname);
  ui.chat.hidden = true;
  ui.welcome.hidden = false;
  ui.shell.dataset.pane = "list";
  soon(renderList);
}

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
export const reloadDetails = debounce((id) => loadDetails(id), 300);

let prefetched = false;
/** Read the members of the most recent groups once, for sender names in previews. */
export async function prefetchDetails() {
  if (prefetched) return;
  prefetched = true;
  const groups = client.conversationIds().filter((id) => isGroup(id) && !client.members.has(id));
  for (const id of groups.slice(0, 30)) await loadDetails(id);
}

export function renderHeader() {
  if (current === null) return;
  const c = client.conversation(current);
  if (!c) return;
  ui.title.textContent = c.title || "Conversation";
  if (c.kind === "direct") paintAvatar(ui.chatAvatar, c.title, c.peer, c.peer_avatar_url);
  else paintAvatar(ui.chatAvatar, c.title, c.id, c.picture_url);
  ui.leaveButton.hidden = c.kind !== "group";
  ui.membersButton.hidden = c.kind !== "group";
  renderNotifyMenu(c);
  renderRequest(c);
  renderBlock();
  renderPostPolicy(c);
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

/** The composer of an admins-only group is replaced by a note for plain members. */
function renderPostPolicy(c) {
  const closed = c.kind === "group" && c.post_policy === "admins" && !["owner", "admin"].includes(c.role);
  $("admins-only-note").hidden = !closed;
  if (closed) ui.composer.hidden = true;
}

/** A message request: say what accepting shares, offer accept and decline. */
function renderRequest(c) {
  ui.requestBar.hidden = !c.request;
  if (!c.request) return;
  ui.requestText.textContent =
    c.kind === "direct"
      ? `${c.title || "Someone"} is not in your contacts. Until you accept or reply, they do not see that you read their messages, that you are online or typing.`
      : "Someone who is not in your contacts added you to this group. Until you accept or write, its members do not see that you read, are online or typing.";
}

async function answerRequest(accept) {
  if (current === null) return;
  const id = current;
  try {
    if (accept) {
      await api(`/api/v1/conversations/${id}/accept`, { method: "POST" });
      // The devices hear of it as `conversation.updated` (`accepted`); this one at once.
      ui.requestBar.hidden = true;
    } else {
      await api(`/api/v1/conversations/${id}/decline`, { method: "POST" });
      client.forget(id);
      if (current === id) closeConversation();
      toast("Request declined.");
    }
  } catch (error) {
    toast(`Could not ${accept ? "accept" : "decline"}: ${error.message || error}`);
  }
}

export function install() {
  ui.requestAccept.addEventListener("click", () => answerRequest(true));
  ui.requestDecline.addEventListener("click", () => answerRequest(false));
  ui.back.addEventListener("click", () => {
    const id = current;
    closeConversation();
    ui.list.querySelector(`.conv[data-id="${id}"]`)?.focus();
  });

  client.addEventListener("membership", ({ detail }) => {
    if (detail.reason === "accepted") resubscribePresence();
    if ((detail.reason === "left" || detail.reason === "removed") && detail.conversation === current) {
      closeConversation();
      toast(detail.reason === "removed" ? "You were removed from the group." : "You left the group.");
    }
  });
}
