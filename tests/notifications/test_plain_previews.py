"""Pushes and emails preview a formatted message as plain text (`messaging.markup`)."""

import uuid

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from accounts.models import User
from messaging import services
from messaging.attachments import store_attachment
from messaging.markup import plain_text
from messaging.notifications.payloads import preview


@pytest.mark.parametrize(
    ("body", "shown"),
    [
        ("Plan for *Saturday* with _everyone_", "Plan for Saturday with everyone"),
        ("~not Sunday~ and **@bo**:", "not Sunday and @bo:"),
        ("*_both_*", "both"),
        ("a `*code*` b", "a *code* b"),
        ("> quoted\n- item\n1. first", "quoted\nitem\n1. first"),
        ("```\ncode *stays*\n```\nafter *bold*", "code *stays*\nafter bold"),
        ("snake_case_name, 2*3*4, *unclosed", "snake_case_name, 2*3*4, *unclosed"),
        ("**<img src=x onerror=alert(1)>**", "<img src=x onerror=alert(1)>"),
    ],
)
def test_markers_go_and_the_text_stays(body: str, shown: str) -> None:
    assert plain_text(body) == shown


def test_the_longest_body_of_markers_is_cut_to_its_previewed_start() -> None:
    """Tried: 100,000 characters of openers without closers. Only the start is read (a
    scan of the whole body with backtracking would run past the suite's timeout)."""
    body = ("*a " * 40_000)[:100_000]
    assert plain_text(body) == body[:2_000]


@pytest.mark.django_db
def test_a_push_or_email_preview_of_a_formatted_message_is_plain(ana: User, bo: User) -> None:
    direct, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    message = services.send_message(
        sender=ana,
        conversation_id=direct.pk,
        client_msg_id=uuid.uuid4(),
        body="> *Lunch* at\n- _noon_",
    ).message

    assert preview(message) == "Lunch at noon"


@pytest.mark.django_db
def test_a_voice_message_is_previewed_as_one_and_a_file_by_its_name(
    ana: User, bo: User, settings: object, tmp_path: object
) -> None:
    settings.MEDIA_ROOT = tmp_path  # type: ignore[attr-defined]
    direct, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)

    def sent(name: str, data: bytes, *, voice: bool) -> str:
        upload = SimpleUploadedFile(name, data)
        stored = store_attachment(uploader=ana, upload=upload, voice=voice)
        message = services.send_message(
            sender=ana,
            conversation_id=direct.pk,
            client_msg_id=uuid.uuid4(),
            body="",
            attachment_ids=[stored.pk],
        ).message
        return preview(message)

    ogg = b"OggS\x00\x02" + b"\x00" * 20 + b"\x13OpusHead\x01\x01"
    assert sent("rec.ogg", ogg, voice=True) == "🎤 Voice message"
    assert sent("notes.txt", b"plain words", voice=False) == "📎 notes.txt"
