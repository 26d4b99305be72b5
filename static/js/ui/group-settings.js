// Group info: a group's picture, name, description and who may send, and its members
// with their roles. Its owner and admins change the settings, add people, make members
// admins or dismiss them, and remove members; everyone else reads them. Every change is
// a system message in the log, so the other devices converge; this panel redraws from
// `conversation.updated` (`settings`, `role`) and from the member list read again.

import { api } from "../api.js";
import { Rows, h } from "../dom.js";
import * as fmt from "../format.js";
import { findUsers, personButton } from "./dialogs.js";
import { avatar, debounce, paintAvatar, problem, toast } from "./helpers.js";
import { presence, presenceDot, updatePresenceSubscription } from "./presence.js";
import { $, client, current, learnPeople, me, ui } from "./shared.js";

const panel = {
  dialog: $("dialog-members"),
  form: $("group-form"),
  status: $("members-status"),
  picture: $("group-picture"),
  pictureActions: $("group-picture-actions"),
  pictureInput: $("group-picture-input"),
  pictureChange: $("group-picture-change"),
  pictureRemove: $("group-picture-remove"),
  name: $("group-name"),
  description: $("group-description"),
  postPolicy: $("group-post-policy"),
  error: $("group-error"),
  saveRow: $("group-save-row"),
  save: $("group-save"),
  add: $("group-add"),
  addQuery: $("group-add-query"),
  addStatus: $("group-add-status"),
  addResults: $("group-add-results"),
  list: $("member-list"),
};

let shown = null; // the conversation the panel shows
let detail = null; // its last `GET /conversations/{id}`

/** The member rows, kept from one redraw to the next (see `Rows`). */
const memberRows = new Rows(panel.list);
const isAdmin = (role) => role === "owner" || role === "admin";

function showError(text) {
  panel.error.textContent = text || "";
  panel.error.hidden = !text;
}

function renderSettings(c) {
  const admin = isAdmin(c.role);
  paintAvatar(panel.picture, c.title, c.id, c.picture_url);
  panel.pictureActions.hidden = !admin;
  panel.pictureRemove.hidden = !c.picture_url;
  for (const field of [panel.name, panel.description]) field.readOnly = !admin;
  panel.postPolicy.disabled = !admin;
  panel.saveRow.hidden = !admin;
  panel.add.hidden = !admin;
  // Do not overwrite what an admin is typing when another device changes something.
  if (!panel.form.contains(document.activeElement) || !admin) {
    panel.name.value = c.title || "";
    panel.description.value = c.description || "";
    panel.postPolicy.value = c.post_policy || "everyone";
  }
}

function memberRow(m, myRole) {
  learnPeople([m]);
  const entry = presence.get(m.id);
  const actions = [];
  const mine = m.id === me.id;
  // The buttons say what they do in `data-action`; the list listens (its rows are kept).
  if (isAdmin(myRole) && m.role !== "owner") {
    if (m.role === "member") {
      actions.push(h("button", { type: "button", class: "button small", "aria-label": `Make ${m.display_name} an admin`, "data-action": "admin" }, "Make admin"));
    } else if (myRole === "owner" || mine) {
      actions.push(h("button", { type: "button", class: "button small", "aria-label": mine ? "Stop being an admin" : `Dismiss ${m.display_name} as admin`, "data-action": "member" }, mine ? "Step down" : "Dismiss as admin"));
    }
    if (!mine && (m.role === "member" || myRole === "owner")) {
      actions.push(h("button", { type: "button", class: "button small danger-ghost", "aria-label": `Remove ${m.display_name} from the group`, "data-action": "remove" }, "Remove"));
    }
  }
  return h(
    "li",
    { class: "member", "data-user": m.id },
    h("span", { class: "avatar-wrap" }, avatar(m.display_name, m.id, "avatar", m.avatar_url), mine ? null : presenceDot(m.id)),
    h(
      "span",
      { class: "pick-text" },
      h("span", { class: "pick-name", text: mine ? `${m.display_name} (you)` : m.display_name }),
      h("span", { class: "pick-sub", text: mine ? `@${m.username}` : `@${m.username} · ${fmt.presenceText(entry) || "Offline"}` }),
    ),
    m.role !== "member" ? h("span", { class: "role", text: m.role }) : null,
    actions.length ? h("span", { class: "member-actions" }, ...actions) : null,
  );
}

function render() {
  if (shown === null || detail === null) return;
  const c = { ...detail, ...(client.conversation(shown) || {}) };
  renderSettings(c);
  const members = detail.members || [];
  panel.status.textContent = `${members.length} member${members.length === 1 ? "" : "s"}`;
  const byId = new Map(members.map((m) => [m.id, m]));
  memberRows.draw([...byId.keys()], (id) => memberRow(byId.get(id), c.role));
}

/** A member row's button was pressed: do what its `data-action` says, to that member. */
function onMemberAction(event) {
  const button = event.target.closest("button[data-action]");
  const id = Number(button?.closest(".member")?.dataset.user);
  const member = (detail?.members || []).find((m) => m.id === id);
  if (!member) return;
  const action = button.dataset.action;
  if (action === "remove") removeMember(member);
  else setRole(member, action);
}

async function load(id) {
  try {
    detail = await api(`/api/v1/conversations/${id}`);
    if (shown !== id) return;
    client.setMembers(id, detail.members || []);
    render();
    updatePresenceSubscription();
  } catch (error) {
    panel.status.textContent = problem(error);
  }
}
const reload = debounce(() => shown !== null && panel.dialog.open && load(shown), 200);

async function act(doing, request) {
  showError(null);
  try {
    detail = await request();
    client.setMembers(shown, detail.members || []);
    render();
  } catch (error) {
    showError(`Could not ${doing}: ${problem(error)}`);
  }
}

function setRole(member, role) {
  const id = shown;
  return act(role === "admin" ? "make them admin" : "change the role", () =>
    api(`/api/v1/conversations/${id}/members/${member.id}`, { method: "PATCH", body: { role } }),
  );
}

async function removeMember(member) {
  const id = shown;
  await act("remove them", async () => {
    await api(`/api/v1/conversations/${id}/members/${member.id}`, { method: "DELETE" });
    return api(`/api/v1/conversations/${id}`);
  });
}

async function save() {
  if (shown === null || detail === null) return;
  const c = { ...detail, ...(client.conversation(shown) || {}) };
  const body = {};
  const title = panel.name.value.trim();
  if (!title) {
    showError("A group needs a name.");
    panel.name.focus();
    return;
  }
  if (title !== c.title) body.title = title;
  if (panel.description.value.trim() !== (c.description || "")) body.description = panel.description.value;
  if (panel.postPolicy.value !== c.post_policy) body.post_policy = panel.postPolicy.value;
  if (!Object.keys(body).length) {
    toast("Nothing changed.");
    return;
  }
  const id = shown;
  panel.save.disabled = true;
  await act("save", () => api(`/api/v1/conversations/${id}`, { method: "PATCH", body }));
  panel.save.disabled = false;
  if (panel.error.hidden) {
    client.adopt({ ...detail, members: undefined });
    toast("Group settings saved.");
  }
}

async function uploadPicture(file) {
  const form = new FormData();
  form.append("file", file);
  const id = shown;
  panel.status.textContent = "Uploading the picture…";
  await act("change the picture", () => api(`/api/v1/conversations/${id}/picture`, { method: "PUT", body: form }));
  panel.status.textContent = "";
  if (panel.error.hidden) client.adopt({ ...detail, members: undefined });
  render();
}

const searchPeople = debounce(async () => {
  const q = panel.addQuery.value.trim();
  if (!q) {
    panel.addResults.replaceChildren();
    panel.addStatus.textContent = "";
    return;
  }
  const inGroup = new Set((detail?.members || []).map((m) => m.id));
  const users = (await findUsers(q, panel.addStatus)).filter((u) => !inGroup.has(u.id));
  if (!users.length && !panel.addStatus.textContent) panel.addStatus.textContent = "Everyone found is in the group already.";
  panel.addResults.replaceChildren(...users.map((u) => personButton(u, addPerson)));
}, 250);

async function addPerson(user) {
  const id = shown;
  await act(`add ${user.display_name}`, () => api(`/api/v1/conversations/${id}/members`, { method: "POST", body: { users: [user.id] } }));
  if (panel.error.hidden) {
    panel.addQuery.value = "";
    panel.addResults.replaceChildren();
    panel.addStatus.textContent = `${user.display_name} was added.`;
    panel.addQuery.focus();
  }
}

export function install() {
  ui.membersButton.addEventListener("click", () => {
    if (current === null) return;
    shown = current;
    detail = null;
    showError(null);
    panel.status.textContent = "Loading…";
    memberRows.clear();
    panel.addQuery.value = "";
    panel.addResults.replaceChildren();
    panel.addStatus.textContent = "";
    const c = client.conversation(current);
    if (c) renderSettings(c);
    panel.dialog.showModal();
    load(current);
  });
  panel.dialog.addEventListener("close", () => {
    shown = null;
    detail = null;
  });
  panel.form.addEventListener("submit", (event) => {
    // Enter in a field saves; only Close closes.
    if (event.submitter?.value === "cancel") return;
    event.preventDefault();
    save();
  });
  panel.save.addEventListener("click", save);
  panel.pictureChange.addEventListener("click", () => panel.pictureInput.click());
  panel.pictureInput.addEventListener("change", () => {
    const file = panel.pictureInput.files?.[0];
    panel.pictureInput.value = "";
    if (file) uploadPicture(file);
  });
  panel.pictureRemove.addEventListener("click", async () => {
    const id = shown;
    await act("remove the picture", () => api(`/api/v1/conversations/${id}/picture`, { method: "DELETE" }));
    if (panel.error.hidden) client.adopt({ ...detail, members: undefined });
    render();
  });
  panel.addQuery.addEventListener("input", searchPeople);
  panel.list.addEventListener("click", onMemberAction);
  // Another device or admin changed the group: redraw, and read the members again.
  client.addEventListener("membership", ({ detail: change }) => {
    if (change.conversation !== shown) return;
    if (change.reason === "left" || change.reason === "removed") {
      panel.dialog.close();
      return;
    }
    render();
    reload();
  });
  client.addEventListener("messages", ({ detail: event }) => {
    if (event.conversation === shown && event.messages.some((m) => m.kind === "system")) reload();
  });
}
