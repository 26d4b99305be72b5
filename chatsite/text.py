"""The one rule for text that other people see as a name: display names, group titles.

A name is read by people who decide whom to trust from it, so it must show what it
holds: `clean_name` refuses characters that reorder or hide text (bidi controls,
zero-width and other invisible characters, control characters) and answers the
cleaned name. Emoji keep working: the joiner (U+200D), variation selectors and tag
characters are allowed where an emoji sequence needs them, after a symbol.

`mixed_scripts` says whether a name mixes letters of scripts that look alike
(`alice` spelled with a Cyrillic `a`, U+0430): such names are allowed (people do write that way) but
flagged to staff, who see them in the admin.

File names of attachments are cleaned, not refused (`messaging.attachments`), with
`is_hidden_character` from here.
"""

from __future__ import annotations

import unicodedata

from chatsite.errors import BadRequest

# Characters that change the order text is shown in.
BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)
# Characters that show nothing but are letters or symbols, not format characters:
# Hangul fillers, the braille blank, and the like. Names made of them look empty.
_BLANK_LOOKING = frozenset("\u115f\u1160\u3164\uffa0\u2800\u180e\u17b4\u17b5")
_ZWJ = "\u200d"
_ZWNJ = "\u200c"


def _selector(c: str) -> bool:
    """Variation selectors and the keycap: they pick how the character before looks."""
    return 0xFE00 <= ord(c) <= 0xFE0F or c == "\u20e3"


def _tag(c: str) -> bool:
    """Tag characters: they spell a subdivision flag after the black flag (U+1F3F4)."""
    return 0xE0020 <= ord(c) <= 0xE007F


def is_hidden_character(c: str, previous: str = "") -> bool:
    """Return whether `c` hides or reorders text (given the character before it)."""
    if c in BIDI_CONTROLS or c in _BLANK_LOOKING:
        return True
    if _selector(c):
        return not previous.strip()
    if c == _ZWNJ:
        # Persian and the scripts of India write words with it; in Latin it only hides.
        return _script(previous) in (None, "LATIN", "CYRILLIC", "GREEK")
    if c == _ZWJ or _tag(c):
        # Inside an emoji sequence (👩‍💻, ❤️‍🔥, a flag's tags) and nowhere else.
        return not previous or not (
            unicodedata.category(previous) in ("So", "Sk") or _selector(previous) or _tag(previous)
        )
    # Cc: control characters; Cf: format characters (zero-width space, soft hyphen,
    # word joiner, BOM...); Co/Cn/Cs: private use, unassigned, surrogates; Zl/Zp:
    # line and paragraph separators.
    return unicodedata.category(c) in ("Cc", "Cf", "Co", "Cn", "Cs", "Zl", "Zp")


def clean_name(value: str, *, field: str, max_length: int, required: bool = True) -> str:
    """Return `value` as a name (NFC, spaces collapsed), or raise BadRequest naming `field`.

    Refused: control, format and invisible characters, bidi controls, private-use and
    unassigned code points; more than `max_length` characters; nothing visible when
    `required`.
    """
    name = " ".join(unicodedata.normalize("NFC", value).split())
    previous = ""
    for c in name:
        if is_hidden_character(c, previous):
            raise BadRequest(
                f"{field} must not contain invisible or direction-changing characters "
                f"(U+{ord(c):04X}).",
                details={"field": field, "character": f"U+{ord(c):04X}"},
            )
        previous = c
    if len(name) > max_length:
        raise BadRequest(
            f"{field} is longer than {max_length} characters.",
            details={"field": field, "max_length": max_length},
        )
    if required and not name:
        raise BadRequest(f"{field} must not be empty.", details={"field": field})
    return name


# Scripts that East Asian writing mixes on purpose, with Latin too.
_CJK = frozenset({"CJK", "HIRAGANA", "KATAKANA", "KATAKANA-HIRAGANA", "HANGUL", "BOPOMOFO"})
# Letters that belong to no script of their own.
_NO_SCRIPT = frozenset({"MODIFIER", "COMBINING"})


def _script(c: str) -> str | None:
    """Return the script of a letter, from its Unicode name (None for non-letters)."""
    if not unicodedata.category(c).startswith("L"):
        return None
    name = unicodedata.name(c, "")
    word = name.split(" ", 1)[0]
    if word in ("FULLWIDTH", "HALFWIDTH"):
        return "LATIN" if "LATIN" in name else name.split(" ", 2)[1]
    return None if word in _NO_SCRIPT else (word or None)


def mixed_scripts(name: str) -> bool:
    """Return whether `name`'s letters come from scripts that are not usually mixed."""
    scripts = {s for s in map(_script, name) if s is not None}
    if len(scripts) <= 1:
        return False
    # Japanese, Chinese and Korean mix their scripts with each other and with Latin.
    return not scripts <= _CJK | {"LATIN"}
