"""Auth URLs under /api/v1/."""

from django.urls import path

from accounts import api

urlpatterns = [
    path("auth/token", api.TokenObtainApi.as_view(), name="auth-token"),
    path("auth/token/refresh", api.TokenRefreshApi.as_view(), name="auth-token-refresh"),
    path("auth/logout", api.LogoutApi.as_view(), name="auth-logout"),
    path("ws-tickets", api.WsTicketApi.as_view(), name="ws-tickets"),
]
