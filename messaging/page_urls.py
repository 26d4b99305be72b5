"""URLs of the pages browser users see (the web app)."""

from django.urls import path

from messaging import views

urlpatterns = [
    path("", views.home, name="home"),
]
