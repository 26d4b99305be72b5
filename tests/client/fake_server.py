"""An in-memory stand-in for the gateway, speaking PROTOCOL.md section 3, with fault switches.

Only what the client tests need: a conversation log with `last_seq`, idempotent sends,
fetch after a log number, sync, ping, edit, membership changes, and ways to drop live
events or replies, answer scripted errors, and close or kill connections.
"""

from __future__ import annotations

import contextlib
import json
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response


@dataclass
class Conversation:
    id: int
    title: str
    members: set[int]
    last_seq: int = 0
    messages: dict[int, dict[str, Any]] = field(default_factory=dict)


@dataclass
class Connection:
    ws: ServerConnection
    user: int
    device: str | None
    frames: list[dict[str, Any]] = field(default_factory=list)
    binary_frames: int = 0


class FakeServer:
    """Serve the chat protocol from memory on a free loopback port."""

    def __init__(self, heartbeat_interval: float = 25.0) -> None:
        self.heartbeat_interval = heartbeat_interval
        self.tokens: dict[str, int] = {}
        self.conversations: dict[int, Conversation] = {}
        self.connections: list[Connection] = []
        self.handshakes = 0
        # Fault switches: return True to drop that frame.
        self.drop_live: Callable[[int, dict[str, Any]], bool] = lambda user, frame: False
        self.drop_reply: Callable[[dict[str, Any]], bool] = lambda frame: False
        # Answer no frame at all (pongs included) while connections stay open.
        self.silent = False
        # Errors answered to the next message.send frames, one per frame, in order.
        self.send_errors: list[dict[str, Any]] = []
        # Errors answered to the next frames of a type (not message.send), one per frame.
        self.frame_errors: dict[str, list[dict[str, Any]]] = {}
        self._next_message_id = 900
        self._by_cmid: dict[tuple[int, str], dict[str, Any]] = {}
        self._server: Server | None = None
        self.url = ""

    async def start(self) -> FakeServer:
        self._server = await serve(
            self._handle, "127.0.0.1", 0, process_request=self._check_auth, compression=None
        )
        port = next(iter(self._server.sockets)).getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}/ws/v1/"
        return self

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    # ------------------------------------------------------------------ setup

    def add_user(self, user_id: int) -> str:
        token = f"token-{user_id}"
        self.tokens[token] = user_id
        return token

    def create_conversation(self, conversation_id: int, members: set[int]) -> Conversation:
        conversation = Conversation(conversation_id, f"group {conversation_id}", set(members))
        self.conversations[conversation_id] = conversation
        return conversation

    # ------------------------------------------------------------------ server-side actions

    async def post(self, sender: int, conversation_id: int, body: str) -> dict[str, Any]:
        """Store a message as if another client sent it, and push it."""
        message = self._store(sender, self.conversations[conversation_id], body, None)
        await self._broadcast(conversation_id, {"type": "message.created", "message": message})
        return message

    async def join(self, conversation_id: int, user: int) -> None:
        conversation = self.conversations[conversation_id]
        conversation.members.add(user)
        system = self._store(user, conversation, "joined", None, kind="system")
        await self._broadcast(conversation_id, {"type": "message.created", "message": system})
        update = {
            "type": "conversation.updated",
            "conversation": self._summary(conversation),
            "reason": "joined",
        }
        await self._to_user(user, update)

    async def remove(self, conversation_id: int, user: int) -> None:
        conversation = self.conversations[conversation_id]
        conversation.members.discard(user)
        update = {"type": "conversation.updated", "conversation": {"id": conversation_id}}
        await self._to_user(user, {**update, "reason": "removed"})

    async def close_user(self, user: int, code: int) -> None:
        for connection in self._live(user):
            await connection.ws.close(code)

    def kill_user(self, user: int) -> None:
        """Drop the user's connections without a close frame (a crashed gateway)."""
        for connection in self._live(user):
            connection.ws.transport.abort()

    def frames_of(self, user: int, kind: str) -> list[dict[str, Any]]:
        return [
            f for c in self.connections if c.user == user for f in c.frames if f["type"] == kind
        ]

    def rows(self, conversation_id: int) -> list[dict[str, Any]]:
        messages = self.conversations[conversation_id].messages.values()
        return sorted(messages, key=lambda m: m["seq"])

    # ------------------------------------------------------------------ protocol

    def _check_auth(self, connection: ServerConnection, request: Request) -> Response | None:
        self.handshakes += 1
        if request.headers.get("Authorization", "").removeprefix("Bearer ") in self.tokens:
            return None
        return Response(HTTPStatus.FORBIDDEN, "Forbidden", Headers(), b"")

    async def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        user = self.tokens[ws.request.headers["Authorization"].removeprefix("Bearer ")]
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(ws.request.path).query)
        device = query.get("device", [None])[0]
        connection = Connection(ws, user, device)
        self.connections.append(connection)
        await ws.send(
            json.dumps(
                {
                    "type": "session.ready",
                    "user": {"id": user, "username": f"u{user}", "display_name": f"U{user}"},
                    "device": device or f"d-{len(self.connections)}",
                    "heartbeat_interval": self.heartbeat_interval,
                    "server_time": "2026-11-22T10:00:00.000000Z",
                    "status": "available",
                    "conversations": self._snapshot(user),
                }
            )
        )
        with contextlib.suppress(ConnectionClosed):
            async for raw in ws:
                if isinstance(raw, bytes):  # as the gateway: JSON text frames only
                    connection.binary_frames += 1
                    await self._error(connection, "bad_request", None)
                    continue
                frame = json.loads(raw)
                connection.frames.append(frame)
                await self._answer(connection, frame)

    async def _answer(self, connection: Connection, frame: dict[str, Any]) -> None:
        kind, ref = frame["type"], frame.get("ref")
        if kind != "message.send" and self.frame_errors.get(kind):
            error = self.frame_errors[kind].pop(0)
            await self._error(connection, error["code"], ref, retry_after=error.get("retry_after"))
            return
        if kind == "message.send":
            await self._send(connection, frame)
        elif kind == "messages.fetch":
            conversation = self.conversations[frame["conversation"]]
            if connection.user not in conversation.members:
                await self._error(connection, "forbidden", ref)
                return
            after, limit = frame["after"], frame.get("limit", 100)
            changed = sorted(
                (m for m in conversation.messages.values() if m["version"] > after),
                key=lambda m: m["version"],
            )
            page, has_more = changed[:limit], len(changed) > limit
            upto = page[-1]["version"] if has_more else conversation.last_seq
            batch = {
                "type": "messages.batch",
                "ref": ref,
                "conversation": conversation.id,
                "messages": page,
                "upto": upto,
                "has_more": has_more,
            }
            await self._reply(connection, batch)
        elif kind == "sync":
            snapshot = self._snapshot(connection.user)
            await self._reply(
                connection, {"type": "sync.state", "ref": ref, "conversations": snapshot}
            )
        elif kind == "ping":
            pong = {
                "type": "pong",
                "ref": ref,
                "server_time": "2026-11-22T10:00:00.000000Z",
                "log_position": sum(
                    c.last_seq for c in self.conversations.values() if connection.user in c.members
                ),
            }
            await self._reply(connection, pong)
        elif kind == "message.edit":
            conversation = self.conversations[frame["conversation"]]
            message = conversation.messages.get(frame["message"])
            if message is None or message["sender"] != connection.user:
                await self._error(connection, "not_found", ref)
                return
            conversation.last_seq += 1
            message.update(body=frame["body"], version=conversation.last_seq, edited_at="now")
            updated = {"type": "message.updated", "message": dict(message)}
            await self._broadcast(conversation.id, updated)

    async def _send(self, connection: Connection, frame: dict[str, Any]) -> None:
        ref, cmid = frame.get("ref"), frame["client_msg_id"]
        if self.send_errors:
            error = self.send_errors.pop(0)
            await self._error(connection, error["code"], ref, cmid, error.get("retry_after"))
            return
        conversation = self.conversations[frame["conversation"]]
        if connection.user not in conversation.members:
            await self._error(connection, "forbidden", ref, cmid)
            return
        original = self._by_cmid.get((connection.user, cmid))
        if original is None:
            message = self._store(connection.user, conversation, frame["body"], cmid)
            await self._broadcast(conversation.id, {"type": "message.created", "message": message})
        else:
            message = dict(conversation.messages[original["id"]])
        sent = {"type": "message.sent", "ref": ref, "client_msg_id": cmid, "message": message}
        if not self.drop_reply(sent):
            await self._reply(connection, sent)

    def _store(
        self,
        sender: int,
        conversation: Conversation,
        body: str,
        cmid: str | None,
        kind: str = "text",
    ) -> dict[str, Any]:
        conversation.last_seq += 1
        self._next_message_id += 1
        message: dict[str, Any] = {
            "id": self._next_message_id,
            "conversation": conversation.id,
            "seq": conversation.last_seq,
            "version": conversation.last_seq,
            "kind": kind,
            "sender": sender,
            "body": body,
            "client_msg_id": cmid,
            "created_at": "2026-11-22T10:00:00.000000Z",
            "edited_at": None,
            "deleted": False,
            "attachments": [],
        }
        conversation.messages[message["id"]] = message
        if cmid is not None:
            self._by_cmid[(sender, cmid)] = message
        return dict(message)

    def _snapshot(self, user: int) -> list[dict[str, Any]]:
        return [self._summary(c) for c in self.conversations.values() if user in c.members]

    def _summary(self, conversation: Conversation) -> dict[str, Any]:
        return {
            "id": conversation.id,
            "kind": "group",
            "title": conversation.title,
            "last_seq": conversation.last_seq,
            "read_seq": 0,
            "delivered_seq": 0,
            "unread": 0,
            "muted": False,
        }

    async def _broadcast(self, conversation_id: int, frame: dict[str, Any]) -> None:
        for user in sorted(self.conversations[conversation_id].members):
            if not self.drop_live(user, frame):
                await self._to_user(user, frame)

    async def _to_user(self, user: int, frame: dict[str, Any]) -> None:
        for connection in self._live(user):
            await self._reply(connection, frame)

    async def _error(
        self,
        connection: Connection,
        code: str,
        ref: str | None,
        cmid: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        error: dict[str, Any] = {"type": "error", "code": code, "message": code, "ref": ref}
        error["client_msg_id"] = cmid
        if retry_after is not None:
            error["retry_after"] = retry_after
        await self._reply(connection, error)

    async def _reply(self, connection: Connection, frame: dict[str, Any]) -> None:
        if self.silent:
            return
        with contextlib.suppress(ConnectionClosed):
            await connection.ws.send(json.dumps(frame))

    def _live(self, user: int) -> list[Connection]:
        return [c for c in self.connections if c.user == user and c.ws.close_code is None]
