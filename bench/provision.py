"""Users, conversations and tokens for the scenarios, written through the project's services.

Runs in the harness process, with Django set up on the bench deployment's database and
Redis (`setup_django`). Call these only where no event loop runs in the thread (before
`asyncio.run`, or through `asyncio.to_thread`): the ORM is synchronous.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from bench.fleet import Account

PASSWORD = "bench-pw-1"  # noqa: S105 - throwaway users of a throwaway database


def setup_django(env: Mapping[str, str]) -> None:
    """Point this process's Django at the deployment (its settings read the environment)."""
    os.environ.update(env)
    os.environ["DJANGO_SETTINGS_MODULE"] = "chatsite.settings"
    import django

    django.setup()


def _analyze(*tables: str) -> None:
    """Refresh PostgreSQL's statistics of `tables` after a bulk write (ANALYZE).

    A running database's statistics follow its tables: autovacuum analyses a table about
    a minute after a tenth of it changed. The bench's database is seconds old when a
    scenario starts, and a table never analysed is planned as if nearly empty: the
    connect's conversation snapshot then hashed the whole user table on every connect
    (a millisecond per 2,000 users). As the PostgreSQL manual advises after loading
    data, the tables just filled are analysed, so the scenarios run on the plans a
    service in use has.
    """
    from django.db import connection

    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        for table in tables:
            cursor.execute(f"ANALYZE {connection.ops.quote_name(table)}")


def _analyze_conversations() -> None:
    from messaging.models import Conversation, Membership

    _analyze(Conversation._meta.db_table, Membership._meta.db_table)


def make_accounts(prefix: str, count: int) -> list[Account]:
    """Create `count` users named `<prefix>00000`... with one password hash; mint tokens.

    `bulk_create` with a hash computed once: hashing 20,000 passwords would take minutes
    and measures nothing the scenarios are about.
    """
    from django.contrib.auth.hashers import make_password
    from rest_framework_simplejwt.tokens import AccessToken

    from accounts.models import User

    password = make_password(PASSWORD)
    users = User.objects.bulk_create(
        [
            User(username=f"{prefix}{n:05d}", password=password, display_name=f"{prefix}{n:05d}")
            for n in range(count)
        ],
        batch_size=2000,
    )
    _analyze(User._meta.db_table)
    return [Account(user.pk, str(AccessToken.for_user(user))) for user in users]


def _users(accounts: Sequence[Account]) -> list[object]:
    from accounts.models import User

    found = User.objects.in_bulk([a.user_id for a in accounts])
    return [found[a.user_id] for a in accounts]


def direct_pairs(accounts: Sequence[Account]) -> list[int]:
    """Open a direct conversation between accounts 0-1, 2-3, ...; return their ids."""
    from accounts.models import User
    from messaging import services

    users = _users(accounts)
    ids = []
    for a, b in zip(users[0::2], users[1::2], strict=True):
        assert isinstance(a, User) and isinstance(b, User)
        conversation, _created = services.create_direct_conversation(user=a, other_user_id=b.pk)
        # The pairs know each other: not a message request, receipts flow both ways.
        services.accept_request(user=b, conversation_id=conversation.pk)
        ids.append(conversation.pk)
    _analyze_conversations()
    return ids


def direct_pairs_bulk(pairs: Sequence[tuple[Account, Account]]) -> list[int]:
    """Open a direct conversation for each pair at once; return their ids, in order.

    The rows `services.create_direct_conversation` writes (the conversation, keyed by
    its two users, and two memberships) in two bulk inserts, without the service's
    on-commit announcements, which only reach connected sockets; none are connected yet.
    Thousands of conversations take about a second instead of a minute.
    """
    from django.db import connection, transaction

    from messaging.models import Conversation, Membership

    rows = []
    for a, b in pairs:
        low, high = sorted((a.user_id, b.user_id))
        rows.append(
            Conversation(
                kind=Conversation.Kind.DIRECT, direct_key=f"{low}:{high}", created_by_id=a.user_id
            )
        )
    try:
        with transaction.atomic():
            made = Conversation.objects.bulk_create(rows, batch_size=2000)
            Membership.objects.bulk_create(
                [
                    Membership(conversation=c, user_id=account.user_id, role=Membership.Role.MEMBER)
                    for c, pair in zip(made, pairs, strict=True)
                    for account in pair
                ],
                batch_size=4000,
            )
        _analyze_conversations()
    finally:
        connection.close()
    return [c.pk for c in made]


def groups(accounts: Sequence[Account], size: int, title: str) -> list[int]:
    """Split `accounts` into groups of `size` (the first of each creates it); return ids."""
    from accounts.models import User
    from messaging import services

    users = _users(accounts)
    ids = []
    for start in range(0, len(users), size):
        members = users[start : start + size]
        creator = members[0]
        assert isinstance(creator, User)
        conversation = services.create_group(
            creator=creator,
            title=f"{title} {start // size + 1}",
            member_ids=[u.pk for u in members[1:] if isinstance(u, User)],
        )
        ids.append(conversation.pk)
    _analyze_conversations()
    return ids


def add_to_conversations(account: Account, conversation_ids: Sequence[int], actor: Account) -> None:
    """Add `account` to each conversation, `actor` (a member) adding it."""
    from accounts.models import User
    from messaging import services

    actor_user = User.objects.get(pk=actor.user_id)
    for conversation_id in conversation_ids:
        services.add_members(
            actor=actor_user, conversation_id=conversation_id, user_ids=[account.user_id]
        )
    _analyze_conversations()


def last_seqs(conversation_ids: Sequence[int]) -> dict[int, int]:
    """Return each conversation's last log number, as stored."""
    from django.db import connection

    from messaging.models import Conversation

    try:
        return dict(
            Conversation.objects.filter(pk__in=conversation_ids).values_list("pk", "last_seq")
        )
    finally:
        connection.close()


def message_count() -> int:
    """Return how many messages the database holds."""
    from django.db import connection

    from messaging.models import Message

    try:
        return Message.objects.count()
    finally:
        connection.close()
