"""REST: `GET /api/v1/presence?users=1,2,3`, the same view as `presence.subscribe` gives."""

from __future__ import annotations

import time

from asgiref.sync import async_to_sync
from django.conf import settings
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from chatsite.errors import BadRequest
from messaging import wire
from messaging.selectors import filter_visible_users
from presence import services
from presence.store import open_store


def parse_user_ids(raw: str) -> list[int]:
    """Return the distinct ids of a comma-separated list, or raise BadRequest."""
    limit = settings.PRESENCE_MAX_SUBSCRIPTIONS
    parts = [p.strip() for p in raw.split(",") if p.strip()]
    if not parts or any(not p.isdigit() or len(p) > 18 for p in parts):
        raise BadRequest(
            "users must be a comma-separated list of user ids.", details={"field": "users"}
        )
    ids = list(dict.fromkeys(int(p) for p in parts))
    if len(ids) > limit:
        raise BadRequest(
            f"Ask for at most {limit} users.", details={"field": "users", "max": limit}
        )
    return ids


async def _snapshot(user_ids: list[int]) -> list[wire.PresenceEntry]:
    async with open_store() as store:
        return await services.snapshot(store, user_ids, now=time.time())


class PresenceListApi(APIView):
    """Presence of the given users; users who share no conversation with you read offline."""

    def get(self, request: Request) -> Response:
        """Answer `{users: [{id, state, last_seen}]}` in the order asked."""
        ids = parse_user_ids(request.query_params.get("users", ""))
        visible = filter_visible_users(user=request.user, user_ids=ids)  # type: ignore[arg-type]
        shown = {
            entry["id"]: entry
            for entry in async_to_sync(_snapshot)([u for u in ids if u in visible])
        }
        return Response({"users": [shown.get(u) or services.hidden_entry(u) for u in ids]})
