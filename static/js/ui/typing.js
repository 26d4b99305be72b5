// Typing: who is typing in each conversation (the line under the messages, the list's
// previews) and my own typing notices while I write.

import { editing } from "./composer.js";
import { soon } from "./helpers.js";
import { renderList } from "./list.js";
import { client, current, me, nameOf, ui } from "./shared.js";

export const typing = new Map(); // conversation -> Map(user id -> expiry timer)

export function renderTyping() {
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

export function clearTyping(conversation, user) {
  const users = typing.get(conversation);
  if (!users?.has(user)) return;
  clearTimeout(users.get(user));
  users.delete(user);
  if (conversation === current) renderTyping();
  soon(renderList);
}

let typingSentAt = 0;
let typingIn = null;
let typingStopTimer = null;
export function noteTyping() {
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

export function stopTyping() {
  clearTimeout(typingStopTimer);
  if (typingIn !== null) client.typing(typingIn, "stop");
  typingIn = null;
  typingSentAt = 0;
}

export function install() {
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
}
