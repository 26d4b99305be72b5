"""DRF authentication: simplejwt access tokens whose login family was not logged out.

Refusals are DRF's `AuthenticationFailed` (401) with `{"message", "token"}`: a sentence
for a person, and what is wrong with the token for a program (`chatsite.api` renders
them as `message` and `details.token`).
"""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions
from rest_framework_simplejwt.authentication import JWTAuthentication as BaseJWTAuthentication
from rest_framework_simplejwt.exceptions import AuthenticationFailed as TokenRefused
from rest_framework_simplejwt.exceptions import ExpiredTokenError, TokenError
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.tokens import Token

from accounts.tokens import epoch_of, family_of, revoked_families

EXPIRED = "Your access token has expired; refresh it or log in again."
INVALID = "Your access token is not valid; log in again."
MALFORMED = "The Authorization header must be `Bearer <access token>`."
REVOKED = "This login was logged out; log in again."
SIGNED_OUT_EVERYWHERE = "You signed out everywhere; log in again."
CREDENTIALS_CHANGED = "Your password was changed; log in again."
INACTIVE = "This account is deactivated."

# simplejwt's refusal codes in `get_user`, as (message, details.token).
_USER_REFUSALS = {
    "password_changed": (CREDENTIALS_CHANGED, "password_changed"),
    "user_inactive": (INACTIVE, "inactive"),
}


def refused(message: str, token: str) -> exceptions.AuthenticationFailed:
    """Return a 401 refusal: `message` for a person, `token` (its state) for a program."""
    return exceptions.AuthenticationFailed({"message": message, "token": token})


class JWTAuthentication(BaseJWTAuthentication):
    """Accept `Authorization: Bearer <access>` unless the token's login was logged out."""

    def get_raw_token(self, header: bytes) -> bytes | None:
        """Return the token of a `Bearer` header; refuse a Bearer header without one."""
        try:
            return super().get_raw_token(header)
        except TokenRefused as exc:
            raise refused(MALFORMED, "malformed") from exc

    def get_validated_token(self, raw_token: bytes) -> Token:
        """Return the checked access token; refuse it as expired or as not valid."""
        expired = False
        for token_class in api_settings.AUTH_TOKEN_CLASSES:
            try:
                token: Token = token_class(raw_token)
            except ExpiredTokenError:
                expired = True
            except TokenError:
                continue
            else:
                return token
        raise refused(EXPIRED, "expired") if expired else refused(INVALID, "invalid")

    def get_user(self, validated_token: Token) -> Any:
        """Return the token's user, refusing revoked families (and simplejwt's own checks)."""
        try:
            user = super().get_user(validated_token)
        except TokenRefused as exc:
            detail: Any = exc.detail
            code = str(detail.get("code", "")) if isinstance(detail, dict) else ""
            message, token = _USER_REFUSALS.get(code, (INVALID, "invalid"))
            raise refused(message, token) from exc
        family = family_of(validated_token)  # type: ignore[arg-type]
        if family and revoked_families([family]):
            raise refused(REVOKED, "revoked")
        if epoch_of(validated_token) != getattr(user, "login_epoch", 0):  # type: ignore[arg-type]
            raise refused(SIGNED_OUT_EVERYWHERE, "revoked")
        return user
