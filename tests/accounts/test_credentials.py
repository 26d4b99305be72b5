"""Every write that may end a login leaves a credential change for the gateways to read."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.sessions.backends.db import SessionStore
from django.utils import timezone

from accounts import credentials, login, tokens
from accounts.models import CredentialChange, User

pytestmark = pytest.mark.django_db


def changed_since(since: object) -> tuple[set[int], set[str]]:
    changes = credentials.changes_since(since)  # type: ignore[arg-type]
    return changes.users, changes.sessions


def test_what_ends_logins_is_recorded_and_what_does_not_is_not(
    make_user: Callable[..., User],
) -> None:
    start = timezone.now()
    ana, bo, cy, dee = (make_user(name) for name in ("ana", "bo", "cy", "dee"))
    assert changed_since(start) == (set(), set())  # sign-ups end nothing

    ana.last_login = timezone.now()
    ana.save(update_fields=["last_login"])  # a login
    ana.display_name = "Ana B"
    ana.save(update_fields=["display_name"])  # a profile edit
    assert changed_since(start) == (set(), set())

    login.change_password(
        user=ana,
        current_password="pw-secret-1",
        new_password="a brand new passphrase 8",
        address="127.0.0.1",
    )
    login.sign_out_everywhere(bo)
    tokens.revoke(tokens.issue_pair(cy)["refresh"], cy)
    dee.is_active = False
    dee.save()  # the admin's deactivation
    assert changed_since(start) == ({ana.pk, bo.pk, cy.pk, dee.pk}, set())


def test_a_deleted_session_is_recorded_by_its_key(make_user: Callable[..., User]) -> None:
    start = timezone.now()
    session = SessionStore()
    session.create()
    session.delete()  # a browser's logout
    assert changed_since(start) == (set(), {session.session_key})


def test_reads_overlap_the_previous_one_and_old_changes_are_cleaned_up(
    make_user: Callable[..., User],
) -> None:
    ana = make_user("ana")
    credentials.record(user_id=ana.pk)
    # A change stamped a few seconds before the last read (its transaction committed
    # late) is still read.
    CredentialChange.objects.update(at=timezone.now() - timedelta(seconds=5))
    assert changed_since(timezone.now())[0] == {ana.pk}
    CredentialChange.objects.update(at=timezone.now() - credentials.OVERLAP * 2)
    assert changed_since(timezone.now())[0] == set()
    CredentialChange.objects.update(at=timezone.now() - timedelta(hours=2))
    credentials.record(user_id=ana.pk)
    assert credentials.delete_old(now=timezone.now(), dry_run=True) == 1
    assert credentials.delete_old(now=timezone.now()) == 1
    assert CredentialChange.objects.count() == 1


def fields_of(user: User) -> dict[str, Any]:
    """Return every stored field of `user`, by attribute name."""
    return {f.attname: getattr(user, f.attname) for f in User._meta.concrete_fields}


def test_a_handshake_reads_the_user_behind_a_token_in_one_query(
    make_user: Callable[..., User], django_assert_num_queries: Any
) -> None:
    """Tried: a valid token, then the same token after a logout of its login, a password
    change, a deactivation, a sign out everywhere, and for a user deleted since."""
    from rest_framework_simplejwt.tokens import AccessToken

    ana, bo, cy, dee, eve = (make_user(n) for n in ("ana", "bo", "cy", "dee", "eve"))

    def access(user: User) -> tuple[AccessToken, str]:
        pair = tokens.issue_pair(user)
        return AccessToken(pair["access"]), pair["refresh"]  # type: ignore[arg-type]

    token, refresh = access(ana)
    with django_assert_num_queries(1):
        found = tokens.user_behind(token)
    # Every field as the ORM reads it (the row is turned into a user by hand).
    assert found is not None
    assert fields_of(found) == fields_of(User.objects.get(pk=ana.pk))
    tokens.revoke(refresh, ana)
    assert tokens.user_behind(token) is None
    assert tokens.user_behind(access(ana)[0]) == ana  # a new login is fine

    token, _ = access(bo)
    login.change_password(
        user=bo,
        current_password="pw-secret-1",
        new_password="a brand new passphrase 8",
        address="127.0.0.1",
    )
    assert tokens.user_behind(token) is None

    token, _ = access(cy)
    cy.is_active = False
    cy.save()
    assert tokens.user_behind(token) is None

    token, _ = access(dee)
    login.sign_out_everywhere(dee)
    assert tokens.user_behind(token) is None

    token, _ = access(eve)
    eve.delete()
    assert tokens.user_behind(token) is None
