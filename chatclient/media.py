"""Attachments for the reference client: files, and voice messages with their length.

`upload` stores a file and answers the attachment (`{id, content_type, duration_ms,
voice, ...}`); send it with `ChatClient.send(conversation, body, attachments=[id])`
(a voice message's body may be empty). The server types a file by its content; a voice
message must be audio and at most `max_voice_seconds` long (`GET /server/limits`).
"""

from __future__ import annotations

from typing import Any

from chatclient.rest import Token, _upload


async def upload(
    http_base: str,
    access_token: Token,
    content: bytes,
    filename: str,
    *,
    voice: bool = False,
    duration_ms: int | None = None,
) -> dict[str, Any]:
    """Upload a file (`voice`: a recorded voice message of `duration_ms`); return it."""
    fields = {"voice": "true" if voice else "false"}
    if duration_ms is not None:
        fields["duration_ms"] = str(int(duration_ms))
    return await _upload(
        http_base, access_token, "POST", "/api/v1/attachments", content, filename, fields
    )
