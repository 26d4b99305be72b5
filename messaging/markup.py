"""Message formatting as plain text, for what cannot show it: pushes and emails.

The web app renders a small Markdown subset (`static/js/markup.js`): ``` code blocks,
"> " quotes, "- " / "1. " lists, `code`, *bold* / **bold**, _italic_, ~strike~ /
~~strike~~. A notification's preview is plain text, so `plain_text` takes the markers
away with the same rules: a marker opens after a space or punctuation and before a
non-space, and closes after a non-space, on the same line.
"""

from __future__ import annotations

import re

# Only the start of a body is ever previewed: bound the work on the longest one.
SCANNED_CHARS = 2_000
_DEPTH = 3

# A fenced block: its text (group 1) is kept as it is, the fences go.
_CODE_BLOCK = re.compile(r"^```[^\n]*\n(.*?)^```[ \t]*$\n?", re.MULTILINE | re.DOTALL)
_QUOTE = re.compile(r"^> ?", re.MULTILINE)
_BULLET = re.compile(r"^[-*•] +", re.MULTILINE)
_CODE = re.compile(r"`([^`\n]+)`")
_EMPHASIS = re.compile(r"(?<![^\s\W_])(\*\*|~~|\*|_|~)(?![\s*_~])([^\n]*?[^\s*_~])\1(?![^\s\W_])")


def plain_text(body: str) -> str:
    """Return the start of `body` without formatting markers (the text stays)."""
    blocks = _CODE_BLOCK.split(body[:SCANNED_CHARS])
    for index in range(0, len(blocks), 2):  # outside code blocks only
        blocks[index] = _inline(_BULLET.sub("", _QUOTE.sub("", blocks[index])))
    return "".join(blocks)


def _inline(text: str) -> str:
    parts = _CODE.split(text)
    for index in range(0, len(parts), 2):  # outside code spans only
        for _ in range(_DEPTH):
            stripped = _EMPHASIS.sub(r"\2", parts[index])
            if stripped == parts[index]:
                break
            parts[index] = stripped
    return "".join(parts)
