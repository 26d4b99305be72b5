"""Emoji reactions: what counts as one emoji, and the change of a message's reactions.

A message keeps its reactions as `[[emoji, [user id, ...]], ...]` (`Message.reactions`):
emoji in the order they were first used, each one's users in the order they reacted.
`services.react` changes them under the conversation lock; these functions are pure.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from typing import Any

# An emoji is one user-perceived character: at most this many code points (the longest
# family and flag sequences have 10; keep room) and this many UTF-8 bytes.
MAX_CODE_POINTS = 16
MAX_BYTES = 64

ZWJ = "\u200d"
KEYCAP = "\u20e3"
VARIATION_SELECTORS = {"\ufe0e", "\ufe0f"}


def _is_regional_indicator(char: str) -> bool:
    return 0x1F1E6 <= ord(char) <= 0x1F1FF


def _is_modifier(char: str) -> bool:
    """Return whether `char` may follow a pictograph: a skin tone or a tag character."""
    code = ord(char)
    return 0x1F3FB <= code <= 0x1F3FF or 0xE0020 <= code <= 0xE007F


def _is_one_picture(segment: str) -> bool:
    """Return whether a ZWJ-free segment draws one picture (a symbol, or a flag)."""
    chars = [c for c in segment if c not in VARIATION_SELECTORS]
    if not chars:
        return False
    if all(_is_regional_indicator(c) for c in chars):
        return len(chars) == 2
    return unicodedata.category(chars[0]) == "So" and all(_is_modifier(c) for c in chars[1:])


def is_emoji(text: str) -> bool:
    """Return whether `text` is one emoji: pictures joined by ZWJ, a flag, or a keycap.

    Letters, digits (outside a keycap like 1\ufe0f\u20e3), punctuation, spaces, controls
    and two emoji side by side are refused, so a reaction never carries words, markup or
    invisible text.
    """
    if not text or len(text) > MAX_CODE_POINTS or len(text.encode("utf-8")) > MAX_BYTES:
        return False
    if text.endswith(KEYCAP):  # keycaps: 0-9, # or *, an optional selector, U+20E3
        base = text[:-1].rstrip("\ufe0f")
        return len(base) == 1 and base in "0123456789#*"
    if text[0] in VARIATION_SELECTORS:
        return False
    return all(_is_one_picture(segment) for segment in text.split(ZWJ))


def changed(
    reactions: Sequence[Sequence[Any]], emoji: str, user_id: int, *, add: bool
) -> list[list[Any]] | None:
    """Return the reactions with `user_id`'s `emoji` added or removed; None if unchanged.

    Adding a reaction the user already made, or removing one they did not, changes
    nothing (None), so a retried request is harmless.
    """
    result: list[list[Any]] = [[str(e), [int(u) for u in users]] for e, users in reactions]
    for index, (used, users) in enumerate(result):
        if used != emoji:
            continue
        if add == (user_id in users):
            return None
        if add:
            users.append(user_id)
        else:
            users.remove(user_id)
            if not users:
                del result[index]
        return result
    if not add:
        return None
    result.append([emoji, [user_id]])
    return result
