"""Search: ranking, prefix and trigram matches, highlighted snippets, and who finds what."""

from typing import Any

import pytest

from accounts.models import User
from messaging import search, services, wire
from messaging.models import Conversation
from tests.api.conftest import Client, send

pytestmark = pytest.mark.django_db


@pytest.fixture
def corpus(ana: User, bo: User, cy: User, group: Conversation) -> dict[str, Any]:
    """A small fixed corpus in Ana and Bo's group, plus Cy's own conversation."""
    once = send(ana, group, "we deploy the release on friday")
    often = send(bo, group, "deploy deploy deploy: the deploy script is broken")
    conference = send(ana, group, "the conference starts at nine")
    markup = send(bo, group, "<script>alert('deploy')</script>")
    gone = send(ana, group, "deploy the old thing")
    services.delete_message(user=ana, conversation_id=group.pk, message_id=gone.pk)
    services.rename_conversation(actor=ana, conversation_id=group.pk, title="deploy crew")
    elsewhere = services.create_group(creator=cy, title="Cy's", member_ids=[])
    hidden = send(cy, elsewhere, "deploy secrets of cy")
    return {
        "once": once,
        "often": often,
        "conference": conference,
        "markup": markup,
        "hidden": hidden,
        "elsewhere": elsewhere,
    }


def hits(client_for: Client, user: User, q: str, **params: Any) -> list[dict[str, Any]]:
    response = client_for(user).get("/api/v1/search", {"q": q, **params})
    assert response.status_code == 200, response.content
    return list(response.json()["results"])


def test_results_are_ranked_and_only_readable_text(
    client_for: Client, ana: User, corpus: dict[str, Any]
) -> None:
    found = hits(client_for, ana, "deploy")

    ids = [h["message"]["id"] for h in found]
    assert ids[:2] == [corpus["often"].pk, corpus["once"].pk]
    assert set(ids) == {corpus["often"].pk, corpus["once"].pk, corpus["markup"].pk}
    assert corpus["hidden"].pk not in ids  # Cy's conversation; deleted and system lines too


def test_every_word_must_match(client_for: Client, ana: User, corpus: dict[str, Any]) -> None:
    found = hits(client_for, ana, "deploy friday")

    assert [h["message"]["id"] for h in found] == [corpus["once"].pk]


def test_word_prefix_matches_and_is_highlighted(
    client_for: Client, ana: User, corpus: dict[str, Any]
) -> None:
    (hit,) = hits(client_for, ana, "confer")

    assert hit["message"]["id"] == corpus["conference"].pk
    assert "<mark>conference</mark>" in hit["snippet"]


@pytest.mark.parametrize("q", ["ference", "conferense"])
def test_partial_and_misspelt_words_match_by_trigrams(
    client_for: Client, ana: User, corpus: dict[str, Any], q: str
) -> None:
    found = hits(client_for, ana, q)

    assert [h["message"]["id"] for h in found] == [corpus["conference"].pk]


def test_trigram_hit_snippet_marks_the_part_that_matched(
    client_for: Client, ana: User, corpus: dict[str, Any]
) -> None:
    (hit,) = hits(client_for, ana, "ference")

    assert hit["snippet"] == "the con<mark>ference</mark> starts at nine"


def test_snippets_are_escaped_text_with_only_mark_tags(
    client_for: Client, ana: User, corpus: dict[str, Any]
) -> None:
    found = {h["message"]["id"]: h for h in hits(client_for, ana, "deploy")}

    snippet = found[corpus["markup"].pk]["snippet"]
    assert "<script>" not in snippet
    assert "&lt;script&gt;" in snippet and "<mark>deploy</mark>" in snippet
    assert found[corpus["markup"].pk]["message"]["body"] == "<script>alert('deploy')</script>"


def test_hits_carry_the_websocket_message_payload(
    client_for: Client, ana: User, corpus: dict[str, Any]
) -> None:
    (hit,) = hits(client_for, ana, "friday")

    assert hit["message"] == wire.message_payload(corpus["once"])


def test_non_member_and_removed_member_find_nothing(
    client_for: Client, ana: User, bo: User, cy: User, corpus: dict[str, Any], group: Conversation
) -> None:
    services.remove_member(actor=ana, conversation_id=group.pk, user_id=bo.pk)

    assert [h["message"]["id"] for h in hits(client_for, cy, "deploy")] == [corpus["hidden"].pk]
    assert hits(client_for, bo, "deploy") == []
    assert hits(client_for, bo, "conference") == []
    assert hits(client_for, cy, "deploy", conversation=group.pk) == []


def test_a_late_joiner_finds_only_what_came_after_joining(
    client_for: Client, ana: User, group: Conversation, make_user: Any, corpus: dict[str, Any]
) -> None:
    late = make_user("late")
    services.add_members(actor=ana, conversation_id=group.pk, user_ids=[late.pk])
    after = send(ana, group, "deploy again after the join")

    assert [h["message"]["id"] for h in hits(client_for, late, "deploy")] == [after.pk]


def test_conversation_filter_and_pages(
    client_for: Client, ana: User, corpus: dict[str, Any], group: Conversation
) -> None:
    client = client_for(ana)
    seen: list[int] = []
    url: str | None = f"/api/v1/search?q=deploy&conversation={group.pk}&limit=1"
    while url:
        page = client.get(url).json()
        assert len(page["results"]) <= 1
        seen += [h["message"]["id"] for h in page["results"]]
        url = page["next"]

    assert seen == [h["message"]["id"] for h in hits(client_for, ana, "deploy")]
    assert len(seen) == 3


@pytest.mark.parametrize("q", ["", "   ", "x" * 201, "a\x00b"])
def test_bad_queries_are_400(client_for: Client, ana: User, q: str) -> None:
    response = client_for(ana).get("/api/v1/search", {"q": q})

    assert response.status_code == 400
    assert response.json()["error"]["details"]["field"] == "q"


def test_punctuation_only_queries_find_nothing_quietly(
    client_for: Client, ana: User, corpus: Any
) -> None:
    assert hits(client_for, ana, "?!") == []


def test_sqlite_fallback_matches_substrings_newest_first(ana: User, corpus: dict[str, Any]) -> None:
    readable = search._readable_messages(ana, None)

    found = search._search_fallback(readable, "deploy", ["deploy"], 0, 10)

    assert [h.message.pk for h in found] == [
        corpus["markup"].pk,
        corpus["often"].pk,
        corpus["once"].pk,
    ]
    assert "<mark>deploy</mark>" in found[0].snippet and "&lt;script&gt;" in found[0].snippet


def test_word_matches_come_before_approximate_ones_across_pages(
    client_for: Client, ana: User, group: Conversation, corpus: dict[str, Any]
) -> None:
    approximate = send(ana, group, "join the teleconference")
    client = client_for(ana)

    seen: list[int] = []
    url: str | None = "/api/v1/search?q=conference&limit=1"
    while url:
        page = client.get(url).json()
        seen += [h["message"]["id"] for h in page["results"]]
        url = page["next"]

    assert seen == [corpus["conference"].pk, approximate.pk]
    (_, second) = hits(client_for, ana, "conference")
    assert second["snippet"] == "join the tele<mark>conference</mark>"
