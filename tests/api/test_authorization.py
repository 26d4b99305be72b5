"""The authorization matrix (RELIABILITY.md S4): member, non-member, removed member, anonymous.

A non-member and a removed member get exactly the answer of a conversation that does
not exist (status and body), no data, and cause no event.
"""

import uuid
from collections.abc import Callable
from typing import Any

import pytest

from accounts.models import User
from messaging import services
from tests.api.conftest import Client, send

pytestmark = pytest.mark.django_db

MISSING = 10**12

# (name, method, path, body); {c} is the conversation, {m} the actor's own message
# (or, for outsiders, a message of the group), {u} the actor.
ENDPOINTS: list[tuple[str, str, str, Callable[[dict[str, Any]], dict[str, Any]] | None]] = [
    ("detail", "get", "/api/v1/conversations/{c}", None),
    ("mute", "patch", "/api/v1/conversations/{c}", lambda w: {"muted": True}),
    ("rename", "patch", "/api/v1/conversations/{c}", lambda w: {"title": "Taken over"}),
    ("join", "post", "/api/v1/conversations/{c}/members", lambda w: {}),
    ("add", "post", "/api/v1/conversations/{c}/members", lambda w: {"users": [w["cy"].pk]}),
    ("leave", "delete", "/api/v1/conversations/{c}/members/{u}", None),
    ("fetch", "get", "/api/v1/conversations/{c}/messages?after=0", None),
    ("scrollback", "get", "/api/v1/conversations/{c}/messages?before=100", None),
    (
        "send",
        "post",
        "/api/v1/conversations/{c}/messages",
        lambda w: {"client_msg_id": str(uuid.uuid4()), "body": "let me in"},
    ),
    ("edit", "patch", "/api/v1/conversations/{c}/messages/{m}", lambda w: {"body": "edited"}),
    ("delete", "delete", "/api/v1/conversations/{c}/messages/{m}", None),
    ("read", "post", "/api/v1/conversations/{c}/read", lambda w: {"seq": 1}),
]
IDS = [e[0] for e in ENDPOINTS]


@pytest.fixture
def world(ana: User, bo: User, cy: User, make_user: Callable[..., User]) -> dict[str, Any]:
    """A private group of Ana and Bo with a secret; Dan was in it and was removed; Cy never."""
    dan = make_user("dan")
    group = services.create_group(creator=ana, title="Secret plans", member_ids=[bo.pk, dan.pk])
    secret = send(ana, group, "the secret is 42")
    bos = send(bo, group, "bo says hi")
    dans = send(dan, group, "dan was here")
    services.remove_member(actor=ana, conversation_id=group.pk, user_id=dan.pk)
    return {"group": group, "secret": secret, "bos": bos, "dans": dans, "dan": dan, "cy": cy}


def call(
    client: Any,
    method: str,
    path: str,
    body: Callable[[dict[str, Any]], dict[str, Any]] | None,
    world: dict[str, Any],
) -> Any:
    kwargs: dict[str, Any] = {"format": "json"}
    if body is not None:
        kwargs["data"] = body(world)
    return getattr(client, method)(path, **kwargs)


def fill(path: str, conversation: int, message: int, user: int) -> str:
    return path.format(c=conversation, m=message, u=user)


@pytest.mark.parametrize(("name", "method", "path", "body"), ENDPOINTS, ids=IDS)
@pytest.mark.parametrize("who", ["non-member", "removed member"])
def test_outsiders_get_the_answer_of_a_missing_conversation(
    client_for: Client,
    world: dict[str, Any],
    who: str,
    name: str,
    method: str,
    path: str,
    body: Callable[[dict[str, Any]], dict[str, Any]] | None,
    django_capture_on_commit_callbacks: Any,
) -> None:
    actor = world["cy"] if who == "non-member" else world["dan"]
    message = world["dans"] if who == "removed member" else world["secret"]
    client = client_for(actor)

    with django_capture_on_commit_callbacks() as callbacks:
        real = call(
            client, method, fill(path, world["group"].pk, message.pk, actor.pk), body, world
        )
    missing = call(client, method, fill(path, MISSING, message.pk, actor.pk), body, world)

    assert real.status_code == 403
    assert (
        real.json()
        == missing.json()
        == {"error": {"code": "forbidden", "message": "You are not a member of this conversation."}}
    )
    assert callbacks == []
    assert b"secret" not in real.content.lower()


@pytest.mark.parametrize(("name", "method", "path", "body"), ENDPOINTS, ids=IDS)
def test_anonymous_gets_401(
    client_for: Client,
    world: dict[str, Any],
    name: str,
    method: str,
    path: str,
    body: Callable[[dict[str, Any]], dict[str, Any]] | None,
) -> None:
    response = call(
        client_for(), method, fill(path, world["group"].pk, world["secret"].pk, 1), body, world
    )

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthenticated"


MEMBER_EXPECTED = {
    "detail": 200,
    "mute": 200,
    "rename": 403,  # a member, but not an admin
    "join": 200,  # already a member: nothing to do
    "add": 403,  # a member, but not an admin
    "leave": 204,
    "fetch": 200,
    "scrollback": 200,
    "send": 201,
    "edit": 200,
    "delete": 200,
    "read": 200,
}


@pytest.mark.parametrize(("name", "method", "path", "body"), ENDPOINTS, ids=IDS)
def test_members_are_served_and_refused_only_for_their_role(
    client_for: Client,
    world: dict[str, Any],
    bo: User,
    name: str,
    method: str,
    path: str,
    body: Callable[[dict[str, Any]], dict[str, Any]] | None,
) -> None:
    response = call(
        client_for(bo), method, fill(path, world["group"].pk, world["bos"].pk, bo.pk), body, world
    )

    assert response.status_code == MEMBER_EXPECTED[name]
    if response.status_code == 403:
        assert response.json()["error"]["message"] != "You are not a member of this conversation."


def test_removed_member_no_longer_sees_the_conversation_listed(
    client_for: Client, world: dict[str, Any]
) -> None:
    listed = client_for(world["dan"]).get("/api/v1/conversations").json()

    assert listed == {"results": [], "next": None}


def test_conversation_ids_past_the_bigint_range_are_missing_ones(
    client_for: Client, bo: User, world: dict[str, Any]
) -> None:
    huge = client_for(bo).get(f"/api/v1/conversations/{10**30}")
    missing = client_for(bo).get(f"/api/v1/conversations/{MISSING}")

    assert huge.status_code == missing.status_code == 403
    assert huge.json() == missing.json()


def test_unknown_api_urls_answer_json_404(client_for: Client, bo: User) -> None:
    response = client_for(bo).get("/api/v1/nowhere")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
