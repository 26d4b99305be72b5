// Presence: the dots beside people, the presence subscription (the direct chats' peers
// and the open group's members), my own status (the Busy toggle) and going idle.

import { api } from "../api.js";
import { h } from "../dom.js";
import * as fmt from "../format.js";
import { renderHeader } from "./conversation.js";
import { debounce, problem, soon, toast } from "./helpers.js";
import { client, current, isGroup, me, ui } from "./shared.js";

export const presence = new Map(); // user id -> {state, last_seen}
export let myStatus = me.status;
let subscribed = "";

export function presenceDot(userId) {
  const entry = presence.get(userId) || { state: "offline" };
  return h(
    "span",
    { class: "presence", "data-user": userId, "data-state": entry.state, title: fmt.presenceText(entry) },
    h("span", { class: "visually-hidden", text: fmt.PRESENCE_LABELS[entry.state] || "" }),
  );
}

// ---------------------------------------------------------------- status (busy)

let statusTimer = null;
const LONGEST_TIMER = 2 ** 31 - 1; // ms; a longer setTimeout fires at once

/**
 * Take my status as the server answered it. A busy status with an end (`until`, ISO)
 * turns available here when the end passes (the server does the same for everyone).
 */
export function setMyStatus(status, until = null) {
  myStatus = status === "busy" ? "busy" : "available";
  clearTimeout(statusTimer);
  const wait = until ? new Date(until).getTime() - Date.now() : NaN;
  if (myStatus === "busy" && wait <= LONGEST_TIMER) {
    statusTimer = setTimeout(() => setMyStatus("available"), Math.max(0, wait) + 500);
  }
  renderStatus();
}

export function renderStatus() {
  const busy = myStatus === "busy";
  ui.busy.setAttribute("aria-pressed", String(busy));
  ui.busy.dataset.state = busy ? "busy" : "available";
  ui.busy.querySelector(".status-label").textContent = busy ? "Busy" : "Available";
}

// ---------------------------------------------------------------- following people

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

export const updatePresenceSubscription = debounce(() => {
  if (!client.connected) return;
  const users = presenceTargets().sort((a, b) => a - b);
  const key = users.join(",");
  if (key === subscribed) return;
  subscribed = key;
  client.subscribePresence(users).catch((error) => {
    subscribed = "";
    // Over the socket's presence budget: the server says when to ask again.
    if (error?.code === "rate_limited") {
      setTimeout(updatePresenceSubscription, 1000 * (error.retryAfter ?? 1));
    }
  });
}, 200);

/** Ask for the presence of everyone again (a message request was accepted: more is visible). */
export function resubscribePresence() {
  subscribed = "";
  updatePresenceSubscription();
}

/** A new connection is ready (`session.ready`): take its status, follow everyone again. */
export function onSessionReady(detail) {
  if (detail.status) {
    myStatus = detail.status;
    renderStatus();
  }
  subscribed = ""; // a new connection follows nobody yet
  updatePresenceSubscription();
}

// Idle: tell the server after five minutes without input (presence `away`).
let idle = false;
let idleTimer = null;
export function idleTouch() {
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

export function install() {
  if (me.status_until) setMyStatus(me.status, me.status_until);
  ui.busy.addEventListener("click", async () => {
    const next = myStatus === "busy" ? "available" : "busy";
    try {
      if (client.connected) await client.setStatus(next);
      else await api("/api/v1/users/me", { method: "PATCH", body: { status: next } });
      setMyStatus(next);
    } catch (error) {
      toast(`Could not change your status: ${problem(error)}`);
    }
  });

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

  for (const type of ["keydown", "pointerdown", "wheel", "touchstart"]) {
    addEventListener(type, idleTouch, { passive: true });
  }
}
