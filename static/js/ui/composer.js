// The composer: writing and sending (drafts, Enter to send), editing and deleting my
// messages, the @mention autocomplete and the attachments tray (pick, drop or paste
// files; they upload before the message is sent).

import { uploadAttachment } from "../api.js";
import { h, icon } from "../dom.js";
import * as fmt from "../format.js";
import { avatar, confirmDialog, problem, toast } from "./helpers.js";
import { scrollToBottom } from "./messages.js";
import { boot, client, current, me, ui } from "./shared.js";
import { noteTyping, stopTyping } from "./typing.js";

export const drafts = new Map(); // conversation -> unsent text
export let editing = null; // {conversation, id, body}
let uploads = []; // attachments being uploaded for the next message

export function autosize() {
  ui.input.style.height = "auto";
  ui.input.style.height = `${Math.min(ui.input.scrollHeight, 180)}px`;
}

export function saveDraft() {
  if (current === null || editing) return;
  if (ui.input.value) drafts.set(current, ui.input.value);
  else drafts.delete(current);
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

// ---------------------------------------------------------------- mention autocomplete

// The composer is an ARIA combobox: typing `@` and letters lists matching members of
// the open conversation; Up/Down choose, Enter or Tab insert `@username `, Escape closes.
const MAX_MENTION_OPTIONS = 8;
const mention = { start: -1, options: [], active: 0, dismissed: -1 };

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

function updateMentions() {
  const caret = ui.input.selectionStart;
  const typed = ui.input.selectionEnd === caret ? fmt.typingMention(ui.input.value.slice(0, caret)) : null;
  if (!typed) mention.dismissed = -1; // Escape holds only while that `@word` is typed
  if (!typed || typed.start === mention.dismissed) {
    closeMentions();
    return;
  }
  const previous = mention.options[mention.active]?.id;
  mention.start = typed.start;
  mention.options = mentionCandidates(typed.query);
  // Keep the chosen member chosen while the list narrows.
  mention.active = Math.max(0, mention.options.findIndex((m) => m.id === previous));
  renderMentions();
}

export function closeMentions() {
  if (!mention.options.length && ui.mentionList.hidden) return;
  mention.options = [];
  mention.active = 0;
  renderMentions();
}

function renderMentions() {
  const open = mention.options.length > 0;
  ui.mentionList.hidden = !open;
  ui.input.setAttribute("aria-expanded", String(open));
  if (!open) {
    ui.input.removeAttribute("aria-activedescendant");
    ui.mentionList.replaceChildren();
    return;
  }
  ui.mentionList.replaceChildren(
    ...mention.options.map((m, index) =>
      h(
        "li",
        {
          role: "option",
          id: `mention-option-${m.id}`,
          class: "mention-option",
          "aria-selected": String(index === mention.active),
          // Keep the focus (and the caret) in the composer while clicking.
          onmousedown: (event) => event.preventDefault(),
          onclick: () => insertMention(m),
        },
        avatar(m.display_name, m.id, "avatar tiny", m.avatar_url),
        h("span", { class: "mention-name", text: m.display_name }),
        h("span", { class: "mention-username", text: `@${m.username}` }),
      ),
    ),
  );
  const active = ui.mentionList.children[mention.active];
  ui.input.setAttribute("aria-activedescendant", active.id);
  active.scrollIntoView({ block: "nearest" });
}

function insertMention(member) {
  const end = ui.input.selectionStart;
  const spaced = /\s/.test(ui.input.value.charAt(end));
  ui.input.setRangeText(`@${member.username}${spaced ? "" : " "}`, mention.start, end, "end");
  if (spaced) ui.input.setSelectionRange(ui.input.selectionEnd + 1, ui.input.selectionEnd + 1);
  closeMentions();
  autosize();
  noteTyping();
  ui.input.focus();
}

/** Handle a key of the composer while the list is open; answer whether it was used. */
function mentionKey(event) {
  if (ui.mentionList.hidden || event.isComposing) return false;
  const count = mention.options.length;
  if (event.key === "ArrowDown" || event.key === "ArrowUp") {
    mention.active = (mention.active + (event.key === "ArrowDown" ? 1 : count - 1)) % count;
    renderMentions();
  } else if ((event.key === "Enter" && !event.shiftKey) || (event.key === "Tab" && !event.shiftKey)) {
    insertMention(mention.options[mention.active]);
  } else if (event.key === "Escape") {
    mention.dismissed = mention.start;
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
  ui.input.addEventListener("input", () => {
    autosize();
    noteTyping();
    updateMentions();
  });

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
    clearUploads();
    try {
      await client.send(conversation, text, attachments);
    } catch (error) {
      toast(`Could not queue the message: ${problem(error)}`);
      ui.input.value = text;
    }
    scrollToBottom();
    ui.input.focus();
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
