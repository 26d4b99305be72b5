"""Account pages: sign-up, log in (Django's view with the lockout's form), password reset."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import login
from django.contrib.auth.views import LoginView
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.debug import sensitive_post_parameters

from accounts import passwordreset, services
from accounts.forms import LoginForm, PasswordResetRequestForm, SignupForm
from chatsite.clientaddr import client_address
from chatsite.errors import DomainError

# Django's login page; its form logs in through `accounts.login` (the lockout).
login_page = LoginView.as_view(authentication_form=LoginForm)

# The form's field for each field name a service error may point at.
_FIELDS = {"username": "username", "display_name": "display_name", "password": "password1"}


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
    for name in form.errors:
        if name in form.fields:
            # Point the input at its error message (screen readers read it with the field).
            form.fields[name].widget.attrs.update(
                {"aria-invalid": "true", "aria-describedby": f"id_{name}_error"}
            )
    status = 400 if form.errors else 200
    return render(request, "registration/signup.html", {"form": form}, status=status)


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
