"""URLs of the pages browser users see (the web app), sign-up and the service worker."""

from django.urls import path

from accounts import views as account_views
from messaging import views

urlpatterns = [
    path("", views.home, name="home"),
    path("accounts/signup/", account_views.signup, name="signup"),
    # At the root, so the worker's scope is the whole site.
    path("sw.js", views.service_worker, name="service-worker"),
    path("app/public-groups", views.public_groups, name="public-groups"),
    path(
        "notifications/unsubscribe/<str:token>/",
        views.unsubscribe,
        name="notifications-unsubscribe",
    ),
]
