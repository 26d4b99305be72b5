"""`manage.py seed_demo`: demo users and conversations for a local run (idempotent)."""

from __future__ import annotations

import uuid
from argparse import ArgumentParser
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from accounts.models import User
from messaging import selectors, services

# Known on purpose: these are demo logins, printed by the command (which refuses DEBUG=0).
DEMO_PASSWORD = "demo-pass-2026"  # noqa: S105
ADMIN_PASSWORD = "admin-pass-2026"  # noqa: S105
DEMO_USERS = (("ana", "Ana"), ("bo", "Bo"), ("cy", "Cy"), ("dee", "Dee"))
ADMIN_USERNAME = "admin"

# Every demo message has a fixed client_msg_id derived from this namespace, so a second
# run replays the sends (the services return the stored messages) instead of repeating them.
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "chatsite:seed_demo")

DIRECT_SCRIPT = (
    ("ana", "Hi Bo! This is a direct conversation."),
    ("bo", "Hi Ana. Open this page in a second browser to watch messages arrive live."),
    ("ana", "Try editing or deleting a message, and going offline and back."),
    ("bo", "Will do."),
)


@dataclass(frozen=True)
class GroupPlan:
    """A demo group: its title, creator, other members, visibility and messages."""

    title: str
    creator: str
    members: tuple[str, ...]
    public: bool
    script: tuple[tuple[str, str], ...]


GROUPS = (
    GroupPlan(
        title="Welcome",
        creator="ana",
        members=("bo", "cy", "dee"),
        public=True,
        script=(
            ("ana", "Welcome, everyone! This group is public: anyone can find and join it."),
            ("cy", "Hello from Cy."),
            ("dee", "Hi all, Dee here."),
        ),
    ),
    GroupPlan(
        title="Book club",
        creator="bo",
        members=("ana", "cy"),
        public=False,
        script=(
            ("bo", "A private group: only members can see it."),
            ("cy", "What are we reading next?"),
        ),
    ),
)


class Command(BaseCommand):
    """Create demo users, a direct chat and two groups; running it again changes nothing."""

    help = (
        "Create the demo users ana, bo, cy, dee and the superuser admin (if missing), a direct "
        "chat and two groups with a few messages. Idempotent. Refuses to run with DEBUG off, "
        "since the accounts have known passwords, unless given --force."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        """Declare the options."""
        parser.add_argument("--password", default=DEMO_PASSWORD, help="password of new demo users")
        parser.add_argument(
            "--admin-password", default=ADMIN_PASSWORD, help="password of a new admin user"
        )
        parser.add_argument(
            "--url", default="http://127.0.0.1:8000", help="the site's address, for the summary"
        )
        parser.add_argument(
            "--force", action="store_true", help="run even with DEBUG off (not for production)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        """Create whatever of the demo data is missing, then print the logins."""
        if not settings.DEBUG and not options["force"]:
            raise CommandError(
                "seed_demo creates accounts with known passwords, so it runs only with "
                "DJANGO_DEBUG=1; pass --force to run it anyway."
            )
        password: str = options["password"]
        admin_password: str = options["admin_password"]
        url: str = options["url"].rstrip("/")

        users: dict[str, User] = {}
        existing: list[str] = []
        for username, display_name in DEMO_USERS:
            user, created = self._ensure_user(username, display_name, password)
            users[username] = user
            if not created:
                existing.append(username)
        if not self._ensure_admin(admin_password):
            existing.append(ADMIN_USERNAME)

        sent = self._seed_direct(users)
        for plan in GROUPS:
            sent += self._seed_group(plan, users)

        self._report(url, password, admin_password, existing, sent)

    def _ensure_user(self, username: str, display_name: str, password: str) -> tuple[User, bool]:
        """Return the user named `username`, creating it if missing, and whether it was new."""
        user = User.objects.filter(username=username).first()
        if user is not None:
            return user, False
        user = User.objects.create_user(
            username=username, password=password, display_name=display_name
        )
        return user, True

    def _ensure_admin(self, password: str) -> bool:
        """Create the superuser `admin` if missing; return whether this call created it."""
        if User.objects.filter(username=ADMIN_USERNAME).exists():
            return False
        User.objects.create_superuser(
            username=ADMIN_USERNAME,
            email="admin@example.com",
            password=password,
            display_name="Admin",
        )
        return True

    def _send_script(
        self,
        users: dict[str, User],
        conversation_id: int,
        key: str,
        script: tuple[tuple[str, str], ...],
    ) -> int:
        """Send each line of `script` with a stable client_msg_id; return how many were new."""
        new = 0
        for index, (sender, body) in enumerate(script):
            result = services.send_message(
                sender=users[sender],
                conversation_id=conversation_id,
                client_msg_id=uuid.uuid5(_NAMESPACE, f"{key}:{index}"),
                body=body,
            )
            if result.created:
                new += 1
        return new

    def _seed_direct(self, users: dict[str, User]) -> int:
        """Create the ana-bo direct conversation (idempotent) and its messages."""
        conversation, _ = services.create_direct_conversation(
            user=users["ana"], other_user_id=users["bo"].pk
        )
        return self._send_script(users, conversation.pk, "direct:ana:bo", DIRECT_SCRIPT)

    def _seed_group(self, plan: GroupPlan, users: dict[str, User]) -> int:
        """Find the creator's group by title, or create it; then send its messages."""
        creator = users[plan.creator]
        found = [
            view.id
            for view in selectors.list_conversations_for_user(user=creator)
            if view.kind == "group" and view.title == plan.title
        ]
        if found:
            conversation_id = min(found)
        else:
            conversation_id = services.create_group(
                creator=creator,
                title=plan.title,
                member_ids=[users[name].pk for name in plan.members],
                public=plan.public,
            ).pk
        return self._send_script(users, conversation_id, f"group:{plan.title}", plan.script)

    def _report(
        self, url: str, password: str, admin_password: str, existing: list[str], sent: int
    ) -> None:
        """Print where to go and how to sign in."""
        out = self.stdout
        out.write(self.style.SUCCESS(f"Demo data ready ({sent} new messages). Open {url}"))
        out.write("Sign in as any of:")
        for username, display_name in DEMO_USERS:
            out.write(f"  {username:<6} {password}   ({display_name})")
        out.write(f"  {ADMIN_USERNAME:<6} {admin_password}   (staff: {url}/admin/)")
        if existing:
            out.write(
                f"Already present, left unchanged (their passwords may differ): "
                f"{', '.join(existing)}."
            )
