"""Account writes: sign-up and its budget per address, profile changes (name, status)."""

from __future__ import annotations

from datetime import datetime, timedelta
from types import EllipsisType

from django.conf import settings
from django.contrib.auth import password_validation
from django.contrib.auth.validators import ASCIIUsernameValidator
from django.core.exceptions import ValidationError
from django.core.validators import EmailValidator
from django.db import IntegrityError, transaction
from django.dispatch import Signal
from django.utils import timezone

from accounts.models import User
from chatsite import ratelimit, text
from chatsite.clientaddr import address_group
from chatsite.errors import BadRequest, DomainError, RetryInMinutes

# Sent after commit when a user's sticky status changed: `user_id`, `status`. Presence
# listens (a REST status change must reach presence subscribers like `status.set` does).
status_changed = Signal()

# Sent after commit when what others see of a user (display name, picture) changed:
# `user_id`. Messaging listens and tells the user's conversations (`user.updated`).
profile_changed = Signal()

# The furthest ahead a status may be set to end by itself.
STATUS_UNTIL_MAX = timedelta(days=30)

# Names nobody may sign up with: they would pass for the service or its staff.
RESERVED_USERNAMES = frozenset(
    {"admin", "administrator", "root", "staff", "support", "system", "moderator", "security"}
)


class RegistrationClosed(DomainError):
    """Sign-up is turned off on this server (`REGISTRATION_OPEN=0`)."""

    code = "forbidden"
    http_status = 403
    default_message = "Sign-up is closed on this server."


class TooManySignups(RetryInMinutes):
    """This client address used up its sign-ups; retry after `retry_after` seconds."""

    template = "Too many sign-ups from your network; try again in {wait}."


class UsernameUnavailable(BadRequest):
    """The username is taken or reserved (never said which)."""

    default_message = "This username is not available."

    def __init__(self) -> None:
        super().__init__(details={"field": "username"})


def _clean_display_name(display_name: str) -> str:
    """Return the display name cleaned by the one rule for names (`chatsite.text`)."""
    max_length = User._meta.get_field("display_name").max_length or 64
    return text.clean_name(
        display_name, field="display_name", max_length=max_length, required=False
    )


def _clean_username(username: str) -> str:
    """Return the username if it is 1..150 ASCII letters, digits and @.+-_ ."""
    if not username:
        raise BadRequest("username is required.", details={"field": "username"})
    if len(username) > 150:
        raise BadRequest("username is longer than 150 characters.", details={"field": "username"})
    try:
        # ASCII only: look-alike letters from other scripts would let one user pass for another.
        ASCIIUsernameValidator()(username)
    except ValidationError as exc:
        raise BadRequest(
            "username may contain only English letters, digits and @ . + - _",
            details={"field": "username"},
        ) from exc
    return username


def check_signup_budget(address: str) -> None:
    """Take one sign-up from the client address's budget, or raise TooManySignups.

    A burst of `REGISTER_BURST`, then one per `REGISTER_INTERVAL` seconds, per address
    (`chatsite.clientaddr`: an IPv6 /64 counts as one), shared by all gateways.
    """
    verdict = ratelimit.take_one_per(
        f"signup:{address_group(address)}",
        interval=settings.REGISTER_INTERVAL,
        burst=settings.REGISTER_BURST,
        kind="signup",
    )
    if not verdict.allowed:
        raise TooManySignups(verdict.retry_after)


def register_user(
    *, username: str, password: str, display_name: str = "", email: str = "", address: str
) -> User:
    """Create an active account, or raise; a taken or reserved name gets one same answer.

    `email` (optional) is where password reset links and missed-message emails go.

    Every attempt from `address` (the client's) takes from its sign-up budget, refused
    ones too: probing for taken names costs the same as signing up.
    Usernames are unique regardless of case (`Ana` and `ana` would pass for each other).
    """
    if not settings.REGISTRATION_OPEN:
        raise RegistrationClosed()
    check_signup_budget(address)
    name = _clean_username(username)
    shown = _clean_display_name(display_name)
    address_for_mail = _clean_email(email) if email else ""
    if not password:
        raise BadRequest("password is required.", details={"field": "password"})
    try:
        password_validation.validate_password(
            password, user=User(username=name, display_name=shown)
        )
    except ValidationError as exc:
        raise BadRequest(
            "This password is too weak.",
            details={"field": "password", "errors": list(exc.messages)},
        ) from exc
    if name.lower() in RESERVED_USERNAMES or User.objects.filter(username__iexact=name).exists():
        raise UsernameUnavailable()
    try:
        with transaction.atomic():
            return User.objects.create_user(
                username=name,
                password=password,
                display_name=shown,
                email=address_for_mail,
                name_flagged=text.mixed_scripts(shown),
            )
    except IntegrityError as exc:
        # Another sign-up took the name between the check and the insert.
        raise UsernameUnavailable() from exc


def _clean_email(email: str) -> str:
    """Return an email address normalized (domain lower-cased), or "" to remove it."""
    email = email.strip()
    if not email:
        return ""
    if len(email) > 254:
        raise BadRequest("email is longer than 254 characters.", details={"field": "email"})
    try:
        EmailValidator()(email)
    except ValidationError as exc:
        raise BadRequest("That is not an email address.", details={"field": "email"}) from exc
    local, _, domain = email.rpartition("@")
    return f"{local}@{domain.lower()}"


def update_profile(
    *,
    user: User,
    display_name: str | None = None,
    status: str | None = None,
    email: str | None = None,
    email_notifications: bool | None = None,
    group_adds: str | None = None,
    status_until: datetime | None | EllipsisType = ...,
) -> User:
    """Change the user's display name, sticky status, email address or email notifications.

    `status_until` (omitted: `...`) is when a busy status ends by itself: an aware time
    in the next `STATUS_UNTIL_MAX`, or None for no end. Setting `status` without it
    removes any end; setting it without `status` keeps the status (which must be busy).
    A status change is announced after commit through `status_changed`.
    """
    fields: list[str] = []
    renamed = False
    if display_name is not None:
        name = _clean_display_name(display_name)
        renamed = name != user.display_name
        user.display_name = name
        user.name_flagged = text.mixed_scripts(user.display_name)
        fields += ["display_name", "name_flagged"]
    if email is not None:
        user.email = _clean_email(email)
        fields.append("email")
    if email_notifications is not None:
        user.email_notifications = email_notifications
        fields.append("email_notifications")
    if group_adds is not None:
        user.group_adds = group_adds
        fields.append("group_adds")
    status_moved = False
    if status is not None or status_until is not ...:
        now = timezone.now()
        until = None if status_until is ... else status_until
        new_status = status if status is not None else user.current_status
        _check_status_until(new_status, until, now)
        status_moved = new_status != user.current_status
        user.status, user.status_until = new_status, until
        fields += ["status", "status_until"]
    if not fields:
        return user
    with transaction.atomic():
        User.objects.filter(pk=user.pk).update(**{f: getattr(user, f) for f in fields})
        if status_moved:
            _announce_status(user.pk, user.status)
        if renamed:
            announce_profile(user.pk)
    return user


def announce_profile(user_id: int) -> None:
    """Send `profile_changed` once the current transaction commits."""
    transaction.on_commit(lambda: profile_changed.send(sender=User, user_id=user_id))


def _check_status_until(status: str, until: datetime | None, now: datetime) -> None:
    """Refuse an end for an available status, an end in the past, or one too far ahead."""
    if until is None:
        return
    if status == User.Status.AVAILABLE:
        raise BadRequest(
            "Only a busy status can end by itself; set status to busy with status_until.",
            details={"field": "status_until"},
        )
    if until <= now:
        raise BadRequest(
            "status_until is in the past; choose a time to come.",
            details={"field": "status_until"},
        )
    if until > now + STATUS_UNTIL_MAX:
        raise BadRequest(
            f"status_until is more than {STATUS_UNTIL_MAX.days} days ahead.",
            details={"field": "status_until", "max_days": STATUS_UNTIL_MAX.days},
        )


def _announce_status(user_id: int, status: str) -> None:
    """Send `status_changed` once the current transaction commits."""
    transaction.on_commit(lambda: status_changed.send(sender=User, user_id=user_id, status=status))


def expire_statuses(now: datetime | None = None) -> list[int]:
    """Make available every user whose status ended by `now`; return their ids.

    Readers already see such a status as available (`accounts.models.status_at`); this
    writes it down and announces it through `status_changed`, so contacts see the
    change live. Safe to run in several processes at once: each user is cleared (and
    announced) by the one whose conditional update matched.
    """
    now = now or timezone.now()
    due = list(
        User.objects.filter(status_until__isnull=False, status_until__lte=now).values_list(
            "pk", "status_until"
        )
    )
    cleared = []
    for user_id, until in due:
        with transaction.atomic():
            done = User.objects.filter(pk=user_id, status_until=until).update(
                status=User.Status.AVAILABLE, status_until=None
            )
            if done:
                _announce_status(user_id, User.Status.AVAILABLE)
                cleared.append(user_id)
    return cleared
