"""Baseline servers that `python -m bench` measures beside ours, with the same load.

- `tutorial`: the Channels tutorial chat (part 3, async consumer) with the in-memory or
  the Redis channel layer, served by uvicorn as our gateways are; it stores nothing.
- `relay`: a raw `websockets` relay, every text frame to the other sockets of its room.
- `drive`: starts each as its own process and drives it as our scenarios drive ours.
"""
