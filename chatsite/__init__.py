"""The chat site: settings, URLs, ASGI/WSGI entry points and the Celery app."""

from chatsite.celery import app as celery_app

__all__ = ["celery_app"]
