"""Account reads: the user directory."""

from __future__ import annotations

from django.db.models import Q

from accounts.models import User
from chatsite.errors import BadRequest

MAX_QUERY_LENGTH = 100


def list_users(*, query: str = "", after: str | None = None, limit: int = 50) -> list[User]:
    """Return up to `limit` active users matching `query` (username or display name), by username.

    `after` is the username the previous page ended with (keyset pagination).
    """
    query = query.strip()
    if len(query) > MAX_QUERY_LENGTH:
        raise BadRequest(f"q is longer than {MAX_QUERY_LENGTH} characters.", details={"field": "q"})
    users = User.objects.filter(is_active=True)
    if query:
        users = users.filter(Q(username__icontains=query) | Q(display_name__icontains=query))
    if after is not None:
        users = users.filter(username__gt=after)
    return list(users.order_by("username")[:limit])
