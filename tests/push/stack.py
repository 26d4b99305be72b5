"""The stack of the mobile push tests: gateways, a Celery worker and beat, short delays."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from accounts.models import User
from bench.harness import Deployment
from messaging.devices import register_device
from messaging.models import Device
from tests.e2e.conftest import CeleryProcesses, MakeDeployment, MakeWorkers
from tests.e2e.test_notifications import start_stack

PUSH_DELAY = 1.0


def mobile_env(*servers: Mapping[str, str], **overrides: str) -> dict[str, str]:
    """Return the settings of gateways and Celery: short delays, the local push servers.

    Without a server's settings its platform has no credentials (`FCM_CREDENTIALS_FILE`
    and `APNS_KEY_FILE` empty), whatever the machine's environment says.
    """
    env = {
        "NOTIFY_PUSH_DELAY": str(PUSH_DELAY),
        "NOTIFY_EMAIL_DELAY": "2",
        "NOTIFY_LEASE": "8",
        "NOTIFY_POLL_INTERVAL": "1",
        "SITE_URL": "https://chat.example.org",
        "PUSH_ENDPOINT_ALLOW": "",
        "FCM_CREDENTIALS_FILE": "",
        "APNS_KEY_FILE": "",
    }
    for server in servers:
        env.update(server)
    env.update(overrides)
    return env


def start(
    make_deployment: MakeDeployment,
    make_workers: MakeWorkers,
    env: Mapping[str, str],
    settings: Any,
) -> tuple[Deployment, CeleryProcesses]:
    """Start one gateway, one worker (one pool process: one HTTP client, one token) and beat."""
    deployment, _ = start_stack(make_deployment, make_workers, env, settings, workers=0, beat=False)
    return deployment, make_workers(deployment, workers=1, beat=True, env=env, concurrency=1)


def add_device(user: User, platform: str, token: str, name: str) -> Device:
    """Register an FCM or APNs device for `user`, as the app's registration would."""
    device, created = register_device(user=user, platform=platform, token=token, name=name)
    assert created
    return device
