"""Voice messages through the reference client over two gateways."""

from __future__ import annotations

import io
import wave

import pytest

import chatclient
from accounts.models import User
from bench.harness import Deployment
from chatclient import media
from messaging import services
from tests.e2e.wsclient import bearer, drive

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def _wav(seconds: float) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x00\x01" * int(8000 * seconds))
    return out.getvalue()


def test_a_voice_message_sent_through_one_gateway_reaches_the_other_with_its_length(
    deployment: Deployment, ana: User, bo: User
) -> None:
    chat, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    services.create_direct_conversation(user=bo, other_user_id=ana.pk)
    tok = {u.username: bearer(u) for u in (ana, bo)}
    http = deployment.http_urls

    async def scenario() -> None:
        ana_client = chatclient.ChatClient(deployment.urls[:1], chatclient.bearer_auth(tok["ana"]))
        bo_client = chatclient.ChatClient(deployment.urls[1:], chatclient.bearer_auth(tok["bo"]))
        await ana_client.connect()
        await bo_client.connect()
        try:
            voice = await media.upload(
                http[0], tok["ana"], _wav(1.5), "note.wav", voice=True, duration_ms=9
            )
            assert (voice["content_type"], voice["voice"]) == ("audio/wav", True)
            assert voice["duration_ms"] == 1500  # the header's, not the 9 ms declared
            await ana_client.send(chat.pk, "", attachments=[voice["id"]])
            heard = await bo_client.wait_for_message(lambda m: bool(m["attachments"]), timeout=10)
            (attachment,) = heard["attachments"]
            assert (attachment["id"], attachment["voice"], attachment["duration_ms"]) == (
                voice["id"],
                True,
                1500,
            )
            with pytest.raises(chatclient.ChatError) as refused:
                await media.upload(http[1], tok["bo"], b"%PDF-1.4\n", "x.pdf", voice=True)
            assert refused.value.code == "bad_request"
        finally:
            await ana_client.close()
            await bo_client.close()

    drive(scenario)
