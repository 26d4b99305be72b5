"""Export and import: the site round-trips byte for byte; conversation and user exports
hold only their part; a damaged export or a non-empty database is refused whole."""

from __future__ import annotations

import io
import json
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.apps import apps
from django.contrib.auth.models import Permission
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from PIL import Image

from accounts import avatars
from accounts.models import User
from messaging import attachments, devices, portability, selectors, services, wire
from messaging.errors import ImportRefused
from messaging.models import Attachment, Conversation, Message

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _media(settings: Any, tmp_path: Path) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.CHAT_REACT_BURST = 100.0


def png(color: str = "red", size: int = 300) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (size, size), color).save(out, format="PNG")
    return out.getvalue()


def say(user: User, chat: Conversation, body: str, **kw: Any) -> Message:
    return services.send_message(
        sender=user, conversation_id=chat.pk, client_msg_id=uuid.uuid4(), body=body, **kw
    ).message


@pytest.fixture
def site(make_user: Callable[..., User]) -> dict[str, Any]:
    """A small site with a bit of everything an export must carry."""
    ana = make_user(username="ana", display_name="Ana", email="ana@example.com")
    bo = make_user(username="bo", display_name="Bo")
    cy = make_user(username="cy", display_name="Cy", is_staff=True)
    cy.user_permissions.add(Permission.objects.get(codename="change_conversation"))
    avatars.set_avatar(
        user=ana, upload=SimpleUploadedFile("me.png", png("blue"), "image/png"), crop=None
    )
    team = services.create_group(creator=ana, title="Team", member_ids=[bo.pk, cy.pk])
    direct, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    upload = attachments.store_attachment(
        uploader=ana, upload=SimpleUploadedFile("cat.png", png(), "image/png")
    )
    attachments.make_thumbnail(upload.pk)
    hello = say(ana, team, "hello *team*", attachment_ids=[upload.pk])
    reply = say(bo, team, "hi!", reply_to=hello.pk)
    services.react(user=cy, conversation_id=team.pk, message_id=hello.pk, emoji="👍")
    services.edit_message(user=bo, conversation_id=team.pk, message_id=reply.pk, body="hi all")
    gone = say(ana, direct, "oops")
    services.delete_message(user=ana, conversation_id=direct.pk, message_id=gone.pk)
    say(bo, direct, "lunch?")
    services.mark_read(user=bo, conversation_id=team.pk, seq=hello.seq)
    devices.register_device(
        user=bo, platform="fcm", token="fcm-registration-token-1", name="Bo's phone"
    )
    services.block_user(user=cy, other_user_id=bo.pk)
    services.report_message(
        user=cy, conversation_id=team.pk, message_id=reply.pk, reason="spam", details="again"
    )
    services.hide_message(user=bo, conversation_id=team.pk, message_id=hello.pk)
    return {"ana": ana, "bo": bo, "cy": cy, "team": team, "direct": direct}


def tree(folder: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def empty_the_database() -> None:
    Message.objects.all().delete()
    Conversation.objects.all().delete()
    Attachment.objects.all().delete()
    User.objects.all().delete()


def pages(users: list[User]) -> list[Any]:
    return [
        [
            wire.message_payload(m)
            for m in selectors.list_messages_for_user(user=u, conversation_id=c.id).messages
        ]
        for u in users
        for c in selectors.list_conversations_for_user(user=u)
    ]


def test_export_import_export_gives_the_same_bytes_and_the_same_answers(
    site: dict[str, Any], tmp_path: Path, settings: Any
) -> None:
    people = [site["ana"], site["bo"], site["cy"]]
    before = pages(people)
    first, second = tmp_path / "first", tmp_path / "second"
    call_command("export", str(first), stdout=io.StringIO())
    stored = Message.objects.count()

    empty_the_database()
    shutil.rmtree(settings.MEDIA_ROOT)
    out = io.StringIO()
    call_command("import", str(first), stdout=out)
    assert "checked: data and files match the manifest" in out.getvalue()
    assert f"messaging.message: {stored}\n" in out.getvalue()
    call_command("export", str(second), stdout=io.StringIO())

    assert tree(first) == tree(second)
    people = [User.objects.get(username=name) for name in ("ana", "bo", "cy")]
    assert pages(people) == before
    cy = people[2]
    assert cy.check_password("pw-secret-1") and cy.has_perm("messaging.change_conversation")
    # New rows take ids after the imported ones (the sequences moved on).
    later = services.create_group(creator=people[0], title="After", member_ids=[people[1].pk])
    assert later.pk > site["direct"].pk
    assert say(people[0], later, "still works").pk > 0
    # The files came back: the picture and the attachment with its thumbnail.
    for name in json.loads((first / "manifest.json").read_text())["files"]:
        assert (Path(settings.MEDIA_ROOT) / name).is_file()


def test_every_model_is_exported_or_left_out_for_a_reason() -> None:
    ours = {
        model._meta.label
        for app in ("accounts", "messaging")
        for model in apps.get_app_config(app).get_models()
    }
    assert ours <= set(portability.MODELS) | set(portability.LEFT_OUT)


def test_a_damaged_export_or_a_database_in_use_is_refused_and_nothing_changes(
    site: dict[str, Any], tmp_path: Path
) -> None:
    folder = tmp_path / "export"
    portability.export_to_folder(portability.site_scope(), folder)
    # Tried: importing into the database the export came from.
    with pytest.raises(ImportRefused, match="already holds users"):
        portability.import_folder(folder)
    empty_the_database()
    # Tried: one byte of data.jsonl changed; then a file gone; then a newer format.
    data = folder / "data.jsonl"
    original = data.read_bytes()
    data.write_bytes(original.replace(b"hello", b"jello", 1))
    with pytest.raises(ImportRefused, match="does not match its manifest"):
        portability.import_folder(folder)
    data.write_bytes(original)
    manifest = json.loads((folder / "manifest.json").read_text())
    some_file = folder / "files" / next(iter(manifest["files"]))
    kept = some_file.read_bytes()
    some_file.unlink()
    with pytest.raises(ImportRefused, match="missing or does not match"):
        portability.import_folder(folder)
    some_file.write_bytes(kept)
    (folder / "manifest.json").write_text(json.dumps({**manifest, "format": 99}))
    with pytest.raises(ImportRefused, match="format 99"):
        portability.import_folder(folder)
    assert not User.objects.exists() and not Message.objects.exists()


def test_a_conversation_export_holds_its_log_and_only_what_members_see_of_people(
    site: dict[str, Any], tmp_path: Path
) -> None:
    folder = tmp_path / "team"
    out = io.StringIO()
    call_command("export", str(folder), "--conversation", str(site["team"].pk), stdout=out)
    rows = [json.loads(line) for line in (folder / "data.jsonl").read_text().splitlines()]
    messages = [r for r in rows if r["model"] == "messaging.message"]
    assert {r["fields"]["conversation"] for r in messages} == {site["team"].pk}
    assert "lunch?" not in (folder / "data.jsonl").read_text()
    people = [r for r in rows if r["model"] == "accounts.user"]
    assert sorted(p["fields"]["username"] for p in people) == ["ana", "bo", "cy"]
    assert all("password" not in p["fields"] and "email" not in p["fields"] for p in people)
    assert f"exported conversation {site['team'].pk}:" in out.getvalue()
    with pytest.raises(CommandError, match="There is no conversation 999999"):
        call_command("export", str(tmp_path / "none"), "--conversation", "999999")
    with pytest.raises(CommandError, match="not empty"):
        call_command("export", str(folder))


def test_a_user_export_holds_their_own_data_without_secrets(
    site: dict[str, Any], tmp_path: Path
) -> None:
    folder = tmp_path / "bo"
    portability.export_to_folder(portability.user_scope(site["bo"].pk), folder)
    rows = [json.loads(line) for line in (folder / "data.jsonl").read_text().splitlines()]
    by_model: dict[str, list[Any]] = {}
    for row in rows:
        by_model.setdefault(row["model"], []).append(row)
    (account,) = by_model["accounts.user"]
    assert account["fields"]["username"] == "bo"
    assert "password" not in account["fields"] and "is_superuser" not in account["fields"]
    assert {m["fields"]["body"] for m in by_model["messaging.message"]} == {"hi all", "lunch?"}
    assert [d["fields"]["name"] for d in by_model["messaging.device"]] == ["Bo's phone"]
    assert len(by_model["messaging.hiddenmessage"]) == 1 and "messaging.block" not in by_model
    assert len(by_model["messaging.membership"]) == 2
