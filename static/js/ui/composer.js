// The composer: writing and sending (drafts, Enter to send), editing and deleting my
// messages, the completion list (@mentions, emoji :shortcodes:) and the attachments
// tray (pick, drop or paste files; they upload before the message is sent).

import { uploadAttachment } from "../api.js";
import { h, icon } from "../dom.js";
import * as fmt from "../format.js";
import { shortcodes, replaceTypedShortcode } from "./emoji.js";
import { avatar, confirmDialog, problem, soon, toast } from "./helpers.js";
import { renderList } from "./list.js";
import { scrollToBottom } from "./messages.js";
import { plainText } from "../markup.js";
import { $, boot, client, current, me, nameOf, ui } from "./shared.js";
import { noteTyping, stopTyping } from "./typing.js";

// Drafts: the unsent text of each conversation, kept in localStorage under the user and
// the conversation, so a draft outlives a reload and the browser's other tabs see it (the
// `storage` event): their list shows it, and their composer takes it when it shows that
// conversation. Sending clears it; logging out forgets them all.
const DRAFT_PREFIX = `chat.draft.${me.id}.`;

export const drafts = {
  get(id) {
    try {
      return localStorage.getItem(DRAFT_PREFIX + id) || "";
    } catch {
      return "";
    }
  },
  set(id, text) {
    if (!text.trim()) return this.delete(id);
    try {
      if (localStorage.getItem(DRAFT_PREFIX + id) !== text) localStorage.setItem(DRAFT_PREFIX + id, text);
    } catch {
      // storage full or refused: the draft lives as long as the composer shows it
    }
  },
  delete(id) {
    try {
      localStorage.removeItem(DRAFT_PREFIX + id);
    } catch {
      // nothing stored
    }
  },
  /** Forget every draft of this user (logging out). */
  clear() {
    try {
      const keys = [];
      for (let i = 0; i < localStorage.length; i += 1) keys.push(localStorage.key(i));
      for (const key of keys) if (key?.startsWith(DRAFT_PREFIX)) localStorage.removeItem(key);
    } catch {
      // nothing stored
    }
  },
};

/** Another tab changed a draft: show it in the list, and here if that conversation is open. */
function draftChanged(event) {
  if (event.storageArea !== localStorage) return;
  if (event.key !== null && !event.key.startsWith(DRAFT_PREFIX)) return;
  soon(renderList);
  const id = event.key === null ? current : Number(event.key.slice(DRAFT_PREFIX.length));
  if (id === null || id !== current || editing) return;
  const text = drafts.get(id);
  if (ui.input.value === text) return;
  ui.input.value = text;
  autosize();
  closeMentions();
}

export let editing = null; // {conversation, id, body}
let uploads = []; // attachments being uploaded for the next message

export function autosize() {
  ui.input.style.height = "auto";
  ui.input.style.height = `${Math.min(ui.input.scrollHeight, 180)}px`;
}

export function saveDraft() {
  if (current === null || editing) return;
  drafts.set(current, ui.input.value);
}

export function startEdit(message) {
  if (current === null) return;
  saveDraft();
  editing = { conversation: current, id: message.id, body: message.body };
  ui.editing.hidden = false;
  ui.composer.classList.add("is-editing");
  ui.input.value = message.body;
  autosize();
  ui.input.focus();
  ui.input.setSelectionRange(ui.input.value.length, ui.input.value.length);
}

export let replying = null; // {conversation, id}: the message the next send replies to

/** Reply to `message`: the next message sent here quotes it (a bar above the composer). */
export function startReply(message) {
  if (current === null) return;
  if (editing) cancelEdit();
  replying = { conversation: current, id: message.id };
  $("replying-to").textContent = `Replying to ${message.sender === me.id ? "yourself" : nameOf(message.sender)}:`;
  $("replying-preview").textContent = plainText(message.body).slice(0, 100);
  $("replying").hidden = false;
  ui.input.focus();
}

export function cancelReply() {
  replying = null;
  $("replying").hidden = true;
}

export function cancelEdit() {
  if (!editing) return;
  const conversation = editing.conversation;
  editing = null;
  ui.editing.hidden = true;
  ui.composer.classList.remove("is-editing");
  ui.input.value = conversation === current ? drafts.get(conversation) || "" : ui.input.value;
  autosize();
}

// Refuse a body over the server's limit before it is sent; the text stays in the composer.
function tooLong(text) {
  if (fmt.characterCount(text) <= boot.max_message_length) return false;
  toast(`A message can have at most ${boot.max_message_length.toLocaleString()} characters.`);
  return true;
}

async function finishEdit(text) {
  const target = editing;
  if (!text.trim()) {
    toast("A message cannot be empty; delete it instead.");
    return;
  }
  if (tooLong(text)) return;
  cancelEdit();
  if (text === target.body) return;
  try {
    await client.edit(target.conversation, target.id, text);
  } catch (error) {
    toast(`Could not edit the message: ${problem(error)}`);
  }
}

export async function deleteMessage(message) {
  const ok = await confirmDialog("Delete message?", "It will be removed for everyone in this conversation.", "Delete");
  if (!ok) return;
  try {
    await client.delete(message.conversation, message.id);
  } catch (error) {
    toast(`Could not delete the message: ${problem(error)}`);
  }
}

// ---------------------------------------------------------------- completion: @mentions, :shortcodes:

// The composer is an ARIA combobox: what is typed at the caret may open a list of
// completions from one of the sources below: `@` and letters lists matching members of
// the open conversation, `:` and two letters emoji by shortcode (ui/emoji.js). Up/Down
// choose, Enter or Tab insert, Escape closes (and the list stays closed for that word).
const MAX_MENTION_OPTIONS = 8;

/** Members of the open conversation whose username or a word of whose name starts with `q`. */
function mentionCandidates(q) {
  const members = current === null ? null : client.members.get(current);
  if (!members) return [];
  const needle = q.toLowerCase();
  const ranked = [];
  for (const m of members.values()) {
    if (m.id === me.id || !m.username) continue;
    const name = (m.display_name || "").toLowerCase();
    const rank = m.username.toLowerCase().startsWith(needle)
      ? 0
      : name.split(/\s+/).some((word) => word.startsWith(needle))
        ? 1
        : -1;
    if (rank >= 0) ranked.push({ rank, m });
  }
  ranked.sort((a, b) => a.rank - b.rank || a.m.username.localeCompare(b.m.username));
  return ranked.slice(0, MAX_MENTION_OPTIONS).map(({ m }) => m);
}

// A source: `find(before)` -> {start, query} or null for the text up to the caret;
// `options(query)`; `key`, `id` and `render(option, query)` of an option; `text(option)`,
// what replaces the typed word; `spaced`: a space follows it; `picked(option)`, after.
const mentions = {
  label: "People to mention",
  find: fmt.typingMention,
  options: mentionCandidates,
  key: (m) => m.id,
  id: (m) => `mention-option-${m.id}`,
  render: (m) => [
    avatar(m.display_name, m.id, "avatar tiny", m.avatar_url),
    h("span", { class: "mention-name", text: m.display_name }),
    h("span", { class: "mention-username", text: `@${m.username}` }),
  ],
  text: (m) => `@${m.username}`,
  spaced: true,
  picked: () => {},
};
const SOURCES = [mentions, shortcodes];
const completion = { source: null, start: -1, query: "", options: [], active: 0, dismissed: -1 };

function updateMentions() {
  const caret = ui.input.selectionStart;
  let source = null;
  let typed = null;
  if (ui.input.selectionEnd === caret) {
    const before = ui.input.value.slice(0, caret);
    source = SOURCES.find((s) => (typed = s.find(before))) || null;
  }
  if (!typed) completion.dismissed = -1; // Escape holds only while that word is typed
  if (!typed || typed.start === completion.dismissed) {
    closeMentions();
    return;
  }
  const previous = completion.source === source ? completion.options[completion.active] : undefined;
  completion.source = source;
  completion.start = typed.start;
  completion.query = typed.query;
  completion.options = source.options(typed.query);
  // Keep the chosen option chosen while the list narrows.
  completion.active = Math.max(0, previous === undefined ? 0 : completion.options.findIndex((o) => source.key(o) === source.key(previous)));
  renderMentions();
}

export function closeMentions() {
  if (!completion.options.length && ui.mentionList.hidden) return;
  completion.options = [];
  completion.active = 0;
  renderMentions();
}

function renderMentions() {
  const open = completion.options.length > 0;
  ui.mentionList.hidden = !open;
  ui.input.setAttribute("aria-expanded", String(open));
  if (!open) {
    ui.input.removeAttribute("aria-activedescendant");
    ui.mentionList.replaceChildren();
    return;
  }
  const source = completion.source;
  ui.mentionList.setAttribute("aria-label", source.label);
  ui.mentionList.replaceChildren(
    ...completion.options.map((o, index) =>
      h(
        "li",
        {
          role: "option",
          id: source.id(o),
          class: "mention-option",
          "aria-selected": String(index === completion.active),
          // Keep the focus (and the caret) in the composer while clicking.
          onmousedown: (event) => event.preventDefault(),
          onclick: () => insertCompletion(o),
        },
        source.render(o, completion.query),
      ),
    ),
  );
  const active = ui.mentionList.children[completion.active];
  ui.input.setAttribute("aria-activedescendant", active.id);
  active.scrollIntoView({ block: "nearest" });
}

function insertCompletion(option) {
  const source = completion.source;
  const end = ui.input.selectionStart;
  const spaced = !source.spaced || /\s/.test(ui.input.value.charAt(end));
  ui.input.setRangeText(`${source.text(option)}${spaced ? "" : " "}`, completion.start, end, "end");
  if (source.spaced && spaced) ui.input.setSelectionRange(ui.input.selectionEnd + 1, ui.input.selectionEnd + 1);
  source.picked(option);
  closeMentions();
  autosize();
  noteTyping();
  saveDraft();
  ui.input.focus();
}

/** Handle a key of the composer while the list is open; answer whether it was used. */
function mentionKey(event) {
  if (ui.mentionList.hidden || event.isComposing) return false;
  const count = completion.options.length;
  if (event.key === "ArrowDown" || event.key === "ArrowUp") {
    completion.active = (completion.active + (event.key === "ArrowDown" ? 1 : count - 1)) % count;
    renderMentions();
  } else if ((event.key === "Enter" && !event.shiftKey) || (event.key === "Tab" && !event.shiftKey)) {
    insertCompletion(completion.options[completion.active]);
  } else if (event.key === "Escape") {
    completion.dismissed = completion.start;
    closeMentions();
  } else {
    return false;
  }
  event.preventDefault();
  return true;
}

// ---------------------------------------------------------------- attachments

let uploadKeys = 0;

function renderTray() {
  ui.tray.hidden = uploads.length === 0;
  ui.tray.replaceChildren(
    ...uploads.map((u) => {
      const label = u.status === "error" ? `Failed: ${u.error}` : u.status === "done" ? fmt.fileSize(u.file.size) : `${Math.round(u.progress * 100)}%`;
      return h(
        "li",
        { class: `tray-item ${u.status}`, "data-key": u.key },
        u.preview ? h("img", { src: u.preview, alt: "" }) : icon("file", "icon tray-icon"),
        h(
          "span",
          { class: "tray-text" },
          h("span", { class: "file-name", text: u.file.name }),
          h("span", { class: "tray-state", text: label }),
          u.status === "uploading"
            ? h("progress", { max: "1", value: String(u.progress), "aria-label": `Uploading ${u.file.name}` })
            : null,
        ),
        h(
          "button",
          { type: "button", class: "icon-button small", "aria-label": `Remove ${u.file.name}`, onclick: () => removeUpload(u) },
          icon("close"),
        ),
      );
    }),
  );
}

function updateUpload(u) {
  const item = ui.tray.querySelector(`[data-key="${u.key}"]`);
  const bar = item?.querySelector("progress");
  if (bar && u.status === "uploading") {
    bar.value = u.progress;
    item.querySelector(".tray-state").textContent = `${Math.round(u.progress * 100)}%`;
  } else {
    renderTray();
  }
}

function removeUpload(u) {
  if (u.status === "uploading") u.abort();
  if (u.preview) URL.revokeObjectURL(u.preview);
  uploads = uploads.filter((x) => x !== u);
  renderTray();
  ui.input.focus();
}

export function clearUploads() {
  for (const u of uploads) if (u.preview) URL.revokeObjectURL(u.preview);
  uploads = [];
  renderTray();
}

function addFiles(files) {
  if (current === null) return;
  for (const file of files) {
    if (uploads.length >= boot.max_attachments) {
      toast(`At most ${boot.max_attachments} files per message.`);
      break;
    }
    if (file.size > boot.max_upload_bytes) {
      toast(`${file.name} is larger than ${fmt.fileSize(boot.max_upload_bytes)}.`);
      continue;
    }
    const u = { key: `u${++uploadKeys}`, file, progress: 0, status: "uploading", attachment: null, error: "" };
    if (/^image\/(png|jpeg|gif|webp)$/.test(file.type)) u.preview = URL.createObjectURL(file);
    const upload = uploadAttachment(file, (fraction) => {
      u.progress = fraction;
      updateUpload(u);
    });
    u.abort = upload.abort;
    uploads.push(u);
    upload.promise.then(
      (attachment) => {
        u.status = "done";
        u.attachment = attachment;
        renderTray();
      },
      (error) => {
        if (!uploads.includes(u)) return;
        u.status = "error";
        u.error = problem(error);
        renderTray();
      },
    );
  }
  renderTray();
}

let dragDepth = 0;
const hasFiles = (event) => [...(event.dataTransfer?.types || [])].includes("Files");

export function install() {
  ui.input.addEventListener("input", (event) => {
    if (!event.isComposing) replaceTypedShortcode();
    autosize();
    noteTyping();
    updateMentions();
    saveDraft();
  });
  addEventListener("storage", draftChanged);

  ui.input.addEventListener("keydown", (event) => {
    if (mentionKey(event)) return;
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      ui.composer.requestSubmit();
    } else if (event.key === "Escape" && editing) {
      event.preventDefault();
      cancelEdit();
    } else if (event.key === "ArrowUp" && !ui.input.value && !editing && current !== null) {
      const mine = client.view(current).filter((m) => m.sender === me.id && m.kind === "text" && !m.deleted);
      if (mine.length) {
        event.preventDefault();
        startEdit(mine[mine.length - 1]);
      }
    }
  });

  ui.input.addEventListener("blur", () => {
    saveDraft();
    closeMentions();
  });

  ui.composer.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (current === null) return;
    const text = ui.input.value;
    if (editing) {
      await finishEdit(text);
      return;
    }
    if (uploads.some((u) => u.status === "uploading")) {
      toast("Wait until the files have finished uploading.");
      return;
    }
    const ready = uploads.filter((u) => u.status === "done");
    if (!text.trim() && !ready.length) return;
    if (tooLong(text)) return;
    const conversation = current;
    ui.input.value = "";
    autosize();
    drafts.delete(conversation);
    stopTyping();
    const attachments = ready.map((u) => u.attachment);
    const replyTo = replying?.conversation === conversation ? replying.id : null;
    clearUploads();
    cancelReply();
    try {
      await client.send(conversation, text, attachments, { replyTo });
    } catch (error) {
      toast(`Could not queue the message: ${problem(error)}`);
      ui.input.value = text;
      drafts.set(conversation, text);
    }
    scrollToBottom();
    ui.input.focus();
  });

  $("cancel-reply").addEventListener("click", () => {
    cancelReply();
    ui.input.focus();
  });
  ui.input.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && replying && !editing) {
      event.preventDefault();
      event.stopPropagation();
      cancelReply();
    }
  });

  ui.cancelEdit.addEventListener("click", () => {
    cancelEdit();
    ui.input.focus();
  });

  // The caret moved without typing (arrows, click): the `@word` at it may have changed.
  ui.input.addEventListener("click", updateMentions);
  ui.input.addEventListener("keyup", (event) => {
    if (["ArrowLeft", "ArrowRight", "Home", "End"].includes(event.key)) updateMentions();
  });

  // Attachments: the button, a drop on the conversation, a paste into the composer.
  ui.attach.addEventListener("click", () => ui.fileInput.click());
  ui.fileInput.addEventListener("change", () => {
    addFiles([...ui.fileInput.files]);
    ui.fileInput.value = "";
    ui.input.focus();
  });

  ui.chat.addEventListener("dragenter", (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    dragDepth += 1;
    ui.dropZone.hidden = false;
  });
  ui.chat.addEventListener("dragover", (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
  });
  ui.chat.addEventListener("dragleave", () => {
    dragDepth = Math.max(0, dragDepth - 1);
    if (dragDepth === 0) ui.dropZone.hidden = true;
  });
  ui.chat.addEventListener("drop", (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    dragDepth = 0;
    ui.dropZone.hidden = true;
    addFiles([...event.dataTransfer.files]);
  });
  ui.input.addEventListener("paste", (event) => {
    const files = [...(event.clipboardData?.files || [])];
    if (files.length) {
      event.preventDefault();
      addFiles(files);
    }
  });
}
