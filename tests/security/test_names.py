"""Names others see (display names, group titles) cannot hide or reorder text.

The finding: group titles accepted U+202E (right-to-left override) while display names
refused it; display names accepted zero-width characters and mixed-script look-alikes
(`alice` with a Cyrillic `a`). One rule (`chatsite.text.clean_name`) now serves every
name, through every door (REST here; the services behind the pages and the admin are
the same), and look-alike names are flagged to staff. How bodies with U+202E are shown
is tried in real Chromium (tests/e2e/test_browser.py, the direction-override test).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client as PageClient
from rest_framework.test import APIClient

from accounts import tokens
from accounts.models import User
from chatsite.text import clean_name, mixed_scripts
from messaging import services
from messaging.models import Attachment, Conversation

pytestmark = pytest.mark.django_db

RLO = "\u202e"
CYRILLIC_A = "\u0430"
HIDING = [
    ("right-to-left override", f"Ana{RLO}nimda"),
    ("left-to-right embedding", "Ana\u202aX"),
    ("right-to-left isolate", "Ana\u2067X"),
    ("right-to-left mark", "Ana\u200f"),
    ("zero-width space", "A\u200bna"),
    ("zero-width non-joiner in Latin", "A\u200cna"),
    ("zero-width joiner between letters", "A\u200dna"),
    ("word joiner", "A\u2060na"),
    ("byte order mark", "\ufeffAna"),
    ("soft hyphen", "A\u00adna"),
    ("Hangul filler (a name that looks empty)", "\u3164"),
    ("braille blank", "Ana\u2800"),
    ("private use", "Ana\ue000"),
    ("control character", "Ana\x07"),
]
FINE = [
    "Ana",
    "José Ñúñez",
    "Zoë",
    "👩\u200d💻 Ana",  # an emoji sequence keeps its joiner
    "❤\ufe0f\u200d🔥",
    "1\ufe0f\u20e3 team",
    "🏴\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f Scots",
    "日本語 Tokyo チーム",
    "Алиса",
    # Persian ("I want") writes words with the zero-width non-joiner.
    "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645",
]


def api(user: User) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens.issue_pair(user)['access']}")
    return client


@pytest.mark.parametrize(("what", "name"), HIDING, ids=[w for w, _ in HIDING])
def test_a_display_name_that_hides_or_reorders_text_is_refused(
    ana: User, what: str, name: str
) -> None:
    response = api(ana).patch("/api/v1/users/me", {"display_name": name}, format="json")

    assert response.status_code == 400, what
    error = response.json()["error"]
    assert error["details"]["field"] == "display_name"
    assert error["details"]["character"].startswith("U+")
    ana.refresh_from_db()
    assert ana.display_name == "Ana"  # nothing stored


@pytest.mark.parametrize(("what", "title"), HIDING, ids=[w for w, _ in HIDING])
def test_a_group_title_that_hides_or_reorders_text_is_refused_on_create_and_rename(
    ana: User, bo: User, what: str, title: str
) -> None:
    client = api(ana)
    created = client.post("/api/v1/conversations", {"kind": "group", "title": title}, format="json")
    group = services.create_group(creator=ana, title="Team", member_ids=[bo.pk])
    renamed = client.patch(f"/api/v1/conversations/{group.pk}", {"title": title}, format="json")

    assert (created.status_code, renamed.status_code) == (400, 400), what
    assert created.json()["error"]["details"]["field"] == "title"
    assert list(Conversation.objects.values_list("title", flat=True)) == ["Team"]


@pytest.mark.parametrize("name", FINE)
def test_names_in_any_script_and_with_emoji_are_accepted_as_typed(ana: User, name: str) -> None:
    response = api(ana).patch("/api/v1/users/me", {"display_name": name}, format="json")

    assert response.status_code == 200, response.content
    assert response.json()["display_name"] == name
    group = services.create_group(creator=ana, title=name)
    assert group.title == name


def test_a_device_name_follows_the_same_rule(ana: User) -> None:
    token = "f" * 64
    response = api(ana).post(
        "/api/v1/devices",
        {"platform": "apns", "token": token, "name": f"iPhone{RLO}enohPi"},
        format="json",
    )

    assert response.status_code == 400
    assert response.json()["error"]["details"]["field"] == "name"


def test_a_look_alike_display_name_is_allowed_but_flagged_to_staff(
    ana: User, make_user: Callable[..., User]
) -> None:
    """Tried: Ana renames herself `alice` with a Cyrillic `a` to pass for Alice."""
    alice = make_user("alice", display_name="alice")
    look_alike = f"{CYRILLIC_A}lice"

    response = api(ana).patch("/api/v1/users/me", {"display_name": look_alike}, format="json")

    assert response.status_code == 200
    ana.refresh_from_db()
    alice.refresh_from_db()
    assert (ana.name_flagged, alice.name_flagged) == (True, False)
    # Staff find flagged names with the admin's filter.
    staff = make_user("root-staff", is_staff=True, is_superuser=True)
    page = PageClient()
    page.force_login(staff)
    listing = page.get("/admin/accounts/user/?name_flagged__exact=1")
    assert listing.status_code == 200
    assert look_alike in listing.content.decode()
    assert ">alice<" not in listing.content.decode()
    # A plain name again clears the flag.
    api(ana).patch("/api/v1/users/me", {"display_name": "Ana"}, format="json")
    ana.refresh_from_db()
    assert ana.name_flagged is False


def test_sign_up_flags_a_look_alike_display_name(client: PageClient, settings: Any) -> None:
    settings.REGISTER_BURST = 100.0
    response = APIClient().post(
        "/api/v1/auth/register",
        {"username": "mallory", "password": "pw-long-enough-77", "display_name": f"B{CYRILLIC_A}b"},
        format="json",
    )

    assert response.status_code == 201, response.content
    assert User.objects.get(username="mallory").name_flagged is True


@pytest.mark.parametrize(
    ("name", "mixed"),
    [
        ("alice", False),
        (f"{CYRILLIC_A}lice", True),
        ("Алиса", False),
        ("ΑΒΓ abc", True),
        ("日本語 Tokyo カタカナ", False),
        ("Ana \u02bcOkina", False),  # a modifier letter belongs to no script
        ("José 123", False),
    ],
)
def test_mixed_scripts(name: str, mixed: bool) -> None:
    assert mixed_scripts(name) is mixed


def test_clean_name_collapses_spaces_and_names_the_character() -> None:
    assert clean_name("  Ana   María ", field="x", max_length=64) == "Ana María"
    # Line and paragraph separators are spaces in a one-line name.
    assert clean_name("Ana\u2028Bo\u2029", field="x", max_length=64) == "Ana Bo"
    from chatsite.errors import BadRequest

    with pytest.raises(BadRequest) as err:
        clean_name(f"a{RLO}b", field="title", max_length=64)
    assert err.value.details == {"field": "title", "character": "U+202E"}
    assert "U+202E" in err.value.message


def test_an_attachment_name_loses_its_hiding_characters(
    ana: User, settings: Any, tmp_path: Path
) -> None:
    """Tried: an upload named `holiday<U+202E>gpj.exe` (shows as `holidayexe.jpg`)."""
    settings.MEDIA_ROOT = tmp_path / "media"
    upload = SimpleUploadedFile(f"holiday{RLO}gpj.exe\u200b", b"MZ not really", "text/plain")

    response = api(ana).post("/api/v1/attachments", {"file": upload}, format="multipart")

    assert response.status_code == 201, response.content
    assert response.json()["filename"] == "holidaygpj.exe"
    assert Attachment.objects.get().filename == "holidaygpj.exe"
