// The message action menu: a reaction, Reply, Copy text, Edit and Delete (my messages),
// Delete for me and Report… (others' messages; blocking.js does both) for one
// message, opened from its "⋯" button (hover or keyboard), a right-click on it, or a
// long press on a touch screen. An ARIA menu: arrows, Home and End move, Enter picks,
// Escape and Tab close, and the focus goes back where it was. It is placed beside the
// bubble (then below or above it), never over the message's text.

import { h, icon } from "../dom.js";
import { hideForMe, openReport } from "./blocking.js";
import { deleteMessage, startEdit, startReply } from "./composer.js";
import { toast } from "./helpers.js";
import { $, client, current, me, ui } from "./shared.js";

const LONG_PRESS_MS = 500;
const GAP = 6; // px between the bubble and the menu

let menu = null;
const open = { id: null, returnTo: null };

/** The "⋯" button beside a message's bubble (messages.js adds it to the actions). */
export function moreButton(m) {
  return h(
    "button",
    {
      type: "button",
      class: "icon-button small more",
      "data-action": "more",
      "aria-label": "More actions",
      "aria-haspopup": "menu",
      "aria-expanded": "false",
      title: "More actions",
      onclick: (event) => openMenu(m.id, event.currentTarget),
      onkeydown: (event) => {
        if (event.key === "ArrowDown" || event.key === "ArrowUp") {
          event.preventDefault();
          openMenu(m.id, event.currentTarget, event.key === "ArrowUp" ? "last" : "first");
        }
      },
    },
    h("span", { "aria-hidden": "true", text: "⋯" }),
  );
}

function messageOf(id) {
  return current === null ? null : client.stateOf(current).get(id);
}

const items = () => [...menu.querySelectorAll('[role="menuitem"]')];

function item(label, action, glyph = null) {
  return h(
    "button",
    { type: "button", class: "menu-item", role: "menuitem", tabindex: "-1", "data-menu-action": action },
    glyph ? icon(glyph) : h("span", { class: "icon", "aria-hidden": "true" }),
    h("span", { text: label }),
  );
}

function reply(m) {
  startReply(m);
}

// The reactions the menu offers (the emoji picker's full set is for writing).
export const QUICK_REACTIONS = [
  ["\u{1F44D}", "thumbs up"],
  ["\u2764\uFE0F", "heart"],
  ["\u{1F602}", "tears of joy"],
  ["\u{1F62E}", "surprise"],
  ["\u{1F622}", "sad"],
  ["\u{1F64F}", "thanks"],
];

/** Add my reaction, or take it back when I already made it. */
export async function toggleReaction(m, emoji) {
  const mine = (m.reactions || []).some((r) => r.emoji === emoji && r.users.includes(me.id));
  try {
    await client.react(m.conversation, m.id, emoji, !mine);
  } catch (error) {
    toast(`Could not react: ${error?.message || error}`);
  }
}

async function copy(m) {
  try {
    await navigator.clipboard.writeText(m.body);
    toast("Copied.");
  } catch {
    toast("Could not copy the text.");
  }
}

const ACTIONS = {
  reply: (m) => reply(m),
  ...Object.fromEntries(QUICK_REACTIONS.map(([emoji]) => [`react:${emoji}`, (m) => toggleReaction(m, emoji)])),
  copy: (m) => copy(m),
  edit: (m) => startEdit(m),
  delete: (m) => deleteMessage(m),
  hide: (m) => hideForMe(m),
  report: (m) => openReport(m),
};

function fill(m) {
  const own = m.sender === me.id;
  const reactions = h(
    "div",
    { class: "menu-reactions", role: "group", "aria-label": "React" },
    QUICK_REACTIONS.map(([emoji, name]) => {
      const mine = (m.reactions || []).some((r) => r.emoji === emoji && r.users.includes(me.id));
      const button = h("button", {
        type: "button",
        class: `menu-item reaction-choice${mine ? " mine" : ""}`,
        role: "menuitem",
        tabindex: "-1",
        "data-menu-action": `react:${emoji}`,
        "aria-label": mine ? `Take back ${name}` : `React with ${name}`,
        text: emoji,
      });
      return button;
    }),
  );
  const all = [
    reactions,
    item("Reply", "reply"),
    m.body ? item("Copy text", "copy") : null,
    own && m.body ? item("Edit", "edit", "edit") : null,
    own ? item("Delete", "delete", "delete") : null,
    item("Delete for me", "hide"),
    !own && m.kind === "text" ? item("Report…", "report") : null,
  ];
  menu.replaceChildren(...all.filter(Boolean));
}

/** Place the menu beside the bubble (my side's other side first), else below or above it. */
function place(bubble, own) {
  menu.style.left = "0px";
  menu.style.top = "0px";
  const b = bubble.getBoundingClientRect();
  const m = menu.getBoundingClientRect();
  const vw = document.documentElement.clientWidth;
  const vh = document.documentElement.clientHeight;
  const topBeside = Math.max(GAP, Math.min(b.top, vh - m.height - GAP));
  const left = { x: b.left - GAP - m.width, y: topBeside };
  const right = { x: b.right + GAP, y: topBeside };
  const x = Math.max(GAP, Math.min(own ? b.right - m.width : b.left, vw - m.width - GAP));
  const below = { x, y: b.bottom + GAP };
  const above = { x, y: b.top - GAP - m.height };
  const fits = (p) => p.x >= 0 && p.y >= 0 && p.x + m.width <= vw && p.y + m.height <= vh;
  const best = [own ? left : right, own ? right : left, below, above].find(fits) || below;
  menu.style.left = `${Math.round(best.x)}px`;
  menu.style.top = `${Math.round(best.y)}px`;
}

function openMenu(id, opener, focus = "first") {
  const m = messageOf(id);
  const li = $(`msg-${id}`);
  if (!m || !li || m.deleted) return;
  if (open.id === id && !menu.hidden) return;
  closeMenu();
  fill(m);
  if (!items().length) return;
  open.id = id;
  open.returnTo = opener;
  menu.hidden = false;
  const bubble = li.querySelector(".bubble");
  bubble.scrollIntoView({ block: "nearest" });
  place(bubble, m.sender === me.id);
  li.querySelector('[data-action="more"]')?.setAttribute("aria-expanded", "true");
  li.classList.add("menu-open");
  const all = items();
  (focus === "last" ? all[all.length - 1] : all[0]).focus();
}

/** Close the menu; `refocus`: give the focus back to what had it (the message, or its "⋯"). */
export function closeMenu({ refocus = false } = {}) {
  if (!menu || menu.hidden) return;
  menu.hidden = true;
  const li = $(`msg-${open.id}`);
  li?.classList.remove("menu-open");
  li?.querySelector('[data-action="more"]')?.setAttribute("aria-expanded", "false");
  if (refocus) {
    // The message may have been drawn again meanwhile: the same control of the new one.
    let target = open.returnTo;
    if (!target?.isConnected) target = target?.dataset?.action ? li?.querySelector(`[data-action="${target.dataset.action}"]`) : li;
    (target || li || ui.messages).focus({ preventScroll: true });
  }
  open.id = null;
  open.returnTo = null;
}

function pick(action) {
  const m = messageOf(open.id);
  closeMenu({ refocus: action === "delete" || action === "copy" });
  if (m && ACTIONS[action]) ACTIONS[action](m);
}

function messageIdOf(target) {
  const li = target.closest?.(".msg[data-id]:not(.system):not(.deleted)");
  return li && ui.messageList.contains(li) ? Number(li.dataset.id) : null;
}

export function install() {
  menu = h("div", { class: "menu message-menu", id: "message-menu", role: "menu", "aria-label": "Message actions", hidden: true });
  $("chat-view").append(menu);

  menu.addEventListener("click", (event) => {
    const chosen = event.target.closest('[role="menuitem"]');
    if (chosen) pick(chosen.dataset.menuAction);
  });
  menu.addEventListener("keydown", (event) => {
    const all = items();
    const at = all.indexOf(document.activeElement);
    const moves = { ArrowDown: at + 1, ArrowUp: at - 1 + all.length, Home: 0, End: all.length - 1 };
    if (event.key in moves) {
      event.preventDefault();
      all[moves[event.key] % all.length].focus();
    } else if (event.key === "Escape") {
      event.preventDefault();
      event.stopPropagation(); // not the message list's Escape (back to the composer)
      closeMenu({ refocus: true });
    } else if (event.key === "Tab") {
      event.preventDefault();
      closeMenu({ refocus: true });
    }
  });
  menu.addEventListener("focusout", (event) => {
    if (event.relatedTarget && !menu.contains(event.relatedTarget)) closeMenu();
  });
  document.addEventListener("pointerdown", (event) => {
    if (!menu.hidden && !menu.contains(event.target) && !event.target.closest?.('[data-action="more"]')) closeMenu();
  });
  // The list scrolls (or the window changes): the menu stays beside its bubble.
  const follow = () => {
    if (menu.hidden) return;
    const li = $(`msg-${open.id}`);
    if (li) place(li.querySelector(".bubble"), li.classList.contains("own"));
    else closeMenu();
  };
  ui.messages.addEventListener("scroll", follow, { passive: true });
  addEventListener("resize", follow);

  // A right-click on a message; the context-menu key or Shift+F10 on a focused one.
  ui.messageList.addEventListener("contextmenu", (event) => {
    const id = messageIdOf(event.target);
    if (id === null || event.target.closest("a, img")) return; // a link's own menu stays
    event.preventDefault();
    openMenu(id, event.target.closest(".msg"));
  });

  // A long press with a finger (the phone's way to a message's actions).
  let press = null;
  let pressed = false; // the last press opened the menu
  const cancel = () => {
    if (press) clearTimeout(press.timer);
    press = null;
  };
  ui.messageList.addEventListener("pointerdown", (event) => {
    if (event.pointerType !== "touch") return;
    const id = messageIdOf(event.target);
    if (id === null || event.target.closest("button, a")) return;
    cancel();
    const li = event.target.closest(".msg");
    pressed = false;
    press = { x: event.clientX, y: event.clientY, timer: setTimeout(() => {
      press = null;
      pressed = true;
      openMenu(id, li);
    }, LONG_PRESS_MS) };
  });
  // The finger lifted after the menu opened: no mouse events, no click (they would
  // focus the message, and so close the menu).
  ui.messageList.addEventListener("touchend", (event) => {
    if (pressed) event.preventDefault();
    pressed = false;
  });
  ui.messageList.addEventListener("pointermove", (event) => {
    if (press && Math.hypot(event.clientX - press.x, event.clientY - press.y) > 10) cancel();
  });
  for (const type of ["pointerup", "pointercancel"]) ui.messageList.addEventListener(type, cancel);
}
