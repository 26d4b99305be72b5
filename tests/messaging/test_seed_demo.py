"""`manage.py seed_demo`: demo users and conversations, created once however often it runs."""

from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from accounts.models import User
from messaging import services
from messaging.models import Conversation, Membership, Message

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _debug(settings) -> None:
    # The command refuses to run with DEBUG off (pytest-django turns it off).
    settings.DEBUG = True


def seed(*args: str) -> str:
    out = StringIO()
    call_command("seed_demo", *args, stdout=out)
    return out.getvalue()


def snapshot() -> dict[str, object]:
    return {
        "users": sorted(User.objects.values_list("username", flat=True)),
        "conversations": sorted(
            Conversation.objects.values_list("pk", "kind", "title", "last_seq")
        ),
        "memberships": sorted(Membership.objects.values_list("conversation_id", "user__username")),
        "messages": sorted(Message.objects.values_list("pk", "conversation_id", "seq", "body")),
    }


def test_seed_demo_creates_the_demo_users_and_admin():
    seed()

    users = {u.username: u for u in User.objects.all()}
    assert set(users) == {"ana", "bo", "cy", "dee", "admin"}
    assert [users[n].display_name for n in ("ana", "bo", "cy", "dee")] == ["Ana", "Bo", "Cy", "Dee"]
    assert all(users[n].check_password("demo-pass-2026") for n in ("ana", "bo", "cy", "dee"))
    assert not any(users[n].is_staff for n in ("ana", "bo", "cy", "dee"))
    assert users["admin"].is_superuser
    assert users["admin"].check_password("admin-pass-2026")


def test_seed_demo_creates_a_direct_chat_and_two_groups_with_messages():
    seed()

    direct = Conversation.objects.get(kind=Conversation.Kind.DIRECT)
    welcome = Conversation.objects.get(title="Welcome")
    private = Conversation.objects.get(kind=Conversation.Kind.GROUP, public=False)
    members = {
        c.pk: set(
            Membership.objects.filter(conversation=c).values_list("user__username", flat=True)
        )
        for c in (direct, welcome, private)
    }
    assert members[direct.pk] == {"ana", "bo"}
    assert members[welcome.pk] == {"ana", "bo", "cy", "dee"}
    assert welcome.public
    assert "dee" not in members[private.pk]
    for conversation in (direct, welcome, private):
        seqs = list(conversation.messages.order_by("seq").values_list("seq", flat=True))
        assert seqs == list(range(1, conversation.last_seq + 1))  # gap-free, via the services
        assert conversation.messages.filter(kind=Message.Kind.TEXT).count() >= 2


def test_seed_demo_twice_creates_nothing_new():
    seed()
    first = snapshot()

    output = seed()

    assert snapshot() == first
    assert "0 new messages" in output


def test_seed_demo_prints_the_logins_and_the_address():
    output = seed()

    assert "http://127.0.0.1:8000" in output
    for username in ("ana", "bo", "cy", "dee"):
        assert f"{username} " in output
    assert "demo-pass-2026" in output
    assert "admin" in output
    assert "admin-pass-2026" in output


def test_seed_demo_password_option_sets_the_demo_users_password():
    output = seed("--password", "another-pass-99")

    assert User.objects.get(username="cy").check_password("another-pass-99")
    assert "another-pass-99" in output


def test_seed_demo_leaves_existing_users_alone(make_user):
    make_user("ana", display_name="Ana Original")

    output = seed()

    ana = User.objects.get(username="ana")
    assert ana.display_name == "Ana Original"
    assert ana.check_password("pw-secret-1")
    assert not ana.check_password("demo-pass-2026")
    assert "left unchanged" in output
    assert "ana" in output.split("left unchanged")[1]


def test_seed_demo_finds_its_groups_by_exact_title():
    seed()
    ana, bo = User.objects.get(username="ana"), User.objects.get(username="bo")
    # A newer group of ana's whose title contains "Welcome" is not the demo group.
    services.create_group(creator=ana, title="Welcome back", member_ids=[bo.pk])
    before = snapshot()

    seed()

    assert snapshot() == before
    assert Conversation.objects.filter(title="Welcome").count() == 1


def test_seed_demo_refuses_to_run_with_debug_off(settings):
    settings.DEBUG = False

    with pytest.raises(CommandError, match="DJANGO_DEBUG=1"):
        seed()

    assert not User.objects.exists()


def test_seed_demo_runs_with_debug_off_when_forced(settings):
    settings.DEBUG = False

    seed("--force")

    assert User.objects.filter(username="admin", is_superuser=True).exists()
