"""Managing a group over REST, standard library only: settings, members and roles.

A group's owner and admins rename it (`title`), describe it (`description`), choose who
may send (`post_policy`: `everyone`, or `admins` for an announcement group), set or
remove its picture, add and remove members, and make members admins or dismiss them.
Each change is a system message in the conversation's log, so every device converges;
the member whose role changed also gets `conversation.updated` (`role`) with their view,
and every member `conversation.updated` (`settings`) with the group's new settings
(`ChatClient.conversation(conversation_id)` holds the latest).

A plain member sending to an admins-only group gets the error `admins_only` (403).
"""

from __future__ import annotations

from typing import Any, Literal

from chatclient.rest import Token, _call, _upload

PostPolicy = Literal["everyone", "admins"]
Role = Literal["admin", "member"]


async def update_group(
    http_base: str,
    access_token: Token,
    conversation_id: int,
    *,
    title: str | None = None,
    description: str | None = None,
    post_policy: PostPolicy | None = None,
) -> dict[str, Any]:
    """Change a group's settings (all of those given, or none); return the conversation."""
    body: dict[str, Any] = {}
    if title is not None:
        body["title"] = title
    if description is not None:
        body["description"] = description
    if post_policy is not None:
        body["post_policy"] = post_policy
    path = f"/api/v1/conversations/{int(conversation_id)}"
    return await _call(http_base, access_token, "PATCH", path, body)


async def set_role(
    http_base: str, access_token: Token, conversation_id: int, user_id: int, role: Role
) -> dict[str, Any]:
    """Make a member an admin (`admin`) or dismiss an admin (`member`); return the group."""
    path = f"/api/v1/conversations/{int(conversation_id)}/members/{int(user_id)}"
    return await _call(http_base, access_token, "PATCH", path, {"role": role})


async def add_members(
    http_base: str, access_token: Token, conversation_id: int, user_ids: list[int]
) -> dict[str, Any]:
    """Add people to a group; return the conversation with its members."""
    path = f"/api/v1/conversations/{int(conversation_id)}/members"
    return await _call(http_base, access_token, "POST", path, {"users": [int(u) for u in user_ids]})


async def remove_member(
    http_base: str, access_token: Token, conversation_id: int, user_id: int
) -> None:
    """Remove a member (your own id: leave the group)."""
    path = f"/api/v1/conversations/{int(conversation_id)}/members/{int(user_id)}"
    await _call(http_base, access_token, "DELETE", path)


async def set_picture(
    http_base: str,
    access_token: Token,
    conversation_id: int,
    image: bytes,
    filename: str = "picture.png",
) -> dict[str, Any]:
    """Upload a group picture (its centred square is kept); return the conversation."""
    path = f"/api/v1/conversations/{int(conversation_id)}/picture"
    return await _upload(http_base, access_token, "PUT", path, image, filename)


async def remove_picture(
    http_base: str, access_token: Token, conversation_id: int
) -> dict[str, Any]:
    """Remove a group's picture; return the conversation."""
    path = f"/api/v1/conversations/{int(conversation_id)}/picture"
    return await _call(http_base, access_token, "DELETE", path)
