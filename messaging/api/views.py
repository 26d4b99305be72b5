"""REST views of messaging: each parses a shape, calls one service or selector, answers a payload.

Every rule (membership, roles, limits, rate) lives in the services; every payload comes
from `messaging.events`, so REST answers exactly what the WebSocket carries.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.db import transaction
from django.http import (
    FileResponse,
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    StreamingHttpResponse,
)
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    PolymorphicProxySerializer,
    extend_schema,
)
from rest_framework.parsers import MultiPartParser
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.api import AvatarUploadSerializer, PictureUploadApi
from accounts.models import User
from chatsite import rest
from chatsite.errors import BadRequest
from chatsite.limits import MAX_FRAME_BYTES
from chatsite.openapi import AUTHENTICATED, error_responses
from chatsite.wire import iso
from messaging import (
    attachments,
    devices,
    frames,
    portability,
    search,
    selectors,
    services,
    tasks,
    wire,
)
from messaging.api import serializers as s
from messaging.models import Conversation, NotifyLevel

# --- helpers ---------------------------------------------------------------------------


def _user(request: Request) -> User:
    user = request.user
    assert isinstance(user, User)  # noqa: S101 - IsAuthenticated ran before any handler
    return user


def _valid(serializer_class: type[Any], data: Any) -> dict[str, Any]:
    form = serializer_class(data=data)
    form.is_valid(raise_exception=True)
    return dict(form.validated_data)


def _detail(conversation: Conversation, user: User) -> dict[str, Any]:
    """Build the user's view of a conversation with its members (detail form)."""
    view = selectors.conversation_view_for_member(conversation, user)
    members = selectors.list_members(user=user, conversation_id=conversation.pk)
    return dict(wire.conversation_payload(view, [wire.member_payload(m) for m in members]))


def _detail_by_id(conversation_id: int, user: User) -> dict[str, Any]:
    membership = selectors.get_membership(user=user, conversation_id=conversation_id)
    return _detail(membership.conversation, user)


def _path_id(name: str, description: str) -> OpenApiParameter:
    return OpenApiParameter(
        name,
        {"type": "integer", "minimum": 1, "maximum": s.MAX_ID},
        OpenApiParameter.PATH,
        description=description,
    )


CONVERSATION_ID = _path_id("conversation_id", "A conversation the caller belongs to.")
MESSAGE_ID = _path_id("message_id", "A message of that conversation.")
MESSAGE_EXAMPLE = {
    "id": 901,
    "conversation": 3,
    "seq": 42,
    "version": 42,
    "kind": "text",
    "sender": 7,
    "body": "hi",
    "client_msg_id": "6f0c2b4e-8a51-4c55-9b5a-1d8e7f3a9c01",
    "created_at": "2026-11-22T10:00:00.123456Z",
    "edited_at": None,
    "deleted": False,
    "attachments": [],
    "mentions": [],
    "reactions": [{"emoji": "\N{THUMBS UP SIGN}", "count": 2, "users": [7, 12]}],
    "reply_to": None,
}
CONVERSATION_EXAMPLE = {
    "id": 3,
    "kind": "group",
    "title": "Team",
    "public": False,
    "last_seq": 42,
    "read_seq": 40,
    "delivered_seq": 42,
    "unread": 2,
    "muted": False,
    "notify": "all",
    "last_activity_at": "2026-11-22T10:00:00.123456Z",
}
NEW_CONVERSATION = PolymorphicProxySerializer(
    component_name="ConversationCreate",
    serializers={"direct": s.DirectCreateSerializer, "group": s.GroupCreateSerializer},
    resource_type_field_name="kind",
)

# --- conversations ---------------------------------------------------------------------


class ConversationListApi(APIView):
    """The caller's conversations; open a direct conversation or create a group."""

    @extend_schema(
        operation_id="conversations_list",
        tags=["conversations"],
        parameters=[
            OpenApiParameter("cursor", str, description="From the previous page's `next`."),
            OpenApiParameter("limit", int, description="Page size, 1..200 (default 50)."),
        ],
        responses={200: s.ConversationPageSerializer, **error_responses(400, *AUTHENTICATED)},
        examples=[
            OpenApiExample(
                "a page",
                value={"results": [CONVERSATION_EXAMPLE], "next": None},
                response_only=True,
            )
        ],
    )
    def get(self, request: Request) -> Response:
        """Answer `{results, next}`: conversations as in `session.ready`, most recent first."""
        size = rest.page_size(
            request, default=settings.API_PAGE_SIZE, maximum=settings.API_MAX_PAGE_SIZE
        )
        position = rest.decode_cursor(request)
        views = wire.shown(selectors.list_conversations_for_user(user=_user(request)))
        # The selector answers the whole list (as `session.ready` needs it); the page is
        # cut here, after the (activity, id) position the cursor names.
        if position is not None:
            at, ident = position.get("at"), position.get("id")
            if not isinstance(at, str) or not isinstance(ident, int):
                raise BadRequest("cursor is not valid.", details={"field": "cursor"})
            views = [v for v in views if (iso(v.last_activity_at) or "", v.id) < (at, ident)]
        page = views[:size]
        following = None
        if len(views) > size:
            last = page[-1]
            following = {"at": iso(last.last_activity_at) or "", "id": last.id}
        return Response(
            {
                "results": [wire.conversation_payload(v) for v in page],
                "next": rest.next_url(request, following),
            }
        )

    @extend_schema(
        operation_id="conversations_create",
        tags=["conversations"],
        request=NEW_CONVERSATION,
        responses={
            200: OpenApiResponse(
                s.ConversationDetailSerializer,
                description="The direct conversation already existed (whoever created it).",
            ),
            201: s.ConversationDetailSerializer,
            **error_responses(400, 403, 404, 409, *AUTHENTICATED),
        },
        examples=[
            OpenApiExample("direct", value={"kind": "direct", "user": 9}, request_only=True),
            OpenApiExample(
                "group",
                value={"kind": "group", "title": "Team", "members": [9, 12], "public": False},
                request_only=True,
            ),
        ],
    )
    def post(self, request: Request) -> Response:
        """Answer the conversation: 201 when created, 200 for an existing direct one."""
        user = _user(request)
        kind = _valid(s.ConversationKindSerializer, request.data)["kind"]
        if kind == "direct":
            data = _valid(s.DirectCreateSerializer, request.data)
            conversation, created = services.create_direct_conversation(
                user=user, other_user_id=data["user"]
            )
        else:
            data = _valid(s.GroupCreateSerializer, request.data)
            conversation = services.create_group(
                creator=user, title=data["title"], member_ids=data["members"], public=data["public"]
            )
            created = True
        return Response(_detail(conversation, user), status=201 if created else 200)


class ConversationDetailApi(APIView):
    """One conversation with its members and their markers; rename or mute it."""

    @extend_schema(
        operation_id="conversations_retrieve",
        tags=["conversations"],
        parameters=[CONVERSATION_ID],
        responses={
            200: s.ConversationDetailSerializer,
            **error_responses(403, 404, *AUTHENTICATED),
        },
    )
    def get(self, request: Request, conversation_id: int) -> Response:
        """Answer the conversation with `members`; 403 for non-members and missing ids alike."""
        return Response(_detail_by_id(conversation_id, _user(request)))

    @extend_schema(
        operation_id="conversations_update",
        tags=["conversations"],
        parameters=[CONVERSATION_ID],
        request=s.ConversationUpdateSerializer,
        responses={
            200: s.ConversationDetailSerializer,
            **error_responses(400, 403, 404, *AUTHENTICATED),
        },
        examples=[
            OpenApiExample("rename", value={"title": "Team 2"}, request_only=True),
            OpenApiExample(
                "announcements only",
                value={"description": "News from the board", "post_policy": "admins"},
                request_only=True,
            ),
        ],
    )
    def patch(self, request: Request, conversation_id: int) -> Response:
        """Change a group's settings or your own notifications; answer the conversation.

        `title`, `description`, `post_policy`: owners and admins, each change logged;
        `muted`, `notify`: your own.
        """
        user = _user(request)
        data = _valid(s.ConversationUpdateSerializer, request.data)
        with transaction.atomic():  # all of the changes asked for, or none
            if "title" in data:
                services.rename_conversation(
                    actor=user, conversation_id=conversation_id, title=data["title"]
                )
            if "description" in data or "post_policy" in data:
                services.update_group(
                    actor=user,
                    conversation_id=conversation_id,
                    description=data.get("description"),
                    post_policy=data.get("post_policy"),
                )
        if "muted" in data:
            services.set_muted(user=user, conversation_id=conversation_id, muted=data["muted"])
        if "notify" in data:
            services.set_notify_level(
                user=user, conversation_id=conversation_id, level=NotifyLevel(data["notify"])
            )
        return Response(_detail_by_id(conversation_id, user))


class MemberAddApi(APIView):
    """Add members to a group (owners and admins), or join a public group."""

    @extend_schema(
        operation_id="conversations_members_add",
        tags=["conversations"],
        parameters=[CONVERSATION_ID],
        request=s.MembersAddSerializer,
        responses={
            200: s.ConversationDetailSerializer,
            **error_responses(400, 403, 404, 409, *AUTHENTICATED),
        },
        examples=[
            OpenApiExample("add", value={"users": [9, 12]}, request_only=True),
            OpenApiExample("join a public group", value={}, request_only=True),
        ],
    )
    def post(self, request: Request, conversation_id: int) -> Response:
        """`{users}` adds them; `{}` joins a public group. Answer the conversation."""
        user = _user(request)
        data = _valid(s.MembersAddSerializer, request.data)
        if "users" in data:
            services.add_members(
                actor=user, conversation_id=conversation_id, user_ids=data["users"]
            )
        else:
            services.join_conversation(user=user, conversation_id=conversation_id)
        return Response(_detail_by_id(conversation_id, user))


class MemberRemoveApi(APIView):
    """Leave a group (your own id), remove a member or change their role (owners, admins)."""

    @extend_schema(
        operation_id="conversations_members_role",
        tags=["conversations"],
        parameters=[CONVERSATION_ID, _path_id("user_id", "The member whose role changes.")],
        request=s.MemberRoleSerializer,
        responses={
            200: s.ConversationDetailSerializer,
            **error_responses(400, 403, 404, *AUTHENTICATED),
        },
        examples=[OpenApiExample("make admin", value={"role": "admin"}, request_only=True)],
    )
    def patch(self, request: Request, conversation_id: int, user_id: int) -> Response:
        """Make a member an admin or dismiss one (`member`); answer the conversation.

        Owners and admins make admins; only the owner dismisses another admin; an
        admin may step down. The owner's role does not change.
        """
        user = _user(request)
        data = _valid(s.MemberRoleSerializer, request.data)
        services.set_role(
            actor=user, conversation_id=conversation_id, user_id=user_id, role=data["role"]
        )
        return Response(_detail_by_id(conversation_id, user))

    @extend_schema(
        operation_id="conversations_members_remove",
        tags=["conversations"],
        parameters=[CONVERSATION_ID, _path_id("user_id", "The member to remove (you: leave).")],
        request=None,
        responses={204: None, **error_responses(400, 403, 404, *AUTHENTICATED)},
    )
    def delete(self, request: Request, conversation_id: int, user_id: int) -> Response:
        """Answer 204; the log records the departure."""
        services.remove_member(
            actor=_user(request), conversation_id=conversation_id, user_id=user_id
        )
        return Response(status=204)


class GroupPictureApi(PictureUploadApi):
    """A group's picture (owners and admins): upload one cropped to a square, or remove it."""

    @extend_schema(
        operation_id="conversations_picture_set",
        tags=["conversations"],
        parameters=[CONVERSATION_ID],
        request={"multipart/form-data": AvatarUploadSerializer},
        responses={
            200: s.ConversationDetailSerializer,
            **error_responses(400, 403, 404, 413, *AUTHENTICATED),
        },
    )
    def put(self, request: Request, conversation_id: int) -> Response:
        """Make the picture (cropped to `x`, `y`, `size`) the group's; answer the conversation.

        As a profile picture: 400 for what is not a picture, 413 past the byte cap or
        the decode-cost limit; a refused upload keeps the picture there was.
        """
        user = _user(request)
        upload, crop = self.picture(request)
        services.set_group_picture(
            actor=user, conversation_id=conversation_id, upload=upload, crop=crop
        )
        return Response(_detail_by_id(conversation_id, user))

    @extend_schema(
        operation_id="conversations_picture_delete",
        tags=["conversations"],
        parameters=[CONVERSATION_ID],
        request=None,
        responses={
            200: s.ConversationDetailSerializer,
            **error_responses(403, 404, *AUTHENTICATED),
        },
    )
    def delete(self, request: Request, conversation_id: int) -> Response:
        """Remove the group's picture (initials again); answer the conversation."""
        user = _user(request)
        services.set_group_picture(actor=user, conversation_id=conversation_id, upload=None)
        return Response(_detail_by_id(conversation_id, user))


class RequestAcceptApi(APIView):
    """Accept a message request: share presence, receipts and typing, and reply."""

    @extend_schema(
        operation_id="conversations_request_accept",
        tags=["conversations"],
        parameters=[CONVERSATION_ID],
        request=None,
        responses={
            200: s.ConversationDetailSerializer,
            **error_responses(403, 404, *AUTHENTICATED),
        },
    )
    def post(self, request: Request, conversation_id: int) -> Response:
        """Answer the conversation (`request: false`); accepting twice changes nothing."""
        user = _user(request)
        services.accept_request(user=user, conversation_id=conversation_id)
        return Response(_detail_by_id(conversation_id, user))


class RequestDeclineApi(APIView):
    """Decline a message request: leave it (the requester is not told why)."""

    @extend_schema(
        operation_id="conversations_request_decline",
        tags=["conversations"],
        parameters=[CONVERSATION_ID],
        request=None,
        responses={204: None, **error_responses(400, 403, 404, *AUTHENTICATED)},
    )
    def post(self, request: Request, conversation_id: int) -> Response:
        """Answer 204; 400 if the conversation is not a request (leave a group instead)."""
        services.decline_request(user=_user(request), conversation_id=conversation_id)
        return Response(status=204)


# --- messages --------------------------------------------------------------------------


class MessageListApi(APIView):
    """The conversation's log: fetch pages, send a message (idempotent by `client_msg_id`)."""

    @extend_schema(
        operation_id="messages_list",
        tags=["messages"],
        parameters=[CONVERSATION_ID, s.MessageFetchSerializer],
        responses={200: s.MessageBatchSerializer, **error_responses(400, 403, 404, *AUTHENTICATED)},
        examples=[
            OpenApiExample(
                "after a cursor",
                value={"messages": [MESSAGE_EXAMPLE], "upto": 42, "has_more": False},
                response_only=True,
            )
        ],
    )
    def get(self, request: Request, conversation_id: int) -> Response:
        """Answer `{messages, upto, has_more}` like `messages.batch` (after= or before=)."""
        data = _valid(s.MessageFetchSerializer, request.query_params)
        batch = selectors.list_messages_for_user(
            user=_user(request),
            conversation_id=conversation_id,
            after=data.get("after"),
            before=data.get("before"),
            limit=data.get("limit"),
        )
        return Response(
            {
                "messages": [wire.message_payload(m) for m in batch.messages],
                "upto": batch.upto,
                "has_more": batch.has_more,
            }
        )

    @extend_schema(
        operation_id="messages_send",
        tags=["messages"],
        parameters=[CONVERSATION_ID],
        request=s.MessageSendSerializer,
        responses={
            201: OpenApiResponse(s.MessageSerializer, description="Stored at the next seq."),
            200: OpenApiResponse(
                s.MessageSerializer,
                description="A replay: this `client_msg_id` was already sent; nothing new.",
            ),
            **error_responses(400, 403, 404, 409, 413, *AUTHENTICATED),
        },
        examples=[
            OpenApiExample(
                "send",
                value={"client_msg_id": MESSAGE_EXAMPLE["client_msg_id"], "body": "hi"},
                request_only=True,
            ),
            OpenApiExample("sent", value=MESSAGE_EXAMPLE, response_only=True, status_codes=["201"]),
        ],
    )
    def post(self, request: Request, conversation_id: int) -> Response:
        """Answer the message: 201 new, 200 replay; 409 if the id was used for another."""
        data = _valid(s.MessageSendSerializer, request.data)
        result = services.send_message(
            sender=_user(request),
            conversation_id=conversation_id,
            client_msg_id=data["client_msg_id"],
            body=data["body"],
            attachment_ids=data["attachments"],
            reply_to=data["reply_to"],
        )
        return Response(wire.message_payload(result.message), status=201 if result.created else 200)


class MessageDetailApi(APIView):
    """Edit or delete your message (group owners and admins may delete any text message)."""

    @extend_schema(
        operation_id="messages_edit",
        tags=["messages"],
        parameters=[CONVERSATION_ID, MESSAGE_ID],
        request=s.MessageEditSerializer,
        responses={
            200: s.MessageSerializer,
            **error_responses(400, 403, 404, 413, *AUTHENTICATED),
        },
    )
    def patch(self, request: Request, conversation_id: int, message_id: int) -> Response:
        """Answer the edited message (new `version`, `edited_at`)."""
        data = _valid(s.MessageEditSerializer, request.data)
        message = services.edit_message(
            user=_user(request),
            conversation_id=conversation_id,
            message_id=message_id,
            body=data["body"],
        )
        return Response(wire.message_payload(message))

    @extend_schema(
        operation_id="messages_delete",
        tags=["messages"],
        parameters=[CONVERSATION_ID, MESSAGE_ID],
        request=None,
        responses={200: s.MessageSerializer, **error_responses(403, 404, *AUTHENTICATED)},
    )
    def delete(self, request: Request, conversation_id: int, message_id: int) -> Response:
        """Answer the deleted message (`deleted: true`, empty body, new `version`)."""
        message = services.delete_message(
            user=_user(request), conversation_id=conversation_id, message_id=message_id
        )
        return Response(wire.message_payload(message))


EMOJI = OpenApiParameter(
    "emoji",
    {"type": "string", "minLength": 1, "maxLength": 16},
    OpenApiParameter.PATH,
    description="One emoji, percent-encoded in UTF-8 (e.g. %F0%9F%91%8D for a thumbs up).",
)


def _react(
    request: Request, conversation_id: int, message_id: int, emoji: str, *, add: bool
) -> Response:
    message = services.react(
        user=_user(request),
        conversation_id=conversation_id,
        message_id=message_id,
        emoji=emoji,
        add=add,
    )
    return Response(wire.message_payload(message))


class MessageReactionApi(APIView):
    """Your emoji reaction to a message: one per emoji; every member sees them."""

    @extend_schema(
        operation_id="messages_react",
        tags=["messages"],
        parameters=[CONVERSATION_ID, MESSAGE_ID, EMOJI],
        request=None,
        responses={
            200: s.MessageSerializer,
            **error_responses(400, 403, 404, 429, *AUTHENTICATED),
        },
    )
    def put(self, request: Request, conversation_id: int, message_id: int, emoji: str) -> Response:
        """Add your reaction; answer the message (a new `version` unless it was there)."""
        return _react(request, conversation_id, message_id, emoji, add=True)

    @extend_schema(
        operation_id="messages_unreact",
        tags=["messages"],
        parameters=[CONVERSATION_ID, MESSAGE_ID, EMOJI],
        request=None,
        responses={
            200: s.MessageSerializer,
            **error_responses(400, 403, 404, 429, *AUTHENTICATED),
        },
    )
    def delete(
        self, request: Request, conversation_id: int, message_id: int, emoji: str
    ) -> Response:
        """Take your reaction back; answer the message."""
        return _react(request, conversation_id, message_id, emoji, add=False)


class MessageNotificationsApi(APIView):
    """Why you were, or were not, notified of a message: its notification trace."""

    @extend_schema(
        operation_id="conversations_messages_notifications",
        tags=["messages"],
        parameters=[CONVERSATION_ID, MESSAGE_ID],
        responses={
            200: s.NotificationListSerializer,
            **error_responses(403, 404, *AUTHENTICATED),
        },
        examples=[
            OpenApiExample(
                "suppressed on a phone, emailed",
                value={
                    "results": [
                        {
                            "kind": "message",
                            "channel": "fcm",
                            "device": 4,
                            "decision": "suppressed",
                            "reason": "busy",
                            "provider_status": None,
                            "latency_ms": None,
                            "at": "2026-11-22T10:00:10.123456Z",
                        }
                    ]
                },
                response_only=True,
            )
        ],
    )
    def get(self, request: Request, conversation_id: int, message_id: int) -> Response:
        """Answer `{results}`: each decision for your devices and email, oldest first."""
        rows = selectors.list_notifications_for_user(
            user=_user(request), conversation_id=conversation_id, message_id=message_id
        )
        return Response({"results": [wire.notification_payload(r) for r in rows]})


class ConversationReadApi(APIView):
    """Raise your read marker (and delivered marker); never lowers them."""

    @extend_schema(
        operation_id="conversations_read",
        tags=["messages"],
        parameters=[CONVERSATION_ID],
        request=s.ReadSerializer,
        responses={200: s.MarkersSerializer, **error_responses(400, 403, 404, *AUTHENTICATED)},
        examples=[OpenApiExample("read up to 42", value={"seq": 42}, request_only=True)],
    )
    def post(self, request: Request, conversation_id: int) -> Response:
        """Answer your markers after the raise (capped at the log's end)."""
        data = _valid(s.ReadSerializer, request.data)
        markers = services.mark_read(
            user=_user(request), conversation_id=conversation_id, seq=data["seq"]
        )
        return Response(
            {
                "conversation": markers.conversation_id,
                "delivered_seq": markers.delivered_seq,
                "read_seq": markers.read_seq,
            }
        )


# --- attachments -----------------------------------------------------------------------


class AttachmentUploadApi(APIView):
    """Upload a file (multipart field `file`); attach it to messages by id."""

    parser_classes = [MultiPartParser]
    throttle_classes = [rest.UserThrottle, rest.UploadThrottle]

    def initialize_request(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Request:
        """Put the size-limiting handler first, before anything can read the body."""
        handlers = list(request.upload_handlers)
        request.upload_handlers = [attachments.SizeLimitedUploadHandler(request), *handlers]
        return super().initialize_request(request, *args, **kwargs)

    @extend_schema(
        operation_id="attachments_upload",
        tags=["attachments"],
        request={"multipart/form-data": s.UploadSerializer},
        responses={201: s.AttachmentSerializer, **error_responses(400, 403, 413, *AUTHENTICATED)},
        examples=[
            OpenApiExample(
                "an image",
                value={
                    "id": 55,
                    "filename": "cat.png",
                    "content_type": "image/png",
                    "size": 48213,
                    "url": "/api/v1/attachments/55",
                    "thumbnail": "pending",
                    "thumbnail_url": "/api/v1/attachments/55?thumbnail=1",
                    "duration_ms": None,
                    "voice": False,
                },
                response_only=True,
                status_codes=["201"],
            )
        ],
    )
    def post(self, request: Request) -> Response:
        """Answer 201 with the attachment (`AttachmentSerializer`).

        An image's thumbnail is made by the Celery worker afterwards: `pending` here (an
        image over `max_image_edge` is scaled down by it too). `voice` and `duration_ms`:
        400 for a voice message that is not audio or is too long.
        """
        upload = request.FILES.get("file")
        if upload is None:
            raise BadRequest(
                "Send the file in the multipart field `file`.", details={"field": "file"}
            )
        data = _valid(s.UploadSerializer, request.data)
        attachment = attachments.store_attachment(
            uploader=_user(request),
            upload=upload,
            voice=data["voice"],
            duration_ms=data.get("duration_ms"),
        )
        tasks.queue_thumbnail(attachment)
        return Response(wire.attachment_payload(attachment), status=201)


class AttachmentDownloadApi(APIView):
    """Download a file: its uploader and members who can see a message carrying it."""

    content_negotiation_class = rest.AnyContent

    @extend_schema(
        operation_id="attachments_download",
        tags=["attachments"],
        parameters=[
            _path_id("attachment_id", "The attachment."),
            s.DownloadQuerySerializer,
        ],
        responses={
            (200, "*/*"): OpenApiResponse(
                OpenApiTypes.BINARY,
                description=(
                    "The bytes, with `X-Content-Type-Options: nosniff`, "
                    "`Content-Security-Policy: sandbox` and `Content-Disposition: attachment` "
                    "unless a PNG, JPEG, GIF or WebP image."
                ),
            ),
            **error_responses(400, 404, *AUTHENTICATED),
        },
    )
    def get(self, request: Request, attachment_id: int) -> HttpResponseBase:
        """Answer the file (one `Range`: 206); 404 for non-members exactly as for a missing id."""
        thumbnail = _valid(s.DownloadQuerySerializer, request.query_params)["thumbnail"]
        attachment = attachments.get_attachment_for_user(
            user=_user(request), attachment_id=attachment_id
        )
        download = attachments.open_download(attachment, thumbnail=thumbnail)
        response: HttpResponseBase = FileResponse(
            download.file,
            as_attachment=not download.inline,
            filename=download.filename,
            content_type=download.content_type,
        )
        response["Accept-Ranges"] = "bytes"
        wanted = request.headers.get("Range")
        if wanted:
            response = _partial(response, download.file, wanted)
        response["X-Content-Type-Options"] = "nosniff"
        response["Content-Security-Policy"] = "default-src 'none'; sandbox"
        response["Cross-Origin-Resource-Policy"] = "same-origin"
        response["Cache-Control"] = "private, max-age=300"
        return response


def _partial(full: HttpResponseBase, file: Any, header: str) -> HttpResponseBase:
    """Answer one byte range of a download (206), so players can seek; else `full`."""
    file.seek(0, os.SEEK_END)
    size = file.tell()
    try:
        span = attachments.byte_range(header, size)
    except attachments.RangeNotSatisfiable:
        file.close()  # not `full.close()`: that ends the request (closes the database)
        refused = HttpResponse(status=416)
        refused["Content-Range"] = f"bytes */{size}"
        return refused
    if span is None:
        file.seek(0)
        return full
    start, end = span
    file.seek(start)

    def chunks(left: int = end - start + 1) -> Iterator[bytes]:
        try:
            while left > 0 and (chunk := file.read(min(64 * 1024, left))):
                left -= len(chunk)
                yield chunk
        finally:
            file.close()

    partial = StreamingHttpResponse(chunks(), status=206, content_type=full["Content-Type"])
    partial["Content-Range"] = f"bytes {start}-{end}/{size}"
    partial["Content-Length"] = str(end - start + 1)
    partial["Content-Disposition"] = full["Content-Disposition"]
    partial["Accept-Ranges"] = "bytes"
    return partial


# --- search ----------------------------------------------------------------------------


class SearchApi(APIView):
    """Full-text search over the messages you may read."""

    throttle_classes = [rest.UserThrottle, rest.SearchThrottle]

    @extend_schema(
        operation_id="search_messages",
        tags=["search"],
        parameters=[
            s.SearchQuerySerializer,
            OpenApiParameter("cursor", str, description="From the previous page's `next`."),
            OpenApiParameter("limit", int, description="Page size, 1..50 (default 20)."),
        ],
        responses={200: s.SearchPageSerializer, **error_responses(400, *AUTHENTICATED)},
        examples=[
            OpenApiExample(
                "a hit",
                value={
                    "results": [
                        {
                            "message": {**MESSAGE_EXAMPLE, "body": "the conference is on friday"},
                            "snippet": "the <mark>conference</mark> is on friday",
                        }
                    ],
                    "next": None,
                },
                response_only=True,
            )
        ],
    )
    def get(self, request: Request) -> Response:
        """Answer `{results: [{message, snippet}], next}`, best match first."""
        data = _valid(s.SearchQuerySerializer, request.query_params)
        size = rest.page_size(request, default=settings.CHAT_SEARCH_PAGE_SIZE, maximum=50)
        cursor = rest.decode_cursor(request) or {}
        tier, offset = cursor.get("t", search.WORDS), cursor.get("o", 0)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (tier, offset)):
            raise BadRequest("cursor is not valid.", details={"field": "cursor"})
        page = search.search_messages_for_user(
            user=_user(request),
            query=data["q"],
            conversation_id=data.get("conversation"),
            position=search.Position(tier, offset),
            limit=size,
        )
        following = {"t": page.next.tier, "o": page.next.offset} if page.next else None
        return Response(
            {
                "results": [
                    {"message": wire.message_payload(h.message), "snippet": h.snippet}
                    for h in page.hits
                ],
                "next": rest.next_url(request, following),
            }
        )


# --- devices ---------------------------------------------------------------------------


class DeviceRegisterApi(APIView):
    """The caller's push targets: list them, register this install's."""

    @extend_schema(
        operation_id="devices_list",
        tags=["devices"],
        responses={200: s.DevicePageSerializer, **error_responses(*AUTHENTICATED)},
    )
    def get(self, request: Request) -> Response:
        """Answer `{results, next}`: your devices, newest first (tokens are not shown)."""
        rows = selectors.list_devices_for_user(user=_user(request))
        return Response({"results": [wire.device_payload(d) for d in rows], "next": None})

    @extend_schema(
        operation_id="devices_register",
        tags=["devices"],
        request=s.DeviceRegisterSerializer,
        responses={
            201: OpenApiResponse(s.DeviceSerializer, description="New to this user."),
            200: OpenApiResponse(s.DeviceSerializer, description="Already yours; updated."),
            **error_responses(400, 403, *AUTHENTICATED),
        },
        examples=[
            OpenApiExample(
                "web push",
                value={
                    "platform": "webpush",
                    "subscription": {
                        "endpoint": "https://fcm.googleapis.com/fcm/send/dXJ…",
                        "keys": {
                            "p256dh": "BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u"
                            "-Ts1XbjhazAkj7I99e8QcYP7DkM",
                            "auth": "tBHItJI5svbpez7KI4CCXg",
                        },
                    },
                    "name": "Firefox on the laptop",
                },
                request_only=True,
            ),
            OpenApiExample(
                "apns",
                value={"platform": "apns", "token": "ab" * 32, "name": "iPhone"},
                request_only=True,
            ),
        ],
    )
    def post(self, request: Request) -> Response:
        """Answer the device: 201 when new to you, 200 when it was already yours."""
        data = _valid(s.DeviceRegisterSerializer, request.data)
        device, created = devices.register_device(user=_user(request), **data)
        return Response(wire.device_payload(device), status=201 if created else 200)


class DeviceRemoveApi(APIView):
    """Remove one of your push targets."""

    @extend_schema(
        operation_id="devices_remove",
        tags=["devices"],
        parameters=[_path_id("device_id", "One of your devices.")],
        request=None,
        responses={204: None, **error_responses(403, 404, *AUTHENTICATED)},
    )
    def delete(self, request: Request, device_id: int) -> Response:
        """Answer 204; someone else's device is 404, like a missing one."""
        devices.remove_device(user=_user(request), device_id=device_id)
        return Response(status=204)


# --- your data --------------------------------------------------------------------------


class OwnDataExportApi(APIView):
    """Download your own data: account, memberships, what you sent and uploaded, devices."""

    content_negotiation_class = rest.AnyContent

    @extend_schema(
        operation_id="me_export",
        tags=["users"],
        responses={
            (200, "application/zip"): OpenApiResponse(
                OpenApiTypes.BINARY,
                description=(
                    "A zip: `data.jsonl` (one object per line), `files/` (your uploads and "
                    "picture) and `manifest.json` (counts and SHA-256 of each part)."
                ),
            ),
            **error_responses(429, *AUTHENTICATED),
        },
    )
    def get(self, request: Request) -> FileResponse:
        """Answer the zip; a few downloads per hour (`EXPORT_BURST`, `EXPORT_INTERVAL`)."""
        data, filename = portability.download_own_data(_user(request))
        response = FileResponse(
            data, as_attachment=True, filename=filename, content_type="application/zip"
        )
        response["Cache-Control"] = "private, no-store"
        return response


# --- server ----------------------------------------------------------------------------


class ServerLimitsApi(APIView):
    """The limits this server enforces, read from its settings (no sign-in needed)."""

    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]

    @extend_schema(tags=["server"], responses={200: s.LimitsSerializer, **error_responses(429)})
    def get(self, request: Request) -> Response:
        """Answer the limits."""
        return Response(server_limits())


def server_limits() -> dict[str, Any]:
    """Return the enforced limits, from settings (the services read the same settings)."""
    c = settings
    return {
        "max_message_length": c.CHAT_MAX_MESSAGE_LENGTH,
        "max_title_length": c.CHAT_MAX_TITLE_LENGTH,
        "max_description_length": c.CHAT_MAX_DESCRIPTION_LENGTH,
        "max_group_members": c.CHAT_MAX_GROUP_MEMBERS,
        "max_attachments_per_message": c.CHAT_MAX_ATTACHMENTS_PER_MESSAGE,
        "max_upload_bytes": c.CHAT_MAX_UPLOAD_BYTES,
        "max_image_pixels": c.CHAT_MAX_IMAGE_PIXELS,
        "max_image_decode_bytes": c.CHAT_MAX_IMAGE_DECODE_BYTES,
        "thumbnail_size": c.CHAT_THUMBNAIL_SIZE,
        "max_image_edge": c.CHAT_MAX_IMAGE_EDGE,
        "max_voice_seconds": c.CHAT_MAX_VOICE_SECONDS,
        "max_media_seconds": c.CHAT_MAX_MEDIA_SECONDS,
        "media_types": sorted(attachments.MEDIA_TYPES),
        "max_json_bytes": c.API_MAX_JSON_BYTES,
        "fetch_default_limit": c.CHAT_FETCH_DEFAULT_LIMIT,
        "fetch_max_limit": c.CHAT_FETCH_MAX_LIMIT,
        "page_size": c.API_PAGE_SIZE,
        "max_page_size": c.API_MAX_PAGE_SIZE,
        "search_max_query_length": c.CHAT_SEARCH_MAX_QUERY_LENGTH,
        "search_max_results": c.CHAT_SEARCH_MAX_RESULTS,
        "send_rate": c.CHAT_SEND_RATE,
        "send_burst": c.CHAT_SEND_BURST,
        "react_rate": c.CHAT_REACT_RATE,
        "react_burst": c.CHAT_REACT_BURST,
        "max_reactions": c.CHAT_MAX_REACTIONS,
        "api_rate": c.API_THROTTLE_RATE,
        "api_burst": c.API_THROTTLE_BURST,
        "upload_rate": c.API_UPLOAD_RATE,
        "upload_burst": c.API_UPLOAD_BURST,
        "search_rate": c.API_SEARCH_RATE,
        "search_burst": c.API_SEARCH_BURST,
        "typing_rate": c.CHAT_TYPING_RATE,
        "typing_burst": c.CHAT_TYPING_BURST,
        "typing_max_members": c.CHAT_TYPING_MAX_MEMBERS,
        "login_failure_limit": c.LOGIN_FAILURE_LIMIT,
        "login_lockout_seconds": c.LOGIN_LOCKOUT_SECONDS,
        "max_devices_per_user": c.CHAT_MAX_DEVICES_PER_USER,
        "ws_max_frame_bytes": MAX_FRAME_BYTES,
        "ws_heartbeat_interval": c.WS_HEARTBEAT_INTERVAL,
        "ws_max_connections_per_user": c.WS_MAX_CONNECTIONS_PER_USER,
        "ws_ticket_ttl": c.WS_TICKET_TTL,
        "ws_frame_budgets": {
            name: {
                "rate": rate,
                "burst": burst,
                "frames": [t for t, n in frames.BUDGET_CLASSES.items() if n == name],
            }
            for name, (rate, burst) in c.WS_FRAME_BUDGETS.items()
        },
        "jwt_access_seconds": int(c.SIMPLE_JWT["ACCESS_TOKEN_LIFETIME"].total_seconds()),
    }


# --- blocking, reports, delete for me ---------------------------------------------------

USER_ID = _path_id("user_id", "A user.")
HIDDEN_LIMIT = 500


class UserBlockApi(APIView):
    """Block a person: no direct messages, presence or typing between you, both ways."""

    @extend_schema(
        operation_id="users_block",
        tags=["blocking"],
        parameters=[USER_ID],
        request=None,
        responses={200: s.BlockSerializer, **error_responses(400, 404, 429, *AUTHENTICATED)},
    )
    def put(self, request: Request, user_id: int) -> Response:
        """Block the user (idempotent); answer the block."""
        block = services.block_user(user=_user(request), other_user_id=user_id)
        return Response(wire.block_payload(block))

    @extend_schema(
        operation_id="users_unblock",
        tags=["blocking"],
        parameters=[USER_ID],
        request=None,
        responses={204: None, **error_responses(404, 429, *AUTHENTICATED)},
    )
    def delete(self, request: Request, user_id: int) -> Response:
        """Unblock the user (nothing happens if you had not blocked them)."""
        services.unblock_user(user=_user(request), other_user_id=user_id)
        return Response(status=204)


class BlockListApi(APIView):
    """The people you blocked."""

    @extend_schema(
        operation_id="blocks_list",
        tags=["blocking"],
        responses={200: s.BlockListSerializer, **error_responses(*AUTHENTICATED)},
    )
    def get(self, request: Request) -> Response:
        """Answer `{results}`, newest first."""
        blocks = selectors.list_blocks(user=_user(request))
        return Response({"results": [wire.block_payload(b) for b in blocks]})


class MessageReportApi(APIView):
    """Report a message to staff with a reason."""

    @extend_schema(
        operation_id="messages_report",
        tags=["messages"],
        parameters=[CONVERSATION_ID, MESSAGE_ID],
        request=s.ReportCreateSerializer,
        responses={
            201: s.ReportSerializer,
            200: s.ReportSerializer,
            **error_responses(400, 403, 404, 429, *AUTHENTICATED),
        },
    )
    def post(self, request: Request, conversation_id: int, message_id: int) -> Response:
        """Answer the report: 201 when new, 200 when you had reported it already."""
        data = _valid(s.ReportCreateSerializer, request.data)
        report, created = services.report_message(
            user=_user(request),
            conversation_id=conversation_id,
            message_id=message_id,
            reason=data["reason"],
            details=data["details"],
        )
        return Response(wire.report_payload(report), status=201 if created else 200)


class MessageHideApi(APIView):
    """Delete a message for yourself: hidden on all of your devices, nobody else's."""

    @extend_schema(
        operation_id="messages_hide",
        tags=["messages"],
        parameters=[CONVERSATION_ID, MESSAGE_ID],
        request=None,
        responses={200: s.HiddenSerializer, **error_responses(403, 404, 429, *AUTHENTICATED)},
    )
    def post(self, request: Request, conversation_id: int, message_id: int) -> Response:
        """Hide the message (idempotent); answer the hidden record (its `id` is a cursor)."""
        hidden = services.hide_message(
            user=_user(request), conversation_id=conversation_id, message_id=message_id
        )
        return Response(wire.hidden_payload(hidden))


class HiddenMessageListApi(APIView):
    """The messages you deleted for yourself, for a device catching up."""

    @extend_schema(
        operation_id="hidden_messages_list",
        tags=["messages"],
        parameters=[s.HiddenQuerySerializer],
        responses={200: s.HiddenPageSerializer, **error_responses(400, *AUTHENTICATED)},
    )
    def get(self, request: Request) -> Response:
        """Answer `{results, cursor, has_more}`: hidden messages with an id past `after`."""
        after = _valid(s.HiddenQuerySerializer, request.query_params)["after"]
        rows = selectors.list_hidden_messages(
            user=_user(request), after=after, limit=HIDDEN_LIMIT + 1
        )
        has_more = len(rows) > HIDDEN_LIMIT
        rows = rows[:HIDDEN_LIMIT]
        return Response(
            {
                "results": [wire.hidden_payload(h) for h in rows],
                "cursor": rows[-1].pk if rows else after,
                "has_more": has_more,
            }
        )
