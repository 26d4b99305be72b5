// The dialogs: settings (account: photo, name, busy until, password, sign out everywhere;
// notifications: email, browser), new chat, new group, browse public groups, and leaving
// a group (group info is ui/group-settings.js). startDirectChat() is the quick switcher's
// too; findUsers() and personButton() group info's too.

import { api, download, query } from "../api.js";
import { h, icon } from "../dom.js";
import * as fmt from "../format.js";
import * as attention from "../notify.js";
import { closeConversation, openConversation } from "./conversation.js";
import { avatar, confirmDialog, debounce, paintAvatar, problem, toast } from "./helpers.js";
import { arrowKeys } from "./list.js";
import { enableNotifications } from "./notifications.js";
import { setMyStatus } from "./presence.js";
import { $, changingCredentials, client, current, learnPeople, me, ui } from "./shared.js";

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

// ---------------------------------------------------------------- settings: the profile photo
//
// "Change photo" picks a file; the crop view shows it upright on a canvas with a square
// the user drags (inside it: move; its corner handle: resize) or moves with the arrow
// keys (Shift: faster) and resizes with + and -, beside a live preview. Save sends the
// file and the square, in the picture's own pixels, to `PUT /users/me/avatar`; the
// server crops, resizes and re-encodes it. Built here (not in the template) so the
// settings markup stays as it is.

// The server's rules (chatsite/limits.py): the smallest square and the largest file.
const MIN_CROP = 64;
const MAX_PHOTO_BYTES = 10 * 1024 * 1024;
const VIEW = 320; // the crop canvas's longer side, in CSS pixels
const HANDLE = 14; // the resize handle's side, in CSS pixels

const photo = {
  current: h("span", { class: "avatar settings-photo-avatar", "aria-hidden": "true" }),
  file: h("input", { type: "file", id: "settings-photo-file", accept: "image/png,image/jpeg,image/gif,image/webp", hidden: true }),
  change: h("button", { type: "button", class: "button", id: "settings-photo-change", text: "Change photo" }),
  remove: h("button", { type: "button", class: "button", id: "settings-photo-remove", text: "Remove photo" }),
  canvas: h("canvas", {
    id: "settings-photo-canvas",
    class: "photo-crop-canvas",
    tabindex: "0",
    role: "application",
    "aria-label": "Crop: drag the square to move it, its corner to resize it; arrow keys move it, + and - resize it",
  }),
  preview: h("canvas", { id: "settings-photo-preview", class: "photo-crop-preview", width: "96", height: "96", "aria-hidden": "true" }),
  save: h("button", { type: "button", class: "button primary", id: "settings-photo-save", text: "Save photo" }),
  cancel: h("button", { type: "button", class: "button", id: "settings-photo-cancel", text: "Cancel" }),
  status: h("p", { class: "help", id: "settings-photo-status", role: "status" }),
  error: h("p", { class: "field-error", id: "settings-photo-error", role: "alert", hidden: true }),
  crop: null, // the crop view's element
  picked: null, // {file, bitmap, width, height, scale, x, y, size, drag}
};
photo.crop = h(
  "div",
  { class: "photo-crop", id: "settings-photo-crop", hidden: true },
  h("div", { class: "photo-crop-stage" }, photo.canvas, h("div", { class: "photo-crop-side" }, photo.preview, h("span", { class: "help", text: "Preview" }))),
  h("div", { class: "photo-crop-actions" }, photo.save, photo.cancel),
);
const photoField = h(
  "div",
  { class: "field settings-photo", id: "settings-photo-field", role: "group", "aria-labelledby": "settings-photo-label" },
  h("span", { class: "label", id: "settings-photo-label", text: "Photo" }),
  h("div", { class: "settings-photo-row" }, photo.current, photo.change, photo.remove, photo.file),
  photo.crop,
  photo.status,
  photo.error,
);

function renderPhoto(profile) {
  paintAvatar(photo.current, profile.display_name, profile.id, profile.avatar_url);
  photo.current.classList.add("settings-photo-avatar");
  photo.remove.hidden = !profile.avatar_url;
}

function photoError(message) {
  photo.error.textContent = message || "";
  photo.error.hidden = !message;
}

function closeCrop() {
  photo.picked?.bitmap.close?.();
  photo.picked = null;
  photo.crop.hidden = true;
  photo.file.value = "";
}

async function pickPhoto() {
  const file = photo.file.files?.[0];
  photoError("");
  photo.status.textContent = "";
  if (!file) return;
  if (file.size > MAX_PHOTO_BYTES) {
    photo.file.value = "";
    return photoError(`That file is larger than ${fmt.fileSize(MAX_PHOTO_BYTES)}; choose a smaller picture.`);
  }
  let bitmap;
  try {
    // Upright, as its EXIF orientation says: the server crops the upright picture too.
    bitmap = await createImageBitmap(file, { imageOrientation: "from-image" });
  } catch {
    photo.file.value = "";
    return photoError("That file is not a picture this browser can show; choose a PNG, JPEG, GIF or WebP.");
  }
  const { width, height } = bitmap;
  if (Math.min(width, height) < MIN_CROP) {
    bitmap.close?.();
    photo.file.value = "";
    return photoError(`That picture is too small: it needs at least ${MIN_CROP} × ${MIN_CROP} pixels.`);
  }
  closeCrop();
  const scale = Math.min(VIEW / width, VIEW / height);
  const size = Math.min(width, height);
  photo.picked = { file, bitmap, width, height, scale, x: Math.floor((width - size) / 2), y: Math.floor((height - size) / 2), size, drag: null };
  photo.canvas.width = Math.round(width * scale);
  photo.canvas.height = Math.round(height * scale);
  photo.crop.hidden = false;
  drawCrop();
  photo.canvas.focus();
}

function drawCrop() {
  const p = photo.picked;
  if (!p) return;
  const ctx = photo.canvas.getContext("2d");
  const { width: cw, height: ch } = photo.canvas;
  ctx.clearRect(0, 0, cw, ch);
  ctx.drawImage(p.bitmap, 0, 0, cw, ch);
  const [sx, sy, ss] = [p.x * p.scale, p.y * p.scale, p.size * p.scale];
  ctx.fillStyle = "rgba(0, 0, 0, 0.55)";
  ctx.beginPath();
  ctx.rect(0, 0, cw, ch);
  ctx.rect(sx, sy, ss, ss);
  ctx.fill("evenodd");
  ctx.strokeStyle = "#fff";
  ctx.lineWidth = 2;
  ctx.strokeRect(sx + 1, sy + 1, ss - 2, ss - 2);
  ctx.fillStyle = "#fff";
  ctx.fillRect(sx + ss - HANDLE, sy + ss - HANDLE, HANDLE, HANDLE);
  const preview = photo.preview.getContext("2d");
  preview.clearRect(0, 0, photo.preview.width, photo.preview.height);
  preview.drawImage(p.bitmap, p.x, p.y, p.size, p.size, 0, 0, photo.preview.width, photo.preview.height);
  photo.canvas.setAttribute("aria-valuetext", `Square of ${p.size} pixels at ${p.x}, ${p.y}`);
}

/** Put the square at (x, y) with side `size`, kept inside the picture and not under the minimum. */
function placeSquare(x, y, size) {
  const p = photo.picked;
  p.size = Math.round(Math.max(MIN_CROP, Math.min(size, p.width, p.height)));
  p.x = Math.round(Math.max(0, Math.min(x, p.width - p.size)));
  p.y = Math.round(Math.max(0, Math.min(y, p.height - p.size)));
  drawCrop();
}

function pointInPicture(event) {
  const rect = photo.canvas.getBoundingClientRect();
  const p = photo.picked;
  return {
    x: ((event.clientX - rect.left) * (photo.canvas.width / rect.width)) / p.scale,
    y: ((event.clientY - rect.top) * (photo.canvas.height / rect.height)) / p.scale,
  };
}

function startDrag(event) {
  const p = photo.picked;
  if (!p) return;
  const at = pointInPicture(event);
  const handle = (HANDLE + 6) / p.scale;
  const corner = p.x + p.size;
  const bottom = p.y + p.size;
  if (Math.abs(at.x - corner) <= handle && Math.abs(at.y - bottom) <= handle) {
    p.drag = { mode: "resize" };
  } else {
    const inside = at.x >= p.x && at.x <= corner && at.y >= p.y && at.y <= bottom;
    if (!inside) placeSquare(at.x - p.size / 2, at.y - p.size / 2, p.size);
    p.drag = { mode: "move", dx: at.x - p.x, dy: at.y - p.y };
  }
  photo.canvas.setPointerCapture(event.pointerId);
  photo.canvas.focus();
  event.preventDefault();
}

function moveDrag(event) {
  const p = photo.picked;
  if (!p?.drag) return;
  const at = pointInPicture(event);
  if (p.drag.mode === "move") placeSquare(at.x - p.drag.dx, at.y - p.drag.dy, p.size);
  else {
    // The top-left corner stays; the side follows the pointer, within the picture.
    const size = Math.min(Math.max(at.x - p.x, at.y - p.y), p.width - p.x, p.height - p.y);
    placeSquare(p.x, p.y, Math.max(MIN_CROP, size));
  }
}

function endDrag(event) {
  if (!photo.picked?.drag) return;
  photo.picked.drag = null;
  if (photo.canvas.hasPointerCapture(event.pointerId)) photo.canvas.releasePointerCapture(event.pointerId);
}

function cropKey(event) {
  const p = photo.picked;
  if (!p) return;
  const step = Math.max(1, Math.round(Math.min(p.width, p.height) / 50)) * (event.shiftKey ? 10 : 1);
  const moves = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step], ArrowDown: [0, step] };
  if (event.key in moves) {
    const [dx, dy] = moves[event.key];
    placeSquare(p.x + dx, p.y + dy, p.size);
  } else if (event.key === "+" || event.key === "=" || event.key === "-" || event.key === "_") {
    // Resize about the centre: the square grows or shrinks evenly on every side.
    const grow = event.key === "+" || event.key === "=" ? step : -step;
    const size = Math.max(MIN_CROP, Math.min(p.size + grow, p.width, p.height));
    placeSquare(p.x - (size - p.size) / 2, p.y - (size - p.size) / 2, size);
  } else return;
  event.preventDefault();
}

function photoSaved(profile, message) {
  Object.assign(me, { avatar_url: profile.avatar_url, display_name: profile.display_name });
  paintAvatar(ui.meAvatar, me.display_name, me.id, me.avatar_url);
  renderPhoto(profile);
  photo.status.textContent = message;
}

async function savePhoto() {
  const p = photo.picked;
  if (!p) return;
  const form = new FormData();
  form.append("file", p.file, p.file.name || "photo");
  form.append("x", String(p.x));
  form.append("y", String(p.y));
  form.append("size", String(p.size));
  photoError("");
  photo.save.disabled = true;
  photo.status.textContent = "Saving your photo…";
  try {
    const profile = await api("/api/v1/users/me/avatar", { method: "PUT", body: form });
    closeCrop();
    photoSaved(profile, "Photo saved.");
    photo.change.focus();
  } catch (error) {
    photo.status.textContent = "";
    photoError(problem(error));
  } finally {
    photo.save.disabled = false;
  }
}

async function removePhoto() {
  photoError("");
  photo.remove.disabled = true;
  try {
    const profile = await api("/api/v1/users/me/avatar", { method: "DELETE" });
    closeCrop();
    photoSaved(profile, "Photo removed.");
    photo.change.focus();
  } catch (error) {
    photoError(problem(error));
  } finally {
    photo.remove.disabled = false;
  }
}

function installPhoto() {
  settings.form.insertBefore(photoField, $("settings-name-field"));
  photo.change.addEventListener("click", () => photo.file.click());
  photo.file.addEventListener("change", pickPhoto);
  photo.remove.addEventListener("click", removePhoto);
  photo.save.addEventListener("click", savePhoto);
  photo.cancel.addEventListener("click", () => {
    closeCrop();
    photo.change.focus();
  });
  photo.canvas.addEventListener("pointerdown", startDrag);
  photo.canvas.addEventListener("pointermove", moveDrag);
  photo.canvas.addEventListener("pointerup", endDrag);
  photo.canvas.addEventListener("pointercancel", endDrag);
  photo.canvas.addEventListener("keydown", cropKey);
  settings.dialog.addEventListener("close", closeCrop);
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
    await changingCredentials(
      api("/api/v1/users/me/password", {
        method: "POST",
        body: { current_password: password.current.value, new_password: password.fresh.value },
      }),
    );
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

async function downloadMyData() {
  const button = $("export-data");
  button.disabled = true;
  settings.error.hidden = true;
  try {
    const { blob, filename } = await download("/api/v1/users/me/export");
    const url = URL.createObjectURL(blob);
    const link = h("a", { href: url, download: filename, hidden: true });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
    toast(`Saved ${filename}`);
  } catch (error) {
    showSettingsError(error);
  } finally {
    button.disabled = false;
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

export function personButton(user, onPick, extra = null) {
  return h(
    "li",
    {},
    h(
      "button",
      { type: "button", class: "pick", onclick: () => onPick(user) },
      avatar(user.display_name, user.id, "avatar", user.avatar_url),
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

export async function findUsers(q, statusEl) {
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

// New chat: people found as the query is typed; the first is highlighted, Up and Down
// move the highlight (or, from a result, the focus), Enter starts a chat with the
// highlighted person (with the people of what is typed, if their search has not answered
// yet); Tab reaches the results too.
const newChat = {
  dialog: $("dialog-new-chat"),
  input: $("new-chat-query"),
  results: $("new-chat-results"),
  status: $("new-chat-status"),
  users: [], // the people shown
  shownFor: null, // the query they were found for
  active: 0,
};

function renderNewChat() {
  newChat.results.replaceChildren(
    ...newChat.users.map((u, index) => {
      const item = personButton(u, startDirect);
      const button = item.firstElementChild;
      button.id = `new-chat-person-${u.id}`;
      if (index === newChat.active) button.classList.add("active");
      return item;
    }),
  );
  const active = newChat.users[newChat.active];
  if (active) newChat.input.setAttribute("aria-activedescendant", `new-chat-person-${active.id}`);
  else newChat.input.removeAttribute("aria-activedescendant");
}

async function findNewChatPeople() {
  const q = newChat.input.value.trim();
  const users = await findUsers(q, newChat.status);
  if (newChat.input.value.trim() !== q) return; // typed on meanwhile: a later search shows its own
  newChat.users = users;
  newChat.shownFor = q;
  newChat.active = 0;
  renderNewChat();
}

const searchPeople = debounce(findNewChatPeople, 250);

async function newChatKey(event) {
  if (event.isComposing) return;
  if ((event.key === "ArrowDown" || event.key === "ArrowUp") && newChat.users.length) {
    event.preventDefault();
    const count = newChat.users.length;
    newChat.active = (newChat.active + (event.key === "ArrowDown" ? 1 : count - 1)) % count;
    renderNewChat();
    newChat.results.querySelector(".pick.active")?.scrollIntoView({ block: "nearest" });
  } else if (event.key === "Enter") {
    event.preventDefault(); // not the form's submit, which closes the dialog
    if (newChat.shownFor !== newChat.input.value.trim()) await findNewChatPeople();
    const user = newChat.users[newChat.active];
    if (user) startDirect(user);
  }
}

/** Open the direct chat with `user`, started if need be; answer its id. */
export async function startDirectChat(user) {
  const conversation = await api("/api/v1/conversations", { method: "POST", body: { kind: "direct", user: user.id } });
  client.adopt(conversation);
  return conversation.id;
}

async function startDirect(user) {
  try {
    const id = await startDirectChat(user);
    newChat.dialog.close();
    openConversation(id);
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
  installPhoto();
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
      renderPhoto(profile);
      photo.status.textContent = "";
      photoError("");
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
  $("export-data").addEventListener("click", downloadMyData);
  $("settings-cancel").addEventListener("click", () => settings.dialog.close());
  settings.enableBrowser.addEventListener("click", async () => {
    await enableNotifications();
    renderBrowserNotifications();
  });

  $("new-chat").addEventListener("click", () => {
    newChat.input.value = "";
    newChat.users = [];
    newChat.shownFor = null;
    newChat.active = 0;
    renderNewChat();
    newChat.status.textContent = "";
    newChat.dialog.showModal();
    newChat.input.focus();
    searchPeople();
  });
  newChat.input.addEventListener("input", searchPeople);
  newChat.input.addEventListener("keydown", newChatKey);
  newChat.results.addEventListener("keydown", (event) => arrowKeys(event, newChat.results, ".pick", newChat.input));

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
    if (!newGroup.picked.size) {
      const ok = await confirmDialog("Create a group with only you?", "Nobody else is in it yet: you can add people later from its members.", "Create group");
      if (!ok) {
        newGroup.input.focus();
        return;
      }
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

  // ---------------------------------------------------------------- leaving (ui/group-settings.js: group info)

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
