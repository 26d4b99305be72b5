"""The WebSocket protocol as an AsyncAPI 3 document, made from the wire definitions.

`messaging.wire.FRAMES` (what the server sends) and `messaging.frames.CLIENT_FRAMES`
(what a client may send) are `TypedDict`s; `json_schema` turns one into a JSON Schema,
and `document()` puts them all into the document served at `/api/asyncapi.json` and
rendered at `/api/docs/websocket`. Tests check every frame they see against the same
schemas, so the document cannot drift from what the server emits.
"""

from __future__ import annotations

import functools
import types
import typing
from typing import Any, Literal, NotRequired, Required, Union, get_args, get_origin

from messaging import frames, wire

_PLAIN = {int: "integer", float: "number", str: "string", bool: "boolean", type(None): "null"}


def _is_typeddict(tp: object) -> bool:
    return isinstance(tp, type) and issubclass(tp, dict) and hasattr(tp, "__annotations__")


def json_schema(tp: Any, definitions: dict[str, Any] | None = None) -> dict[str, Any]:
    """Return the JSON Schema of a type of the wire modules (TypedDicts by `$ref`)."""
    if tp in _PLAIN:
        return {"type": _PLAIN[tp]}
    if tp is Any:
        return {}
    origin = get_origin(tp)
    if origin is Literal:
        return {"enum": list(get_args(tp))}
    if origin in (Union, types.UnionType):
        return {"anyOf": [json_schema(arg, definitions) for arg in get_args(tp)]}
    if origin is list:
        (item,) = get_args(tp)
        return {"type": "array", "items": json_schema(item, definitions)}
    if origin is dict:
        _, value = get_args(tp)
        return {"type": "object", "additionalProperties": json_schema(value, definitions)}
    if _is_typeddict(tp):
        if definitions is None:
            return _object_schema(tp, None)
        if tp.__name__ not in definitions:
            definitions[tp.__name__] = {}  # a placeholder against recursion
            definitions[tp.__name__] = _object_schema(tp, definitions)
        return {"$ref": f"#/components/schemas/{tp.__name__}"}
    raise TypeError(f"no JSON Schema for {tp!r}")


def _object_schema(tp: type, definitions: dict[str, Any] | None) -> dict[str, Any]:
    # `__required_keys__` is wrong on Python 3.11 under postponed annotations: read the
    # NotRequired markers from the resolved hints instead.
    hints = typing.get_type_hints(tp, include_extras=True)
    properties: dict[str, Any] = {}
    required: list[str] = []
    for name, hint in hints.items():
        origin = get_origin(hint)
        if origin is NotRequired:
            (hint,) = get_args(hint)
        else:
            if origin is Required:
                (hint,) = get_args(hint)
            required.append(name)
        properties[name] = json_schema(hint, definitions)
    schema: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }
    if tp.__doc__:
        schema["description"] = " ".join(tp.__doc__.split())
    return schema


@functools.cache
def frame_schema(kind: str) -> dict[str, Any]:
    """Return the self-contained JSON Schema of a server frame type (for validators)."""
    definitions: dict[str, Any] = {}
    root = json_schema(wire.FRAMES[kind], definitions)
    return {**root, "components": {"schemas": definitions}}


def _message(kind: str, tp: type, definitions: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": kind,
        "title": kind,
        "summary": " ".join((tp.__doc__ or kind).split()),
        "contentType": "application/json",
        "payload": json_schema(tp, definitions),
    }


def _key(kind: str) -> str:
    return kind.replace(".", "_")


@functools.cache
def document() -> dict[str, Any]:
    """Return the AsyncAPI 3.0 document of `/ws/v1/`."""
    definitions: dict[str, Any] = {}
    server_messages = {_key(k): _message(k, tp, definitions) for k, tp in wire.FRAMES.items()}
    client_messages = {
        _key(k): _message(k, tp, definitions) for k, tp in frames.CLIENT_FRAMES.items()
    }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Chat WebSocket protocol",
            "version": "1",
            "description": (
                "One WebSocket per device at /ws/v1/. Every frame is a JSON object with "
                "`type`; a client frame may carry `ref` (up to 64 characters), echoed in "
                "its answer. The conversation log, cursors and error codes are described "
                "in docs/protocol.md."
            ),
        },
        "channels": {
            "socket": {
                "address": "/ws/v1/",
                "messages": {**server_messages, **client_messages},
            }
        },
        "operations": {
            "receiveServerFrames": {
                "action": "receive",
                "channel": {"$ref": "#/channels/socket"},
                "summary": "What the server sends.",
                "messages": [{"$ref": f"#/channels/socket/messages/{k}"} for k in server_messages],
            },
            "sendClientFrames": {
                "action": "send",
                "channel": {"$ref": "#/channels/socket"},
                "summary": "What a client may send.",
                "messages": [{"$ref": f"#/channels/socket/messages/{k}"} for k in client_messages],
            },
        },
        "components": {"schemas": definitions},
    }


# --- the page that renders the document (/api/docs/websocket) ---------------------------


def _anchor(name: str) -> str:
    return "t-" + name.replace(".", "-").replace("_", "-").lower()


def _type_parts(schema: dict[str, Any]) -> list[dict[str, str]]:
    """Return a schema as readable text parts, the parts naming a type linked to it."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return [{"text": name, "anchor": _anchor(name)}]
    if "enum" in schema:
        return [{"text": " | ".join(repr(v) for v in schema["enum"])}]
    if "anyOf" in schema:
        parts: list[dict[str, str]] = []
        for index, option in enumerate(schema["anyOf"]):
            if index:
                parts.append({"text": " or "})
            parts += _type_parts(option)
        return parts
    kind = schema.get("type")
    if kind == "array":
        return [{"text": "list of "}, *_type_parts(schema["items"])]
    if kind == "object" and "additionalProperties" in schema and "properties" not in schema:
        return [{"text": "object of "}, *_type_parts(schema["additionalProperties"])]
    return [{"text": str(kind or "any")}]


def _fields(schema: dict[str, Any]) -> list[dict[str, Any]]:
    required = set(schema.get("required", []))
    return [
        {"name": name, "type": _type_parts(field), "required": name in required}
        for name, field in schema.get("properties", {}).items()
    ]


def page_context() -> dict[str, Any]:
    """Return what `templates/api/websocket.html` shows of the document."""
    doc = document()
    schemas = doc["components"]["schemas"]
    messages = doc["channels"]["socket"]["messages"]

    def entry(key: str) -> dict[str, Any]:
        message = messages[key]
        name = message["payload"]["$ref"].rsplit("/", 1)[-1]
        return {
            "name": message["name"],
            "anchor": "f-" + key.replace("_", "-"),
            "summary": message["summary"],
            "fields": _fields(schemas[name]),
        }

    client = [entry(_key(k)) for k in frames.CLIENT_FRAMES]
    server = [entry(_key(k)) for k in wire.FRAMES]
    framed = {m["payload"]["$ref"].rsplit("/", 1)[-1] for m in messages.values()}
    types = [
        {
            "name": name,
            "anchor": _anchor(name),
            "summary": schema.get("description", ""),
            "fields": _fields(schema),
        }
        for name, schema in sorted(schemas.items())
        if name not in framed
    ]
    return {
        "title": doc["info"]["title"],
        "version": doc["info"]["version"],
        "description": doc["info"]["description"],
        "address": doc["channels"]["socket"]["address"],
        "client": client,
        "server": server,
        "groups": [
            {"title": "Client → server", "messages": client},
            {"title": "Server → client", "messages": server},
        ],
        "types": types,
    }
