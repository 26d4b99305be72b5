"""DRF authentication: simplejwt access tokens whose login family was not logged out."""

from __future__ import annotations

from typing import Any

from rest_framework_simplejwt.authentication import JWTAuthentication as BaseJWTAuthentication
from rest_framework_simplejwt.exceptions import AuthenticationFailed
from rest_framework_simplejwt.tokens import Token

from accounts.tokens import family_of, revoked_families


class JWTAuthentication(BaseJWTAuthentication):
    """Accept `Authorization: Bearer <access>` unless the token's login was logged out."""

    def get_user(self, validated_token: Token) -> Any:
        """Return the token's user, refusing revoked families (and simplejwt's own checks)."""
        user = super().get_user(validated_token)
        family = family_of(validated_token)  # type: ignore[arg-type]
        if family and revoked_families([family]):
            raise AuthenticationFailed("This login was logged out.", code="token_revoked")
        return user
