"""Password reset by email: budgets per client address and per email, mail only when it can go.

The reset page (`accounts.views.password_reset`) asks for an email address. Every
request takes one from the client address's budget (`PASSWORD_RESET_ADDRESS_BURST`,
refilled one per `PASSWORD_RESET_ADDRESS_INTERVAL` seconds; an IPv6 /64 counts as one)
and one from the email's (`PASSWORD_RESET_EMAIL_BURST`, one per
`PASSWORD_RESET_EMAIL_INTERVAL`), whether or not an account has that email; within
both, each active account with that email gets a link to set a new password (valid for
`PASSWORD_RESET_TIMEOUT` seconds), through the same mail settings as the missed-message
emails. The page answers the same either way, so it tells nobody which addresses have
accounts or whether a budget ran out.

Without a mail server (`EMAIL_HOST` unset, or `PASSWORD_RESET=0`) the reset is off: the
page says so and sends nothing (the console backend would write the link, a key to the
account, into the log).
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth.forms import PasswordResetForm
from django.core.mail import EmailMultiAlternatives
from django.template import loader

from chatsite import ratelimit
from chatsite.clientaddr import address_group
from chatsite.errors import in_minutes

logger = logging.getLogger(__name__)


def available() -> bool:
    """Return whether password reset emails can be sent (a mail server is configured)."""
    return bool(settings.PASSWORD_RESET_ENABLED)


class _ResetForm(PasswordResetForm):
    """Django's form; a failed send is one warning line (Django's logs an ERROR traceback)."""

    def send_mail(
        self,
        subject_template_name: str,
        email_template_name: str,
        context: dict[str, Any],
        from_email: str | None,
        to_email: str,
        html_email_template_name: str | None = None,
    ) -> None:
        """Send one reset email; log a failure as a warning, without the link."""
        subject = "".join(loader.render_to_string(subject_template_name, context).splitlines())
        body = loader.render_to_string(email_template_name, context)
        message = EmailMultiAlternatives(subject, body, from_email, [to_email])
        try:
            message.send()
        except Exception as exc:  # noqa: BLE001 - the page answers the same either way
            logger.warning("password reset email to user %s failed: %s", context["user"].pk, exc)


def _within_budgets(email: str, address: str) -> bool:
    by_address = ratelimit.take_one_per(
        f"pwreset:address:{address_group(address)}",
        interval=settings.PASSWORD_RESET_ADDRESS_INTERVAL,
        burst=settings.PASSWORD_RESET_ADDRESS_BURST,
        kind="password_reset",
    )
    if not by_address.allowed:
        logger.info("password reset refused: the client address's budget is spent")
        return False
    digest = hashlib.sha256(email.encode()).hexdigest()[:32]  # no addresses in Redis keys
    by_email = ratelimit.take_one_per(
        f"pwreset:email:{digest}",
        interval=settings.PASSWORD_RESET_EMAIL_INTERVAL,
        burst=settings.PASSWORD_RESET_EMAIL_BURST,
        kind="password_reset",
    )
    if not by_email.allowed:
        logger.info("password reset refused: the email's budget is spent")
        return False
    return True


def request_reset(*, email: str, address: str) -> bool:
    """Send reset links to the accounts with `email`, within the budgets.

    Returns False when a budget refused (nothing sent), True otherwise (sent to every
    active account with that email: none, one or several). `address` is the client's
    (`chatsite.clientaddr.client_address`). Callers answer the same in both cases.
    """
    if not available():
        return False
    normalized = email.strip().lower()
    if not _within_budgets(normalized, address):
        return False
    form = _ResetForm({"email": normalized})
    if not form.is_valid():
        return True
    site = urlsplit(settings.SITE_URL)
    # The link's origin is SITE_URL, never the request's Host header.
    form.save(
        domain_override=site.netloc,
        use_https=site.scheme == "https",
        subject_template_name="registration/password_reset_subject.txt",
        email_template_name="registration/password_reset_email.txt",
        extra_email_context={"valid_for": in_minutes(settings.PASSWORD_RESET_TIMEOUT)},
    )
    return True
