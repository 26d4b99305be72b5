"""The site's URL map: pages, the admin, and (later) the REST API."""

from django.contrib import admin
from django.urls import include, path

from messaging import views as messaging_views

urlpatterns = [
    path("", include("messaging.page_urls")),
    path("healthz", messaging_views.healthz, name="healthz"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("api/v1/", include("accounts.urls")),
    path("api/v1/", include("presence.urls")),
    path("admin/", admin.site.urls),
]
