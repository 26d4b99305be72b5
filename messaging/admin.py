"""Admin for staff: inspect conversations, members, messages and devices; moderate messages.

Conversations, memberships, messages and attachments are view-only here: every change to
them belongs in the conversation log (a new seq, a system message, a broadcast), which
only `messaging.services` writes. The one write staff get is moderation, a soft delete
through `services.moderate_delete_message`; a raw ORM edit or delete would bypass the
log, and clients would never learn of it.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import TypeVar

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.models import LogEntry
from django.core.exceptions import PermissionDenied
from django.db.models import Count, IntegerField, Model, OuterRef, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.text import Truncator

from accounts.models import User
from chatsite.errors import DomainError
from chatsite.limits import MAX_ID
from messaging import archive, services
from messaging.errors import ArchiveUnavailable
from messaging.models import (
    ArchiveSegment,
    Attachment,
    Block,
    Conversation,
    Device,
    Membership,
    Message,
    Notification,
    Report,
)

# How many ids one error line names before it says "and N more".
_MAX_IDS_SHOWN = 10


def _count(n: int, noun: str) -> str:
    """Return "1 message", "2 messages"."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _staff(request: HttpRequest) -> User:
    """Return the signed-in staff user of an admin request, else raise PermissionDenied."""
    user = request.user
    if not isinstance(user, User) or not user.is_staff:
        raise PermissionDenied
    return user


def _as_uuid(term: str) -> uuid.UUID | None:
    """Return `term` as a UUID if it is one, else None."""
    try:
        return uuid.UUID(term.strip())
    except ValueError:
        return None


def _as_id(term: str) -> int | None:
    """Return `term` as a positive id if it is one, else None."""
    term = term.strip().removeprefix("#")
    if not (term.isascii() and term.isdigit()):
        return None
    return int(term) if 0 < int(term) <= MAX_ID else None


class MembershipInline(admin.TabularInline[Membership, Conversation]):
    """A conversation's members and their markers (view-only: changes go through the log)."""

    model = Membership
    fields = ("user", "role", "muted", "read_seq", "delivered_seq", "visible_from_seq", "joined_at")
    readonly_fields = fields
    raw_id_fields = ("user",)
    extra = 0
    show_change_link = True

    def get_queryset(self, request: HttpRequest) -> QuerySet[Membership]:
        """Return the memberships with their users (one query for the whole inline)."""
        return super().get_queryset(request).select_related("user")

    # The inline's permission hooks take the parent object; django-stubs types them as
    # overrides of the model admin's, hence the ignores (its own stub carries them too).
    def has_add_permission(  # type: ignore[override]
        self, request: HttpRequest, obj: Conversation | None
    ) -> bool:
        """Refuse: members join through the services, which log it."""
        return False

    def has_change_permission(  # type: ignore[override]
        self, request: HttpRequest, obj: Conversation | None = None
    ) -> bool:
        """Refuse: roles and markers change through the services."""
        return False

    def has_delete_permission(  # type: ignore[override]
        self, request: HttpRequest, obj: Conversation | None = None
    ) -> bool:
        """Refuse: removing a member is a logged change."""
        return False


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin[Conversation]):
    """Find conversations by title or id; see their members and log position."""

    list_display = (
        "id",
        "kind",
        "title",
        "public",
        "last_seq",
        "member_count",
        "last_activity_at",
        "retention_days",
        "purged_count",
        "messages_link",
    )
    list_display_links = ("id", "title")
    list_filter = ("kind", "public", "post_policy", "created_at")
    search_fields = ("title",)
    ordering = ("-last_activity_at",)
    fields = (
        "kind",
        "title",
        "public",
        "description",
        "picture",
        "post_policy",
        "last_seq",
        "member_seq",
        "direct_key",
        "created_by",
        "created_at",
        "last_activity_at",
        "retention_days",
        "purged_through_seq",
        "purged_count",
        "purged_at",
        "archived_through_seq",
        "archive_link",
    )
    readonly_fields = (
        # A group's settings change through its admins (`services.update_group`), logged.
        "description",
        "picture",
        "post_policy",
        "last_seq",
        "member_seq",
        "direct_key",
        "created_at",
        "last_activity_at",
        "purged_through_seq",
        "purged_count",
        "purged_at",
        "archived_through_seq",
        "archive_link",
    )
    raw_id_fields = ("created_by",)
    list_select_related = ("created_by",)
    inlines = (MembershipInline,)
    show_full_result_count = False
    actions = ("set_retention",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Conversation]:
        """Return conversations annotated with their member count."""
        # A correlated subquery, not a JOIN + GROUP BY: it runs for the page's rows only.
        members = (
            Membership.objects.filter(conversation=OuterRef("pk"))
            .order_by()
            .values("conversation")
            .annotate(n=Count("pk"))
            .values("n")
        )
        return (
            super()
            .get_queryset(request)
            .annotate(member_count=Coalesce(Subquery(members, output_field=IntegerField()), 0))
        )

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Conversation], search_term: str
    ) -> tuple[QuerySet[Conversation], bool]:
        """Match titles, or the conversation whose id is the search term."""
        found, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        pk = _as_id(search_term)
        if pk is not None:
            found = found | queryset.filter(pk=pk)
        return found, may_have_duplicates

    @admin.display(description="members", ordering="member_count")
    def member_count(self, obj: Conversation) -> str:
        """Link the member count to the conversation's memberships."""
        url = reverse("admin:messaging_membership_changelist")
        count: int = obj.member_count  # type: ignore[attr-defined]
        return format_html('<a href="{}?conversation__id__exact={}">{}</a>', url, obj.pk, count)

    @admin.display(description="messages")
    def messages_link(self, obj: Conversation) -> str:
        """Link to the conversation's messages."""
        url = reverse("admin:messaging_message_changelist")
        return format_html('<a href="{}?conversation__id__exact={}">messages</a>', url, obj.pk)

    @admin.display(description="archive")
    def archive_link(self, obj: Conversation) -> str:
        """Link to the conversation's archive segments, with how many messages they hold."""
        segments = ArchiveSegment.objects.filter(conversation=obj)
        count = sum(segments.values_list("count", flat=True))
        url = reverse("admin:messaging_archivesegment_changelist")
        return format_html(
            '<a href="{}?conversation__id__exact={}">{} archived in {}</a>',
            url,
            obj.pk,
            _count(count, "message"),
            _count(segments.count(), "segment"),
        )

    def has_retention_permission(self, request: HttpRequest) -> bool:
        """Let staff who may change conversations set their retention."""
        return bool(request.user.has_perm("messaging.change_conversation"))

    @admin.action(
        description="Set the retention of selected conversations", permissions=["retention"]
    )
    def set_retention(
        self, request: HttpRequest, queryset: QuerySet[Conversation]
    ) -> HttpResponse | None:
        """Ask for the days of messages to keep, then set them through the services."""
        ids = list(queryset.values_list("pk", flat=True))
        error = ""
        if request.POST.get("post") == "yes":
            raw = request.POST.get("retention_days", "").strip()
            try:
                days = None if raw == "" else int(raw)
                changed = services.set_retention(
                    staff=_staff(request), conversation_ids=ids, days=days
                )
            except ValueError:
                error = "Enter a whole number of days, or leave it empty for the site default."
            except DomainError as exc:
                error = exc.message
            else:
                policy = "the site default" if days is None else f"{days} days"
                for conversation in queryset:
                    self.log_change(request, conversation, f"Retention set to {policy}.")
                self.message_user(
                    request,
                    f"Set the retention of {_count(changed, 'conversation')} to {policy}.",
                    messages.SUCCESS,
                )
                return None
        context = {
            **self.admin_site.each_context(request),
            "title": "Set the retention of conversations",
            "subtitle": None,
            "opts": self.opts,
            "queryset": queryset,
            "error": error,
            "site_days": settings.DELETE_AFTER_DAYS,
            "action_checkbox_name": ACTION_CHECKBOX_NAME,
            "media": self.media,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/messaging/conversation/retention.html", context)

    def has_add_permission(self, request: HttpRequest) -> bool:
        """Refuse: conversations are created through the app, which logs them."""
        return False

    def has_change_permission(self, request: HttpRequest, obj: Conversation | None = None) -> bool:
        """Refuse: a rename or a visibility change belongs in the log."""
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Conversation | None = None) -> bool:
        """Refuse: deleting a conversation would delete its messages with raw ORM."""
        return False


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin[Membership]):
    """Find who is in which conversation, with their role and markers."""

    list_display = (
        "id",
        "conversation",
        "user",
        "role",
        "muted",
        "notify",
        "read_seq",
        "delivered_seq",
        "visible_from_seq",
        "joined_at",
    )
    list_filter = ("role", "muted", "notify")
    search_fields = ("user__username", "user__display_name", "conversation__title")
    raw_id_fields = ("conversation", "user")
    list_select_related = ("conversation", "user")
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        """Refuse: joining is a logged change."""
        return False

    def has_change_permission(self, request: HttpRequest, obj: Membership | None = None) -> bool:
        """Refuse: roles and markers change through the services."""
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Membership | None = None) -> bool:
        """Refuse: removing a member is a logged change."""
        return False


_Row = TypeVar("_Row", bound=Model)


class _NoBulkDelete(admin.ModelAdmin[_Row]):
    """An admin without Django's delete_selected: its rows go through the services, or stay."""

    def get_actions(
        self, request: HttpRequest
    ) -> dict[str, tuple[Callable[..., str], str, str] | None]:
        """Return the actions without delete_selected."""
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions


@admin.register(Message)
class MessageAdmin(_NoBulkDelete[Message]):
    """Read the log and moderate it: deleting a message is a soft delete through the services."""

    list_display = (
        "id",
        "conversation",
        "seq",
        "version",
        "kind",
        "sender",
        "short_body",
        "created_at",
        "edited_at",
        "deleted",
    )
    list_filter = ("kind", "deleted", "created_at")
    search_fields = ("body", "sender__username")
    fields = (
        "conversation",
        "seq",
        "version",
        "kind",
        "sender",
        "client_msg_id",
        "body",
        "system",
        "attachments",
        "created_at",
        "edited_at",
        "deleted",
        "reactions",
    )
    readonly_fields = fields
    raw_id_fields = ("conversation", "sender", "attachments")
    list_select_related = ("conversation", "sender")
    date_hierarchy = "created_at"
    show_full_result_count = False
    actions = ("moderate_delete_selected",)

    @admin.display(description="body")
    def short_body(self, obj: Message) -> str:
        """Return the first line of the body, shortened."""
        return Truncator(obj.body.split("\n", 1)[0]).chars(80)

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Message], search_term: str
    ) -> tuple[QuerySet[Message], bool]:
        """Match bodies and sender usernames, or the message whose client_msg_id is the term."""
        found, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        cmid = _as_uuid(search_term)
        if cmid is not None:
            found = found | queryset.filter(client_msg_id=cmid)
        return found, may_have_duplicates

    def has_add_permission(self, request: HttpRequest) -> bool:
        """Refuse: messages are only ever sent by their senders, through the services."""
        return False

    def has_change_permission(self, request: HttpRequest, obj: Message | None = None) -> bool:
        """Refuse: staff never edit messages (an edit is the sender's, and it is logged)."""
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Message | None = None) -> bool:
        """Allow moderating text messages that are not deleted yet, with the delete permission."""
        if obj is not None and (obj.kind != Message.Kind.TEXT or obj.deleted):
            return False
        return super().has_delete_permission(request, obj)

    @admin.action(description="Delete selected messages (moderation)", permissions=["delete"])
    def moderate_delete_selected(
        self, request: HttpRequest, queryset: QuerySet[Message]
    ) -> HttpResponse | None:
        """Ask for confirmation, then soft-delete the selected messages through the services."""
        if request.POST.get("post") == "yes":
            self._moderate(request, list(queryset.values_list("pk", flat=True)))
            return None
        context = {
            **self.admin_site.each_context(request),
            "title": "Delete messages for everyone (moderation)",
            "subtitle": None,
            "opts": self.opts,
            "queryset": queryset.select_related("conversation", "sender"),
            "action_checkbox_name": ACTION_CHECKBOX_NAME,
            "media": self.media,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(
            request, "admin/messaging/message/moderate_delete_confirmation.html", context
        )

    def delete_model(self, request: HttpRequest, obj: Message) -> None:
        """Soft-delete one message through the services (never a raw ORM delete)."""
        self._moderate(request, [obj.pk])

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Message]) -> None:
        """Soft-delete the messages through the services (never a raw ORM delete)."""
        self._moderate(request, list(queryset.values_list("pk", flat=True)))

    def log_deletions(
        self, request: HttpRequest, queryset: QuerySet[Message]
    ) -> list[LogEntry] | LogEntry:
        """Log nothing here: `_moderate` logs each soft delete once it has happened."""
        return []

    def response_delete(self, request: HttpRequest, obj_display: str, obj_id: int) -> HttpResponse:
        """Return to the message: it still exists (a soft delete), now with its new version."""
        return HttpResponseRedirect(
            reverse(
                "admin:messaging_message_change", args=[obj_id], current_app=self.admin_site.name
            )
        )

    def _moderate(self, request: HttpRequest, message_ids: Iterable[int]) -> None:
        """Soft-delete each message through the services; report what happened to staff."""
        staff = _staff(request)
        ids = list(message_ids)
        # The service returns an already deleted message unchanged; count those apart so
        # staff are not told (and the history does not say) that this call deleted them.
        already = set(Message.objects.filter(pk__in=ids, deleted=True).values_list("pk", flat=True))
        deleted = 0
        refused: defaultdict[str, list[int]] = defaultdict(list)
        for message_id in ids:
            if message_id in already:
                continue
            try:
                message = services.moderate_delete_message(staff=staff, message_id=message_id)
            except DomainError as exc:
                refused[exc.message].append(message_id)
                continue
            self.log_change(
                request, message, f"Deleted for everyone (moderation) at version {message.version}."
            )
            deleted += 1
        if deleted:
            self.message_user(
                request,
                f"Deleted {_count(deleted, 'message')} for everyone (moderation).",
                messages.SUCCESS,
            )
        if already:
            self.message_user(
                request,
                f"Skipped {_count(len(already), 'message')} already deleted.",
                messages.INFO,
            )
        for reason, refused_ids in refused.items():
            shown = ", ".join(str(i) for i in refused_ids[:_MAX_IDS_SHOWN])
            extra = len(refused_ids) - _MAX_IDS_SHOWN
            more = f" and {extra} more" if extra > 0 else ""
            noun = "message" if len(refused_ids) == 1 else "messages"
            self.message_user(
                request, f"Not deleted ({noun} {shown}{more}): {reason}", level=messages.ERROR
            )


@admin.register(ArchiveSegment)
class ArchiveSegmentAdmin(admin.ModelAdmin[ArchiveSegment]):
    """Read the archive: each segment's record, and its messages read back from storage."""

    list_display = (
        "id",
        "conversation",
        "first_seq",
        "last_seq",
        "count",
        "size",
        "newest_at",
        "created_at",
    )
    list_filter = ("created_at",)
    search_fields = ("key",)
    fields = (
        "conversation",
        "first_seq",
        "last_seq",
        "min_version",
        "max_version",
        "min_id",
        "max_id",
        "count",
        "size",
        "newest_at",
        "key",
        "sha256",
        "created_at",
        "messages_shown",
    )
    readonly_fields = fields
    raw_id_fields = ("conversation",)
    list_select_related = ("conversation",)
    ordering = ("conversation", "first_seq")
    show_full_result_count = False

    @admin.display(description="messages")
    def messages_shown(self, obj: ArchiveSegment) -> str:
        """Return the segment's messages as a table, read from the archive and checked."""
        try:
            rows = archive.segment_rows(obj)
        except ArchiveUnavailable:
            return "This segment cannot be read, or does not match its SHA-256 (see the logs)."
        lines = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    row["seq"],
                    row["id"],
                    row["sender"] or "",
                    row["created_at"],
                    "deleted" if row["deleted"] else row["kind"],
                    Truncator(row["body"]).chars(120),
                )
                for row in rows
            ),
        )
        return format_html(
            "<table><thead><tr><th>seq</th><th>id</th><th>sender</th><th>sent</th>"
            "<th>kind</th><th>body</th></tr></thead><tbody>{}</tbody></table>",
            lines,
        )

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[ArchiveSegment], search_term: str
    ) -> tuple[QuerySet[ArchiveSegment], bool]:
        """Match keys, or the segments of the conversation whose id is the search term."""
        found, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        pk = _as_id(search_term)
        if pk is not None:
            found = found | queryset.filter(conversation_id=pk)
        return found, may_have_duplicates

    def has_add_permission(self, request: HttpRequest) -> bool:
        """Refuse: segments are written by the archiver only."""
        return False

    def has_change_permission(
        self, request: HttpRequest, obj: ArchiveSegment | None = None
    ) -> bool:
        """Refuse: a segment never changes."""
        return False

    def has_delete_permission(
        self, request: HttpRequest, obj: ArchiveSegment | None = None
    ) -> bool:
        """Refuse: archived history goes by the retention policy only."""
        return False


@admin.register(Attachment)
class AttachmentAdmin(admin.ModelAdmin[Attachment]):
    """Find uploaded files by name, uploader or checksum (view-only)."""

    list_display = ("id", "filename", "content_type", "size", "voice", "uploader", "created_at")
    list_filter = ("voice", "created_at")
    search_fields = ("filename", "uploader__username", "=sha256")
    fields = (
        "uploader",
        "file",
        "thumbnail",
        "thumbnail_status",
        "filename",
        "content_type",
        "size",
        "sha256",
        "duration_ms",
        "voice",
    )
    readonly_fields = fields
    raw_id_fields = ("uploader",)
    list_select_related = ("uploader",)
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        """Refuse: uploads go through the API, which checks size and type."""
        return False

    def has_change_permission(self, request: HttpRequest, obj: Attachment | None = None) -> bool:
        """Refuse: a changed file would change posted messages outside the log."""
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Attachment | None = None) -> bool:
        """Refuse: removing a file from posted messages is a moderation delete of the message."""
        return False


@admin.register(Device)
class DeviceAdmin(admin.ModelAdmin[Device]):
    """See users' push targets; delete one to stop pushes to it."""

    list_display = ("id", "user", "platform", "name", "created_at", "last_used_at")
    list_filter = ("platform", "created_at")
    search_fields = ("user__username", "user__display_name", "name")
    # The Web Push keys stay out of view: they are the subscription's secrets.
    fields = ("user", "platform", "name", "token", "created_at", "last_used_at")
    readonly_fields = fields
    raw_id_fields = ("user",)
    list_select_related = ("user",)
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        """Refuse: devices register themselves through the API."""
        return False

    def has_change_permission(self, request: HttpRequest, obj: Device | None = None) -> bool:
        """Refuse: a device's token is the push service's, not staff's, to change."""
        return False


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin[Notification]):
    """The notification trace: every decision, for answering "why wasn't I notified?"."""

    list_display = (
        "id",
        "created_at",
        "user",
        "conversation",
        "seq",
        "kind",
        "channel",
        "device_key",
        "decision",
        "reason",
        "provider_status",
        "attempts",
        "latency_ms",
    )
    list_filter = ("decision", "reason", "channel", "kind", "created_at")
    search_fields = ("user__username", "=message__id", "=conversation__id")
    raw_id_fields = ("user", "conversation", "message", "device")
    list_select_related = ("user", "conversation")
    date_hierarchy = "created_at"
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        """Refuse: decisions are made by the worker."""
        return False

    def has_change_permission(self, request: HttpRequest, obj: Notification | None = None) -> bool:
        """Refuse: the trace records what happened."""
        return False


# --- blocking and reports ---------------------------------------------------------------


@admin.register(Report)
class ReportAdmin(_NoBulkDelete[Report]):
    """Reports of messages by members: read them, delete the message (moderation) or dismiss."""

    list_display = (
        "id",
        "message_link",
        "short_body",
        "reporter",
        "reason",
        "details",
        "status",
        "created_at",
    )
    list_filter = ("status", "reason", "created_at")
    search_fields = ("reporter__username", "message__body", "details")
    fields = ("message", "reporter", "reason", "details", "status", "created_at")
    readonly_fields = fields
    raw_id_fields = ("message", "reporter")
    list_select_related = ("message", "reporter")
    actions = ("delete_reported_messages", "dismiss_reports")

    @admin.display(description="message")
    def message_link(self, obj: Report) -> str:
        """Link to the reported message."""
        url = reverse("admin:messaging_message_change", args=[obj.message_id])
        return format_html('<a href="{}">#{}</a>', url, obj.message_id)

    @admin.display(description="body")
    def short_body(self, obj: Report) -> str:
        """Return the first line of the reported message, shortened."""
        if obj.message.deleted:
            return "(deleted)"
        return Truncator(obj.message.body.split("\n", 1)[0]).chars(80)

    def has_add_permission(self, request: HttpRequest) -> bool:
        """Refuse: members make reports."""
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Report | None = None) -> bool:
        """Refuse: a report is kept as the record of what staff did."""
        return False

    def _resolve(self, request: HttpRequest, queryset: QuerySet[Report], *, delete: bool) -> None:
        staff = _staff(request)
        done = 0
        for report_id in queryset.values_list("pk", flat=True):
            try:
                services.resolve_report(staff=staff, report_id=report_id, delete_message=delete)
            except DomainError as exc:
                self.message_user(request, f"Report {report_id}: {exc.message}", messages.ERROR)
                continue
            done += 1
        verb = "Deleted the messages of" if delete else "Dismissed"
        self.message_user(request, f"{verb} {_count(done, 'report')}.", messages.SUCCESS)

    @admin.action(description="Delete the reported messages (moderation)", permissions=["change"])
    def delete_reported_messages(self, request: HttpRequest, queryset: QuerySet[Report]) -> None:
        """Delete each reported message for everyone through `moderate_delete_message`."""
        self._resolve(request, queryset, delete=True)

    @admin.action(description="Dismiss the selected reports", permissions=["change"])
    def dismiss_reports(self, request: HttpRequest, queryset: QuerySet[Report]) -> None:
        """Close the reports and keep the messages."""
        self._resolve(request, queryset, delete=False)


@admin.register(Block)
class BlockAdmin(admin.ModelAdmin[Block]):
    """Who blocked whom (view only: people block and unblock themselves)."""

    list_display = ("id", "blocker", "blocked", "created_at")
    search_fields = ("blocker__username", "blocked__username")
    list_filter = ("created_at",)
    readonly_fields = ("blocker", "blocked", "created_at")
    fields = readonly_fields
    list_select_related = ("blocker", "blocked")

    def has_add_permission(self, request: HttpRequest) -> bool:
        """Refuse: blocks are made by people (`PUT /api/v1/users/{id}/block`)."""
        return False

    def has_change_permission(self, request: HttpRequest, obj: Block | None = None) -> bool:
        """Refuse: view only."""
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Block | None = None) -> bool:
        """Refuse: only the blocker unblocks (their devices are told)."""
        return False
