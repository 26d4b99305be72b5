"""Group admins: roles, description, picture, who may post; each change in the log."""

import io
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from accounts import avatars
from accounts.models import User
from messaging import selectors, services, wire
from messaging.errors import AdminsOnly, BadRequest, NotAllowed, NotAMember, UserNotFound
from messaging.models import Conversation, Membership, Message

pytestmark = pytest.mark.django_db


@pytest.fixture
def dee(make_user: Callable[..., User]) -> User:
    return make_user("dee", display_name="Dee")


@pytest.fixture
def group(ana: User, bo: User, cy: User, dee: User) -> Conversation:
    """Ana owns it; Bo, Cy and Dee are plain members."""
    return services.create_group(creator=ana, title="Team", member_ids=[bo.pk, cy.pk, dee.pk])


@pytest.fixture(autouse=True)
def _media(settings: Any, tmp_path: Path) -> None:
    settings.MEDIA_ROOT = tmp_path


def send(user: User, conversation: Conversation, body: str = "hello", cmid: Any = None) -> Message:
    return services.send_message(
        sender=user,
        conversation_id=conversation.pk,
        client_msg_id=cmid or uuid.uuid4(),
        body=body,
    ).message


def role_of(conversation: Conversation, user: User) -> str:
    return Membership.objects.get(conversation=conversation, user=user).role


def last_system(conversation: Conversation) -> Message:
    return Message.objects.filter(conversation=conversation).order_by("-seq").first()  # type: ignore[return-value]


def last_seq(conversation: Conversation) -> int:
    return Conversation.objects.get(pk=conversation.pk).last_seq


def png(width: int = 300, height: int = 200, color: str = "red") -> SimpleUploadedFile:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format="PNG")
    return SimpleUploadedFile("p.png", buffer.getvalue(), content_type="image/png")


# --- roles -----------------------------------------------------------------------------


def test_owner_makes_a_member_admin_and_the_log_says_so(
    group: Conversation, ana: User, bo: User
) -> None:
    before = last_seq(group)

    services.set_role(actor=ana, conversation_id=group.pk, user_id=bo.pk, role="admin")

    assert role_of(group, bo) == "admin"
    message = last_system(group)
    assert message.seq == before + 1 and message.kind == Message.Kind.SYSTEM
    assert message.system == {"event": "role", "users": [bo.pk], "role": "admin"}
    assert message.body == "Ana made Bo an admin."
    # Bo's own view now says admin (what the web app shows the settings panel from).
    assert selectors.get_conversation_for_user(user=bo, conversation_id=group.pk).role == "admin"


def test_an_admin_makes_others_admin_but_only_the_owner_dismisses_another_admin(
    group: Conversation, ana: User, bo: User, cy: User
) -> None:
    services.set_role(actor=ana, conversation_id=group.pk, user_id=bo.pk, role="admin")
    services.set_role(actor=bo, conversation_id=group.pk, user_id=cy.pk, role="admin")
    assert role_of(group, cy) == "admin"
    seq = last_seq(group)

    with pytest.raises(NotAllowed):  # Bo (admin) tries to dismiss Cy (admin)
        services.set_role(actor=bo, conversation_id=group.pk, user_id=cy.pk, role="member")
    assert role_of(group, cy) == "admin" and last_seq(group) == seq

    services.set_role(actor=ana, conversation_id=group.pk, user_id=cy.pk, role="member")
    assert role_of(group, cy) == "member"
    assert last_system(group).body == "Ana dismissed Cy as admin."


def test_an_admin_may_step_down(group: Conversation, ana: User, bo: User) -> None:
    services.set_role(actor=ana, conversation_id=group.pk, user_id=bo.pk, role="admin")

    services.set_role(actor=bo, conversation_id=group.pk, user_id=bo.pk, role="member")

    assert role_of(group, bo) == "member"
    assert last_system(group).body == "Bo is no longer an admin."


def test_role_changes_that_are_refused_change_nothing(
    group: Conversation, ana: User, bo: User, cy: User, make_user: Callable[..., User]
) -> None:
    outsider = make_user("eve")
    services.set_role(actor=ana, conversation_id=group.pk, user_id=bo.pk, role="admin")
    seq = last_seq(group)

    with pytest.raises(NotAllowed):  # a plain member tries to make themselves admin
        services.set_role(actor=cy, conversation_id=group.pk, user_id=cy.pk, role="admin")
    with pytest.raises(NotAllowed):  # an admin tries to demote the owner
        services.set_role(actor=bo, conversation_id=group.pk, user_id=ana.pk, role="member")
    with pytest.raises(NotAllowed):  # the owner tries to become a plain admin
        services.set_role(actor=ana, conversation_id=group.pk, user_id=ana.pk, role="admin")
    with pytest.raises(BadRequest):  # "owner" is not a role to give
        services.set_role(actor=ana, conversation_id=group.pk, user_id=cy.pk, role="owner")
    with pytest.raises(UserNotFound):  # not a member of the group
        services.set_role(actor=ana, conversation_id=group.pk, user_id=outsider.pk, role="admin")
    with pytest.raises(NotAMember):  # a non-member cannot do anything
        services.set_role(actor=outsider, conversation_id=group.pk, user_id=cy.pk, role="admin")

    assert last_seq(group) == seq
    assert role_of(group, ana) == "owner" and role_of(group, cy) == "member"


def test_giving_a_role_someone_already_has_logs_nothing(
    group: Conversation, ana: User, bo: User
) -> None:
    services.set_role(actor=ana, conversation_id=group.pk, user_id=bo.pk, role="admin")
    seq = last_seq(group)

    services.set_role(actor=ana, conversation_id=group.pk, user_id=bo.pk, role="admin")

    assert last_seq(group) == seq


def test_a_removed_admin_can_no_longer_manage_the_group(
    group: Conversation, ana: User, bo: User, cy: User
) -> None:
    services.set_role(actor=ana, conversation_id=group.pk, user_id=bo.pk, role="admin")
    services.remove_member(actor=ana, conversation_id=group.pk, user_id=bo.pk)

    with pytest.raises(NotAMember):
        services.set_role(actor=bo, conversation_id=group.pk, user_id=cy.pk, role="admin")
    with pytest.raises(NotAMember):
        services.update_group(actor=bo, conversation_id=group.pk, description="mine now")


def test_roles_exist_only_in_groups(ana: User, bo: User) -> None:
    chat, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)

    with pytest.raises(BadRequest):
        services.set_role(actor=ana, conversation_id=chat.pk, user_id=bo.pk, role="admin")
    with pytest.raises(BadRequest):
        services.update_group(actor=ana, conversation_id=chat.pk, post_policy="admins")


# --- description -----------------------------------------------------------------------


def test_an_admin_changes_the_description_and_every_member_sees_it(
    group: Conversation, ana: User, bo: User, cy: User
) -> None:
    services.set_role(actor=ana, conversation_id=group.pk, user_id=bo.pk, role="admin")
    activity = Conversation.objects.get(pk=group.pk).last_activity_at

    services.update_group(actor=bo, conversation_id=group.pk, description="  Board news  ")

    stored = Conversation.objects.get(pk=group.pk)
    assert stored.description == "Board news"
    assert last_system(group).system == {"event": "description", "users": []}
    assert last_system(group).body == "Bo changed the group description."
    # A settings change does not move the group up everyone's list.
    assert stored.last_activity_at == activity
    views = {v.id: v for v in selectors.list_conversations_for_user(user=cy)}
    payload = wire.conversation_payload(views[group.pk])
    assert (payload["description"], payload["role"]) == ("Board news", "member")

    services.update_group(actor=bo, conversation_id=group.pk, description="")
    assert last_system(group).body == "Bo removed the group description."


def test_a_plain_member_cannot_change_the_description(group: Conversation, cy: User) -> None:
    seq = last_seq(group)

    with pytest.raises(NotAllowed):
        services.update_group(actor=cy, conversation_id=group.pk, description="hijacked")

    assert Conversation.objects.get(pk=group.pk).description == ""
    assert last_seq(group) == seq


def test_a_description_over_the_limit_is_refused_and_the_old_one_kept(
    group: Conversation, ana: User, settings: Any
) -> None:
    services.update_group(actor=ana, conversation_id=group.pk, description="kept")
    seq = last_seq(group)

    with pytest.raises(BadRequest) as refused:
        services.update_group(
            actor=ana,
            conversation_id=group.pk,
            description="x" * (settings.CHAT_MAX_DESCRIPTION_LENGTH + 1),
        )
    assert refused.value.details["field"] == "description"
    with pytest.raises(BadRequest):
        services.update_group(actor=ana, conversation_id=group.pk, description="a\x00b")

    assert Conversation.objects.get(pk=group.pk).description == "kept"
    assert last_seq(group) == seq


def test_saving_the_same_settings_again_logs_nothing(group: Conversation, ana: User) -> None:
    services.update_group(
        actor=ana, conversation_id=group.pk, description="d", post_policy="admins"
    )
    seq = last_seq(group)

    services.update_group(
        actor=ana, conversation_id=group.pk, description="d", post_policy="admins"
    )

    assert last_seq(group) == seq


# --- who may post ----------------------------------------------------------------------


def test_in_an_admins_only_group_plain_members_cannot_send(
    group: Conversation, ana: User, bo: User, cy: User
) -> None:
    services.set_role(actor=ana, conversation_id=group.pk, user_id=bo.pk, role="admin")
    services.update_group(actor=ana, conversation_id=group.pk, post_policy="admins")
    notice = last_system(group)
    assert notice.system == {"event": "post_policy", "users": [], "post_policy": "admins"}
    assert notice.body == "Ana changed who can send messages: only admins."
    seq = last_seq(group)

    with pytest.raises(AdminsOnly) as refused:
        send(cy, group, "can I?")
    assert (refused.value.code, refused.value.http_status) == ("admins_only", 403)
    assert last_seq(group) == seq  # the seq taken inside the refused send was rolled back
    assert not Message.objects.filter(conversation=group, body="can I?").exists()

    assert send(ana, group, "from the owner").seq == seq + 1
    assert send(bo, group, "from an admin").seq == seq + 2

    services.update_group(actor=bo, conversation_id=group.pk, post_policy="everyone")
    assert send(cy, group, "now I can").seq == seq + 4


def test_a_retry_of_a_message_sent_before_the_group_became_admins_only_is_a_replay(
    group: Conversation, ana: User, cy: User
) -> None:
    cmid = uuid.uuid4()
    first = send(cy, group, "sent in time", cmid)
    services.update_group(actor=ana, conversation_id=group.pk, post_policy="admins")

    again = services.send_message(
        sender=cy, conversation_id=group.pk, client_msg_id=cmid, body="sent in time"
    )

    assert (again.created, again.message.pk) == (False, first.pk)


def test_an_unknown_post_policy_is_refused(group: Conversation, ana: User) -> None:
    with pytest.raises(BadRequest) as refused:
        services.update_group(actor=ana, conversation_id=group.pk, post_policy="owner")
    assert refused.value.details == {"field": "post_policy"}
    assert Conversation.objects.get(pk=group.pk).post_policy == "everyone"


def test_a_member_dismissed_as_admin_loses_the_right_to_post(
    group: Conversation, ana: User, bo: User
) -> None:
    services.set_role(actor=ana, conversation_id=group.pk, user_id=bo.pk, role="admin")
    services.update_group(actor=ana, conversation_id=group.pk, post_policy="admins")
    send(bo, group, "as admin")

    services.set_role(actor=ana, conversation_id=group.pk, user_id=bo.pk, role="member")

    with pytest.raises(AdminsOnly):
        send(bo, group, "as member")


# --- picture ---------------------------------------------------------------------------


def test_an_admin_sets_replaces_and_removes_the_group_picture(
    group: Conversation, ana: User
) -> None:
    services.set_group_picture(actor=ana, conversation_id=group.pk, upload=png(color="red"))
    first = Conversation.objects.get(pk=group.pk).picture
    assert first and last_system(group).body == "Ana changed the group picture."
    assert all(default_storage.exists(name) for name in avatars.avatar_files(first))
    url = Conversation.objects.get(pk=group.pk).picture_url
    assert url is not None and url.endswith("-256." + first.split(".")[1])

    services.set_group_picture(actor=ana, conversation_id=group.pk, upload=png(color="blue"))
    second = Conversation.objects.get(pk=group.pk).picture
    assert second != first
    # Nobody shows the first picture any more: its files are gone.
    assert not any(default_storage.exists(name) for name in avatars.avatar_files(first))

    services.set_group_picture(actor=ana, conversation_id=group.pk, upload=None)
    assert Conversation.objects.get(pk=group.pk).picture == ""
    assert last_system(group).body == "Ana removed the group picture."
    assert not any(default_storage.exists(name) for name in avatars.avatar_files(second))


def test_a_group_picture_never_shares_files_with_a_persons_picture(
    group: Conversation, ana: User
) -> None:
    avatars.set_avatar(user=ana, upload=png(color="green"), crop=None)
    services.set_group_picture(actor=ana, conversation_id=group.pk, upload=png(color="green"))
    ana.refresh_from_db()
    picture = Conversation.objects.get(pk=group.pk).picture
    assert picture != ana.avatar

    services.set_group_picture(actor=ana, conversation_id=group.pk, upload=None)

    # Removing the group's picture left Ana's (same pixels) in place.
    assert all(default_storage.exists(name) for name in avatars.avatar_files(ana.avatar))


def test_refused_pictures_keep_the_one_there_was(group: Conversation, ana: User, cy: User) -> None:
    services.set_group_picture(actor=ana, conversation_id=group.pk, upload=png())
    kept = Conversation.objects.get(pk=group.pk).picture
    seq = last_seq(group)

    with pytest.raises(NotAllowed):  # a plain member
        services.set_group_picture(actor=cy, conversation_id=group.pk, upload=png(color="blue"))
    with pytest.raises(BadRequest):  # text, named like a picture
        services.set_group_picture(
            actor=ana,
            conversation_id=group.pk,
            upload=SimpleUploadedFile("x.png", b"not a picture", content_type="image/png"),
        )

    assert Conversation.objects.get(pk=group.pk).picture == kept
    assert last_seq(group) == seq
