// Voice messages: the composer's microphone records with MediaRecorder (Opus in WebM,
// else in Ogg), a bar shows the time with Cancel and Send, and Send uploads the
// recording as a voice attachment with its length, then sends it as a message (through
// the outbox, like any other). A recording stops and is sent at the server's limit
// (`max_voice_seconds`). The microphone is released as soon as the recording ends. A
// recording goes to the conversation it was started in, even if another one is opened.

import { uploadAttachment } from "../api.js";
import * as fmt from "../format.js";
import { cancelReply, replying } from "./composer.js";
import { problem, toast } from "./helpers.js";
import { scrollToBottom } from "./messages.js";
import { $, boot, client, current, ui } from "./shared.js";

const TYPES = ["audio/webm;codecs=opus", "audio/ogg;codecs=opus", "audio/webm", "audio/ogg"];

const bar = {
  box: $("recorder"),
  time: $("recorder-time"),
  status: $("recorder-status"),
  cancel: $("recorder-cancel"),
  send: $("recorder-send"),
  button: $("record"),
};

let take = null; // {recorder, stream, chunks, started, timer, cutoff, conversation, send, duration}

function supported() {
  return typeof MediaRecorder === "function" && Boolean(navigator.mediaDevices?.getUserMedia);
}

function release() {
  if (!take) return;
  clearInterval(take.timer);
  clearTimeout(take.cutoff);
  for (const track of take.stream.getTracks()) track.stop();
  take = null;
  bar.box.hidden = true;
  ui.composer.querySelector(".composer-row").hidden = false;
  bar.send.disabled = false;
  bar.status.textContent = "";
}

function tick() {
  if (!take) return;
  bar.time.textContent = fmt.duration(Math.min(performance.now() - take.started, limitMs()));
}

function limitMs() {
  return boot.max_voice_seconds * 1000;
}

// At the limit, to the millisecond (the 250 ms display tick would overshoot it, and the
// server refuses a voice message declared longer than its limit).
function atLimit() {
  toast(`Voice messages are at most ${fmt.duration(limitMs())}: sending it now.`);
  finish(true);
}

async function start() {
  if (take || current === null) return;
  if (!supported()) {
    toast("This browser cannot record audio.");
    return;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (error) {
    const refused = error?.name === "NotAllowedError" || error?.name === "SecurityError";
    toast(refused ? "The microphone is not allowed: allow it in the site's settings to record." : `Cannot record: ${error?.message || error}`);
    return;
  }
  const mimeType = TYPES.find((t) => MediaRecorder.isTypeSupported(t));
  const recorder = new MediaRecorder(stream, mimeType ? { mimeType } : undefined);
  take = { recorder, stream, chunks: [], started: performance.now(), timer: 0, cutoff: 0, conversation: current, send: false };
  const mine = take;
  recorder.addEventListener("dataavailable", (event) => {
    if (event.data.size) mine.chunks.push(event.data);
  });
  recorder.addEventListener("stop", () => stopped(mine));
  recorder.start(1000);
  take.timer = setInterval(tick, 250);
  take.cutoff = setTimeout(atLimit, limitMs());
  bar.time.textContent = "0:00";
  bar.box.hidden = false;
  ui.composer.querySelector(".composer-row").hidden = true;
  bar.send.focus();
}

function finish(send) {
  if (!take || take.recorder.state === "inactive") return;
  take.send = send;
  take.duration = Math.min(performance.now() - take.started, limitMs());
  bar.send.disabled = true;
  take.recorder.stop(); // `stop` follows the last `dataavailable`
}

async function stopped(mine) {
  const { chunks, send, conversation, duration, recorder } = mine;
  if (!send) {
    release();
    ui.input.focus();
    return;
  }
  bar.status.textContent = "Sending…";
  const type = (recorder.mimeType || "audio/webm").split(";")[0];
  const file = new File(chunks, `voice-message.${type === "audio/ogg" ? "ogg" : "webm"}`, { type });
  const fields = { voice: "true", duration_ms: Math.max(1, Math.round(duration)) };
  try {
    const attachment = await uploadAttachment(file, () => {}, fields).promise;
    const replyTo = replying?.conversation === conversation ? replying.id : null;
    if (replyTo) cancelReply();
    await client.send(conversation, "", [attachment], { replyTo });
    scrollToBottom();
  } catch (error) {
    toast(`Could not send the voice message: ${problem(error)}`);
  } finally {
    release();
    ui.input.focus();
  }
}

export function install() {
  bar.button.hidden = !supported();
  bar.button.addEventListener("click", start);
  bar.cancel.addEventListener("click", () => finish(false));
  bar.send.addEventListener("click", () => finish(true));
  bar.box.addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      event.preventDefault();
      finish(false);
    }
  });
}
