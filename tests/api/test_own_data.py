"""`GET /api/v1/users/me/export`: a person downloads their own data as a zip."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from accounts.models import User
from messaging import attachments
from messaging.models import Conversation
from tests.api.conftest import Client, error_code, send

pytestmark = pytest.mark.django_db

URL = "/api/v1/users/me/export"


def body(response: Any) -> bytes:
    """Read a streamed answer to its end (the test client closes it then)."""
    return b"".join(response.streaming_content)


def test_the_zip_holds_what_i_sent_and_uploaded_and_no_secrets(
    client_for: Client, ana: User, bo: User, group: Conversation, settings: Any
) -> None:
    settings.EXPORT_BURST = 5.0
    upload = attachments.store_attachment(
        uploader=ana, upload=SimpleUploadedFile("notes.txt", b"my notes", "text/plain")
    )
    send(ana, group, "from ana")
    send(bo, group, "from bo")

    response = client_for(ana).get(URL)

    assert response.status_code == 200
    assert response["Content-Type"] == "application/zip"
    assert 'filename="chat-data-ana.zip"' in response["Content-Disposition"]
    archive = zipfile.ZipFile(io.BytesIO(body(response)))
    manifest = json.loads(archive.read("manifest.json"))
    data = archive.read("data.jsonl")
    assert hashlib.sha256(data).hexdigest() == manifest["data_sha256"]
    rows = [json.loads(line) for line in data.decode().splitlines()]
    bodies = {r["fields"]["body"] for r in rows if r["model"] == "messaging.message"}
    assert bodies == {"Ana created the group “Team”.", "from ana"}
    (account,) = [r for r in rows if r["model"] == "accounts.user"]
    assert account["pk"] == ana.pk and "password" not in account["fields"]
    assert archive.read(f"files/{upload.file.name}") == b"my notes"
    assert manifest["scope"] == f"user {ana.pk}"


def test_downloads_are_limited_per_person_and_need_a_sign_in(
    client_for: Client, ana: User, bo: User, settings: Any
) -> None:
    # Tried: a fourth download within the hour (burst 3), then anonymous.
    settings.EXPORT_BURST = 3.0
    client = client_for(ana)

    def download(client: Any) -> int:
        response = client.get(URL)
        if response.status_code == 200:
            body(response)  # read to the end, as a browser does
        return int(response.status_code)

    for _ in range(3):
        assert download(client) == 200
    refused = client.get(URL)
    assert refused.status_code == 429
    assert error_code(refused) == "rate_limited"
    assert refused.json()["error"]["details"]["retry_after"] > 0
    assert "try again in" in refused.json()["error"]["message"]
    assert download(client_for(bo)) == 200  # someone else's budget
    assert client_for().get(URL).status_code in (401, 403)
