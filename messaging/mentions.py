"""Mentions: an `@username` of a member in a message body.

A username may hold `@ . + - _`, so a mention is the longest run of those characters
and letters and digits after an `@` that does not follow a word character, matched
without regard to case against the conversation's members; a trailing `.`, `-` or `+`
(the end of a sentence) is tried without it as well. The web app highlights with the
same rule (`static/js/format.js`).
"""

from __future__ import annotations

import re

MENTION = re.compile(r"(?<![A-Za-z0-9_.+@-])@([A-Za-z0-9_.+@-]{1,150})")
# More candidates than this in one body are ignored: a body of 10,000 `@x` names no one.
MAX_CANDIDATES = 50


def mention_candidates(body: str) -> set[str]:
    """Return the lower-cased usernames `body` may mention (at most MAX_CANDIDATES)."""
    if "@" not in body:
        return set()
    found: set[str] = set()
    for match in MENTION.finditer(body):
        name = match.group(1).lower()
        found.add(name)
        trimmed = name.rstrip(".-+")
        if trimmed and trimmed != name:
            found.add(trimmed)
        if len(found) >= MAX_CANDIDATES:
            break
    return found
