"""Errors raised by the messaging services; codes are the wire codes of PROTOCOL.md."""

from chatsite.errors import BadRequest, DomainError, RetryInMinutes
from chatsite.errors import RateLimited as BaseRateLimited

__all__ = [
    "ArchiveUnavailable",
    "BadRequest",
    "CannotSend",
    "Conflict",
    "EmptyMessage",
    "GroupFull",
    "MessageArchived",
    "MessageNotFound",
    "MessageTooLong",
    "NotAMember",
    "NotAllowed",
    "RateLimited",
    "UserNotFound",
]


class NotAMember(DomainError):
    """The user is not a member, or the conversation does not exist (never say which)."""

    code = "forbidden"
    http_status = 403
    default_message = "You are not a member of this conversation."


class NotAllowed(DomainError):
    """The user is a member but lacks the role or ownership the action needs."""

    code = "forbidden"
    http_status = 403
    default_message = "You are not allowed to do that in this conversation."


class MessageNotFound(DomainError):
    """No such message in a conversation the user can read."""

    code = "not_found"
    http_status = 404
    default_message = "No such message in this conversation."


class MessageArchived(DomainError):
    """The message was moved to the archive, where history is read-only."""

    code = "message_archived"
    http_status = 409
    default_message = "This message is archived; archived messages cannot be changed."


class ArchiveUnavailable(DomainError):
    """A segment of the archive could not be read, or did not match its checksum."""

    code = "archive_unavailable"
    http_status = 503
    default_message = "This part of the history is archived and cannot be read right now."


class UserNotFound(DomainError):
    """A user id given does not name an active user."""

    code = "not_found"
    http_status = 404
    default_message = "No such user."


class MessageTooLong(DomainError):
    """The body is longer than the configured limit."""

    code = "message_too_long"
    http_status = 413
    default_message = "The message is too long."


class EmptyMessage(DomainError):
    """The body is empty or only white space, and there is no attachment."""

    code = "empty_message"
    http_status = 400
    default_message = "The message is empty."


class Conflict(DomainError):
    """A `client_msg_id` was reused for a different conversation or body."""

    code = "conflict"
    http_status = 409
    default_message = "This client_msg_id was already used for a different message."


class RateLimited(BaseRateLimited):
    """Too many messages in too short a time; retry after `retry_after` seconds."""

    default_message = "Too many messages; slow down."


class GroupFull(DomainError):
    """Adding these members would pass the group size limit."""

    code = "group_full"
    http_status = 409
    default_message = "The group has reached its member limit."


class ImportRefused(DomainError):
    """An export cannot be written or loaded here (`messaging.portability`)."""

    code = "import_refused"
    http_status = 409


class ExportRateLimited(RetryInMinutes):
    """A user asked for their data too often (`EXPORT_BURST`, `EXPORT_INTERVAL`)."""

    template = "You downloaded your data a moment ago; try again in {wait}."


class CannotSend(DomainError):
    """A direct message between a blocked pair.

    The same words in both directions, so a block is never told apart from other refusals.
    """

    code = "cannot_send"
    http_status = 403
    default_message = "You cannot send messages to this conversation."


class AdminsOnly(DomainError):
    """A group where only admins may send (an announcement group), to a plain member."""

    code = "admins_only"
    http_status = 403
    default_message = "Only the group's admins can send messages here."
