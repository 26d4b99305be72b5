"""A departure records how far the member had read: their reads keep counting."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from accounts.models import User
from messaging import services
from messaging.models import Message

pytestmark = pytest.mark.django_db


def test_leaving_and_removal_record_the_members_read_position(
    ana: User, bo: User, make_user: Callable[..., User]
) -> None:
    cy = make_user("cy")
    group = services.create_group(creator=ana, title="Trio", member_ids=[bo.pk, cy.pk])
    sent = services.send_message(
        sender=ana, conversation_id=group.pk, client_msg_id=uuid.uuid4(), body="read me"
    ).message
    services.mark_read(user=cy, conversation_id=group.pk, seq=sent.seq)
    services.leave_conversation(user=cy, conversation_id=group.pk)
    services.remove_member(actor=ana, conversation_id=group.pk, user_id=bo.pk)

    left, removed = Message.objects.filter(conversation=group, kind="system").order_by("seq")[1:]
    assert left.system == {"event": "left", "users": [cy.pk], "read_seq": sent.seq}
    assert removed.system == {"event": "removed", "users": [bo.pk], "read_seq": 1}  # from the start
