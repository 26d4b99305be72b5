"""The site's URL map: pages, the admin, the REST API and its OpenAPI schema and docs."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView

from accounts import views as account_views
from chatsite import health
from chatsite.openapi import ApiDocsView
from messaging import views as messaging_views

urlpatterns = [
    path("", include("messaging.page_urls")),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    # Before Django's own: the login page whose form applies the lockout.
    path("accounts/login/", account_views.login_page, name="login"),
    # Before Django's own: budgets per address and email, and off without a mail server.
    path("accounts/password_reset/", account_views.password_reset, name="password_reset"),
    # Before Django's own (the admin's look): the app's page, through the lockout.
    path("accounts/password_change/", account_views.password_change, name="password_change"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("api/v1/", include("accounts.urls")),
    path("api/v1/", include("presence.urls")),
    path("api/v1/", include("messaging.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", ApiDocsView.as_view(url_name="api-schema"), name="api-docs"),
    path("api/asyncapi.json", messaging_views.asyncapi_document, name="asyncapi"),
    path("api/docs/websocket", messaging_views.websocket_docs, name="websocket-docs"),
    path("admin/", admin.site.urls),
]

# JSON errors under /api/ (HTML pages elsewhere) for requests Django refuses before a view
# (over its form limits, a bad Host), URLs no view matches, and crashes.
handler400 = "chatsite.rest.bad_request"
handler404 = "chatsite.rest.not_found"
handler500 = "chatsite.rest.server_error"
