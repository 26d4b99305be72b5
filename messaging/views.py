"""Pages for browser users (the app page grows with the web UI) and the health check."""

from django.contrib.auth.decorators import login_required
from django.db import connection
from django.db.utils import DatabaseError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from messaging import selectors


@login_required
def home(request: HttpRequest) -> HttpResponse:
    """Render the app page with the signed-in user's conversations."""
    conversations = selectors.list_conversations_for_user(user=request.user)  # type: ignore[arg-type]
    return render(request, "messaging/home.html", {"conversations": conversations})


def healthz(request: HttpRequest) -> JsonResponse:
    """Answer 200 when the database answers, else 503 (for load balancers)."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError:
        return JsonResponse({"status": "unavailable"}, status=503)
    return JsonResponse({"status": "ok"})
