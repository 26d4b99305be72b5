"""Account pages: sign-up, log in (Django's view, the lockout's form), password reset, change."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth import login, update_session_auth_hash
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import LoginView
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.debug import sensitive_post_parameters

from accounts import login as logins
from accounts import passwordreset, services
from accounts.forms import LoginForm, PasswordChangeForm, PasswordResetRequestForm, SignupForm
from chatsite.clientaddr import client_address
from chatsite.errors import DomainError

# Django's login page; its form logs in through `accounts.login` (the lockout).
login_page = LoginView.as_view(authentication_form=LoginForm)

# The form's field for each field name a service error may point at.
_FIELDS = {
    "username": "username",
    "display_name": "display_name",
    "email": "email",
    "password": "password1",
}


@sensitive_post_parameters("password1", "password2")
@csrf_protect
@never_cache
def signup(request: HttpRequest) -> HttpResponse:
    """Show the sign-up form; create the account, log it in and open the app."""
    if request.user.is_authenticated:
        return redirect(settings.LOGIN_REDIRECT_URL)
    form = SignupForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        try:
            # The same service, and budget per client address, as `POST /auth/register`.
            user = services.register_user(
                username=form.cleaned_data["username"],
                password=form.cleaned_data["password1"],
                display_name=form.cleaned_data["display_name"],
                email=form.cleaned_data["email"],
                address=client_address(request),
            )
        except DomainError as exc:
            field = _FIELDS.get(str(exc.details.get("field", "")))
            errors = exc.details.get("errors")
            messages = [str(e) for e in errors] if isinstance(errors, list) else [exc.message]
            for message in messages:
                form.add_error(field, message)
        else:
            login(request, user, backend="django.contrib.auth.backends.ModelBackend")
            return redirect(settings.LOGIN_REDIRECT_URL)
    _point_at_errors(form)
    status = 400 if form.errors else 200
    return render(request, "registration/signup.html", {"form": form}, status=status)


def _point_at_errors(form: Any) -> None:
    """Point each input with an error at its message (screen readers read it with the field)."""
    for name in form.errors:
        if name in form.fields:
            form.fields[name].widget.attrs.update(
                {"aria-invalid": "true", "aria-describedby": f"id_{name}_error"}
            )


# The service's field names on the password change page's.
_CHANGE_FIELDS = {"current_password": "old_password", "new_password": "new_password1"}


@sensitive_post_parameters("old_password", "new_password1", "new_password2")
@csrf_protect
@never_cache
@login_required
def password_change(request: HttpRequest) -> HttpResponse:
    """Change the password in the app's own page: every other login ends, this one stays.

    The same service as `POST /api/v1/users/me/password` (a wrong current password is a
    failed login, under the same lockout).
    """
    form = PasswordChangeForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        try:
            user = logins.change_password(
                user=request.user,  # type: ignore[arg-type]
                current_password=form.cleaned_data["old_password"],
                new_password=form.cleaned_data["new_password1"],
                address=client_address(request),
            )
        except DomainError as exc:
            field = _CHANGE_FIELDS.get(str(exc.details.get("field", "")))
            errors = exc.details.get("errors")
            messages = [str(e) for e in errors] if isinstance(errors, list) else [exc.message]
            for message in messages:
                form.add_error(field, message)
        else:
            update_session_auth_hash(request, user)
            return redirect("password_change_done")
    _point_at_errors(form)
    status = 400 if form.errors else 200
    return render(request, "registration/password_change_form.html", {"form": form}, status=status)


@csrf_protect
@never_cache
def password_reset(request: HttpRequest) -> HttpResponse:
    """Ask for an email address and send it a reset link (`accounts.passwordreset`).

    The answer is the same whether the address has an account, and whether a budget
    refused: "if that address belongs to an account, we sent it a link". Without a mail
    server the page says the reset is unavailable and sends nothing (a 200: it is how
    this server is set up, not a failure to log as one).
    """
    available = passwordreset.available()
    form = PasswordResetRequestForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and available and form.is_valid():
        passwordreset.request_reset(
            email=form.cleaned_data["email"], address=client_address(request)
        )
        return redirect("password_reset_done")
    status = 400 if available and form.errors else 200
    context = {"form": form, "available": available}
    return render(request, "registration/password_reset_form.html", context, status=status)
