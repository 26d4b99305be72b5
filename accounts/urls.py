"""Account URLs under /api/v1/: auth, sign-up, profile, directory."""

from django.urls import path

from accounts import api

urlpatterns = [
    path("auth/register", api.UserRegisterApi.as_view(), name="auth-register"),
    path("auth/token", api.TokenObtainApi.as_view(), name="auth-token"),
    path("auth/token/refresh", api.TokenRefreshApi.as_view(), name="auth-token-refresh"),
    path("auth/logout", api.LogoutApi.as_view(), name="auth-logout"),
    path("auth/logout-all", api.LogoutAllApi.as_view(), name="auth-logout-all"),
    path("ws-tickets", api.WsTicketApi.as_view(), name="ws-tickets"),
    path("users/me", api.UserMeApi.as_view(), name="users-me"),
    path("users/me/password", api.PasswordChangeApi.as_view(), name="users-me-password"),
    path("users/me/avatar", api.UserAvatarApi.as_view(), name="users-me-avatar"),
    path("avatars/<str:name>", api.AvatarApi.as_view(), name="avatars"),
    path("users", api.UserListApi.as_view(), name="users"),
]
