"""Check frames against the wire definitions (`messaging.wire.FRAMES`), as Zulip's tests do.

Every event a test takes from the channel layer or a socket goes through `check_frame`:
a frame whose shape drifts from its definition (a field missing, added, or of another
type) fails the test that saw it.
"""

from __future__ import annotations

import functools
from typing import Any

from jsonschema import Draft202012Validator

from messaging import asyncapi, wire


@functools.cache
def _validator(kind: str) -> Draft202012Validator:
    return Draft202012Validator(asyncapi.frame_schema(kind))


def check_frame(frame: Any) -> dict[str, Any]:
    """Return `frame` if it matches the definition of its `type`, else fail."""
    assert isinstance(frame, dict), f"a frame must be an object: {frame!r}"
    kind = frame.get("type")
    assert kind in wire.FRAMES, f"no definition for frame type {kind!r}"
    errors = sorted(_validator(kind).iter_errors(frame), key=lambda e: list(e.path))
    assert not errors, f"{kind} does not match its definition: " + "; ".join(
        f"{'/'.join(map(str, e.path)) or '(frame)'}: {e.message}" for e in errors
    )
    return frame


def check_event(event: dict[str, Any]) -> dict[str, Any]:
    """Check a channel-layer event's frame (`conv.event`, `user.event`, `presence.event`)."""
    if event.get("type") in ("conv.event", "user.event", "presence.event", "own.event"):
        check_frame(event["frame"])
    if event.get("type") == "block.event" and event["frame"] is not None:
        check_frame(event["frame"])
    return event
