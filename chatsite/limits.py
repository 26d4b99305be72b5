"""Limits of the wire protocol that are not settings: one place for every edge to check.

Settings hold what an operator tunes (message length, rates, group size); these are
fixed by the protocol and the database.
"""

# Ids are PostgreSQL bigints: a path or field past this names nothing.
MAX_ID = 2**63 - 1
# Log numbers (`seq`, `version`, `after`, `before`) and user ids in frames: comfortably
# inside a bigint and exact in JavaScript's doubles up to 2**53 (clients never get near).
MAX_SEQ = 2**62
# The most bytes one character of a body takes in JSON: 4 in UTF-8, 6 escaped (`\u0001`),
# 12 for a character outside the BMP escaped as a surrogate pair (`\ud83d\ude00`).
JSON_BYTES_PER_CHARACTER = 12
# What a frame or request body holds besides the message body, at most.
JSON_ENVELOPE_BYTES = 64 * 1024
# A WebSocket frame (uvicorn's --ws-max-size enforces it too: close 1009). It holds the
# longest message the default limit (100,000 characters) allows in any script, however
# a client encodes it: 12 x 100,000 bytes and the envelope. Settings refuse a
# CHAT_MAX_MESSAGE_LENGTH it would not hold.
MAX_FRAME_BYTES = 1280 * 1024
# A client frame's `ref`, echoed in replies.
MAX_REF_LENGTH = 64
# A client-chosen device id: `?device=`.
DEVICE_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
# Nesting of a JSON body or frame: arrays and objects inside each other. Real bodies
# nest a few levels; thousands exhaust the decoder's recursion (a 500 and a traceback).
MAX_JSON_DEPTH = 32
# A profile picture upload (`PUT /users/me/avatar`): the file's bytes at most. A photo
# from a phone camera fits; anything larger is refused while it is read (413).
MAX_AVATAR_BYTES = 10 * 1024 * 1024
# The most bytes a profile picture's pixels may take decoded, at the scale its square
# needs (a JPEG decodes at 1/2..1/8 when the square is large): unlike attachments,
# pictures are decoded in the request, so the bound is below CHAT_MAX_IMAGE_DECODE_BYTES.
# 64 MiB holds a 16-megapixel photo decoded whole.
MAX_AVATAR_DECODE_BYTES = 64 * 1024 * 1024
# Profile pictures decoded at once by one process (each thread that answers a request
# waits its turn): with the bound above, a process holds at most this many times 64 MiB
# of pixels for pictures however many arrive together (ten attachments decoded at once
# in the gateway once took it from 436 MB to 3.2 GB). A request that waits longer than
# AVATAR_DECODE_WAIT seconds for its turn is answered 503 `unavailable`.
AVATAR_DECODES = 1
AVATAR_DECODE_WAIT = 10.0
# The smallest crop square, in the image's pixels: smaller would be a blur at 256 x 256.
MIN_AVATAR_CROP = 64
