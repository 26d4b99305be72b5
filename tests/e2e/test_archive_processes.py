"""Archiving with real processes: an archiver killed with SIGKILL, again and again, and
gateways that serve archived history over WebSocket as they served it from the table."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from accounts.models import User
from bench.harness import Deployment
from messaging import archive, services
from messaging.models import ArchiveSegment, Conversation, Message
from tests.api.test_archive import (  # noqa: F401 - s3_endpoint is a fixture
    s3_endpoint,
    use_archive_bucket,
    use_archive_folder,
)
from tests.e2e.wsclient import bearer, drive, open_socket

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]
SERVICE_VARS = ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "PRESENCE_STORE")


def folder_storage(settings: Any, root: Path) -> None:
    settings.CHAT_SEND_BURST = 10_000.0  # the history is written at once
    use_archive_folder(settings, root)


def old_group(ana: User, bo: User, count: int) -> Conversation:
    chat = services.create_group(creator=ana, title="Old times", member_ids=[bo.pk])
    for n in range(count):
        services.send_message(
            sender=ana if n % 2 else bo,
            conversation_id=chat.pk,
            client_msg_id=uuid.uuid4(),
            body=f"message {n}",
        )
    Message.objects.filter(conversation=chat).update(created_at=timezone.now() - timedelta(40))
    return chat


def archiver(db_url: str, storage_env: dict[str, str]) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k not in SERVICE_VARS}
    env.update(
        DJANGO_SETTINGS_MODULE="chatsite.settings",
        DATABASE_URL=db_url,
        ARCHIVE_SEGMENT_MESSAGES="4",
        PYTHONUNBUFFERED="1",
        **storage_env,
    )
    return subprocess.Popen(  # our own manage.py, with our own interpreter
        [sys.executable, "manage.py", "archive", "--older-than", "30"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def archive_store(kind: str, settings: Any, tmp_path: Path, request: Any) -> dict[str, str]:
    """Point this process at a fresh folder or bucket; return what the archiver's env needs."""
    settings.CHAT_SEND_BURST = 10_000.0  # the history is written at once
    if kind == "folder":
        root = tmp_path / "archive"
        use_archive_folder(settings, root)
        return {"ARCHIVE_ROOT": str(root)}
    endpoint = request.getfixturevalue("s3_endpoint")
    bucket = use_archive_bucket(settings, endpoint, request.getfixturevalue("monkeypatch"))
    return {
        "ARCHIVE_BUCKET": bucket,
        "AWS_S3_ENDPOINT_URL": endpoint,
        "AWS_S3_REGION_NAME": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }


@pytest.mark.parametrize("kind", ["folder", "s3"])
def test_an_archiver_killed_again_and_again_loses_and_duplicates_nothing(
    kind: str, db_url: str, settings: Any, tmp_path: Path, request: Any, ana: User, bo: User
) -> None:
    """Tried: `manage.py archive` (segments of 4), into a folder or an S3 bucket (moto's
    server), is SIGKILLed after its 1st, 3rd, 5th ... progress line, with a random few
    milliseconds more each time, six times, then run to its end. Every message is then
    in exactly one place (table or one segment), every stored object is a recorded
    segment whose bytes match its SHA-256, and the history reads in order without a
    gap."""
    storage_env = archive_store(kind, settings, tmp_path, request)
    chat = old_group(ana, bo, 160)
    ids = set(Message.objects.filter(conversation=chat).values_list("pk", flat=True))

    kills = 0
    for round_ in range(6):
        process = archiver(db_url, storage_env)
        assert process.stdout is not None
        lines = 0
        for line in process.stdout:
            if line.startswith("  ") and "messages (" in line:
                lines += 1
                if lines >= 1 + 2 * (round_ % 3):
                    time.sleep(int.from_bytes(os.urandom(1)) / 255 * 0.02)
                    process.send_signal(signal.SIGKILL)
                    kills += 1
                    break
        process.stdout.close()
        process.wait(timeout=60)
    finished = archiver(db_url, storage_env)
    output, _ = finished.communicate(timeout=120)
    assert finished.returncode == 0, output
    assert kills == 6

    segments = list(ArchiveSegment.objects.filter(conversation=chat).order_by("first_seq"))
    archived = [row["id"] for s in segments for row in archive.segment_rows(s)]
    in_table = list(Message.objects.filter(conversation=chat).values_list("pk", flat=True))
    assert len(archived) == len(set(archived))
    assert set(archived).isdisjoint(in_table)
    assert set(archived) | set(in_table) == ids
    _folders, names = archive.storage().listdir(str(chat.pk))
    assert sorted(f"{chat.pk}/{name}" for name in names) == sorted(s.key for s in segments)
    for segment in segments:
        with archive.storage().open(segment.key, "rb") as stored:
            assert hashlib.sha256(stored.read()).hexdigest() == segment.sha256
    seqs = [row["seq"] for s in segments for row in archive.segment_rows(s)]
    assert seqs == sorted(seqs) and seqs == list(range(seqs[0], seqs[0] + len(seqs)))


def test_gateways_serve_archived_history_as_they_served_it_from_the_table(
    make_deployment: Any, settings: Any, tmp_path: Path, ana: User, bo: User
) -> None:
    """Tried: Bo's device fetches the whole history over WebSocket (`messages.fetch`
    with `before` pages and with `after` pages) through one gateway; 60 messages are
    then archived; the same fetches through the other gateway answer the same frames."""
    root = tmp_path / "archive"
    folder_storage(settings, root)
    settings.ARCHIVE_SEGMENT_MESSAGES = 9
    chat = old_group(ana, bo, 60)
    deployment: Deployment = make_deployment(env={"ARCHIVE_ROOT": str(root)})
    token = bearer(bo)

    async def read_all(url: str) -> list[dict[str, Any]]:
        socket, _ = await open_socket(url, token)
        answers: list[dict[str, Any]] = []
        before = None
        while True:
            frame: dict[str, Any] = {"conversation": chat.pk, "limit": 7}
            if before is not None:
                frame["before"] = before
            answer = await socket.request(type="messages.fetch", **frame)
            answers.append({k: v for k, v in answer.items() if k != "ref"})
            if not answer["has_more"]:
                break
            before = answer["messages"][0]["seq"]
        after = 0
        while True:
            answer = await socket.request(
                type="messages.fetch", conversation=chat.pk, after=after, limit=7
            )
            answers.append({k: v for k, v in answer.items() if k != "ref"})
            after = answer["upto"]
            if not answer["has_more"]:
                break
        await socket.ws.close()
        return answers

    results: dict[str, list[dict[str, Any]]] = {}

    async def before_archiving() -> None:
        results["before"] = await read_all(deployment.urls[0])

    async def after_archiving() -> None:
        results["after"] = await read_all(deployment.urls[1])

    drive(before_archiving)
    count = Message.objects.filter(conversation=chat).count()  # 60 and the group's first line
    moved = archive.archive_conversation(chat.pk, cutoff=timezone.now() - timedelta(30))
    assert moved == count > 60
    assert not Message.objects.filter(conversation=chat).exists()
    drive(after_archiving)

    assert results["after"] == results["before"]
    assert sum(len(a["messages"]) for a in results["before"]) == 2 * count
