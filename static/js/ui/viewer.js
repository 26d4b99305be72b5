// The image viewer: a conversation's images open in a dialog inside the app (zoom,
// previous and next within the conversation, download), not as a raw URL in a new tab.
//
// The images are those shown in the open conversation, in order; each thumbnail link
// carries what the viewer shows (`data-*`). Keys: Left / Right, + / -, 0 (fit or actual
// size), Escape (the dialog's own). Closing gives the focus back to the thumbnail.

import { safeUrl } from "../dom.js";
import * as fmt from "../format.js";

const ZOOMS = [0.25, 0.5, 0.75, 1, 1.5, 2, 3, 4];

const $ = (id) => document.getElementById(id);
const viewer = {
  dialog: $("dialog-viewer"),
  image: $("viewer-image"),
  title: $("viewer-title"),
  meta: $("viewer-meta"),
  position: $("viewer-position"),
  download: $("viewer-download"),
  fit: $("viewer-fit"),
  stage: $("viewer-stage"),
};
let links = [];
let index = 0;
let zoom = null; // null: fit to the window; else a factor of the natural size
let opener = null;

function shown() {
  return [...document.querySelectorAll("#message-list .attachment.image")];
}

function applyZoom() {
  const img = viewer.image;
  viewer.stage.classList.toggle("zoomed", zoom !== null);
  if (zoom === null) {
    img.style.width = "";
    viewer.fit.textContent = "100%";
    viewer.fit.setAttribute("aria-label", "Actual size");
  } else {
    img.style.width = `${Math.round((img.naturalWidth || 1) * zoom)}px`;
    viewer.fit.textContent = "Fit";
    viewer.fit.setAttribute("aria-label", "Fit to the window");
  }
}

function show(at) {
  index = (at + links.length) % links.length;
  const link = links[index];
  const url = safeUrl(link.dataset.full || link.getAttribute("href"));
  zoom = null;
  viewer.image.alt = link.dataset.name || "image";
  viewer.image.onload = applyZoom;
  if (url) viewer.image.src = url;
  viewer.title.textContent = link.dataset.name || "Image";
  const when = fmt.toDate(link.dataset.time);
  viewer.meta.textContent = [link.dataset.sender, when ? fmt.fullDate(when) : ""].filter(Boolean).join(" · ");
  viewer.position.textContent = `${index + 1} of ${links.length}`;
  if (url) viewer.download.href = url;
  viewer.download.setAttribute("download", link.dataset.name || "image");
  const many = links.length > 1;
  $("viewer-prev").disabled = !many;
  $("viewer-next").disabled = !many;
  applyZoom();
}

function step(by) {
  const current = zoom === null ? fitFactor() : zoom;
  const next = by > 0 ? ZOOMS.find((z) => z > current + 1e-6) : [...ZOOMS].reverse().find((z) => z < current - 1e-6);
  if (next !== undefined) {
    zoom = next;
    applyZoom();
  }
}

/** The factor "fit" shows the image at, from its natural size and the stage's (not from
 * its laid-out width: right after a switch to another image that can still be the
 * previous image's, and a zoom key then found no larger step and did nothing). */
function fitFactor() {
  const img = viewer.image;
  if (!img.naturalWidth || !img.naturalHeight) return 1;
  const stage = viewer.stage.getBoundingClientRect();
  return Math.min(1, stage.width / img.naturalWidth, stage.height / img.naturalHeight);
}

/** Open the viewer at the thumbnail link `link` (one of the open conversation's). */
export function openViewer(link) {
  links = shown();
  const at = links.indexOf(link);
  if (at === -1) return;
  opener = link;
  show(at);
  if (!viewer.dialog.open) viewer.dialog.showModal();
  $("viewer-close").focus();
}

export function install() {
  $("viewer-prev").addEventListener("click", () => show(index - 1));
  $("viewer-next").addEventListener("click", () => show(index + 1));
  $("viewer-zoom-in").addEventListener("click", () => step(1));
  $("viewer-zoom-out").addEventListener("click", () => step(-1));
  viewer.fit.addEventListener("click", () => {
    zoom = zoom === null ? 1 : null;
    applyZoom();
  });
  $("viewer-close").addEventListener("click", () => viewer.dialog.close());
  viewer.dialog.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const keys = {
      ArrowLeft: () => show(index - 1),
      ArrowRight: () => show(index + 1),
      "+": () => step(1),
      "=": () => step(1),
      "-": () => step(-1),
      0: () => viewer.fit.click(),
    };
    const act = keys[event.key];
    if (!act) return;
    event.preventDefault();
    act();
  });
  viewer.dialog.addEventListener("close", () => {
    viewer.image.removeAttribute("src");
    if (opener?.isConnected) opener.focus();
    opener = null;
  });
  // Thumbnails open the viewer (a middle click or a modified click still opens the file).
  document.getElementById("message-list").addEventListener("click", (event) => {
    const link = event.target.closest?.(".attachment.image");
    if (!link || event.button !== 0 || event.ctrlKey || event.metaKey || event.shiftKey) return;
    event.preventDefault();
    openViewer(link);
  });
}
