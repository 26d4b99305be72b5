"""Fixtures of the REST API tests: authenticated clients, a group, its messages, temp media."""

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from rest_framework.test import APIClient

from accounts import tokens
from accounts.models import User
from messaging import services
from messaging.models import Conversation, Message

Client = Callable[..., APIClient]


@pytest.fixture(autouse=True)
def _api_settings(settings: Any, tmp_path: Path) -> None:
    """Store uploads in a temp folder; let sign-ups and logins from the test address through.

    Every request here comes from 127.0.0.1, and the fuzzing in test_schemathesis.py
    fails many logins from it (tests/accounts/ tests the budgets, from addresses of
    their own).
    """
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.REGISTER_BURST = 10_000.0
    settings.LOGIN_ADDRESS_FAILURE_LIMIT = 10_000


@pytest.fixture
def client_for(db: None) -> Client:
    """Return a factory of API clients: with a user, a Bearer JWT; without, anonymous."""

    def make(user: User | None = None) -> APIClient:
        client = APIClient()
        if user is not None:
            access = tokens.issue_pair(user)["access"]
            client.credentials(HTTP_AUTHORIZATION=f"Bearer {access}")
        return client

    return make


@pytest.fixture
def group(ana: User, bo: User) -> Conversation:
    """Return a private group of Ana (owner) and Bo."""
    return services.create_group(creator=ana, title="Team", member_ids=[bo.pk])


def send(user: User, conversation: Conversation, body: str = "hello") -> Message:
    return services.send_message(
        sender=user, conversation_id=conversation.pk, client_msg_id=uuid.uuid4(), body=body
    ).message


def error_code(response: Any) -> str:
    return str(response.json()["error"]["code"])
