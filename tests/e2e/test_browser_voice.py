"""Voice messages and inline media in real Chromium, with its fake microphone and camera.

Chromium runs with `--use-fake-device-for-media-stream --use-fake-ui-for-media-stream`:
the microphone is a tone, and no permission prompt shows. The rest is as in
`tests/e2e/browser.py`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, FilePayload, Locator, Page, Playwright, expect

from messaging.models import Attachment, Message
from tests.e2e.browser import (
    FAKE_MEDIA_ARGS,
    Axe,
    Web,
    conversation,
    launch_chromium,
    make_person,
    open_direct,
    shot,
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

# A second of a changing canvas, recorded by the page's own MediaRecorder: a real WebM
# video made without any tool outside the browser.
RECORD_A_CLIP = """async () => {
  const canvas = document.createElement("canvas");
  canvas.width = 64; canvas.height = 48;
  const g = canvas.getContext("2d");
  const recorder = new MediaRecorder(canvas.captureStream(10), { mimeType: "video/webm" });
  const chunks = [];
  recorder.ondataavailable = (e) => chunks.push(e.data);
  let hue = 0;
  const paint = setInterval(() => {
    g.fillStyle = `hsl(${hue += 40},80%,50%)`;
    g.fillRect(0, 0, 64, 48);
  }, 50);
  recorder.start(200);
  await new Promise((done) => setTimeout(done, 1200));
  const stopped = new Promise((done) => { recorder.onstop = done; });
  recorder.stop();
  await stopped;
  clearInterval(paint);
  return Array.from(new Uint8Array(await new Blob(chunks).arrayBuffer()));
}"""

# Wait for a player's metadata (or its error); answer its state.
LOADED = """(el) => new Promise((done) => {
  const state = () => done({
    ready: el.readyState, error: el.error && el.error.code, duration: el.duration,
  });
  if (el.readyState >= 1) return state();
  el.addEventListener("loadedmetadata", state, { once: true });
  el.addEventListener("error", state, { once: true });
  el.load();
})"""


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    chromium = launch_chromium(playwright, FAKE_MEDIA_ARGS)
    try:
        yield chromium
    finally:
        chromium.close()


def players(page: Page, kind: str) -> Locator:
    return page.locator(f"#message-list .attachment.media {kind}")


def test_a_voice_message_is_recorded_sent_and_played_on_the_other_side(web: Web) -> None:
    """Tried: Ana records about two seconds with the microphone button and sends it; Bo,
    on the other gateway, gets a voice message whose player loads (the server typed
    Chromium's own recording as audio by its content) and shows its length. Ana then
    starts another recording and cancels it: nothing is sent, the microphone is let go."""
    axe = Axe()
    ana, bo = make_person("ana", "Ana"), make_person("bo", "Bo")
    open_direct(ana, bo)
    bo_page = web.log_in(bo, gateway=1, bypass_csp=True)
    ana_page = web.log_in(ana, gateway=0, bypass_csp=True)
    conversation(ana_page, "Bo").click()
    conversation(bo_page, "Ana").click()

    ana_page.get_by_role("button", name="Record a voice message").click()
    recorder = ana_page.get_by_role("group", name="Voice message")
    expect(recorder).to_be_visible()
    expect(ana_page.locator("#recorder-time")).to_have_text("0:02", timeout=10_000)
    axe.check(ana_page, "recording a voice message")
    shot(ana_page, "voice-recording")
    recorder.get_by_role("button", name="Send voice message").click()
    expect(recorder).to_be_hidden()

    # The upload lands before the message that carries it: wait for the message.
    wait_until(lambda: Message.objects.filter(attachments__voice=True).exists())
    voice = Attachment.objects.get(voice=True)
    assert voice.content_type in ("audio/webm", "audio/ogg"), voice.content_type
    assert voice.duration_ms is not None and 1500 <= voice.duration_ms <= 10_000
    message = Message.objects.get(attachments=voice)
    assert message.body == ""

    length = f"0:{round(voice.duration_ms / 1000):02d}"
    figure = bo_page.locator("#message-list .attachment.media.voice")
    expect(figure).to_have_count(1)
    expect(figure.locator(".media-name")).to_have_text("Voice message")
    expect(figure.locator(".media-length")).to_have_text(length)
    audio = figure.locator("audio")
    expect(audio).to_have_attribute("aria-label", f"Voice message, {length}")
    state = audio.evaluate(LOADED)
    assert state["error"] is None and state["ready"] >= 1, state
    assert state["duration"] > 0, state
    axe.check(bo_page, "a voice message")
    shot(bo_page, "voice-message")

    # A recording cancelled sends nothing and lets the microphone go.
    ana_page.get_by_role("button", name="Record a voice message").click()
    expect(recorder).to_be_visible()
    recorder.get_by_role("button", name="Cancel").click()
    expect(recorder).to_be_hidden()
    expect(ana_page.locator("#composer-input")).to_be_visible()
    assert Attachment.objects.filter(voice=True).count() == 1
    axe.assert_clean()


def test_video_and_audio_files_play_inline(web: Web) -> None:
    """Tried: Bo attaches a WebM video (recorded from a canvas by the page) and sends it;
    both see a video player that loads, with a download link beside it."""
    ana, bo = make_person("ana", "Ana"), make_person("bo", "Bo")
    open_direct(ana, bo)
    ana_page = web.log_in(ana, gateway=0, bypass_csp=True)
    bo_page = web.log_in(bo, gateway=1, bypass_csp=True)
    conversation(ana_page, "Bo").click()
    conversation(bo_page, "Ana").click()

    clip = bytes(bo_page.evaluate(RECORD_A_CLIP))
    payload: FilePayload = {"name": "clip.webm", "mimeType": "video/webm", "buffer": clip}
    bo_page.locator("#file-input").set_input_files(files=[payload])
    expect(bo_page.locator("#tray .tray-item.done")).to_have_count(1)
    bo_page.locator("#composer-input").press("Enter")

    wait_until(lambda: Attachment.objects.filter(filename="clip.webm").exists())
    assert Attachment.objects.get(filename="clip.webm").content_type == "video/webm"
    for page in (ana_page, bo_page):
        video = players(page, "video")
        expect(video).to_have_count(1)
        state = video.first.evaluate(LOADED)
        assert state["error"] is None and state["ready"] >= 1, state
        expect(page.locator("#message-list .attachment.media .media-download")).to_have_attribute(
            "download", "clip.webm"
        )


def test_a_recording_at_the_limit_is_sent_and_accepted(make_web: Any) -> None:
    """Tried: with a 2-second limit, Ana starts a recording and waits. The app stops and
    sends it at the limit by itself; the server accepts it (before, the stop came on a
    250 ms display tick past the limit and the server refused the length: "Could not
    send the voice message")."""
    web: Web = make_web(CHAT_MAX_VOICE_SECONDS="2")
    ana, bo = make_person("ana", "Ana"), make_person("bo", "Bo")
    open_direct(ana, bo)
    page = web.log_in(ana, bypass_csp=True)
    conversation(page, "Bo").click()

    page.get_by_role("button", name="Record a voice message").click()
    expect(page.get_by_role("group", name="Voice message")).to_be_visible()
    expect(page.locator("#toast")).to_contain_text("Voice messages are at most 0:02")
    wait_until(lambda: Message.objects.filter(attachments__voice=True).exists())
    voice = Attachment.objects.get(voice=True)
    assert voice.duration_ms is not None and 1500 <= voice.duration_ms <= 2000
    expect(page.locator("#message-list .attachment.media.voice")).to_have_count(1)
    expect(page.locator("#toast")).not_to_contain_text("Could not send")
