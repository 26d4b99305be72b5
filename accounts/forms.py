"""Forms of the account pages: sign-up."""

from __future__ import annotations

from typing import Any

from django import forms

from accounts.models import User


class SignupForm(forms.Form):
    """A new account: username, display name and a password typed twice.

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
