"""Messaging URLs under /api/v1/ (PROTOCOL.md section 4)."""

from django.urls import path, register_converter

from messaging.api import views
from messaging.api.serializers import MAX_ID


class IdConverter:
    """A database id in a path: digits; ids past the bigint range name nothing (0).

    Mapping them to 0 gives them the same answer as any other id that does not exist,
    instead of a database error.
    """

    regex = "[0-9]+"

    def to_python(self, value: str) -> int:
        """Return the id, or 0 when it cannot be a database id."""
        number = int(value)
        return number if number <= MAX_ID else 0

    def to_url(self, value: int) -> str:
        """Return the id as digits."""
        return str(value)


register_converter(IdConverter, "id")

urlpatterns = [
    path("conversations", views.ConversationListApi.as_view(), name="conversations"),
    path(
        "conversations/<id:conversation_id>",
        views.ConversationDetailApi.as_view(),
        name="conversation",
    ),
    path(
        "conversations/<id:conversation_id>/members",
        views.MemberAddApi.as_view(),
        name="conversation-members",
    ),
    path(
        "conversations/<id:conversation_id>/picture",
        views.GroupPictureApi.as_view(),
        name="conversation-picture",
    ),
    path(
        "conversations/<id:conversation_id>/members/<id:user_id>",
        views.MemberRemoveApi.as_view(),
        name="conversation-member",
    ),
    path(
        "conversations/<id:conversation_id>/messages",
        views.MessageListApi.as_view(),
        name="conversation-messages",
    ),
    path(
        "conversations/<id:conversation_id>/messages/<id:message_id>",
        views.MessageDetailApi.as_view(),
        name="conversation-message",
    ),
    path(
        "conversations/<id:conversation_id>/messages/<id:message_id>/reactions/<str:emoji>",
        views.MessageReactionApi.as_view(),
        name="conversation-message-reaction",
    ),
    path(
        "conversations/<id:conversation_id>/messages/<id:message_id>/notifications",
        views.MessageNotificationsApi.as_view(),
        name="conversation-message-notifications",
    ),
    path(
        "conversations/<id:conversation_id>/accept",
        views.RequestAcceptApi.as_view(),
        name="conversation-accept",
    ),
    path(
        "conversations/<id:conversation_id>/decline",
        views.RequestDeclineApi.as_view(),
        name="conversation-decline",
    ),
    path(
        "conversations/<id:conversation_id>/read",
        views.ConversationReadApi.as_view(),
        name="conversation-read",
    ),
    path("attachments", views.AttachmentUploadApi.as_view(), name="attachments"),
    path(
        "attachments/<id:attachment_id>",
        views.AttachmentDownloadApi.as_view(),
        name="attachment",
    ),
    path("search", views.SearchApi.as_view(), name="search"),
    path("devices", views.DeviceRegisterApi.as_view(), name="devices"),
    path("devices/<id:device_id>", views.DeviceRemoveApi.as_view(), name="device"),
    path("users/me/export", views.OwnDataExportApi.as_view(), name="users-me-export"),
    path("server/limits", views.ServerLimitsApi.as_view(), name="server-limits"),
    # blocking, reports, delete for me
    path("users/<id:user_id>/block", views.UserBlockApi.as_view(), name="user-block"),
    path("blocks", views.BlockListApi.as_view(), name="blocks"),
    path(
        "conversations/<id:conversation_id>/messages/<id:message_id>/report",
        views.MessageReportApi.as_view(),
        name="conversation-message-report",
    ),
    path(
        "conversations/<id:conversation_id>/messages/<id:message_id>/hide",
        views.MessageHideApi.as_view(),
        name="conversation-message-hide",
    ),
    path("hidden-messages", views.HiddenMessageListApi.as_view(), name="hidden-messages"),
]
