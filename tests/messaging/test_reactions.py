"""Emoji reactions: one per emoji per user, a new version per change, limits and rules."""

import uuid
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from accounts.models import User
from messaging import selectors, services, wire
from messaging.errors import BadRequest, MessageNotFound, NotAllowed, NotAMember, RateLimited
from messaging.models import Conversation, Message
from messaging.reactions import changed, is_emoji

pytestmark = pytest.mark.django_db

THUMBS = "\N{THUMBS UP SIGN}"
HEART = "\N{HEAVY BLACK HEART}\ufe0f"


def send(user: User, conversation: Conversation, body: str = "hello") -> Message:
    return services.send_message(
        sender=user, conversation_id=conversation.pk, client_msg_id=uuid.uuid4(), body=body
    ).message


def react(user: User, message: Message, emoji: str, *, add: bool = True) -> Message:
    return services.react(
        user=user,
        conversation_id=message.conversation_id,
        message_id=message.pk,
        emoji=emoji,
        add=add,
    )


@pytest.mark.parametrize(
    "text",
    [
        THUMBS,
        HEART,
        "\N{THUMBS UP SIGN}\N{EMOJI MODIFIER FITZPATRICK TYPE-4}",
        "\N{MAN}\u200d\N{WOMAN}\u200d\N{GIRL}\u200d\N{BOY}",  # a family, joined by ZWJ
        "\N{REGIONAL INDICATOR SYMBOL LETTER F}\N{REGIONAL INDICATOR SYMBOL LETTER R}",
        "1\ufe0f\u20e3",  # keycap one
        "\N{WAVING WHITE FLAG}\ufe0f\u200d\N{RAINBOW}",
    ],
)
def test_one_emoji_of_any_shape_is_an_emoji(text: str) -> None:
    assert is_emoji(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "a",
        "1",
        "ok",
        " " + THUMBS,
        THUMBS + THUMBS,  # two emoji side by side
        "<img src=x>",
        "\u202e" + THUMBS,  # a direction override before it
        "\u200d" + THUMBS,
        THUMBS + "\u200d",
        "\N{REGIONAL INDICATOR SYMBOL LETTER F}",  # half a flag
        "\ufe0f",
        "\x00",
        THUMBS * 20,
    ],
)
def test_words_markup_invisible_text_and_two_emoji_are_not_an_emoji(text: str) -> None:
    assert not is_emoji(text)


def test_adding_twice_or_removing_what_is_not_there_changes_nothing() -> None:
    once = changed([], THUMBS, 7, add=True)
    assert once == [[THUMBS, [7]]]
    assert changed(once, THUMBS, 7, add=True) is None
    assert changed(once, HEART, 7, add=False) is None
    assert changed(once, THUMBS, 8, add=False) is None
    assert changed(once, THUMBS, 7, add=False) == []


def test_a_reaction_takes_a_new_version_and_shows_in_every_members_after_fetch(
    ana: User, bo: User
) -> None:
    """Ana and Bo react; Bo's `after=` fetch from before returns the message with both."""
    conversation = services.create_direct_conversation(user=ana, other_user_id=bo.pk)[0]
    message = send(ana, conversation, "lunch?")
    cursor = message.seq

    react(bo, message, THUMBS)
    react(ana, message, THUMBS)
    latest = react(bo, message, HEART)

    assert latest.version == cursor + 3
    batch = selectors.list_messages_for_user(user=bo, conversation_id=conversation.pk, after=cursor)
    assert [m.pk for m in batch.messages] == [message.pk]
    payload = wire.message_payload(batch.messages[0])
    assert payload["version"] == latest.version
    assert payload["reactions"] == [
        {"emoji": THUMBS, "count": 2, "users": [bo.pk, ana.pk]},
        {"emoji": HEART, "count": 1, "users": [bo.pk]},
    ]
    assert payload["body"] == "lunch?" and payload["edited_at"] is None


def test_a_repeated_reaction_or_removal_keeps_the_version(ana: User, bo: User) -> None:
    """Tried: the same reaction twice (a retry), then removing one never made."""
    conversation = services.create_direct_conversation(user=ana, other_user_id=bo.pk)[0]
    message = send(ana, conversation)
    first = react(bo, message, THUMBS)

    assert react(bo, message, THUMBS).version == first.version
    assert react(bo, message, HEART, add=False).version == first.version
    removed = react(bo, message, THUMBS, add=False)

    assert removed.version == first.version + 1
    message.refresh_from_db()
    assert message.reactions == [] and message.version == removed.version
    assert wire.message_payload(message)["reactions"] == []


def test_outsiders_system_lines_deleted_and_missing_messages_take_no_reaction(
    ana: User, bo: User, cy: User
) -> None:
    group = services.create_group(creator=ana, title="Team", member_ids=[bo.pk])
    message = send(bo, group, "hi")
    created_line = Message.objects.get(conversation=group, seq=1)

    with pytest.raises(NotAMember):
        react(cy, message, THUMBS)
    with pytest.raises(NotAllowed):
        react(ana, created_line, THUMBS)
    with pytest.raises(MessageNotFound):
        services.react(user=ana, conversation_id=group.pk, message_id=10**12, emoji=THUMBS)
    services.delete_message(user=bo, conversation_id=group.pk, message_id=message.pk)
    with pytest.raises(NotAllowed):
        react(ana, message, THUMBS)

    message.refresh_from_db()
    assert message.reactions == [] and message.deleted


def test_deleting_a_message_takes_its_reactions_away(ana: User, bo: User) -> None:
    conversation = services.create_direct_conversation(user=ana, other_user_id=bo.pk)[0]
    message = send(ana, conversation)
    react(bo, message, THUMBS)

    deleted = services.delete_message(
        user=ana, conversation_id=conversation.pk, message_id=message.pk
    )

    assert wire.message_payload(deleted)["reactions"] == []
    message.refresh_from_db()
    assert message.reactions == []


def test_a_member_who_left_cannot_react_and_their_reaction_stays(
    ana: User, bo: User, cy: User
) -> None:
    group = services.create_group(creator=ana, title="Team", member_ids=[bo.pk, cy.pk])
    message = send(ana, group)
    react(cy, message, THUMBS)
    services.leave_conversation(user=cy, conversation_id=group.pk)

    with pytest.raises(NotAMember):
        react(cy, message, THUMBS, add=False)

    message.refresh_from_db()
    assert message.reactions == [[THUMBS, [cy.pk]]]


@pytest.mark.parametrize("emoji", ["a", "", THUMBS + THUMBS, "<b>", 7, None])
def test_what_is_not_one_emoji_is_refused_and_changes_nothing(
    ana: User, bo: User, emoji: Any
) -> None:
    conversation = services.create_direct_conversation(user=ana, other_user_id=bo.pk)[0]
    message = send(ana, conversation)

    with pytest.raises(BadRequest) as refused:
        react(bo, message, emoji)

    assert refused.value.details == {"field": "emoji"}
    message.refresh_from_db()
    assert (message.reactions, message.version) == ([], 1)


def test_a_message_takes_at_most_the_configured_number_of_different_emoji(
    ana: User, bo: User, settings: Any
) -> None:
    settings.CHAT_MAX_REACTIONS = 2
    conversation = services.create_direct_conversation(user=ana, other_user_id=bo.pk)[0]
    message = send(ana, conversation)
    react(bo, message, THUMBS)
    react(bo, message, HEART)

    with pytest.raises(BadRequest) as refused:
        react(bo, message, "\N{FACE WITH TEARS OF JOY}")
    # Another user may still add one of the two already there.
    both = react(ana, message, HEART)

    assert refused.value.details["max_reactions"] == 2
    assert [r["count"] for r in wire.message_payload(both)["reactions"]] == [1, 2]


def test_reactions_are_rate_limited_per_user(ana: User, bo: User, settings: Any) -> None:
    settings.CHAT_REACT_RATE = 0.001
    settings.CHAT_REACT_BURST = 2.0
    conversation = services.create_direct_conversation(user=ana, other_user_id=bo.pk)[0]
    message = send(ana, conversation)
    react(bo, message, THUMBS)
    react(bo, message, THUMBS, add=False)

    with pytest.raises(RateLimited):
        react(bo, message, HEART)
    # Ana's budget is her own.
    react(ana, message, HEART)

    message.refresh_from_db()
    assert message.reactions == [[HEART, [ana.pk]]]


def test_a_message_stored_by_the_previous_release_has_no_reactions(ana: User, bo: User) -> None:
    """During a rolling deploy an older gateway's INSERT does not name the new column."""
    conversation = services.create_direct_conversation(user=ana, other_user_id=bo.pk)[0]
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {Message._meta.db_table} "  # noqa: S608 - our table name
            "(conversation_id, seq, version, kind, sender_id, body, created_at, deleted, "
            "mentions) VALUES (%s, 1, 1, 'text', %s, 'from the old release', %s, FALSE, "
            "'[]') RETURNING id",
            [conversation.pk, ana.pk, timezone.now()],
        )
        (message_id,) = cursor.fetchone()

    stored = Message.objects.get(pk=message_id)
    assert stored.reactions == []
    assert react(bo, stored, THUMBS).reactions == [[THUMBS, [bo.pk]]]
