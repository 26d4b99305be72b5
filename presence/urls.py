"""Presence URLs under /api/v1/."""

from django.urls import path

from presence import api

urlpatterns = [path("presence", api.PresenceListApi.as_view(), name="presence")]
