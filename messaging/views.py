"""Pages for browser users (the web app, its service worker) and the health check."""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.contrib.staticfiles import finders
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.templatetags.static import static
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods

from accounts import services as account_services
from accounts.models import User
from chatsite.api import error_body
from chatsite.wire import iso
from messaging import asyncapi, selectors, wire
from messaging.notifications import payloads

# The app's ES modules: the service worker caches them so the app opens offline. Modules
# import each other by relative, unhashed names, so those are the URLs cached.
APP_MODULES = (
    "api.js",
    "app.js",
    "backoff.js",
    "client.js",
    "dom.js",
    "emoji-data.js",
    "format.js",
    "history-store.js",
    "markup.js",
    "notify.js",
    "outbox.js",
    "state.js",
    "ui/actions.js",
    "ui/announce.js",
    "ui/blocking.js",
    "ui/composer.js",
    "ui/conversation.js",
    "ui/dialogs.js",
    "ui/emoji.js",
    "ui/group-settings.js",
    "ui/helpers.js",
    "ui/list.js",
    "ui/messages.js",
    "ui/notifications.js",
    "ui/presence.js",
    "ui/search.js",
    "ui/shared.js",
    "ui/switcher.js",
    "ui/typing.js",
    "ui/voice.js",
    "ui/viewer.js",
    "worker/hub.js",
    "worker/shared.js",
    "worker/tabs.js",
)
PUBLIC_GROUPS_LIMIT = 50


def _user(request: HttpRequest) -> User:
    user = request.user
    assert isinstance(user, User)  # noqa: S101 - login_required ran first
    return user


@login_required
@never_cache
def home(request: HttpRequest) -> HttpResponse:
    """Render the app with the user and their conversations as a JSON bootstrap."""
    user = _user(request)
    conversations = wire.shown(selectors.list_conversations_for_user(user=user))
    profile = wire.profile_payload(user)
    bootstrap = {
        "user": {
            "id": user.pk,
            "username": user.username,
            "display_name": user.name,
            "avatar_url": user.avatar_url,
            "status": profile["status"],
            "status_until": profile["status_until"],
        },
        "conversations": [wire.conversation_payload(v) for v in conversations],
        "vapid_public_key": settings.WEBPUSH_VAPID_PUBLIC_KEY,
        "max_message_length": settings.CHAT_MAX_MESSAGE_LENGTH,
        "max_upload_bytes": settings.CHAT_MAX_UPLOAD_BYTES,
        "max_attachments": settings.CHAT_MAX_ATTACHMENTS_PER_MESSAGE,
        "max_voice_seconds": settings.CHAT_MAX_VOICE_SECONDS,
    }
    return render(request, "messaging/app.html", {"bootstrap": bootstrap})


@require_GET
def public_groups(request: HttpRequest) -> JsonResponse:
    """Answer `{results: [{id, title, last_activity_at, joined}]}`: public groups to browse."""
    if not request.user.is_authenticated:
        return JsonResponse(error_body("unauthenticated", "Log in first."), status=401)
    query = request.GET.get("q", "")[: settings.CHAT_MAX_TITLE_LENGTH]
    mine = set(selectors.list_conversation_ids_for_user(user=_user(request)))
    groups = selectors.list_public_groups(query=query, limit=PUBLIC_GROUPS_LIMIT)
    results = [
        {
            "id": g.pk,
            "title": g.title,
            "last_activity_at": iso(g.last_activity_at),
            "joined": g.pk in mine,
        }
        for g in groups
    ]
    return JsonResponse({"results": results})


# The files the service worker precaches, relative to the static root.
_ASSETS = ("css/app.css", "img/icon.svg", *(f"js/{name}" for name in APP_MODULES))


def _read_static(relative: str) -> bytes:
    found = finders.find(relative)
    if not found:
        raise Http404(f"no static file {relative}")
    # find() answers one path (a list only with all=True).
    return Path(str(found)).read_bytes()


def _service_worker() -> tuple[str, list[str]]:
    """Return the worker's script and the URLs it precaches, with a version of both."""
    source = _read_static("js/sw.js").decode()
    urls = {static(name) for name in _ASSETS} | {f"{settings.STATIC_URL}{n}" for n in _ASSETS}
    precache = sorted(u if u.startswith("/") else f"/{u}" for u in urls)
    # The version covers the worker, the list and every cached file's bytes: any change
    # makes the browser install the new worker, which re-fetches everything into a new
    # cache and drops the old one.
    digest = hashlib.sha256(source.encode())
    for name in _ASSETS:
        digest.update(_read_static(name))
    digest.update("\n".join(precache).encode())
    header: dict[str, Any] = {"version": digest.hexdigest()[:16], "precache": precache}
    return f"self.SW_CONFIG = {json.dumps(header)};\n{source}", precache


_cached_service_worker = lru_cache(maxsize=1)(_service_worker)


@require_GET
def service_worker(request: HttpRequest) -> HttpResponse:
    """Serve the service worker from the site root, so its scope covers the whole app."""
    # Read afresh in debug (files change under the developer); once per process otherwise.
    body, _ = _service_worker() if settings.DEBUG else _cached_service_worker()
    response = HttpResponse(body, content_type="text/javascript; charset=utf-8")
    response["Cache-Control"] = "no-cache"
    return response


@csrf_exempt  # RFC 8058: the mail client posts with no cookie and no CSRF token
@never_cache
@require_http_methods(["GET", "POST"])
def unsubscribe(request: HttpRequest, token: str) -> HttpResponse:
    """Turn missed-message emails off by the signed link of an email (one click, RFC 8058).

    GET asks first (a link scanner must not unsubscribe anyone); POST, from the page's
    button or from the mail client's `List-Unsubscribe=One-Click`, does it (idempotent).
    """
    user_id = payloads.unsubscribe_user_id(token)
    user = User.objects.filter(pk=user_id).first() if user_id is not None else None
    context: dict[str, Any] = {"valid": user is not None, "done": False, "email": ""}
    if user is None:
        return render(request, "notifications/unsubscribe.html", context, status=404)
    context["email"] = user.email
    if request.method == "POST":
        account_services.update_profile(user=user, email_notifications=False)
        context["done"] = True
    return render(request, "notifications/unsubscribe.html", context)


@require_GET
def asyncapi_document(request: HttpRequest) -> JsonResponse:
    """Answer the AsyncAPI 3 document of the WebSocket protocol."""
    return JsonResponse(asyncapi.document(), json_dumps_params={"indent": 1})


@require_GET
def websocket_docs(request: HttpRequest) -> HttpResponse:
    """Render the WebSocket protocol from its AsyncAPI document."""
    return render(request, "api/websocket.html", asyncapi.page_context())
