"""The reference Python client of the chat protocol, its history recorder and the checker."""

from chatclient import groups, media
from chatclient.auth import Auth, bearer_auth, obtain_token
from chatclient.backoff import full_jitter
from chatclient.checker import CheckReport, ConversationReport, Stats, check
from chatclient.client import ChatClient, Update
from chatclient.devices import register_device
from chatclient.errors import ChatError, ConnectionLost, SessionClosed
from chatclient.history import History, ReconnectRecord, RecvRecord, SendRecord, SyncRecord
from chatclient.moderation import block, hidden_since, hide, list_blocks, report, unblock
from chatclient.outbox import Outbox, OutboxEntry
from chatclient.state import ConversationState, Offer

__all__ = [
    "Auth",
    "ChatClient",
    "ChatError",
    "CheckReport",
    "ConnectionLost",
    "ConversationReport",
    "ConversationState",
    "History",
    "Offer",
    "Outbox",
    "OutboxEntry",
    "ReconnectRecord",
    "RecvRecord",
    "SendRecord",
    "SessionClosed",
    "Stats",
    "SyncRecord",
    "Update",
    "bearer_auth",
    "block",
    "check",
    "full_jitter",
    "groups",
    "hidden_since",
    "hide",
    "list_blocks",
    "media",
    "obtain_token",
    "register_device",
    "report",
    "unblock",
]
