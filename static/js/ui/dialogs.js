// The dialogs: notification settings (email, browser), new chat, new group, browse
// public groups, the members of a group; and leaving a group.

import { api, query } from "../api.js";
import { h, icon } from "../dom.js";
import * as fmt from "../format.js";
import * as attention from "../notify.js";
import { closeConversation, openConversation } from "./conversation.js";
import { avatar, confirmDialog, debounce, problem, toast } from "./helpers.js";
import { enableNotifications } from "./notifications.js";
import { presence, presenceDot, updatePresenceSubscription } from "./presence.js";
import { $, client, current, learnPeople, me, ui } from "./shared.js";

// ---------------------------------------------------------------- notification settings (email, browser)

const settings = {
  dialog: $("dialog-settings"),
  form: $("settings-form"),
  status: $("settings-status"),
  email: $("settings-email"),
  emailField: $("settings-email-field"),
  emailError: $("settings-email-error"),
  emailNotifications: $("settings-email-notifications"),
  groupAdds: $("settings-group-adds"),
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

// ---------------------------------------------------------------- people and groups

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

export function install() {
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
      settings.groupAdds.value = profile.group_adds || "everyone";
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
        body: {
          email: settings.email.value.trim(),
          email_notifications: settings.emailNotifications.checked,
          group_adds: settings.groupAdds.value,
        },
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

  $("new-chat").addEventListener("click", () => {
    newChat.input.value = "";
    newChat.results.replaceChildren();
    newChat.status.textContent = "";
    newChat.dialog.showModal();
    newChat.input.focus();
    searchPeople();
  });
  newChat.input.addEventListener("input", searchPeople);

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

  $("browse-groups").addEventListener("click", () => {
    browse.input.value = "";
    browse.results.replaceChildren();
    browse.dialog.showModal();
    browse.input.focus();
    searchGroups();
  });
  browse.input.addEventListener("input", searchGroups);

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
}
