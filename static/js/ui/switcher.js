// The quick switcher (Ctrl+K, Cmd+K on a Mac): a dialog with a box to type in and the
// conversations whose title matches, then people of the directory with no direct chat
// yet. The first match is highlighted; Up and Down move the highlight, Enter (or a click)
// opens it: a conversation, or a person's direct chat, started as the New chat dialog
// does. Escape closes it (a native dialog), the focus back where it was.

import { api, query } from "../api.js";
import { h } from "../dom.js";
import { openConversation } from "./conversation.js";
import { startDirectChat } from "./dialogs.js";
import { avatar, debounce, problem } from "./helpers.js";
import { $, client, learnPeople, me } from "./shared.js";

const MAX_CONVERSATIONS = 12;

const sw = {
  dialog: $("dialog-switcher"),
  input: $("switcher-input"),
  list: $("switcher-list"),
  status: $("switcher-status"),
  items: [], // what is shown: {kind: "conversation", id, title, c} or {kind: "person", id, title, user}
  active: 0,
  people: [], // the directory's answer for `peopleFor`
  peopleFor: null,
  asked: 0, // the directory searches started, to drop a late answer
};

const keyOf = (item) => `${item.kind}-${item.id}`;

/** Conversations whose title (or a word of it) starts with `q`, then those containing it. */
function conversationMatches(q) {
  const needle = q.trim().toLowerCase();
  const ranked = [];
  for (const id of client.conversationIds()) {
    const c = client.conversation(id);
    if (!c) continue;
    const title = c.title || "Conversation";
    const lower = title.toLowerCase();
    const rank = !needle
      ? 0
      : lower.startsWith(needle)
        ? 0
        : lower.split(/\s+/).some((word) => word.startsWith(needle))
          ? 1
          : lower.includes(needle)
            ? 2
            : -1;
    if (rank >= 0) ranked.push({ rank, item: { kind: "conversation", id, title, c } });
  }
  ranked.sort((a, b) => a.rank - b.rank); // stable: most recent activity first within a rank
  return ranked.slice(0, MAX_CONVERSATIONS).map(({ item }) => item);
}

function render() {
  const q = sw.input.value.trim();
  const previous = sw.items[sw.active];
  const conversations = conversationMatches(q);
  // A person with a direct chat is that chat, listed already when it matches.
  const peers = new Set(
    client
      .conversationIds()
      .map((id) => client.conversation(id))
      .filter((c) => c?.kind === "direct")
      .map((c) => c.peer),
  );
  const people = q && sw.peopleFor === q ? sw.people.filter((u) => !peers.has(u.id)) : [];
  sw.items = [...conversations, ...people.map((user) => ({ kind: "person", id: user.id, title: user.display_name, user }))];
  const kept = previous ? sw.items.findIndex((item) => keyOf(item) === keyOf(previous)) : -1;
  sw.active = Math.max(0, kept);
  sw.list.replaceChildren(...sw.items.map(option));
  sw.input.setAttribute("aria-expanded", String(sw.items.length > 0));
  sw.status.textContent = sw.items.length ? "" : q && sw.peopleFor !== q ? "Searching…" : "Nothing matches.";
  markActive();
}

function option(item, index) {
  const { kind, c, user } = item;
  const pic =
    kind === "person"
      ? avatar(user.display_name, user.id, "avatar", user.avatar_url)
      : c.kind === "direct"
        ? avatar(item.title, c.peer, "avatar", c.peer_avatar_url)
        : avatar(item.title, item.id);
  const sub =
    kind === "person"
      ? `@${user.username} · start a chat`
      : c.kind === "direct"
        ? c.peer === me.id
          ? "Notes to yourself"
          : "Direct chat"
        : c.public
          ? "Public group"
          : "Group";
  return h(
    "li",
    {
      role: "option",
      id: `switcher-option-${keyOf(item)}`,
      class: "switcher-option",
      "aria-selected": String(index === sw.active),
      onmousedown: (event) => event.preventDefault(), // the focus stays in the box
      onclick: () => pick(item),
    },
    pic,
    h("span", { class: "pick-text" }, h("span", { class: "pick-name", dir: "auto", text: item.title }), h("span", { class: "pick-sub", text: sub })),
  );
}

function markActive() {
  const options = sw.list.children;
  for (let i = 0; i < options.length; i += 1) options[i].setAttribute("aria-selected", String(i === sw.active));
  const active = options[sw.active];
  if (active) {
    sw.input.setAttribute("aria-activedescendant", active.id);
    active.scrollIntoView({ block: "nearest" });
  } else {
    sw.input.removeAttribute("aria-activedescendant");
  }
}

async function findPeople() {
  const q = sw.input.value.trim();
  if (!q || sw.peopleFor === q) return;
  const asked = ++sw.asked;
  try {
    const page = await api(`/api/v1/users?${query({ q, limit: 10 })}`);
    if (asked !== sw.asked) return;
    learnPeople(page.results);
    sw.people = page.results;
    sw.peopleFor = q;
  } catch (error) {
    if (asked !== sw.asked) return;
    sw.people = [];
    sw.peopleFor = q;
    if (sw.input.value.trim() === q) sw.status.textContent = problem(error);
    return;
  }
  if (sw.dialog.open && sw.input.value.trim() === q) render();
}
const findPeopleSoon = debounce(findPeople, 200);

async function pick(item) {
  if (!item) return;
  if (item.kind === "conversation") {
    sw.dialog.close();
    openConversation(item.id);
    return;
  }
  try {
    const id = await startDirectChat(item.user);
    sw.dialog.close();
    openConversation(id);
  } catch (error) {
    sw.status.textContent = problem(error);
  }
}

async function key(event) {
  if (event.isComposing) return;
  const count = sw.items.length;
  if ((event.key === "ArrowDown" || event.key === "ArrowUp") && count) {
    event.preventDefault();
    sw.active = (sw.active + (event.key === "ArrowDown" ? 1 : count - 1)) % count;
    markActive();
  } else if (event.key === "Enter") {
    event.preventDefault();
    // Nothing listed yet: the people of what is typed may be on their way.
    if (!count && sw.input.value.trim()) {
      await findPeople();
      render();
    }
    pick(sw.items[sw.active]);
  }
}

export function openSwitcher() {
  if (!sw.dialog.open) {
    sw.input.value = "";
    sw.items = [];
    sw.active = 0;
    render();
    sw.dialog.showModal();
  }
  sw.input.focus();
  sw.input.select();
}

export function install() {
  sw.input.addEventListener("input", () => {
    sw.active = 0;
    sw.items = [];
    render();
    findPeopleSoon();
  });
  sw.input.addEventListener("keydown", key);
  // A click on the backdrop (outside the dialog's box) closes it.
  sw.dialog.addEventListener("click", (event) => {
    if (event.target === sw.dialog) sw.dialog.close();
  });
}
