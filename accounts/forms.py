"""Forms of the account pages: log in (the site's, the admin's), sign-up, password reset, change."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import ValidationError

from accounts import login
from accounts.models import User
from chatsite.clientaddr import UNKNOWN, client_address


class LoginForm(AuthenticationForm):
    """Django's login form, checked by `accounts.login.authenticate_login` (the lockout)."""

    staff = False
    error_messages = {
        **AuthenticationForm.error_messages,
        "invalid_login": "Your username and password didn't match. Please try again.",
    }

    def clean(self) -> dict[str, Any]:
        """Log in through the login service; say how long to wait while locked out."""
        username = self.cleaned_data.get("username")
        password = self.cleaned_data.get("password")
        if username is not None and password:
            address = client_address(self.request) if self.request is not None else UNKNOWN
            try:
                self.user_cache = login.authenticate_login(
                    username=username, password=password, address=address, staff=self.staff
                )
            except login.LoginLocked as exc:
                raise ValidationError(exc.message, code="locked") from exc
            except login.Unauthenticated as exc:
                raise self.get_invalid_login_error() from exc
            self.confirm_login_allowed(self.user_cache)
        return self.cleaned_data


class StaffLoginForm(LoginForm, AdminAuthenticationForm):
    """The admin's login form: staff members only, with the stricter staff lockout."""

    staff = True
    error_messages = AdminAuthenticationForm.error_messages


class SignupForm(forms.Form):
    """A new account: username, display name, an email (optional), a password typed twice.

    Only shapes are checked here; `accounts.services.register_user` applies every rule
    (reserved and taken names, password strength), as it does for the REST sign-up.
    """

    username = forms.CharField(
        max_length=150,
        help_text="Letters, digits and @ . + - _ only.",
        widget=forms.TextInput(attrs={"autocomplete": "username", "autofocus": True}),
        strip=False,
    )
    display_name = forms.CharField(
        max_length=User._meta.get_field("display_name").max_length or 64,
        required=False,
        help_text="How others see you (optional).",
        widget=forms.TextInput(attrs={"autocomplete": "name"}),
    )
    email = forms.CharField(
        label="Email address",
        max_length=254,
        required=False,
        help_text="Optional: where a link to set a new password goes if you forget it.",
        widget=forms.EmailInput(attrs={"autocomplete": "email"}),
    )
    password1 = forms.CharField(
        label="Password",
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
        help_text="At least 8 characters; not only digits, not a common password.",
    )
    password2 = forms.CharField(
        label="Password again",
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
    )

    def clean(self) -> dict[str, Any]:
        """Check that both passwords are the same."""
        data = super().clean() or {}
        first, second = data.get("password1"), data.get("password2")
        if first and second and first != second:
            self.add_error("password2", "The two passwords differ.")
        return data


class PasswordResetRequestForm(forms.Form):
    """The email address a password reset link goes to."""

    email = forms.EmailField(
        label="Email address",
        max_length=254,
        widget=forms.EmailInput(attrs={"autocomplete": "email", "autofocus": True}),
    )


class PasswordChangeForm(forms.Form):
    """The current password and a new one typed twice (`accounts.login.change_password`)."""

    old_password = forms.CharField(
        label="Current password",
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "current-password", "autofocus": True}),
    )
    new_password1 = forms.CharField(
        label="New password",
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
        help_text="At least 8 characters; not only digits, not a common password.",
    )
    new_password2 = forms.CharField(
        label="New password again",
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
    )

    def clean(self) -> dict[str, Any]:
        """Check that both new passwords are the same."""
        data = super().clean() or {}
        first, second = data.get("new_password1"), data.get("new_password2")
        if first and second and first != second:
            self.add_error("new_password2", "The two new passwords differ.")
        return data
