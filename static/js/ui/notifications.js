// Notifications: in-tab notifications of new messages (by the conversation's level),
// the banner that asks for the browser's permission, and the header's notify menu
// (what notifies me in the open conversation, and Mute).

import { api } from "../api.js";
import { icon } from "../dom.js";
import { plainText } from "../markup.js";
import * as attention from "../notify.js";
import { openConversation } from "./conversation.js";
import { problem, toast } from "./helpers.js";
import { myStatus } from "./presence.js";
import { $, boot, client, current, learnPeople, me, nameOf, ui } from "./shared.js";

/** Whether a new message notifies me, by the server's rule: muted, then the level. */
function notifies(c, m) {
  if (c.muted) return false;
  if (c.notify === "none") return false;
  if (c.notify === "mentions") return (m.mentions || []).includes(me.id);
  return true;
}

export function notifyAbout(id, messages) {
  const c = client.conversation(id);
  if (!c || myStatus === "busy") return;
  const notifying = messages.filter((m) => notifies(c, m));
  if (!notifying.length) return;
  const m = notifying[notifying.length - 1];
  const text = plainText(m.body) || (m.attachments?.length ? `📎 ${m.attachments[0].filename}` : "New message");
  attention.notify({
    title: c.kind === "group" ? `${nameOf(m.sender)} in ${c.title}` : c.title,
    body: text.length > 200 ? `${text.slice(0, 200)}…` : text,
    tag: `conversation-${id}`,
    onClick: () => openConversation(id),
  });
}

export function renderNotifyBanner() {
  const dismissed = localStorage.getItem("chat.notify.dismissed") === "1";
  ui.notifyBanner.hidden = !attention.notificationsSupported() || attention.notificationPermission() !== "default" || dismissed;
}

export async function enableNotifications() {
  const permission = await attention.requestNotifications();
  renderNotifyBanner();
  if (permission === "granted") attention.subscribePush(boot.vapid_public_key);
  else toast("Notifications stay off. You can allow them in the browser's site settings.");
}

// ---------------------------------------------------------------- the notify menu of a conversation

// The header's "Notifications" menu (ARIA menu button): what notifies me while I am
// away (all messages, only @mentions, nothing) and Mute. The server answers the
// conversation, and the UI shows what it answered.
const NOTIFY_LABELS = { all: "All messages", mentions: "Only @mentions", none: "Nothing" };
const menuItems = () => [...ui.notifyMenu.querySelectorAll('[role^="menuitem"]')];

export function renderNotifyMenu(c) {
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

export function closeNotifyMenu({ refocus = false } = {}) {
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

export function install() {
  $("enable-notifications").addEventListener("click", enableNotifications);
  $("dismiss-notifications").addEventListener("click", () => {
    localStorage.setItem("chat.notify.dismissed", "1");
    renderNotifyBanner();
  });

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
}
