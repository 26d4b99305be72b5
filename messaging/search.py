"""Search over the messages a user may read: PostgreSQL full text plus trigrams, SQLite LIKE.

On PostgreSQL, `messaging_message.search_vector` is a generated column
(`to_tsvector('simple', body)`, migration 0003) that the model does not declare, so
ordinary message reads never carry it. Hits come in two tiers, each served by its own
GIN index:

1. word matches: every query word is a word of the message or the start of one
   (`confer` finds "conference"), ranked by `ts_rank` (a whole word counts twice as
   much as a prefix), newest first on ties;
2. approximate matches, once the word matches are exhausted: messages that contain the
   query approximately (`pg_trgm` word similarity: "ference", "conferense"), by
   similarity.

3. archived matches, once both are exhausted: messages moved to the archive
   (`messaging.archive`) that hold every query word as a substring, newest first,
   found by reading the newest `ARCHIVE_SEARCH_SEGMENTS` segments of the conversations
   searched (the archive has no index: it is history that is rarely searched).

A word match always outranks an approximate one, and keeping the tiers apart lets each
query use its index (an OR of the two makes PostgreSQL compute the similarity of every
message). Only text messages, not deleted, in conversations the user belongs to, from
their `visible_from_seq` on. Elsewhere (the embedded SQLite) every word must occur as a
substring, newest first.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

from django.conf import settings
from django.contrib.postgres.search import (
    SearchHeadline,
    SearchQuery,
    SearchRank,
    SearchVectorField,
)
from django.db import connection, transaction
from django.db.models import Exists, F, FloatField, OuterRef, QuerySet, Value
from django.db.models.expressions import RawSQL
from django.db.models.functions import Replace

from accounts.models import User
from chatsite.errors import BadRequest
from messaging import archive, selectors
from messaging.models import ArchiveSegment, HiddenMessage, Membership, Message

MAX_TERMS = 8
WORDS, APPROXIMATE, ARCHIVED = 1, 2, 3
# Query words shorter than this match whole words only (a one-letter prefix matches
# half the dictionary).
_MIN_PREFIX = 2
# Trigram matching needs at least one full trigram to mean anything.
_MIN_TRIGRAM_QUERY = 3
_WORD = re.compile(r"\w+")
# Headline delimiters: control characters, stripped from bodies before highlighting,
# turned into <mark> after escaping, so the snippet carries no other markup.
_START, _STOP = "\x02", "\x03"
_SNIPPET_CHARS = 160


@dataclass(frozen=True)
class SearchHit:
    """A message that matched, its snippet (escaped HTML with <mark>), and its rank."""

    message: Message
    snippet: str
    rank: float


@dataclass(frozen=True)
class Position:
    """Where a page starts: the tier (word or approximate matches) and the offset in it."""

    tier: int = WORDS
    offset: int = 0


@dataclass(frozen=True)
class SearchPage:
    """A page of hits, best first, and where the next page starts (None at the end)."""

    hits: list[SearchHit]
    next: Position | None


def _clean_query(query: str) -> tuple[str, list[str]]:
    if not query.strip():
        raise BadRequest("q must name something to find.", details={"field": "q"})
    text = " ".join(query.split())
    if len(text) > settings.CHAT_SEARCH_MAX_QUERY_LENGTH or "\x00" in text:
        raise BadRequest(
            f"q must be at most {settings.CHAT_SEARCH_MAX_QUERY_LENGTH} characters.",
            details={"field": "q"},
        )
    terms = list(dict.fromkeys(w.lower() for w in _WORD.findall(text)))[:MAX_TERMS]
    return text, terms


def _readable_messages(user: User, conversation_id: int | None) -> QuerySet[Message]:
    """Return the text messages `user` may read (member, from `visible_from_seq` on, not hidden)."""
    may_read = Membership.objects.filter(
        conversation_id=OuterRef("conversation_id"),
        user=user,
        visible_from_seq__lte=OuterRef("seq"),
    )
    hidden = HiddenMessage.objects.filter(user=user, message_id=OuterRef("pk"))
    messages = (
        Message.objects.filter(kind=Message.Kind.TEXT, deleted=False)
        .filter(Exists(may_read))
        .exclude(Exists(hidden))  # deleted for me
    )
    if conversation_id is not None:
        messages = messages.filter(conversation_id=conversation_id)
    return messages


def _tsquery(terms: list[str]) -> SearchQuery | None:
    """Return an AND of the words, each as `('w' | 'w':*)`: a whole word ranks higher."""
    if not terms:
        return None
    # Words from \w+ hold no quotes or operators; quoting makes each one lexeme.
    parts = [f"('{t}' | '{t}':*)" if len(t) >= _MIN_PREFIX else f"'{t}'" for t in terms]
    return SearchQuery(" & ".join(parts), search_type="raw", config="simple")


def search_messages_for_user(
    *,
    user: User,
    query: str,
    conversation_id: int | None = None,
    position: Position | None = None,
    limit: int | None = None,
) -> SearchPage:
    """Return a page of the messages `user` may read that match `query`, best first."""
    text, terms = _clean_query(query)
    start = position or Position()
    size = int(limit or settings.CHAT_SEARCH_PAGE_SIZE)
    cap = int(settings.CHAT_SEARCH_MAX_RESULTS)
    if start.tier not in (WORDS, APPROXIMATE, ARCHIVED) or not 0 <= start.offset < cap:
        return SearchPage([], None)
    size = min(size, cap - start.offset)
    words = terms or [text.lower()]
    if start.tier == ARCHIVED:
        found = _search_archive(user, conversation_id, words, start.offset, size + 1)
        more = len(found) > size and start.offset + size < cap
        return SearchPage(found[:size], Position(ARCHIVED, start.offset + size) if more else None)
    readable = _readable_messages(user, conversation_id)
    if connection.vendor != "postgresql":
        hits = _search_fallback(readable, text, terms, start.offset, size + 1)
        more = len(hits) > size and start.offset + size < cap
        page = SearchPage(hits[:size], Position(WORDS, start.offset + size) if more else None)
    else:
        with transaction.atomic():
            with connection.cursor() as cursor:
                # Bounded: a pathological query is cut off (`unavailable`), not left running.
                cursor.execute(
                    "SELECT set_config('statement_timeout', %s, true)",
                    [str(int(settings.CHAT_SEARCH_TIMEOUT_MS))],
                )
            page = _search_postgresql(readable, text, terms, start, size)
    room = size - len(page.hits)
    if page.next is not None or room <= 0:
        return page
    # The table's matches are exhausted: the archive's follow.
    found = _search_archive(user, conversation_id, words, 0, room + 1)
    following = Position(ARCHIVED, room) if len(found) > room else None
    return SearchPage(page.hits + found[:room], following)


def _search_archive(
    user: User, conversation_id: int | None, words: list[str], offset: int, count: int
) -> list[SearchHit]:
    """Return archived text messages holding every word, newest first (`ARCHIVED` tier)."""
    memberships = Membership.objects.filter(user=user)
    if conversation_id is not None:
        memberships = memberships.filter(conversation_id=conversation_id)
    # One query when nothing the user reads is archived (the usual case).
    segments = list(
        ArchiveSegment.objects.filter(
            conversation_id__in=memberships.values("conversation_id")
        ).order_by("-newest_at", "-pk")[: settings.ARCHIVE_SEARCH_SEGMENTS]
    )
    if not segments:
        return []
    floors = dict(
        memberships.filter(conversation_id__in={s.conversation_id for s in segments}).values_list(
            "conversation_id", "visible_from_seq"
        )
    )
    hidden = set(
        HiddenMessage.objects.filter(
            user=user, conversation_id__in={s.conversation_id for s in segments}
        ).values_list("message_id", flat=True)
    )
    matches: list[Message] = []
    wanted = offset + count
    for segment in segments:
        window = archive.Window(segment.conversation_id, floors[segment.conversation_id])
        for row in reversed(archive.segment_rows(segment)):
            if (
                row["kind"] != Message.Kind.TEXT
                or row["deleted"]
                or row["id"] in hidden
                or not window.shows(row)
            ):
                continue
            body = row["body"].lower()
            if all(word in body for word in words):
                matches.append(archive.message_of(segment.conversation_id, row))
                if len(matches) >= wanted:
                    break
        if len(matches) >= wanted:
            break
    page = matches[offset:wanted]
    archive.attach(page)
    selectors.load_for_payload(page)
    return [SearchHit(m, _snippet(m.body, words), 0.0) for m in page]


def _search_postgresql(
    readable: QuerySet[Message], text: str, terms: list[str], start: Position, size: int
) -> SearchPage:
    tsquery = _tsquery(terms)
    fuzzy = len(text) >= _MIN_TRIGRAM_QUERY
    table = Message._meta.db_table
    document = RawSQL(f'"{table}"."search_vector"', [], output_field=SearchVectorField())  # noqa: S611 - our own column name
    words = readable.alias(document=document)
    ranked: list[tuple[int, int, float]] = []
    tier, offset = start.tier, start.offset
    if tier == WORDS:
        if tsquery is not None:
            page = list(
                words.filter(document=tsquery)
                .annotate(rank=SearchRank(document, tsquery))
                .order_by("-rank", "-pk")
                .values_list("pk", "conversation_id", "rank")[offset : offset + size + 1]
            )
            if len(page) > size:
                hits = _hits(page[:size], tsquery, terms, text)
                return SearchPage(hits, Position(WORDS, offset + size))
            ranked = page
        tier, offset = APPROXIMATE, 0
    following: Position | None = None
    if fuzzy:
        approximate = words.filter(body__trigram_word_similar=text)
        if tsquery is not None:
            # Word matches were the first tier; do not list them twice.
            approximate = approximate.exclude(document=tsquery)
        room = size - len(ranked)
        page = list(
            approximate.annotate(rank=_word_similarity(text))
            .order_by("-rank", "-pk")
            .values_list("pk", "conversation_id", "rank")[offset : offset + room + 1]
        )
        if len(page) > room:
            following = Position(APPROXIMATE, offset + room)
        ranked += page[:room]
    return SearchPage(_hits(ranked, tsquery, terms, text), following)


def _hits(
    ranked: list[tuple[int, int, float]],
    tsquery: SearchQuery | None,
    terms: list[str],
    text: str,
) -> list[SearchHit]:
    """Load the ranked messages (with attachments) and their snippets, in rank order."""
    if not ranked:
        return []
    # By conversation too: on the partitioned table it picks the partitions and the key.
    messages = Message.objects.filter(
        conversation_id__in={conversation for _, conversation, _ in ranked},
        pk__in=[pk for pk, _, _ in ranked],
    )
    by_id = {m.pk: m for m in _with_headlines(messages, tsquery)}
    selectors.load_for_payload(list(by_id.values()))
    hits = []
    for pk, _, score in ranked:
        message = by_id[pk]
        headline = getattr(message, "headline", None)
        if headline and _START in headline:
            snippet = html.escape(headline).replace(_START, "<mark>").replace(_STOP, "</mark>")
        else:
            snippet = _snippet(message.body, terms or [text.lower()])
        hits.append(SearchHit(message, snippet, float(score)))
    return hits


def _word_similarity(text: str) -> RawSQL:
    """Return `word_similarity(text, body)`: how well `text` matches part of the body."""
    table = Message._meta.db_table
    return RawSQL(  # noqa: S611 - the text is a parameter; the names are our own
        f'word_similarity(%s, "{table}"."body")',
        [text],
        output_field=FloatField(),
    )


def _with_headlines(messages: QuerySet[Message], tsquery: SearchQuery | None) -> QuerySet[Message]:
    if tsquery is None:
        return messages
    clean_body = Replace(Replace(F("body"), Value(_START), Value("")), Value(_STOP), Value(""))
    return messages.annotate(
        headline=SearchHeadline(
            clean_body,
            tsquery,
            config="simple",
            start_sel=_START,
            stop_sel=_STOP,
            max_words=30,
            min_words=12,
            short_word="1",
            max_fragments=2,
            fragment_delimiter=" … ",
        )
    )


def _search_fallback(
    readable: QuerySet[Message], text: str, terms: list[str], offset: int, count: int
) -> list[SearchHit]:
    """Match every word as a substring, newest first (the embedded SQLite default)."""
    words = terms or [text]
    matches = readable
    for word in words:
        matches = matches.filter(body__icontains=word)
    page = list(matches.order_by("-pk")[offset : offset + count])
    selectors.load_for_payload(page)
    return [SearchHit(m, _snippet(m.body, [w.lower() for w in words]), 0.0) for m in page]


def _snippet(body: str, words: list[str]) -> str:
    """Return escaped text around the first match with every match wrapped in <mark>."""
    words = [w for w in words if w]
    lowered = body.lower()
    found = [i for i in (lowered.find(w) for w in words) if i >= 0]
    start = max(0, min(found, default=0) - _SNIPPET_CHARS // 3)
    window = body[start : start + _SNIPPET_CHARS]
    out: list[str] = []
    cursor = 0
    if words:
        longest_first = sorted(words, key=len, reverse=True)
        pattern = re.compile("|".join(re.escape(w) for w in longest_first), re.IGNORECASE)
        for match in pattern.finditer(window):
            out.append(html.escape(window[cursor : match.start()]))
            out.append(f"<mark>{html.escape(match.group())}</mark>")
            cursor = match.end()
    out.append(html.escape(window[cursor:]))
    prefix = "… " if start > 0 else ""
    suffix = " …" if start + _SNIPPET_CHARS < len(body) else ""
    return prefix + "".join(out) + suffix
