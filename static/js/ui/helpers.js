// Small helpers the parts of the app share: avatars, the toast, error text, debounce,
// render coalescing and the confirm dialog.

import { ApiError } from "../api.js";
import { h } from "../dom.js";
import * as fmt from "../format.js";
import { $, ui } from "./shared.js";

// A user's picture, when they have one (`avatar_url`, always a path on this site: the
// CSP allows images from 'self' only); the initials on a colour otherwise.
function pictureUrl(url) {
  return typeof url === "string" && url.startsWith("/api/v1/avatars/") ? url : null;
}

function picture(url) {
  return h("img", { src: url, alt: "", decoding: "async", loading: "lazy", draggable: "false" });
}

export function avatar(name, id, className = "avatar", url = null) {
  const src = pictureUrl(url);
  if (src) return h("span", { class: `${className} has-picture`, "aria-hidden": "true" }, picture(src));
  return h("span", { class: `${className} ${fmt.avatarHue(id)}`, "aria-hidden": "true", text: fmt.initials(name) });
}

export function paintAvatar(el, name, id, url = null) {
  const src = pictureUrl(url);
  if (src) {
    el.className = "avatar has-picture";
    if (el.firstElementChild?.getAttribute("src") !== src) el.replaceChildren(picture(src));
    return;
  }
  el.className = `avatar ${fmt.avatarHue(id)}`;
  el.textContent = fmt.initials(name);
}

let toastTimer = null;
export function toast(message) {
  ui.toast.textContent = message;
  ui.toast.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => (ui.toast.hidden = true), 5000);
}

export function problem(error) {
  if (error instanceof ApiError || error?.code) return error.message || "Something went wrong.";
  return "Something went wrong; try again.";
}

export function debounce(fn, ms) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

const queued = new Set();
export function soon(work) {
  // Coalesce renders within one task. Not requestAnimationFrame: it does not run in a
  // hidden tab, and the title badge must count while the tab is hidden.
  if (queued.has(work)) return;
  queued.add(work);
  queueMicrotask(() => {
    queued.delete(work);
    work();
  });
}

export function confirmDialog(title, text, ok = "OK") {
  const dialog = $("dialog-confirm");
  $("confirm-title").textContent = title;
  $("confirm-text").textContent = text;
  $("confirm-ok").textContent = ok;
  dialog.returnValue = "";
  dialog.showModal();
  $("confirm-ok").focus();
  return new Promise((resolve) => {
    const closed = () => {
      // The close of an earlier opening (Escape, then at once Enter on the opener again)
      // can be dispatched after this one began: it is not this opening's answer.
      if (dialog.open) return;
      dialog.removeEventListener("close", closed);
      resolve(dialog.returnValue === "ok");
    };
    dialog.addEventListener("close", closed);
  });
}
