"""The staff admin: every page loads, search and filters find the right rows, and
moderation soft-deletes messages through the services, never with a raw ORM delete."""

import uuid
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from django.contrib.admin.models import CHANGE, DELETION, LogEntry
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from accounts.models import User
from messaging import services
from messaging.models import Attachment, Conversation, Device, Membership, Message

pytestmark = pytest.mark.django_db


@dataclass
class Chat:
    """A direct chat ana-bo and a public group of ana, bo and cy, with messages."""

    direct: Conversation
    group: Conversation
    hello: Message  # ana -> bo, direct
    lunch: Message  # bo -> ana, direct
    welcome: Message  # ana, group
    created: Message  # the group's system message "created"
    attachment: Attachment
    device: Device


def send(sender: User, conversation: Conversation, body: str) -> Message:
    return services.send_message(
        sender=sender, conversation_id=conversation.pk, client_msg_id=uuid.uuid4(), body=body
    ).message


@pytest.fixture
def chat(ana: User, bo: User, cy: User) -> Chat:
    direct, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    group = services.create_group(
        creator=ana, title="Garden club", member_ids=[bo.pk, cy.pk], public=True
    )
    hello = send(ana, direct, "hello bo")
    lunch = send(bo, direct, "lunch at noon?")
    welcome = send(ana, group, "welcome to the garden club")
    created = Message.objects.get(conversation=group, kind=Message.Kind.SYSTEM)
    attachment = Attachment.objects.create(
        uploader=ana,
        file="attachments/2026/01/tomatoes.jpg",
        filename="tomatoes.jpg",
        content_type="image/jpeg",
        size=1234,
        sha256="ab" * 32,
    )
    device = Device.objects.create(
        user=bo, platform=Device.Platform.FCM, token="fcm-token-of-bo", name="Bo's phone"
    )
    return Chat(direct, group, hello, lunch, welcome, created, attachment, device)


def changelist(model: str) -> str:
    return reverse(f"admin:messaging_{model}_changelist")


def change(model: str, pk: int) -> str:
    return reverse(f"admin:messaging_{model}_change", args=[pk])


def listed_ids(response) -> set[int]:
    """Return the primary keys of the rows a changelist response shows."""
    return {obj.pk for obj in response.context["cl"].result_list}


def user_messages(response) -> list[tuple[str, str]]:
    return [(m.level_tag, m.message) for m in get_messages(response.wsgi_request)]


def moderate(client: Client, ids: list[int], *, confirm: bool = True):
    data = {"action": "moderate_delete_selected", "_selected_action": [str(i) for i in ids]}
    if confirm:
        data["post"] = "yes"
    return client.post(changelist("message"), data)


# --- pages ------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["conversation", "membership", "message", "attachment", "device"])
def test_every_changelist_loads_and_lists_rows(admin_client: Client, chat: Chat, model: str):
    response = admin_client.get(changelist(model))

    assert response.status_code == 200
    assert listed_ids(response)


def test_changelists_show_the_expected_rows(admin_client: Client, chat: Chat):
    conversations = admin_client.get(changelist("conversation"))
    messages = admin_client.get(changelist("message"))
    attachments = admin_client.get(changelist("attachment"))
    devices = admin_client.get(changelist("device"))

    assert listed_ids(conversations) == {chat.direct.pk, chat.group.pk}
    assert listed_ids(messages) == {chat.hello.pk, chat.lunch.pk, chat.welcome.pk, chat.created.pk}
    assert listed_ids(attachments) == {chat.attachment.pk}
    assert listed_ids(devices) == {chat.device.pk}
    assert "lunch at noon?" in messages.content.decode()


def test_conversation_changelist_counts_members(admin_client: Client, chat: Chat):
    response = admin_client.get(changelist("conversation"))

    counts = {c.pk: c.member_count for c in response.context["cl"].result_list}
    assert counts == {chat.direct.pk: 2, chat.group.pk: 3}


def test_every_change_page_loads(admin_client: Client, chat: Chat):
    membership = Membership.objects.get(conversation=chat.group, user__username="cy")
    pages = [
        (change("conversation", chat.direct.pk), chat.direct.direct_key),
        (change("conversation", chat.group.pk), "Garden club"),
        (change("membership", membership.pk), "cy"),
        (change("message", chat.hello.pk), "hello bo"),
        (change("message", chat.created.pk), "created the group"),
        (change("attachment", chat.attachment.pk), "tomatoes.jpg"),
        (change("device", chat.device.pk), "fcm-token-of-bo"),
    ]

    for url, expected in pages:
        response = admin_client.get(url)
        assert response.status_code == 200, url
        assert str(expected) in response.content.decode(), url


def test_conversation_page_lists_its_members(admin_client: Client, chat: Chat):
    response = admin_client.get(change("conversation", chat.group.pk))

    inline = response.context["inline_admin_formsets"][0]
    assert {form.original.user.username for form in inline} == {"ana", "bo", "cy"}


def test_changelist_queries_do_not_grow_with_rows(
    admin_client: Client, chat: Chat, ana: User, bo: User
):
    def count_queries(model: str) -> int:
        with CaptureQueriesContext(connection) as queries:
            assert admin_client.get(changelist(model)).status_code == 200
        return len(queries)

    before = {m: count_queries(m) for m in ("conversation", "membership", "message")}
    for n in range(5):
        group = services.create_group(creator=ana, title=f"Group {n}", member_ids=[bo.pk])
        send(ana, group, f"message {n}")
    after = {m: count_queries(m) for m in ("conversation", "membership", "message")}

    assert after == before


# --- search and filters -----------------------------------------------------------------


def test_conversation_search_finds_by_title(admin_client: Client, chat: Chat):
    response = admin_client.get(changelist("conversation"), {"q": "garden"})

    assert listed_ids(response) == {chat.group.pk}


def test_conversation_search_finds_by_id(admin_client: Client, chat: Chat):
    response = admin_client.get(changelist("conversation"), {"q": str(chat.direct.pk)})

    assert listed_ids(response) == {chat.direct.pk}


def test_conversation_filters_by_kind_and_visibility(admin_client: Client, chat: Chat):
    direct = admin_client.get(changelist("conversation"), {"kind__exact": "direct"})
    public = admin_client.get(changelist("conversation"), {"public__exact": "1"})

    assert listed_ids(direct) == {chat.direct.pk}
    assert listed_ids(public) == {chat.group.pk}


def test_membership_search_finds_by_username_display_name_and_title(
    admin_client: Client, chat: Chat, ana: User, make_user: Callable[..., User]
):
    dee = make_user("dee", display_name="Deirdre")
    services.add_members(actor=ana, conversation_id=chat.group.pk, user_ids=[dee.pk])
    cy_rows = set(Membership.objects.filter(user__username="cy").values_list("pk", flat=True))
    dee_rows = set(Membership.objects.filter(user=dee).values_list("pk", flat=True))
    group_rows = set(
        Membership.objects.filter(conversation=chat.group).values_list("pk", flat=True)
    )

    by_username = admin_client.get(changelist("membership"), {"q": "cy"})
    by_display_name = admin_client.get(changelist("membership"), {"q": "deirdre"})
    by_title = admin_client.get(changelist("membership"), {"q": "Garden"})

    assert listed_ids(by_username) == cy_rows
    assert listed_ids(by_display_name) == dee_rows
    assert listed_ids(by_title) == group_rows
    assert len(group_rows) == 4


def test_membership_filters_by_role_and_muted(admin_client: Client, chat: Chat, bo: User):
    services.set_muted(user=bo, conversation_id=chat.group.pk, muted=True)
    owner = Membership.objects.get(conversation=chat.group, role=Membership.Role.OWNER)
    muted = Membership.objects.get(conversation=chat.group, user=bo)

    owners = admin_client.get(changelist("membership"), {"role__exact": "owner"})
    mutes = admin_client.get(changelist("membership"), {"muted__exact": "1"})

    assert listed_ids(owners) == {owner.pk}
    assert listed_ids(mutes) == {muted.pk}


def test_membership_changelist_filters_by_conversation_link(admin_client: Client, chat: Chat):
    response = admin_client.get(
        changelist("membership"), {"conversation__id__exact": str(chat.direct.pk)}
    )

    assert {m.user.username for m in response.context["cl"].result_list} == {"ana", "bo"}


def test_message_search_finds_by_body(admin_client: Client, chat: Chat):
    response = admin_client.get(changelist("message"), {"q": "noon"})

    assert listed_ids(response) == {chat.lunch.pk}


def test_message_search_finds_by_sender_username(admin_client: Client, chat: Chat):
    response = admin_client.get(changelist("message"), {"q": "bo"})

    # bo sent "lunch"; "hello bo" mentions bo in its body. Ana's other messages stay out.
    assert listed_ids(response) == {chat.lunch.pk, chat.hello.pk}


def test_message_search_finds_by_client_msg_id(admin_client: Client, chat: Chat):
    response = admin_client.get(changelist("message"), {"q": str(chat.welcome.client_msg_id)})

    assert listed_ids(response) == {chat.welcome.pk}


def test_message_filters_by_kind_and_deleted(admin_client: Client, chat: Chat, admin_user: User):
    services.moderate_delete_message(staff=admin_user, message_id=chat.lunch.pk)

    system = admin_client.get(changelist("message"), {"kind__exact": "system"})
    deleted = admin_client.get(changelist("message"), {"deleted__exact": "1"})

    assert listed_ids(system) == {chat.created.pk}
    assert listed_ids(deleted) == {chat.lunch.pk}


def test_message_changelist_filters_by_conversation_link(admin_client: Client, chat: Chat):
    response = admin_client.get(
        changelist("message"), {"conversation__id__exact": str(chat.direct.pk)}
    )

    assert listed_ids(response) == {chat.hello.pk, chat.lunch.pk}


# --- moderation -------------------------------------------------------------------------


def test_moderation_action_asks_for_confirmation_first(admin_client: Client, chat: Chat):
    response = moderate(admin_client, [chat.hello.pk], confirm=False)

    assert response.status_code == 200
    assert "deleted for everyone" in response.content.decode()
    chat.hello.refresh_from_db()
    assert not chat.hello.deleted
    assert chat.hello.body == "hello bo"


def test_moderation_action_soft_deletes_through_the_service(admin_client: Client, chat: Chat):
    response = moderate(admin_client, [chat.hello.pk, chat.welcome.pk])

    assert response.status_code == 302
    for message in (chat.hello, chat.welcome):
        old_version = message.version
        message.refresh_from_db()  # the row is still there
        message.conversation.refresh_from_db()
        assert message.deleted
        assert message.body == ""
        assert message.version > old_version
        assert message.version == message.conversation.last_seq
    chat.lunch.refresh_from_db()
    assert not chat.lunch.deleted
    assert user_messages(response) == [("success", "Deleted 2 messages for everyone (moderation).")]


def test_moderation_is_logged_as_a_change_not_a_deletion(
    admin_client: Client, chat: Chat, admin_user: User
):
    moderate(admin_client, [chat.hello.pk])

    entries = LogEntry.objects.filter(object_id=str(chat.hello.pk))
    assert [(e.action_flag, e.user_id) for e in entries] == [(CHANGE, admin_user.pk)]
    assert not LogEntry.objects.filter(action_flag=DELETION).exists()


def test_moderation_action_reports_what_the_service_refuses(admin_client: Client, chat: Chat):
    chat.group.refresh_from_db()
    last_seq = chat.group.last_seq

    response = moderate(admin_client, [chat.created.pk])

    chat.created.refresh_from_db()
    chat.group.refresh_from_db()
    assert not chat.created.deleted
    assert chat.group.last_seq == last_seq
    assert user_messages(response) == [
        ("error", f"Not deleted (message {chat.created.pk}): System messages cannot be deleted.")
    ]


def test_moderating_a_deleted_message_changes_nothing(admin_client: Client, chat: Chat):
    moderate(admin_client, [chat.hello.pk])
    chat.hello.refresh_from_db()
    version = chat.hello.version

    response = moderate(admin_client, [chat.hello.pk, chat.lunch.pk])

    chat.hello.refresh_from_db()
    chat.lunch.refresh_from_db()
    chat.direct.refresh_from_db()
    assert chat.hello.version == version
    assert chat.lunch.version == version + 1 == chat.direct.last_seq
    # The first call's message is still queued (no page has shown it yet).
    assert user_messages(response)[-2:] == [
        ("success", "Deleted 1 message for everyone (moderation)."),
        ("info", "Skipped 1 message already deleted."),
    ]
    assert LogEntry.objects.filter(object_id=str(chat.hello.pk)).count() == 1


def test_delete_view_soft_deletes_and_broadcasts_the_update(
    admin_client: Client, chat: Chat, listener, django_capture_on_commit_callbacks
):
    listener.join(f"conv.{chat.direct.pk}")

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            reverse("admin:messaging_message_delete", args=[chat.lunch.pk]), {"post": "yes"}
        )

    assert response.status_code == 302
    assert response["Location"] == change("message", chat.lunch.pk)
    chat.lunch.refresh_from_db()
    chat.direct.refresh_from_db()
    assert chat.lunch.deleted
    assert chat.lunch.body == ""
    assert chat.lunch.version == chat.direct.last_seq
    event = listener.receive()["frame"]
    assert event["type"] == "message.updated"
    assert event["message"]["id"] == chat.lunch.pk
    assert event["message"]["deleted"] is True
    assert event["message"]["body"] == ""
    assert event["message"]["version"] == chat.direct.last_seq


def test_delete_view_confirmation_says_it_is_a_moderation_delete(admin_client: Client, chat: Chat):
    response = admin_client.get(reverse("admin:messaging_message_delete", args=[chat.lunch.pk]))

    assert response.status_code == 200
    assert "deleted for everyone" in response.content.decode()
    chat.lunch.refresh_from_db()
    assert not chat.lunch.deleted


def test_delete_view_refuses_system_and_deleted_messages(
    admin_client: Client, chat: Chat, admin_user: User
):
    services.moderate_delete_message(staff=admin_user, message_id=chat.hello.pk)

    for message in (chat.created, chat.hello):
        url = reverse("admin:messaging_message_delete", args=[message.pk])
        assert admin_client.post(url, {"post": "yes"}).status_code == 403
    assert Message.objects.filter(pk=chat.created.pk, deleted=False).exists()


def test_raw_delete_selected_action_is_not_offered(admin_client: Client, chat: Chat):
    page = admin_client.get(changelist("message"))
    choices = dict(page.context["action_form"].fields["action"].choices)

    response = admin_client.post(
        changelist("message"),
        {"action": "delete_selected", "_selected_action": [str(chat.hello.pk)], "post": "yes"},
    )

    assert "delete_selected" not in choices
    assert choices["moderate_delete_selected"] == "Delete selected messages (moderation)"
    assert user_messages(response) == [("warning", "No action selected.")]
    chat.hello.refresh_from_db()
    assert not chat.hello.deleted
    assert chat.hello.body == "hello bo"


def test_staff_without_delete_permission_cannot_moderate(
    client: Client, chat: Chat, make_user: Callable[..., User]
):
    viewer = make_user("viewer", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_message"))
    client.force_login(viewer)

    page = client.get(changelist("message"))
    refused = client.post(
        reverse("admin:messaging_message_delete", args=[chat.hello.pk]), {"post": "yes"}
    )
    moderate(client, [chat.hello.pk])

    assert page.status_code == 200
    assert page.context["action_form"] is None  # no action is offered at all
    assert refused.status_code == 403
    chat.hello.refresh_from_db()
    assert not chat.hello.deleted


def test_staff_with_delete_permission_can_moderate(
    client: Client, chat: Chat, make_user: Callable[..., User]
):
    moderator = make_user("moderator", is_staff=True)
    moderator.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_message", "delete_message"])
    )
    client.force_login(moderator)

    moderate(client, [chat.hello.pk])

    chat.hello.refresh_from_db()
    assert chat.hello.deleted


# --- what staff cannot do ----------------------------------------------------------------


@pytest.mark.parametrize("model", ["conversation", "membership", "message", "attachment", "device"])
def test_admin_cannot_add_log_rows_or_devices(admin_client: Client, model: str):
    response = admin_client.get(reverse(f"admin:messaging_{model}_add"))

    assert response.status_code == 403


def test_admin_cannot_edit_a_message(admin_client: Client, chat: Chat):
    response = admin_client.post(
        change("message", chat.hello.pk),
        {"body": "rewritten by staff", "conversation": chat.hello.conversation_id},
    )

    assert response.status_code == 403
    chat.hello.refresh_from_db()
    assert chat.hello.body == "hello bo"
    assert chat.hello.version == chat.hello.seq


def test_admin_cannot_rename_a_conversation(admin_client: Client, chat: Chat):
    response = admin_client.post(
        change("conversation", chat.group.pk), {"title": "Renamed", "kind": "group"}
    )

    assert response.status_code == 403
    chat.group.refresh_from_db()
    assert chat.group.title == "Garden club"


@pytest.mark.parametrize("model", ["conversation", "membership", "attachment"])
def test_admin_cannot_delete_log_rows(admin_client: Client, chat: Chat, model: str):
    obj = {
        "conversation": chat.group,
        "membership": Membership.objects.filter(conversation=chat.group).first(),
        "attachment": chat.attachment,
    }[model]
    assert obj is not None

    response = admin_client.post(
        reverse(f"admin:messaging_{model}_delete", args=[obj.pk]), {"post": "yes"}
    )

    assert response.status_code == 403
    assert type(obj).objects.filter(pk=obj.pk).exists()
    assert Message.objects.filter(conversation=chat.group).count() == 2


def test_admin_can_delete_a_device(admin_client: Client, chat: Chat):
    response = admin_client.post(
        reverse("admin:messaging_device_delete", args=[chat.device.pk]), {"post": "yes"}
    )

    assert response.status_code == 302
    assert not Device.objects.filter(pk=chat.device.pk).exists()


def test_message_bodies_are_shown_as_text(admin_client: Client, chat: Chat, ana: User):
    script = send(ana, chat.direct, "<script>alert(1)</script>")

    pages = [
        admin_client.get(changelist("message")),
        admin_client.get(change("message", script.pk)),
        moderate(admin_client, [script.pk], confirm=False),
    ]

    for page in pages:
        html = page.content.decode()
        assert "<script>alert(1)</script>" not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
