// The dialogs: settings (account: name, busy until, password, sign out everywhere;
// notifications: email, browser), new chat, new group, browse public groups, the
// members of a group; and leaving a group.

import { api, query } from "../api.js";
import { h, icon } from "../dom.js";
import * as fmt from "../format.js";
import * as attention from "../notify.js";
import { closeConversation, openConversation } from "./conversation.js";
import { avatar, confirmDialog, debounce, problem, toast } from "./helpers.js";
import { enableNotifications } from "./notifications.js";
import { presence, presenceDot, setMyStatus, updatePresenceSubscription } from "./presence.js";
import { $, client, current, learnPeople, me, ui } from "./shared.js";

// ---------------------------------------------------------------- settings (account, notifications)

const settings = {
  dialog: $("dialog-settings"),
  form: $("settings-form"),
  status: $("settings-status"),
  displayName: $("settings-display-name"),
  busyUntil: $("settings-busy-until"),
  busyCustom: $("settings-busy-custom"),
  busyCustomField: $("settings-busy-custom-field"),
  busyNow: $("settings-busy-now"),
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

// Fields whose errors show beside them: the server's `details.field` -> [input, error line].
const settingsFields = {
  email: () => [settings.email, settings.emailError],
  display_name: () => [settings.displayName, $("settings-display-name-error")],
  status_until: () => [settings.busyUntil.value === "custom" ? settings.busyCustom : settings.busyUntil, $("settings-busy-until-error")],
};

function fieldError(input, line, message) {
  line.textContent = message || "";
  line.hidden = !message;
  input.closest(".field")?.classList.toggle("has-error", Boolean(message));
  if (message) input.setAttribute("aria-invalid", "true");
  else input.removeAttribute("aria-invalid");
}

function showSettingsError(error) {
  const field = error?.details?.field;
  let focused = false;
  for (const [name, parts] of Object.entries(settingsFields)) {
    const [input, line] = parts();
    const mine = field === name;
    fieldError(input, line, mine ? problem(error) : "");
    if (mine && !focused) {
      input.focus();
      focused = true;
    }
  }
  settings.error.textContent = error && !(field in settingsFields) ? problem(error) : "";
  settings.error.hidden = !error || field in settingsFields;
}

function renderBusyNow(profile) {
  settings.busyNow.textContent =
    profile.status !== "busy"
      ? "You are available."
      : profile.status_until
        ? `You are busy until ${new Date(profile.status_until).toLocaleString([], { weekday: "short", day: "numeric", month: "short", hour: "2-digit", minute: "2-digit" })}.`
        : "You are busy until you change it.";
}

/** Return the PATCH fields of the "Busy until" choice ({} for no change, null for no date). */
function busyChoice() {
  const now = new Date();
  const at = (date) => ({ status: "busy", status_until: date.toISOString() });
  switch (settings.busyUntil.value) {
    case "1h":
      return at(new Date(now.getTime() + 3600_000));
    case "4h":
      return at(new Date(now.getTime() + 4 * 3600_000));
    case "tomorrow": {
      const nine = new Date(now.getFullYear(), now.getMonth(), now.getDate() + 1, 9, 0, 0);
      return at(nine);
    }
    case "custom": {
      const chosen = settings.busyCustom.value ? new Date(settings.busyCustom.value) : null;
      return chosen && !Number.isNaN(chosen.getTime()) ? at(chosen) : null;
    }
    case "clear":
      return { status: "available" };
    default:
      return {};
  }
}

// ---------------------------------------------------------------- change password, sign out everywhere

const password = {
  form: $("password-form"),
  current: $("password-current"),
  fresh: $("password-new"),
  repeat: $("password-repeat"),
  done: $("password-done"),
  button: $("password-change"),
  errors: { current_password: $("password-current-error"), new_password: $("password-new-error"), repeat: $("password-repeat-error") },
};

function showPasswordError(field, message) {
  const inputs = { current_password: password.current, new_password: password.fresh, repeat: password.repeat };
  for (const [name, input] of Object.entries(inputs)) fieldError(input, password.errors[name], name === field ? message : "");
  if (field in inputs) inputs[field].focus();
}

function resetPassword() {
  for (const input of [password.current, password.fresh, password.repeat]) input.value = "";
  showPasswordError(null, "");
  password.done.textContent = "";
}

async function changePassword(event) {
  event.preventDefault();
  password.done.textContent = "";
  if (!password.current.value) return showPasswordError("current_password", "Enter your current password.");
  if (!password.fresh.value) return showPasswordError("new_password", "Enter a new password.");
  if (password.fresh.value !== password.repeat.value) return showPasswordError("repeat", "The two new passwords are not the same.");
  showPasswordError(null, "");
  password.button.disabled = true;
  try {
    // The answer's token pair is for native clients: this page keeps its session cookie.
    await api("/api/v1/users/me/password", {
      method: "POST",
      body: { current_password: password.current.value, new_password: password.fresh.value },
    });
    for (const input of [password.current, password.fresh, password.repeat]) input.value = "";
    password.done.textContent = "Password changed. Every other device was signed out.";
  } catch (error) {
    const field = error?.details?.field;
    const problems = Array.isArray(error?.details?.errors) ? ` ${error.details.errors.join(" ")}` : "";
    if (field === "current_password" || field === "new_password") showPasswordError(field, problem(error) + problems);
    else showPasswordError("current_password", problem(error));
  } finally {
    password.button.disabled = false;
  }
}

async function signOutEverywhere() {
  const sure = await confirmDialog(
    "Sign out everywhere?",
    "Every browser, phone and app signed in to your account is signed out, this one too.",
    "Sign out everywhere",
  );
  if (!sure) {
    $("logout-all").focus();
    return;
  }
  try {
    await api("/api/v1/auth/logout-all", { method: "POST" });
  } catch (error) {
    showSettingsError(error);
    return;
  }
  client.stop();
  location.assign("/accounts/login/");
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
      settings.displayName.value = profile.display_name === profile.username ? "" : profile.display_name;
      settings.displayName.placeholder = profile.username;
      settings.busyUntil.value = "keep";
      settings.busyCustom.value = "";
      settings.busyCustomField.hidden = true;
      renderBusyNow(profile);
      resetPassword();
      settings.email.value = profile.email || "";
      settings.emailNotifications.checked = Boolean(profile.email_notifications);
      settings.groupAdds.value = profile.group_adds || "everyone";
      settings.status.textContent = "";
      settings.form.inert = false;
      settings.displayName.focus();
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
    const busy = busyChoice();
    if (busy === null) {
      showSettingsError({ code: "bad_request", message: "Choose a date and time.", details: { field: "status_until" } });
      return;
    }
    settings.save.disabled = true;
    try {
      const profile = await api("/api/v1/users/me", {
        method: "PATCH",
        body: {
          display_name: settings.displayName.value,
          ...busy,
          email: settings.email.value.trim(),
          email_notifications: settings.emailNotifications.checked,
          group_adds: settings.groupAdds.value,
        },
      });
      setMyStatus(profile.status, profile.status_until);
      if (me.display_name !== profile.display_name) me.display_name = profile.display_name;
      settings.dialog.close();
      toast("Settings saved.");
    } catch (error) {
      showSettingsError(error);
    } finally {
      settings.save.disabled = false;
    }
  });
  settings.email.addEventListener("input", () => {
    if (!settings.emailError.hidden) showSettingsError(null);
  });
  settings.busyUntil.addEventListener("change", () => {
    settings.busyCustomField.hidden = settings.busyUntil.value !== "custom";
    if (!settings.busyCustomField.hidden) settings.busyCustom.focus();
  });
  password.form.addEventListener("submit", changePassword);
  $("logout-all").addEventListener("click", signOutEverywhere);
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
