"""Limits of the wire protocol that are not settings: one place for every edge to check.

Settings hold what an operator tunes (message length, rates, group size); these are
fixed by the protocol and the database.
"""

# Ids are PostgreSQL bigints: a path or field past this names nothing.
MAX_ID = 2**63 - 1
# Log numbers (`seq`, `version`, `after`, `before`) and user ids in frames: comfortably
# inside a bigint and exact in JavaScript's doubles up to 2**53 (clients never get near).
MAX_SEQ = 2**62
# A WebSocket frame (uvicorn's --ws-max-size enforces it too: close 1009).
MAX_FRAME_BYTES = 256 * 1024
# A client frame's `ref`, echoed in replies.
MAX_REF_LENGTH = 64
# A client-chosen device id: `?device=`.
DEVICE_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
# Nesting of a JSON body or frame: arrays and objects inside each other. Real bodies
# nest a few levels; thousands exhaust the decoder's recursion (a 500 and a traceback).
MAX_JSON_DEPTH = 32
