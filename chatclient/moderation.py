"""Blocking, reports and delete for me over REST, standard library only.

`block`/`unblock` a person, `report` a message to staff, `hide` a message on all of your
own devices (delete for me) and `hidden_since` to catch up with what your other devices
hid. `ChatClient` keeps the ids it hears live (`message.hidden`) in `hidden`; a device
that was offline asks `hidden_since(cursor)` after it connects.
"""

from __future__ import annotations

from typing import Any, Literal

from chatclient.rest import Token, _call

ReportReason = Literal["spam", "abuse", "illegal", "other"]


async def block(http_base: str, access_token: Token, user_id: int) -> dict[str, Any]:
    """Block a person (idempotent); return `{user, created_at}`."""
    return await _call(http_base, access_token, "PUT", f"/api/v1/users/{int(user_id)}/block")


async def unblock(http_base: str, access_token: Token, user_id: int) -> None:
    """Unblock a person (nothing happens if they were not blocked)."""
    await _call(http_base, access_token, "DELETE", f"/api/v1/users/{int(user_id)}/block")


async def list_blocks(http_base: str, access_token: Token) -> list[dict[str, Any]]:
    """Return the people you blocked, newest first."""
    answer = await _call(http_base, access_token, "GET", "/api/v1/blocks")
    return list(answer["results"])


async def report(
    http_base: str,
    access_token: Token,
    conversation_id: int,
    message_id: int,
    reason: ReportReason,
    details: str = "",
) -> dict[str, Any]:
    """Report a message to staff; return the report (the first one if you reported it)."""
    path = f"/api/v1/conversations/{int(conversation_id)}/messages/{int(message_id)}/report"
    body = {"reason": reason, "details": details}
    return await _call(http_base, access_token, "POST", path, body)


async def hide(
    http_base: str, access_token: Token, conversation_id: int, message_id: int
) -> dict[str, Any]:
    """Delete a message for yourself (all your devices); return `{id, conversation, message}`."""
    path = f"/api/v1/conversations/{int(conversation_id)}/messages/{int(message_id)}/hide"
    return await _call(http_base, access_token, "POST", path)


async def hidden_since(
    http_base: str, access_token: Token, cursor: int = 0
) -> tuple[list[dict[str, Any]], int]:
    """Return every message you hid after `cursor` (all pages) and the new cursor."""
    found: list[dict[str, Any]] = []
    while True:
        page = await _call(
            http_base, access_token, "GET", f"/api/v1/hidden-messages?after={int(cursor)}"
        )
        found.extend(page["results"])
        cursor = int(page["cursor"])
        if not page["has_more"]:
            return found, cursor
