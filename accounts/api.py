"""Account endpoints: sign-up, JWT pairs, refresh, logout, WebSocket tickets, profile, directory.

Also the account settings: password change and sign out everywhere.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth import update_session_auth_hash
from django.http import FileResponse, HttpRequest
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.parsers import MultiPartParser
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.serializers import TokenRefreshSerializer
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

from accounts import avatars, login, selectors, services, tickets, tokens
from accounts.models import User
from chatsite import limits, rest
from chatsite.clientaddr import client_address
from chatsite.errors import BadRequest
from chatsite.openapi import AUTHENTICATED, error_responses
from chatsite.wire import iso_from_epoch
from messaging import wire


class CredentialsSerializer(serializers.Serializer[Any]):
    """A username and password."""

    username = rest.StrictCharField(max_length=150)
    password = rest.StrictCharField(max_length=4096, trim_whitespace=False)


class RefreshSerializer(serializers.Serializer[Any]):
    """A refresh token."""

    refresh = rest.StrictCharField(max_length=4096)


class TokenPairSerializer(serializers.Serializer[Any]):
    """A JWT pair: a short-lived access token and a rotating refresh token."""

    access = serializers.CharField()
    refresh = serializers.CharField()


class TicketSerializer(serializers.Serializer[Any]):
    """A single-use WebSocket ticket and when it stops being valid."""

    ticket = serializers.CharField()
    expires_at = serializers.DateTimeField()


class RegisterSerializer(serializers.Serializer[Any]):
    """A sign-up: username (ASCII letters, digits, @.+-_), password, display name, email."""

    username = rest.StrictCharField(max_length=150, trim_whitespace=False)
    password = rest.StrictCharField(max_length=4096, trim_whitespace=False, write_only=True)
    display_name = rest.StrictCharField(
        max_length=64, required=False, allow_blank=True, default="", trim_whitespace=False
    )
    email = rest.StrictCharField(
        max_length=254,
        required=False,
        allow_blank=True,
        default="",
        help_text="Optional: where password reset links and missed-message emails go.",
    )


class UserSerializer(serializers.Serializer[Any]):
    """A user as others see them."""

    id = serializers.IntegerField()
    username = serializers.CharField()
    display_name = serializers.CharField(help_text="The display name, else the username.")
    avatar_url = serializers.CharField(
        allow_null=True,
        help_text="The 256 x 256 picture (`-64.` for `-256.`: 64 x 64); null: show initials.",
    )


class PasswordChangeSerializer(serializers.Serializer[Any]):
    """The current password and the new one."""

    current_password = rest.StrictCharField(max_length=4096, trim_whitespace=False)
    new_password = rest.StrictCharField(max_length=4096, trim_whitespace=False)


class ProfileSerializer(UserSerializer):
    """The signed-in user: their public fields, the sticky status, email settings."""

    status = serializers.ChoiceField(
        choices=User.Status.choices, help_text="The status in force now."
    )
    status_until = serializers.DateTimeField(
        allow_null=True, help_text="When the busy status ends by itself; null: no end."
    )
    email = serializers.CharField(allow_blank=True, help_text="Where missed messages are emailed.")
    email_notifications = serializers.BooleanField(
        help_text="Missed-message emails on (when `email` is set)."
    )
    group_adds = serializers.ChoiceField(
        choices=User.GroupAdds.choices,
        help_text="Who may add you to a group without asking; anyone else sends a request.",
    )


class ProfileUpdateSerializer(serializers.Serializer[Any]):
    """Profile fields to change; all optional."""

    display_name = rest.StrictCharField(
        max_length=64, required=False, allow_blank=True, trim_whitespace=False
    )
    status = serializers.ChoiceField(choices=User.Status.choices, required=False)
    status_until = serializers.DateTimeField(
        required=False,
        allow_null=True,
        help_text=(
            "When a busy status ends by itself (ISO 8601 with an offset, at most 30 days"
            " ahead); null: no end. Setting `status` without it removes any end."
        ),
    )
    email = rest.StrictCharField(
        max_length=254, required=False, allow_blank=True, help_text="Empty removes it."
    )
    email_notifications = rest.StrictBooleanField(required=False)
    group_adds = serializers.ChoiceField(choices=User.GroupAdds.choices, required=False)


class AvatarUploadSerializer(serializers.Serializer[Any]):
    """A picture and, optionally, the square to keep (in the picture's pixels, upright)."""

    file = serializers.FileField(
        help_text=f"PNG, JPEG, GIF or WebP, at most {limits.MAX_AVATAR_BYTES} bytes."
    )
    x = serializers.IntegerField(required=False, min_value=0, max_value=limits.MAX_ID)
    y = serializers.IntegerField(required=False, min_value=0, max_value=limits.MAX_ID)
    size = serializers.IntegerField(
        required=False,
        max_value=limits.MAX_ID,
        help_text=(
            f"The square's side, at least {limits.MIN_AVATAR_CROP}; with `x` and `y`."
            " Without all three: the centred largest square."
        ),
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """Ask for all of `x`, `y`, `size` or none."""
        given = [k for k in ("x", "y", "size") if k in attrs]
        if given and len(given) != 3:
            missing = next(k for k in ("x", "y", "size") if k not in attrs)
            raise BadRequest(
                "Give the square as x, y and size together (or none of them).",
                details={"field": missing},
            )
        return attrs


class UserQuerySerializer(serializers.Serializer[Any]):
    """The directory's query: part of a username or display name."""

    q = serializers.CharField(required=False, allow_blank=True, default="", max_length=100)


class UserPageSerializer(serializers.Serializer[Any]):
    """A page of the user directory."""

    results = UserSerializer(many=True)
    next = serializers.URLField(allow_null=True, help_text="The next page's URL, or null.")


class TokenObtainApi(APIView):
    """Exchange a username and password for a JWT pair (a new login)."""

    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]

    @extend_schema(
        operation_id="auth_token",
        tags=["auth"],
        request=CredentialsSerializer,
        responses={200: TokenPairSerializer, **error_responses(400, 401, 429, 503)},
    )
    def post(self, request: Request) -> Response:
        """Answer `{access, refresh}`, 401 on bad credentials, 429 while locked out."""
        form = CredentialsSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        user = login.authenticate_login(**form.validated_data, address=client_address(request))
        return Response(tokens.issue_pair(user))


class TokenRefreshApi(APIView):
    """Rotate a refresh token: answer a new pair; the old refresh token stops working."""

    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]

    @extend_schema(
        operation_id="auth_token_refresh",
        tags=["auth"],
        request=RefreshSerializer,
        responses={200: TokenPairSerializer, **error_responses(400, 401, 503)},
    )
    def post(self, request: Request) -> Response:
        """Answer `{access, refresh}`, or 401 if the refresh token is not good any more."""
        form = RefreshSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        raw = form.validated_data["refresh"]
        try:
            refresh = RefreshToken(raw)
            user = User.objects.filter(pk=refresh.get("user_id")).first()
            if user is None or not tokens.token_still_valid_for(refresh, user):
                raise login.Unauthenticated("This refresh token is no longer valid.")
            pair = TokenRefreshSerializer().validate({"refresh": raw})
        except TokenError as exc:
            raise login.Unauthenticated("This refresh token is no longer valid.") from exc
        return Response(pair)


class LogoutApi(APIView):
    """Log out one login: its refresh and access tokens and its sockets stop working."""

    @extend_schema(
        operation_id="auth_logout",
        tags=["auth"],
        request=RefreshSerializer,
        responses={204: None, **error_responses(400, 403, *AUTHENTICATED)},
    )
    def post(self, request: Request) -> Response:
        """Revoke the given refresh token's login; answer 204."""
        form = RefreshSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        tokens.revoke(form.validated_data["refresh"], request.user)  # type: ignore[arg-type]
        return Response(status=204)


class LogoutAllApi(APIView):
    """Sign out everywhere: every login of the user ends, this one too."""

    @extend_schema(
        operation_id="auth_logout_all",
        tags=["auth"],
        request=None,
        responses={204: None, **error_responses(403, *AUTHENTICATED)},
    )
    def post(self, request: Request) -> Response:
        """Revoke every token, session and ticket of the user; sockets close with 4401; 204."""
        login.sign_out_everywhere(request.user)  # type: ignore[arg-type]
        if hasattr(request, "session"):
            request.session.flush()
        return Response(status=204)


class PasswordChangeApi(APIView):
    """Change the password; every other login ends, the calling device stays signed in."""

    @extend_schema(
        operation_id="users_me_password",
        tags=["users"],
        request=PasswordChangeSerializer,
        responses={200: TokenPairSerializer, **error_responses(400, 403, 429, *AUTHENTICATED)},
    )
    def post(self, request: Request) -> Response:
        """Answer a new `{access, refresh}` pair (a session caller's session also lives on).

        400 for a wrong current password (counted as a failed login) or a new password
        the validators refuse (`details.errors`); 429 while logins are locked out.
        """
        form = PasswordChangeSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        user = login.change_password(
            user=request.user,  # type: ignore[arg-type]
            **form.validated_data,
            address=client_address(request),
        )
        if not isinstance(request.auth, AccessToken):
            update_session_auth_hash(request._request, user)
        return Response(tokens.issue_pair(user))


class WsTicketApi(APIView):
    """Issue a single-use WebSocket ticket (for clients that cannot set headers)."""

    @extend_schema(
        operation_id="ws_tickets_create",
        tags=["auth"],
        request=None,
        responses={201: TicketSerializer, **error_responses(403, *AUTHENTICATED)},
    )
    def post(self, request: Request) -> Response:
        """Answer `{ticket, expires_at}`; the ticket is valid once, for 30 s.

        The ticket is bound to this login (its token family or session) and to the
        password as it is now: after a logout or a password change it opens nothing.
        """
        auth = request.auth
        user: User = request.user  # type: ignore[assignment]
        user_id = int(user.pk or 0)
        auth_hash = user.get_session_auth_hash()
        if isinstance(auth, AccessToken):
            grant = tickets.Grant(
                user_id=user_id,
                family=tokens.family_of(auth),
                expires_at=float(auth["exp"]),
                auth_hash=auth_hash,
            )
        else:
            grant = tickets.Grant(
                user_id=user_id, session_key=request.session.session_key, auth_hash=auth_hash
            )
        ticket, expires = tickets.issue(grant)
        return Response({"ticket": ticket, "expires_at": iso_from_epoch(expires)}, status=201)


class UserRegisterApi(APIView):
    """Create an account (then log in with `POST /auth/token`)."""

    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]

    @extend_schema(
        operation_id="auth_register",
        tags=["auth"],
        request=RegisterSerializer,
        responses={201: UserSerializer, **error_responses(400, 403, 429, 503)},
        examples=[
            OpenApiExample(
                "sign-up",
                value={"username": "ana", "password": "correct horse 7", "display_name": "Ana"},
                request_only=True,
            ),
            OpenApiExample(
                "created",
                value={"id": 7, "username": "ana", "display_name": "Ana"},
                response_only=True,
                status_codes=["201"],
            ),
        ],
    )
    def post(self, request: Request) -> Response:
        """Answer 201 `{id, username, display_name}`; a taken or reserved name is a 400."""
        form = RegisterSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        user = services.register_user(**form.validated_data, address=client_address(request))
        return Response(wire.user_payload(user), status=201)


class UserMeApi(APIView):
    """The signed-in user's profile."""

    @extend_schema(
        operation_id="users_me_retrieve",
        tags=["users"],
        responses={200: ProfileSerializer, **error_responses(*AUTHENTICATED)},
    )
    def get(self, request: Request) -> Response:
        """Answer `{id, username, display_name, status}`."""
        return Response(wire.profile_payload(request.user))  # type: ignore[arg-type]

    @extend_schema(
        operation_id="users_me_update",
        tags=["users"],
        request=ProfileUpdateSerializer,
        responses={200: ProfileSerializer, **error_responses(400, 403, *AUTHENTICATED)},
        examples=[
            OpenApiExample("do not disturb", value={"status": "busy"}, request_only=True),
            OpenApiExample(
                "busy until a time",
                value={"status": "busy", "status_until": "2030-01-01T10:00:00Z"},
                request_only=True,
            ),
        ],
    )
    def patch(self, request: Request) -> Response:
        """Change the name, `status` and `status_until`, email settings; answer the profile."""
        form = ProfileUpdateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        user = services.update_profile(user=request.user, **form.validated_data)  # type: ignore[arg-type]
        return Response(wire.profile_payload(user))


class PictureUploadApi(APIView):
    """A view that takes a picture (multipart `file`, `x`, `y`, `size`): a person's, a group's."""

    parser_classes = [MultiPartParser]
    throttle_classes = [rest.UserThrottle, rest.UploadThrottle]

    def initialize_request(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Request:
        """Put the size-limiting handler first, before anything can read the body."""
        handlers = list(request.upload_handlers)
        request.upload_handlers = [avatars.AvatarUploadHandler(request), *handlers]
        return super().initialize_request(request, *args, **kwargs)

    def picture(self, request: Request) -> tuple[Any, avatars.Crop | None]:
        """Return the uploaded file and the square asked for (None: the centred one)."""
        if request.FILES.get("file") is None:
            raise BadRequest(
                "Send the picture in the multipart field `file`.", details={"field": "file"}
            )
        form = AvatarUploadSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = form.validated_data
        crop = avatars.Crop(data["x"], data["y"], data["size"]) if "size" in data else None
        return data["file"], crop


class UserAvatarApi(PictureUploadApi):
    """The signed-in user's picture: upload one cropped to a square, or remove it."""

    @extend_schema(
        operation_id="users_me_avatar_set",
        tags=["users"],
        request={"multipart/form-data": AvatarUploadSerializer},
        responses={200: ProfileSerializer, **error_responses(400, 403, 413, *AUTHENTICATED)},
    )
    def put(self, request: Request) -> Response:
        """Make the picture (cropped to `x`, `y`, `size`) the user's; answer the profile.

        400 for what is not a picture, a square outside it or under the minimum; 413 for
        a file over the byte cap or an image over the decode-cost limit. A refused
        upload keeps the picture there was.
        """
        upload, crop = self.picture(request)
        user = avatars.set_avatar(user=request.user, upload=upload, crop=crop)  # type: ignore[arg-type]
        return Response(wire.profile_payload(user))

    @extend_schema(
        operation_id="users_me_avatar_delete",
        tags=["users"],
        request=None,
        responses={200: ProfileSerializer, **error_responses(403, *AUTHENTICATED)},
    )
    def delete(self, request: Request) -> Response:
        """Remove the picture (initials again); answer the profile."""
        user = avatars.remove_avatar(user=request.user)  # type: ignore[arg-type]
        return Response(wire.profile_payload(user))


class AvatarApi(APIView):
    """A stored picture, by its content-hashed name (signed-in users only)."""

    content_negotiation_class = rest.AnyContent

    @extend_schema(
        operation_id="avatars_retrieve",
        tags=["users"],
        responses={
            (200, "image/*"): OpenApiResponse(
                OpenApiTypes.BINARY,
                description=(
                    "The JPEG or PNG square; its name holds its hash, so it is cacheable for"
                    " ever (`immutable`); with `X-Content-Type-Options: nosniff`."
                ),
            ),
            **error_responses(404, *AUTHENTICATED),
        },
    )
    def get(self, request: Request, name: str) -> FileResponse:
        """Answer the picture; 404 for a name that is not one."""
        stream, content_type = avatars.open_avatar(name)
        response = FileResponse(stream, content_type=content_type)
        response["X-Content-Type-Options"] = "nosniff"
        response["Content-Security-Policy"] = "default-src 'none'; sandbox"
        response["Cross-Origin-Resource-Policy"] = "same-origin"
        response["Cache-Control"] = "private, max-age=31536000, immutable"
        return response


class UserListApi(APIView):
    """The user directory: active users whose username or display name contains `q`."""

    @extend_schema(
        operation_id="users_list",
        tags=["users"],
        parameters=[
            UserQuerySerializer,
            OpenApiParameter("cursor", str, description="From the previous page's `next`."),
            OpenApiParameter("limit", int, description="Page size, 1..200 (default 50)."),
        ],
        responses={200: UserPageSerializer, **error_responses(400, *AUTHENTICATED)},
    )
    def get(self, request: Request) -> Response:
        """Answer `{results: [{id, username, display_name}], next}` ordered by username."""
        size = rest.page_size(
            request, default=settings.API_PAGE_SIZE, maximum=settings.API_MAX_PAGE_SIZE
        )
        position = rest.decode_cursor(request) or {}
        after = position.get("u")
        if after is not None and not isinstance(after, str):
            raise BadRequest("cursor is not valid.", details={"field": "cursor"})
        form = UserQuerySerializer(data=request.query_params)
        form.is_valid(raise_exception=True)
        users = selectors.list_users(query=form.validated_data["q"], after=after, limit=size + 1)
        more = len(users) > size
        users = users[:size]
        following = {"u": users[-1].username} if more else None
        return Response(
            {
                "results": [wire.user_payload(u) for u in users],
                "next": rest.next_url(request, following),
            }
        )
