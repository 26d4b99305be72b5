"""A frame the channel layer hands to many sockets of a gateway is encoded once."""

from __future__ import annotations

import json

from chatsite.gateway import socket


def test_one_frame_object_is_encoded_once_and_the_cache_stays_bounded() -> None:
    """Tried: the same event dict sent to many sockets gets the very same text back
    (encoded once); an equal but distinct dict is encoded again (identity, not equality,
    so a frame built per socket is never confused with another); 300 distinct frames
    leave at most 256 remembered."""
    frame = {"type": "message.created", "message": {"id": 1, "body": "héllo"}}
    first = socket.encode_shared(frame)
    assert json.loads(first) == frame and "héllo" in first
    assert all(socket.encode_shared(frame) is first for _ in range(1000))

    twin = json.loads(first)
    again = socket.encode_shared(twin)
    assert again == first and again is not first

    for n in range(300):
        socket.encode_shared({"type": "typing", "n": n})
    assert len(socket._SHARED) <= socket._SHARED_SIZE == 256
    assert socket.encode_shared({"type": "typing", "n": 299}) == '{"type":"typing","n":299}'


def test_a_frame_is_the_text_the_json_module_gives() -> None:
    """Tried: frames with non-ASCII text (kept as is, not escaped), emoji, the line
    separators JavaScript once refused, `</script>`, integer keys (made strings), tuples,
    nested None/True/False, floats and 64-bit integers: each is the very text of
    `json.dumps(frame, ensure_ascii=False, separators=(",", ":"))`, as before orjson."""
    frames = [
        {"type": "pong", "ref": "r1", "server_time": "2026-12-07T04:55:00.123456Z", "log": 9},
        {"type": "message.created", "message": {"body": "héllo ✓ 😀 \u2028\u2029 </script>"}},
        {"type": "receipt.updated", "members": {12: {"read": 3}, 7: {"read": None}}},
        {"type": "x", "list": (1, 2, [True, False, None]), "retry_after": 0.25, "n": 2**63 - 1},
        {"type": "error", "message": 'quote " and backslash \\ and tab \t and nul \x00'},
    ]
    for frame in frames:
        assert socket.encode(frame) == json.dumps(frame, ensure_ascii=False, separators=(",", ":"))
