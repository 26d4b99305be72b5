"""Admin for users: search by name, filter by status and activity; the admin's login form."""

from typing import Any

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.http import HttpRequest

from accounts.forms import StaffLoginForm
from accounts.models import User
from chatsite import text

# /admin/login/ logs in through `accounts.login` too, with the stricter staff lockout.
admin.site.login_form = StaffLoginForm


@admin.register(User)
class UserAdmin(BaseUserAdmin[User]):
    """Find users quickly by username, display name or email."""

    list_display = (
        "id",
        "username",
        "display_name",
        "name_flagged",
        "email",
        "status",
        "last_seen",
        "is_active",
    )
    # "Name flagged": display names that mix look-alike scripts (`chatsite.text`).
    list_filter = ("name_flagged", "status", "is_active", "is_staff", "date_joined")
    search_fields = ("username", "display_name", "email")
    ordering = ("username",)
    fieldsets = (
        *(BaseUserAdmin.fieldsets or ()),
        ("Chat", {"fields": ("display_name", "name_flagged", "status", "last_seen")}),
    )
    add_fieldsets = (
        *BaseUserAdmin.add_fieldsets,
        ("Chat", {"fields": ("display_name",)}),
    )

    def save_model(self, request: HttpRequest, obj: User, form: Any, change: bool) -> None:
        """Save, flagging a display name that mixes look-alike scripts as the API does.

        Staff may clear the flag of a name they checked; it stays clear until the name
        changes.
        """
        if "display_name" in form.changed_data:
            obj.name_flagged = text.mixed_scripts(obj.display_name)
        super().save_model(request, obj, form, change)

    def has_delete_permission(self, request: HttpRequest, obj: User | None = None) -> bool:
        """Refuse deletes: deleting a user would erase memberships outside the log.

        Deactivate the user instead (untick "active"): their sockets close and their
        messages keep their sender.
        """
        return False
