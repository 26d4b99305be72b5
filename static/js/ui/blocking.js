// Blocking, reports and delete for me. A direct chat's header has "Block" / "Unblock";
// while I block the person, the composer gives way to a notice (what I would send is
// refused with the same neutral words both ways, so the blocked person learns nothing).
// The message action menu (actions.js) offers "Delete for me" (hidden on all of my
// devices: they hear `message.hidden`, and a device that was away asks for the ids
// hidden since its cursor when it connects) and "Report…" (a small dialog: a reason
// and a few words for staff).

import { api, query } from "../api.js";
import { h } from "../dom.js";
import { confirmDialog, toast } from "./helpers.js";
import { $, client, current, me, ui } from "./shared.js";

const blocked = new Map(); // the people I blocked: id -> display name
const CURSOR_KEY = `chat.hidden-cursor.${me.id}`;
let reporting = null; // the message the report dialog is about

function peer() {
  const c = current === null ? null : client.conversation(current);
  return c && c.kind === "direct" && c.peer !== me.id ? c.peer : null;
}

/** Show the Block/Unblock control and the blocked notice for the open conversation. */
export function renderBlock() {
  const button = $("block-button");
  const other = peer();
  const isBlocked = other !== null && blocked.has(other);
  button.hidden = other === null;
  button.querySelector(".label").textContent = isBlocked ? "Unblock" : "Block";
  button.title = isBlocked ? "Unblock this person" : "Block this person";
  $("blocked-note").hidden = !isBlocked;
  ui.composer.hidden = isBlocked;
  renderBlockedList();
}

/** The settings dialog's list of the people I blocked, each with Unblock. */
function renderBlockedList() {
  const rows = [...blocked].map(([id, name]) =>
    h(
      "li",
      { class: "settings-row" },
      h("p", { text: name }),
      h("button", {
        type: "button",
        class: "button small",
        text: "Unblock",
        "aria-label": `Unblock ${name}`,
        onclick: () => unblock(id, name),
      }),
    ),
  );
  $("settings-blocked").replaceChildren(...rows);
  $("settings-blocked-empty").hidden = rows.length > 0;
}

async function unblock(id, name) {
  try {
    await api(`/api/v1/users/${id}/block`, { method: "DELETE" });
    blocked.delete(id);
    toast(`${name} is unblocked.`);
  } catch (error) {
    toast(`Could not unblock: ${error?.message || error}`);
  }
  renderBlock();
}

async function toggleBlock() {
  const other = peer();
  if (other === null) return;
  const name = client.conversation(current)?.title || "this person";
  try {
    if (blocked.has(other)) {
      await unblock(other, name);
      return;
    } else {
      const sure = await confirmDialog(
        `Block ${name}?`,
        "Neither of you can send the other direct messages, and neither sees the other online or typing. Groups stay as they are. They are not told.",
        "Block",
      );
      if (!sure) return;
      await api(`/api/v1/users/${other}/block`, { method: "PUT" });
      blocked.set(other, name);
      toast(`${name} is blocked.`);
    }
  } catch (error) {
    toast(`Could not change the block: ${error?.message || error}`);
  }
  renderBlock();
}

async function loadBlocks() {
  try {
    const answer = await api("/api/v1/blocks");
    blocked.clear();
    for (const b of answer.results) blocked.set(b.user.id, b.user.display_name || b.user.username);
    renderBlock();
  } catch {
    // kept as it was; the next connection asks again
  }
}

/** Hide the messages my other devices deleted for me while this one was away. */
async function syncHidden() {
  let cursor = Number(localStorage.getItem(CURSOR_KEY)) || 0;
  try {
    for (;;) {
      const page = await api(`/api/v1/hidden-messages?${query({ after: cursor })}`);
      for (const h of page.results) client.forgetMessage(h.conversation, h.message);
      cursor = page.cursor;
      localStorage.setItem(CURSOR_KEY, String(cursor));
      if (!page.has_more) return;
    }
  } catch {
    // the next connection tries again from the same cursor
  }
}

/** "Delete for me": hide the message on all of my devices; nobody else sees a change. */
export async function hideForMe(m) {
  try {
    await api(`/api/v1/conversations/${m.conversation}/messages/${m.id}/hide`, { method: "POST" });
    client.forgetMessage(m.conversation, m.id);
    toast("Deleted for you.");
  } catch (error) {
    toast(`Could not delete it for you: ${error?.message || error}`);
  }
}

/** "Report…": ask for a reason, then send the message to staff. */
export function openReport(m) {
  reporting = m;
  const dialog = $("dialog-report");
  $("report-form").reset();
  dialog.returnValue = "";
  dialog.showModal();
  $("report-reason").focus();
}

async function sendReport() {
  const m = reporting;
  reporting = null;
  if (!m) return;
  try {
    await api(`/api/v1/conversations/${m.conversation}/messages/${m.id}/report`, {
      method: "POST",
      body: { reason: $("report-reason").value, details: $("report-details").value },
    });
    toast("Reported. Thank you: staff will look at it.");
  } catch (error) {
    toast(`Could not report it: ${error?.message || error}`);
  }
}

export function install() {
  $("block-button").addEventListener("click", toggleBlock);
  $("dialog-report").addEventListener("close", () => {
    if ($("dialog-report").returnValue === "report") sendReport();
    else reporting = null;
  });
  client.addEventListener("ready", () => {
    loadBlocks();
    syncHidden();
  });
  client.addEventListener("block", ({ detail }) => {
    // Another of my devices blocked or unblocked someone: ask for the names again.
    if (detail.blocked !== blocked.has(detail.user)) loadBlocks();
  });
}
